"""The load balancer's health check of a PgBouncer host (src/dbtier/health.py, issue 9), run as an
unprivileged user against a real PgBouncer and PostgreSQL: 200 when SELECT 1 through PgBouncer
works, 503 when the database behind it or PgBouncer itself is down, bounded by its timeout."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from dbtier import pgbouncer, scram
from dbtier.pgcluster import LocalCluster, chown_to_server_user, free_port

from .conftest import ROOT
from .support.pgbouncer import PGBOUNCER, PgBouncer

pytestmark = pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")

USER, PASSWORD, DB = "dbtier_health", "health-pw", "healthdb"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    base = Path(tempfile.mkdtemp(prefix="dbtier-health-pg-", dir="/tmp"))
    cluster = LocalCluster(base=base, settings={"password_encryption": "'scram-sha-256'"})
    cluster.init()
    (cluster.datadir / "pg_hba.conf").write_text(
        f"local all {cluster.superuser} trust\n"
        f"host all {cluster.superuser} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DB}")
        verifier = scram.stable_verifier(USER, PASSWORD)
        conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{verifier}'")
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def health_check(home: Path, port: int, dsns: list[str]) -> Iterator[str]:
    """The health check as roles/pgbouncer installs it: the script alone, run by an unprivileged
    user with the role's password in a pgpass file; one --dsn per PgBouncer process. Its URL."""
    script = home / "pgbouncer-health.py"
    shutil.copyfile(ROOT / "src/dbtier/health.py", script)
    pgpass = home / "pgpass"
    pgpass.write_text(f"*:{port}:{DB}:{USER}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    chown_to_server_user(pgpass)
    http_port = free_port()
    proc = subprocess.Popen(
        [
            "runuser",
            "-u",
            "postgres",  # an unprivileged user, as dbtier-health on the hosts
            "--",
            "env",
            f"PGPASSFILE={pgpass}",
            "/usr/bin/python3",
            str(script),
            "--listen",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--timeout",
            "2",
            *(arg for dsn in dsns for arg in ("--dsn", dsn)),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1)  # noqa: S310 - loopback only
        except urllib.error.HTTPError:
            break  # it answers (404)
        except OSError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _userlist(home: Path) -> Path:
    userlist = home / "userlist.txt"
    userlist.write_text(pgbouncer.render_userlist([(USER, scram.stable_verifier(USER, PASSWORD))]))
    return userlist


def _dsn(bouncer: PgBouncer) -> str:
    return f"host={bouncer.dir} port={bouncer.port} dbname={DB} user={USER} connect_timeout=2"


@pytest.fixture
def stack(cluster: LocalCluster) -> Iterator[tuple[PgBouncer, str]]:
    """PgBouncer in front of the cluster, and the health check."""
    home = Path(tempfile.mkdtemp(prefix="dbtier-health-", dir="/tmp"))
    home.chmod(0o755)
    bouncer = PgBouncer(
        {DB: f"host=127.0.0.1 port={cluster.port} dbname={DB}"},
        _userlist(home),
        server_login_retry="1",
    ).start()
    try:
        with health_check(home, bouncer.port, [_dsn(bouncer)]) as url:
            yield bouncer, url
    finally:
        bouncer.stop()
        shutil.rmtree(home, ignore_errors=True)


def get(url: str, method: str = "GET") -> tuple[int, str, float]:
    started = time.monotonic()
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    return status, body.strip(), time.monotonic() - started


def test_healthy_then_database_down_then_back(cluster: LocalCluster, stack) -> None:
    _bouncer, url = stack
    assert get(url + "/health")[:2] == (200, "ok")
    assert get(url + "/health", "HEAD")[0] == 200
    assert get(url + "/")[0] == 404
    assert get(url + "/health/../admin")[0] == 404

    cluster.stop()
    try:
        status, body, took = get(url + "/health")
        assert status == 503, body
        assert took < 5, f"the check took {took:.1f}s (timeout 2s)"
    finally:
        cluster.start()
    deadline = time.monotonic() + 20
    while get(url + "/health")[0] != 200:  # PgBouncer reconnects (server_login_retry 1s)
        assert time.monotonic() < deadline, "not healthy again 20s after the database came back"
        time.sleep(0.5)


def test_pgbouncer_down_is_unhealthy_at_once(stack) -> None:
    bouncer, url = stack
    assert get(url + "/health")[0] == 200
    bouncer.stop()
    status, body, took = get(url + "/health")
    assert status == 503
    assert "No such file or directory" in body or "connection" in body, body
    assert took < 3


def test_every_process_on_the_shared_port_is_checked(cluster: LocalCluster) -> None:
    """Two PgBouncer processes on one port (so_reuseport, as roles/pgbouncer runs them), each with
    its own Unix socket: healthy while both answer; one down is a 503 naming it, although TCP
    clients still get through (the kernel sends them to the other)."""
    home = Path(tempfile.mkdtemp(prefix="dbtier-health-", dir="/tmp"))
    home.chmod(0o755)
    userlist = _userlist(home)
    databases = {DB: f"host=127.0.0.1 port={cluster.port} dbname={DB}"}
    first = PgBouncer(databases, userlist, so_reuseport="1").start()
    second = PgBouncer(databases, userlist, so_reuseport="1")
    second.port = first.port
    try:
        second.start()
        assert second.pid != first.pid
        with health_check(home, first.port, [_dsn(first), _dsn(second)]) as url:
            assert get(url + "/health")[:2] == (200, "ok")
            second.stop()
            status, body, took = get(url + "/health")
            assert status == 503
            assert body.startswith("process 2 of 2: "), body
            assert took < 3
            dsn = f"host=127.0.0.1 port={first.port} dbname={DB} user={USER} password={PASSWORD}"
            with psycopg.connect(dsn + " sslmode=disable", connect_timeout=3) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        second.stop()
        first.stop()
        shutil.rmtree(home, ignore_errors=True)
