"""dbtier status: is it backed up? The newest good backup of each kind, the WAL archive as the
server sees it (pg_stat_archiver), the PITR window the repository can really deliver, the
tier's schedule and this host's job metrics, and every problem among them with what to do next.

Exit codes (a health check): 0 healthy, 1 something needs attention, 5 the database cannot be
reached (the repository side is reported all the same)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from . import catalog, db, wal
from .config import Settings
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, DbtierError
from .store import Store, open_store

KINDS = ("logical", "base")
JOB_OF = {"logical": "backup_full", "base": "backup_base"}
COMMAND_OF = {"logical": "dbtier backup full", "base": "dbtier backup base"}
RDS_PITR = "RDS: point-in-time recovery by AWS (dbtier restore rds)"
# WAL written since the last archived segment beyond this is real work waiting: an idle server
# writes only a few "unimportant" records there and archive_timeout rightly never switches.
IDLE_WAL_BYTES = 8192
_METRIC_RE = re.compile(r'^(dbtier_job_\w+)\{job="([^"]*)"\} (\S+)$')

ARCHIVER_SQL = """
SELECT current_setting('server_version'), pg_is_in_recovery(), current_setting('archive_mode'),
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       archived_count, last_archived_wal, last_archived_time,
       failed_count, last_failed_wal, last_failed_time
FROM pg_stat_archiver
"""


@dataclass
class Limits:
    logical_hours: float
    base_hours: float
    wal_seconds: float  # 0 = 2 x archive_timeout + 60 s

    @classmethod
    def of(
        cls, settings: Settings, logical: float | None, base: float | None, wal_age: float | None
    ) -> Limits:
        """Flags over settings (dbtier.toml, DBTIER_STATUS_* variables)."""
        pick = [
            (logical, settings.status_max_age_logical_hours),
            (base, settings.status_max_age_base_hours),
            (wal_age, settings.status_max_wal_age_seconds),
        ]
        return cls(*(float(flag if flag is not None else default) for flag, default in pick))


def human_age(seconds: float | None) -> str:
    """3 h 12 min, 2 d 4 h, 45 s: readable at 3 a.m."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    for big, big_unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min")):
        if s >= big:
            return f"{s // big} {big_unit} {s % big // small} {small_unit}"
    return f"{s // 60} min" if s >= 60 else f"{s} s"


class Report:
    """The facts, and the problems found among them."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.data: dict[str, Any] = {"checked_at": catalog.iso(now), "host": socket.gethostname()}
        self.problems: list[dict[str, str]] = []

    def problem(self, check: str, message: str) -> None:
        self.problems.append({"check": check, "message": message})

    def age(self, when: str | datetime | None) -> dict[str, Any]:
        if when is None:
            return {"age_seconds": None, "age": "-"}
        ts = catalog.parse_time(when) if isinstance(when, str) else when
        seconds = int((self.now - ts).total_seconds())
        return {"age_seconds": seconds, "age": human_age(seconds)}

    def exit_code(self) -> int:
        if any(p["check"] == "database_unreachable" for p in self.problems):
            return EXIT_UNREACHABLE
        return EXIT_FAILED if self.problems else EXIT_OK

    def result(self) -> dict[str, Any]:
        code = self.exit_code()
        return {**self.data, "problems": self.problems, "healthy": code == 0, "exit_code": code}


def collect(settings: Settings, limits: Limits, now: datetime | None = None) -> dict[str, Any]:
    """Everything `dbtier status` shows; a missing repository or key setting is exit 2 as
    everywhere, an unreadable repository or database is a problem in the report."""
    report = Report(now or catalog.now_utc())
    store = open_store(settings)
    report.data.update(
        repository=store.describe(),
        wal_archiving=settings.wal_archiving,
        limits={
            "max_age_logical_hours": limits.logical_hours,
            "max_age_base_hours": limits.base_hours,
            "max_wal_age_seconds": limits.wal_seconds or None,
        },
    )
    _database(settings, limits, report)
    try:
        _repository(store, settings, limits, report)
    except DbtierError as exc:
        report.problem(
            "repository_unreadable",
            f"cannot read the repository {store.describe()}: {exc} (check the mount or bucket "
            "access and the master key, then run dbtier backup list)",
        )
    report.data["schedule"] = dict(sorted(settings.schedule.items()))
    report.data["metrics"] = read_metrics(settings.metrics_dir, report)
    return report.result()


# ------------------------------------------------------------------------------ repository


class View:
    """The repository's catalog and WAL names, read once; verdicts cached per backup."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.catalog = catalog.scan(store.repo, store.provider)
        self.archived = catalog.archived_wal(store.repo)
        self._why: dict[str, str | None] = {}

    def of_kind(self, kind: str) -> list[catalog.Manifest]:
        return [m for m in self.catalog.backups if m.kind == kind]

    def why_not_good(self, m: catalog.Manifest) -> str | None:
        if m.id not in self._why:
            self._why[m.id] = catalog.why_not_good(
                self.store.repo, self.store.provider, m, self.archived
            )
        return self._why[m.id]


