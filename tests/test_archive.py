"""dbtier archive against a real PostgreSQL: exactly-once moves under concurrent inserts and
kills, daily aggregates that merge, monthly partitions, the per-type lock, dry runs."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg

from dbtier import archive, migrations, sampledata

from .conftest import SQL_DIR, VENV_BIN, run_dbtier

LOG_COLUMNS = archive.LOGS_COLUMNS
NO_CONFIG = {"DBTIER_CONFIG": ""}  # the tests' settings are flags, never a host's dbtier.toml


def prepared(dsn: str, *, scenarios: int = 10, logs: int = 500, metrics: int = 0) -> None:
    migrations.migrate(dsn, SQL_DIR)
    size = sampledata.SampleSize(
        scenarios=scenarios,
        logs_per_scenario=logs,
        metrics_per_scenario=metrics,
        reports_per_scenario=0,
        api_keys=0,
        days=900,
    )
    sampledata.load(dsn, size)


def sql(dsn: str, query: str, params: tuple | dict | None = None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def archive_cli(dsn: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_dbtier("archive", *args, "--dsn", dsn, env=NO_CONFIG, timeout=timeout)


def start_cli(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_BIN / "dbtier"), "archive", *args, "--dsn", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, **NO_CONFIG},
    )


def log_rows(dsn: str) -> Counter[str]:
    """Fingerprint (md5 of the row's text) of every log row, live and archived, as a multiset:
    a lost row is missing, a duplicated one counts twice."""
    row = f"md5(row({LOG_COLUMNS})::text)"
    return Counter(
        r[0]
        for r in sql(
            dsn,
            f"SELECT {row} FROM scenario_logs UNION ALL SELECT {row} FROM scenario_logs_archive",
        )
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if " event=" not in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def jobs_of(dsn: str, job_type: str) -> list[tuple]:
    return sql(
        dsn,
        "SELECT id, status, records_processed, error_message, cutoff_at, resume_cursor "
        "FROM archive_jobs WHERE job_type = %s ORDER BY id",
        (job_type,),
    )


def wait_for_sessions_gone(dsn: str, timeout: float = 15) -> None:
    """A killed client's server session ends (and drops its locks) a moment later."""
    deadline = time.monotonic() + timeout
    while sql(
        dsn,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbtier archive' "
        "AND datname = current_database()",
    ):
        assert time.monotonic() < deadline, "the killed run's session did not end"
        time.sleep(0.1)


def old_log(conn: psycopg.Connection, days_ago: float) -> tuple[int, str]:
    """Insert one log row received days_ago; (id, fingerprint)."""
    row = conn.execute(
        f"""
        INSERT INTO scenario_logs (scenario_id, received_at, source, message_hash, payload)
        SELECT id, now() - make_interval(days => %s), 'api', repeat('a', 64),
               jsonb_build_object('late', random())
        FROM scenarios ORDER BY id LIMIT 1
        RETURNING id, md5(row({LOG_COLUMNS})::text)
        """,
        (days_ago,),
    ).fetchone()
    return row[0], row[1]


def test_no_row_lost_or_duplicated_while_the_application_inserts(database: str) -> None:
    prepared(database, scenarios=20, logs=2000)
    original = log_rows(database)
    inserted: dict[str, tuple[int, datetime, bool]] = {}  # fingerprint -> id, committed by, old
    stop = threading.Event()

    def application() -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                old = n % 2 == 0  # every other row is 500 days old: due for archiving
                row_id, print_ = old_log(conn, 500 if old else 0)
                committed_by = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                inserted[print_] = (row_id, committed_by, old)
                n += 1

    thread = threading.Thread(target=application)
    thread.start()
    try:
        time.sleep(0.3)
        proc = archive_cli(database, "--logs", "--batch-size", "500", "--json")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)["policies"]
    assert result["status"] == "completed" and result["rows_processed"] > 20000 * 0.5

    after = log_rows(database)
    assert max(after.values()) == 1, "a row was duplicated"
    assert after == original + Counter(list(inserted)), "a row was lost"
    [(job_id, status, processed, error, cutoff, cursor)] = jobs_of(database, "logs")
    assert (status, error, processed) == ("completed", None, result["rows_processed"])
    assert sum(old for _, _, old in inserted.values()) > 5, "the application barely ran"

    # Archived: only rows older than the cutoff, each by this job, each counted once.
    assert sql(
        database,
        "SELECT count(*), count(*) FILTER (WHERE received_at >= %s OR archive_batch_id <> %s) "
        "FROM scenario_logs_archive",
        (cutoff, job_id),
    ) == [(processed, 0)]
    # Live and old: only application rows that committed after the last full sweep started
    # (every old row committed before it was moved: the sweep passes every id).
    sweep = datetime.fromisoformat(cursor["sweep_started_at"])
    late = {
        r[0]
        for r in sql(database, "SELECT id FROM scenario_logs WHERE received_at < %s", (cutoff,))
    }
    by_id = {row_id: (at, old) for row_id, at, old in inserted.values()}
    assert all(i in by_id and by_id[i][1] and by_id[i][0] > sweep for i in late), late
    # The application's old rows committed before the sweep are all archived.
    archived = {r[0] for r in sql(database, "SELECT id FROM scenario_logs_archive")}
    assert {i for i, (at, old) in by_id.items() if old and at < sweep} <= archived
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive_default") == [(0,)]


