"""`dbtier bench queries`: the eleven queries of the v1.0.0 plan (DB-001), before and after.

Before = the baseline schema (migration 0001 only); after = every migration (the 17 indexes of
0002, the materialized views of 0003, ...), built on the loaded data as in production. Both
databases hold the same rows (`after` is created from `before` as a template), so the only
difference is the schema. Each query is issued as the application would issue it (a prepared
statement, parameters rotated over typical and skewed scenarios); before and after alternate
run by run. EXPLAIN (ANALYZE, BUFFERS) of both sides is kept, and the "after" plan is checked
for the index or view the query was meant to use.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import db, migrations, sampledata, views
from .errors import DbtierError, UsageError, first_line


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    sql: str  # as the application issues it (after; also before unless before_sql)
    intended: tuple[str, ...]  # index or view the "after" plan should use
    params: str  # which parameter set rotates: see _param_sets
    target_pct: float | None = None  # improvement the plan expected (issue 12)
    before_sql: str | None = None  # the equivalent query on the baseline schema
    per_item_sql: str | None = None  # N+1: run once per row of `sql`
    per_item_sql2: str | None = None


PAGE = (
    "SELECT id, name, status, region, total_requests, total_cost_estimate, created_at "
    "FROM scenarios ORDER BY created_at DESC LIMIT 20 OFFSET %(offset)s"
)

QUERIES: tuple[Query, ...] = (
    Query(
        "scenario_list",
        "Scenario list, newest first, one page (pagination)",
        PAGE,
        ("idx_scenarios_covering",),
        "pages",
        target_pct=87,
    ),
    Query(
        "scenario_by_status",
        "Scenarios of one status, newest first (dashboard filter)",
        "SELECT id, name, region, created_at, total_cost_estimate FROM scenarios "
        "WHERE status = %(status)s ORDER BY created_at DESC LIMIT 20",
        # for 'running' (the newest scenarios) walking the covering index by created_at and
        # filtering is as good: the planner may take either
        ("idx_scenarios_status_created", "idx_scenarios_covering"),
        "statuses",
    ),
    Query(
        "scenario_with_relations_n1",
        "A page of scenarios with their log and report summary: N+1 (1 + 2 x 20 queries)",
        PAGE,
        ("idx_logs_covering", "idx_logs_scenario_received"),
        "pages",
        per_item_sql="SELECT count(*), max(received_at) FROM scenario_logs "
        "WHERE scenario_id = %(scenario)s",
        per_item_sql2="SELECT count(*), max(created_at) FROM reports "
        "WHERE scenario_id = %(scenario)s",
    ),
    Query(
        "scenario_with_relations_join",
        "The same page with its summaries in one query (join)",
        f"""WITH page AS ({PAGE})
SELECT p.id, p.name, p.status, p.region, p.created_at, l.logs, l.last_log, r.reports,
       r.last_report
FROM page p
LEFT JOIN (SELECT scenario_id, count(*) AS logs, max(received_at) AS last_log
           FROM scenario_logs WHERE scenario_id IN (SELECT id FROM page)
           GROUP BY scenario_id) l ON l.scenario_id = p.id
LEFT JOIN (SELECT scenario_id, count(*) AS reports, max(created_at) AS last_report
           FROM reports WHERE scenario_id IN (SELECT id FROM page)
           GROUP BY scenario_id) r ON r.scenario_id = p.id
