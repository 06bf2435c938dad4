"""dbtier status (is it backed up?) and backup ages, against a real PostgreSQL and a file://
repository: healthy, stale, failing archiver, failed verification, WAL gap, unreachable."""

from __future__ import annotations

import json
import time

import psycopg

from dbtier import catalog, config, wal
from dbtier.pgcluster import LocalCluster
from dbtier.store import open_store

from .conftest import run_dbtier
from .test_backup import (  # noqa: F401  (fixtures)
    archiving_cluster,
    catalog_repo,
    cli,
    manifest_of,
    source_db,
    store,
    switch_wal,
    wait_archived,
)

SCHEDULE = '\n[schedule]\nbackup_full = "0 2 * * * on db1 (postgres)"\n'


def status(store: dict, *args: str, dsn: str | None = None, **env: str):
    """`dbtier status --json` as an operator runs it: (process, parsed report)."""
    full = {"DBTIER_CONFIG": str(store["config"]), **env, **({"DATABASE_URL": dsn} if dsn else {})}
    proc = run_dbtier("status", "--json", *args, env=full)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def checks(report: dict) -> list[str]:
    return [p["check"] for p in report["problems"]]


def pushed(store: dict, name: str) -> str | None:
    return wal.pushed_at(open_store(config.load(str(store["config"]))), name)


def last_pushed(store: dict) -> tuple[str, str] | None:
    return wal.last_archived(open_store(config.load(str(store["config"]))))