def test_killed_runs_lose_and_duplicate_nothing_and_the_rerun_completes(database: str) -> None:
    prepared(database, scenarios=10, logs=3000)
    original = log_rows(database)
    due = sql(
        database,
        "SELECT count(*) FROM scenario_logs WHERE received_at < now() - interval '365 days'",
    )[0][0]

    # Killed inside a batch: its rows are deleted and archived, but the transaction waits for
    # the job row, which this session holds: the kill lands before COMMIT.
    proc = start_cli(database, "--logs", "--batch-size", "50")
    with psycopg.connect(database) as holder:
        deadline = time.monotonic() + 30
        while not sql(
            database,
            "SELECT 1 FROM archive_jobs WHERE status = 'running' AND records_processed > 0",
        ):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        holder.execute("SELECT 1 FROM archive_jobs WHERE status = 'running' FOR UPDATE")
        while not sql(
            database,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbtier archive' "
            "AND wait_event_type = 'Lock' AND query LIKE '%%UPDATE archive_jobs%%'",
        ):
            assert time.monotonic() < deadline, "the batch never waited for the job row"
        uncommitted = sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        holder.rollback()
    wait_for_sessions_gone(database)
    assert log_rows(database) == original
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0] == uncommitted

    # Killed at random moments, between and inside batches.
    rng = random.Random(7)
    for _ in range(4):
        proc = start_cli(database, "--logs", "--batch-size", "1")
        time.sleep(rng.uniform(0.7, 1.5))  # the interpreter starts in ~0.5 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for_sessions_gone(database)
        assert log_rows(database) == original

    final = archive_cli(database, "--logs", "--batch-size", "500", "--json")
    assert final.returncode == 0, final.stderr
    assert log_rows(database) == original
    runs = jobs_of(database, "logs")
    *killed, last = runs
    assert len(killed) == 5 and last[1] == "completed"
    for _id, status, processed, error, _cutoff, _cursor in killed:
        assert status == ("partial" if processed else "failed")
        assert error.startswith("interrupted")
    # The job rows count what moved, exactly once over all runs.
    assert (
        sum(r[2] for r in runs)
        == sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0]
        == due
    )
    assert sql(
        database, "SELECT count(*) FROM scenario_logs WHERE received_at < %s", (last[4],)
    ) == [(0,)]
    assert "interrupted" in final.stderr  # the rerun says what it found


def state(dsn: str) -> dict[str, object]:
    """Everything an archive run may change: table contents, partitions, job rows."""
    tables = (
        "scenario_logs",
        "scenario_metrics",
        "scenario_logs_archive",
        "scenario_metrics_archive",
        "archive_jobs",
        "archive_policies",
    )
    result: dict[str, object] = {
        t: sql(
            dsn,
            f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
            f"FROM {t} x",
        )
        for t in tables
    }
    result["relations"] = sql(
        dsn, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
    )
    return result


