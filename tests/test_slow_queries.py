"""`dbtier slow-queries` against a real PostgreSQL 15 with pg_stat_statements preloaded: windows
from counter deltas, the p95 estimate, resets, privileges, the metrics textfile, report, prune,
and an interrupted collect that must not count a window twice."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from dbtier import cli, config, migrations, slowqueries, status
from dbtier.errors import DbtierError, UsageError
from dbtier.pgcluster import LocalCluster
from dbtier.slowqueries import Counters, window_stats

from .conftest import ROOT, SQL_DIR

SLOW = "SELECT pg_sleep(0.25)"  # pg_stat_statements normalizes it to SELECT pg_sleep($1)
FAST = "SELECT count(*) FROM generate_series(1, 10)"


@pytest.fixture(scope="module")
def pgss_cluster() -> Iterator[LocalCluster]:
    """A cluster of its own: pg_stat_statements needs shared_preload_libraries (the shared
    session cluster has none), and its counters are cluster-wide, so other tests' statements
    stay out of these windows."""
    base = Path(tempfile.mkdtemp(prefix="dbtier-pgss-", dir="/tmp"))
    cluster = LocalCluster(
        base=base,
        settings={
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "top",
            "max_connections": "40",
        },
    )
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def new_database(cluster: LocalCluster, *, extension: bool = True) -> str:
    name = f"sq_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    migrations.migrate(dsn, SQL_DIR)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if extension:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
    return dsn


@pytest.fixture
def slowdb(pgss_cluster: LocalCluster) -> Iterator[str]:
    dsn = new_database(pgss_cluster)
    yield dsn
    with psycopg.connect(pgss_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


def settings_for(dsn: str, metrics: Path | None = None, **values) -> config.Settings:
    return config.Settings(dsn=dsn, metrics_dir=str(metrics) if metrics else None, **values)


def run(dsn: str, query: str, times: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(times):
            conn.execute(query)


def logged(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(
            "SELECT queryid, query_hash, query_text, calls, execution_time_ms, p95_ms, max_ms, "
            "total_time_ms, rows, database_name, user_name, window_start, window_end "
            "FROM query_performance_log ORDER BY id"
        )
        names = [c.name for c in cursor.description]
        return [
            {k: float(v) if isinstance(v, Decimal) else v for k, v in zip(names, row, strict=True)}
            for row in cursor
        ]


def sample(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, taken_at, (SELECT count(*) FROM query_stats_snapshot), "
            "(SELECT count(*) FROM query_stats_sample) FROM query_stats_sample"
        ).fetchone()


def parse_textfile(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> {metric: [(labels, value)]} (escapes undone)."""
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = {
            k: re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)
            for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or "")
        }
        series.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return series


def promtool_check(path: Path) -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------- the math


def pgss_counters(times: list[float]) -> Counters:
    """What pg_stat_statements shows after these calls: mean and population stddev."""
    return Counters.from_pgss(
        len(times),
        sum(times),
        statistics.fmean(times),
        statistics.pstdev(times),
        max(times),
        len(times),
    )


def test_window_p95_from_counter_deltas_matches_the_samples() -> None:
    before = [10.0, 20.0, 30.0, 5000.0]  # an old outlier: not part of the window
    window = [100.0, 120.0, 140.0, 160.0, 180.0, 900.0]
    w = window_stats(pgss_counters(before + window), pgss_counters(before))
    assert w is not None and w.calls == 6 and w.rows == 6
    assert w.mean_ms == pytest.approx(statistics.fmean(window))
    expected = statistics.fmean(window) + 1.645 * statistics.pstdev(window)
    assert w.p95_ms == pytest.approx(expected)  # 250 + 1.645 x 285.4 = 719.5 < max 5000
    assert w.max_ms is None  # the cumulative max (5000) is older than the window

    # Clamped to the max: two calls, the estimate (250 + 1.645 x 150) above the slowest
    w = window_stats(pgss_counters([100.0, 400.0]), None)
    assert w is not None and w.mean_ms == pytest.approx(250.0)
    assert w.p95_ms == pytest.approx(400.0) and w.max_ms == pytest.approx(400.0)

    # One call: p95 = mean = that call; the max rose in the window, so it is the window's
    w = window_stats(pgss_counters([*before, 6000.0]), pgss_counters(before))
    assert w is not None and (w.calls, w.p95_ms, w.max_ms) == (1, pytest.approx(6000.0), 6000.0)

    # No calls in the window
    assert window_stats(pgss_counters(before), pgss_counters(before)) is None
    # Rounding in the float counters never gives a negative variance (p95 >= mean)
    same = [250.123] * 1000
    w = window_stats(pgss_counters(same * 2), pgss_counters(same))
    assert w is not None and w.p95_ms >= w.mean_ms and not math.isnan(w.p95_ms)


