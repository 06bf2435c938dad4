"""roles/database_bootstrap against an RDS stand-in (issue 9): a PostgreSQL whose master user is
not a superuser (CREATEROLE, CREATEDB, member of rds_superuser, owner of the database RDS created,
pg_authid unreadable) and that accepts other roles only over TLS with SCRAM (rds.force_ssl). The
master credentials come from moto_server's Secrets Manager. Then a password rotation through a
real PgBouncer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest

from dbtier import awssecret, pgprobe, scram
from dbtier.errors import DbtierError
from dbtier.pgcluster import LocalCluster

from .support.moto_server import ACCESS_KEY, SECRET_KEY, MotoServer
from .support.pgbouncer import PGBOUNCER, PgBouncer
from .support.rds_standin import (  # noqa: F401 - rds and tls are fixtures
    DB,
    MASTER,
    MASTER_PASSWORD,
    rds,
    superuser,
    tls,
    tls_dsn,
)
from .support.tlsca import CAFiles, make_ca

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.ansible

OWNER, APP, HEALTH = "mockupaws_owner", "mockupaws_app", "dbtier_health"
PASSWORDS = {OWNER: "owner-pw-1", APP: "app-pw-1", HEALTH: "health-pw-1"}


@pytest.fixture(scope="module")
def master_secret() -> Iterator[tuple[MotoServer, str]]:
    """The secret RDS manages for its master user (manage_master_user_password), in moto."""
    with MotoServer() as moto:
        client = boto3.client("secretsmanager", **moto.client_kwargs("eu-west-1"))
        arn = client.create_secret(
            Name="rds!db-0123-abcd",
            SecretString=json.dumps({"username": MASTER, "password": MASTER_PASSWORD}),
        )["ARN"]
        yield moto, arn


def ansible(tmp_path: Path, plays: list[dict], *args: str, env: dict | None = None):
    book = tmp_path / "play.json"
    book.write_text(json.dumps(plays))
    full_env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        **(env or {}),
    }
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(book), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook output is not JSON:\n{proc.stdout[-4000:]}{proc.stderr}")
    # role tasks are named "<role> : <task>"
    tasks = {
        task["task"]["name"].split(" : ", 1)[-1]: task["hosts"].get("localhost", {})
        for play in data["plays"]
        for task in play["tasks"]
    }
    return proc, data["stats"].get("localhost", {}), tasks


def localhost_play(**play) -> dict:
    return {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        **play,
    }


def bootstrap(
    tmp_path: Path,
    rds: LocalCluster,
    tls: CAFiles,
    secret: tuple[MotoServer, str],
    *args: str,
    passwords: dict[str, str] | None = None,
    **overrides,
):
    moto, arn = secret
    pw = {**PASSWORDS, **(passwords or {})}
    role_vars = {
        "database_bootstrap_login_host": "127.0.0.1",
        "database_bootstrap_login_port": rds.port,
        "database_bootstrap_master_secret_arn": arn,
        "database_bootstrap_aws_endpoint_url": moto.url,
        "database_bootstrap_sslmode": "verify-full",
        "database_bootstrap_sslrootcert": str(tls.ca_cert),
        "database_bootstrap_packages": [],
        # pg_stat_statements is not a trusted extension: on RDS rds_superuser may create it, on
        # this stand-in only a superuser could. pgcrypto is trusted: the same code path.
        "database_bootstrap_extensions": ["pgcrypto"],
        "dbtier_db_name": DB,
        "dbtier_migration_password": pw[OWNER],
        "dbtier_app_password": pw[APP],
        "dbtier_health_password": pw[HEALTH],
        **overrides,
    }
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",  # the ARN's region (eu-west-1) must win
    }
    play = localhost_play(roles=[{"role": "database_bootstrap", "vars": role_vars}])
    return ansible(tmp_path, [play], *args, env=env)


def test_the_stand_in_is_like_rds(rds: LocalCluster, tls: CAFiles) -> None:
    (row,) = superuser(
        rds, f"SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = '{MASTER}'"
    )
    assert row == (False, True, True)
    with (
        psycopg.connect(tls_dsn(rds, tls, MASTER, MASTER_PASSWORD)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT rolpassword FROM pg_authid")
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(
            tls_dsn(rds, tls, MASTER, MASTER_PASSWORD).replace("verify-full", "disable")
        )


def test_bootstrap_without_superuser_then_nothing_changes(
    rds: LocalCluster, tls: CAFiles, master_secret, tmp_path: Path
) -> None:
    proc, stats, tasks = bootstrap(tmp_path, rds, tls, master_secret)
    assert proc.returncode == 0, json.dumps(tasks, indent=1)[-6000:]
    assert stats["changed"] > 0
    assert "master-pw" not in proc.stdout and "app-pw-1" not in proc.stdout

    # roles: logins, nothing more; the stable verifiers PgBouncer's userlist holds
    rows = superuser(
        rds,
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolpassword "
        f"FROM pg_authid WHERE rolname IN ('{OWNER}', '{APP}', '{HEALTH}') ORDER BY 1",
    )
    assert [r[0] for r in rows] == sorted([OWNER, APP, HEALTH])
    for name, login, su, createrole, createdb, verifier in rows:
        assert (login, su, createrole, createdb) == (True, False, False, False), name
        assert verifier == scram.stable_verifier(name, PASSWORDS[name]), name

    # the database RDS created belongs to the owner now, and so does schema public
    assert superuser(
        rds, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DB}'"
    ) == [(OWNER,)]
    assert superuser(
        rds, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
    ) == [(OWNER,)]
    assert superuser(rds, "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'") == [
        ("pgcrypto",)
    ]
    # grants and default privileges
    (privs,) = superuser(
        rds,
        f"SELECT has_database_privilege('{APP}', '{DB}', 'CONNECT'), "
        f"has_database_privilege('{HEALTH}', '{DB}', 'CONNECT'), "
        f"has_schema_privilege('{APP}', 'public', 'USAGE'), "
        f"has_schema_privilege('{APP}', 'public', 'CREATE')",
    )
    assert privs == (True, True, True, False)
    defaults = dict(
        superuser(
            rds,
            "SELECT defaclobjtype::text, array_to_string(defaclacl, ',') FROM pg_default_acl d "
            "JOIN pg_namespace n ON n.oid = d.defaclnamespace "
            f"WHERE n.nspname = 'public' AND pg_get_userbyid(d.defaclrole) = '{OWNER}'",
        )
    )
    assert f"{APP}=arwd/{OWNER}" in defaults["r"]
    assert f"{APP}=rU/{OWNER}" in defaults["S"]

    # what the roles can do: the owner creates, the application only reads and writes
    with psycopg.connect(tls_dsn(rds, tls, OWNER, PASSWORDS[OWNER]), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (id serial PRIMARY KEY, v text)")
    with psycopg.connect(tls_dsn(rds, tls, APP, PASSWORDS[APP]), autocommit=True) as conn:
        conn.execute("INSERT INTO probe (v) VALUES ('x')")
        assert conn.execute("SELECT count(*) > 0 FROM probe").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE app_made (i int)")
    with psycopg.connect(tls_dsn(rds, tls, HEALTH, PASSWORDS[HEALTH]), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM probe")

    again_proc, again, tasks = bootstrap(tmp_path, rds, tls, master_secret)
    assert again_proc.returncode == 0, json.dumps(tasks, indent=1)[-6000:]
    assert again["changed"] == 0, [n for n, t in tasks.items() if t.get("changed")]
    check_proc, check, _ = bootstrap(tmp_path, rds, tls, master_secret, "--check")
    assert check_proc.returncode == 0
    assert check["changed"] == 0


def test_a_missing_secret_fails_with_one_line(
    rds: LocalCluster, tls: CAFiles, master_secret, tmp_path: Path, monkeypatch
) -> None:
    proc, _, tasks = bootstrap(
        tmp_path,
        rds,
        tls,
        master_secret,
        database_bootstrap_master_secret_arn=master_secret[1] + "-missing",
    )
    assert proc.returncode != 0
    failed = tasks[
        "Read the RDS master credentials from Secrets Manager (on this host, with its AWS identity)"
    ]
    assert failed.get("failed") is True
    # no_log hides the message in the output; the module's error is one line (tested directly)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    moto, arn = master_secret
    with pytest.raises(
        DbtierError, match=r"cannot read secret .*-missing: ResourceNotFoundException"
    ):
        awssecret.read_credentials(arn + "-missing", endpoint_url=moto.url)
    assert awssecret.read_credentials(arn, endpoint_url=moto.url) == {
        "username": MASTER,
        "password": MASTER_PASSWORD,
    }


def test_probe_tells_what_the_server_stores(rds: LocalCluster, tls: CAFiles) -> None:
    """The SCRAM login that replaces reading pg_authid where the master cannot (RDS)."""
    superuser(rds, "DROP ROLE IF EXISTS probe_user")
    superuser(rds, "CREATE ROLE probe_user LOGIN")
    endpoint = pgprobe.Endpoint("127.0.0.1", rds.port, DB, "verify-full", str(tls.ca_cert))
    verifier = scram.stable_verifier("probe_user", "pw")
    assert pgprobe.holds_verifier(endpoint, "probe_user", "pw", verifier).holds is False  # none
    superuser(rds, "ALTER ROLE probe_user PASSWORD 'pw'")  # the right password, a random salt
    verdict = pgprobe.holds_verifier(endpoint, "probe_user", "pw", verifier)
    assert (verdict.holds, verdict.detail) == (
        False,
        "the password is right but stored with another salt",
    )
    superuser(rds, f"ALTER ROLE probe_user PASSWORD '{verifier}'")
    assert pgprobe.holds_verifier(endpoint, "probe_user", "pw", verifier).holds is True
    other = scram.stable_verifier("probe_user", "other")
    assert pgprobe.holds_verifier(endpoint, "probe_user", "other", other).holds is False
    assert pgprobe.holds_verifier(endpoint, "nobody", "pw", verifier).holds is False
    # TLS is checked like libpq's verify-full: another CA is refused before any password is sent
    wrong_ca = make_ca(Path(tempfile.mkdtemp(prefix="dbtier-tls-other-", dir="/tmp")))
    bad = pgprobe.Endpoint("127.0.0.1", rds.port, DB, "verify-full", str(wrong_ca.ca_cert))
    with pytest.raises(DbtierError, match="TLS failed"):
        pgprobe.holds_verifier(bad, "probe_user", "pw", verifier)
    shutil.rmtree(wrong_ca.ca_cert.parent, ignore_errors=True)
    with pytest.raises(DbtierError, match=r"no pg_hba\.conf entry"):
        pgprobe.holds_verifier(
            pgprobe.Endpoint("127.0.0.1", rds.port, DB, "disable"), "probe_user", "pw", verifier
        )


def userlist_play(path: Path, passwords: dict[str, str], **module_args) -> dict:
    """What roles/pgbouncer does on RDS: the userlist from the vaulted passwords."""
    return localhost_play(
        tasks=[
            {
                "name": "userlist",
                "pgbouncer_userlist": {
                    "path": str(path),
                    "source": "password",
                    "users": [{"name": n, "password": p} for n, p in passwords.items()],
                    "mode": "0600",
                    **module_args,
                },
            }
        ]
    )


@pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")
def test_rotating_a_password_then_rerunning(
    rds: LocalCluster, tls: CAFiles, master_secret, tmp_path: Path
) -> None:
    """Rotate the application password in the vault, rerun: the master user sets the new verifier
    (the role cannot log in with a password it does not have yet), PgBouncer gets the new userlist,
    and the application logs in through PgBouncer with the new password, not the old one."""
    proc, _, tasks = bootstrap(tmp_path, rds, tls, master_secret)
    assert proc.returncode == 0, json.dumps(tasks, indent=1)[-4000:]
    userlist = tmp_path / "userlist.txt"
    proc, _, tasks = ansible(tmp_path, [userlist_play(userlist, PASSWORDS)])
    assert proc.returncode == 0, tasks

    databases = {
        DB: f"host=127.0.0.1 port={rds.port} dbname={DB}",
    }
    settings = {"server_tls_sslmode": "verify-full", "server_tls_ca_file": str(tls.ca_cert)}
    with PgBouncer(databases, userlist, **settings) as bouncer:
        via = f"host=127.0.0.1 port={bouncer.port} dbname={DB} user={APP} connect_timeout=5"
        with psycopg.connect(f"{via} password={PASSWORDS[APP]}") as conn:
            assert conn.execute("SELECT current_user, inet_server_port()").fetchone() == (
                APP,
                rds.port,
            )

        rotated = {**PASSWORDS, APP: "app-pw-2"}
        proc, stats, tasks = bootstrap(tmp_path, rds, tls, master_secret, passwords=rotated)
        assert proc.returncode == 0, json.dumps(tasks, indent=1)[-4000:]
        verifiers = tasks["Store the stable SCRAM verifiers of the passwords"]
        assert verifiers["updated"] == [APP]
        # decided without pg_authid, by a SCRAM login of the role with the new password
        assert verifiers["reasons"] == {APP: "the server refused the password"}
        assert stats["changed"] == 1
        _, again, _ = bootstrap(tmp_path, rds, tls, master_secret, passwords=rotated)
        assert again["changed"] == 0

        proc, _, tasks = ansible(tmp_path, [userlist_play(userlist, rotated)])
        assert tasks["userlist"]["changed"] is True
        bouncer.set_userlist(userlist)
        bouncer.reload()
        with psycopg.connect(f"{via} password=app-pw-2") as conn:
            assert conn.execute("SELECT current_user, inet_server_port()").fetchone() == (
                APP,
                rds.port,
            )
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(f"{via} password={PASSWORDS[APP]}")
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(tls_dsn(rds, tls, APP, PASSWORDS[APP]))

    # back to the first password for the other tests (the module is shared)
    proc, _, _ = bootstrap(tmp_path, rds, tls, master_secret)
    assert proc.returncode == 0


def test_set_on_server_needs_a_privileged_login(
    rds: LocalCluster, tls: CAFiles, tmp_path: Path
) -> None:
    """The bug of issue 9: pgbouncer_userlist set the verifier by logging in as the role itself,
    with the new password, before the server had it: a rotation or a first deploy could not work."""
    superuser(rds, "DROP ROLE IF EXISTS rotated_role")
    superuser(rds, "CREATE ROLE rotated_role LOGIN PASSWORD 'old-password'")
    userlist = tmp_path / "u.txt"
    common = {
        "set_on_server": True,
        "login_host": "127.0.0.1",
        "login_port": rds.port,
        "login_db": DB,
        "sslmode": "verify-full",
        "sslrootcert": str(tls.ca_cert),
    }
    proc, _, tasks = ansible(
        tmp_path, [userlist_play(userlist, {"rotated_role": "new-password"}, **common)]
    )
    assert proc.returncode != 0
    assert "set_on_server needs login_user" in tasks["userlist"]["msg"]
    assert not userlist.exists()

    as_master = {**common, "login_user": MASTER, "login_password": MASTER_PASSWORD}
    play = userlist_play(userlist, {"rotated_role": "new-password"}, **as_master)
    proc, _, tasks = ansible(tmp_path, [play])
    assert proc.returncode == 0, tasks
    assert tasks["userlist"]["server_updated"] == ["rotated_role"]
    proc, _, tasks = ansible(tmp_path, [play])
    assert (tasks["userlist"]["changed"], tasks["userlist"]["server_updated"]) == (False, [])
    assert re.match(
        r"SCRAM-SHA-256\$4096:",
        superuser(rds, "SELECT rolpassword FROM pg_authid WHERE rolname = 'rotated_role'")[0][0],
    )
    with psycopg.connect(tls_dsn(rds, tls, "rotated_role", "new-password", db="postgres")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("rotated_role",)