def metric_groups(dsn: str, source: str, cutoff: datetime) -> set[tuple]:
    """(scenario, type, name, unit, UTC day) -> count, min, max, avg (6 decimals), in SQL."""
    return set(
        sql(
            dsn,
            f"""
            SELECT scenario_id, metric_type, metric_name, unit,
                   date_trunc('day', "timestamp", 'UTC'), count(*)::int, min(value), max(value),
                   round(avg(value), 6)
            FROM {source} WHERE "timestamp" < %s GROUP BY 1, 2, 3, 4, 5
            """,
            (cutoff,),
        )
    )


def archived_groups(dsn: str) -> set[tuple]:
    return set(
        sql(
            dsn,
            """
            SELECT scenario_id, metric_type, metric_name, unit, "timestamp", sample_count,
                   min_value, max_value, avg_value
            FROM scenario_metrics_archive WHERE is_aggregated
            """,
        )
    )


def test_dry_run_changes_nothing_and_reports_counts_and_dates(database: str) -> None:
    prepared(database, scenarios=5, logs=400, metrics=400)
    before = state(database)
    proc = archive_cli(database, "--logs", "--metrics", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert state(database) == before
    out = json.loads(proc.stdout)
    assert out["dry_run"] is True
    logs, metrics = out["policies"]
    cutoff = datetime.fromisoformat(logs["cutoff"])
    assert sql(
        database,
        "SELECT count(*), min(received_at), max(received_at) FROM scenario_logs "
        "WHERE received_at < %s",
        (cutoff,),
    ) == [
        (
            logs["rows"],
            datetime.fromisoformat(logs["oldest"]),
            datetime.fromisoformat(logs["newest"]),
        )
    ]
    assert logs["rows"] > 0 and "aggregates" not in logs
    assert "scenario_logs_archive_y" in " ".join(logs["new_partitions"])
    cutoff = datetime.fromisoformat(metrics["cutoff"])
    assert metrics["rows"] == sum(g[5] for g in metric_groups(database, "scenario_metrics", cutoff))
    assert metrics["aggregates"] == len(metric_groups(database, "scenario_metrics", cutoff)) > 0

    text = archive_cli(database, "--logs", "--dry-run")
    assert (
        text.returncode == 0 and f"logs: dry-run: {logs['rows']} rows would move (" in text.stdout
    )
    assert state(database) == before


def test_metrics_aggregates_equal_sql_and_late_rows_merge(database: str) -> None:
    prepared(database, scenarios=6, logs=0, metrics=3000)
    sql(database, "CREATE TABLE metrics_seen AS SELECT * FROM scenario_metrics")
    live_before = sql(database, "SELECT count(*) FROM scenario_metrics")[0][0]
    proc = archive_cli(database, "--metrics", "--batch-size", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    [first] = json.loads(proc.stdout)["policies"]
    cutoff = datetime.fromisoformat(first["cutoff"])
    expected = metric_groups(database, "metrics_seen", cutoff)
    assert archived_groups(database) == expected and expected
    assert first["rows_aggregated"] == first["rows_deleted"] == sum(g[5] for g in expected)
    assert first["rows_archived"] == len(expected) and first["aggregates_merged"] == 0
    # whole days per batch, but never much more than the batch size: n rows plus one day's rest
    day_rows = sql(
        database,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM metrics_seen "
        "GROUP BY scenario_id, date_trunc('day', \"timestamp\", 'UTC')) AS d",
    )[0][0]
    assert 200 <= first["largest_batch_rows"] <= 200 + day_rows
    assert sql(
        database, 'SELECT count(*) FROM scenario_metrics WHERE "timestamp" < %s', (cutoff,)
    ) == [(0,)]
    # value = avg_value, the exact sum kept for merges; raw rows of the same days are gone
    assert sql(
        database,
        "SELECT count(*) FROM scenario_metrics_archive WHERE is_aggregated AND (value <> avg_value "
        "OR id IS NOT NULL OR aggregation_level <> 'day' OR (extra_data->>'sum') IS NULL)",
    ) == [(0,)]
    assert sql(
        database, "SELECT count(*) FROM scenario_metrics_archive WHERE NOT is_aggregated"
    ) == [(0,)]

    # Late rows: into days already aggregated (merge), and one new day. Values chosen so that
    # a merge by averaging rounded averages would be off in the 6th decimal.
    late = sql(
        database,
        """
        INSERT INTO scenario_metrics
            (scenario_id, "timestamp", metric_type, metric_name, value, unit)
        SELECT scenario_id, date_trunc('day', "timestamp", 'UTC') + interval '12 hours',
               metric_type, metric_name, v, unit
        FROM (SELECT DISTINCT ON (metric_type, metric_name) * FROM metrics_seen
              WHERE "timestamp" < now() - interval '800 days'
              ORDER BY metric_type, metric_name, id) s,
             (VALUES (0.000001), (0.000002), (999.999999)) AS v(v)
        UNION ALL
        (SELECT scenario_id, '2020-02-29 23:59:59.999+00', metric_type, metric_name, 1.5, unit
         FROM metrics_seen ORDER BY id LIMIT 1)
        RETURNING id
        """,
    )
    sql(
        database,
        "INSERT INTO metrics_seen SELECT * FROM scenario_metrics WHERE id = ANY(%s)",
        ([r[0] for r in late],),
    )
    second = archive_cli(database, "--metrics", "--json")
    assert second.returncode == 0, second.stderr
    [again] = json.loads(second.stdout)["policies"]
    cutoff = datetime.fromisoformat(again["cutoff"])
    assert archived_groups(database) == metric_groups(database, "metrics_seen", cutoff)
    assert again["aggregates_merged"] == 5 and again["rows_archived"] == 1
    assert again["rows_aggregated"] == len(late) == 16
    # Nothing lost: every sample is live or counted in exactly one aggregate.
    assert sql(
        database,
        "SELECT (SELECT count(*) FROM scenario_metrics) + "
        "(SELECT sum(sample_count) FROM scenario_metrics_archive)",
    ) == [(live_before + len(late),)]
    assert sql(database, "SELECT count(*) FROM scenario_metrics_archive_default") == [(0,)]


def test_raw_metrics_move_keeps_the_unified_view_transparent(database: str) -> None:
    prepared(database, scenarios=3, logs=0, metrics=500)
    sql(
        database,
        "UPDATE archive_policies SET aggregate_before_archive = false, aggregation_level = 'none' "
        "WHERE table_name = 'scenario_metrics'",
    )
    view = (
        'SELECT md5(row(id, scenario_id, "timestamp", metric_type, metric_name, value, unit, '
        "extra_data)::text) FROM v_scenario_metrics_all WHERE NOT is_aggregated ORDER BY 1"
    )
    before = sql(database, view)
    proc = archive_cli(database, "--metrics", "--batch-size", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)["policies"]
    assert result["rows_archived"] == result["rows_processed"] > 0
    assert sql(database, view) == before
    assert sql(
        database,
        "SELECT count(*) FILTER (WHERE is_aggregated OR sample_count <> 1 OR id IS NULL), count(*) "
        "FROM scenario_metrics_archive",
    ) == [(0, result["rows_processed"])]


def partitions(dsn: str, parent: str) -> set[str]:
    return {
        r[0]
        for r in sql(
            dsn, "SELECT relid::text FROM pg_partition_tree(%s::regclass) WHERE isleaf", (parent,)
        )
    }


def test_partitions_are_made_for_new_months_and_default_is_emptied(database: str) -> None:
    prepared(database, scenarios=1, logs=0)
    scenario = sql(database, "SELECT id FROM scenarios")[0][0]
    insert = (
        "INSERT INTO scenario_logs (scenario_id, received_at, message_hash) "
        "VALUES (%s, %s, repeat('b', 64))"
    )
    sql(database, insert, (scenario, "2019-03-31 23:30:00+00"))  # UTC March, local April elsewhere
    # A row already in DEFAULT for 2018-07 (archived before its partition existed), and a live
    # row of that month still to move.
    sql(
        database,
        "INSERT INTO scenario_logs_archive (id, scenario_id, received_at, source, message_hash, "
        "size_bytes) VALUES (999999, %s, '2018-07-15 00:00+00', 'api', repeat('c', 64), 1)",
        (scenario,),
    )
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive_default") == [(1,)]
    sql(database, insert, (scenario, "2018-07-01 00:00:00+00"))
    view = f"SELECT {LOG_COLUMNS} FROM v_scenario_logs_all ORDER BY id"
    before = sql(database, view)

    proc = archive_cli(database, "--logs", "--json")
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)["policies"]
    made = {
        "scenario_logs_archive_y2018m07",
        "scenario_logs_archive_y2019m03",
        "scenario_logs_archive_y2019m04",  # the month after the newest
    }
    assert set(result["partitions_created"]) == made
    assert partitions(database, "scenario_logs_archive") == {
        "scenario_logs_archive_default",
        *made,
    }
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive_default") == [(0,)]
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive_y2018m07") == [(2,)]
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive_y2019m03") == [(1,)]
    assert sql(database, view) == before


def test_a_second_run_exits_4_naming_the_running_job(database: str) -> None:
    prepared(database, scenarios=2, logs=100)
    before = state(database)
    with psycopg.connect(database, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (archive.lock_key("logs"),))
        busy = archive_cli(database, "--logs")
        assert busy.returncode == 4, busy.stderr
        assert "another run holds the lock (server pid" in one_line(busy)
        job_id = other.execute(
            "INSERT INTO archive_jobs (job_type, status, started_at, host) "
            "VALUES ('logs', 'running', '2026-01-02 03:04:05+00', 'db-other') RETURNING id"
        ).fetchone()[0]
        busy = archive_cli(database, "--logs", "--metrics")
        assert busy.returncode == 4, busy.stderr
        line = one_line(busy)
        assert (
            f"archive logs: another run holds the lock (job {job_id} on db-other, started " in line
        )
        assert "2026-01-02 03:04:05" in line and "rerun" in line
        # the other policy did not start either: a locked run does nothing
        assert sql(database, "SELECT count(*) FROM archive_jobs") == [(1,)]
        other.execute("DELETE FROM archive_jobs")
        assert state(database) == before
        # metrics runs meanwhile: the lock is per type
        assert archive_cli(database, "--metrics").returncode == 0
    # the holder is gone: the next run marks its row failed and works
    sql(
        database,
        "INSERT INTO archive_jobs (job_type, status, started_at, host) "
        "VALUES ('logs', 'running', now(), 'db-other')",
    )
    done = archive_cli(database, "--logs", "--json")
    assert done.returncode == 0, done.stderr
    assert [r[1] for r in jobs_of(database, "logs")] == ["failed", "completed"]


def test_unified_log_view_returns_the_same_rows_after_archiving(database: str) -> None:
    prepared(database, scenarios=4, logs=500)
    view = f"SELECT {LOG_COLUMNS} FROM v_scenario_logs_all ORDER BY id"
    before = sql(database, view)
    proc = archive_cli(database, "--logs", "--batch-size", "64")
    assert proc.returncode == 0, proc.stderr
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0] > 0
    assert sql(database, view) == before
    assert sql(
        database,
        "SELECT count(*) FROM v_scenario_logs_all WHERE is_archived <> (archived_at IS NOT NULL)",
    ) == [(0,)]