def _repository(store: Store, settings: Settings, limits: Limits, report: Report) -> None:
    view = View(store)
    kinds = KINDS if settings.wal_archiving else ("logical",)
    hours = {"logical": limits.logical_hours, "base": limits.base_hours}
    report.data["backups"] = {
        kind: _newest(view, kind, hours[kind], settings, report) for kind in kinds
    }
    if settings.wal_archiving:
        report.data["pitr"] = _pitr(view, report)
    else:
        report.data["pitr"] = {"by": "rds", "note": RDS_PITR}


def _newest(
    view: View, kind: str, max_hours: float, settings: Settings, report: Report
) -> dict[str, Any]:
    """The newest good backup of a kind, and the newer ones that are not good (newest first:
    older backups are not checked, which keeps this to a few requests on S3)."""
    newest, rejected = None, []
    for m in reversed(view.of_kind(kind)):
        why = view.why_not_good(m)
        if why is None:
            newest = m
            break
        rejected.append({"id": m.id, "stopped_at": m.stopped_at, "reason": why})
    broken = [b for b in view.catalog.broken if b.id.endswith(f"-{kind}")]
    for bad in broken:
        when = catalog.backup_time(bad.id)
        if newest is None or (when is not None and when > newest.stopped):
            rejected.append(
                {
                    "id": bad.id,
                    "stopped_at": catalog.iso(when) if when else "",
                    "reason": f"broken: {bad.reason}",
                }
            )
    rejected.sort(key=lambda r: r["stopped_at"], reverse=True)
    section: dict[str, Any] = {"newest": None, "rejected": rejected, "broken": len(broken)}
    scheduled = settings.schedule.get(JOB_OF[kind], "not scheduled")
    if rejected:
        worst = rejected[0]
        report.problem(
            "backup_not_good",
            f"newest {kind} backup {worst['id']} is not usable ({worst['reason']}): take a new "
            f"one ({COMMAND_OF[kind]}) and check it (dbtier backup verify {worst['id']})",
        )
    if newest is None:
        report.problem(
            f"{kind}_backup_missing",
            f"no good {kind} backup in {view.store.describe()}: run {COMMAND_OF[kind]} now "
            f"(schedule: {scheduled})",
        )
        return section
    section["newest"] = info = {
        "id": newest.id,
        "stopped_at": newest.stopped_at,
        **report.age(newest.stopped_at),
        "size": newest.size,
        "verification": _verification(view, newest, report),
    }
    # the exact age, not the whole seconds shown (a limit can be under a second in tests)
    if (report.now - catalog.parse_time(newest.stopped_at)).total_seconds() > max_hours * 3600:
        report.problem(
            f"{kind}_backup_stale",
            f"newest good {kind} backup {newest.id} is {info['age']} old (limit {max_hours:g} h): "
            f"check the {JOB_OF[kind]} job ({scheduled}; its log in /var/log/dbtier) and run "
            f"{COMMAND_OF[kind]}",
        )
    return section


def _verification(view: View, m: catalog.Manifest, report: Report) -> dict[str, Any]:
    record = catalog.read_verification(view.store.repo, view.store.provider, m)
    if record is None:
        return {"status": "never", "verified_at": None, "deep": None, "age": "-"}
    return {
        "status": "ok" if record.get("ok") else "FAILED",
        "verified_at": record.get("verified_at"),
        "deep": bool(record.get("deep")),
        "age": report.age(record.get("verified_at"))["age"],
        "error": record.get("error") or None,
    }


