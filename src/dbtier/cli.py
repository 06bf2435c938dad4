"""The `dbtier` command line. Every failure is one line on stderr and a documented exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, views
from .errors import EXIT_OK, DbtierError, Terminated, UsageError, first_line

if TYPE_CHECKING:
    from . import migrations


def default_migrations_dir() -> str:
    """$DBTIER_MIGRATIONS, else files/sql of the checkout, else the installed copy."""
    if env := os.environ.get("DBTIER_MIGRATIONS"):
        return env
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "files" / "sql", Path("/opt/dbtier/sql")):
        if candidate.is_dir():
            return str(candidate)
    return "files/sql"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text)


def _steps_text(title: str, result: migrations.RunResult) -> str:
    lines = [f"{title}: version {result.before_version} -> {result.after_version}"]
    for index in result.rebuilt_indexes:
        lines.append(f"  rebuild INVALID index {index}")
    for step in result.steps:
        mode = "" if step["transactional"] else "  [no transaction]"
        took = f"  ({step['execution_ms']} ms)" if "execution_ms" in step else ""
        lines.append(f"  {step['direction']:<4} {step['file']}{mode}{took}")
    if not result.steps and not result.rebuilt_indexes:
        lines.append("  nothing to do")
    return "\n".join(lines)


def _result_payload(result: migrations.RunResult, dsn: str | None) -> dict[str, Any]:
    from . import db

    return {
        "database": db.describe(db.resolve_dsn(dsn)),
        "changed": result.changed,
        "before_version": result.before_version,
        "after_version": result.after_version,
        "steps": result.steps,
        "rebuilt_indexes": result.rebuilt_indexes,
    }


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import migrations

    report = _say if not args.quiet else (lambda _m: None)
    if args.action in ("up", "down"):
        result = migrations.migrate(
            args.dsn,
            args.path,
            args.action,
            args.target,
            allow_drift=args.allow_drift,
            out_of_order=getattr(args, "out_of_order", False),
            lock_timeout=args.lock_timeout,
            ddl_lock_timeout=args.ddl_lock_timeout,
            report=report,
        )
        _emit(
            args, _result_payload(result, args.dsn), _steps_text(f"migrate {args.action}", result)
        )
    elif args.action == "plan":
        result = migrations.plan(
            args.dsn,
            args.path,
            args.direction,
            args.target,
            allow_drift=args.allow_drift,
            out_of_order=args.out_of_order,
        )
        _emit(args, _result_payload(result, args.dsn), _steps_text("plan", result))
    elif args.action == "status":
        state = migrations.status(args.dsn, args.path)
        _emit(args, state, _status_text(state))
        if state["drift"]:
            return 3
    elif args.action == "repair":
        fixed = migrations.repair(
            args.dsn, args.path, forget=args.forget, lock_timeout=args.lock_timeout, report=report
        )
        _emit(args, dataclasses.asdict(fixed), _repair_text(fixed))
        if fixed.missing:
            return 3
    return EXIT_OK


def _repair_text(fixed: migrations.RepairResult) -> str:
    from . import migrations

    lines = [f"repaired: {', '.join(fixed.repaired) or 'nothing'}"]
    if fixed.forgotten:
        rows = "row" if len(fixed.forgotten) == 1 else "rows"
        lines.append(
            f"forgot: {', '.join(fixed.forgotten)} (ledger {rows} removed; what the migrations "
            "created stays in the database)"
        )
    if fixed.missing:
        versions = [int(label.split("_", 1)[0]) for label in fixed.missing]
        lines.append(
            f"still missing: {', '.join(fixed.missing)} (applied, file gone): restore the file, "
            f"or if it was deleted on purpose: '{migrations.forget_command(versions)}'"
        )
    return "\n".join(lines)


def _status_text(state: dict[str, Any]) -> str:
    lines = [
        f"database {state['database']} (PostgreSQL {state['server_version']}): "
        f"version {state['current_version']} of {state['latest_version']}",
        f"  {'VERSION':<8} {'STATE':<13} {'APPLIED AT':<26} {'MS':>7}  NAME",
    ]
    for row in state["migrations"]:
        applied = (row["applied_at"] or "-")[:19].replace("T", " ")
        took = "-" if row["execution_ms"] is None else str(row["execution_ms"])
        lines.append(
            f"  {row['version']:<8} {row['state']:<13} {applied:<26} {took:>7}  {row['name']}"
        )
    lines += [f"  DRIFT: {problem}" for problem in state["drift"]]
    lines += [
        f"  OUT OF ORDER: {name} (renumber it, or 'dbtier migrate up --out-of-order')"
        for name in state["out_of_order"]
    ]
    lines += [f"  INVALID INDEX: {name}" for name in state["invalid_indexes"]]
    return "\n".join(lines)


def cmd_refresh_views(args: argparse.Namespace) -> int:
    results = views.refresh(
        args.dsn, args.view or None, concurrently=not args.blocking, report=_say
    )
    _emit(
        args,
        {"refreshed": results},
        "\n".join(
            f"refreshed {r['view']} ({r['mode']}) in {r['execution_ms']} ms" for r in results
        ),
    )
    return EXIT_OK


def cmd_sample_data(args: argparse.Namespace) -> int:
    from . import sampledata

    if args.scale is not None:
        scale = sampledata.parse_scale(args.scale)
        if args.jobs < 1:
            raise UsageError(f"--jobs must be >= 1 (got {args.jobs})")
        result = sampledata.load_scale(
            args.dsn,
            scale,
            seed=args.seed,
            anchor=sampledata.parse_anchor(args.anchor),
            jobs=args.jobs,
            report=_say if not args.quiet else (lambda _m: None),
        )
        text = (
            "inserted "
            + ", ".join(f"{v} {k}" for k, v in result["rows"].items())
            + f" in {result['load_seconds']:.1f} s; {result['bytes'] / 1e6:,.0f} MB on disk"
        )
        _emit(args, result, text)
        return EXIT_OK
    size = sampledata.SampleSize(
        scenarios=args.scenarios,
        logs_per_scenario=args.logs_per_scenario,
        metrics_per_scenario=args.metrics_per_scenario,
        days=args.days,
    )
    counts = sampledata.load(args.dsn, size)
    _emit(args, counts, "inserted " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from . import benchqueries, sampledata

    result = benchqueries.run(
        args.dsn,
        scale=sampledata.parse_scale(args.scale),
        out_dir=args.out,
        prefix=args.prefix,
        migrations_dir=args.path,
        reps=args.reps,
        budget=args.budget,
        keep=args.keep,
        seed=args.seed,
        anchor=sampledata.parse_anchor(args.anchor),
        report=_say if not args.quiet else (lambda _m: None),
    )
    _emit(args, result, benchqueries.text_table(result))
    return EXIT_OK


def _settings(args: argparse.Namespace) -> Any:
    from . import config

    overrides = {
        "dsn": getattr(args, "dsn", None),
        "repository": getattr(args, "repo", None),
        "key": getattr(args, "key", None),
        "secondary": getattr(args, "secondary", None),
        "secondary_region": getattr(args, "secondary_region", None),
        "storage_class": getattr(args, "storage_class", None),
        "endpoint_url": getattr(args, "endpoint_url", None),
        "region": getattr(args, "region", None),
        "metrics_dir": getattr(args, "metrics_dir", None),
        "compression_level": getattr(args, "compression_level", None),
        # --compression-level is the level of the backup being taken, whichever its kind
        "base_compression_level": getattr(args, "compression_level", None),
    }
    settings = config.load(getattr(args, "config", None), overrides)
    if settings.dsn is None:  # db.resolve_dsn(None), without importing psycopg for wal-push
        settings.dsn = os.environ.get("DATABASE_URL", "")
    return settings


def _human(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return str(size)


def _kv_text(data: dict[str, Any]) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"  - {item}" for item in value]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def cmd_backup(args: argparse.Namespace) -> int:
    from . import backup, db, jobs, maintenance
    from .status import human_age

    jobs.set_quiet(args.quiet)
    settings = _settings(args)
    if args.action in ("full", "base") and args.primary_only and backup.is_standby(settings):
        # Scheduled on every PostgreSQL host, backed up once: a standby skips, successfully.
        result = {
            "skipped": True,
            "reason": "the server is a standby (pg_is_in_recovery); --primary-only",
            "database": db.describe(settings.dsn),
        }
        jobs.log(
            f"backup_{args.action}.skipped", "notice", reason="standby", database=result["database"]
        )
        _emit(args, result, _kv_text(result))
        return EXIT_OK
    if args.action == "full":
        result = backup.backup_logical(
            settings, secondary=args.secondary, check_replication=args.check_replication
        )
    elif args.action == "base":
        result = backup.backup_base(
            settings, secondary=args.secondary, check_replication=args.check_replication
        )
    elif args.action == "verify":
        result = maintenance.verify(settings, args.backup, deep=args.deep, kind=args.kind)
    elif args.action == "cleanup":
        result = maintenance.cleanup(
            settings,
            days=args.days,
            count=args.count,
            dry_run=args.dry_run,
            grace_hours=args.debris_grace_hours,
        )
    else:
        rows = maintenance.list_all(settings)
        header = (
            f"{'ID':<32} {'KIND':<8} {'STATUS':<7} {'DATABASE':<12} {'STOPPED AT':<21} "
            f"{'AGE':<14} {'SIZE':>11}"
        )
        text = [header] + [
            f"{r['id']:<32} {r['kind']:<8} {r['status']:<7} {r.get('database') or '-':<12} "
            f"{r['stopped_at']:<21} {human_age(r['age_seconds']):<14} "
            f"{_human(r['size']) if r['size'] is not None else '-':>11}"
            + (f"  {r['reason']}" if r.get("reason") else "")
            for r in rows
        ]
        _emit(args, {"backups": rows}, "\n".join(text) if rows else "no backups")
        return EXIT_OK
    _emit(args, result, _kv_text(result))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from . import status, statustext

    settings = _settings(args)
    limits = status.Limits.of(settings, args.max_age_logical, args.max_age_base, args.max_wal_age)
    report = status.collect(settings, limits)
    _emit(args, report, statustext.render(report))
    return int(report["exit_code"])


def cmd_wal_push(args: argparse.Namespace) -> int:
    from . import jobs, wal

    jobs.set_quiet(args.quiet)
    wal.push(_settings(args), args.path)
    return EXIT_OK


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    from . import jobs, wal

    jobs.set_quiet(args.quiet)
    return wal.fetch(_settings(args), args.name, args.destination)


def cmd_restore(args: argparse.Namespace) -> int:
    from . import jobs, restore, switch

    jobs.set_quiet(args.quiet)
    settings = _settings(args)
    if args.mode == "rds":
        result = restore.restore_rds(
            settings,
            args.rds_instance,
            args.new_instance,
            args.target_time,
            wait=not args.no_wait,
            dry_run=args.dry_run,
        )
    elif args.mode == "switch":
        result = switch.switch(
            settings,
            args.data_dir,
            cluster=args.cluster,
            dry_run=args.dry_run,
            base_backup=not args.no_base_backup,
            config=args.config,
            quiet=args.quiet,
        )
    elif args.mode == "pitr":
        if args.switch:  # before recovering for an hour: can the switch follow at all?
            switch.precheck(args.data_dir, cluster=args.cluster, keep_running=args.keep_running)
        result = restore.restore_pitr(
            settings,
            restore.pitr_target(args.target_time, args.target, args.target_name, args.target_lsn),
            args.data_dir,
            base_id=args.base,
            timeline=args.target_timeline,
            port=args.port,
            keep_running=args.keep_running,
            dry_run=args.dry_run,
        )
        if args.switch:
            result = switch.after_pitr(settings, result, args)
    else:
        result = restore.restore_logical(
            settings,
            args.backup,
            target_db=args.target_db,
            jobs=args.jobs,
            dry_run=args.dry_run,
            verify_only=args.verify_only,
            skip_safety_backup=args.no_safety_backup,
            no_owner=args.no_owner,
        )
    _emit(args, result, _kv_text(result))
    return EXIT_OK


class OneLineParser(argparse.ArgumentParser):
    """Bad usage is one line on stderr (exit 2), like every other dbtier error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a migration version: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a migration version: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dbtier",
        description="Operations tooling for the mockupAWS PostgreSQL tier.",
        epilog="Connection: --dsn URL, else $DATABASE_URL, else the PG* variables. "
        "Exit codes: 0 ok, 1 failed (status: needs attention), 2 bad input, 3 checksum drift, "
        "4 lock timeout, 5 cannot connect, 143 stopped by SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"dbtier {__version__}")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    output.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    common.add_argument(
        "--dsn", help="libpq URL or key=value string (default: $DATABASE_URL / PG*)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mig = sub.add_parser("migrate", help="versioned SQL migrations (files/sql)")
    mig_sub = mig.add_subparsers(dest="action", required=True, metavar="ACTION")
    mig_common = argparse.ArgumentParser(add_help=False, parents=[common])
    mig_common.add_argument(
        "--path",
        default=default_migrations_dir(),
        help="migrations directory (default: %(default)s)",
    )
    mig_common.add_argument(
        "--allow-drift",
        action="store_true",
        help="proceed although applied files changed (see 'repair')",
    )
    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for another run's migration lock (default 60)",
    )
    locking.add_argument(
        "--ddl-lock-timeout",
        metavar="DURATION",
        help="PostgreSQL lock_timeout for the migration session, e.g. 10s",
    )
    out_of_order = argparse.ArgumentParser(add_help=False)
    out_of_order.add_argument(
        "--out-of-order",
        action="store_true",
        help="also apply files whose version is below the highest applied one (refused otherwise)",
    )
    up = mig_sub.add_parser(
        "up", parents=[mig_common, locking, out_of_order], help="apply pending migrations"
    )
    up.add_argument("--target", type=_version, help="stop at this version (default: latest)")
    down = mig_sub.add_parser(
        "down", parents=[mig_common, locking], help="revert applied migrations above --target"
    )
    down.add_argument(
        "--target",
        type=_version,
        required=True,
        help="revert down to this version (0 = everything)",
    )
    pl = mig_sub.add_parser(
        "plan", parents=[mig_common, out_of_order], help="what up/down would run"
    )
    pl.add_argument("direction", nargs="?", choices=["up", "down"], default="up")
    pl.add_argument("--target", type=_version)
    mig_sub.add_parser(
        "status",
        parents=[mig_common],
        help="applied/pending/out-of-order/drifted migrations, INVALID indexes (exit 3 on drift)",
    )
    rp = mig_sub.add_parser(
        "repair",
        parents=[mig_common, locking],
        help="accept changed files: set the ledger's checksums to the files'; "
        "--forget the rows of deleted files (exit 3 while such rows remain)",
    )
    rp.add_argument(
        "--forget",
        type=_version,
        action="append",
        default=[],
        metavar="VERSION",
        help="remove the ledger row of this applied migration whose file was deleted on purpose "
        "(repeatable; reverts nothing in the database)",
    )
    mig.set_defaults(func=cmd_migrate)

    rv = sub.add_parser(
        "refresh-views",
        parents=[common],
        help="REFRESH MATERIALIZED VIEW CONCURRENTLY for the reporting views",
    )
    rv.add_argument("view", nargs="*", help=f"views (default: {', '.join(views.VIEWS)})")
    rv.add_argument(
        "--blocking",
        action="store_true",
        help="plain REFRESH (locks readers out; needed only for a never-populated view)",
    )
    rv.set_defaults(func=cmd_refresh_views)

    sd = sub.add_parser(
        "sample-data",
        parents=[common],
        help="insert a deterministic sample data set (demo, tests, benchmarks)",
    )
    sd.add_argument("--scenarios", type=int, default=20)
    sd.add_argument("--logs-per-scenario", type=int, default=500)
    sd.add_argument("--metrics-per-scenario", type=int, default=500)
    sd.add_argument("--days", type=int, default=900, help="spread of the history in days")
    sd.add_argument(
        "--scale",
        metavar="S",
        help="realistic data set instead: scale 1 is about 1 GB on disk, 0.01 about 10 MB "
        "(skewed per-scenario volume and sources, ~5%% PII, jsonb payloads, metric time series; "
        "into empty tables; --scenarios/--logs-per-scenario/... are then ignored)",
    )
    sd.add_argument("--seed", type=int, default=42, help="with --scale: the seed (default 42)")
    sd.add_argument(
        "--anchor",
        metavar="DATE",
        help="with --scale: the history ends at this date (default: today 00:00 UTC); same "
        "scale, seed and anchor give the same rows",
    )
    sd.add_argument(
        "--jobs", type=int, default=2, help="with --scale: parallel connections (default 2)"
    )
    sd.set_defaults(func=cmd_sample_data)

    bench = sub.add_parser("bench", help="benchmarks (the query plan of v1.0.0 before/after)")
    bench_sub = bench.add_subparsers(dest="action", required=True, metavar="ACTION")
    bq = bench_sub.add_parser(
        "queries",
        parents=[common],
        help="the 11 queries of DB-001 on the baseline schema (0001) vs every migration: "
        "p50/p95, change, target met/MISSED, EXPLAIN files (needs CREATEDB)",
    )
    bq.add_argument("--scale", default="0.01", help="sample data scale (1 = about 1 GB)")
    bq.add_argument("--out", default="bench-queries", help="directory for EXPLAIN files")
    bq.add_argument(
        "--prefix", default="dbtier_bench", help="databases <prefix>_before and <prefix>_after"
    )
    bq.add_argument("--reps", type=int, default=20, help="timed runs per query and side")
    bq.add_argument(
        "--budget",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="stop a query after this long (at least 5 runs each side)",
    )
    bq.add_argument("--keep", action="store_true", help="keep both databases afterwards")
    bq.add_argument("--seed", type=int, default=42)
    bq.add_argument("--anchor", metavar="DATE", help="end of the sample history (default today)")
    bq.add_argument(
        "--path",
        default=default_migrations_dir(),
        help="migrations directory (default: $DBTIER_MIGRATIONS or files/sql)",
    )
    bq.set_defaults(func=cmd_bench)
    _add_backup_parsers(sub, common, output)
    return parser


