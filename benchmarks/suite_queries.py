"""The eleven queries of the v1.0.0 plan (DB-001), before and after the indexes and views.

A scratch PostgreSQL 15 cluster; `dbtier bench queries` in-process (src/dbtier/benchqueries.py):
<prefix>_before = migration 0001 + the realistic sample data at scale 1 (0.01 with --quick),
<prefix>_after = a copy of it with every migration applied (indexes built on the data). Per
query: p50/p95 of the client round trip (prepared statements, parameters rotated over typical
and skewed scenarios, before/after alternating), the server's execution time from EXPLAIN
(ANALYZE, BUFFERS), whether the after plan uses the intended index or view, and the plan's
target (issue 12). EXPLAIN files go to <assets>/explain, the chart to <assets>/queries.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks import common
from dbtier import benchqueries
from dbtier.pgcluster import LocalCluster

NAME = "queries"
TITLE = "Queries before/after the v1.0.0 indexes and materialized views (DB-001)"

SETTINGS = {
    "shared_buffers": "256MB",
    "effective_cache_size": "4GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "50",
    # The planner costs roles/postgresql and the RDS parameter group set (SSD storage).
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
}
PLAN_TARGETS = {  # the plan's "expected improvements" table, per query
    "scenario_list": "Scenario list with filters",
    "logs_by_scenario_and_date": "Logs by scenario + date",
    "metrics_time_series": "Metrics time-series",
    "pii_detection_query": "PII detection queries",
    "reports_by_scenario": "Report generation (listing)",
    "materialized_view": "Materialized view queries",
}


def run(ctx: common.Context) -> dict:
    scale = 0.01 if ctx.quick else 1.0
    reps = 5 if ctx.quick else 20
    budget = 2.0 if ctx.quick else 15.0
    explain_dir = ctx.assets / "explain"
    explain_dir.mkdir(parents=True, exist_ok=True)
    base = ctx.work / "queries-pg"
    cluster = LocalCluster(base=base, settings=SETTINGS)
    common.progress(f"queries: scratch cluster on 127.0.0.1:{cluster.port}, scale {scale:g}")
    cluster.init()
    cluster.start()
    try:
        result = benchqueries.run(
            cluster.dsn(),
            scale=scale,
            out_dir=explain_dir,
            prefix="bench_q",
            migrations_dir=common.ROOT / "files" / "sql",
            reps=reps,
            budget=budget,
            report=lambda m: common.progress(f"queries: {m}"),
        )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    (explain_dir / "queries.json").unlink(missing_ok=True)  # the section carries it all
    targets = []
    for q in result["queries"]:
        if q["target_pct"] is None or q["improvement_pct"] is None:
            continue
        targets.append(
            {
                "query": q["name"],
                **common.target(
                    f"{q['name']}: at least -{q['target_pct']:g} % p50 "
                    f"({PLAN_TARGETS.get(q['name'], q['title'])})",
                    q["improvement_pct"],
                    q["target_pct"],
                    lower_is_better=False,
                ),
            }
        )
    scale_arg = f"{scale:g}"
    return {
        "scale": scale,
        "reps": reps,
        "budget_seconds": budget,
        "server_settings": SETTINGS,
        "cpus": os.cpu_count(),
        "load": result["load"],
        "databases": result["databases"],
        "template_copy_seconds": result["template_copy_seconds"],
        "migrate_seconds": result["migrate_seconds"],
        "migration_ms": result["migration_ms"],
        "anchor": result["anchor"],
        "seed": result["seed"],
        "queries": result["queries"],
        "targets": targets,
        "seconds": result["seconds"],
        "commands": [
            f"dbtier bench queries --dsn postgresql://postgres@127.0.0.1:PORT/postgres "
            f"--scale {scale_arg} --reps {reps} --budget {budget:g} --out explain --json",
            f"dbtier sample-data --scale {scale_arg} --dsn postgresql://.../DB "
            "(into a migrated, empty database)",
        ],
    }


def _chart(section: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = section["queries"]
    names = [q["name"] for q in queries]
    before = [max(q["before"]["p50_ms"], 1e-3) for q in queries]
    after = [max(q["after"]["p50_ms"], 1e-3) for q in queries]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    ys = range(len(names))
    height = 0.38
    ax.barh(
        [y - height / 2 for y in ys], before, height, label="before (0001 only)", color="#c0504d"
    )
    ax.barh(
        [y + height / 2 for y in ys],
        after,
        height,
        label="after (0002 + 0003 ...)",
        color="#4f81bd",
    )
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (client round trip, log scale)")
    ax.set_title(f"DB-001 queries at sample-data scale {section['scale']:g}: before vs after")
    for y, q in zip(ys, queries, strict=True):
        if q["improvement_pct"] is not None:
            ax.annotate(
                f"{-q['improvement_pct']:+.0f} %",
                (max(q["before"]["p50_ms"], q["after"]["p50_ms"]), y),
                xytext=(4, -3),
                textcoords="offset points",
                fontsize=8,
            )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _why(q: dict) -> str:
    """What the measurement says about a missed target."""
    b_srv = q["explain"]["before"]["execution_ms"]
    a_srv = q["explain"]["after"]["execution_ms"]
    parts = [
        f"**{q['name']}**: -{q['target_pct']:g} % expected, {-q['improvement_pct']:+.1f} % "
        f"measured (p50 {q['before']['p50_ms']:.3f} → {q['after']['p50_ms']:.3f} ms)."
    ]
    if not q["uses_intended"]:
        parts.append(
            f"The after plan does not use {' / '.join(q['intended'])}; it reads "
            f"{', '.join(q['plan_relations']['after'])}."
        )
    if b_srv and a_srv is not None:
        parts.append(
            f"On the server (EXPLAIN ANALYZE) it takes {b_srv:.3f} ms before and "
            f"{a_srv:.3f} ms after ({(a_srv / b_srv - 1) * 100:+.0f} %)."
        )
        if q["after"]["p50_ms"] > 3 * a_srv:
            parts.append(
                "The after figure is mostly the client round trip (protocol, driver, "
                "scheduling on a busy machine), which no index removes."
            )
        if b_srv < 1.0:
            parts.append(
                "The before side is already cheap: the table is small at this scale, and a "
                "sequential scan of a few pages costs about what an index lookup does."
            )
    return " ".join(parts)


def render(section: dict, ctx: common.Context) -> str:
    png = ctx.assets / "queries.png"
    _chart(section, png)
    load = section["load"]
    rows = load["rows"]
    lines = [
        f"Sample data at scale {section['scale']:g} (`dbtier sample-data --scale "
        f"{section['scale']:g}`): {rows['scenarios']:,} scenarios, "
        f"{rows['scenario_logs']:,} logs, {rows['scenario_metrics']:,} metric points, "
        f"{rows['reports']:,} reports, {rows['api_keys']:,} API keys; "
        f"{load['bytes'] / 1e6:,.0f} MB (tables and indexes of the baseline schema), loaded in "
        f'{load["load_seconds"]:.1f} s. The "after" database is a copy '
        f"(`CREATE DATABASE ... TEMPLATE`, {section['template_copy_seconds']:.1f} s) with every "
        f"migration applied on the data ({section['migrate_seconds']:.1f} s): "
        f"{section['databases']['before']['bytes'] / 1e6:,.0f} MB before, "
        f"{section['databases']['after']['bytes'] / 1e6:,.0f} MB after.",
        "",
        "Times are the client round trip of a prepared statement (what the application sees), "
        f"{section['reps']} runs per side ({section['reps'] * 10} for queries under 10 ms; "
        f"at most {section['budget_seconds']:g} s per query, at least 5 runs), before and after "
        "alternating, parameters rotated over the largest "
        "and median-size scenarios; *server* is the execution time EXPLAIN (ANALYZE, BUFFERS) "
        "reports for the first parameter set. Change = after p50 / before p50 - 1.",
        "",
        f"![before/after p50 per query]({ctx.assets.name}/queries.png)",
        "",
        "| query | before p50 / p95 ms | after p50 / p95 ms | server before → after ms "
        "| change | target | index/view used (after) | EXPLAIN |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for q in section["queries"]:
        target = ""
        if q["target_pct"] is not None:
            target = f"-{q['target_pct']:g} % " + ("met" if q["met"] else "**MISSED**")
        used = ", ".join(f"`{n}`" for n in q["after_uses"]) or (
            "**not used** (" + ", ".join(f"`{n}`" for n in q["plan_relations"]["after"]) + ")"
        )
        ex = q["explain"]
        link = "/".join((ctx.assets.name, "explain"))
        lines.append(
            f"| {q['name']} | {q['before']['p50_ms']:.3f} / {q['before']['p95_ms']:.3f} "
            f"| {q['after']['p50_ms']:.3f} / {q['after']['p95_ms']:.3f} "
            f"| {ex['before']['execution_ms']:.3f} → {ex['after']['execution_ms']:.3f} "
            f"| {-q['improvement_pct']:+.1f} % | {target} | {used} "
            f"| [before]({link}/{ex['before']['text']}) · [after]({link}/{ex['after']['text']}) "
            f"([json]({link}/{ex['after']['json']})) |"
        )
    missed = [q for q in section["queries"] if q["met"] is False]
    met = [t for t in section["targets"] if t["met"]]
    lines += [
        "",
        f"Targets of the plan: {len(met)} of {len(section['targets'])} met.",
    ]
    if missed:
        lines += ["", "Missed targets, and why:", ""]
        lines += [f"- {_why(q)}" for q in missed]
    unused = [q for q in section["queries"] if not q["uses_intended"]]
    if unused:
        lines += [
            "",
            "After plans that do not use the intended index (EXPLAIN runs with the first "
            "parameter set, the largest scenario: the skewed case):",
            "",
        ]
        for q in unused:
            ex = q["explain"]
            note = (
                f"- **{q['name']}**: intended {' / '.join(f'`{n}`' for n in q['intended'])}, "
                f"the plan reads {', '.join(f'`{n}`' for n in q['plan_relations']['after'])} "
                f"({ex['after']['execution_ms']:.3f} ms on the server)."
            )
            alt = ex.get("after_random_page_cost_1_1")
            if alt:
                link = f"{ctx.assets.name}/explain/{alt['text']}"
                note += (
                    f" With `random_page_cost = 1.1` (SSD storage; the default 4 models "
                    f"spinning disks) it reads {', '.join(f'`{n}`' for n in alt['relations'])} "
                    f"in {alt['execution_ms']:.3f} ms ([plan]({link}))."
                )
            lines.append(note)
    n1 = {q["name"]: q for q in section["queries"]}
    if "scenario_with_relations_n1" in n1 and "scenario_with_relations_join" in n1:
        a, b = n1["scenario_with_relations_n1"], n1["scenario_with_relations_join"]
        lines += [
            "",
            f"N+1 vs one join (a page of 20 scenarios with their log and report summaries): "
            f"{a['after']['p50_ms']:.2f} ms as 41 queries vs {b['after']['p50_ms']:.2f} ms as "
            f"one, after the indexes ({a['before']['p50_ms']:.1f} vs "
            f"{b['before']['p50_ms']:.1f} ms before).",
        ]
    lines += ["", "Reproduce:", ""] + [f"    {c}" for c in section["commands"]]
    return "\n".join(lines) + "\n"
