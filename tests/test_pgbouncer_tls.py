"""Client TLS and server verification of roles/pgbouncer (issue 9), with a real PgBouncer on the
configuration the role renders: clients must use TLS (sslmode=require works, verify-ca/verify-full
against the CA work, a plain client is refused), the Unix socket stays plain, and PgBouncer
verifies the server (the RDS stand-in) against its CA bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtier import pgbouncer, scram
from dbtier.pgcluster import LocalCluster

from .support.pgbouncer import PGBOUNCER, PgBouncer
from .support.rds_standin import DB, rds, superuser, tls  # noqa: F401 - rds and tls are fixtures
from .support.tlsca import CAFiles, make_ca

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "ansible/roles/pgbouncer"
VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.ansible,
    pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed"),
]

USER, PASSWORD = "tls_app", "tls-app-pw"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the postgres OS user (PgBouncer) can enter."""
    path = Path(tempfile.mkdtemp(prefix="dbtier-pgb-tls-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def userlist(rds: LocalCluster) -> Iterator[Path]:
    verifier = scram.stable_verifier(USER, PASSWORD)
    superuser(rds, f"DROP ROLE IF EXISTS {USER}")
    superuser(rds, f"CREATE ROLE {USER} LOGIN PASSWORD '{verifier}'")
    superuser(rds, f"GRANT CONNECT ON DATABASE {DB} TO {USER}")
    path = Path(tempfile.mkdtemp(prefix="dbtier-userlist-", dir="/tmp")) / "userlist.txt"
    path.write_text(pgbouncer.render_userlist([(USER, verifier)]))
    try:
        yield path
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def render(
    workdir: Path, rds: LocalCluster, **overrides
) -> tuple[subprocess.CompletedProcess, dict]:
    """roles/pgbouncer's TLS tasks (tasks/tls.yml) and pgbouncer.ini template, with the role's
    defaults and vars, into workdir (handlers replaced: no systemd here)."""
    extra = {
        "dbtier_db_host": "127.0.0.1",
        "dbtier_db_port": rds.port,
        "dbtier_db_name": DB,
        "dbtier_app_password": "unused",
        "dbtier_migration_password": "unused",
        "pgbouncer_tls_dir": str(workdir / "tls"),
        **overrides,
    }
    (workdir / "extra.json").write_text(json.dumps(extra))
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "handlers": [{"name": "Reload pgbouncer", "ansible.builtin.debug": {"msg": "reload"}}],
        "tasks": [
            {"name": "tls", "ansible.builtin.include_tasks": str(ROLE / "tasks/tls.yml")},
            {
                "name": "ini",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates/pgbouncer.ini.j2"),
                    "dest": str(workdir / "pgbouncer.ini"),
                    "mode": "0644",
                },
            },
        ],
    }
    (workdir / "play.json").write_text(json.dumps([play]))
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            str(workdir / "play.json"),
            "-e",
            f"@{workdir / 'extra.json'}",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
            "ANSIBLE_NOCOLOR": "1",
        },
    )
    data = json.loads(proc.stdout)
    tasks = {
        t["task"]["name"]: t["hosts"].get("localhost", {})
        for p in data["plays"]
        for t in p["tasks"]
    }
    return proc, {"stats": data["stats"].get("localhost", {}), **tasks}


def dsn(bouncer: PgBouncer, sslmode: str, **extra: str) -> str:
    params = {
        "host": "127.0.0.1",
        "port": str(bouncer.port),
        "dbname": DB,
        "user": USER,
        "password": PASSWORD,
        "sslmode": sslmode,
        "connect_timeout": "5",
        **extra,
    }
    return " ".join(f"{k}={v}" for k, v in params.items())


