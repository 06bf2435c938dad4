"""dbtier archive: move rows past their archive_policies age out of scenario_logs and
scenario_metrics into the monthly partitions of their archives, exactly once.

Every batch is one transaction that deletes the rows from the live table, writes them (or their
daily aggregates) to the archive and adds its counts to the run's archive_jobs row: a crash at
any point loses and duplicates nothing, and the WHERE clause (older than the cutoff) is where a
rerun resumes. Batches are small, take only row locks (SKIP LOCKED) under a short lock_timeout,
so the application keeps inserting. Reports are archived by reportarchive (same ArchiveRun).
"""

from __future__ import annotations

import hashlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import db, jobs
from .config import Settings
from .errors import DbtierError, LockTimeout, Terminated, UsageError

# job_type -> live table of its policy (archive_policies.table_name)
POLICY_TABLES = {"logs": "scenario_logs", "metrics": "scenario_metrics", "reports": "reports"}
PARTITIONED = {"logs": "public.scenario_logs_archive", "metrics": "public.scenario_metrics_archive"}
PARTITION_KEY = {"logs": "received_at", "metrics": '"timestamp"'}
BATCH_LOCK_TIMEOUT = "2s"  # a batch that must wait longer for a lock gives way and retries
LOCK_RETRIES = 5
PROGRESS_EVERY = 10  # batches between archive.batch progress lines
MAX_SWEEPS = 3  # full passes from id 0 after the cursor pass (late commits, skipped rows)


_STOP: list[str] = []  # the signal that asked this run to stop, between two batches


@contextmanager
def stop_between_batches() -> Iterator[None]:
    """SIGTERM ends the run after the batch in flight, not inside it: the session stays usable
    to record the run (a signal mid-query leaves it busy) and the batch is not thrown away."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(
        signal.SIGTERM, lambda signum, _f: _STOP.append(signal.Signals(signum).name)
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _STOP.clear()


def check_stop() -> None:
    if _STOP:
        raise Terminated(f"terminated by {_STOP[0]}")


def lock_key(job_type: str) -> int:
    """Signed 64-bit pg_try_advisory_lock key of one job type, stable across versions."""
    digest = hashlib.sha256(f"dbtier.archive.{job_type}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _holder(conn: psycopg.Connection, job_type: str) -> str:
    row = conn.execute(
        "SELECT id, host, started_at FROM archive_jobs WHERE job_type = %s AND status = 'running'"
        " AND NOT dry_run ORDER BY id DESC LIMIT 1",
        (job_type,),
    ).fetchone()
    if row:
        return f"job {row[0]} on {row[1] or '?'}, started {row[2]:%Y-%m-%d %H:%M:%S%z}"
    key = lock_key(job_type) & 0xFFFFFFFFFFFFFFFF
    pid = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = %s AND objid::bigint = %s",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    return f"server pid {pid[0]} (starting)" if pid else "another session"


def acquire(conn: psycopg.Connection, job_type: str) -> None:
    """The session lock of a job type (held until the connection ends); LockTimeout (exit 4)
    naming the running job when another run has it."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(job_type),)).fetchone()[0]:
        raise LockTimeout(
            f"archive {job_type}: another run holds the lock ({_holder(conn, job_type)}); "
            "wait for it to finish, or stop it and rerun (the rerun resumes)"
        )