ORDER BY p.created_at DESC""",
        ("idx_logs_covering", "idx_logs_scenario_received"),
        "pages",
    ),
    Query(
        "logs_by_scenario",
        "The newest 50 logs of a scenario",
        "SELECT id, received_at, source, message_preview, size_bytes, has_pii "
        "FROM scenario_logs WHERE scenario_id = %(scenario)s "
        "ORDER BY received_at DESC LIMIT 50",
        ("idx_logs_scenario_received",),
        "scenarios",
    ),
    Query(
        "logs_by_scenario_and_date",
        "Logs of a scenario in a 7-day window, newest first (with payload)",
        "SELECT id, received_at, source, message_preview, size_bytes, has_pii, payload "
        "FROM scenario_logs WHERE scenario_id = %(scenario)s "
        "AND received_at >= %(since)s AND received_at < %(until)s "
        "ORDER BY received_at DESC LIMIT 100",
        ("idx_logs_scenario_received",),
        "scenarios",
        target_pct=85,
    ),
    Query(
        "logs_aggregate",
        "Per-source summary of a scenario's logs",
        "SELECT source, count(*) AS logs, sum(size_bytes) AS bytes, "
        "round(avg(size_bytes)) AS avg_bytes, count(*) FILTER (WHERE has_pii) AS pii, "
        "sum(token_count) AS tokens FROM scenario_logs WHERE scenario_id = %(scenario)s "
        "GROUP BY source ORDER BY logs DESC",
        ("idx_logs_covering", "idx_logs_scenario_source"),
        "scenarios",
    ),
    Query(
        "metrics_time_series",
        "One metric of a scenario over its last 30 days, in time order (a chart)",
        'SELECT "timestamp", value FROM scenario_metrics WHERE scenario_id = %(scenario)s '
        "AND metric_type = %(mtype)s AND metric_name = %(mname)s "
        'AND "timestamp" >= %(msince)s AND "timestamp" < %(muntil)s ORDER BY "timestamp"',
        ("idx_metrics_scenario_time_type",),
        "scenarios",
        target_pct=83,
    ),
    Query(
        "pii_detection_query",
        "Security audit: the newest 100 logs with PII across all scenarios, last 30 days",
        "SELECT id, scenario_id, received_at, source, message_preview FROM scenario_logs "
        "WHERE has_pii AND received_at >= %(pii_since)s ORDER BY received_at DESC LIMIT 100",
        ("idx_logs_pii_only",),
        "windows",
        target_pct=95,
    ),
    Query(
        "reports_by_scenario",
        "Report listing of a scenario, newest first",
        "SELECT id, created_at, report_format, file_path, file_size_bytes FROM reports "
        "WHERE scenario_id = %(scenario)s ORDER BY created_at DESC LIMIT 20",
        ("idx_reports_scenario_created",),
        "scenarios",
        target_pct=75,
    ),
    Query(
        "materialized_view",
        "Daily stats of a scenario, last 90 days of activity (view vs aggregate of the logs)",
        "SELECT day, log_count, total_size_bytes, pii_count, distinct_sources "
        "FROM mv_scenario_daily_stats WHERE scenario_id = %(scenario)s "
        "AND day >= %(since_day)s ORDER BY day",
        ("mv_scenario_daily_stats_key", "mv_scenario_daily_stats"),
        "scenarios",
        target_pct=90,
        before_sql="SELECT (received_at AT TIME ZONE 'UTC')::date AS day, count(*) AS log_count, "
        "sum(size_bytes)::bigint AS total_size_bytes, "
        "count(*) FILTER (WHERE has_pii) AS pii_count, "
        "count(DISTINCT source) AS distinct_sources FROM scenario_logs "
        "WHERE scenario_id = %(scenario)s AND received_at >= %(since_day)s::timestamp "
        "AT TIME ZONE 'UTC' GROUP BY 1 ORDER BY 1",
    ),
    Query(
        "count_by_status",
        "Number of scenarios per status",
        "SELECT status, count(*) FROM scenarios GROUP BY status ORDER BY status",
        ("idx_scenarios_status_created", "idx_scenarios_region_status"),
        "none",
    ),
)


@dataclass
class Side:
    dsn: str
    conn: psycopg.Connection | None = None
    times: dict[str, list[float]] = field(default_factory=dict)


def _dsn_for(dsn: str, dbname: str) -> str:
    return make_conninfo(db.resolve_dsn(dsn), dbname=dbname)


def _param_sets(conn: psycopg.Connection, anchor: datetime) -> dict[str, list[dict]]:
    """Parameters the application would send: typical scenarios (around the median volume) and
    skewed ones (the largest), each with a window over its own recent activity."""
    rows = conn.execute(
        "SELECT scenario_id, count(*) AS n, max(received_at) AS last FROM scenario_logs "
        "GROUP BY scenario_id ORDER BY n DESC, scenario_id"
    ).fetchall()
    if not rows:
        raise UsageError("no sample data loaded: the query benchmark needs scenario_logs rows")
    heavy = rows[:2]
    mid = len(rows) // 2
    typical = rows[max(0, mid - 3) : mid + 3][:6]
    chosen = [heavy[0], *typical[:3], heavy[-1], *typical[3:]]
    series = conn.execute(
        "SELECT DISTINCT metric_type, metric_name FROM scenario_metrics ORDER BY 1, 2"
    ).fetchall() or [("lambda", "duration")]
    scenarios = []
    for i, (sid, _n, last) in enumerate(chosen):
        mtype, mname = series[i % len(series)]
        mlast = (
            conn.execute(
                'SELECT max("timestamp") FROM scenario_metrics WHERE scenario_id = %s', (sid,)
            ).fetchone()[0]
            or last
        )
        scenarios.append(
            {
                "scenario": sid,
                "since": last - timedelta(days=7),
                "until": last + timedelta(seconds=1),
                "mtype": mtype,
                "mname": mname,
                "msince": mlast - timedelta(days=30),
                "muntil": mlast + timedelta(seconds=1),
                "since_day": (last - timedelta(days=90)).date(),
            }
        )
    return {
        "scenarios": scenarios,
        "pages": [{"offset": o} for o in (0, 20, 40, 100, 200)],
        "statuses": [{"status": s} for s in ("running", "completed", "paused", "archived")],
        "windows": [{"pii_since": anchor - timedelta(days=d)} for d in (30, 7, 30, 14)],
        "none": [{}],
    }


def _run_once(conn: psycopg.Connection, q: Query, text: str, params: dict) -> None:
    rows = conn.execute(text, params, prepare=True).fetchall()
    if q.per_item_sql:
        for row in rows:
            conn.execute(q.per_item_sql, {"scenario": row[0]}, prepare=True).fetchall()
            if q.per_item_sql2:
                conn.execute(q.per_item_sql2, {"scenario": row[0]}, prepare=True).fetchall()


def _walk(plan: dict, found: list[str]) -> None:
    for key in ("Index Name", "Relation Name"):
        if key in plan and plan[key] not in found:
            found.append(plan[key])
    for child in plan.get("Plans", []):
        _walk(child, found)


def _explain(
    conn: psycopg.Connection, text: str, params: dict, out: Path, stem: str
) -> tuple[list[str], float, dict]:
    """EXPLAIN (ANALYZE, BUFFERS) as JSON and text into out/stem.{json,txt}; returns the
    relations and indexes the plan touches, and the server's execution time."""
    raw = conn.execute(
        sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(text), params
    ).fetchone()[0]
    doc = raw if isinstance(raw, list) else json.loads(raw)
    lines = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + sql.SQL(text), params).fetchall()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / f"{stem}.txt").write_text("\n".join(r[0] for r in lines) + "\n")
    found: list[str] = []
    _walk(doc[0]["Plan"], found)
    return found, float(doc[0].get("Execution Time", 0.0)), doc[0]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[rank]


