"""Verifier of molecule/default: the whole tier converged on three containers in one pod."""

import os
import re
import time

import pytest
import testinfra

DB = testinfra.get_host("podman://dbtier-mol-db1")
BOUNCER = testinfra.get_host("podman://dbtier-mol-pgbouncer1")
OPS = testinfra.get_host("podman://dbtier-mol-ops1")
HOSTS = {"db1": DB, "pgbouncer1": BOUNCER, "ops1": OPS}

APP_USER, OWNER = "mockupaws_app", "mockupaws_owner"
APP_PASSWORD = os.environ.get("DBTIER_LOCAL_APP_PASSWORD", "insecure-local-app-password")
OWNER_PASSWORD = os.environ.get("DBTIER_LOCAL_OWNER_PASSWORD", "insecure-local-owner-password")
HEALTH_USER = "dbtier_health"
HEALTH_PASSWORD = os.environ.get("DBTIER_LOCAL_HEALTH_PASSWORD", "insecure-local-health-password")


def psql(host, sql, *, user, password, port, dbname="mockupaws", sslmode="prefer", extra=""):
    """Run one query over TCP on 127.0.0.1 (the pod's shared loopback) and return its output."""
    cmd = host.run(
        "PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -X -At "
        "'host=127.0.0.1 port=%s dbname=%s user=%s sslmode=%s %s' -c %s",
        password,
        str(port),
        dbname,
        user,
        sslmode,
        extra,
        sql,
    )
    return cmd


def test_postgresql_running_and_listening():
    service = DB.service("postgresql@15-main")
    assert service.is_running
    assert service.is_enabled
    assert DB.socket("tcp://127.0.0.1:5432").is_listening


def test_postgresql_settings():
    out = DB.check_output(
        "runuser -u postgres -- psql -X -At -c \"SELECT string_agg(name || '=' || setting, ' ' "
        "ORDER BY name) FROM pg_settings WHERE name IN ('password_encryption', "
        "'shared_preload_libraries', 'wal_level', 'log_min_duration_statement')\""
    )
    assert "password_encryption=scram-sha-256" in out
    assert "shared_preload_libraries=pg_stat_statements" in out
    assert "wal_level=replica" in out
    assert "log_min_duration_statement=200" in out


def test_pg_hba_is_scram_only():
    rules = DB.check_output(
        "runuser -u postgres -- psql -X -At -c "
        "\"SELECT type, auth_method, coalesce(error, '') FROM pg_hba_file_rules\""
    ).splitlines()
    assert rules
    for rule in rules:
        kind, method, error = rule.split("|")
        assert not error, rule
        assert method == ("peer" if kind == "local" and method == "peer" else "scram-sha-256"), rule


def test_roles_store_scram_verifiers():
    out = DB.check_output(
        "runuser -u postgres -- psql -X -At -c \"SELECT rolname || ' ' || left(rolpassword, 14) "
        f"FROM pg_authid WHERE rolname IN ('{APP_USER}', '{OWNER}', '{HEALTH_USER}') ORDER BY 1\""
    )
    assert out.splitlines() == [
        f"{HEALTH_USER} SCRAM-SHA-256$",
        f"{APP_USER} SCRAM-SHA-256$",
        f"{OWNER} SCRAM-SHA-256$",
    ]


def test_pg_stat_statements_enabled():
    out = DB.check_output(
        "runuser -u postgres -- psql -X -At -d mockupaws -c "
        '"SELECT count(*) >= 0 FROM pg_stat_statements"'
    )
    assert out == "t"


def test_pgbouncer_running_on_6432():
    service = BOUNCER.service("pgbouncer")
    assert service.is_running
    assert service.is_enabled
    assert BOUNCER.socket("tcp://127.0.0.1:6432").is_listening
    limit = BOUNCER.check_output("systemctl show -p LimitNOFILE --value pgbouncer")
    assert int(limit) > 1000


def _processes():
    """The number of PgBouncer processes the role chose (one per vCPU: the container sees the
    host's), from restart-settings."""
    text = BOUNCER.file("/etc/pgbouncer/restart-settings").content_string
    return int(text.split("processes=")[1].split()[0])


