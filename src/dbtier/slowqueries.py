"""`dbtier slow-queries`: slow statements from pg_stat_statements into query_performance_log.

pg_stat_statements keeps cumulative counters per statement (since its last reset). `collect`
reads them, subtracts the previous sample (kept in the database, query_stats_sample and
query_stats_snapshot, so any ops host continues where another stopped) and so sees one window,
typically the 5 minutes between two cron runs. Each statement whose estimated p95 in the window
exceeds slow_query_threshold_ms becomes one query_performance_log row; the slowest few also go
to the textfile dbtier_slow_queries_top.prom for Prometheus (the SlowQuery alert).

The swap of the sample and the log rows are one transaction: a collect that dies half-way
leaves the previous sample, and the next collect counts the same calls exactly once.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job, write_textfile

JOB_NAME = "slow_queries"
TOP_FILE = "dbtier_slow_queries_top.prom"
Z95 = 1.645  # the one-sided 95th percentile of a normal distribution, in standard deviations
PRUNE_EVERY = timedelta(days=1)  # collect prunes the log at most this often
PRUNE_BATCH = 10_000
LABEL_QUERY_CHARS = 80
REPORT_QUERY_CHARS = 60
GRANT_HINT = "GRANT pg_read_all_stats TO {user}"


@dataclass(frozen=True)
class Counters:
    """One statement's cumulative pg_stat_statements counters (times in ms)."""

    calls: int
    total_ms: float
    sumsq_ms2: float  # sum of the squared execution times
    max_ms: float
    rows: int

    @classmethod
    def from_pgss(
        cls, calls: int, total_ms: float, mean_ms: float, stddev_ms: float, max_ms: float, rows: int
    ) -> Counters:
        """pg_stat_statements shows mean and population standard deviation, not the sum of
        squares; it follows from them: sum(x^2) = calls * (stddev^2 + mean^2)."""
        return cls(calls, total_ms, calls * (stddev_ms**2 + mean_ms**2), max_ms, rows)


ZERO = Counters(0, 0.0, 0.0, 0.0, 0)


@dataclass(frozen=True)
class Window:
    """A statement's calls between two samples."""

    calls: int
    total_ms: float
    mean_ms: float
    p95_ms: float
    max_ms: float | None  # None: the slowest call of the window is not known
    rows: int


def window_stats(current: Counters, previous: Counters | None) -> Window | None:
    """The window between two samples of one statement; previous None = every call counted in
    `current` belongs to the window (the statement is new, or its counters were reset).

    p95 is an estimate ("p95-ish"): pg_stat_statements keeps no distribution, only calls, the
    total and (through mean and stddev) the sum of squares. Their differences give the window's
    mean and standard deviation, and p95 ~ mean + 1.645 x sd (exact for normally distributed
    times), clamped to [mean, max_exec_time]: never below the mean, never above the slowest call
    ever seen (the cumulative max, an upper bound for the window). The window's own max is known
    only when the cumulative max rose during it, or when the window holds every call; None
    otherwise. None: no call in the window.
    """
    base = previous or ZERO
    calls = current.calls - base.calls
    if calls <= 0:
        return None
    total = max(current.total_ms - base.total_ms, 0.0)
    mean = total / calls
    variance = max((current.sumsq_ms2 - base.sumsq_ms2) / calls - mean * mean, 0.0)
    p95 = max(min(mean + Z95 * math.sqrt(variance), current.max_ms), mean)
    known_max = previous is None or current.max_ms > base.max_ms
    return Window(
        calls=calls,
        total_ms=total,
        mean_ms=mean,
        p95_ms=p95,
        max_ms=current.max_ms if known_max else None,
        rows=max(current.rows - base.rows, 0),
    )


@dataclass
class Statement:
    """A row of pg_stat_statements (top-level, visible to us)."""

    key: tuple[int, int, int]  # dbid, userid, queryid
    counters: Counters
    query: str
    datname: str
    usename: str


@dataclass
class Slow:
    """A statement over the threshold in the window: one query_performance_log row."""

    statement: Statement
    window: Window
    start: datetime
    end: datetime