def test_clients_must_use_tls_and_the_server_is_verified(
    rds: LocalCluster, tls: CAFiles, userlist: Path, workdir: Path
) -> None:
    proc, _ = render(
        workdir,
        rds,
        pgbouncer_client_tls_cert=tls.server_cert.read_text(),
        pgbouncer_client_tls_key=tls.server_key.read_text(),
        pgbouncer_server_tls_sslmode="verify-full",
        pgbouncer_server_tls_ca=tls.ca_cert.read_text(),
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    ini = (workdir / "pgbouncer.ini").read_text()
    assert "client_tls_sslmode = require" in ini
    assert "server_tls_sslmode = verify-full" in ini
    assert f"server_tls_ca_file = {workdir}/tls/server-ca.pem" in ini
    key = workdir / "tls/client-tls.key"
    assert (key.stat().st_mode & 0o777, key.owner(), key.group()) == (0o640, "root", "postgres")
    assert "BEGIN PRIVATE KEY" not in proc.stdout  # no_log

    with PgBouncer({}, userlist, include=workdir / "pgbouncer.ini") as bouncer:
        with psycopg.connect(dsn(bouncer, "require")) as conn:
            assert conn.pgconn.ssl_in_use
            # through PgBouncer to the stand-in, which takes this role over TLS only
            assert conn.execute("SELECT current_user, inet_server_port()").fetchone() == (
                USER,
                rds.port,
            )
        for mode in ("verify-ca", "verify-full"):
            with psycopg.connect(dsn(bouncer, mode, sslrootcert=str(tls.ca_cert))) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="SSL required"):
            psycopg.connect(dsn(bouncer, "disable"))
        # the Unix socket (the health check's way in) is local and needs no TLS
        local = (
            f"host={bouncer.dir} port={bouncer.port} dbname={DB} user={USER} password={PASSWORD}"
        )
        with psycopg.connect(local) as conn:
            assert not conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_server_certificate_from_another_ca_is_refused(
    rds: LocalCluster, tls: CAFiles, userlist: Path, workdir: Path
) -> None:
    other = make_ca(workdir / "other-ca")
    proc, _ = render(
        workdir,
        rds,
        pgbouncer_client_tls_sslmode="disable",
        pgbouncer_server_tls_sslmode="verify-full",
        pgbouncer_server_tls_ca=other.ca_cert.read_text(),
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    with PgBouncer(
        {}, userlist, include=workdir / "pgbouncer.ini", server_login_retry="1"
    ) as bouncer:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(bouncer, "disable", connect_timeout="3"))
        assert "TLS handshake error" in bouncer.log()  # the server was never logged in to


def test_self_signed_only_when_allowed(rds: LocalCluster, userlist: Path, workdir: Path) -> None:
    proc, result = render(workdir, rds)  # require, no certificate, self-signed not allowed
    assert proc.returncode != 0
    msg = result["Check that every TLS mode has the files it needs"]["msg"]
    assert "give pgbouncer_client_tls_cert and pgbouncer_client_tls_key (vault)" in msg
    assert not (workdir / "tls/client-tls.crt").exists()

    proc, _ = render(
        workdir,
        rds,
        pgbouncer_server_tls_sslmode="verify-full",
        pgbouncer_client_tls_self_signed=True,
    )
    assert proc.returncode != 0  # verify-full without a CA bundle
    assert "give the CA bundle of the server certificate in pgbouncer_server_tls_ca" in proc.stdout

    proc, result = render(workdir, rds, pgbouncer_client_tls_self_signed=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    cert = workdir / "tls/client-tls.crt"
    assert cert.exists()
    generated = "Generate a self-signed certificate (allowed for the local stack and tests only)"
    assert result[generated]["changed"] is True
    proc, again = render(workdir, rds, pgbouncer_client_tls_self_signed=True)
    assert again[generated]["changed"] is False
    assert again["stats"]["changed"] == 0
    with PgBouncer({}, userlist, include=workdir / "pgbouncer.ini") as bouncer:
        with psycopg.connect(dsn(bouncer, "verify-full", sslrootcert=str(cert))) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="SSL required"):
            psycopg.connect(dsn(bouncer, "disable"))
