"""The load balancer's health check of a PgBouncer host (src/dbtier/health.py, issue 9), run as an
unprivileged user against a real PgBouncer and PostgreSQL: 200 when SELECT 1 through PgBouncer
works, 503 when the database behind it or PgBouncer itself is down, bounded by its timeout. And its
GET /metrics (issue 13): every process's admin console for Prometheus, on the pgbouncer.ini the
role renders (the health login a stats user), checked by promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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
from .support.runbook import DOCS, shell_blocks

pytestmark = pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")

USER, PASSWORD, DB = "dbtier_health", "health-pw", "healthdb"
APP_USER, APP_PASSWORD = "metrics_app", "metrics-app-pw"
ROLE = ROOT / "ansible/roles/pgbouncer"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


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
        verifier = scram.stable_verifier(APP_USER, APP_PASSWORD)
        conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{verifier}'")
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
    shutil.copyfile(ROOT / "src/dbtier/pgbouncermetrics.py", home / "pgbouncermetrics.py")
    pgpass = home / "pgpass"
    # as the role writes it: the database (/health) and the admin console (/metrics)
    pgpass.write_text(f"*:{port}:{DB}:{USER}:{PASSWORD}\n*:{port}:pgbouncer:{USER}:{PASSWORD}\n")
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
    userlist.write_text(
        pgbouncer.render_userlist(
            [
                (USER, scram.stable_verifier(USER, PASSWORD)),
                (APP_USER, scram.stable_verifier(APP_USER, APP_PASSWORD)),
            ]
        )
    )
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


# --- GET /metrics ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def role_ini(cluster: LocalCluster) -> Iterator[Path]:
    """pgbouncer.ini as roles/pgbouncer renders it (its defaults and vars) for two processes in
    front of the cluster, TLS to clients off (the tests' clients use the Unix sockets), and a
    host budget of 2 server connections: 1 per process."""
    workdir = Path(tempfile.mkdtemp(prefix="dbtier-health-ini-", dir="/tmp"))
    workdir.chmod(0o755)
    extra = {
        "dbtier_db_host": "127.0.0.1",
        "dbtier_db_port": cluster.port,
        "dbtier_db_name": DB,
        "dbtier_app_password": "unused",
        "dbtier_migration_password": "unused",
        "pgbouncer_processes": 2,
        "pgbouncer_default_pool_size": 2,
        "pgbouncer_reserve_pool_size": 0,
        "pgbouncer_client_tls_sslmode": "disable",
        "ansible_python_interpreter": sys.executable,
    }
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
        "tasks": [
            {
                "name": "pgbouncer.ini",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates/pgbouncer.ini.j2"),
                    "dest": str(workdir / "pgbouncer.ini"),
                    "mode": "0644",
                },
            }
        ],
    }
    (workdir / "play.json").write_text(json.dumps([play]))
    (workdir / "extra.json").write_text(json.dumps(extra))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
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
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    try:
        yield workdir / "pgbouncer.ini"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def two_processes(role_ini: Path) -> Iterator[tuple[PgBouncer, PgBouncer, str]]:
    """Two PgBouncer processes on one port (so_reuseport), each with its own Unix socket, on the
    role's pgbouncer.ini, and the health service asking both: (first, second, its URL)."""
    home = Path(tempfile.mkdtemp(prefix="dbtier-health-", dir="/tmp"))
    home.chmod(0o755)
    userlist = _userlist(home)
    first = PgBouncer({}, userlist, include=role_ini).start()
    second = PgBouncer({}, userlist, include=role_ini)
    second.port = first.port
    try:
        second.start()
        with health_check(home, first.port, [_dsn(first), _dsn(second)]) as url:
            yield first, second, url
    finally:
        second.stop()
        first.stop()
        shutil.rmtree(home, ignore_errors=True)


Key = tuple[str, frozenset[tuple[str, str]]]


def scrape(url: str) -> tuple[dict[Key, float], str]:
    """GET /metrics: 200 with the text format's content type; its samples and the body."""
    request = urllib.request.Request(url + "/metrics")  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        body = response.read().decode()
    samples: dict[Key, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            assert match, line
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
            samples[(match[1], labels)] = float(match[3])
    return samples, body


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def promtool_check(body: str) -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _app_dsn(bouncer: PgBouncer) -> str:
    """A client of that very process: through its own Unix socket."""
    return (
        f"host={bouncer.dir} port={bouncer.port} dbname={DB} user={APP_USER} "
        f"password={APP_PASSWORD} connect_timeout=5"
    )


def wait_for(url: str, sample: Key, predicate, what: str) -> dict[Key, float]:
    deadline = time.monotonic() + 15
    while True:
        samples, _ = scrape(url)
        if sample in samples and predicate(samples[sample]):
            return samples
        assert time.monotonic() < deadline, f"{what}: {sample} is {samples.get(sample)}"
        time.sleep(0.2)


@pytest.mark.ansible
def test_metrics_of_every_process_from_real_pgbouncers(two_processes) -> None:
    """Both processes reported; their numbers move: clients connected to process 2 raise its
    client count, a held transaction on process 1's pool of 1 makes a second client wait; the
    role's settings are what they report; promtool accepts the output."""
    first, second, url = two_processes
    samples, body = scrape(url)
    promtool_check(body)
    for process in ("1", "2"):
        assert samples[key("pgbouncer_up", process=process)] == 1
        assert samples[key("pgbouncer_max_client_conn", process=process)] == 1000  # the role's
        # the host's budget of 2 shared out over the 2 processes
        assert samples[key("pgbouncer_database_pool_size", process=process, database=DB)] == 1
    assert 0 < samples[key("pgbouncer_scrape_duration_seconds")] < 5
    head = urllib.request.Request(url + "/metrics", method="HEAD")  # noqa: S310
    with urllib.request.urlopen(head, timeout=15) as response:  # noqa: S310
        assert (response.status, response.read()) == (200, b"")
    # docs/PGBOUNCER.md's command, on this service's port instead of the role's 8008
    (block,) = [b for b in shell_blocks(DOCS / "PGBOUNCER.md") if "/metrics" in b.text]
    assert "http://127.0.0.1:8008/metrics" in block.text
    shown = subprocess.run(
        ["bash", "-c", block.script().replace("http://127.0.0.1:8008", url)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        'pgbouncer_up{process="1"} 1',
        'pgbouncer_up{process="2"} 1',
    ]

    clients = key("pgbouncer_client_connections", process="2")
    before = samples[clients]
    conns = [psycopg.connect(_app_dsn(second), autocommit=True) for _ in range(3)]
    try:
        for conn in conns:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        wait_for(url, clients, lambda v: v >= before + 3, "3 more clients on process 2")
    finally:
        for conn in conns:
            conn.close()

    pool = {"process": "1", "database": DB, "user": APP_USER}
    holder = psycopg.connect(_app_dsn(first))
    waiter = psycopg.connect(_app_dsn(first), autocommit=True)
    answered: list[object] = []
    try:
        holder.execute("SELECT 1")  # a transaction: the pool's only server connection is taken
        thread = threading.Thread(
            target=lambda: answered.append(waiter.execute("SELECT 2").fetchone()), daemon=True
        )
        thread.start()
        samples = wait_for(
            url,
            key("pgbouncer_pool_client_waiting", **pool),
            lambda v: v >= 1,
            "a client waiting for process 1's pool of 1",
        )
        assert samples[key("pgbouncer_pool_server_active", **pool)] == 1
        assert samples[key("pgbouncer_pool_client_active", **pool)] >= 1
        assert answered == []
        holder.commit()
        thread.join(timeout=10)
        assert answered == [(2,)]
    finally:
        holder.close()
        waiter.close()
    samples = wait_for(
        url,
        key("pgbouncer_stats_xact_count_total", process="1", database=DB),
        lambda v: v >= 2,
        "the transactions of process 1",
    )
    assert samples[key("pgbouncer_stats_wait_time_seconds_total", process="1", database=DB)] > 0
    assert samples[key("pgbouncer_pool_client_waiting", **pool)] == 0


@pytest.mark.ansible
def test_a_stopped_process_is_down_and_the_other_still_reported(two_processes) -> None:
    _first, second, url = two_processes
    second.stop()
    started = time.monotonic()
    samples, body = scrape(url)  # 200: Prometheus's own `up` is about this service
    assert time.monotonic() - started < 5
    promtool_check(body)
    assert samples[key("pgbouncer_up", process="1")] == 1
    assert samples[key("pgbouncer_up", process="2")] == 0
    assert samples[key("pgbouncer_max_client_conn", process="1")] == 1000
    assert not [k for k in samples if ("process", "2") in k[1] and k[0] != "pgbouncer_up"]
    assert get(url + "/health")[0] == 503  # /health keeps its own answer


def test_metrics_need_a_stats_user(stack) -> None:
    """A PgBouncer whose stats_users does not name the health login (what the role's
    pgbouncer.ini must do) refuses it: pgbouncer_up 0, still HTTP 200, /health unaffected."""
    _bouncer, url = stack
    samples, _ = scrape(url)
    assert samples[key("pgbouncer_up", process="1")] == 0
    assert get(url + "/health")[:2] == (200, "ok")