@dataclass
class Reading:
    """pg_stat_statements at one moment."""

    taken_at: datetime
    stats_reset: datetime | None  # pg_stat_statements_info
    dealloc: int | None  # entries evicted since the reset (pg_stat_statements.max reached)
    statements: list[Statement]
    hidden: int  # '<insufficient privilege>' rows


@dataclass
class Previous:
    id: int
    taken_at: datetime
    stats_reset: datetime | None
    dealloc: int | None
    hidden: int
    last_pruned_at: datetime | None
    counters: dict[tuple[int, int, int], Counters]


@dataclass
class Found:
    """What a collect found in its window."""

    slow: list[Slow]  # slowest first
    start: datetime
    seconds: float
    reset: bool
    evicted: int | None  # statements evicted in the window (None: unknown)


def one_line(text: str, width: int) -> str:
    """Whitespace collapsed, cut to width characters (with … when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def escape_label(value: str) -> str:
    """A Prometheus text-format label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ------------------------------------------------------------------------------------ collect


def _connect(settings: Settings, *, autocommit: bool = False) -> Any:
    from . import db

    return db.connect(settings.dsn, autocommit=autocommit)


def _require_tables(conn: Any) -> None:
    if conn.execute("SELECT to_regclass('public.query_stats_sample')").fetchone()[0] is None:
        raise UsageError(
            "table query_stats_sample not found: the database is not migrated to 0009 "
            "(run: dbtier-job migrate up)"
        )


def _extension_schema(conn: Any) -> str:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        database = conn.info.dbname
        raise DbtierError(
            f"extension pg_stat_statements is not installed in database {database}: run "
            f"'CREATE EXTENSION pg_stat_statements;' in it as its owner or a superuser "
            "(roles/database_bootstrap does), with shared_preload_libraries = "
            "'pg_stat_statements' on the server (roles/postgresql; an RDS parameter group)"
        )
    return str(row[0])


def _previous(conn: Any) -> Previous | None:
    row = conn.execute(
        "SELECT id, taken_at, stats_reset, dealloc, hidden_statements, last_pruned_at "
        "FROM public.query_stats_sample ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    counters = {
        (dbid, userid, queryid): Counters(calls, total, sumsq, mx, rows)
        for dbid, userid, queryid, calls, total, sumsq, mx, rows in conn.execute(
            "SELECT dbid, userid, queryid, calls, total_exec_ms, sumsq_exec_ms2, max_exec_ms, "
            "rows FROM public.query_stats_snapshot WHERE sample_id = %s",
            (row[0],),
        )
    }
    return Previous(*row, counters=counters)


def _read_statements(conn: Any, schema: str) -> Reading:
    """The visible top-level statements and the count of hidden ones."""
    import psycopg
    from psycopg import sql

    view = sql.Identifier(schema, "pg_stat_statements")
    info = sql.Identifier(schema, "pg_stat_statements_info")
    try:
        taken_at, stats_reset, dealloc = conn.execute(
            sql.SQL("SELECT clock_timestamp(), stats_reset, dealloc FROM {}").format(info)
        ).fetchone()
        rows = conn.execute(
            sql.SQL(
                "SELECT s.dbid, s.userid, s.queryid, s.calls, s.total_exec_time, "
                "s.mean_exec_time, s.stddev_exec_time, s.max_exec_time, s.rows, s.query, "
                "coalesce(d.datname, s.dbid::text), coalesce(r.rolname, s.userid::text) "
                "FROM {} s LEFT JOIN pg_database d ON d.oid = s.dbid "
                "LEFT JOIN pg_roles r ON r.oid = s.userid WHERE s.toplevel"
            ).format(view)
        ).fetchall()
    except psycopg.errors.ObjectNotInPrerequisiteState:
        raise DbtierError(
            "pg_stat_statements is installed but not loaded: add it to shared_preload_libraries "
            "and restart the server (roles/postgresql does; on RDS: the parameter group)"
        ) from None
    statements, hidden = [], 0
    for dbid, userid, queryid, calls, total, mean, stddev, mx, nrows, query, dat, usr in rows:
        if queryid is None:  # '<insufficient privilege>': another user's statement
            hidden += 1
            continue
        counters = Counters.from_pgss(calls, total, mean, stddev, mx, nrows)
        statements.append(Statement((dbid, userid, queryid), counters, query or "", dat, usr))
    return Reading(taken_at, stats_reset, dealloc, statements, hidden)


