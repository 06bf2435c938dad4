"""The `dbtier` command line. Every failure is one line on stderr and a documented exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from . import __version__, db, migrations, sampledata, views
from .errors import EXIT_OK, DbtierError, UsageError


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
    return {
        "database": db.describe(db.resolve_dsn(dsn)),
        "changed": result.changed,
        "before_version": result.before_version,
        "after_version": result.after_version,
        "steps": result.steps,
        "rebuilt_indexes": result.rebuilt_indexes,
    }


def cmd_migrate(args: argparse.Namespace) -> int:
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
    size = sampledata.SampleSize(
        scenarios=args.scenarios,
        logs_per_scenario=args.logs_per_scenario,
        metrics_per_scenario=args.metrics_per_scenario,
        days=args.days,
    )
    counts = sampledata.load(args.dsn, size)
    _emit(args, counts, "inserted " + ", ".join(f"{v} {k}" for k, v in counts.items()))
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
    }
    settings = config.load(getattr(args, "config", None), overrides)
    if settings.dsn is None:
        settings.dsn = db.resolve_dsn(None)
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
    from . import backup, jobs, maintenance

    jobs.set_quiet(args.quiet)
    settings = _settings(args)
    if args.action == "full":
        result = backup.backup_logical(
            settings, secondary=args.secondary, check_replication=args.check_replication
        )
    elif args.action == "base":
        result = backup.backup_base(
            settings, secondary=args.secondary, check_replication=args.check_replication
        )
    elif args.action == "verify":
        result = maintenance.verify(settings, args.backup, deep=args.deep)
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
            f"{'ID':<32} {'KIND':<8} {'STATUS':<7} {'DATABASE':<12} {'STOPPED AT':<21} {'SIZE':>11}"
        )
        text = [header] + [
            f"{r['id']:<32} {r['kind']:<8} {r['status']:<7} {r.get('database') or '-':<12} "
            f"{r['stopped_at']:<21} {_human(r['size']) if r['size'] is not None else '-':>11}"
            + (f"  {r['reason']}" if r.get("reason") else "")
            for r in rows
        ]
        _emit(args, {"backups": rows}, "\n".join(text) if rows else "no backups")
        return EXIT_OK
    _emit(args, result, _kv_text(result))
    return EXIT_OK


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
    from . import jobs, restore

    jobs.set_quiet(args.quiet)
    settings = _settings(args)
    if args.rds_instance:
        if not args.new_instance:
            raise UsageError("--rds-instance needs --new-instance NAME (RDS restores to a new one)")
        result = restore.restore_rds(
            settings,
            args.rds_instance,
            args.new_instance,
            args.target_time,
            wait=not args.no_wait,
            dry_run=args.dry_run,
        )
    elif args.target_time:
        if not args.data_dir:
            raise UsageError("--target-time needs --data-dir DIR (an empty or new directory)")
        result = restore.restore_pitr(
            settings,
            args.target_time,
            args.data_dir,
            port=args.port,
            keep_running=args.keep_running,
            dry_run=args.dry_run,
        )
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


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a migration version: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a migration version: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbtier",
        description="Operations tooling for the mockupAWS PostgreSQL tier.",
        epilog="Connection: --dsn URL, else $DATABASE_URL, else the PG* variables. "
        "Exit codes: 0 ok, 1 failed, 2 bad input, 3 checksum drift, 4 lock timeout, "
        "5 cannot connect.",
    )
    parser.add_argument("--version", action="version", version=f"dbtier {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn", help="libpq URL or key=value string (default: $DATABASE_URL / PG*)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
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
    sd.set_defaults(func=cmd_sample_data)
    _add_backup_parsers(sub, common)
    return parser


def _add_backup_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """backup, wal-push, wal-fetch, restore: settings from dbtier.toml, environment, flags."""
    store = argparse.ArgumentParser(add_help=False, parents=[common])
    store.add_argument("--config", help="settings file (default: $DBTIER_CONFIG, /etc/dbtier)")
    store.add_argument("--repo", metavar="URL", help="file:///path or s3://bucket/prefix")
    store.add_argument("--key", metavar="SPEC", help="master key: file:PATH, env:VAR, kms:KEY-ID")
    store.add_argument("--endpoint-url", help="S3/KMS endpoint (S3-compatible stores, tests)")
    store.add_argument("--region", help="AWS region of the repository")
    store.add_argument("--metrics-dir", help="Prometheus textfile collector directory")
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
        "--compression-level", type=int, help="zstd level 1-19 (default 3)", metavar="N"
    )

    bk = sub.add_parser("backup", help="make, verify, list and expire backups")
    bk_sub = bk.add_subparsers(dest="action", required=True, metavar="ACTION")
    bk_sub.add_parser(
        "full", parents=[store, dr], help="logical dump (pg_dump -Fc) of the database"
    )
    bk_sub.add_parser(
        "base", parents=[store, dr], help="physical base backup (pg_basebackup), basis for PITR"
    )
    ve = bk_sub.add_parser("verify", parents=[store], help="check checksums, decrypt, list TOC")
    ve.add_argument("backup", nargs="?", default="latest", help="backup id or 'latest'")
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

    wp = sub.add_parser("wal-push", parents=[store], help="archive_command: archive one WAL file")
    wp.add_argument("path", help="%%p: path of the WAL file")
    wp.set_defaults(func=cmd_wal_push)
    wf = sub.add_parser("wal-fetch", parents=[store], help="restore_command: fetch one WAL file")
    wf.add_argument("name", help="%%f: WAL file name")
    wf.add_argument("destination", help="%%p: where to write it")
    wf.set_defaults(func=cmd_wal_fetch)

    rs = sub.add_parser(
        "restore",
        parents=[store],
        help="logical restore, point-in-time recovery, or RDS point-in-time restore",
    )
    rs.add_argument(
        "backup",
        nargs="?",
        default="latest",
        help="backup id, 'latest' or <repository>/backups/<id>",
    )
    rs.add_argument("--target-db", help="database to restore into (default: the dump's)")
    rs.add_argument("-j", "--jobs", type=int, default=4, help="pg_restore parallel jobs")
    rs.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    rs.add_argument(
        "--verify-only", action="store_true", help="check the backup restores; touch nothing"
    )
    rs.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="do not back up an existing target database first (dangerous)",
    )
    rs.add_argument("--no-owner", action="store_true", help="pg_restore --no-owner")
    rs.add_argument("--target-time", help="PITR target, e.g. '2026-04-07 14:30:00+00'")
    rs.add_argument("--data-dir", help="PITR: new data directory to recover into")
    rs.add_argument("--port", type=int, help="PITR: port for the recovered server")
    rs.add_argument(
        "--keep-running", action="store_true", help="PITR: leave the recovered server running"
    )
    rs.add_argument("--rds-instance", help="RDS: source DB instance identifier")
    rs.add_argument("--new-instance", help="RDS: identifier of the instance to create")
    rs.add_argument("--no-wait", action="store_true", help="RDS: do not wait until available")
    rs.set_defaults(func=cmd_restore)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DbtierError as exc:
        print(f"dbtier: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg.Error as exc:
        print(f"dbtier: error: PostgreSQL: {db.first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dbtier: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["UsageError", "main"]
