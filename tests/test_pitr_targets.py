"""restore pitr targets (latest, immediate, restore point, LSN, --base) and the errors an
operator meets at 3 a.m., against a real PostgreSQL and a file:// repository."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from dbtier import catalog
from dbtier.pgcluster import LocalCluster

from .conftest import run_dbtier
from .test_backup import (  # noqa: F401 (store is a fixture)
    archiving,
    catalog_repo,
    cli,
    cli_as_server,
    manifest_of,
    provider,
    shared_dir,
    store,
    switch_wal,
    wait_archived,
)


@pytest.fixture
def quiet_cluster(store: dict) -> Iterator[LocalCluster]:
    """An archiving cluster where nothing commits unless the test does (no autovacuum)."""
    with archiving(store, autovacuum="off") as cluster:
        yield cluster


def sql(dsn: str, statement: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchone()[0] if cur.description else None


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("ts=")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def pitr(store: dict, datadir: Path, *args: str, dsn: str | None = None, server: bool = False):
    run = cli_as_server if server else cli
    return run(store, "restore", "pitr", *args, "--data-dir", str(datadir), "--json", dsn=dsn)


def batches(cluster: LocalCluster) -> list[str]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT batch FROM events ORDER BY batch")]


def recovered_batches(store: dict, *args: str, dsn: str) -> list[str]:
    """PITR with these arguments into a new directory; the batches the result holds."""
    datadir = shared_dir("dbtier-restored-") / "data"
    try:
        proc = pitr(store, datadir, *args, "--keep-running", dsn=dsn)
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        cluster = LocalCluster(base=datadir.parent, port=info["port"], data=datadir)
        try:
            return batches(cluster)
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(datadir.parent, ignore_errors=True)


def test_every_target_kind_recovers_its_rows_and_base_is_checked(
    quiet_cluster: LocalCluster,
    store: dict,
) -> None:
    dsn = quiet_cluster.dsn()
    sql(dsn, "CREATE TABLE events (batch text NOT NULL)")
    sql(dsn, "INSERT INTO events VALUES ('A')")
    first = json.loads(cli(store, "backup", "base", "--json", dsn=dsn).stdout)["backup_id"]
    sql(dsn, "INSERT INTO events VALUES ('B')")
    sql(dsn, "SELECT pg_create_restore_point('before_c')")
    between = datetime.now(UTC)
    sql(dsn, "INSERT INTO events VALUES ('C')")
    lsn_c = str(sql(dsn, "SELECT pg_current_wal_insert_lsn()"))
    sql(dsn, "INSERT INTO events VALUES ('D')")
    time.sleep(1.1)  # backup ids have one-second resolution
    made = cli(store, "backup", "base", "--json", dsn=dsn)
    assert made.returncode == 0, made.stderr
    second = json.loads(made.stdout)["backup_id"]
    wait_archived(dsn, switch_wal(dsn))
    never = store["base"] / "never"

    # the plan: base chosen by the target's rule, the target at full precision
    plan = cli(store, "restore", "pitr", "--target-time", between.isoformat(),
               "--data-dir", str(never), "--dry-run", dsn=dsn)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert f"target_time: {catalog.iso_precise(between)}" in plan.stdout
    assert re.search(r"target_time: \S+T\d\d:\d\d:\d\d\.\d{6}Z$", plan.stdout, re.M)
    assert f"base_backup: {first}" in plan.stdout
    by_lsn = json.loads(pitr(store, never, "--target-lsn", lsn_c, "--dry-run").stdout)
    assert by_lsn["base_backup"] == first and by_lsn["target_lsn"] == lsn_c
    assert (
        json.loads(pitr(store, never, "--target", "latest", "--dry-run").stdout)["base_backup"]
        == second
    )

    # --base refused: unknown, after the target
    unknown = pitr(store, never, "--target", "latest", "--base", "20200101T000000Z-base")
    assert unknown.returncode == 2 and "not found" in one_line(unknown)
    late = pitr(store, never, "--target-lsn", lsn_c, "--base", second, "--dry-run")
    assert late.returncode == 2, late.stderr
    assert f"base backup {second} is consistent at" in one_line(late)
    assert f"after target LSN {lsn_c}: pass an older --base" in one_line(late)
    bad_lsn = pitr(store, never, "--target-lsn", "3000060")
    assert bad_lsn.returncode == 2 and "e.g. 0/3000060" in one_line(bad_lsn)

    # beyond the archive: what to run, with the primary's archive_timeout
    beyond = pitr(store, never, "--target-time", "2099-01-01 00:00:00+00", dsn=dsn)
    assert beyond.returncode == 2
    line = one_line(beyond)
    assert "after the last archived WAL" in line and "SELECT pg_switch_wal() on the primary" in line
    assert "archive_timeout is 0" in line and "use --target latest" in line

    # each kind recovers exactly its rows
    assert recovered_batches(store, "--target", "immediate", "--base", first, dsn=dsn) == ["A"]
    assert recovered_batches(store, "--target-name", "before_c", "--base", first, dsn=dsn) == [
        "A",
        "B",
    ]
    assert recovered_batches(store, "--target-lsn", lsn_c, dsn=dsn) == ["A", "B", "C"]

    # the restore point predates the newest base backup: recovery cannot find it
    datadir = shared_dir("dbtier-restored-") / "data"
    try:
        missed = pitr(store, datadir, "--target-name", "before_c", dsn=dsn)
        assert missed.returncode == 1
        assert f"restore point before_c not found after base backup {second}" in one_line(missed)
        assert "pass --base of an older one" in one_line(missed)

        # latest, kept running: the printed commands reach and stop the server, as postgres
        kept = pitr(store, datadir, "--target", "latest", "--keep-running", dsn=dsn, server=True)
        assert kept.returncode == 0, kept.stderr
        info = json.loads(kept.stdout)
        assert info["base_backup"] == second
        assert info["recovered_to"] is None  # nothing committed after that base backup
        assert info["socket_directory"] == str(datadir.parent)
        assert info["connect"].startswith(f"psql -h {datadir.parent} -p {info['port']} ")
        query = ["-X", "-A", "-t", "-c", "SELECT string_agg(batch, '' ORDER BY batch) FROM events"]
        psql = as_postgres(info["connect"], *query)
        assert psql.returncode == 0 and psql.stdout.strip() == "ABCD", psql.stderr
        assert info["stop"].startswith("/") and info["stop"].endswith(f"-D {datadir} stop -m fast")
        assert as_postgres(info["stop"]).returncode == 0
        assert not LocalCluster(base=datadir.parent, data=datadir).is_running()
    finally:
        LocalCluster(base=datadir.parent, data=datadir).stop("immediate")
        shutil.rmtree(datadir.parent, ignore_errors=True)

    # a base backup that failed its verification is refused by --base and skipped by default
    repo, keys = catalog_repo(store), provider(store)
    bad = manifest_of(store, second)
    catalog.write_verification(repo, bad, keys.unwrap(bad.wrapped_key), ok=False, deep=False)
    refused = pitr(store, never, "--target", "latest", "--base", second, "--dry-run")
    assert refused.returncode == 2 and "failed its last verification" in one_line(refused)
    assert (
        json.loads(pitr(store, never, "--target", "latest", "--dry-run").stdout)["base_backup"]
        == first
    )


def as_postgres(command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a command dbtier printed as the postgres OS user (it printed it for that user)."""
    words = shlex.split(command)
    return subprocess.run(["runuser", "-u", "postgres", "--", *words, *extra], cwd="/tmp",
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_a_quiet_database_cannot_confirm_a_time_target_and_latest_recovers_it(
    quiet_cluster: LocalCluster,
    store: dict,
) -> None:
    dsn = quiet_cluster.dsn()
    sql(dsn, "CREATE TABLE events (batch text NOT NULL)")
    sql(dsn, "INSERT INTO events VALUES ('A')")
    assert cli(store, "backup", "base", dsn=dsn).returncode == 0
    sql(dsn, "INSERT INTO events VALUES ('B')")
    time.sleep(0.5)
    target = datetime.now(UTC)  # "a minute ago": nothing commits after it
    time.sleep(1.1)
    wait_archived(dsn, switch_wal(dsn))

    datadir = shared_dir("dbtier-restored-") / "data"
    try:
        failed = pitr(store, datadir, "--target-time", target.isoformat(), dsn=dsn)
        assert failed.returncode == 1
        line = one_line(failed)
        stamp = catalog.iso_precise(target)
        assert f"no transaction committed after {stamp} is archived" in line, line
        assert "use --target latest (everything archived, up to 0000" in line
        assert "SELECT pg_switch_wal() on the primary" in line
        assert not any(datadir.iterdir())  # emptied: the retry goes into the same directory
        done = pitr(store, datadir, "--target", "latest", "--keep-running", dsn=dsn)
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert re.fullmatch(r"\S+T\d\d:\d\d:\d\d\.\d{6}Z", info["recovered_to"])  # B's commit
        recovered = LocalCluster(base=datadir.parent, port=info["port"], data=datadir)
        assert batches(recovered) == ["A", "B"]
    finally:
        LocalCluster(base=datadir.parent, data=datadir).stop("immediate")
        shutil.rmtree(datadir.parent, ignore_errors=True)


def test_setup_errors_say_what_works_and_leave_no_failed_verify(
    database: str,
    store: dict,
) -> None:
    sql(database, "CREATE TABLE t AS SELECT generate_series(1, 10) AS x")
    assert cli(store, "backup", "full", dsn=database).returncode == 0
    assert cli(store, "backup", "verify", "latest").returncode == 0
    prom = store["metrics"] / "dbtier_verify.prom"
    [verified] = list(store["repo"].glob("backups/*/verify.json"))
    before = (prom.read_bytes(), verified.read_bytes())

    # no server binaries on this host: exit 2 before the job, nothing recorded
    empty = shared_dir("dbtier-nobin-")
    try:
        env = {"DBTIER_CONFIG": str(store["config"]), "DBTIER_PG_BINDIR": str(empty)}
        deep = run_dbtier("backup", "verify", "latest", "--deep", env=env)
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    assert deep.returncode == 2, deep.stderr
    line = one_line(deep)
    assert f"PostgreSQL 15 server binaries not found (looked in {empty})" in line
    assert "install postgresql-15 on this host" in line
    assert "sudo -u postgres dbtier-job backup verify --deep " in line
    assert (prom.read_bytes(), verified.read_bytes()) == before

    # a role without CREATEDB: named, with who can run the restore instead
    role = f"nocreate_{uuid.uuid4().hex[:8]}"
    sql(database, f"CREATE ROLE {role} LOGIN")
    try:
        as_role = database.replace("postgres@", f"{role}@", 1)
        target = f"{database.rsplit('/', 1)[1]}_r"
        denied = cli(store, "restore", "logical", "--target-db", target, dsn=as_role)
        assert denied.returncode == 2, denied.stderr
        line = one_line(denied)
        assert f"permission denied to create database {target}__new_" in line
        assert f"role {role} lacks CREATEDB" in line and "sudo -u postgres dbtier-job" in line
    finally:
        sql(database, f"DROP ROLE {role}")

    # cannot connect: the wrapper that has the settings and credentials
    env = {"DBTIER_CONFIG": str(store["config"]), "PGHOST": ""}
    down = run_dbtier("restore", "logical", "--dsn", "postgresql://app@127.0.0.1:1/x", env=env)
    assert down.returncode == 5, down.stderr
    line = one_line(down)
    assert line.startswith("dbtier: error: cannot connect to app@127.0.0.1:1/postgres: ")
    assert "dbtier-job ... on the ops host" in line and "sudo -u postgres dbtier-job" in line