def test_healthy_stack_then_stale_limits_then_unreachable(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    dsn = archiving_cluster.dsn()
    with store["config"].open("a") as conf:
        conf.write(SCHEDULE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    made = json.loads(cli(store, "backup", "base", "--json", dsn=dsn).stdout)
    base = manifest_of(store, made["backup_id"])
    logical = json.loads(cli(store, "backup", "full", "--json", dsn=dsn).stdout)
    wait_archived(dsn, switch_wal(dsn))

    proc, report = status(store, dsn=dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["healthy"] is True and report["problems"] == []
    assert report["repository"] == f"file://{store['repo']}"
    newest = report["backups"]["logical"]["newest"]
    assert newest["id"] == logical["backup_id"] and newest["verification"]["status"] == "never"
    assert 0 <= newest["age_seconds"] < 600 and newest["size"] > 0
    assert report["backups"]["base"]["newest"]["id"] == base.id
    archive = report["wal_archive"]
    assert archive["archive_mode"] == "on" and archive["failing"] is False
    assert archive["archived_count"] >= 1 and archive["last_archived_age_seconds"] < 600
    last = last_pushed(store)
    assert last is not None
    pitr = report["pitr"]
    assert pitr["start"] == base.stopped_at == pitr["window"][0]
    assert (pitr["end"], pitr["end_wal"], pitr["gap"]) == (last[1], last[0], None)
    assert report["schedule"] == {"backup_full": "0 2 * * * on db1 (postgres)"}
    jobs = {j["job"]: j for j in report["metrics"]["jobs"]}
    assert jobs["backup_full"]["last_status"] == "ok" and jobs["backup_base"]["last_success"]

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE watcher LOGIN")  # pg_stat_archiver needs no superuser
    proc, plain = status(store, dsn=archiving_cluster.dsn(user="watcher"))
    assert proc.returncode == 0 and plain["wal_archive"]["archived_count"] >= 1, proc.stdout

    text = cli(store, "status", dsn=dsn)
    assert text.returncode == 0 and ": OK" in text.stdout.splitlines()[0]
    for line in ("pitr window", "0 2 * * * on db1 (postgres)", logical["backup_id"]):
        assert line in text.stdout

    # backup list: ages
    listed = cli(store, "backup", "list")
    assert "AGE" in listed.stdout.splitlines()[0] and " s " in listed.stdout
    rows = json.loads(cli(store, "backup", "list", "--json").stdout)["backups"]
    assert all(0 <= r["age_seconds"] < 600 for r in rows)

    # stale by the flag (logical) and by the environment (base): both older than 0.36 s
    time.sleep(1)
    proc, report = status(
        store, "--max-age-logical", "0.0001", dsn=dsn, DBTIER_STATUS_MAX_AGE_BASE_HOURS="0.0001"
    )
    assert proc.returncode == 1
    assert checks(report) == ["logical_backup_stale", "base_backup_stale"]
    assert "limit 0.0001 h" in report["problems"][0]["message"]
    assert "0 2 * * * on db1 (postgres)" in report["problems"][0]["message"]

    # WAL written and not archived for longer than the limit: stale (an idle server is not)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 20000)")
    time.sleep(2.5)
    proc, report = status(store, "--max-wal-age", "2", dsn=dsn)
    assert proc.returncode == 1 and checks(report) == ["wal_archive_stale"], report["problems"]
    assert report["wal_archive"]["pending_wal_bytes"] > 8192

    # the database is gone: said so, with where it tried, and the repository side still shown
    down = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=2"
    proc, report = status(store, dsn=down)
    assert proc.returncode == 5
    assert checks(report) == ["database_unreachable"]
    assert "nobody@127.0.0.1:1/nowhere" in report["problems"][-1]["message"]
    assert report["database"]["reachable"] is False and "wal_archive" not in report
    assert report["backups"]["logical"]["newest"]["id"] == logical["backup_id"]
    assert report["pitr"]["start"] == base.stopped_at
    text = cli(store, "status", dsn=down)
    assert (
        text.returncode == 5
        and "UNREACHABLE" in text.stdout
        and "PROBLEMS (1, exit 5)" in (text.stdout)
    )


def test_failing_archive_command_names_the_failed_wal(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    """archive_command (wal-push, as postgres) cannot write the WAL directory any more."""
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    wait_archived(dsn, switch_wal(dsn))
    wal_dir = store["repo"] / "wal"
    wal_dir.chmod(0o555)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
            failing = switch_wal(dsn)
            deadline = time.monotonic() + 60
            while not conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]:
                assert time.monotonic() < deadline, "archive_command never failed"
                time.sleep(0.2)
        proc, report = status(store, dsn=dsn)
        assert proc.returncode == 1
        assert "wal_archive_failing" in checks(report)
        message = next(p["message"] for p in report["problems"] if "failing" in p["check"])
        assert message.startswith(f"WAL archiving failing: {failing} failed at ")
        assert report["wal_archive"]["failing"] is True
        assert report["wal_archive"]["last_failed_wal"] == failing
        assert "FAILING" in cli(store, "status", dsn=dsn).stdout
    finally:
        wal_dir.chmod(0o755)


def test_newest_backup_failing_verification_is_a_problem_rds_mode(
    source_db: str, store: dict
) -> None:
    """RDS (wal_archiving = false): no base/WAL/PITR checks; the newest logical backup failed
    its verification, so the older good one is the newest good and the bad one is named."""
    with store["config"].open("a") as conf:
        conf.write("wal_archiving = false\n")
    first = json.loads(cli(store, "backup", "full", "--json", dsn=source_db).stdout)
    time.sleep(1.1)  # backup ids have one-second resolution
    second = json.loads(cli(store, "backup", "full", "--json", dsn=source_db).stdout)
    assert cli(store, "backup", "verify", first["backup_id"]).returncode == 0
    dump = store["repo"] / "backups" / second["backup_id"] / "dump.pgc.zst.enc"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    assert cli(store, "backup", "verify", "latest").returncode == 1

    proc, report = status(store, dsn=source_db)
    assert proc.returncode == 1 and checks(report) == ["backup_not_good"]
    message = report["problems"][0]["message"]
    assert second["backup_id"] in message and "failed verification" in message
    assert "dbtier backup full" in message
    logical = report["backups"]["logical"]
    assert logical["newest"]["id"] == first["backup_id"]
    assert logical["newest"]["verification"]["status"] == "ok"
    assert logical["rejected"][0]["id"] == second["backup_id"]
    assert "base" not in report["backups"] and "wal_archive" not in report
    assert report["pitr"] == {
        "by": "rds",
        "note": "RDS: point-in-time recovery by AWS (dbtier restore rds)",
    }
    text = cli(store, "status", dsn=source_db).stdout
    assert "RDS: point-in-time recovery by AWS" in text and "NOT GOOD" in text


def test_wal_gap_ends_the_pitr_window_before_it(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    first = manifest_of(
        store, json.loads(cli(store, "backup", "base", "--json", dsn=dsn).stdout)["backup_id"]
    )
    for _ in range(3):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        wait_archived(dsn, switch_wal(dsn))
    stop = first.stop_wal_file
    following = sorted(
        n for n in catalog.archived_wal(catalog_repo(store)) if len(n) == 24 and n > stop
    )
    assert len(following) >= 2, following
    gone = following[1]
    before = max(n for n in catalog.archived_wal(catalog_repo(store)) if len(n) == 24 and n < gone)
    (store["repo"] / "wal" / f"{gone}.zst.enc").unlink()

    proc, report = status(store, dsn=dsn)
    gap_only = ["logical_backup_missing", "pitr_gap"]  # no logical backup in this test
    assert proc.returncode == 1 and checks(report) == gap_only, report["problems"]
    pitr = report["pitr"]
    assert pitr["start"] == first.stopped_at
    assert pitr["gap"] == {"first_missing": gone, "missing_segments": 1}
    assert (pitr["end_wal"], pitr["end"]) == (before, pushed(store, before))
    message = report["problems"][-1]["message"]
    assert gone in message and "take a base backup now" in message

    # a base backup after the gap: a second window up to now, the hole stays a problem
    second = manifest_of(
        store, json.loads(cli(store, "backup", "base", "--json", dsn=dsn).stdout)["backup_id"]
    )
    proc, report = status(store, dsn=dsn)
    assert proc.returncode == 1 and checks(report) == gap_only
    later = report["pitr"]["windows"][1]
    assert (later["start"], later["gap"]) == (second.stopped_at, None)
    assert report["pitr"]["end_wal"] == before  # the window of the oldest base still ends there
    assert "works again from base backup " + second.id in report["problems"][-1]["message"]
    assert "GAP: " + gone in cli(store, "status", dsn=dsn).stdout
