"""The confirm commands of docs/RUNBOOK.md, run as written on the healthy Molecule stack.

Each `<!-- run: HOST as USER; id=ID -->` block of the runbook is executed here by its id (they
only read), and its output is checked for what an on-call engineer should see on a healthy tier:
targets up, nothing critical firing, PgBouncer answering on every socket, the archiver's counters.
The last test checks that no run block of the document was skipped. The markers are explained in
tests/support/runbook.py; fixes that change things are prose or name the test that covers them.
"""

import re
import sys
import time
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.support.runbook import shell_blocks  # noqa: E402

HOSTS = {
    "db1": testinfra.get_host("podman://dbtier-mol-db1"),
    "pgbouncer1": testinfra.get_host("podman://dbtier-mol-pgbouncer1"),
    "ops1": testinfra.get_host("podman://dbtier-mol-ops1"),
}
DB, OPS = HOSTS["db1"], HOSTS["ops1"]
BLOCKS = {b.id: b for b in shell_blocks(ROOT / "docs" / "RUNBOOK.md") if b.marker == "run"}
RAN: set[str] = set()
PROMETHEUS = "http://localhost:9090"
JOBS = ("node", "postgres", "pgbouncer", "prometheus", "alertmanager")


def run_block(block_id, **variables):
    """Run one documented block as its marker says; returns the command result."""
    block = BLOCKS[block_id]
    RAN.add(block_id)
    return block.run_on(HOSTS[block.host], variables)


def sql(query, dbname="mockupaws"):
    return DB.check_output("runuser -u postgres -- psql -X -At -d %s -c %s", dbname, query)


def promql(expr):
    return OPS.check_output("promtool query instant %s %s", PROMETHEUS, expr)


def wait_for(what, check, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last is True:
            return
        assert time.monotonic() < deadline, f"{what} not within {timeout} s: {last}"
        time.sleep(3)


@pytest.fixture(scope="module", autouse=True)
def healthy_stack():
    """What a healthy tier has: fresh backups, WAL archived, slow queries collected, every
    target scraped and no critical alert firing (the local inventory's short `for:` durations)."""
    assert BLOCKS, "docs/RUNBOOK.md has no run blocks"
    DB.check_output("runuser -u postgres -- /usr/local/bin/dbtier-job backup base --quiet")
    DB.check_output("runuser -u postgres -- /usr/local/bin/dbtier-job backup full --quiet")
    segment = sql("SELECT pg_walfile_name(pg_switch_wal())")
    wait_for(
        f"WAL {segment} archived",
        lambda: (
            sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] >= segment
            or "not yet"
        ),
    )
    OPS.check_output("runuser -u dbtier -- /usr/local/bin/dbtier-job slow-queries collect")

    def targets_up():
        out = promql("up")
        down = [line for line in out.splitlines() if line.endswith("=> 0") or "=> 0 @" in line]
        jobs = {job for job in JOBS if f'job="{job}"' in out}
        return (not down and jobs == set(JOBS)) or out

    wait_for("every target up", targets_up)

    def nothing_critical():
        out = promql('ALERTS{alertstate="firing", severity="critical"}')
        return not out.strip() or out

    wait_for("no critical alert firing", nothing_critical)


def test_first_five_minutes():
    firing = run_block("first-firing").stdout
    assert 'severity="critical"' not in firing, firing
    targets = run_block("first-targets").stdout
    for job in JOBS:
        assert re.search(rf'up\{{[^}}]*job="{job}"[^}}]*\}} => 1 ', targets), (job, targets)
    assert " => 0 " not in targets, targets
    status = run_block("first-status").stdout
    assert "logical" in status and "wal archive" in status, status


def test_postgres_down_confirm_on_a_running_server():
    out = run_block("postgresdown-confirm").stdout
    assert "online" in out and "accepting connections" in out, out
    exporter = run_block("postgresdown-exporter").stdout
    assert "active (running)" in exporter, exporter


def test_pgbouncer_confirm_reaches_every_process():
    units = run_block("pgbouncerdown-units").stdout
    assert "pgbouncer.service" in units and "dbtier-pgbouncer-health.service" in units, units
    assert " failed " not in units, units
    sockets = run_block("pgbouncerdown-sockets").stdout
    processes = sockets.count("== /")
    assert processes >= 1 and sockets.count("PgBouncer 1.") == processes, sockets
    pools = run_block("pgbouncerclientswaiting-pools").stdout
    # one SHOW POOLS header per process (PgBouncer 1.18 also has cl_waiting_cancel_req)
    assert len(re.findall(r"\bcl_waiting\b", pools)) == processes and "mockupaws" in pools, pools
    clients = run_block("pgbouncerconnectionshigh-clients").stdout
    assert clients.count("used_clients") == processes, clients
    ratio = run_block("pgbouncerconnectionshigh-ratio").stdout
    assert ratio.count('process="') == processes, ratio


def test_wal_archive_confirm_shows_the_archiver():
    out = run_block("walarchivefailing-confirm").stdout
    assert "archived_count" in out and "segments_waiting" in out, out
    assert "wal archive" in out  # dbtier status, as postgres on the database host


def test_activity_and_replication_queries():
    activity = run_block("pgbouncerclientswaiting-activity").stdout
    assert "xact_age" in activity and "blocked_by" in activity, activity
    replication = run_block("replicationlag-confirm").stdout
    assert "replay_lag" in replication and "(0 rows)" in replication, replication  # no replica


def test_backup_confirms_see_the_fresh_backups():
    out = run_block("backupstale-confirm").stdout
    assert 'job="backup_full"' in out, out
    log = run_block("backupstale-log").stdout
    assert (
        "backup full" in log
        and 'dbtier_job_last_success_timestamp_seconds{job="backup_full"}' in log
    )
    base = run_block("basebackupstale-confirm").stdout
    assert "base" in base, base
    assert "backup base" in run_block("basebackupstale-log").stdout


def test_disk_confirms():
    df = run_block("diskspacelow-df").stdout
    assert "Filesystem" in df and "pg_wal" in df, df
    queries = run_block("diskspacelow-sql").stdout
    assert "held_back" in queries and "(10 rows)" in queries, queries  # slots, largest tables
    run_block("diskspacelow-retention")


def test_slow_query_confirms_show_the_statement_by_queryid():
    run_block("slowquery-report")
    queryid = sql("SELECT queryid FROM pg_stat_statements ORDER BY calls DESC LIMIT 1")
    out = run_block("slowquery-statement", QUERYID=queryid).stdout
    assert queryid in out and "(1 row)" in out, out
    stale = run_block("slowquerycollectionstale-confirm").stdout
    assert "slow-queries collect" in stale and "dbtier_slow_queries" in stale, stale


def test_job_confirms():
    archive = run_block("archivejobfailed-log").stdout
    assert "dry-run" in archive, archive
    jobs = run_block("archivejobfailed-jobs").stdout
    assert "job_type" in jobs and "scenario_logs" in jobs, jobs
    failed = run_block("dbtierjobfailed-confirm", JOB="verify_logical").stdout
    assert ".prom" in failed, failed


def test_exporter_confirms_on_a_healthy_stack():
    out = run_block("exporterdown-confirm").stdout
    assert " => 0 " not in out and " => 1 " in out, out
    units = run_block("exporterdown-units").stdout
    for unit in ("prometheus.service", "prometheus-node-exporter.service"):
        assert unit in units, units


def test_every_run_block_of_the_runbook_was_run():
    assert set(BLOCKS) - RAN == set(), "run blocks no test ran"
