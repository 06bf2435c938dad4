"""What every dbtier job leaves behind: logfmt lines, a backup_history row, textfile metrics."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .errors import first_line

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


class ProgressReader:
    """Passes a stream through and logs `<event> bytes=... mib_per_s=... [percent=...]` at most
    every `interval` seconds, so a long backup shows it is alive and how fast it goes."""

    def __init__(
        self, src: Any, event: str, total: int | None = None, interval: float = 10.0, **fields: Any
    ) -> None:
        self.src, self.event, self.total, self.interval = src, event, total, interval
        self.fields = fields
        self.bytes = 0
        self.started = self.last = time.monotonic()

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.bytes += len(data)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            extra = dict(self.fields)
            if self.total:
                extra["percent"] = min(99, self.bytes * 100 // self.total)
            rate = self.bytes / 2**20 / max(now - self.started, 1e-6)
            log(self.event, bytes=self.bytes, mib_per_s=round(rate, 1), **extra)
        return data


def _fmt(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def log(event: str, level: str = "info", **fields: Any) -> None:
    """One logfmt line on stderr: `ts=... level=info event=backup.upload key=... bytes=...`."""
    if _QUIET and level == "info":
        return
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    parts = [f"ts={ts}", f"level={level}", f"event={event}"]
    parts += [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    print(" ".join(parts), file=sys.stderr, flush=True)


@dataclass
class Job:
    """A running job; the caller fills in what it learns (sizes, LSNs, manifest key)."""

    name: str  # metrics job label: backup_full, backup_base, restore, verify, cleanup, wal_push
    kind: str | None = None  # backup_history.kind; None = no history row (wal pushes, verify)
    backup_id: str | None = None
    started: float = field(default_factory=time.time)
    fields: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    rows: int | None = None  # rows the run moved (archive jobs); None = no rows gauge
    record_start: bool = True  # False: the row is written at the end only (restore logical)

    def set(self, **values: Any) -> None:
        self.fields.update(values)


class History:
    """backup_history rows; best effort: a job never fails because its bookkeeping did."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn

    def _connect(self) -> Any:
        """A connection for the row. Root on a database host (restore pitr, the switch) reaches
        the server through its socket, where peer authentication admits postgres, not root:
        connect as the server's OS user there."""
        # psycopg only when a history row is written: wal-push (archive_command, a cold start
        # per WAL segment) never does.
        from psycopg.conninfo import conninfo_to_dict

        from . import db
        from .pgcluster import server_identity

        host = conninfo_to_dict(self.dsn or "").get("host") or os.environ.get("PGHOST", "")
        if os.geteuid() == 0 and str(host).startswith("/"):
            with server_identity():
                return db.connect(self.dsn, autocommit=True)
        return db.connect(self.dsn, autocommit=True)

    def _exec(self, query: str, params: dict[str, Any], fallback: str | None = None) -> None:
        """Run query; when it touched no row, run fallback (a finish without a start row)."""
        if self.dsn is None:  # "" is a DSN (the PG* variables); None means no history
            return
        try:
            with self._connect() as conn:
                if conn.execute("SELECT to_regclass('public.backup_history')").fetchone()[0]:
                    cursor = conn.execute(query, params)
                    if fallback and cursor.rowcount == 0:
                        conn.execute(fallback, params)
        except Exception as exc:  # psycopg.Error included
            log("history.unavailable", "warning", reason=first_line(exc))

    def start(self, job: Job) -> None:
        self.reap()
        self._exec(
            "INSERT INTO backup_history "
            "(backup_id, kind, status, started_at, host, tool_version, pid) "
            "VALUES (%(id)s, %(kind)s, 'running', to_timestamp(%(t)s), %(host)s, %(ver)s, "
            "%(pid)s) ON CONFLICT (backup_id) DO NOTHING",
            {
                "id": job.backup_id,
                "kind": job.kind,
                "t": job.started,
                "host": socket.gethostname(),
                "ver": __version__,
                "pid": os.getpid(),
            },
        )

    def reap(self) -> None:
        """Mark this host's 'running' rows whose process is gone as failed: a job killed by
        SIGKILL, the OOM killer or a crash never wrote its own end."""
        if self.dsn is None:
            return
        try:
            with self._connect() as conn:
                if not conn.execute("SELECT to_regclass('public.backup_history')").fetchone()[0]:
                    return
                rows = conn.execute(
                    "SELECT id, pid FROM backup_history WHERE status = 'running' AND host = %s "
                    "AND pid IS NOT NULL",
                    (socket.gethostname(),),
                ).fetchall()
                for row_id, pid in rows:
                    if _process_alive(pid):
                        continue
                    conn.execute(
                        "UPDATE backup_history SET status = 'failed', completed_at = now(), "
                        "duration_seconds = round(extract(epoch FROM now() - started_at), 3), "
                        "error = %s WHERE id = %s AND status = 'running'",
                        (f"interrupted: process {pid} ended without recording a result", row_id),
                    )
                    log("history.reaped", "warning", row=row_id, pid=pid)
        except Exception as exc:  # psycopg.Error included
            log("history.unavailable", "warning", reason=first_line(exc))

    def finish(self, job: Job, error: str | None) -> None:
        f = job.fields
        self._exec(
            """
            UPDATE backup_history SET status = %(status)s, completed_at = now(),
                duration_seconds = round((extract(epoch FROM now()) - %(t)s)::numeric, 3),
                size_bytes = %(size)s, database_name = %(db)s, server_version = %(ver)s,
                repository = %(repo)s, location = %(loc)s, manifest_key = %(manifest)s,
                checksum = %(sum)s, encrypted = %(enc)s, compression = %(comp)s,
                start_lsn = %(start_lsn)s, stop_lsn = %(stop_lsn)s, timeline = %(tli)s,
                error = %(error)s
            WHERE backup_id = %(id)s AND pid = %(pid)s
            """,
            {
                "status": "failed" if error else "completed",
                "t": job.started,
                "size": job.bytes,
                "db": f.get("database"),
                "ver": f.get("server_version"),
                "repo": f.get("repository"),
                "loc": f.get("location"),
                "manifest": f.get("manifest_key"),
                "sum": f.get("checksum"),
                "enc": bool(f.get("encrypted", True)),
                "comp": f.get("compression", "zstd"),
                "start_lsn": f.get("start_lsn"),
                "stop_lsn": f.get("stop_lsn"),
                "tli": f.get("timeline"),
                "error": error,
                "id": job.backup_id,
                "pid": os.getpid(),  # never another job's row (a same-second backup id)
                "kind": job.kind,
                "host": socket.gethostname(),
                "tool": __version__,
            },
            # No start row (a restore records into the database it produced): one whole row.
            fallback="""
            INSERT INTO backup_history (backup_id, kind, status, started_at, completed_at,
                duration_seconds, size_bytes, database_name, server_version, repository,
                location, manifest_key, checksum, encrypted, compression, start_lsn, stop_lsn,
                timeline, error, host, tool_version, pid)
            VALUES (%(id)s, %(kind)s, %(status)s, to_timestamp(%(t)s), now(),
                round((extract(epoch FROM now()) - %(t)s)::numeric, 3), %(size)s, %(db)s,
                %(ver)s, %(repo)s, %(loc)s, %(manifest)s, %(sum)s, %(enc)s, %(comp)s,
                %(start_lsn)s, %(stop_lsn)s, %(tli)s, %(error)s, %(host)s, %(tool)s, %(pid)s)
            ON CONFLICT (backup_id) DO NOTHING
            """,
        )


