"""PgBouncer's admin console as Prometheus metrics (text exposition format 0.0.4), for GET /metrics
of the PgBouncer health service (health.py).

Debian's prometheus-pgbouncer-exporter 1.7 crashes against PgBouncer 1.18 (it expects SHOW STATS
columns that are gone), so this reads the columns it needs by name from each process's admin
console: one psql per PgBouncer process (`--csv`, SHOW LISTS / POOLS / DATABASES / STATS / CONFIG),
all at once, each killed at the timeout. A process that does not answer is pgbouncer_up 0 and the
others are still reported.

Standard library and psql only, like health.py: roles/pgbouncer installs this file beside it on the
PgBouncer hosts (no dbtier there). The login must be one of PgBouncer's stats_users (SHOW only).
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECTIONS = ("LISTS", "POOLS", "DATABASES", "STATS", "CONFIG")
# psql prints this line (\echo) before each result: every SHOW result has two or more columns, so a
# CSV record with this single field cannot be a row of one.
MARKER = "dbtier-pgbouncer-section"

Rows = list[dict[str, str]]
Labels = tuple[tuple[str, str], ...]

# name: (type, help), in the order they are exposed
FAMILIES: dict[str, tuple[str, str]] = {
    "pgbouncer_up": ("gauge", "1 when the PgBouncer process's admin console answered"),
    "pgbouncer_max_client_conn": ("gauge", "max_client_conn of the process (SHOW CONFIG)"),
    "pgbouncer_client_connections": (
        "gauge",
        "Client connections of the process, all states (SHOW LISTS used_clients)",
    ),
    "pgbouncer_pool_client_active": ("gauge", "Clients linked to a server or idle (cl_active)"),
    "pgbouncer_pool_client_waiting": ("gauge", "Clients waiting for a server (cl_waiting)"),
    "pgbouncer_pool_server_active": ("gauge", "Server connections linked to a client (sv_active)"),
    "pgbouncer_pool_server_idle": ("gauge", "Server connections idle and usable (sv_idle)"),
    "pgbouncer_pool_maxwait_seconds": (
        "gauge",
        "Age of the oldest waiting client of the pool (maxwait, maxwait_us)",
    ),
    "pgbouncer_database_pool_size": ("gauge", "pool_size of the database (SHOW DATABASES)"),
    "pgbouncer_stats_xact_count_total": ("counter", "Transactions pooled (total_xact_count)"),
    "pgbouncer_stats_query_count_total": ("counter", "Queries pooled (total_query_count)"),
    "pgbouncer_stats_xact_time_seconds_total": (
        "counter",
        "Time spent in transactions, idle in transaction included (total_xact_time)",
    ),
    "pgbouncer_stats_wait_time_seconds_total": (
        "counter",
        "Time clients spent waiting for a server (total_wait_time)",
    ),
    "pgbouncer_scrape_duration_seconds": (
        "gauge",
        "Seconds it took to ask every PgBouncer process for these metrics",
    ),
}

# metric: SHOW POOLS column, per database/user
_POOL_COLUMNS = {
    "pgbouncer_pool_client_active": "cl_active",
    "pgbouncer_pool_client_waiting": "cl_waiting",
    "pgbouncer_pool_server_active": "sv_active",
    "pgbouncer_pool_server_idle": "sv_idle",
}
# metric: (SHOW STATS column, scale), per database; PgBouncer counts times in microseconds
_STATS_COLUMNS = {
    "pgbouncer_stats_xact_count_total": ("total_xact_count", 1.0),
    "pgbouncer_stats_query_count_total": ("total_query_count", 1.0),
    "pgbouncer_stats_xact_time_seconds_total": ("total_xact_time", 1e-6),
    "pgbouncer_stats_wait_time_seconds_total": ("total_wait_time", 1e-6),
}


class ScrapeError(Exception):
    """A process's admin console did not answer as expected; the message says why."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


def psql_command(dsn: str, psql: str = "psql") -> list[str]:
    """psql asking one process's admin console (the DSN's own database is replaced by
    `pgbouncer`: the last dbname of a libpq connection string wins) for every section."""
    cmd = [
        psql,
        "-X",
        "-q",
        "-w",
        "--csv",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        f"{dsn} dbname=pgbouncer",
    ]
    for section in SECTIONS:
        cmd += ["-c", f"\\echo {MARKER} {section}", "-c", f"SHOW {section}"]
    return cmd


def parse_output(text: str) -> dict[str, Rows]:
    """psql_command's output: {section: rows as {column: value}}."""
    sections: dict[str, Rows] = {}
    current: Rows | None = None
    header: list[str] | None = None
    for record in csv.reader(io.StringIO(text)):
        if len(record) == 1 and record[0].startswith(MARKER + " "):
            current = sections.setdefault(record[0][len(MARKER) + 1 :], [])
            header = None
        elif current is None or not record:
            continue
        elif header is None:
            header = record
        else:
            current.append(dict(zip(header, record, strict=False)))
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise ScrapeError(f"no answer to SHOW {', '.join(missing)}")
    return sections