def test_find_slow_new_evicted_hidden_and_reset_statements() -> None:
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)

    def stmt(queryid: int, times: list[float]) -> slowqueries.Statement:
        return slowqueries.Statement((1, 10, queryid), pgss_counters(times), "q", "db", "u")

    old = [300.0] * 4
    previous = slowqueries.Previous(
        1,
        t0,
        t0 - timedelta(days=1),
        7,
        0,
        None,
        {(1, 10, 1): pgss_counters(old), (1, 10, 2): pgss_counters(old)},  # 2 gets evicted
    )
    now = slowqueries.Reading(
        t1,
        t0 - timedelta(days=1),
        9,
        [stmt(1, [*old, 500.0]), stmt(3, [250.0, 260.0]), stmt(4, [10.0])],
        0,
    )
    found = slowqueries.find_slow(previous, now, 200.0)
    assert [(s.statement.key[2], s.window.calls) for s in found.slow] == [(1, 1), (3, 2)]
    assert (found.start, found.seconds, found.reset, found.evicted) == (t0, 300.0, False, 2)

    # The previous sample could not see everything: new statements are only a baseline
    hidden = dataclasses.replace(previous, hidden=3)
    assert [s.statement.key[2] for s in slowqueries.find_slow(hidden, now, 200.0).slow] == [1]

    # Reset 1 minute into the window: every statement counts whole, from the reset
    reset_at = t0 + timedelta(minutes=1)
    after = dataclasses.replace(now, stats_reset=reset_at, dealloc=0)
    found = slowqueries.find_slow(previous, after, 200.0)
    assert [(s.statement.key[2], s.window.calls) for s in found.slow] == [(1, 5), (3, 2)]
    assert (found.start, found.seconds, found.reset, found.evicted) == (reset_at, 240.0, True, 0)
    assert all(s.start == reset_at and s.end == t1 for s in found.slow)

    assert slowqueries.find_slow(None, now, 200.0).slow == []  # the baseline


def test_label_values_are_escaped_and_cut() -> None:
    assert slowqueries.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    text = "SELECT  *\n\tFROM t WHERE x = $1 " + "AND y = $2 " * 20
    cut = slowqueries.one_line(text, 80)
    assert len(cut) == 80 and cut.startswith("SELECT * FROM t WHERE x = $1 AND")
    assert slowqueries.one_line("SELECT 1", 80) == "SELECT 1"


# ----------------------------------------------------------------------------------- collect