def test_pgbouncer_settings():
    ini = BOUNCER.file("/etc/pgbouncer/pgbouncer.ini")
    assert ini.user == "postgres"
    assert ini.mode == 0o640
    n = _processes()
    for line in (
        "pool_mode = transaction",
        "max_client_conn = 1000",
        # the host's 25 (+5) server connections shared out over the processes
        f"default_pool_size = {-(-25 // n)}",
        f"reserve_pool_size = {-(-5 // n)}",
        "server_idle_timeout = 600",
        "server_lifetime = 3600",
        "auth_type = scram-sha-256",
    ):
        assert line in ini.content_string


def test_pgbouncer_processes_share_the_port():
    """pgbouncer.service and pgbouncer@2..N.service listen on 6432 together (so_reuseport), each
    with its own Unix socket (admin console); reload keeps them, restart restarts them all."""
    n = _processes()
    nproc = int(BOUNCER.check_output("nproc"))
    assert n == min(nproc, 8)
    if n == 1:
        pytest.skip("one vCPU: a single PgBouncer process")
    ini = BOUNCER.file("/etc/pgbouncer/pgbouncer.ini").content_string
    assert "so_reuseport = 1" in ini
    units = ["pgbouncer.service"] + [f"pgbouncer@{i}.service" for i in range(2, n + 1)]

    def pids():
        return [int(BOUNCER.check_output(f"systemctl show -p MainPID --value {u}")) for u in units]

    before = pids()
    assert all(before) and len(set(before)) == n, before
    # one listening socket per process on the same address and port (ss -p would need ptrace)
    listeners = BOUNCER.check_output("ss -Hltn").splitlines()
    assert len([ln for ln in listeners if re.search(r"127\.0\.0\.1:6432\s", ln)]) == n, listeners
    for i in range(2, n + 1):
        assert BOUNCER.file(f"/run/pgbouncer-{i}/.s.PGSQL.6432").is_socket
        limit = BOUNCER.check_output(f"systemctl show -p LimitNOFILE --value pgbouncer@{i}")
        assert int(limit) > 1000
    # each process's admin console, through its own socket
    for i in range(1, n + 1):
        sock = "/var/run/postgresql" if i == 1 else f"/run/pgbouncer-{i}"
        out = BOUNCER.run(
            "PGPASSWORD=%s psql -X -At -h %s -p 6432 -U %s -d pgbouncer -c 'SHOW POOLS'",
            OWNER_PASSWORD,
            sock,
            OWNER,
        )
        assert out.rc == 0, out.stderr
    BOUNCER.check_output("systemctl reload pgbouncer")
    time.sleep(1)
    assert pids() == before
    BOUNCER.check_output("systemctl restart pgbouncer")
    time.sleep(2)
    after = pids()
    assert all(after) and not set(after) & set(before), (before, after)
    ok = psql(BOUNCER, "SELECT 1", user=APP_USER, password=APP_PASSWORD, port=6432)
    assert ok.rc == 0, ok.stderr


def test_userlist_holds_scram_verifiers_only():
    userlist = BOUNCER.file("/etc/pgbouncer/userlist.txt")
    assert userlist.mode == 0o640
    entries = [ln for ln in userlist.content_string.splitlines() if ln.startswith('"')]
    assert {ln.split()[0].strip('"') for ln in entries} == {APP_USER, OWNER, HEALTH_USER}
    assert all(ln.split()[1].startswith('"SCRAM-SHA-256$4096:') for ln in entries)


def test_query_through_pgbouncer_reaches_postgresql_as_app_user():
    out = psql(
        BOUNCER,
        "SELECT current_user, inet_server_port(), current_setting('password_encryption')",
        user=APP_USER,
        password=APP_PASSWORD,
        port=6432,
    )
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == f"{APP_USER}|5432|scram-sha-256"


def test_pgbouncer_refuses_a_wrong_password():
    out = psql(BOUNCER, "SELECT 1", user=APP_USER, password="wrong-password", port=6432)  # noqa: S106
    assert out.rc != 0
    assert "authentication failed" in out.stderr


