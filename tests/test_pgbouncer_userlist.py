"""pgbouncer_userlist: SCRAM verifiers and the userlist (dbtier.scram, dbtier.pgbouncer), the
module through ansible-playbook (with dbtier shipped as module_utils), the pgbouncer role's
argument specs, and a real PgBouncer authenticating clients with the userlist."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtier import pgbouncer, pgprobe, scram
from dbtier.errors import UsageError
from dbtier.pgcluster import LocalCluster, chown_to_server_user, free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
CHECK_CONFIG = ROOT / "ansible/roles/pgbouncer/files/pgbouncer-check-config"

# Verifiers PostgreSQL 15 itself stored (CREATE ROLE ... PASSWORD with password_encryption scram).
PG_VECTORS = [
    (
        "correct horse battery staple",
        "SCRAM-SHA-256$4096:HYJ2yHSDKkPPpXxp2Rm+Dg==$C8WF2lvPvuUIFVQeNBCsPA1lXBBjuVmEwmyKUWsuYB8="
        ":EY5Ihh6bTXtbFQ6B7Nlzjv4nPDrE+/W0B8hiq1msMiU=",
    ),
    (
        "pässwörd–ＡＢＣ",  # noqa: RUF001 - non-ASCII on purpose: NFKC folds the full-width letters
        "SCRAM-SHA-256$4096:qNP8c3Z98MIFd/oUpBj+Og==$nGveOZqNyRhCM8eUBeSOuRBuzuKPPtEgp09tebJLe5Q="
        ":h/a34wUVa4wUGf0o5TM/5z/kOQltYQW+rmRUcPew/KM=",
    ),
    (
        "I\u00adX",  # SOFT HYPHEN is "mapped to nothing" by SASLprep
        "SCRAM-SHA-256$4096:DUyQDD5IxpNVNkeyBv6RLg==$N62fuctIvy58xfpAvv25fi7Yuu/pT6GNy0MtyRHy/B0="
        ":Rj8iw2VF2kzSm/T7+klfnqnKezBToRmhWjRt/K49kGc=",
    ),
]


# --- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "verifier"), PG_VECTORS)
def test_verifier_matches_what_postgresql_computed(password, verifier):
    iterations, salt, _, _ = scram.parse_verifier(verifier)
    assert scram.compute_verifier(password, salt, iterations) == verifier
    assert scram.verify_password(password, verifier)
    assert not scram.verify_password(password + "x", verifier)


def test_saslprep_maps_soft_hyphen_to_nothing():
    assert scram.verify_password("IX", PG_VECTORS[2][1])
    assert scram.saslprep("I\u00adX") == b"IX"
    assert scram.saslprep("plain ascii\x07") == b"plain ascii\x07"


def test_saslprep_falls_back_to_the_raw_bytes_like_postgresql():
    # Where RFC 4013 prohibits the result PostgreSQL hashes the UTF-8 bytes as they are (scramp,
    # by contrast, raises): a bidi string mixing R/AL and L characters, a private-use character.
    for password in ("a\u0627", "x\ue000"):
        assert scram.saslprep(password) == password.encode()
    # NFKC folds full-width letters; non-ASCII spaces become SPACE.
    assert scram.saslprep("\uff21\u00a0b") == b"A b"


def test_few_iterations_are_allowed_but_not_zero():
    verifier = scram.compute_verifier("pw", b"0123456789abcdef", 1)
    assert verifier.startswith("SCRAM-SHA-256$1:")
    assert scram.verify_password("pw", verifier)
    with pytest.raises(UsageError, match="iterations must be positive"):
        scram.compute_verifier("pw", b"0123456789abcdef", 0)


def test_stable_verifier_is_deterministic_and_valid():
    first = scram.stable_verifier("mockupaws_app", "s3cret")
    assert first == scram.stable_verifier("mockupaws_app", "s3cret")
    assert first.startswith("SCRAM-SHA-256$4096:")
    assert scram.verify_password("s3cret", first)
    # The salt depends on user and password, so equal passwords of two users differ.
    assert first != scram.stable_verifier("mockupaws_owner", "s3cret")
    assert first != scram.stable_verifier("mockupaws_app", "s3cret2")
    assert len(scram.parse_verifier(first)[1]) == 16
    assert scram.stable_verifier("u", "pw", iterations=10000).startswith("SCRAM-SHA-256$10000:")


def test_empty_password_is_refused():
    with pytest.raises(UsageError, match="'u': empty password"):
        scram.stable_verifier("u", "")


@pytest.mark.parametrize(
    "secret",
    ["plaintext", "md5" + "0" * 32, "SCRAM-SHA-256$4096:bad", "SCRAM-SHA-256$x:AA==$AA==:AA=="],
)
def test_render_refuses_anything_but_scram(secret):
    with pytest.raises(UsageError, match="user 'app'"):
        pgbouncer.render_userlist([("app", secret)])


def test_render_quotes_and_round_trips():
    verifier = scram.stable_verifier('we"ird', "pw")
    text = pgbouncer.render_userlist([('we"ird', verifier), ("app", PG_VECTORS[0][1])])
    assert '"we""ird" "SCRAM-SHA-256$' in text
    assert text.startswith(";")
    assert pgbouncer.parse_userlist(text) == {'we"ird': verifier, "app": PG_VECTORS[0][1]}
    with pytest.raises(UsageError, match="listed twice"):
        pgbouncer.render_userlist([("app", verifier), ("app", verifier)])


def test_mask_hides_verifiers():
    text = pgbouncer.render_userlist([("app", PG_VECTORS[0][1])])
    masked = pgbouncer.mask(text)
    assert "SCRAM-SHA-256$4096" not in masked
    assert '"app" "<SCRAM-SHA-256 verifier sha256:' in masked


def test_entries_from_users():
    users = [{"name": "app", "password": "pw"}, {"name": "owner", "password": "pw2"}]
    assert pgbouncer.entries_from_users(users, "password") == [
        ("app", scram.stable_verifier("app", "pw")),
        ("owner", scram.stable_verifier("owner", "pw2")),
    ]
    given = [{"name": "app", "verifier": PG_VECTORS[0][1]}]
    assert pgbouncer.entries_from_users(given, "verifier") == [("app", PG_VECTORS[0][1])]
    with pytest.raises(UsageError, match="'app' has no verifier"):
        pgbouncer.entries_from_users([{"name": "app", "password": "pw"}], "verifier")


class _FakeCursor:
    def __init__(self, rows, error=None):
        self.rows, self.error = rows, error

    def execute(self, *_args):
        if self.error:
            raise self.error

    def fetchall(self):
        return self.rows


class _FakeConn:
    def __init__(self, rows=(), error=None):
        self.rows, self.error = list(rows), error

    def cursor(self):
        return _FakeCursor(self.rows, self.error)


class _Denied(Exception):
    pgcode = "42501"  # what psycopg2 says when a non-superuser reads pg_authid


def test_verifiers_to_set_compares_pg_authid_or_logs_in():
    users = [
        {"name": "app", "password": "pw", "verifier": "v1"},
        {"name": "owner", "password": "pw2", "verifier": "v2"},
        {"name": "gone", "password": "pw3", "verifier": "v3"},
    ]

    def no_probe(*_args):
        raise AssertionError("pg_authid was readable: no login needed")

    superuser = _FakeConn([("app", "v1"), ("owner", "old"), ("x", None)])
    assert pgbouncer.verifiers_to_set(superuser, users, no_probe) == [
        ("owner", "another verifier in pg_authid"),
        ("gone", "no such role"),
    ]
    assert [n for n, _ in pgbouncer.verifiers_to_set(superuser, users, no_probe, force=True)] == [
        "app",
        "owner",
        "gone",
    ]
    # RDS: pg_authid is not readable, each role's SCRAM login decides
    seen = []

    def probe(name, password, verifier):
        seen.append((name, password, verifier))
        return pgprobe.Verdict(name == "app", "refused" if name != "app" else "stored")

    master = _FakeConn(error=_Denied("permission denied for table pg_authid"))
    assert pgbouncer.verifiers_to_set(master, users, probe) == [
        ("owner", "refused"),
        ("gone", "refused"),
    ]
    assert seen == [(u["name"], u["password"], u["verifier"]) for u in users]
    with pytest.raises(RuntimeError):  # any other error is not "not a superuser"
        pgbouncer.verifiers_to_set(_FakeConn(error=RuntimeError("boom")), users, probe)


# --- helpers for the module and role tests ------------------------------------------------------


def ansible_playbook(
    playbook: str, tmp_path: Path, *args: str, check: bool = False, env: dict | None = None
):
    book = tmp_path / "play.yml"
    book.write_text(playbook)
    env = {
        **(os.environ if env is None else env),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "ansible/roles"),
        "ANSIBLE_LIBRARY": str(ROOT / "library"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(book), *args]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)
    return proc


def task_results(proc) -> list[dict]:
    data = json.loads(proc.stdout)
    return [task["hosts"]["localhost"] for play in data["plays"] for task in play["tasks"]]


def module_play(args: dict, python: str = sys.executable) -> str:
    return json.dumps(
        [
            {
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "vars": {"ansible_python_interpreter": python},
                "tasks": [{"name": "userlist", "pgbouncer_userlist": args}],
            }
        ]
    )


# --- the module through ansible-playbook ---------------------------------------------------------


@pytest.mark.ansible
def test_module_check_mode_diff_write_and_idempotence(tmp_path):
    path = tmp_path / "userlist.txt"
    args = {
        "path": str(path),
        "source": "password",
        "users": [{"name": "app", "password": "pw-one"}, {"name": "owner", "password": "pw-two"}],
        "mode": "0640",
    }
    play = module_play(args)

    proc = ansible_playbook(play, tmp_path, "--diff", check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = task_results(proc)
    assert result["changed"] is True
    assert not path.exists()
    assert "<SCRAM-SHA-256 verifier sha256:" in result["diff"]["after"]
    assert "pw-one" not in proc.stdout
    assert "SCRAM-SHA-256$4096" not in proc.stdout

    proc = ansible_playbook(play, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert task_results(proc)[0]["changed"] is True
    assert path.stat().st_mode & 0o777 == 0o640
    text = path.read_text()
    assert "pw-one" not in text
    assert "pw-two" not in text
    assert pgbouncer.parse_userlist(text) == {
        "app": scram.stable_verifier("app", "pw-one"),
        "owner": scram.stable_verifier("owner", "pw-two"),
    }

    proc = ansible_playbook(play, tmp_path)
    assert task_results(proc)[0]["changed"] is False
    proc = ansible_playbook(play, tmp_path, check=True)
    assert task_results(proc)[0]["changed"] is False


@pytest.mark.ansible
def test_module_bad_input_names_the_problem(tmp_path):
    play = module_play(
        {"path": str(tmp_path / "u.txt"), "source": "password", "users": [{"name": "app"}]}
    )
    proc = ansible_playbook(play, tmp_path)
    assert proc.returncode != 0
    assert "users: 'app' has no password (source=password)" in task_results(proc)[0]["msg"]

    play = module_play(
        {
            "path": str(tmp_path / "u.txt"),
            "source": "verifier",
            "users": [{"name": "app", "verifier": "md5abcdef"}],
        }
    )
    proc = ansible_playbook(play, tmp_path)
    assert proc.returncode != 0
    assert "user 'app': not a SCRAM-SHA-256 verifier" in task_results(proc)[0]["msg"]
    assert not (tmp_path / "u.txt").exists()


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, as on a PgBouncer host: no dbtier installed


@pytest.mark.ansible
@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no system python3")
def test_module_runs_where_dbtier_is_not_installed(tmp_path):
    """Ansible ships dbtier.scram/pgbouncer with the module (module_utils = src); without them
    the module fails with one line naming the package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import dbtier"], env=env, check=False)
    assert probe.returncode != 0, "this test needs an interpreter without dbtier"
    play = module_play(
        {"source": "password", "users": [{"name": "app", "password": "pw"}]}, SYSTEM_PYTHON
    )
    proc = ansible_playbook(play, tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = task_results(proc)
    assert result["users"] == [{"name": "app", "verifier": scram.stable_verifier("app", "pw")}]

    empty = tmp_path / "no-module-utils"
    empty.mkdir()
    proc = ansible_playbook(play, tmp_path, env={**env, "ANSIBLE_MODULE_UTILS": str(empty)})
    assert proc.returncode != 0
    msg = task_results(proc)[0]["msg"]
    assert "\n" not in msg
    assert "needs the dbtier package" in msg
    assert f"install dbtier for {SYSTEM_PYTHON}" in msg


# --- the role's argument specs --------------------------------------------------------------------

GOOD_VARS = {
    "dbtier_db_host": "127.0.0.1",
    "dbtier_app_password": "x",
    "dbtier_migration_password": "y",
    "dbtier_self_managed": True,
}


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"pgbouncer_pool_mode": "sometimes"}, "pgbouncer_pool_mode"),
        ({"pgbouncer_max_client_conn": "lots"}, "pgbouncer_max_client_conn"),
        ({"dbtier_app_password": None}, "dbtier_app_password"),
        ({"pgbouncer_client_tls_sslmode": "maybe"}, "pgbouncer_client_tls_sslmode"),
    ],
)
def test_pgbouncer_role_rejects_bad_input_early(tmp_path, override, expected):
    role_vars = {k: v for k, v in {**GOOD_VARS, **override}.items() if v is not None}
    play = json.dumps(
        [
            {
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "vars": role_vars,
                "roles": ["pgbouncer"],
            }
        ]
    )
    proc = ansible_playbook(play, tmp_path, check=True)
    assert proc.returncode != 0
    results = task_results(proc)
    assert len(results) == 1, "the role must fail in its first task (argument validation)"
    assert expected in results[0]["msg"]


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"dbtier_migration_password": None}, "dbtier_migration_password"),
        ({"postgresql_archive_mode": "sometimes"}, "postgresql_archive_mode"),
        ({"postgresql_max_connections": "many"}, "postgresql_max_connections"),
    ],
)
def test_postgresql_role_rejects_bad_input_early(tmp_path, override, expected):
    role_vars = {k: v for k, v in {**GOOD_VARS, **override}.items() if v is not None}
    role_vars["postgresql_memory_mb"] = 1024
    play = json.dumps(
        [
            {
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "vars": role_vars,
                "roles": ["postgresql"],
            }
        ]
    )
    proc = ansible_playbook(play, tmp_path, check=True)
    assert proc.returncode != 0
    results = task_results(proc)
    assert len(results) == 1
    assert expected in results[0]["msg"]


