"""Verifier of molecule/auth-query: users missing from userlist.txt authenticate via auth_query."""

import re

import testinfra

DB = testinfra.get_host("podman://dbtier-molaq-db1")
BOUNCER = testinfra.get_host("podman://dbtier-molaq-pgbouncer1")


def psql(sql, user, password):
    return BOUNCER.run(
        "PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -X -At "
        "'host=127.0.0.1 port=6432 dbname=mockupaws user=%s' -c %s",
        password,
        user,
        sql,
    )


def test_lookup_function_is_security_definer_and_private():
    out = DB.check_output(
        "runuser -u postgres -- psql -X -At -d mockupaws -c "
        "\"SELECT prosecdef, array_to_string(proacl, ',') FROM pg_proc "
        "WHERE proname = 'user_lookup'\""
    )
    secdef, acl = out.split("|")
    assert secdef == "t"
    grantees = {entry.split("=")[0] for entry in acl.split(",")}
    assert grantees == {"postgres", "pgbouncer_auth"}  # no PUBLIC (empty grantee)


def test_user_not_in_userlist_logs_in_through_auth_query():
    userlist = BOUNCER.file("/etc/pgbouncer/userlist.txt").content_string
    assert "reporting_ro" not in userlist
    out = psql("SELECT current_user", "reporting_ro", "insecure-molecule-reporting-password")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "reporting_ro"


def test_wrong_password_and_superuser_are_refused():
    out = psql("SELECT 1", "reporting_ro", "wrong-password")
    assert out.rc != 0
    out = psql("SELECT 1", "postgres", "anything")
    assert out.rc != 0


def test_listed_users_still_work():
    out = psql("SELECT current_user", "mockupaws_app", "insecure-local-app-password")
    assert out.rc == 0, out.stderr


def test_metrics_read_every_process_as_a_stats_user():
    """/metrics of the health service with auth_query on: the health login is in userlist.txt,
    so PgBouncer's admin console authenticates it there (never through auth_query), as a stats
    user, on every process."""
    text = BOUNCER.file("/etc/pgbouncer/restart-settings").content_string
    n = int(text.split("processes=")[1].split()[0])
    out = BOUNCER.run("curl -s http://127.0.0.1:8008/metrics")
    assert out.rc == 0, out.stderr
    ups = re.findall(r'^pgbouncer_up\{process="(\d+)"\} (\S+)$', out.stdout, re.MULTILINE)
    assert sorted(ups, key=lambda up: int(up[0])) == [(str(i), "1") for i in range(1, n + 1)], (
        out.stdout
    )