def find_slow(previous: Previous | None, now: Reading, threshold_ms: float) -> Found:
    """The statements over the threshold in the window since `previous`. No previous sample: a
    baseline, nothing is slow yet (counters since the last reset, possibly weeks, are not a
    window).

    A statement whose calls went down, or all of them when pg_stat_statements_info.stats_reset
    changed, was reset after the previous sample: its whole counters are the window, which
    starts at the reset (or the previous sample, if later). A statement absent from the previous
    sample is new (or was evicted and came back): its whole counters too, unless the previous
    sample could not see every statement (hidden rows), when it may be an old statement that just
    became visible. A statement evicted since is simply not in `statements`; one evicted and
    back with more calls than before is undercounted (pg_stat_statements 15 has no per-entry
    creation time): `evicted` says how often eviction happened in the window."""
    if previous is None:
        return Found([], now.taken_at, 0.0, False, None)
    reset = now.stats_reset is not None and now.stats_reset != previous.stats_reset
    start = previous.taken_at
    if reset and now.stats_reset is not None and now.stats_reset > start:
        start = now.stats_reset
    slow = []
    for statement in now.statements:
        before = previous.counters.get(statement.key)
        if before is None and previous.hidden:
            continue
        whole = reset or before is None or statement.counters.calls < before.calls
        window = window_stats(statement.counters, None if whole else before)
        if window is not None and window.p95_ms > threshold_ms:
            slow.append(Slow(statement, window, start, now.taken_at))
    slow.sort(key=lambda s: s.window.p95_ms, reverse=True)
    evicted = None
    if now.dealloc is not None and (reset or previous.dealloc is not None):
        evicted = now.dealloc - (0 if reset else previous.dealloc or 0)
    return Found(slow, start, (now.taken_at - start).total_seconds(), reset, evicted)


def _save_sample(conn: Any, previous: Previous | None, now: Reading) -> int:
    """The new sample replaces the previous one (same transaction as the log rows)."""
    sample_id = conn.execute(
        "INSERT INTO public.query_stats_sample (taken_at, stats_reset, dealloc, statements, "
        "hidden_statements, last_pruned_at, host) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "RETURNING id",
        (
            now.taken_at,
            now.stats_reset,
            now.dealloc,
            len(now.statements),
            now.hidden,
            previous.last_pruned_at if previous else None,
            socket.gethostname(),
        ),
    ).fetchone()[0]
    with conn.cursor().copy(
        "COPY public.query_stats_snapshot (sample_id, dbid, userid, queryid, calls, "
        "total_exec_ms, sumsq_exec_ms2, max_exec_ms, rows) FROM STDIN"
    ) as copy:
        for s in now.statements:
            c = s.counters
            copy.write_row((sample_id, *s.key, c.calls, c.total_ms, c.sumsq_ms2, c.max_ms, c.rows))
    conn.execute("DELETE FROM public.query_stats_sample WHERE id <> %s", (sample_id,))
    return int(sample_id)


def insert_log_rows(conn: Any, slow: list[Slow]) -> int:
    """One query_performance_log row per slow statement of the window."""
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO public.query_performance_log (query_hash, query_text, "
            "execution_time_ms, rows, calls, database_name, user_name, captured_at, queryid, "
            "window_start, window_end, p95_ms, max_ms, total_time_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    str(s.statement.key[2]),
                    s.statement.query,
                    round(s.window.mean_ms, 3),
                    s.window.rows,
                    s.window.calls,
                    s.statement.datname,
                    s.statement.usename,
                    s.end,
                    s.statement.key[2],
                    s.start,
                    s.end,
                    round(s.window.p95_ms, 3),
                    None if s.window.max_ms is None else round(s.window.max_ms, 3),
                    round(s.window.total_ms, 3),
                )
                for s in slow
            ],
        )
    return len(slow)