# --- a real PostgreSQL with scram-sha-256 and a real PgBouncer ----------------------------------


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[LocalCluster]:
    """A scratch cluster where every role but the superuser must log in with SCRAM."""
    base = Path(tempfile.mkdtemp(prefix="dbtier-pgb-", dir="/tmp"))
    cluster = LocalCluster(base=base, settings={"password_encryption": "'scram-sha-256'"})
    cluster.init()
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text(
        f"local all {cluster.superuser} trust\n"
        f"host all {cluster.superuser} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_server_verifiers_read_set_and_refused(scram_cluster):
    verifier = scram.stable_verifier("srv_app", "srv-pw")
    with psycopg.connect(scram_cluster.dsn(), autocommit=True) as conn:
        for role in ("srv_app", "srv_md5", "srv_nopw"):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute("CREATE ROLE srv_app LOGIN")
        conn.execute("SET password_encryption = 'md5'")
        conn.execute("CREATE ROLE srv_md5 LOGIN PASSWORD 'md5-pw'")
        conn.execute("CREATE ROLE srv_nopw LOGIN")

        pgbouncer.set_server_verifier(conn, "srv_app", verifier)
        assert pgbouncer.read_server_verifiers(conn, ["srv_app"]) == {"srv_app": verifier}
        with pytest.raises(UsageError, match="not a SCRAM-SHA-256 verifier"):
            pgbouncer.set_server_verifier(conn, "srv_app", "plaintext")
        with pytest.raises(UsageError, match="not found on the server: srv_missing"):
            pgbouncer.read_server_verifiers(conn, ["srv_app", "srv_missing"])
        with pytest.raises(UsageError, match="'srv_md5' has a non-SCRAM"):
            pgbouncer.read_server_verifiers(conn, ["srv_md5"])
        with pytest.raises(UsageError, match="'srv_nopw' has no password"):
            pgbouncer.read_server_verifiers(conn, ["srv_nopw"])


def _start_pgbouncer(workdir: Path, cluster: LocalCluster, userlist: Path) -> tuple[int, int]:
    port = free_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"postgres = host=127.0.0.1 port={cluster.port} dbname=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {workdir}\n"
        f"pidfile = {workdir}/pgbouncer.pid\nlogfile = {workdir}/pgbouncer.log\n"
        f"auth_type = scram-sha-256\nauth_file = {userlist}\npool_mode = transaction\n"
    )
    for path in (workdir, ini, userlist):
        chown_to_server_user(path)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", PGBOUNCER, "-d", "-q", str(ini)], check=True, timeout=30
    )
    deadline = time.monotonic() + 10
    pidfile = workdir / "pgbouncer.pid"
    while time.monotonic() < deadline and not pidfile.exists():
        time.sleep(0.1)
    return port, int(pidfile.read_text())