def _summary(times: list[float]) -> dict[str, float]:
    ms = [t * 1000 for t in times]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def _check_createdb(conn: psycopg.Connection) -> None:
    ok = conn.execute(
        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not ok or not ok[0]:
        user = conn.execute("SELECT current_user").fetchone()[0]
        raise DbtierError(
            f"bench queries creates two scratch databases, but role {user} lacks CREATEDB "
            f"(ALTER ROLE {user} CREATEDB, or pass --dsn of a role that has it)",
            exit_code=2,
        )


def _drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _drop_pair(dsn: str | None, prefix: str) -> None:
    try:
        with db.connect(dsn, autocommit=True) as admin:
            for name in (f"{prefix}_after", f"{prefix}_before"):
                _drop(admin, name)
    except (DbtierError, psycopg.Error):
        pass  # cleanup after a failure must not hide the failure


def prepare(
    dsn: str | None,
    *,
    scale: float,
    prefix: str,
    migrations_dir: str | Path,
    seed: int = 42,
    anchor: datetime | None = None,
    report: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Create <prefix>_before (0001 + sample data) and <prefix>_after (its copy, migrated)."""
    before, after = f"{prefix}_before", f"{prefix}_after"
    with db.connect(dsn, autocommit=True) as admin:
        _check_createdb(admin)
        for name in (after, before):
            _drop(admin, name)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(before)))
    before_dsn, after_dsn = _dsn_for(dsn or "", before), _dsn_for(dsn or "", after)
    report(f"{before}: migrating to 0001 (baseline schema)")
    migrations.migrate(before_dsn, migrations_dir, "up", target=1)
    loaded = sampledata.load_scale(before_dsn, scale, seed=seed, anchor=anchor, report=report)
    report(f"{after}: copy of {before}, then every migration (indexes built on the data)")
    started = time.monotonic()
    with db.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(after), sql.Identifier(before)
            )
        )
    copy_seconds = time.monotonic() - started
    started = time.monotonic()
    result = migrations.migrate(after_dsn, migrations_dir, "up")
    migrate_seconds = time.monotonic() - started
    steps = {s["file"]: s.get("execution_ms") for s in result.steps}
    views.refresh(after_dsn)
    with db.connect(after_dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size_after = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    with db.connect(before_dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    report(f"{after}: migrated in {migrate_seconds:.1f} s ({size_after / 1e6:,.0f} MB)")
    return {
        "before": {"name": before, "dsn": before_dsn, "bytes": size_before},
        "after": {"name": after, "dsn": after_dsn, "bytes": size_after},
        "load": loaded,
        "template_copy_seconds": round(copy_seconds, 2),
        "migrate_seconds": round(migrate_seconds, 2),
        "migration_ms": steps,
    }


def measure(
    before_dsn: str,
    after_dsn: str,
    out_dir: Path,
    *,
    reps: int = 20,
    budget: float = 10.0,
    anchor: datetime | None = None,
    only: list[str] | None = None,
    report: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """Time every query on both sides, alternating; EXPLAIN both; return one dict per query."""
    anchor = anchor or sampledata.default_anchor()
    wanted = [q for q in QUERIES if not only or q.name in only]
    results = []
    with (
        db.connect(before_dsn, autocommit=True) as bconn,
        db.connect(after_dsn, autocommit=True) as aconn,
    ):
        for conn in (bconn, aconn):
            conn.execute("SET jit = off")  # an OLTP setting; JIT compile time would dominate
        sets = _param_sets(bconn, anchor)
        for q in wanted:
            params = sets[q.params]
            texts = {"before": q.before_sql or q.sql, "after": q.sql}
            conns = {"before": bconn, "after": aconn}
            times: dict[str, list[float]] = {"before": [], "after": []}
            report(f"query {q.name}: warm-up")
            slowest = 0.0
            for side in ("before", "after"):
                for n, p in enumerate(params[:2]):
                    t0 = time.perf_counter()
                    _run_once(conns[side], q, texts[side], p)
                    slowest = max(slowest, time.perf_counter() - t0)
                    if n == 0 and slowest > 1.0:
                        break  # a slow query: one warm-up run is enough
            # Sub-10 ms queries: ten times the runs (within the budget), so that a burst of
            # load on a shared machine moves the median less.
            runs = max(reps, 1) * (10 if slowest < 0.01 else 1)
            started = time.monotonic()
            for i in range(runs):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                p = params[i % len(params)]
                for side in order:
                    t0 = time.perf_counter()
                    _run_once(conns[side], q, texts[side], p)
                    times[side].append(time.perf_counter() - t0)
                if i >= 4 and time.monotonic() - started > budget:
                    break
            explain: dict[str, Any] = {}
            used: dict[str, list[str]] = {}
            for side in ("before", "after"):
                text, p = texts[side], params[0]
                if q.per_item_sql:  # the N of N+1 is what an index changes
                    text, p = q.per_item_sql, {"scenario": sets["scenarios"][0]["scenario"]}
                found, exec_ms, _doc = _explain(conns[side], text, p, out_dir, f"{q.name}.{side}")
                used[side] = found
                explain[side] = {
                    "json": f"{q.name}.{side}.json",
                    "text": f"{q.name}.{side}.txt",
                    "execution_ms": round(exec_ms, 3),
                }
            uses = [name for name in q.intended if name in used["after"]]
            if not uses:
                # Diagnose: would the intended index win with SSD page costs?
                text, p = texts["after"], params[0]
                if q.per_item_sql:
                    text, p = q.per_item_sql, {"scenario": sets["scenarios"][0]["scenario"]}
                with aconn.transaction():
                    aconn.execute("SET LOCAL random_page_cost = 1.1")
                    found, exec_ms, _doc = _explain(
                        aconn, text, p, out_dir, f"{q.name}.after-rpc1.1"
                    )
                explain["after_random_page_cost_1_1"] = {
                    "text": f"{q.name}.after-rpc1.1.txt",
                    "json": f"{q.name}.after-rpc1.1.json",
                    "execution_ms": round(exec_ms, 3),
                    "uses": [name for name in q.intended if name in found],
                    "relations": found,
                }
            b, a = _summary(times["before"]), _summary(times["after"])
            ratio = a["p50_ms"] / b["p50_ms"] if b["p50_ms"] else None
            improvement = round((1 - ratio) * 100, 1) if ratio is not None else None
            entry = {
                "name": q.name,
                "title": q.title,
                "sql": q.sql,
                "before_sql": q.before_sql,
                "per_item_sql": [s for s in (q.per_item_sql, q.per_item_sql2) if s],
                "params": q.params,
                "before": b,
                "after": a,
                "ratio": round(ratio, 4) if ratio is not None else None,
                "improvement_pct": improvement,
                "target_pct": q.target_pct,
                "met": (
                    None
                    if q.target_pct is None or improvement is None
                    else improvement >= q.target_pct
                ),
                "intended": list(q.intended),
                "after_uses": uses,
                "uses_intended": bool(uses),
                "plan_relations": used,
                "explain": explain,
            }
            results.append(entry)
            how = f"uses {', '.join(uses)}" if uses else "NO intended index"
            report(
                f"query {q.name}: p50 {b['p50_ms']:.3f} -> {a['p50_ms']:.3f} ms "
                f"({_pct(improvement)}), {how}"
            )
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{-value:+.1f} %"


def run(
    dsn: str | None,
    *,
    scale: float,
    out_dir: str | Path,
    prefix: str = "dbtier_bench",
    migrations_dir: str | Path,
    reps: int = 20,
    budget: float = 10.0,
    keep: bool = False,
    seed: int = 42,
    anchor: datetime | None = None,
    report: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The whole benchmark: prepare both databases, measure, drop them unless `keep`."""
    scale = sampledata.parse_scale(scale)
    if reps < 1:
        raise UsageError(f"--reps must be >= 1 (got {reps})")
    if not prefix.replace("_", "").isalnum() or len(prefix) > 40:
        raise UsageError(f"--prefix must be letters, digits and _ (at most 40; got {prefix!r})")
    anchor = anchor or sampledata.default_anchor()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {out}: {exc.strerror}") from None
    started = time.monotonic()
    try:
        databases = prepare(
            dsn,
            scale=scale,
            prefix=prefix,
            migrations_dir=migrations_dir,
            seed=seed,
            anchor=anchor,
            report=report,
        )
    except BaseException:
        if not keep:  # a half-made pair of scratch databases is no use to anyone
            _drop_pair(dsn, prefix)
        raise
    try:
        queries = measure(
            databases["before"]["dsn"],
            databases["after"]["dsn"],
            out,
            reps=reps,
            budget=budget,
            anchor=anchor,
            report=report,
        )
    except psycopg.Error as exc:
        raise DbtierError(f"query benchmark failed: {first_line(exc)}") from None
    finally:
        if not keep:
            _drop_pair(dsn, prefix)
    result = {
        "scale": scale,
        "seed": seed,
        "anchor": anchor.isoformat(),
        "reps": reps,
        "kept": keep,
        "databases": {
            side: {"name": databases[side]["name"], "bytes": databases[side]["bytes"]}
            for side in ("before", "after")
        },
        "load": databases["load"],
        "template_copy_seconds": databases["template_copy_seconds"],
        "migrate_seconds": databases["migrate_seconds"],
        "migration_ms": databases["migration_ms"],
        "out_dir": str(out),
        "queries": queries,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "queries.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def text_table(result: dict[str, Any]) -> str:
    head = (
        f"{'query':<30} {'before p50':>10} {'p95':>9} {'after p50':>10} {'p95':>9} "
        f"{'change':>9} {'target':>7} {'':<6} index/view used (after)"
    )
    lines = [
        f"scale {result['scale']:g}: {result['load']['bytes'] / 1e6:,.0f} MB loaded in "
        f"{result['load']['load_seconds']:.1f} s; indexes and views built in "
        f"{result['migrate_seconds']:.1f} s; times in ms (client round trip, prepared)",
        head,
        "-" * len(head),
    ]
    for q in result["queries"]:
        target = f"-{q['target_pct']:g} %" if q["target_pct"] is not None else ""
        met = "" if q["met"] is None else ("met" if q["met"] else "MISSED")
        used = ", ".join(q["after_uses"]) or "NOT USED: " + ", ".join(
            n for n in q["plan_relations"]["after"]
        )
        lines.append(
            f"{q['name']:<30} {q['before']['p50_ms']:>10.3f} {q['before']['p95_ms']:>9.3f} "
            f"{q['after']['p50_ms']:>10.3f} {q['after']['p95_ms']:>9.3f} "
            f"{_pct(q['improvement_pct']):>9} {target:>7} {met:<6} {used}"
        )
    lines.append(f"EXPLAIN (ANALYZE, BUFFERS) of both sides: {result['out_dir']}/")
    return "\n".join(lines)