def test_app_user_has_dml_but_not_ddl():
    out = psql(
        BOUNCER,
        "CREATE TABLE dbtier_probe (i int)",
        user=APP_USER,
        password=APP_PASSWORD,
        port=6432,
    )
    assert out.rc != 0
    assert "permission denied" in out.stderr


def test_schema_is_migrated():
    out = psql(
        BOUNCER,
        "SELECT count(*) FROM dbtier.schema_migrations",
        user=OWNER,
        password=OWNER_PASSWORD,
        port=6432,
    )
    assert out.rc == 0, out.stderr
    assert int(out.stdout.strip()) > 0


# The files allowed to hold a password in plaintext: the libpq password file of the dbtier jobs
# on ops1 (PGPASSFILE in /etc/dbtier/credentials.env) and the one of the health check on
# pgbouncer1 (its role's password only), mode 0600, owned by the service user. db1's jobs use peer
# auth and have none.
DESIGNATED_SECRET_FILES = {
    "ops1": ("/etc/dbtier/pgpass", "dbtier"),
    "pgbouncer1": ("/etc/dbtier-health/pgpass", "dbtier-health"),
}


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_no_plaintext_password_in_any_file(name):
    host = HOSTS[name]
    out = host.run(
        "grep -rlsF -e %s -e %s -e %s /etc /opt /var /root /home /srv /usr/local "
        "--exclude-dir=/var/cache --exclude-dir=proc",
        APP_PASSWORD,
        OWNER_PASSWORD,
        HEALTH_PASSWORD,
    )
    assert out.rc in (0, 1), out.stderr
    found = set(out.stdout.split())
    designated = DESIGNATED_SECRET_FILES.get(name)
    if designated:
        path, owner = designated
        secret = host.file(path)
        assert secret.exists, f"{path} missing on {name}"
        assert (secret.mode, secret.user, secret.group) == (0o600, owner, owner), path
        assert path in found, f"{path} does not hold the password it is designated for"
        found.discard(path)
    assert not found, f"plaintext password found on {name} in: {sorted(found)}"


def test_credentials_env_points_libpq_at_the_password_file():
    creds = OPS.file("/etc/dbtier/credentials.env")
    assert (creds.mode, creds.user) == (0o600, "dbtier")
    assert "PGPASSFILE=/etc/dbtier/pgpass" in creds.content_string
    assert "PGPASSWORD" not in creds.content_string
    # the cron jobs' view of the database: the wrapper's settings and the password file work
    out = OPS.run(
        "runuser -u dbtier -- sh -c "
        "'set -a; . /etc/dbtier/credentials.env; exec psql -X -At -c \"SELECT current_user\"'"
    )
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == OWNER
    assert not DB.file("/etc/dbtier/pgpass").exists  # peer auth as postgres on db1


@pytest.mark.parametrize(
    ("host", "user", "present", "absent"),
    [
        (
            DB,
            "postgres",
            ["backup base --quiet --primary-only", "backup full --quiet --primary-only"],
            ["backup verify", "backup cleanup", "refresh-views", "archive", "slow-queries"],
        ),
        (
            OPS,
            "dbtier",
            [
                "backup verify latest --kind logical --quiet",
                "backup verify latest --kind base --quiet",
                "backup cleanup --quiet",
                "refresh-views --quiet",
                "archive --all --primary-only --quiet",
                "slow-queries collect --quiet",
            ],
            ["backup base", "backup full", "backup verify latest --quiet"],
        ),
    ],
)
def test_backup_cron_entries(host, user, present, absent):
    crontab = host.check_output("crontab -l -u %s", user)
    jobs = [ln for ln in crontab.splitlines() if ln and not ln.startswith("#")]
    for command in present:
        assert any(f"/usr/local/bin/dbtier-job {command} >>" in job for job in jobs), (
            f"{command} not in {user}'s crontab:\n{crontab}"
        )
    for command in absent:
        assert not any(f"dbtier-job {command}" in job for job in jobs), crontab