def query(dsn: str, timeout: float, psql: str = "psql") -> dict[str, Rows]:
    """Every section from one process's admin console; psql is killed after `timeout` seconds."""
    try:
        proc = subprocess.run(
            psql_command(dsn, psql), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ScrapeError(f"no answer within {timeout:g}s") from None
    except OSError as exc:
        raise ScrapeError(f"cannot run {psql}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        # the first line says what failed (psql's hint follows it)
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        raise ScrapeError((lines[0] if lines else f"psql exited with {proc.returncode}")[:300])
    return parse_output(proc.stdout)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def process_samples(process: str, sections: dict[str, Rows]) -> list[Sample]:
    """The samples of one process that answered (pgbouncer_up 1 included). Columns are found by
    name and a missing or non-numeric one is left out, so another PgBouncer version loses a
    metric rather than all of them."""
    proc: Labels = (("process", process),)
    samples = [Sample("pgbouncer_up", proc, 1)]

    def add(name: str, labels: Labels, value: float | None) -> None:
        if value is not None:
            samples.append(Sample(name, labels, value))

    config = {row.get("key"): row.get("value") for row in sections["CONFIG"]}
    add("pgbouncer_max_client_conn", proc, _number(config.get("max_client_conn")))
    lists = {row.get("list"): row.get("items") for row in sections["LISTS"]}
    add("pgbouncer_client_connections", proc, _number(lists.get("used_clients")))
    for row in sections["POOLS"]:
        labels = (*proc, ("database", row.get("database", "")), ("user", row.get("user", "")))
        for name, column in _POOL_COLUMNS.items():
            add(name, labels, _number(row.get(column)))
        wait, wait_us = _number(row.get("maxwait")), _number(row.get("maxwait_us"))
        add(
            "pgbouncer_pool_maxwait_seconds",
            labels,
            None if wait is None else wait + (wait_us or 0) / 1e6,
        )
    for row in sections["DATABASES"]:
        add(
            "pgbouncer_database_pool_size",
            (*proc, ("database", row.get("name", ""))),
            _number(row.get("pool_size")),
        )
    for row in sections["STATS"]:
        labels = (*proc, ("database", row.get("database", "")))
        for name, (column, scale) in _STATS_COLUMNS.items():
            value = _number(row.get(column))
            add(name, labels, None if value is None else value * scale)
    return samples


def escape_label_value(value: str) -> str:
    """The text format's escaping of a label value: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(samples: Iterable[Sample]) -> str:
    """The exposition: each family once (HELP, TYPE, its samples), in FAMILIES' order; a family
    without samples is left out."""
    by_family: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.name not in FAMILIES:
            raise ValueError(f"unknown metric {sample.name}")
        by_family.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, (kind, help_text) in FAMILIES.items():
        if name not in by_family:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for sample in by_family[name]:
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
            lines.append(
                f"{name}{{{labels}}} {format_value(sample.value)}"
                if labels
                else f"{name} {format_value(sample.value)}"
            )
    return "\n".join(lines) + "\n"


T = TypeVar("T")


def at_once(fn: Callable[[str], T], dsns: Sequence[str]) -> list[T]:
    """fn on every process's DSN at the same time (one psql each, each bounded by its own
    timeout), results in `dsns` order: the health check and the scrape wait for the slowest
    process, not for the sum of them."""
    with ThreadPoolExecutor(max_workers=max(1, len(dsns))) as pool:
        return list(pool.map(fn, dsns))


def scrape(dsns: Sequence[str], timeout: float, psql: str = "psql") -> tuple[str, list[str]]:
    """(exposition, failures): every process (label process="1".."N", in `dsns` order) asked at
    once; failures are "process N of M: reason" for those that gave pgbouncer_up 0."""
    started = time.monotonic()

    def one(dsn: str) -> dict[str, Rows] | ScrapeError:
        try:
            return query(dsn, timeout, psql)
        except ScrapeError as exc:
            return exc

    results = at_once(one, dsns)
    samples: list[Sample] = []
    failures: list[str] = []
    for i, result in enumerate(results):
        process = str(i + 1)
        if isinstance(result, ScrapeError):
            samples.append(Sample("pgbouncer_up", (("process", process),), 0))
            failures.append(f"process {process} of {len(dsns)}: {result}")
        else:
            samples += process_samples(process, result)
    samples.append(Sample("pgbouncer_scrape_duration_seconds", (), time.monotonic() - started))
    return render(samples), failures