def test_json_exit_codes_disabled_policy_and_metrics_textfile(
    database: str, tmp_path: Path
) -> None:
    prepared(database, scenarios=3, logs=300, metrics=300)
    sql(database, "UPDATE archive_policies SET enabled = false WHERE table_name <> 'scenario_logs'")
    metrics_dir = tmp_path / "prom"
    proc = archive_cli(database, "--logs", "--metrics", "--json", "--metrics-dir", str(metrics_dir))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    logs, metrics = out["policies"]
    assert metrics == {
        "type": "metrics",
        "status": "skipped",
        "reason": "policy disabled (archive_policies.enabled = false)",
    }
    assert "event=archive.skipped" in proc.stderr and "type=metrics" in proc.stderr
    assert {
        "type",
        "job_id",
        "status",
        "cutoff",
        "rows_processed",
        "rows_archived",
        "rows_aggregated",
        "rows_deleted",
        "aggregates_merged",
        "bytes_archived",
        "batches",
        "seconds",
        "rows_per_second",
        "oldest",
        "newest",
        "longest_batch_ms",
        "partitions_created",
    } <= set(logs)
    assert logs["status"] == "completed" and logs["rows_processed"] > 0
    assert logs["rows_deleted"] == logs["rows_archived"] == logs["rows_processed"]
    assert logs["batches"] == 1 and logs["bytes_archived"] > 0  # policy batch_size 10000
    assert datetime.fromisoformat(logs["newest"]) < datetime.fromisoformat(logs["cutoff"])
    assert sql(
        database,
        "SELECT status, records_processed, records_archived, records_deleted, bytes_archived, "
        "host IS NOT NULL, cutoff_at, completed_at >= started_at FROM archive_jobs",
    ) == [
        (
            "completed",
            logs["rows_processed"],
            logs["rows_processed"],
            logs["rows_processed"],
            logs["bytes_archived"],
            True,
            datetime.fromisoformat(logs["cutoff"]),
            True,
        )
    ]
    prom = (metrics_dir / "dbtier_archive_logs.prom").read_text()
    assert 'dbtier_job_last_status{job="archive_logs"} 1' in prom
    assert f'dbtier_job_rows{{job="archive_logs"}} {logs["rows_processed"]}' in prom
    assert 'dbtier_job_failures_total{job="archive_logs"} 0' in prom
    assert "# TYPE dbtier_job_failures_total counter" in prom
    assert not (metrics_dir / "dbtier_archive_metrics.prom").exists()

    # --all: every enabled policy (only logs here), nothing left to move
    again = archive_cli(database, "--all", "--json")
    assert again.returncode == 0, again.stderr
    assert [(p["type"], p["status"]) for p in json.loads(again.stdout)["policies"]] == [
        ("logs", "completed"),
        ("metrics", "skipped"),
        ("reports", "skipped"),
    ]
    text = archive_cli(database, "--logs")
    assert text.returncode == 0 and text.stdout.startswith(
        "logs: completed: job 3, 0 rows in 0 batches"
    )

    # a failure: counted in the textfile, one line, exit 1, the job row failed
    sql(
        database, "ALTER TABLE scenario_logs_archive ADD CONSTRAINT no_more CHECK (false) NOT VALID"
    )
    sql(
        database,
        "INSERT INTO scenario_logs (scenario_id, received_at, message_hash) "
        "SELECT id, '2020-01-01', repeat('d', 64) FROM scenarios LIMIT 1",
    )
    failed = archive_cli(database, "--logs", "--metrics-dir", str(metrics_dir))
    assert failed.returncode == 1
    assert "no_more" in one_line(failed)
    prom = (metrics_dir / "dbtier_archive_logs.prom").read_text()
    assert 'dbtier_job_failures_total{job="archive_logs"} 1' in prom
    assert 'dbtier_job_last_status{job="archive_logs"} 0' in prom
    assert "dbtier_job_last_success_timestamp_seconds" in prom
    _id, status, processed, error, _cutoff, _cursor = jobs_of(database, "logs")[-1]
    assert (status, processed) == ("failed", 0) and "no_more" in error

    # bad usage: one line, exit 2
    for args in ([], ["--all", "--logs"], ["nonsense"], ["restore-report", "x", "--logs"]):
        bad = archive_cli(database, *args)
        assert bad.returncode == 2, (args, bad.stderr)
        one_line(bad)