def load_policies(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """archive_policies by job type (logs, metrics, reports)."""
    if conn.execute("SELECT to_regclass('public.archive_policies')").fetchone()[0] is None:
        raise UsageError("no archive_policies table in this database: run 'dbtier migrate up'")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM archive_policies").fetchall()
    by_table = {row["table_name"]: row for row in rows}
    return {t: by_table[name] for t, name in POLICY_TABLES.items() if name in by_table}


@dataclass
class ArchiveRun:
    """One archiving run: its archive_jobs row (id None for a dry run: nothing recorded) and
    its counters. Counters of archive_jobs:
      records_processed  live rows read and handled      records_deleted  live rows removed
      records_archived   rows inserted into the archive  records_aggregated  raw rows rolled
                         (moved rows, new aggregates)                       up into aggregates
      bytes_archived     pg_column_size of the moved rows

    A batch is, on the run's autocommit connection:
        with run.batch(conn):        # one transaction, SET LOCAL lock_timeout; SIGTERM stops
            ...move rows...          #   the run here, before a batch, never inside one
            run.add(conn, processed=n, archived=n, deleted=n, bytes=b, cursor={"id": last})
    add() writes the counts (and last_id / cursor: where a rerun resumes) to the row inside the
    batch's transaction, so they commit or roll back with the rows they count; the in-memory
    totals move once that transaction has committed. start() and finish() belong to the caller
    (archive.run_policy): report archiving gets a started run and only adds batches.
    """

    job_type: str
    cutoff: datetime
    batch_size: int
    id: int | None = None
    processed: int = 0
    archived: int = 0
    aggregated: int = 0
    deleted: int = 0
    bytes: int = 0
    merged: int = 0  # aggregates merged into an existing one (not a column: the summary's)
    batches: int = 0
    last_id: int | None = None  # last_processed_id: where the id cursor stands
    cursor: dict[str, Any] | None = None  # resume_cursor (reports: e.g. the last report id)
    oldest: datetime | None = None  # date range of the rows moved
    newest: datetime | None = None
    longest_batch_ms: float = 0.0
    largest_batch: int = 0  # most live rows one batch handled
    started: float = field(default_factory=time.monotonic)
    _pending: dict[str, Any] = field(default_factory=dict)

    COUNTERS = ("processed", "archived", "aggregated", "deleted", "bytes", "merged")

    @classmethod
    def start(
        cls,
        conn: psycopg.Connection,
        job_type: str,
        cutoff: datetime,
        batch_size: int,
        *,
        dry_run: bool,
    ) -> ArchiveRun:
        """A new run. Not a dry run: the caller holds acquire(job_type), so a 'running' row of
        this type is a dead run's; it ends as partial (had progress) or failed ('interrupted'),
        and its cursor is where this run starts."""
        run = cls(job_type, cutoff, batch_size)
        if dry_run:
            return run
        with conn.transaction():
            stale = conn.execute(
                """
                UPDATE archive_jobs SET
                    status = CASE WHEN records_processed > 0 THEN 'partial' ELSE 'failed' END,
                    completed_at = greatest(now(), started_at),
                    error_message = coalesce(error_message,
                        'interrupted: the run ended without recording a result')
                WHERE job_type = %s AND status = 'running' AND NOT dry_run
                RETURNING id
                """,
                (job_type,),
            ).fetchall()
            resume = conn.execute(
                "SELECT last_processed_id, resume_cursor FROM archive_jobs "
                "WHERE job_type = %s AND NOT dry_run "
                "AND status IN ('partial', 'failed') "
                "AND (last_processed_id IS NOT NULL OR resume_cursor ? 'scenario_id') "
                "AND id > coalesce((SELECT max(id) FROM archive_jobs WHERE job_type = %s "
                "AND status = 'completed' AND NOT dry_run), 0) ORDER BY id DESC LIMIT 1",
                (job_type, job_type),
            ).fetchone()
            run.id = conn.execute(
                """
                INSERT INTO archive_jobs (job_type, status, dry_run, batch_size, cutoff_at,
                                          started_at, host)
                VALUES (%s, 'running', false, %s, %s, clock_timestamp(), %s) RETURNING id
                """,
                (job_type, batch_size, cutoff, socket.gethostname()),
            ).fetchone()[0]
        for (old,) in stale:
            jobs.log("archive.interrupted", "warning", type=job_type, job_id=old, by=run.id)
        if resume:  # where the interrupted run stood; its sweep time is not this run's
            run.last_id = resume[0]
            run.cursor = {k: v for k, v in (resume[1] or {}).items() if k != "sweep_started_at"}
        return run

    @contextmanager
    def batch(self, conn: psycopg.Connection) -> Iterator[None]:
        """One batch transaction with a short lock_timeout; totals move only on commit."""
        check_stop()
        began = time.monotonic()
        self._pending = {}
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")
            yield
        self.commit()
        self.longest_batch_ms = max(self.longest_batch_ms, (time.monotonic() - began) * 1000)

    def add(
        self,
        conn: psycopg.Connection,
        *,
        oldest: datetime | None = None,
        newest: datetime | None = None,
        last_id: int | None = None,
        cursor: dict[str, Any] | None = None,
        **counts: int,
    ) -> None:
        """Add one batch's counts (COUNTERS) and cursor to the row, in the open transaction."""
        unknown = set(counts) - set(self.COUNTERS)
        if unknown:
            raise TypeError(f"ArchiveRun.add: unknown counters {sorted(unknown)}")
        self._pending = {
            "counts": counts,
            "oldest": oldest,
            "newest": newest,
            "last_id": last_id,
            "cursor": cursor,
        }
        if self.id is None:
            return
        conn.execute(
            """
            UPDATE archive_jobs SET
                records_processed = records_processed + %(processed)s,
                records_archived = records_archived + %(archived)s,
                records_aggregated = records_aggregated + %(aggregated)s,
                records_deleted = records_deleted + %(deleted)s,
                bytes_archived = bytes_archived + %(bytes)s,
                last_processed_id = coalesce(%(last_id)s, last_processed_id),
                resume_cursor = coalesce(%(cursor)s::jsonb, resume_cursor)
            WHERE id = %(id)s
            """,
            {
                **{c: counts.get(c, 0) for c in self.COUNTERS},
                "last_id": last_id,
                "cursor": psycopg.types.json.Jsonb(cursor) if cursor is not None else None,
                "id": self.id,
            },
        )

    def commit(self) -> None:
        """The batch's transaction committed: its pending counts join the totals."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, pending["counts"].get("processed", 0))
        for name, value in pending["counts"].items():
            setattr(self, name, getattr(self, name) + value)
        if pending["last_id"] is not None:
            self.last_id = pending["last_id"]
        if pending["cursor"] is not None:
            self.cursor = pending["cursor"]
        if pending["oldest"] is not None:
            self.oldest = min(filter(None, (self.oldest, pending["oldest"])))
        if pending["newest"] is not None:
            self.newest = max(filter(None, (self.newest, pending["newest"])))

    def finish(self, conn: psycopg.Connection, error: str | None = None) -> str:
        """End the row: completed, or partial (some batches committed) / failed with error."""
        # partial: something moved before the error (a report that only failed moved nothing)
        moved = self.archived or self.deleted
        status = "completed" if error is None else ("partial" if moved else "failed")
        if self.id is not None:
            conn.execute(
                "UPDATE archive_jobs SET status = %s, error_message = %s, "
                "completed_at = greatest(clock_timestamp(), started_at), "
                "resume_cursor = coalesce(%s::jsonb, resume_cursor) WHERE id = %s",
                (
                    status,
                    error,
                    psycopg.types.json.Jsonb(self.cursor) if self.cursor else None,
                    self.id,
                ),
            )
        return status

    def summary(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        return {
            "job_id": self.id,
            "cutoff": self.cutoff.isoformat(),
            "rows_processed": self.processed,
            "rows_archived": self.archived,
            "rows_aggregated": self.aggregated,
            "rows_deleted": self.deleted,
            "aggregates_merged": self.merged,
            "bytes_archived": self.bytes,
            "batches": self.batches,
            "seconds": round(seconds, 3),
            "rows_per_second": round(self.processed / seconds, 1) if seconds > 0 else None,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "longest_batch_ms": round(self.longest_batch_ms, 1),
            "largest_batch_rows": self.largest_batch,
        }


# --------------------------------------------------------------------------- partitions


def ensure_partitions(conn: psycopg.Connection, job_type: str, months: list[date]) -> list[str]:
    """dbtier_archive_ensure_partition for each month (it also moves that month's rows out of
    DEFAULT); one short transaction each, retried when its lock_timeout expires."""
    parent = PARTITIONED[job_type]
    made = []
    existing = _leaves(conn, parent)
    for month in sorted(set(months)):
        for attempt in range(LOCK_RETRIES):
            check_stop()
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")
                    part = conn.execute(
                        "SELECT dbtier_archive_ensure_partition(%s::regclass, %s)::text",
                        (parent, month),
                    ).fetchone()[0]
                if part not in existing:
                    made.append(part)
                    jobs.log("archive.partition", type=job_type, partition=part)
                break
            except psycopg.errors.LockNotAvailable:
                if attempt == LOCK_RETRIES - 1:
                    raise DbtierError(
                        f"archive {job_type}: could not lock {parent} to add the partition for "
                        f"{month:%Y-%m} (long queries on the archive?); rerun later"
                    ) from None
                time.sleep(0.5 * (attempt + 1))
    return made


def _leaves(conn: psycopg.Connection, parent: str) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass) WHERE isleaf",
            (parent,),
        ).fetchall()
    }


def _months(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[date]:
    return [row[0] for row in conn.execute(query, params).fetchall() if row[0] is not None]


def months_to_move(conn: psycopg.Connection, job_type: str, cutoff: datetime) -> list[date]:
    """UTC months of the rows older than cutoff, plus the month after the newest."""
    table, key = POLICY_TABLES[job_type], PARTITION_KEY[job_type]
    months = _months(
        conn,
        f"SELECT DISTINCT (date_trunc('month', {key}, 'UTC') AT TIME ZONE 'UTC')::date "
        f"FROM {table} WHERE {key} < %(cutoff)s",
        {"cutoff": cutoff},
    )
    if months:
        newest = max(months)
        months.append(date(newest.year + newest.month // 12, newest.month % 12 + 1, 1))
    return months


def months_in_default(conn: psycopg.Connection, job_type: str) -> list[date]:
    """Months with rows in the DEFAULT partition (rows that arrived before their partition)."""
    return _months(
        conn,
        f"SELECT DISTINCT (date_trunc('month', {PARTITION_KEY[job_type]}, 'UTC') "
        f"AT TIME ZONE 'UTC')::date FROM {PARTITIONED[job_type]}_default",
        {},
    )


# --------------------------------------------------------------------------- dry run


def plan(conn: psycopg.Connection, job_type: str, policy: dict[str, Any], cutoff: datetime) -> dict:
    """What a run would move (read-only): rows, aggregates, date range, new partitions."""
    table, key = POLICY_TABLES[job_type], PARTITION_KEY[job_type]
    aggregate = job_type == "metrics" and policy["aggregate_before_archive"]
    groups = (
        "count(DISTINCT (scenario_id, metric_type, metric_name, unit, "
        "date_trunc('day', \"timestamp\", 'UTC')))"
        if aggregate
        else "NULL::bigint"
    )
    rows, aggregates, oldest, newest = conn.execute(
        f"SELECT count(*), {groups}, min({key}), max({key}) FROM {table} WHERE {key} < %s",
        (cutoff,),
    ).fetchone()
    existing = _leaves(conn, PARTITIONED[job_type])
    parent = PARTITIONED[job_type].removeprefix("public.")
    new = [
        name
        for m in months_to_move(conn, job_type, cutoff)
        if (name := f"{parent}_y{m:%Y}m{m:%m}") not in existing
    ]
    result = {
        "cutoff": cutoff.isoformat(),
        "rows": rows,
        "oldest": oldest.isoformat() if oldest else None,
        "newest": newest.isoformat() if newest else None,
        "new_partitions": sorted(new),
    }
    if aggregate:
        result["aggregates"] = aggregates
    return result


# --------------------------------------------------------------------------- batches

LOGS_COLUMNS = (
    "id, scenario_id, received_at, source, message_hash, message_preview, size_bytes, "
    "token_count, sqs_blocks, has_pii, payload"
)
METRICS_COLUMNS = 'id, scenario_id, "timestamp", metric_type, metric_name, value, unit, extra_data'

# One statement per batch: pick (row locks, SKIP LOCKED), delete, insert into the archive.
LOGS_BATCH = f"""
WITH pick AS MATERIALIZED (
    SELECT id FROM scenario_logs
    WHERE received_at < %(cutoff)s AND id > %(after)s
    ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM scenario_logs AS l USING pick WHERE l.id = pick.id RETURNING l.*
), archived AS (
    INSERT INTO scenario_logs_archive ({LOGS_COLUMNS}, archive_batch_id)
    SELECT {LOGS_COLUMNS}, %(job)s FROM moved
)
SELECT count(*), max(id), min(received_at), max(received_at),
       coalesce(sum(pg_column_size(moved.*)), 0), count(*)
FROM moved
"""

RAW_METRICS_BATCH = f"""
WITH pick AS MATERIALIZED (
    SELECT id FROM scenario_metrics
    WHERE "timestamp" < %(cutoff)s AND id > %(after)s
    ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM scenario_metrics AS m USING pick WHERE m.id = pick.id RETURNING m.*
), archived AS (
    INSERT INTO scenario_metrics_archive ({METRICS_COLUMNS}, is_aggregated, aggregation_level,
                                          sample_count, archive_batch_id)
    SELECT {METRICS_COLUMNS}, false, 'none', 1, %(job)s FROM moved
)
SELECT count(*), max(id), min("timestamp"), max("timestamp"),
       coalesce(sum(pg_column_size(moved.*)), 0), count(*)
FROM moved
"""

# Whole (scenario, UTC day) groups, one scenario at a time in time order (the index on
# (scenario_id, "timestamp")): the days of the scenario's next n old rows, then every old row of
# those days, so a group's raw rows and its aggregate change in one transaction and a batch is
# at most n rows plus the rest of its last day. The exact sum is kept in extra_data.sum, so
# merging into an existing aggregate (an earlier run's part of the day, late rows) gives the
# exact weighted average, not an average of rounded averages.
_SUM = "coalesce((a.extra_data->>'sum')::numeric, a.avg_value * a.sample_count)"
_MERGED_AVG = (
    f"round(({_SUM} + (excluded.extra_data->>'sum')::numeric) "
    "/ (a.sample_count + excluded.sample_count), 6)"
)
AGGREGATE_BATCH = f"""
WITH pick AS MATERIALIZED (
    SELECT "timestamp" FROM scenario_metrics
    WHERE scenario_id = %(scenario)s AND "timestamp" >= %(from)s AND "timestamp" < %(cutoff)s
    ORDER BY "timestamp" LIMIT %(n)s
), days AS MATERIALIZED (
    SELECT DISTINCT date_trunc('day', "timestamp", 'UTC') AS day FROM pick
), moved AS (
    DELETE FROM scenario_metrics AS m USING days AS d
    WHERE m.scenario_id = %(scenario)s AND m."timestamp" >= d.day
      AND m."timestamp" < d.day + interval '1 day' AND m."timestamp" < %(cutoff)s
    RETURNING m.*
), groups AS (
    SELECT scenario_id, metric_type, metric_name, unit,
           date_trunc('day', "timestamp", 'UTC') AS day,
           count(*) AS n, min(value) AS lo, max(value) AS hi, sum(value) AS total
    FROM moved GROUP BY 1, 2, 3, 4, 5
), known AS (  -- only this run writes aggregates (the type's lock): the count of merges
    SELECT count(*) AS merged FROM groups AS g WHERE EXISTS (
        SELECT 1 FROM scenario_metrics_archive AS a
        WHERE a.is_aggregated AND a.scenario_id = g.scenario_id AND a."timestamp" = g.day
          AND a.metric_type = g.metric_type AND a.metric_name = g.metric_name
          AND a.unit = g.unit)
), written AS (
    INSERT INTO scenario_metrics_archive AS a
        (id, scenario_id, "timestamp", metric_type, metric_name, value, unit, extra_data,
         is_aggregated, aggregation_level, sample_count, min_value, max_value, avg_value,
         archive_batch_id)
    SELECT NULL, scenario_id, day, metric_type, metric_name, round(total / n, 6), unit,
           jsonb_build_object('sum', total), true, 'day', n, lo, hi, round(total / n, 6),
           %(job)s
    FROM groups
    ON CONFLICT (scenario_id, metric_type, metric_name, unit, "timestamp") WHERE is_aggregated
    DO UPDATE SET
        sample_count = a.sample_count + excluded.sample_count,
        min_value = least(a.min_value, excluded.min_value),
        max_value = greatest(a.max_value, excluded.max_value),
        avg_value = {_MERGED_AVG},
        value = {_MERGED_AVG},
        extra_data = a.extra_data || jsonb_build_object(
            'sum', {_SUM} + (excluded.extra_data->>'sum')::numeric),
        archived_at = now(),
        archive_batch_id = excluded.archive_batch_id
)
SELECT (SELECT count(*) FROM moved), (SELECT max(day) + interval '1 day' FROM days),
       (SELECT min("timestamp") FROM moved), (SELECT max("timestamp") FROM moved),
       (SELECT coalesce(sum(pg_column_size(moved.*)), 0) FROM moved),
       (SELECT count(*) FROM groups) - (SELECT merged FROM known), (SELECT merged FROM known)
"""


def _one_batch(
    conn: psycopg.Connection, run: ArchiveRun, statement: str, params: dict[str, Any]
) -> tuple[int, Any]:
    """Run one batch (retried when it gives way to a lock): (rows moved, where the next batch
    starts: the highest id picked, or for aggregates the day after the last one)."""
    params = {**params, "cutoff": run.cutoff, "n": run.batch_size, "job": run.id}
    aggregate = statement is AGGREGATE_BATCH
    for attempt in range(LOCK_RETRIES):
        try:
            with run.batch(conn):
                row = conn.execute(statement, params).fetchone()
                moved, after, oldest, newest, size, inserted = row[:6]
                if not moved:
                    run._pending = {}  # an empty batch is no batch
                    return 0, after
                counts = {"processed": moved, "deleted": moved, "bytes": int(size)}
                if aggregate:
                    counts.update(aggregated=moved, archived=inserted, merged=row[6])
                    cursor = {
                        **(run.cursor or {}),
                        "scenario_id": str(params["scenario"]),
                        "from": after.isoformat(),
                    }
                    run.add(conn, oldest=oldest, newest=newest, cursor=cursor, **counts)
                else:
                    counts["archived"] = inserted
                    run.add(conn, oldest=oldest, newest=newest, last_id=after, **counts)
            return moved, after
        except psycopg.errors.LockNotAvailable:
            if attempt == LOCK_RETRIES - 1:
                raise DbtierError(
                    f"archive {run.job_type}: rows stayed locked by other sessions for "
                    f"{LOCK_RETRIES} tries; rerun later (it resumes where this run stopped)"
                ) from None
            time.sleep(0.2 * (attempt + 1))
    return 0, None  # pragma: no cover


class _Progress:
    """archive.batch every PROGRESS_EVERY batches, with the rate since the previous line."""

    def __init__(self, run: ArchiveRun) -> None:
        self.run, self.since, self.rows = run, time.monotonic(), 0

    def __call__(self, moved: int) -> None:
        self.rows += moved
        if self.run.batches % PROGRESS_EVERY:
            return
        now = time.monotonic()
        jobs.log(
            "archive.batch",
            type=self.run.job_type,
            job_id=self.run.id,
            batches=self.run.batches,
            rows=self.run.processed,
            rows_per_s=round(self.rows / max(now - self.since, 1e-6), 1),
        )
        self.since, self.rows = now, 0


def _by_id(conn: psycopg.Connection, run: ArchiveRun, statement: str, after: int) -> int:
    """Batches in id order from after to the end; rows moved."""
    found, progress = 0, _Progress(run)
    while True:
        moved, last_id = _one_batch(conn, run, statement, {"after": after})
        if not moved:
            return found
        found, after = found + moved, last_id or after
        progress(moved)


EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def _by_scenario_day(conn: psycopg.Connection, run: ArchiveRun, resume: bool) -> int:
    """Aggregate batches, scenario by scenario (every scenario: old rows of one committed
    before this pass started are found), each in time order; rows moved."""
    found, progress = 0, _Progress(run)
    cursor = run.cursor or {} if resume else {}
    first, start = cursor.get("scenario_id"), cursor.get("from")
    query = "SELECT id FROM scenarios WHERE %s::uuid IS NULL OR id >= %s::uuid ORDER BY id"
    for (scenario,) in conn.execute(query, (first, first)).fetchall():
        after = datetime.fromisoformat(start) if start and str(scenario) == first else EPOCH
        while True:
            moved, after = _one_batch(
                conn, run, AGGREGATE_BATCH, {"scenario": scenario, "from": after}
            )
            if not moved:
                break
            found += moved
            progress(moved)
    return found


def move(conn: psycopg.Connection, run: ArchiveRun, policy: dict[str, Any]) -> None:
    """Move every row older than run.cutoff: a pass from where an interrupted run stopped,
    then full passes until one finds nothing (rows committed late behind the cursor, rows
    skipped while locked, a newer cutoff than the interrupted run's)."""
    aggregate = run.job_type == "metrics" and bool(policy["aggregate_before_archive"])
    statement = LOGS_BATCH if run.job_type == "logs" else RAW_METRICS_BATCH
    for number in range(1 + MAX_SWEEPS):
        if number:  # a guarantee for the last sweep: every old row committed before it moved
            run.cursor = {**(run.cursor or {}), "sweep_started_at": _clock(conn)}
        if aggregate:
            found = _by_scenario_day(conn, run, resume=number == 0)
        else:
            found = _by_id(conn, run, statement, (run.last_id or 0) if number == 0 else 0)
        if number and not found:
            break  # a full pass found nothing: every old row committed before it is moved


def _clock(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0].isoformat()


# --------------------------------------------------------------------------- a run


def connect(dsn: str | None) -> psycopg.Connection:
    """The run's session: autocommit (batches are explicit transactions), UTC (day and month
    boundaries), and a server that notices a killed client mid-query and lets go of its locks."""
    conn = db.connect(dsn, autocommit=True)
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET client_connection_check_interval = '1s'")
    conn.execute("SET application_name = 'dbtier archive'")
    return conn


def archive_table(conn: psycopg.Connection, run: ArchiveRun, policy: dict[str, Any]) -> dict:
    """Logs or metrics: partitions first, the batches, then partitions for the rows that
    reached DEFAULT meanwhile (concurrent old-dated inserts); DEFAULT ends empty."""
    created = ensure_partitions(conn, run.job_type, months_to_move(conn, run.job_type, run.cutoff))
    move(conn, run, policy)
    created += ensure_partitions(conn, run.job_type, months_in_default(conn, run.job_type))
    return {"partitions_created": sorted(created)}


class _ReportJob:
    """reportarchive's view of the run: it counts a report with add(), then writes the counts
    and its cursor with checkpoint() inside the transaction that moves that report."""

    def __init__(self, run: ArchiveRun) -> None:
        self.run, self.id = run, run.id
        self._counts: dict[str, int] = {}

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self._counts[name] = self._counts.get(name, 0) + value

    def checkpoint(self, conn: psycopg.Connection, cursor: dict[str, Any] | None = None) -> None:
        counts, self._counts = self._counts, {}
        self.run.add(conn, cursor=cursor, **counts)

    def sync(self, conn: psycopg.Connection) -> None:
        """The run's totals from its row: exactly what committed (a report whose transaction
        rolled back after its checkpoint is not counted)."""
        if self.id is None:
            return
        row = conn.execute(
            "SELECT records_processed, records_archived, records_deleted, bytes_archived "
            "FROM archive_jobs WHERE id = %s",
            (self.id,),
        ).fetchone()
        run = self.run
        run.processed, run.archived, run.deleted, run.bytes = row
        run.batches = run.processed
        run._pending = {}


def archive_reports(
    settings: Settings, conn: psycopg.Connection, run: ArchiveRun, policy: dict, dry_run: bool
) -> dict[str, Any]:
    """Reports go to the repository (reportarchive), one report per transaction on a session of
    their own (this run's session keeps the advisory lock); the row is started and finished by
    the caller. A failed report ends the run partial, exit 1 (reportarchive.raise_for_failures)."""
    from . import reportarchive

    job = _ReportJob(run)
    with db.connect(settings.dsn) as reports_conn:
        reports_conn.execute("SET TimeZone = 'UTC'")
        reports_conn.commit()
        result = dict(
            reportarchive.archive_reports(
                settings, reports_conn, policy, job, dry_run=dry_run, batch_size=run.batch_size
            )
        )
    job.sync(conn)
    reportarchive.raise_for_failures(result)
    return result


def restore_report(settings: Settings, report_id: str) -> dict[str, Any]:
    from . import reportarchive

    return dict(reportarchive.restore_report(settings, report_id))


def _finish_failed(conn: psycopg.Connection, run: ArchiveRun, exc: BaseException) -> None:
    """Record the failure on the row, if the session still can (a SIGTERM mid-query leaves
    it busy: then the next run marks the row interrupted)."""
    try:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
            conn.cancel()
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        run.finish(conn, db.first_line(exc)[:1000])
    except psycopg.Error as again:
        jobs.log("archive.unrecorded", "warning", job_id=run.id, reason=db.first_line(again))


def run_policy(
    settings: Settings,
    conn: psycopg.Connection,
    job_type: str,
    policy: dict[str, Any],
    cutoff: datetime,
    *,
    batch_size: int,
) -> dict[str, Any]:
    """One policy as a dbtier job (textfile metrics archive_<type>) with its archive_jobs row;
    the caller holds acquire(job_type)."""
    job = jobs.Job(name=f"archive_{job_type}")
    with jobs.run_job(job, history_dsn=None, metrics_dir=settings.metrics_dir):
        run = ArchiveRun.start(conn, job_type, cutoff, batch_size, dry_run=False)
        jobs.log(
            "archive.start",
            type=job_type,
            job_id=run.id,
            cutoff=cutoff,
            resume=run.last_id or (run.cursor or {}).get("scenario_id"),
        )
        try:
            if job_type == "reports":
                extra = archive_reports(settings, conn, run, policy, dry_run=False)
            else:
                extra = archive_table(conn, run, policy)
        except BaseException as exc:
            _finish_failed(conn, run, exc)
            raise
        finally:
            job.bytes, job.rows = run.bytes, run.processed
        status = run.finish(conn)
    result = {"type": job_type, "status": status, **run.summary(), **extra}
    jobs.log(
        "archive.summary",
        type=job_type,
        job_id=run.id,
        status=status,
        rows=run.processed,
        archived=run.archived,
        aggregated=run.aggregated,
        batches=run.batches,
        seconds=result["seconds"],
        rows_per_s=result["rows_per_second"],
    )
    return result


def run(
    settings: Settings, types: list[str] | None, *, dry_run: bool, batch_size: int | None
) -> tuple[list[dict[str, Any]], list[DbtierError]]:
    """Archive the policies of types (None: every enabled one). Returns one result per policy
    and the errors of the policies that failed (the others still ran)."""
    order = types or list(POLICY_TABLES)
    results: list[dict[str, Any]] = []
    errors: list[DbtierError] = []
    with connect(settings.dsn) as conn, stop_between_batches():
        policies = load_policies(conn)
        started = conn.execute("SELECT now()").fetchone()[0]  # every cutoff from one instant
        todo = []
        for job_type in order:
            policy = policies.get(job_type)
            reason = None
            if policy is None:
                reason = f"no archive_policies row for {POLICY_TABLES[job_type]}"
            elif not policy["enabled"]:
                reason = "policy disabled (archive_policies.enabled = false)"
            if reason:
                jobs.log("archive.skipped", "notice", type=job_type, reason=reason)
                results.append({"type": job_type, "status": "skipped", "reason": reason})
            else:
                todo.append((job_type, policy))
        if any(t == "reports" for t, _ in todo):
            settings.require("repository", "--repo or repository in dbtier.toml: reports go there")
        if not dry_run:
            for job_type, _ in todo:
                acquire(conn, job_type)
        for job_type, policy in todo:
            cutoff = started - timedelta(days=policy["archive_after_days"])
            size = batch_size or policy["batch_size"]
            try:
                if dry_run and job_type == "reports":
                    dry = ArchiveRun(job_type, cutoff, size)
                    extra = archive_reports(settings, conn, dry, policy, dry_run=True)
                    results.append({"type": job_type, "status": "dry-run", **extra})
                elif dry_run:
                    results.append(
                        {
                            "type": job_type,
                            "status": "dry-run",
                            **plan(conn, job_type, policy, cutoff),
                        }
                    )
                else:
                    results.append(
                        run_policy(settings, conn, job_type, policy, cutoff, batch_size=size)
                    )
            except (DbtierError, psycopg.Error) as exc:
                if isinstance(exc, LockTimeout | UsageError | Terminated) or conn.broken:
                    raise
                error = (
                    exc
                    if isinstance(exc, DbtierError)
                    else DbtierError(f"archive {job_type}: PostgreSQL: {db.first_line(exc)}")
                )
                errors.append(error)
                results.append({"type": job_type, "status": "failed", "error": str(error)})
    return sorted(results, key=lambda r: order.index(r["type"])), errors
