"""`dbtier bench queries` and the `make bench` suite built on it (benchmarks/suite_queries.py)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from benchmarks import common, suite_queries

from .conftest import BenchQuick, run_dbtier

NO_CONFIG = {"DBTIER_CONFIG": ""}


def test_suite_runs_quick_and_renders(bench_quick: BenchQuick, tmp_path: Path) -> None:
    # the quick run's assets (its EXPLAIN files), rendered again here
    ctx = common.Context(quick=True, work=tmp_path, assets=bench_quick.out / "bench")
    section = bench_quick.section(suite_queries.NAME)
    json.dumps(section)  # JSON-able
    names = [q["name"] for q in section["queries"]]
    assert len(names) == 12 and "scenario_with_relations_n1" in names
    assert {t["query"] for t in section["targets"]} == {
        "scenario_list",
        "logs_by_scenario_and_date",
        "metrics_time_series",
        "pii_detection_query",
        "reports_by_scenario",
        "materialized_view",
    }
    for q in section["queries"]:
        assert q["before"]["n"] >= 5 and q["after"]["p50_ms"] > 0
        for side in ("before", "after"):
            assert (ctx.assets / "explain" / q["explain"][side]["text"]).is_file()
            plan = json.loads((ctx.assets / "explain" / q["explain"][side]["json"]).read_text())
            assert "Plan" in plan[0]
    assert section["load"]["rows"]["scenario_logs"] == 8200
    text = suite_queries.render(section, ctx)
    png = ctx.assets / "queries.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(bench/queries.png)" in text and "bench/explain/" in text
    assert "| scenario_list |" in text and "materialized_view" in text


def test_bench_queries_without_createdb_is_one_line(
    pg_cluster, database: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS bench_nocreate")
        conn.execute("CREATE ROLE bench_nocreate LOGIN")
    try:
        proc = run_dbtier(
            "bench",
            "queries",
            "--dsn",
            pg_cluster.dsn(database.rsplit("/", 1)[1], user="bench_nocreate"),
            "--out",
            str(tmp_path / "out"),
            env=NO_CONFIG,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "CREATEDB" in lines[0], proc.stderr
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS bench_nocreate")