def _threshold(settings: Settings, threshold_ms: float | None) -> float:
    threshold = settings.slow_query_threshold_ms if threshold_ms is None else threshold_ms
    if threshold < 0:
        raise UsageError(f"--threshold-ms must be >= 0 (got {threshold:g})")
    return threshold


def collect(
    settings: Settings, *, threshold_ms: float | None = None, top: int | None = None
) -> dict[str, Any]:
    """Read pg_stat_statements, log the window's slow statements, swap the sample; then the
    metrics textfile, and the daily prune. Runs inside the slow_queries job (see run_collect)."""
    threshold = _threshold(settings, threshold_ms)
    with _connect(settings) as conn:
        _require_tables(conn)
        schema = _extension_schema(conn)
        # Two collects at once (two ops hosts, a manual run during cron's): the second waits and
        # then subtracts the first one's sample.
        conn.execute("SET LOCAL lock_timeout = '60s'")
        conn.execute("LOCK TABLE public.query_stats_sample IN EXCLUSIVE MODE")
        previous = _previous(conn)
        now = _read_statements(conn, schema)
        found = find_slow(previous, now, threshold)
        _save_sample(conn, previous, now)
        inserted = insert_log_rows(conn, found.slow)
        user = conn.info.user
        conn.commit()
    if now.hidden:
        log(
            "slow_queries.insufficient_privilege",
            "warning",
            hidden_statements=now.hidden,
            user=user,
            fix=GRANT_HINT.format(user=user),
        )
    if found.evicted:
        log(
            "slow_queries.evicted",
            "notice",
            statements=found.evicted,
            hint="pg_stat_statements.max is too small: statements are forgotten between collects",
        )
    shown = found.slow[: top or settings.slow_query_top]
    result: dict[str, Any] = {
        "baseline": previous is None,
        "reset": found.reset,
        "window_start": found.start.isoformat(),
        "window_end": now.taken_at.isoformat(),
        "window_seconds": round(found.seconds, 3),
        "statements": len(now.statements),
        "hidden_statements": now.hidden,
        "evicted_statements": found.evicted,
        "threshold_ms": threshold,
        "slow": inserted,
        "top": [_top_entry(s) for s in shown],
    }
    write_top(settings.metrics_dir, shown, len(found.slow), found.seconds)
    if (
        previous is None
        or previous.last_pruned_at is None
        or (now.taken_at - previous.last_pruned_at >= PRUNE_EVERY)
    ):
        result["pruned"] = prune(settings)
    return result


def _top_entry(s: Slow) -> dict[str, Any]:
    return {
        "queryid": s.statement.key[2],
        "database": s.statement.datname,
        "user": s.statement.usename,
        "calls": s.window.calls,
        "p95_ms": round(s.window.p95_ms, 3),
        "mean_ms": round(s.window.mean_ms, 3),
        "query": one_line(s.statement.query, LABEL_QUERY_CHARS),
    }


def run_collect(
    settings: Settings, *, threshold_ms: float | None = None, top: int | None = None
) -> dict[str, Any]:
    """collect as the dbtier job slow_queries: logfmt lines, dbtier_slow_queries.prom."""
    _threshold(settings, threshold_ms)  # bad input is no failed run
    with run_job(Job(JOB_NAME), history_dsn=None, metrics_dir=settings.metrics_dir) as job:
        result = collect(settings, threshold_ms=threshold_ms, top=top)
        job.rows = result["slow"]
        log(
            "slow_queries.collected",
            baseline=result["baseline"],
            window_seconds=result["window_seconds"],
            statements=result["statements"],
            slow=result["slow"],
            threshold_ms=result["threshold_ms"],
        )
    return result


METRICS = (
    ("dbtier_slow_query_p95_seconds", "Estimated p95 execution time in the latest window."),
    ("dbtier_slow_query_mean_seconds", "Mean execution time in the latest window."),
    ("dbtier_slow_query_calls", "Calls in the latest window."),
)