@pytest.mark.ansible
@pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")
def test_real_pgbouncer_accepts_scram_with_the_generated_userlist(scram_cluster, tmp_path):
    dsn = scram_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS rds_like_app")
        conn.execute("CREATE ROLE rds_like_app LOGIN PASSWORD 'app-pw'")  # a random salt
        conn.execute("GRANT CONNECT ON DATABASE postgres TO rds_like_app")

    workdir = Path(tempfile.mkdtemp(prefix="dbtier-pgb-run-", dir="/tmp"))
    workdir.chmod(0o755)
    userlist = workdir / "userlist.txt"
    common = {
        "login_host": "127.0.0.1",
        "login_port": scram_cluster.port,
        "login_db": "postgres",
    }
    # RDS path: compute the stable verifier, set it on the role as a privileged login (the RDS
    # master user there; this cluster's superuser here). tests/test_database_bootstrap.py does it
    # with a master user that is not a superuser.
    play = module_play(
        {
            **common,
            "path": str(userlist),
            "source": "password",
            "set_on_server": True,
            "login_user": "postgres",
            "users": [{"name": "rds_like_app", "password": "app-pw"}],
        }
    )
    proc = ansible_playbook(play, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert task_results(proc)[0]["server_updated"] == ["rds_like_app"]
    expected = scram.stable_verifier("rds_like_app", "app-pw")
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'rds_like_app'"
        ).fetchone()[0]
    assert stored == expected
    proc = ansible_playbook(play, tmp_path)
    assert task_results(proc)[0]["changed"] is False
    assert task_results(proc)[0]["server_updated"] == []

    # Self-managed path: read the verifier back from pg_authid.
    proc = ansible_playbook(
        module_play(
            {
                **common,
                "login_user": "postgres",
                "source": "server",
                "users": [{"name": "rds_like_app"}],
            }
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert task_results(proc)[0]["users"] == [{"name": "rds_like_app", "verifier": expected}]

    port, pid = _start_pgbouncer(workdir, scram_cluster, userlist)
    try:
        via = f"host=127.0.0.1 port={port} dbname=postgres user=rds_like_app connect_timeout=5"
        with psycopg.connect(via + " password=app-pw") as conn:
            row = conn.execute("SELECT current_user, inet_server_port()").fetchone()
        assert row == ("rds_like_app", scram_cluster.port)
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(via + " password=wrong-pw")
    finally:
        os.kill(pid, signal.SIGINT)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")
@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        ("pool_mode = transaction", True),
        ("pool_mode = sometimes", False),
        # settings that only fail when PgBouncer uses them: the check must not reset them
        (
            "client_tls_sslmode = require\nclient_tls_cert_file = /nonexistent.crt\n"
            "client_tls_key_file = /nonexistent.key",
            False,
        ),
    ],
)
def test_check_config_script_validates_with_a_throwaway_pgbouncer(tmp_path, extra, valid):
    ini = tmp_path / "candidate.ini"
    ini.write_text(
        "[databases]\nmockupaws = host=127.0.0.1 port=5432\n[pgbouncer]\n"
        f"listen_port = {free_port()}\nauth_type = scram-sha-256\n{extra}\n"
    )
    proc = subprocess.run(
        ["sh", str(CHECK_CONFIG), str(ini)], capture_output=True, text=True, check=False, timeout=30
    )
    assert (proc.returncode == 0) is valid, proc.stderr
    if not valid:
        assert "pool_mode" in proc.stderr or "/nonexistent.crt" in proc.stderr
