"""Shared fixtures: a real PostgreSQL 15 cluster for the session, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtier.pgcluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = ROOT / "files" / "sql"
VENV_BIN = Path(sys.executable).parent
# dbtier as the postgres OS user runs it (archive_command, restore_command): the venv lives under
# /root, which postgres cannot enter, so Debian's python3 with the python3-* packages that
# roles/dbtier installs on database hosts (scripts/install-system-deps.sh) and this source tree.
SERVER_DBTIER = f"env PYTHONPATH={ROOT / 'src'} /usr/bin/python3 -m dbtier"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="dbtier-pg-", dir="/tmp"))
    cluster = LocalCluster(base=base, settings={"max_connections": "200"})
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(pg_cluster: LocalCluster) -> Iterator[str]:
    """DSN of a new, empty database; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_cluster.dsn(name)
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_dbtier(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, as an operator runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(VENV_BIN / "dbtier"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def dbtier_cli():
    return run_dbtier


# The mockupAWS tables whose content a backup must carry over unchanged.
TABLES = ("scenarios", "scenario_logs", "scenario_metrics", "reports", "api_keys")


def fingerprints(dsn: str) -> dict[str, str]:
    """A content checksum per table: equal fingerprints mean identical rows."""
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' "
                f"ORDER BY x::text)), '') FROM {t} x"
            ).fetchone()[0]
            for t in TABLES
        }


WAL_PAGE_HEADER = struct.Struct("<HHIQI4xQII")  # XLogLongPageHeaderData
SEGMENT_SIZE = 16 << 20


def fake_segment(
    directory: Path, name: str, *, sysid: int = 7300000000000000001, seed: bytes = b""
) -> Path:
    """A file shaped like a WAL segment (a real long page header for its name, 16 MiB) with
    some random content, for archive tests that need no server."""
    segno = int(name[8:16], 16) * 256 + int(name[16:24], 16)
    header = WAL_PAGE_HEADER.pack(
        0xD110, 0x0002, int(name[:8], 16), segno * SEGMENT_SIZE, 0, sysid, SEGMENT_SIZE, 8192
    )
    body = header + (seed or os.urandom(1 << 16))
    path = directory / name
    path.write_bytes(body + bytes(SEGMENT_SIZE - len(body)))
    return path


class BenchQuick:
    """One `python -m benchmarks --quick` run shared by the tests of every suite."""

    def __init__(self, out: Path, stderr: str) -> None:
        import json

        self.out = out
        self.stderr = stderr
        (results_file,) = out.glob("*.json")
        self.results = json.loads(results_file.read_text())

    def section(self, name: str) -> dict:
        return self.results["suites"][name]


@pytest.fixture(scope="session")
def bench_quick(tmp_path_factory: pytest.TempPathFactory) -> BenchQuick:
    """`make bench-quick` once per session (every suite at a tiny scale, a smoke test): the
    suites' tests check their sections and rendering from it instead of running again."""
    out = tmp_path_factory.mktemp("bench-quick")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return BenchQuick(out, proc.stderr)