def _add_backup_parsers(
    sub: Any, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """backup, wal-push, wal-fetch, restore: settings from dbtier.toml, environment, flags."""
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--config", help="settings file (default: $DBTIER_CONFIG, /etc/dbtier)")
    aws.add_argument("--endpoint-url", help="S3/KMS endpoint (S3-compatible stores, tests)")
    aws.add_argument("--region", help="AWS region of the repository")
    aws.add_argument("--metrics-dir", help="Prometheus textfile collector directory")
    repo = argparse.ArgumentParser(add_help=False, parents=[aws])
    repo.add_argument("--repo", metavar="URL", help="file:///path or s3://bucket/prefix")
    repo.add_argument("--key", metavar="SPEC", help="master key: file:PATH, env:VAR, kms:KEY-ID")
    store = argparse.ArgumentParser(add_help=False, parents=[common, repo])
    dr = argparse.ArgumentParser(add_help=False)
    dr.add_argument("--secondary", metavar="URL", help="DR repository: copy the backup there")
    dr.add_argument("--secondary-region", help="AWS region of the DR repository")
    dr.add_argument("--storage-class", help="S3 storage class, e.g. STANDARD_IA")
    dr.add_argument(
        "--check-replication",
        action="store_true",
        help="instead of copying, check that S3 replication delivered the backup",
    )
    dr.add_argument(
        "--compression-level",
        type=int,
        help="zstd level 1-19 (default: 3 for full, 2 for base backups)",
        metavar="N",
    )

    bk = sub.add_parser("backup", help="make, verify, list and expire backups")
    bk_sub = bk.add_subparsers(dest="action", required=True, metavar="ACTION")
    primary = argparse.ArgumentParser(add_help=False)
    primary.add_argument(
        "--primary-only",
        action="store_true",
        help="do nothing (exit 0) when the server is a standby (pg_is_in_recovery): for jobs "
        "scheduled on every PostgreSQL host",
    )
    bk_sub.add_parser(
        "full", parents=[store, dr, primary], help="logical dump (pg_dump -Fc) of the database"
    )
    bk_sub.add_parser(
        "base",
        parents=[store, dr, primary],
        help="physical base backup (pg_basebackup), basis for PITR",
    )
    ve = bk_sub.add_parser("verify", parents=[store], help="check checksums, decrypt, list TOC")
    ve.add_argument(
        "backup",
        nargs="?",
        default="latest",
        help="backup id or 'latest' (the newest of --kind, else of either kind)",
    )
    ve.add_argument(
        "--kind",
        choices=["logical", "base"],
        help="'latest' means the newest backup of this kind; with an id, the backup must be of it",
    )
    ve.add_argument(
        "--deep", action="store_true", help="restore into a scratch cluster, compare row counts"
    )
    bk_sub.add_parser("list", parents=[store], help="backups in the repository (manifests)")
    cl = bk_sub.add_parser("cleanup", parents=[store], help="apply retention (days and/or count)")
    cl.add_argument("--days", type=int, help="keep backups newer than this (default 30)")
    cl.add_argument("--count", type=int, help="keep at least this many newest backups per kind")
    cl.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    cl.add_argument(
        "--debris-grace-hours",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="remove leftovers of killed backups (no manifest, scratch files, unfinished S3 "
        "uploads) once this old (default 24; longer than your longest backup)",
    )
    bk.set_defaults(func=cmd_backup)

    _add_status_parser(sub, store)
    _add_archive_parser(sub, store)

    wp = sub.add_parser("wal-push", parents=[store], help="archive_command: archive one WAL file")
    wp.add_argument("path", help="%%p: path of the WAL file")
    wp.set_defaults(func=cmd_wal_push)
    wf = sub.add_parser("wal-fetch", parents=[store], help="restore_command: fetch one WAL file")
    wf.add_argument("name", help="%%f: WAL file name")
    wf.add_argument("destination", help="%%p: where to write it")
    wf.set_defaults(func=cmd_wal_fetch)

    _add_restore_parsers(sub, output, aws, repo, store)
    _add_slow_queries_parser(sub, common)


def _count(low: int) -> Any:
    """argparse type: an integer >= low."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"not an integer >= {low}: {text!r}")
        return value

    return check


def _add_slow_queries_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """slow-queries collect | report | prune (settings: slow_query_* in dbtier.toml)."""
    sq = sub.add_parser(
        "slow-queries",
        help="slow statements from pg_stat_statements: collect (cron), report, prune",
        description="collect: the calls since the previous collect (pg_stat_statements deltas), "
        "each statement whose estimated p95 exceeds slow_query_threshold_ms logged to "
        "query_performance_log, the top ones in dbtier_slow_queries_top.prom. report: the top "
        "statements of a period. prune: rows older than slow_query_retention_days.",
    )
    sq_sub = sq.add_subparsers(dest="action", required=True, metavar="ACTION")
    settings = argparse.ArgumentParser(add_help=False, parents=[common])
    settings.add_argument("--config", help="settings file (default: $DBTIER_CONFIG, /etc/dbtier)")
    co = sq_sub.add_parser(
        "collect",
        parents=[settings],
        help="log the slow statements of the window since the previous collect (the cron job)",
    )
    co.add_argument("--metrics-dir", help="Prometheus textfile collector directory")
    co.add_argument(
        "--threshold-ms",
        type=float,
        metavar="MS",
        help="log statements whose p95 exceeds this (default slow_query_threshold_ms, 200)",
    )
    co.add_argument(
        "--top",
        type=_count(1),
        metavar="N",
        help="statements in the metrics textfile (default slow_query_top, 10)",
    )
    rp = sq_sub.add_parser("report", parents=[settings], help="top statements of a period")
    rp.add_argument("--by", choices=["p95", "total", "calls"], default="p95", help="order")
    rp.add_argument(
        "--since", default="24h", metavar="PERIOD", help="30m, 24h, 7d, 2w (default 24h)"
    )
    rp.add_argument(
        "-n", "--limit", type=_count(1), default=10, metavar="N", help="rows (default 10)"
    )
    pr = sq_sub.add_parser(
        "prune", parents=[settings], help="delete log rows past the retention, old samples"
    )
    pr.add_argument(
        "--retention-days",
        type=_count(1),
        metavar="DAYS",
        help="keep this many days (default slow_query_retention_days, 30)",
    )
    pr.add_argument("--batch-size", type=_positive, default=10_000, metavar="N")
    sq.set_defaults(func=cmd_slow_queries)


def cmd_slow_queries(args: argparse.Namespace) -> int:
    from . import jobs, slowqueries

    jobs.set_quiet(args.quiet)
    settings = _settings(args)
    if args.action == "collect":
        result = slowqueries.run_collect(settings, threshold_ms=args.threshold_ms, top=args.top)
        _emit(args, result, slowqueries.collect_text(result))
    elif args.action == "report":
        result = slowqueries.report(settings, since=args.since, by=args.by, limit=args.limit)
        _emit(args, result, slowqueries.report_text(result))
    else:
        result = slowqueries.prune(
            settings, retention_days=args.retention_days, batch_size=args.batch_size
        )
        _emit(
            args,
            result,
            f"pruned {result['deleted_rows']} rows older than {result['retention_days']} days "
            f"({result['batches']} batches) and {result['deleted_samples']} old samples",
        )
    return EXIT_OK


ARCHIVE_TYPES = ("logs", "metrics", "reports")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"not a batch size 1-1000000: {text!r}")
    return value


def _add_archive_parser(sub: Any, store: argparse.ArgumentParser) -> None:
    ar = sub.add_parser(
        "archive",
        parents=[store],
        help="move rows past their archive_policies age to the archives; restore-report ID",
        usage="dbtier archive (--logs | --metrics | --reports | --all) [--dry-run] "
        "[--batch-size N] [options]\n       dbtier archive restore-report ID [options]",
        description="Archive scenario_logs and scenario_metrics (daily aggregates) into their "
        "monthly partitions and reports to the repository, per archive_policies; batched, "
        "exactly once, resumable. Exit 4: another run of a policy is running.",
    )
    ar.add_argument("words", nargs="*", metavar="restore-report ID", help=argparse.SUPPRESS)
    for name in ARCHIVE_TYPES:
        ar.add_argument(f"--{name}", action="store_true", help=f"archive {name}")
    ar.add_argument("--all", action="store_true", help="every enabled policy")
    ar.add_argument(
        "--dry-run", action="store_true", help="print what would move (rows, dates); change nothing"
    )
    ar.add_argument(
        "--batch-size",
        type=_positive,
        metavar="N",
        help="rows per batch transaction (default: the policy's batch_size)",
    )
    ar.add_argument(
        "--primary-only",
        action="store_true",
        help="do nothing (exit 0) when the server is a standby: for the scheduled run",
    )
    ar.set_defaults(func=cmd_archive)


def _archive_text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        head = f"{r['type']}: {r['status']}"
        if r["status"] in ("skipped", "failed"):
            lines.append(f"{head} ({r.get('reason') or r.get('error')})")
        elif r["status"] == "dry-run":
            what = f"{r.get('rows', 0)} rows would move"
            if "aggregates" in r:
                what += f" into {r['aggregates']} daily aggregates"
            dates = f" ({r['oldest']} .. {r['newest']})" if r.get("oldest") else ""
            lines.append(f"{head}: {what}{dates}, cutoff {r.get('cutoff')}")
            if r.get("new_partitions"):
                lines.append(f"  new partitions: {', '.join(r['new_partitions'])}")
        else:
            moved = f"{r['rows_processed']} rows"
            if r.get("rows_aggregated"):
                moved += (
                    f" rolled up into {r['rows_archived']} new daily aggregates"
                    f" (+{r['aggregates_merged']} merged)"
                )
            dates = f" ({r['oldest']} .. {r['newest']})" if r.get("oldest") else ""
            longest = (
                f", longest batch {r['longest_batch_ms']} ms" if r.get("longest_batch_ms") else ""
            )
            extra = "".join(
                f", {r[k]} {k}" for k in ("archived", "missing", "failed") if r.get(k) is not None
            )
            lines.append(
                f"{head}: job {r['job_id']}, {moved}{dates} in {r['batches']} batches, "
                f"{r['seconds']} s ({r['rows_per_second']} rows/s{longest}){extra}, "
                f"cutoff {r['cutoff']}"
            )
    return "\n".join(lines)


def cmd_archive(args: argparse.Namespace) -> int:
    from . import archive, jobs

    jobs.set_quiet(args.quiet)
    chosen = [t for t in ARCHIVE_TYPES if getattr(args, t)]
    if args.words:
        if args.words[0] != "restore-report" or len(args.words) != 2:
            raise UsageError(
                f"unexpected argument(s) {' '.join(args.words)}: use 'dbtier archive --logs' "
                "(or --metrics, --reports, --all) or 'dbtier archive restore-report ID'"
            )
        if chosen or args.all or args.dry_run or args.batch_size:
            raise UsageError(
                "restore-report takes only a report id (drop --logs/--metrics/--reports/--all, "
                "--dry-run, --batch-size)"
            )
        result = archive.restore_report(_settings(args), args.words[1])
        _emit(args, result, _kv_text(result))
        return EXIT_OK
    if args.all and chosen:
        raise UsageError(
            "--all already means every enabled policy: drop --logs/--metrics/--reports"
        )
    if not (args.all or chosen):
        raise UsageError("say what to archive: --logs, --metrics, --reports or --all")
    if args.primary_only:
        from . import backup

        if backup.is_standby(_settings(args)):
            jobs.log("archive.skipped", "notice", reason="standby (pg_is_in_recovery)")
            _emit(args, {"skipped": True, "reason": "standby"}, "skipped: the server is a standby")
            return EXIT_OK
    results, errors = archive.run(
        _settings(args),
        None if args.all else chosen,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
    )
    _emit(args, {"dry_run": args.dry_run, "policies": results}, _archive_text(results))
    if errors:
        for error in errors[1:]:
            _say(f"dbtier: error: {error}")
        raise errors[0]
    return EXIT_OK


STATUS_EPILOG = (
    "Exit codes (a health check): 0 healthy; 1 something needs attention (each problem is "
    "listed with what to do: a backup older than its limit or missing, the newest backup not "
    "good, WAL archiving failing or stale, archive_mode off, a WAL gap in the PITR window, an "
    "unreadable repository); 5 the database cannot be reached (the repository side is still "
    "reported); 2 bad settings. Limits: the flags, else $DBTIER_STATUS_*, else status_* in "
    "dbtier.toml, else 25 h, 25 h and 2 x archive_timeout + 60 s."
)


def _add_status_parser(sub: Any, store: argparse.ArgumentParser) -> None:
    st = sub.add_parser(
        "status",
        parents=[store],
        help="is it backed up? backups, WAL archive, PITR window, schedule (exit 0 healthy)",
        description="The on-call's first command: the newest good backup of each kind, the WAL "
        "archive (pg_stat_archiver), the recoverable PITR window, the schedule, this host's job "
        "metrics, and the problems among them.",
        epilog=STATUS_EPILOG,
    )
    st.add_argument(
        "--max-age-logical",
        type=float,
        metavar="HOURS",
        help="newest good logical backup older than this is a problem (default 25)",
    )
    st.add_argument(
        "--max-age-base",
        type=float,
        metavar="HOURS",
        help="newest good base backup older than this is a problem (default 25)",
    )
    st.add_argument(
        "--max-wal-age",
        type=float,
        metavar="SECONDS",
        help="newest archived WAL older than this is a problem while the server writes WAL "
        "(default 2 x archive_timeout + 60)",
    )
    st.set_defaults(func=cmd_status)


RESTORE_MODES = {
    "logical": "restore a dump (pg_restore) into a database, swapped in when validated",
    "pitr": "point-in-time recovery of a base backup + WAL into a new data directory",
    "rds": "RDS point-in-time restore to a new instance",
    "switch": "put a PITR-recovered data directory into service in place of the live cluster",
}


def _nonempty(what: str, example: str) -> Any:
    """argparse type: a value that is not blank (an empty --target-time once meant 'logical')."""

    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty value (give {what}, e.g. {example})")
        return text

    return check


def _add_restore_parsers(
    sub: Any,
    output: argparse.ArgumentParser,
    aws: argparse.ArgumentParser,
    repo: argparse.ArgumentParser,
    store: argparse.ArgumentParser,
) -> None:
    """restore logical | pitr | rds: one mode per subcommand, each with only its own options
    (an option of another mode is an error, not silently a different restore)."""
    rs = sub.add_parser("restore", help="logical restore, PITR, or RDS point-in-time restore")
    modes = "; ".join(f"{name}: {text}" for name, text in RESTORE_MODES.items())
    rs.set_defaults(func=lambda _args: rs.error(f"choose a mode ({modes})"))
    rs_sub = rs.add_subparsers(dest="mode", metavar="MODE")
    when = "'2026-04-07 14:30:00+00'"

    lg = rs_sub.add_parser("logical", parents=[store], help=RESTORE_MODES["logical"])
    lg.add_argument(
        "backup",
        nargs="?",
        default="latest",
        type=_nonempty("a backup", "latest"),
        help="backup id, 'latest' (newest logical backup) or <repository>/backups/<id>",
    )
    lg.add_argument(
        "--target-db",
        type=_nonempty("a database name", "mockupaws"),
        help="database to restore into (default: the dump's)",
    )
    lg.add_argument("-j", "--jobs", type=int, default=4, help="pg_restore parallel jobs")
    lg.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    lg.add_argument(
        "--verify-only", action="store_true", help="download, check, list the TOC; touch nothing"
    )
    lg.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="no repository backup of the replaced database (it is kept renamed aside anyway)",
    )
    lg.add_argument("--no-owner", action="store_true", help="pg_restore --no-owner")

    pt = rs_sub.add_parser("pitr", parents=[output, repo], help=RESTORE_MODES["pitr"])
    target = pt.add_argument_group("target (one of)").add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--target-time",
        type=_nonempty("a time", when),
        help=f"recover up to this moment, e.g. {when} (naive times are UTC)",
    )
    target.add_argument(
        "--target",
        choices=["latest", "immediate"],
        help="latest: everything archived; immediate: the base backup's consistency point",
    )
    target.add_argument(
        "--target-name",
        type=_nonempty("a restore point", "before_migration_42"),
        metavar="NAME",
        help="a restore point made with SELECT pg_create_restore_point('NAME')",
    )
    target.add_argument(
        "--target-lsn",
        type=_nonempty("an LSN", "0/3000060"),
        metavar="LSN",
        help="a WAL position as pg_current_wal_lsn() shows it, e.g. 0/3000060",
    )
    pt.add_argument(
        "--base",
        type=_nonempty("a backup id", "20260407T020000Z-base"),
        metavar="ID",
        help="base backup to start from (default: the newest good one before the target)",
    )
    pt.add_argument(
        "--data-dir",
        required=True,
        type=_nonempty("a directory", "/var/lib/postgresql/15/pitr"),
        help="new (absent or empty) data directory to recover into, absolute path",
    )
    pt.add_argument(
        "--target-timeline",
        default="latest",
        help="recovery_target_timeline: latest (default), current or a timeline id",
    )
    pt.add_argument("--port", type=int, help="port for the recovered server (default: a free one)")
    pt.add_argument(
        "--keep-running", action="store_true", help="leave the recovered server running"
    )
    pt.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    pt.add_argument(
        "--switch",
        action="store_true",
        help="then put the recovered cluster into service (as root; see restore switch)",
    )
    _switch_options(pt)

    sw = rs_sub.add_parser("switch", parents=[output, repo], help=RESTORE_MODES["switch"])
    sw.add_argument(
        "--data-dir",
        required=True,
        type=_nonempty("a directory", "/var/lib/postgresql/15/pitr"),
        help="the data directory restore pitr recovered into (promoted, stopped)",
    )
    sw.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    _switch_options(sw)

    rd = rs_sub.add_parser("rds", parents=[output, aws], help=RESTORE_MODES["rds"])
    rd.add_argument("--rds-instance", required=True, help="source DB instance identifier")
    rd.add_argument("--new-instance", required=True, help="identifier of the instance to create")
    rd.add_argument(
        "--target-time",
        type=_nonempty("a time", when),
        help="restore time (default: the latest restorable time)",
    )
    rd.add_argument("--no-wait", action="store_true", help="do not wait until available")
    rd.add_argument("--dry-run", action="store_true", help="print the request, change nothing")
    for mode in (lg, pt, rd, sw):
        mode.set_defaults(func=cmd_restore)


def _switch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        default="15/main",
        help="the Debian cluster to switch, <version>/<name> (default: %(default)s)",
    )
    parser.add_argument(
        "--no-base-backup",
        action="store_true",
        help="no dbtier backup base after the switch (take one soon: a new timeline)",
    )


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM (systemd, timeout(1), an operator) unwinds like an error: children killed, temp
    files removed, backup_history and metrics record the failure. A second SIGTERM during that
    cleanup is ignored; SIGKILL still ends everything."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Name the subcommand: `restore logical --data-dir` is an option of another mode.
        words = [getattr(args, n, None) for n in ("command", "action", "mode")]
        prog = " ".join(["dbtier", *(w for w in words if isinstance(w, str))])
        parser.exit(
            2, f"{prog}: error: unknown option(s) {' '.join(unknown)} (see: {prog} --help)\n"
        )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return int(args.func(args))
    except DbtierError as exc:
        print(f"dbtier: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        # psycopg is imported by the commands that use it, not here (wal-push starts cold per
        # WAL segment): a PostgreSQL error is recognised without importing it.
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        print(f"dbtier: error: PostgreSQL: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dbtier: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:  # main() called in-process (tests): give the caller its handler back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["UsageError", "main"]