def test_backup_repository_is_shared_by_the_service_users():
    for host, user in ((DB, "postgres"), (OPS, "dbtier")):
        repo = host.file("/var/backups/dbtier")
        assert repo.is_directory
        assert (repo.user, repo.group, repo.mode) == ("root", "dbtier-backup", 0o2770)
        assert "dbtier-backup" in host.user(user).groups
        assert host.group("dbtier-backup").gid == 2790


def _superuser_sql(sql):
    return DB.check_output("runuser -u postgres -- psql -X -At -d mockupaws -c %s", sql)


def test_wal_archiving_into_the_repository():
    settings = _superuser_sql(
        "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings "
        "WHERE name IN ('archive_mode', 'archive_command', 'archive_timeout')"
    )
    assert "archive_mode=on" in settings
    assert "archive_command=/usr/local/bin/dbtier-job wal-push --quiet %p" in settings
    assert "archive_timeout=60" in settings
    # Failures while the first converge had not installed dbtier yet are expected (PostgreSQL
    # keeps the WAL and retries): count from here on.
    _superuser_sql("SELECT pg_stat_reset_shared('archiver')")
    _superuser_sql("CREATE TABLE wal_probe AS SELECT g FROM generate_series(1, 10000) g")
    _superuser_sql("DROP TABLE wal_probe")
    segment = _superuser_sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 30
    while True:
        archived, failed, last = _superuser_sql(
            "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') "
            "FROM pg_stat_archiver"
        ).split("|")
        if int(failed) or (int(archived) and last >= segment) or time.monotonic() > deadline:
            break
        time.sleep(1)
    log = DB.run("tail -n 20 /var/log/postgresql/postgresql-15-main.log").stdout
    assert int(failed) == 0, f"archive_command failed; server log:\n{log}"
    assert int(archived) > 0 and last >= segment, f"{segment} not archived in 30 s:\n{log}"
    obj = DB.file(f"/var/backups/dbtier/wal/{segment}.zst.enc")  # header + data, one object
    assert obj.is_file, f"{obj.path} missing"
    assert obj.group == "dbtier-backup"
    assert DB.file("/var/backups/dbtier/repository.json").group == "dbtier-backup"
    # ops1 (verify, cleanup, restores) reads, authenticates and decrypts what db1 archived
    readable = OPS.run(
        "runuser -u dbtier -- /usr/local/bin/dbtier-job wal-fetch %s /tmp/wal-probe", segment
    )
    assert readable.rc == 0, f"ops1 cannot read what db1 archived: {readable.stderr}"


# --- issue 9: the production path ------------------------------------------------------------


def test_pgbouncer_requires_tls_from_tcp_clients():
    ini = BOUNCER.file("/etc/pgbouncer/pgbouncer.ini").content_string
    assert "client_tls_sslmode = require" in ini
    key = BOUNCER.file("/etc/pgbouncer/tls/client-tls.key")
    assert (key.user, key.group, key.mode) == ("root", "postgres", 0o640)
    ok = psql(
        BOUNCER, "SELECT 1", user=APP_USER, password=APP_PASSWORD, port=6432, sslmode="require"
    )
    assert ok.rc == 0, ok.stderr
    # the self-signed certificate of the local stack names 127.0.0.1: verify-full against it
    verified = psql(
        BOUNCER,
        "SELECT 1",
        user=APP_USER,
        password=APP_PASSWORD,
        port=6432,
        sslmode="verify-full",
        extra="sslrootcert=/etc/pgbouncer/tls/client-tls.crt",
    )
    assert verified.rc == 0, verified.stderr
    plain = psql(
        BOUNCER, "SELECT 1", user=APP_USER, password=APP_PASSWORD, port=6432, sslmode="disable"
    )
    assert plain.rc != 0
    assert "SSL required" in plain.stderr


def _http(host, path):
    return host.run(
        "python3 -c %s %s",
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen('http://127.0.0.1:8008' + sys.argv[1], timeout=10)\n"
        "    print(r.status, r.read().decode().strip())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read().decode().strip())\n",
        path,
    )