def test_killed_metrics_runs_aggregate_exactly_once(database: str) -> None:
    prepared(database, scenarios=8, logs=0, metrics=4000)
    sql(database, "CREATE TABLE metrics_seen AS SELECT * FROM scenario_metrics")
    rng = random.Random(11)
    for _ in range(3):
        before = sql(database, "SELECT coalesce(max(id), 0) FROM archive_jobs")[0][0]
        proc = start_cli(database, "--metrics", "--batch-size", "1")
        # this run must have recorded itself and moved something, and not be finished
        query = ("SELECT count(*) FROM archive_jobs WHERE status = 'running' "
                 f"AND records_processed > 0 AND id > {before}")  # fmt: skip
        wait_for(lambda q=query: sql(database, q)[0][0] == 1)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for_sessions_gone(database)
    final = archive_cli(database, "--metrics", "--json")
    assert final.returncode == 0, final.stderr
    [result] = json.loads(final.stdout)["policies"]
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert archived_groups(database) == metric_groups(database, "metrics_seen", cutoff)
    assert sql(
        database,
        "SELECT (SELECT count(*) FROM scenario_metrics) "
        "+ (SELECT sum(sample_count) FROM scenario_metrics_archive)",
    ) == sql(database, "SELECT count(*) FROM metrics_seen")
    *killed, last = jobs_of(database, "metrics")
    assert len(killed) == 3 and last[1] == "completed"
    assert all(k[1] in ("partial", "failed") and k[3].startswith("interrupted") for k in killed), (
        killed
    )
    assert any(k[2] for k in killed), "no killed run got anywhere"
    assert killed[-1][5]["scenario_id"]  # the resume cursor
    # every run's counts, summed, are the rolled-up samples: each counted once
    assert (
        sum(r[2] for r in jobs_of(database, "metrics"))
        == sql(database, "SELECT sum(sample_count) FROM scenario_metrics_archive")[0][0]
    )