def test_two_collects_give_only_the_windows_calls(slowdb: str, tmp_path: Path, capsys) -> None:
    settings = settings_for(slowdb, tmp_path)
    run(slowdb, SLOW, 2)  # before the baseline: never logged
    first = slowqueries.run_collect(settings)
    assert first["baseline"] and first["slow"] == 0 and logged(slowdb) == []
    top = tmp_path / "dbtier_slow_queries_top.prom"
    assert parse_textfile(top.read_text())["dbtier_slow_queries"] == [({}, 0.0)]

    run(slowdb, SLOW, 3)
    run(slowdb, FAST, 20)
    second = slowqueries.run_collect(settings)
    assert not second["baseline"] and second["slow"] == 1
    (row,) = logged(slowdb)
    assert "pg_sleep" in row["query_text"] and row["calls"] == 3  # not the 2 before the baseline
    assert 250 <= row["p95_ms"] < 400 and 250 <= row["execution_time_ms"] <= row["p95_ms"]
    assert row["total_time_ms"] == pytest.approx(3 * row["execution_time_ms"], rel=1e-3)
    # known only if one of the 3 was slower than the 2 before the window (the unit test above)
    assert row["max_ms"] is None or row["max_ms"] >= row["execution_time_ms"]
    assert row["query_hash"] == str(row["queryid"]) and row["rows"] == 3
    assert (row["database_name"], row["user_name"]) == (slowdb.rsplit("/", 1)[1], "postgres")
    assert row["window_start"] < row["window_end"]
    assert second["window_seconds"] == pytest.approx(
        (row["window_end"] - row["window_start"]).total_seconds(), abs=0.01
    )

    promtool_check(top)
    metrics = parse_textfile(top.read_text())
    ((labels, p95),) = metrics["dbtier_slow_query_p95_seconds"]
    assert labels == {
        "queryid": str(row["queryid"]),
        "datname": row["database_name"],
        "usename": "postgres",
        "query": "SELECT pg_sleep($1)",
    }
    assert p95 == pytest.approx(row["p95_ms"] / 1000, abs=1e-5)
    assert metrics["dbtier_slow_query_calls"] == [(labels, 3.0)]
    assert metrics["dbtier_slow_query_mean_seconds"][0][1] == pytest.approx(
        row["execution_time_ms"] / 1000, abs=1e-5
    )
    assert metrics["dbtier_slow_queries"] == [({}, 1.0)]
    assert metrics["dbtier_slow_queries_window_seconds"][0][1] == pytest.approx(
        second["window_seconds"], abs=0.01
    )
    job = parse_textfile((tmp_path / "dbtier_slow_queries.prom").read_text())
    assert job["dbtier_job_last_status"] == [({"job": "slow_queries"}, 1.0)]
    assert job["dbtier_job_rows"] == [({"job": "slow_queries"}, 1.0)]
    assert "event=slow_queries.collected" in capsys.readouterr().err

    # dbtier status lists the job once (the top file is no job of its own)
    jobs = status.read_metrics(str(tmp_path), status.Report(datetime.now(UTC)))["jobs"]
    assert [(j["job"], j["last_status"]) for j in jobs] == [("slow_queries", "ok")]

    # A window without slow calls: nothing logged, and the statement drops out of the file
    run(slowdb, FAST, 5)
    third = slowqueries.run_collect(settings)
    assert third["slow"] == 0 and len(logged(slowdb)) == 1
    metrics = parse_textfile(top.read_text())
    assert "dbtier_slow_query_p95_seconds" not in metrics
    assert metrics["dbtier_slow_queries"] == [({}, 0.0)]
    _, _, snapshot_rows, samples = sample(slowdb)
    assert samples == 1 and snapshot_rows >= 3  # only the newest sample is kept


def test_top_n_and_threshold_settings(slowdb: str, tmp_path: Path) -> None:
    settings = settings_for(slowdb, tmp_path, slow_query_threshold_ms=60.0, slow_query_top=1)
    slowqueries.run_collect(settings)
    run(slowdb, "SELECT pg_sleep(0.1)", 1)
    run(slowdb, 'SELECT pg_sleep(0.2)::text\n    AS "we""ird\\path"', 1)  # to escape
    run(slowdb, "SELECT pg_sleep(0.01), 1", 1)  # under the threshold
    result = slowqueries.run_collect(settings)
    # (the collector's own statements could pass 60 ms on a loaded machine: not counted on)
    sleeps = sorted(r["query_text"] for r in logged(slowdb) if "pg_sleep" in r["query_text"])
    weird = 'SELECT pg_sleep($1)::text\n    AS "we""ird\\path"'
    assert sleeps == ["SELECT pg_sleep($1)", weird]
    top = tmp_path / "dbtier_slow_queries_top.prom"
    promtool_check(top)
    assert '"SELECT pg_sleep($1)::text AS \\"we\\"\\"ird\\\\path\\""' in top.read_text()
    metrics = parse_textfile(top.read_text())
    ((labels, _),) = metrics["dbtier_slow_query_p95_seconds"]  # top 1: the slowest
    assert labels["query"] == 'SELECT pg_sleep($1)::text AS "we""ird\\path"'
    assert metrics["dbtier_slow_queries"] == [({}, float(result["slow"]))]
    assert result["slow"] == len(logged(slowdb)) >= 2


