"""The runbook of docs/BACKUP-RESTORE.md, run as written on the Molecule stack.

Each `<!-- run: HOST as USER; id=ID -->` block of the document is executed here by its id, in
the order an operator follows it, around a real mistake (a dropped table, deleted rows) and a
real whole-cluster switch; the last test checks that no run block of the document was skipped.
The markers are explained in tests/support/runbook.py.
"""

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
DB = HOSTS["db1"]
DOCUMENTS = ("BACKUP-RESTORE.md", "DATA-ARCHIVING.md")
BLOCKS = {
    b.id: b for doc in DOCUMENTS for b in shell_blocks(ROOT / "docs" / doc) if b.marker == "run"
}
RAN: set[str] = set()
STATE: dict[str, str] = {}


def run_block(block_id, **variables):
    """Run one documented block as its marker says; returns the command result."""
    block = BLOCKS[block_id]
    RAN.add(block_id)
    return block.run_on(HOSTS[block.host], variables)


def sql(query, dbname="mockupaws"):
    return DB.check_output("runuser -u postgres -- psql -X -At -d %s -c %s", dbname, query)


def archive_now():
    """Close the current WAL segment and wait until the archive has it (what the runbook's
    step 1 says to do when the mistake was just made)."""
    segment = sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 60
    while sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] < segment:
        assert time.monotonic() < deadline, f"{segment} not archived within 60 s"
        time.sleep(1)


def fingerprint(query):
    return sql(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
        f"FROM ({query}) x"
    )


def test_status_after_a_backup_now():
    if sql("SELECT count(*) FROM scenarios") == "0":
        HOSTS["ops1"].check_output(
            "runuser -u dbtier -- /usr/local/bin/dbtier-job sample-data --quiet --scenarios 5 "
            "--logs-per-scenario 200 --metrics-per-scenario 50"
        )
    run_block("backup-now")
    archive_now()
    status = run_block("status")
    assert "logical" in status.stdout and "base" in status.stdout


def test_a_dropped_table_and_deleted_rows_come_back_from_a_scratch_server():
    scenario = sql(
        "SELECT scenario_id FROM scenario_logs GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    keys_before = fingerprint("SELECT * FROM api_keys")
    rows_before = fingerprint(f"SELECT * FROM scenario_logs WHERE scenario_id = '{scenario}'")
    assert not keys_before.startswith("0:") and not rows_before.startswith("0:")
    target = sql("SELECT clock_timestamp()")
    time.sleep(1)
    sql("DROP TABLE api_keys")  # the mistakes
    sql(f"DELETE FROM scenario_logs WHERE scenario_id = '{scenario}'")
    sql("CREATE TABLE IF NOT EXISTS runbook_after (at timestamptz)")  # kept: written later
    sql("INSERT INTO runbook_after VALUES (now())")
    archive_now()

    recovered = run_block("scratch-pitr", TARGET=target)
    assert "5433" in recovered.stdout
    run_block("copy-table")
    run_block("copy-rows", SCENARIO=scenario)
    run_block("scratch-stop")

    assert fingerprint("SELECT * FROM api_keys") == keys_before
    assert (
        fingerprint(f"SELECT * FROM scenario_logs WHERE scenario_id = '{scenario}'") == rows_before
    )
    assert sql("SELECT count(*) FROM runbook_after") == "1"  # the live database kept its commits
    assert sql("SELECT has_table_privilege('mockupaws_app', 'api_keys', 'SELECT')") == "t"
    assert not DB.file("/var/lib/postgresql/15/pitr").exists


def test_a_logical_backup_restored_into_a_new_database():
    run_block("logical-new-db")
    owner = sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mockupaws_restored'"
    )
    assert owner == "mockupaws_owner"
    assert (
        sql("SELECT has_database_privilege('mockupaws_app', 'mockupaws_restored', 'CONNECT')")
        == "t"
    )
    assert sql("SELECT count(*) FROM scenarios", "mockupaws_restored") == sql(
        "SELECT count(*) FROM scenarios"
    )
    sql("DROP DATABASE mockupaws_restored", "postgres")


def test_the_whole_cluster_switch_and_status_afterwards():
    sql("CREATE TABLE IF NOT EXISTS runbook_marks (label text)")
    sql("INSERT INTO runbook_marks VALUES ('before')")
    target = sql("SELECT clock_timestamp()")
    time.sleep(1)
    sql("INSERT INTO runbook_marks VALUES ('after')")
    archive_now()
    timeline = int(sql("SELECT timeline_id FROM pg_control_checkpoint()"))

    run_block("switch", TARGET=target)

    assert DB.service("postgresql@15-main").is_running
    assert sql("SELECT string_agg(label, ',') FROM runbook_marks") == "before"
    assert int(sql("SELECT timeline_id FROM pg_control_checkpoint()")) > timeline
    assert sql("SELECT pg_is_in_recovery()") == "f"
    kept = DB.check_output("ls -d /var/lib/postgresql/15/main.pre-switch-* | tail -1")
    assert DB.file(f"{kept}/PG_VERSION").exists  # the old cluster, set aside, not deleted
    archive_now()
    run_block("status")


def test_the_way_back_recovers_the_old_timeline_to_its_end():
    run_block("way-back")
    assert DB.service("postgresql@15-main").is_running
    # 'after' was committed on timeline 1 before the first switch stopped it: back in service
    assert sql("SELECT string_agg(label, ',' ORDER BY label DESC) FROM runbook_marks") == (
        "before,after"
    )
    assert sql("SELECT pg_is_in_recovery()") == "f"
    archive_now()
    run_block("status")


def test_the_schedule_as_cron_has_it():
    cron = run_block("crontab").stdout
    assert "dbtier-job backup base" in cron and "dbtier-job backup full" in cron


def test_data_archiving_as_documented():
    """docs/DATA-ARCHIVING.md on the stack: the dry run changes nothing, the run moves the old
    logs (the sample data spreads 900 days) into monthly partitions."""
    old_logs = "SELECT count(*) FROM scenario_logs WHERE received_at < now() - interval '365 days'"
    before = int(sql(old_logs))
    assert before > 0
    plan = run_block("archive-dry-run")
    assert "logs: dry-run" in plan.stdout, plan.stdout
    assert int(sql(old_logs)) == before
    run_block("archive-all")
    assert sql(old_logs) == "0"
    assert int(sql("SELECT count(*) FROM scenario_logs_archive")) >= before
    assert (
        sql("SELECT last_job_status FROM v_archive_statistics WHERE table_name = 'scenario_logs'")
        == "completed"
    )


def test_every_run_block_of_the_runbook_was_run():
    assert set(BLOCKS) - RAN == set(), "run blocks no test ran"


@pytest.fixture(autouse=True, scope="module")
def _blocks_exist():
    assert BLOCKS, "docs/BACKUP-RESTORE.md has no run blocks"
