"""The mockupAWS schema in files/sql: round trip, every object present, every index used."""

from __future__ import annotations

import psycopg
import pytest

from dbtier import migrations, sampledata, views

from .conftest import SQL_DIR

INDEXES = {
    # name: representative query (the application's query shape the index exists for)
    "idx_logs_scenario_received": (
        "SELECT id, received_at FROM scenario_logs WHERE scenario_id = %(s)s "
        "AND received_at >= now() - interval '90 days' ORDER BY received_at DESC LIMIT 50"
    ),
    "idx_logs_scenario_source": (
        "SELECT count(*) FROM scenario_logs WHERE scenario_id = %(s)s AND source = 'sqs'"
    ),
    # The shapes of docs/SCHEMA.md. Since 0008 idx_logs_scenario_received covers id, source,
    # size_bytes, has_pii and message_preview, a query that reads only those for a small scenario
    # is an index-only scan of it (the cheaper plan); these two read what only their index gives.
    "idx_logs_scenario_pii": (
        "SELECT count(*) FROM scenario_logs WHERE scenario_id = %(s)s AND has_pii"
    ),
    "idx_logs_scenario_size": (
        "SELECT * FROM scenario_logs WHERE scenario_id = %(s)s AND size_bytes >= 1000 "
        "ORDER BY size_bytes DESC LIMIT 10"
    ),
    "idx_metrics_scenario_time_type": (
        'SELECT "timestamp", value FROM scenario_metrics WHERE scenario_id = %(s)s '
        "AND \"timestamp\" >= now() - interval '90 days' AND metric_type = 'lambda' "
        'ORDER BY "timestamp" DESC'
    ),
    "idx_metrics_scenario_name": (
        "SELECT avg(value) FROM scenario_metrics WHERE scenario_id = %(s)s "
        "AND metric_name = 'tokens'"
    ),
    "idx_reports_scenario_created": (
        "SELECT id, file_path FROM reports WHERE scenario_id = %(s)s "
        "ORDER BY created_at DESC LIMIT 20"
    ),
    "idx_scenarios_status_created": (
        "SELECT id, updated_at FROM scenarios WHERE status = 'completed' "
        "ORDER BY created_at DESC LIMIT 20"
    ),
    "idx_scenarios_region_status": (
        "SELECT id, updated_at FROM scenarios WHERE region = 'eu-west-1' AND status = 'paused'"
    ),
    "idx_scenarios_active": (
        "SELECT id FROM scenarios WHERE status <> 'archived' ORDER BY updated_at DESC LIMIT 20"
    ),
    "idx_scenarios_running": (
        "SELECT id, name, region FROM scenarios WHERE status = 'running' "
        "ORDER BY updated_at LIMIT 20"
    ),
    "idx_logs_pii_only": (
        "SELECT id, scenario_id FROM scenario_logs WHERE has_pii ORDER BY received_at DESC "
        "LIMIT 100"
    ),
    "idx_logs_recent": (
        "SELECT id, source FROM scenario_logs WHERE received_at >= now() - interval '1 day' "
        "ORDER BY received_at DESC"
    ),
    "idx_apikeys_active": (
        "SELECT id, name FROM api_keys WHERE user_id = %(u)s AND is_active ORDER BY created_at DESC"
    ),
    "idx_apikeys_valid": (
        "SELECT id, key_prefix FROM api_keys WHERE is_active AND expires_at > now() "
        "ORDER BY expires_at LIMIT 100"
    ),
    "idx_scenarios_covering": (
        "SELECT id, name, status, region, total_requests, total_cost_estimate FROM scenarios "
        "ORDER BY created_at DESC LIMIT 25"
    ),
    "idx_logs_covering": (
        "SELECT count(*), sum(size_bytes), sum(token_count), max(received_at) "
        "FROM scenario_logs WHERE scenario_id = %(s)s"
    ),
}
MATVIEWS = {
    "mv_scenario_daily_stats": "SELECT * FROM mv_scenario_daily_stats WHERE scenario_id = %(s)s",
    "mv_monthly_costs": "SELECT * FROM mv_monthly_costs WHERE scenario_id = %(s)s",
    "mv_source_analytics": "SELECT * FROM mv_source_analytics WHERE source = 'sqs'",
}
TABLES = {
    "scenarios",
    "scenario_logs",
    "scenario_metrics",
    "reports",
    "api_keys",
    "query_performance_log",
    "scenario_logs_archive",
    "scenario_metrics_archive",
    "reports_archive",
    "archive_jobs",
    "archive_policies",
    "backup_history",
    "query_stats_sample",
    "query_stats_snapshot",
}
VIEWS = {"v_scenario_logs_all", "v_scenario_metrics_all", "v_archive_statistics"}