def top_text(slow: list[Slow], count: int, window_seconds: float) -> str:
    """The textfile: the given (top) statements, the count over the threshold, the window."""
    lines = []
    values: dict[str, Callable[[Window], float]] = {
        "dbtier_slow_query_p95_seconds": lambda w: round(w.p95_ms / 1000, 6),
        "dbtier_slow_query_mean_seconds": lambda w: round(w.mean_ms / 1000, 6),
        "dbtier_slow_query_calls": lambda w: w.calls,
    }
    for name, help_text in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for s in slow:
            labels = {
                "queryid": str(s.statement.key[2]),
                "datname": s.statement.datname,
                "usename": s.statement.usename,
                "query": one_line(s.statement.query, LABEL_QUERY_CHARS),
            }
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {values[name](s.window)}")
    lines += [
        "# HELP dbtier_slow_queries Statements over the threshold in the latest window.",
        "# TYPE dbtier_slow_queries gauge",
        f"dbtier_slow_queries {count}",
        "# HELP dbtier_slow_queries_window_seconds Length of the latest window (0: baseline).",
        "# TYPE dbtier_slow_queries_window_seconds gauge",
        f"dbtier_slow_queries_window_seconds {round(window_seconds, 3)}",
    ]
    return "\n".join(lines) + "\n"


def write_top(metrics_dir: str | None, slow: list[Slow], count: int, seconds: float) -> None:
    """Rewritten on every collect, so a statement no longer slow drops out."""
    if metrics_dir:
        write_textfile(Path(metrics_dir) / TOP_FILE, top_text(slow, count, seconds))


# -------------------------------------------------------------------------------------- prune


def prune(
    settings: Settings, *, retention_days: int | None = None, batch_size: int = PRUNE_BATCH
) -> dict[str, Any]:
    """Delete log rows older than the retention, a batch per transaction (no long lock, little
    WAL at once), and every sample but the newest."""
    days = settings.slow_query_retention_days if retention_days is None else retention_days
    if days < 1:
        raise UsageError(f"retention must be at least 1 day (got {days})")
    started = time.monotonic()
    deleted = batches = 0
    with _connect(settings, autocommit=True) as conn:
        _require_tables(conn)
        while True:
            count = conn.execute(
                "DELETE FROM public.query_performance_log WHERE id IN (SELECT id FROM "
                "public.query_performance_log WHERE created_at < now() - make_interval(days => %s) "
                "LIMIT %s)",
                (days, batch_size),
            ).rowcount
            deleted += count
            batches += 1
            if count < batch_size:
                break
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '60s'")
            conn.execute("LOCK TABLE public.query_stats_sample IN EXCLUSIVE MODE")
            samples = conn.execute(
                "DELETE FROM public.query_stats_sample "
                "WHERE id < (SELECT max(id) FROM public.query_stats_sample)"
            ).rowcount
            conn.execute(
                "UPDATE public.query_stats_sample SET last_pruned_at = clock_timestamp() "
                "WHERE id = (SELECT max(id) FROM public.query_stats_sample)"
            )
    result = {
        "retention_days": days,
        "deleted_rows": deleted,
        "batches": batches,
        "deleted_samples": samples,
        "seconds": round(time.monotonic() - started, 3),
    }
    log("slow_queries.pruned", **result)
    return result


# ------------------------------------------------------------------------------------- report