def _pitr(view: View, report: Report) -> dict[str, Any]:
    """From the oldest good base backup to the newest archived WAL, cut at the first WAL gap
    (by names, nothing downloaded); a good base backup after a gap opens another window."""
    bases = [m for m in view.of_kind("base") if view.why_not_good(m) is None]
    if not bases:
        return {"window": None, "note": "no PITR (no base backup)", "windows": []}
    windows: list[dict[str, Any]] = []
    while bases:
        base = bases[0]
        have, gaps = catalog.wal_gaps(view.archived, base)
        window: dict[str, Any] = {"base_backup": base.id, "start": base.stopped_at, "gap": None}
        if not gaps:
            last = wal.last_archived(view.store)
            window.update(end=last[1] if last else None, end_wal=last[0] if last else None)
            windows.append(window)
            break
        size, tli = base.wal_segment_size, base.timeline or 1
        end_wal = max(have[max(n for n in have if n < gaps[0])])
        window.update(end=wal.pushed_at(view.store, end_wal), end_wal=end_wal)
        window["gap"] = {
            "first_missing": catalog.segment_name(tli, gaps[0], size),
            "missing_segments": len(gaps),
        }
        windows.append(window)
        bases = [m for m in bases if catalog.segment_number(m.start_wal_file or "", size) > gaps[0]]
    for w in windows:
        w["end_age"] = report.age(w["end"])["age"]
    gapped = [w for w in windows if w["gap"]]
    if gapped:
        first = gapped[0]
        tail = (
            f"recovery works again from base backup {windows[-1]['base_backup']} on; the hole "
            "ages out with retention"
            if not windows[-1]["gap"]
            else "take a base backup now (dbtier backup base): nothing later is recoverable"
        )
        report.problem(
            "pitr_gap",
            f"WAL gap: segment {first['gap']['first_missing']} is missing "
            f"({first['gap']['missing_segments']} segment(s)), so point-in-time recovery from "
            f"{first['base_backup']} ends at {first['end']}: {tail}",
        )
    return {**windows[0], "window": [windows[0]["start"], windows[0]["end"]], "windows": windows}


# -------------------------------------------------------------------------------- database


def _database(settings: Settings, limits: Limits, report: Report) -> None:
    """The server's own view: reachable, primary or standby, and its archiver."""
    target = db.describe(settings.dsn or "")
    try:
        with db.connect(settings.dsn, autocommit=True) as conn:
            row = conn.execute(ARCHIVER_SQL).fetchone()
    except (DbtierError, psycopg.Error) as exc:
        reason = str(exc) if isinstance(exc, DbtierError) else db.first_line(exc)
        report.data["database"] = {"target": target, "reachable": False, "error": reason}
        tried = "" if target in reason else f" (tried {target})"
        report.problem(
            "database_unreachable",
            f"database unreachable: {reason}{tried}: check that PostgreSQL runs and the "
            "connection settings (DATABASE_URL, PG*, .pgpass; `dbtier-job status` loads this "
            "host's); the repository side is reported all the same",
        )
        return
    version, standby, mode, timeout, segment_size, lsn, *archiver = row
    report.data["database"] = {
        "target": target,
        "reachable": True,
        "server_version": version,
        "role": "standby" if standby else "primary",
    }
    if settings.wal_archiving:
        facts = dict(
            archive_mode=mode,
            archive_timeout_seconds=timeout,
            standby=standby,
            segment_size=segment_size,
            current_lsn=lsn,
        )
        report.data["wal_archive"] = _archiver(facts, archiver, limits, target, report)