def test_sigterm_records_the_run_and_exits_143(database: str) -> None:
    prepared(database, scenarios=10, logs=3000)
    original = log_rows(database)
    proc = start_cli(database, "--logs", "--batch-size", "1")
    deadline = time.monotonic() + 30
    while not sql(database, "SELECT 1 FROM archive_jobs WHERE records_processed > 0"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "dbtier: error: terminated by SIGTERM" in err
    [(_id, status, processed, error, _cutoff, _cursor)] = jobs_of(database, "logs")
    assert (status, error) == ("partial", "terminated by SIGTERM") and processed > 0
    wait_for_sessions_gone(database)
    assert log_rows(database) == original
    assert sql(database, "SELECT count(*) FROM scenario_logs_archive") == [(processed,)]


def test_the_sql_of_the_archiving_docs_runs_and_brings_logs_back(database: str) -> None:
    """Every ```sql block of docs/DATA-ARCHIVING.md, in order, on an archived database: the
    policy changes, the queries over the unified views, monitoring, and bringing logs back."""
    from .support.runbook import DOCS, blocks

    prepared(database, scenarios=4, logs=300, metrics=200)
    done = archive_cli(database, "--logs", "--metrics")
    assert done.returncode == 0, done.stderr
    archived_before = sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0]
    first = "(SELECT id FROM scenarios ORDER BY created_at LIMIT 1)"
    theirs = sql(
        database, f"SELECT count(*) FROM scenario_logs_archive WHERE scenario_id = {first}"
    )
    assert archived_before > 0 and theirs[0][0] > 0
    statements = [b for b in blocks(DOCS / "DATA-ARCHIVING.md") if b.language == "sql"]
    assert len(statements) >= 4
    with psycopg.connect(database, autocommit=True) as conn:
        for block in statements:
            conn.execute(block.text)  # several statements: the simple query protocol
    # the policy changes took effect, and the first scenario's logs are live again
    assert sql(
        database, "SELECT archive_after_days FROM archive_policies WHERE table_name = %s",
        ("scenario_logs",),
    ) == [(540,)]  # fmt: skip
    after = sql(database, "SELECT count(*) FROM scenario_logs_archive")[0][0]
    assert after == archived_before - theirs[0][0]
    assert sql(database, f"SELECT count(*) FROM scenario_logs WHERE scenario_id = {first} "
               "AND received_at < now() - interval '365 days'")[0][0] == theirs[0][0]  # fmt: skip