ORDER = {"p95": "p95_ms", "total": "total_ms", "calls": "calls"}
_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """'24h', '7d', '30m', '2w' -> timedelta."""
    match = _SINCE.match(text)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--since wants a period like 30m, 24h, 7d or 2w (got {text!r})")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def report(
    settings: Settings, *, since: str = "24h", by: str = "p95", limit: int = 10
) -> dict[str, Any]:
    """The top statements of the period: calls, rows and time summed over their windows; p95 is
    the worst window's (a 5-minute spike stays visible in a week's report)."""
    if by not in ORDER:
        raise UsageError(f"--by must be one of {', '.join(ORDER)} (got {by!r})")
    period = parse_since(since)
    with _connect(settings, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.query_performance_log')").fetchone()[0] is None:
            raise UsageError("table query_performance_log not found (run: dbtier-job migrate up)")
        rows = conn.execute(
            f"""
            SELECT query_hash, max(queryid), database_name, user_name,
                   (array_agg(query_text ORDER BY created_at DESC))[1],
                   sum(calls) AS calls,
                   sum(coalesce(total_time_ms, execution_time_ms * calls)) AS total_ms,
                   max(coalesce(p95_ms, execution_time_ms)) AS p95_ms, max(max_ms), sum(rows),
                   count(*), max(coalesce(window_end, captured_at))
            FROM public.query_performance_log
            WHERE coalesce(window_end, captured_at) >= now() - %s
            GROUP BY query_hash, database_name, user_name
            ORDER BY {ORDER[by]} DESC, query_hash LIMIT %s
            """,  # ORDER[by]: one of three fixed output column names, never user text
            (period, limit),
        ).fetchall()
        total_rows = conn.execute("SELECT count(*) FROM public.query_performance_log").fetchone()
    queries = [_report_row(row) for row in rows]
    return {
        "since": since,
        "by": by,
        "threshold_ms": settings.slow_query_threshold_ms,
        "logged_rows": int(total_rows[0]),
        "queries": queries,
    }


def _report_row(row: tuple[Any, ...]) -> dict[str, Any]:
    query_hash, queryid, database, user, text, calls, total_ms, p95, mx, nrows, windows, seen = row
    return {
        "queryid": queryid if queryid is not None else query_hash,
        "database": database,
        "user": user,
        "query": text,
        "calls": int(calls),
        "total_ms": float(total_ms),
        "mean_ms": round(float(total_ms) / int(calls), 3) if calls else None,
        "p95_ms": float(p95),
        "max_ms": None if mx is None else float(mx),
        "rows": None if nrows is None else int(nrows),
        "windows": windows,
        "last_seen": seen.isoformat(),
    }


def report_text(result: dict[str, Any]) -> str:
    if not result["queries"]:
        where = (
            "is empty" if not result["logged_rows"] else f"has none in the last {result['since']}"
        )
        return (
            f"no slow queries: query_performance_log {where} (over "
            f"{result['threshold_ms']:g} ms). They are collected by 'dbtier-job slow-queries "
            "collect' (cron, every 5 minutes on the ops host); run it twice, a window apart."
        )
    lines = [
        f"slow queries of the last {result['since']} by {result['by']} "
        f"(p95 = worst window's estimate; threshold {result['threshold_ms']:g} ms)",
        f"{'P95 MS':>10} {'MEAN MS':>10} {'CALLS':>8} {'ROWS':>10} {'DATABASE':<12} "
        f"{'USER':<16} {'LAST SEEN':<16} QUERY",
    ]
    for q in result["queries"]:
        rows = "-" if q["rows"] is None else str(q["rows"])
        mean = "-" if q["mean_ms"] is None else f"{q['mean_ms']:.1f}"
        lines.append(
            f"{q['p95_ms']:>10.1f} {mean:>10} {q['calls']:>8} {rows:>10} "
            f"{(q['database'] or '-')[:12]:<12} {(q['user'] or '-')[:16]:<16} "
            f"{q['last_seen'][:16].replace('T', ' '):<16} "
            + one_line(q["query"], REPORT_QUERY_CHARS)
        )
    return "\n".join(lines)


def collect_text(result: dict[str, Any]) -> str:
    if result["baseline"]:
        return (
            f"baseline: {result['statements']} statements sampled; the next collect logs the "
            f"window since {result['window_end'][:19]}"
        )
    lines = [
        f"window {result['window_seconds']:g} s: {result['statements']} statements, "
        f"{result['slow']} over {result['threshold_ms']:g} ms logged"
    ]
    lines += [
        f"  p95 {t['p95_ms']:.1f} ms  mean {t['mean_ms']:.1f} ms  calls {t['calls']}  "
        f"{t['database']}/{t['user']}  {t['query']}"
        for t in result["top"]
    ]
    if result["hidden_statements"]:
        lines.append(
            f"  {result['hidden_statements']} statements of other users hidden: "
            "grant pg_read_all_stats to this login"
        )
    return "\n".join(lines)