def _process_alive(pid: int) -> bool:
    """Whether pid is a live dbtier process on this host (a reused pid runs something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"dbtier" in cmdline


METRIC_SUCCESS = "dbtier_job_last_success_timestamp_seconds"
METRIC_HELP = {
    "dbtier_job_last_success_timestamp_seconds": "Unix time of the job's last success.",
    "dbtier_job_last_run_timestamp_seconds": "Unix time the job last finished, either way.",
    "dbtier_job_last_status": "1 if the job's last run succeeded, 0 if it failed.",
    "dbtier_job_duration_seconds": "Duration of the job's last run.",
    "dbtier_job_bytes": "Bytes the job's last run produced or moved.",
    "dbtier_job_rows": "Rows the job's last run moved (archive jobs).",
    "dbtier_job_failures_total": "Failed runs of the job since its textfile was created.",
}


def _read_previous(path: Path, name: str) -> float | None:
    """A value of the job's previous textfile (last success, the failures counter)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def write_metrics(metrics_dir: str | None, job: Job, ok: bool, finished: float) -> None:
    """node_exporter textfile: one file per job, replaced atomically."""
    if not metrics_dir:
        return
    directory = Path(metrics_dir)
    path = directory / f"dbtier_{job.name}.prom"
    last_success = finished if ok else _read_previous(path, METRIC_SUCCESS)
    failures = int(_read_previous(path, "dbtier_job_failures_total") or 0) + (0 if ok else 1)
    values: dict[str, float | int] = {
        "dbtier_job_last_run_timestamp_seconds": finished,
        "dbtier_job_last_status": 1 if ok else 0,
        "dbtier_job_duration_seconds": round(finished - job.started, 3),
        "dbtier_job_bytes": job.bytes,
    }
    if job.rows is not None:
        values["dbtier_job_rows"] = job.rows
    values["dbtier_job_failures_total"] = failures
    if last_success is not None:
        values[METRIC_SUCCESS] = last_success
    lines = []
    for name, value in values.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [
            f"# HELP {name} {METRIC_HELP[name]}",
            f"# TYPE {name} {kind}",
            f'{name}{{job="{job.name}"}} {value}',
        ]
    write_textfile(path, "\n".join(lines) + "\n")


def write_textfile(path: Path, text: str) -> None:
    """Replace a node_exporter textfile atomically (it never reads half a file); a directory
    that cannot be written costs a warning, never the job."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        log("metrics.unwritable", "warning", path=str(path), reason=str(exc))


@contextmanager
def run_job(job: Job, *, history_dsn: str | None, metrics_dir: str | None) -> Iterator[Job]:
    """Log start and end, keep backup_history and metrics, whatever happens inside."""
    log(f"{job.name}.start", backup_id=job.backup_id)
    history = History(history_dsn if job.kind else None)
    if job.record_start:
        history.start(job)
    try:
        yield job
    except BaseException as exc:
        finished = time.time()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        history.finish(job, message)
        write_metrics(metrics_dir, job, ok=False, finished=finished)
        log(
            f"{job.name}.failed",
            "error",
            backup_id=job.backup_id,
            error=message,
            seconds=round(finished - job.started, 3),
        )
        raise
    finished = time.time()
    history.finish(job, None)
    write_metrics(metrics_dir, job, ok=True, finished=finished)
    log(
        f"{job.name}.done",
        backup_id=job.backup_id,
        bytes=job.bytes,
        seconds=round(finished - job.started, 3),
    )