def test_health_endpoint_for_the_load_balancer():
    service = BOUNCER.service("dbtier-pgbouncer-health")
    assert service.is_running
    assert service.is_enabled
    assert BOUNCER.socket("tcp://0.0.0.0:8008").is_listening
    user = BOUNCER.check_output("systemctl show -p User --value dbtier-pgbouncer-health")
    assert user == "dbtier-health"
    out = _http(BOUNCER, "/health")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "200 ok"
    assert _http(BOUNCER, "/").stdout.split()[0] == "404"
    # the health role may connect and read nothing (schema public keeps PostgreSQL's default
    # USAGE for PUBLIC; no table is readable)
    rights = DB.check_output(
        "runuser -u postgres -- psql -X -At -d mockupaws -c %s",
        f"SELECT has_database_privilege('{HEALTH_USER}', 'mockupaws', 'CONNECT'), "
        f"has_table_privilege('{HEALTH_USER}', 'public.scenarios', 'SELECT'), "
        f"has_table_privilege('{HEALTH_USER}', 'public.api_keys', 'SELECT'), rolsuper "
        f"FROM pg_roles WHERE rolname = '{HEALTH_USER}'",
    )
    assert rights == "t|f|f|f"


def test_pgbouncer_metrics_for_prometheus():
    """GET /metrics on the health service's port (8008 in the local inventory): pgbouncer_up 1 for
    every PgBouncer process, whose admin consoles the health login reads as a stats user: SHOW
    works for it, admin commands do not."""
    n = _processes()
    out = BOUNCER.run("curl -s http://127.0.0.1:8008/metrics")
    assert out.rc == 0, out.stderr
    ups = re.findall(r'^pgbouncer_up\{process="(\d+)"\} (\S+)$', out.stdout, re.MULTILINE)
    assert sorted(ups, key=lambda up: int(up[0])) == [(str(i), "1") for i in range(1, n + 1)], (
        out.stdout
    )
    assert "# TYPE pgbouncer_stats_xact_count_total counter" in out.stdout
    for i in range(1, n + 1):
        assert f'pgbouncer_max_client_conn{{process="{i}"}} 1000\n' in out.stdout
        # the host's 25 shared out over the processes
        size = f'pgbouncer_database_pool_size{{process="{i}",database="mockupaws"}} {-(-25 // n)}\n'
        assert size in out.stdout
    ini = BOUNCER.file("/etc/pgbouncer/pgbouncer.ini").content_string
    assert re.search(rf"^stats_users = .*\b{HEALTH_USER}\b", ini, re.MULTILINE), ini
    assert not re.search(rf"^admin_users = .*\b{HEALTH_USER}\b", ini, re.MULTILINE), ini
    for command, allowed in (("SHOW POOLS", True), ("RELOAD", False)):
        res = BOUNCER.run(
            "PGPASSWORD=%s psql -X -At -h /var/run/postgresql -p 6432 -U %s -d pgbouncer -c %s",
            HEALTH_PASSWORD,
            HEALTH_USER,
            command,
        )
        assert (res.rc == 0) is allowed, (command, res.stderr)
        if not allowed:
            assert "admin access needed" in res.stderr, res.stderr


def test_scheduled_jobs_run_as_scheduled():
    """The commands the crontabs hold, as their users: backups on db1 (the primary), verification
    of the newest backup of each kind and the views from ops1."""
    for host, user, command in (
        (DB, "postgres", "backup base --quiet --primary-only"),
        (DB, "postgres", "backup full --quiet --primary-only"),
        (OPS, "dbtier", "backup verify latest --kind logical --quiet"),
        (OPS, "dbtier", "backup verify latest --kind base --quiet"),
        (OPS, "dbtier", "refresh-views --quiet"),
        (OPS, "dbtier", "slow-queries collect --quiet"),
    ):
        out = host.run("runuser -u %s -- /usr/local/bin/dbtier-job " + command, user)
        assert out.rc == 0, f"{command} as {user}: {out.stderr}"


def test_job_logs_are_rotated():
    for host, owner in ((DB, "postgres"), (OPS, "dbtier")):
        conf = host.file("/etc/logrotate.d/dbtier")
        assert conf.exists and f"su {owner} adm" in conf.content_string
        out = host.run("logrotate -d /etc/logrotate.d/dbtier")
        assert out.rc == 0, out.stderr
        assert "error" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