def test_stats_reset_counts_the_current_counters_from_the_reset(slowdb: str) -> None:
    settings = settings_for(slowdb)
    run(slowdb, SLOW, 3)
    slowqueries.collect(settings)
    run(slowdb, SLOW, 1)
    with psycopg.connect(slowdb, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        reset_at = conn.execute("SELECT stats_reset FROM pg_stat_statements_info").fetchone()[0]
    run(slowdb, SLOW, 2)
    slowqueries.collect(settings)
    (row,) = logged(slowdb)
    assert row["calls"] == 2  # the call before the reset is lost with the counters
    assert row["window_start"] == reset_at and row["max_ms"] is not None

    # One statement reset (pg_stat_statements_info.stats_reset unchanged): its calls went down
    run(slowdb, SLOW, 3)
    slowqueries.collect(settings)
    assert [r["calls"] for r in logged(slowdb)] == [2, 3]
    with psycopg.connect(slowdb, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_stat_statements_reset(userid, dbid, queryid) FROM pg_stat_statements "
            "WHERE query LIKE 'SELECT pg_sleep%'"
        )
    run(slowdb, SLOW, 1)
    slowqueries.collect(settings)
    assert [r["calls"] for r in logged(slowdb)] == [2, 3, 1]


def test_new_statement_after_the_baseline_counts_whole(slowdb: str) -> None:
    settings = settings_for(slowdb)
    slowqueries.collect(settings)
    run(slowdb, "SELECT pg_sleep(0.25), 'new'", 2)  # never seen by the previous sample
    slowqueries.collect(settings)
    (row,) = logged(slowdb)
    assert row["calls"] == 2 and row["max_ms"] is not None


def test_insufficient_privilege_is_counted_and_names_the_grant(
    slowdb: str, pgss_cluster: LocalCluster, capsys
) -> None:
    """What the ops login needs to see other users' statements: pg_read_all_stats. (In the
    tier it is granted by roles/database_bootstrap to the owner role the ops host logs in as.)"""
    reader = f"reader_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(slowdb, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {reader}")
    dbname = slowdb.rsplit("/", 1)[1]
    settings = settings_for(pgss_cluster.dsn(dbname, user=reader))
    run(slowdb, SLOW, 1)  # as postgres: hidden from the reader
    first = slowqueries.collect(settings)
    assert first["hidden_statements"] >= 1
    err = capsys.readouterr().err
    assert "event=slow_queries.insufficient_privilege" in err
    assert f'fix="GRANT pg_read_all_stats TO {reader}"' in err

    run(slowdb, SLOW, 2)
    second = slowqueries.collect(settings)
    assert second["hidden_statements"] >= 1 and second["slow"] == 0 and logged(slowdb) == []

    with psycopg.connect(slowdb, autocommit=True) as conn:
        conn.execute(f"GRANT pg_read_all_stats TO {reader}")
    # Visible now, but its counters are not the window's (all calls since it was created):
    # the previous sample could not see it, so this collect takes it as a baseline.
    third = slowqueries.collect(settings)
    assert third["hidden_statements"] == 0 and third["slow"] == 0
    run(slowdb, SLOW, 1)
    slowqueries.collect(settings)
    (row,) = logged(slowdb)
    assert row["calls"] == 1 and row["user_name"] == "postgres"
    with psycopg.connect(slowdb, autocommit=True) as conn:
        conn.execute(f"REASSIGN OWNED BY {reader} TO postgres")
        conn.execute(f"DROP OWNED BY {reader}")
        conn.execute(f"DROP ROLE {reader}")


def test_missing_extension_is_one_line_and_a_failed_job(
    pgss_cluster: LocalCluster, tmp_path: Path
) -> None:
    dsn = new_database(pgss_cluster, extension=False)
    proc = dbtier("slow-queries", "collect", "--dsn", dsn, "--metrics-dir", str(tmp_path))
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dbtier: error")]
    assert len(errors) == 1, proc.stderr
    assert "CREATE EXTENSION pg_stat_statements" in errors[0]
    job = parse_textfile((tmp_path / "dbtier_slow_queries.prom").read_text())
    assert job["dbtier_job_last_status"] == [({"job": "slow_queries"}, 0.0)]
    assert not (tmp_path / "dbtier_slow_queries_top.prom").exists()


def test_extension_not_preloaded(database: str) -> None:
    """The shared session cluster has no shared_preload_libraries: the view cannot be read."""
    migrations.migrate(database, SQL_DIR)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    with pytest.raises(DbtierError, match="shared_preload_libraries"):
        slowqueries.collect(settings_for(database))