def public_objects(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relkind::text, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchall()
        rows += conn.execute(
            "SELECT 'f', p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        ).fetchall()
    return set(rows)


@pytest.fixture
def migrated(database: str) -> str:
    migrations.migrate(database, SQL_DIR)
    return database


def test_migrations_round_trip_up_down_up(database: str) -> None:
    files = migrations.load_migrations(SQL_DIR)
    assert len(files) >= 3
    migrations.migrate(database, SQL_DIR)
    once = public_objects(database)
    assert migrations.migrate(database, SQL_DIR).steps == []

    down = migrations.migrate(database, SQL_DIR, "down", 0)
    assert len(down.steps) == len(files)
    assert public_objects(database) == set(), "a down file left objects behind"

    migrations.migrate(database, SQL_DIR)
    assert public_objects(database) == once


def test_every_table_view_index_exists_and_is_valid(migrated: str) -> None:
    with psycopg.connect(migrated) as conn:
        rels = dict(
            conn.execute(
                "SELECT c.relname, c.relkind::text FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            ).fetchall()
        )
        unique_mv_indexes = {
            r[0]
            for r in conn.execute(
                "SELECT t.relname FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relkind = 'm' AND i.indisunique AND i.indpred IS NULL"
            )
        }
        partitioned = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid"
            )
        }
        policies = dict(
            conn.execute("SELECT table_name, archive_after_days FROM archive_policies").fetchall()
        )
    assert migrations.invalid_indexes(psycopg.connect(migrated)) == []
    for name in INDEXES:
        assert rels.get(name) == "i", f"index {name} missing"
    for name in TABLES:
        assert rels.get(name) in ("r", "p"), f"table {name} missing"
    for name in VIEWS:
        assert rels.get(name) == "v", f"view {name} missing"
    for name in MATVIEWS:
        assert rels.get(name) == "m", f"materialized view {name} missing"
    assert unique_mv_indexes == set(MATVIEWS), "each MV needs a full unique index"
    assert {"scenario_logs_archive", "scenario_metrics_archive"} <= partitioned
    assert policies == {"scenario_logs": 365, "scenario_metrics": 730, "reports": 180}


@pytest.fixture
def with_data(migrated: str) -> dict[str, str]:
    sampledata.load(
        migrated,
        sampledata.SampleSize(
            scenarios=400, logs_per_scenario=50, metrics_per_scenario=50, api_keys=400
        ),
    )
    with psycopg.connect(migrated) as conn:
        scenario = conn.execute("SELECT id FROM scenarios ORDER BY created_at LIMIT 1").fetchone()[
            0
        ]
        user = conn.execute("SELECT user_id FROM api_keys LIMIT 1").fetchone()[0]
    with psycopg.connect(migrated, autocommit=True) as conn:
        # Visibility map set, as on a live table after autovacuum: index-only scans look cheap.
        conn.execute("VACUUM ANALYZE")
    return {"dsn": migrated, "s": scenario, "u": user}


def plan_of(dsn: str, query: str, params: dict) -> str:
    with psycopg.connect(dsn) as conn:
        # Sample tables are small; without this the planner rightly prefers a seq scan for
        # some of them. Index choice among the indexes is still the planner's own.
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute(f"EXPLAIN {query}", params).fetchall()
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("index", sorted(INDEXES))
def test_representative_query_uses_index(with_data: dict, index: str) -> None:
    params = {k: v for k, v in with_data.items() if k != "dsn"}
    plan = plan_of(with_data["dsn"], INDEXES[index], params)
    assert index in plan, plan


def test_materialized_views_refresh_concurrently_and_are_indexed(with_data: dict) -> None:
    results = views.refresh(with_data["dsn"])
    assert [r["mode"] for r in results] == ["concurrently"] * 3
    with psycopg.connect(with_data["dsn"]) as conn:
        daily = conn.execute("SELECT count(*) FROM mv_scenario_daily_stats").fetchone()[0]
        logs = conn.execute(
            "SELECT count(DISTINCT (scenario_id, (received_at AT TIME ZONE 'UTC')::date)) "
            "FROM scenario_logs"
        ).fetchone()[0]
    assert daily == logs  # the refresh picked up the sample rows
    for name, query in MATVIEWS.items():
        plan = plan_of(with_data["dsn"], query, {"s": with_data["s"]})
        assert f"{name}_key" in plan, plan
