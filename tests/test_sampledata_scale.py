"""`dbtier sample-data --scale`: deterministic, realistic, sized by the scale."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from dbtier import migrations, sampledata
from dbtier.errors import UsageError

from .conftest import SQL_DIR, fingerprints, run_dbtier

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
NO_CONFIG = {"DBTIER_CONFIG": ""}


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_same_scale_seed_and_anchor_give_identical_tables(database: str, pg_cluster) -> None:
    other = "t_sample_twin"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {other}")
        conn.execute(f"CREATE DATABASE {other}")
    twin = pg_cluster.dsn(other)
    try:
        migrations.migrate(database, SQL_DIR)
        migrations.migrate(twin, SQL_DIR, "up", target=1)  # the schema does not change rows
        first = sampledata.load_scale(database, 0.004, anchor=ANCHOR, jobs=2)
        second = sampledata.load_scale(twin, 0.004, anchor=ANCHOR, jobs=1)
        assert first["rows"] == second["rows"]
        assert fingerprints(database) == fingerprints(twin)
        with psycopg.connect(twin) as conn:  # the identity sequences continue after the rows
            nxt = conn.execute("SELECT nextval(pg_get_serial_sequence('scenario_logs', 'id'))")
            assert nxt.fetchone()[0] == first["rows"]["scenario_logs"] + 1
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {other} WITH (FORCE)")


def test_content_is_realistic(database: str) -> None:
    migrations.migrate(database, SQL_DIR)
    loaded = sampledata.load_scale(database, 0.01, anchor=ANCHOR)
    plan = sampledata.plan_for(0.01, anchor=ANCHOR)
    assert loaded["rows"]["scenario_logs"] == plan.logs == 8200
    assert loaded["rows"]["scenarios"] == plan.size.scenarios
    assert (
        loaded["rows"]["scenario_metrics"] == plan.size.scenarios * plan.size.metrics_per_scenario
    )
    assert loaded["rows"]["reports"] > 0 and loaded["rows"]["api_keys"] == plan.size.api_keys
    with psycopg.connect(database) as conn:

        def one(query: str):
            return conn.execute(query).fetchone()

        pii, payload_keys, sources = one(
            "SELECT avg(has_pii::int), avg((SELECT count(*) FROM jsonb_object_keys(payload))), "
            "count(DISTINCT source) FROM scenario_logs"
        )
        assert 0.04 <= pii <= 0.06
        assert payload_keys >= 8 and sources >= 10
        # skew: the busiest source and the busiest scenario dominate
        top_source, top_scenario = one(
            "SELECT (SELECT max(n) FROM (SELECT count(*)::float8 / 8200 AS n FROM scenario_logs "
            "GROUP BY source) s), (SELECT max(n) FROM (SELECT count(*)::float8 / 8200 AS n "
            "FROM scenario_logs GROUP BY scenario_id) t)"
        )
        assert top_source > 0.3 and top_scenario > 0.1
        # history reaches both archive policies
        old_logs, old_metrics, span = one(
            "SELECT (SELECT count(*) FROM scenario_logs WHERE received_at < "
            "'2026-01-01'::timestamptz - interval '365 days'), "
            '(SELECT count(*) FROM scenario_metrics WHERE "timestamp" < '
            "'2026-01-01'::timestamptz - interval '730 days'), "
            "(SELECT max(received_at) - min(received_at) FROM scenario_logs)"
        )
        assert old_logs > 0 and old_metrics > 0 and span.days > 700
        # metrics are time series: one regular step per scenario and metric
        irregular = one(
            "SELECT count(*) FROM (SELECT scenario_id, metric_name, "
            "count(DISTINCT step) AS steps FROM (SELECT scenario_id, metric_name, "
            '"timestamp" - lag("timestamp") OVER (PARTITION BY scenario_id, metric_type, '
            'metric_name ORDER BY "timestamp") AS step FROM scenario_metrics) s '
            "WHERE step IS NOT NULL GROUP BY 1, 2) x WHERE steps <> 1"
        )[0]
        assert irregular == 0
        statuses, regions = one(
            "SELECT count(DISTINCT status), count(DISTINCT region) FROM scenarios"
        )
        assert statuses == 4 and regions >= 5
        # ids follow time (the interleaved physical order of a live system)
        assert (
            one(
                "SELECT count(*) FROM (SELECT received_at < lag(received_at) OVER (ORDER BY id) "
                "AND scenario_id = lag(scenario_id) OVER (ORDER BY id) AS back FROM scenario_logs) "
                "x WHERE back"
            )[0]
            == 0
        )


def test_counts_scale_with_the_scale() -> None:
    small, big = sampledata.plan_for(0.5, anchor=ANCHOR), sampledata.plan_for(1, anchor=ANCHOR)
    assert big.logs == 2 * small.logs
    assert big.size.scenarios == 2 * small.size.scenarios
    assert big.size.api_keys == 2 * small.size.api_keys
    assert big.size.metrics_per_scenario == small.size.metrics_per_scenario  # per series
    assert sampledata.plan_for(0.0001).size.scenarios == 20  # a floor for tiny scales


@pytest.mark.parametrize("scale", ["abc", "0", "-1", "nan", "1e9"])
def test_bad_scale_is_a_one_line_usage_error(scale: str) -> None:
    with pytest.raises(UsageError):
        sampledata.parse_scale(scale)
    proc = run_dbtier(
        "sample-data", "--scale", scale, "--dsn", "postgresql://127.0.0.1:1/x", env=NO_CONFIG
    )
    assert proc.returncode == 2
    assert "--scale" in one_line_error(proc)


def test_refuses_tables_that_have_rows(database: str) -> None:
    migrations.migrate(database, SQL_DIR)
    proc = run_dbtier("sample-data", "--scale", "0.002", "--dsn", database, env=NO_CONFIG)
    assert proc.returncode == 0, proc.stderr
    again = run_dbtier("sample-data", "--scale", "0.002", "--dsn", database, env=NO_CONFIG)
    assert again.returncode == 2
    assert "empty tables" in one_line_error(again)