def test_interrupted_collect_never_counts_a_window_twice(
    slowdb: str, tmp_path: Path, monkeypatch
) -> None:
    settings = settings_for(slowdb, tmp_path)
    slowqueries.run_collect(settings)
    before = sample(slowdb)
    run(slowdb, SLOW, 2)

    real_insert = slowqueries.insert_log_rows

    def insert_then_die(conn, slow):
        count = real_insert(conn, slow)
        assert count == 1  # the rows are written ...
        raise RuntimeError("killed after the inserts")  # ... and the process dies

    monkeypatch.setattr(slowqueries, "insert_log_rows", insert_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        slowqueries.run_collect(settings)
    assert logged(slowdb) == [] and sample(slowdb) == before  # all or nothing
    job = parse_textfile((tmp_path / "dbtier_slow_queries.prom").read_text())
    assert job["dbtier_job_last_status"] == [({"job": "slow_queries"}, 0.0)]

    monkeypatch.setattr(slowqueries, "insert_log_rows", real_insert)
    slowqueries.run_collect(settings)
    run(slowdb, SLOW, 1)
    slowqueries.run_collect(settings)
    assert [r["calls"] for r in logged(slowdb)] == [2, 1]


# ------------------------------------------------------------------------------ prune, report


def insert_row(dsn: str, query: str, *, age: timedelta, p95: float, calls: int, total: float):
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO query_performance_log (query_hash, query_text, execution_time_ms, rows, "
            "calls, database_name, user_name, captured_at, created_at, queryid, window_start, "
            "window_end, p95_ms, total_time_ms) VALUES (%(h)s, %(q)s, %(mean)s, 1, %(calls)s, "
            "'mockupaws', 'app', now() - %(age)s, now() - %(age)s, %(id)s, "
            "now() - %(age)s - interval '5 minutes', now() - %(age)s, %(p95)s, %(total)s)",
            {
                "h": str(abs(hash(query)) % 10**12),
                "id": abs(hash(query)) % 10**12,
                "q": query,
                "mean": total / calls,
                "calls": calls,
                "age": age,
                "p95": p95,
                "total": total,
            },
        )


def test_prune_deletes_old_rows_in_batches_and_old_samples(slowdb: str) -> None:
    settings = settings_for(slowdb, slow_query_retention_days=30)
    slowqueries.collect(settings)  # the first collect prunes (nothing yet) and stamps it
    with psycopg.connect(slowdb) as conn:
        assert conn.execute("SELECT last_pruned_at FROM query_stats_sample").fetchone()[0]
    for i in range(5):
        insert_row(slowdb, f"SELECT old_{i}", age=timedelta(days=31), p95=300, calls=1, total=300)
    insert_row(slowdb, "SELECT recent", age=timedelta(days=29), p95=300, calls=1, total=300)

    slowqueries.collect(settings)  # pruned less than a day ago: the old rows stay
    assert len(logged(slowdb)) == 6
    with psycopg.connect(slowdb) as conn:
        conn.execute("UPDATE query_stats_sample SET last_pruned_at = now() - interval '25 hours'")
    result = slowqueries.collect(settings)  # the daily prune is due
    assert result["pruned"]["deleted_rows"] == 5
    assert [r["query_text"] for r in logged(slowdb)] == ["SELECT recent"]

    for i in range(5):
        insert_row(slowdb, f"SELECT old_{i}", age=timedelta(days=40), p95=300, calls=1, total=300)
    with psycopg.connect(slowdb) as conn:  # a second sample (a leftover): prune keeps the newest
        newest = conn.execute(
            "INSERT INTO query_stats_sample (taken_at, statements) VALUES (now(), 0) RETURNING id"
        ).fetchone()[0]
    pruned = slowqueries.prune(settings, retention_days=30, batch_size=2)
    assert (pruned["deleted_rows"], pruned["batches"], pruned["deleted_samples"]) == (5, 3, 1)
    assert sample(slowdb)[0] == newest and sample(slowdb)[3] == 1
    assert [r["query_text"] for r in logged(slowdb)] == ["SELECT recent"]


def test_report_table_json_and_empty(slowdb: str, capsys) -> None:
    dsn = ["--dsn", slowdb]
    assert cli.main(["slow-queries", "report", *dsn]) == 0
    out = capsys.readouterr().out
    assert "query_performance_log is empty" in out and "slow-queries collect" in out

    insert_row(slowdb, "SELECT a_spike", age=timedelta(hours=1), p95=900, calls=2, total=1000)
    insert_row(slowdb, "SELECT a_spike", age=timedelta(hours=2), p95=300, calls=10, total=2600)
    insert_row(slowdb, "SELECT busy", age=timedelta(hours=3), p95=250, calls=400, total=90000)
    insert_row(slowdb, "SELECT last_week", age=timedelta(days=3), p95=5000, calls=1, total=5000)

    assert cli.main(["slow-queries", "report", *dsn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "P95 MS" in lines[1] and "LAST SEEN" in lines[1] and "QUERY" in lines[1]
    assert [ln.split()[-1] for ln in lines[2:]] == ["a_spike", "busy"]  # by p95, 24h
    spike = lines[2].split()
    # worst window's p95, mean over both windows (3600 ms / 12 calls), calls and rows summed
    assert spike[:4] == ["900.0", "300.0", "12", "2"] and spike[4:6] == ["mockupaws", "app"]

    assert cli.main(["slow-queries", "report", *dsn, "--by", "total", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [q["query"] for q in payload["queries"]] == ["SELECT busy", "SELECT a_spike"]
    assert payload["queries"][1]["windows"] == 2 and payload["queries"][1]["total_ms"] == 3600
    assert cli.main(["slow-queries", "report", *dsn, "--since", "7d", "--by", "calls"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[-1] for ln in out.splitlines()[2:]] == ["busy", "a_spike", "last_week"]
    assert cli.main(["slow-queries", "report", *dsn, "--since", "30m"]) == 0
    assert "has none in the last 30m" in capsys.readouterr().out

    assert cli.main(["slow-queries", "report", *dsn, "--since", "yesterday"]) == 2
    assert "--since wants a period" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- CLI


def dbtier(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m dbtier`, as dbtier-job runs it (the wrapper only adds settings and
    credentials)."""
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "DBTIER_CONFIG": "",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "dbtier", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
        check=False,
    )


def test_cli_collect_report_prune(slowdb: str, tmp_path: Path) -> None:
    """The commands of docs/MONITORING.md, with dbtier.toml's settings (PG* variables for the
    connection, as credentials.env gives them)."""
    toml = tmp_path / "dbtier.toml"
    metrics = tmp_path / "metrics"
    toml.write_text(
        f'metrics_dir = "{metrics}"\nslow_query_threshold_ms = 100\n'
        "slow_query_retention_days = 14\nslow_query_top = 5\n"
    )
    env = {"DBTIER_CONFIG": str(toml), "DATABASE_URL": slowdb}
    proc = dbtier("slow-queries", "collect", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("baseline:") and "event=slow_queries.done" in proc.stderr
    run(slowdb, "SELECT pg_sleep(0.15)", 2)
    proc = dbtier("slow-queries", "collect", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "1 over 100 ms logged" in proc.stdout and "SELECT pg_sleep($1)" in proc.stdout
    promtool_check(metrics / "dbtier_slow_queries_top.prom")

    proc = dbtier("slow-queries", "report", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "P95 MS" in proc.stdout.splitlines()[1]
    proc = dbtier("slow-queries", "report", "--since", "7d", "--by", "total", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].endswith("SELECT pg_sleep($1)")
    proc = dbtier("slow-queries", "report", "--json", env=env)
    assert json.loads(proc.stdout)["queries"][0]["calls"] == 2

    proc = dbtier("slow-queries", "prune", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pruned 0 rows older than 14 days")

    proc = dbtier("slow-queries", "collect", "--threshold-ms", "-5", env=env)
    assert (proc.returncode, proc.stderr.strip()) == (
        2,
        "dbtier: error: --threshold-ms must be >= 0 (got -5)",
    )

    toml.write_text("slow_query_top = 0\n")
    proc = dbtier("slow-queries", "collect", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "dbtier: error: setting slow_query_top must be a count >= 1 (got 0)"
    )


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    for text, message in [
        ("slow_query_threshold_ms = -1", "slow_query_threshold_ms must be a number of"),
        ('slow_query_retention_days = "x"', "slow_query_retention_days must be an integer"),
        ("slow_query_retention_days = 0", "slow_query_retention_days must be a number of days"),
    ]:
        path = tmp_path / "dbtier.toml"
        path.write_text(text + "\n")
        with pytest.raises(UsageError, match=message):
            config.load(str(path))
    path.write_text("slow_query_threshold_ms = 150\n")
    assert config.load(str(path)).slow_query_threshold_ms == 150.0