def _archiver(
    facts: dict[str, Any], row: list[Any], limits: Limits, target: str, report: Report
) -> dict[str, Any]:
    archived, last_wal, last_time, failed, failed_wal, failed_time = row
    timeout = facts["archive_timeout_seconds"] or 0
    limit = limits.wal_seconds or (2 * timeout + 60 if timeout else 0)
    info: dict[str, Any] = {
        "archive_mode": facts["archive_mode"],
        "archive_timeout_seconds": timeout,
        "archived_count": archived,
        "failed_count": failed,
        "last_archived_wal": last_wal,
        "last_archived_time": catalog.iso(last_time) if last_time else None,
        **{f"last_archived_{k}": v for k, v in report.age(last_time).items()},
        "last_failed_wal": failed_wal,
        "last_failed_time": catalog.iso(failed_time) if failed_time else None,
        "max_age_seconds": limit or None,
        "failing": bool(failed_time and (last_time is None or failed_time > last_time)),
        "pending_wal_bytes": _pending(last_wal, facts),
    }
    if facts["archive_mode"] == "off":
        report.problem(
            "archive_mode_off",
            f"archive_mode is off on {target}: no WAL is archived and PITR is impossible; set "
            "archive_mode = on (roles/postgresql) and restart PostgreSQL",
        )
        return info
    if facts["standby"] and facts["archive_mode"] != "always":
        info["note"] = "standby: the primary archives (run dbtier status against the primary)"
        return info
    if info["failing"]:
        report.problem(
            "wal_archive_failing",
            f"WAL archiving failing: {failed_wal} failed at {info['last_failed_time']} "
            f"({failed} failure(s) in all); read archive_command's error in the PostgreSQL log "
            "and fix it (WAL piles up in pg_wal until it works)",
        )
    pending = info["pending_wal_bytes"]
    idle = pending is not None and pending <= IDLE_WAL_BYTES
    if limit and not idle and (last_time is None or info["last_archived_age_seconds"] > limit):
        report.problem(
            "wal_archive_stale",
            f"WAL archive stale: newest archived WAL {last_wal or '(none)'} is "
            f"{info['last_archived_age']} old (limit {human_age(limit)}) while the server "
            "writes WAL; check pg_stat_archiver and the PostgreSQL log for archive_command",
        )
    if not timeout and not limits.wal_seconds:
        info["note"] = "archive_timeout is 0: WAL age unchecked (set --max-wal-age)"
    return info


def _pending(last_wal: str | None, facts: dict[str, Any]) -> int | None:
    """Bytes of WAL written after the last archived segment (None when unknown)."""
    lsn, size = facts["current_lsn"], facts["segment_size"]
    if not (lsn and size and last_wal and catalog.WAL_SEGMENT_RE.match(last_wal[:24])):
        return None
    done = (catalog.segment_number(last_wal[:24], size) + 1) * size
    return max(0, catalog.lsn_value(lsn) - done)


# --------------------------------------------------------------------------------- metrics


def read_metrics(metrics_dir: str | None, report: Report) -> dict[str, Any]:
    """This host's dbtier_*.prom textfiles (jobs.write_metrics), one entry per job."""
    if not metrics_dir:
        return {"dir": None, "jobs": [], "note": "no metrics_dir configured"}
    directory = Path(metrics_dir)
    if not directory.is_dir():
        return {"dir": metrics_dir, "jobs": [], "note": "directory not found on this host"}
    jobs = []
    for path in sorted(directory.glob("dbtier_*.prom")):
        values: dict[str, float] = {}
        job = path.stem.removeprefix("dbtier_")
        try:
            for line in path.read_text().splitlines():
                if match := _METRIC_RE.match(line.strip()):
                    job, values[match[1]] = match[2], float(match[3])
        except (OSError, ValueError):
            continue  # being replaced, or not ours: the next run shows it
        if not values:
            continue  # a job's other textfile (dbtier_slow_queries_top.prom), not a job
        success = values.get("dbtier_job_last_success_timestamp_seconds")
        run = values.get("dbtier_job_last_run_timestamp_seconds")
        success_at = datetime.fromtimestamp(success, report.now.tzinfo) if success else None
        jobs.append(
            {
                "job": job,
                "last_status": "ok" if values.get("dbtier_job_last_status") == 1 else "FAILED",
                "last_run": catalog.iso(datetime.fromtimestamp(run, report.now.tzinfo))
                if run
                else None,
                "last_success": catalog.iso(success_at) if success_at else None,
                "last_success_age_seconds": report.age(success_at)["age_seconds"],
                "last_success_age": report.age(success_at)["age"],
            }
        )
    return {"dir": metrics_dir, "jobs": jobs}
