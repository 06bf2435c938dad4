"""Versioned SQL migrations: load files, keep a ledger, plan and apply them under a lock.

Files live in one directory, named ``NNNN_name.up.sql`` and ``NNNN_name.down.sql`` (version =
the leading integer; order is numeric). A file whose leading comments contain
``-- dbtier:no-transaction`` runs statement by statement in autocommit mode, for
CREATE/DROP INDEX CONCURRENTLY, REFRESH MATERIALIZED VIEW CONCURRENTLY and VACUUM; every other
file runs in one transaction together with its ledger row, so a failure leaves no trace.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import socket
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlparse
from psycopg import sql

from . import db
from .errors import DbtierError, DriftError, LockTimeout, UsageError

LEDGER_SCHEMA = "dbtier"
NO_TRANSACTION_MARKER = "dbtier:no-transaction"
FILE_RE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_]+)\.(?P<direction>up|down)\.sql$")
# An SQL identifier as PostgreSQL's lexer reads it: "quoted" ("" is a quote) or unquoted.
IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)'
IDENT_RE = re.compile(IDENT)
CREATE_INDEX_RE = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:(?P<name>{IDENT})\s*)?\bON\b\s*(?:ONLY\b\s*)?"
    rf"(?P<table>{IDENT}(?:\s*\.\s*{IDENT})*)",
    re.IGNORECASE,
)
NAMEDATALEN = 64  # PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an identifier
# A signed 64-bit key for pg_try_advisory_lock, stable across versions of dbtier.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"dbtier.migrate").digest()[:8], "big", signed=True)

# 'forget' came later: older ledgers get it added by _allow_forget_in_history.
HISTORY_DIRECTIONS = "('up', 'down', 'repair', 'forget')"
LEDGER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA};
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.schema_migrations (
    version       bigint      PRIMARY KEY,
    name          text        NOT NULL,
    checksum      char(64)    NOT NULL,
    success       boolean     NOT NULL,
    transactional boolean     NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    applied_by    text        NOT NULL DEFAULT current_user,
    execution_ms  integer     NOT NULL CHECK (execution_ms >= 0)
);
COMMENT ON TABLE {LEDGER_SCHEMA}.schema_migrations IS
    'Applied migrations (dbtier migrate). One row per version that is in effect now.';
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.migration_history (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version       bigint      NOT NULL,
    name          text        NOT NULL,
    direction     text        NOT NULL CHECK (direction IN {HISTORY_DIRECTIONS}),
    checksum      char(64)    NOT NULL,
    success       boolean     NOT NULL,
    error         text,
    started_at    timestamptz NOT NULL,
    execution_ms  integer     NOT NULL CHECK (execution_ms >= 0),
    applied_by    text        NOT NULL DEFAULT current_user,
    client        text        NOT NULL
);
COMMENT ON TABLE {LEDGER_SCHEMA}.migration_history IS
    'Every attempt to apply, revert, repair or forget a migration, failed ones included.';
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_path: Path
    down_path: Path
    up_sql: str
    down_sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def up_transactional(self) -> bool:
        return is_transactional(self.up_sql)

    @property
    def down_transactional(self) -> bool:
        return is_transactional(self.down_sql)

    def sql_for(self, direction: str) -> str:
        return self.up_sql if direction == "up" else self.down_sql

    def path_for(self, direction: str) -> Path:
        return self.up_path if direction == "up" else self.down_path

    def transactional_for(self, direction: str) -> bool:
        return is_transactional(self.sql_for(direction))


@dataclass(frozen=True)
class Step:
    direction: str  # "up" or "down"
    migration: Migration

    def as_dict(self) -> dict[str, Any]:
        m = self.migration
        return {
            "version": m.version,
            "name": m.name,
            "direction": self.direction,
            "file": m.path_for(self.direction).name,
            "transactional": m.transactional_for(self.direction),
        }


@dataclass
class LedgerRow:
    version: int
    name: str
    checksum: str
    success: bool
    transactional: bool
    applied_at: Any
    applied_by: str
    execution_ms: int


@dataclass
class RepairResult:
    repaired: list[str] = field(default_factory=list)  # checksum set to the file's
    forgotten: list[str] = field(default_factory=list)  # ledger row removed (--forget)
    missing: list[str] = field(default_factory=list)  # applied, file gone, not forgotten


@dataclass(frozen=True)
class Drift:
    version: int
    message: str
    missing: bool  # the file disappeared (else: its contents changed)

    def __str__(self) -> str:
        return self.message


@dataclass
class RunResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    rebuilt_indexes: list[str] = field(default_factory=list)
    before_version: int = 0
    after_version: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.steps or self.rebuilt_indexes)


Reporter = Callable[[str], None]


def _silent(_: str) -> None:
    return None


# --------------------------------------------------------------------------- files


def is_transactional(text: str) -> bool:
    """False when the marker appears in the file's leading comment block."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            return True
        if stripped.lstrip("-").strip().lower() == NO_TRANSACTION_MARKER:
            return False
    return True


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_migrations(directory: str | Path) -> list[Migration]:
    """Every migration in the directory, sorted; UsageError on anything malformed."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"migrations directory not found: {root}")
    ups: dict[int, tuple[str, Path]] = {}
    downs: dict[int, tuple[str, Path]] = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() or not path.name.endswith(".sql"):
            continue
        match = FILE_RE.match(path.name)
        if not match:
            raise UsageError(
                f"unexpected file name {path.name} in {root}: expected NNNN_name.up.sql or "
                "NNNN_name.down.sql"
            )
        version, name = int(match["version"]), match["name"]
        bucket = ups if match["direction"] == "up" else downs
        if version in bucket:
            raise UsageError(
                f"duplicate migration version {version}: {bucket[version][1].name} and {path.name}"
            )
        bucket[version] = (name, path)
    for version, (name, path) in downs.items():
        if version not in ups:
            raise UsageError(f"down file {path.name} has no matching up file")
        if ups[version][0] != name:
            raise UsageError(f"{path.name} does not match {ups[version][1].name} (name differs)")
    migrations = []
    for version, (name, up_path) in sorted(ups.items()):
        if version <= 0:
            raise UsageError(f"{up_path.name}: versions start at 1 (0 means 'nothing applied')")
        if version not in downs:
            raise UsageError(
                f"migration {up_path.name} has no down file "
                f"(expected {version:04d}_{name}.down.sql)"
            )
        down_path = downs[version][1]
        migrations.append(
            Migration(
                version=version,
                name=name,
                up_path=up_path,
                down_path=down_path,
                up_sql=up_path.read_text(encoding="utf-8"),
                down_sql=down_path.read_text(encoding="utf-8"),
                checksum=sha256_file(up_path),
            )
        )
    return migrations


def split_statements(text: str) -> list[str]:
    """Statements of a non-transactional file (dollar quotes and comments handled by sqlparse)."""
    statements = []
    for raw in sqlparse.split(text):
        body = sqlparse.format(raw, strip_comments=True).strip().rstrip(";").strip()
        if body:
            statements.append(raw.strip())
    return statements


@dataclass(frozen=True)
class IndexRef:
    """An index a CREATE INDEX statement names, with its table (names as stored in pg_class)."""

    name: str
    schema: str | None  # None: the table is found through search_path
    table: str


def fold_identifier(token: str) -> str:
    """The name PostgreSQL stores for an identifier token: "Quoted" exact, unquoted lower case."""
    if token.startswith('"'):
        name = token[1:-1].replace('""', '"')
    else:
        # The server lowers only ASCII letters in unquoted names (UTF-8 databases).
        name = "".join(c.lower() if c.isascii() else c for c in token)
    return name.encode()[: NAMEDATALEN - 1].decode("utf-8", "ignore")


def index_refs(text: str) -> list[IndexRef]:
    """The named indexes the file's CREATE INDEX statements build (unnamed ones are skipped)."""
    refs = []
    for m in CREATE_INDEX_RE.finditer(sqlparse.format(text, strip_comments=True)):
        if m["name"] is None:
            continue
        # An index always lives in its table's schema: CREATE INDEX takes no schema for it.
        parts = [fold_identifier(t) for t in IDENT_RE.findall(m["table"])]
        schema = parts[-2] if len(parts) > 1 else None
        refs.append(IndexRef(name=fold_identifier(m["name"]), schema=schema, table=parts[-1]))
    return refs


def index_names(text: str) -> list[str]:
    return [ref.name for ref in index_refs(text)]


# --------------------------------------------------------------------------- ledger


def ledger_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{LEDGER_SCHEMA}.schema_migrations",)
    ).fetchone()
    return bool(row and row[0])


def ensure_ledger(conn: psycopg.Connection) -> None:
    if not ledger_exists(conn):
        with conn.transaction():
            conn.execute(LEDGER_DDL)


def read_ledger(conn: psycopg.Connection) -> dict[int, LedgerRow]:
    if not ledger_exists(conn):
        return {}
    rows = conn.execute(
        f"SELECT version, name, checksum, success, transactional, applied_at, applied_by, "
        f"execution_ms FROM {LEDGER_SCHEMA}.schema_migrations ORDER BY version"
    ).fetchall()
    return {r[0]: LedgerRow(*r) for r in rows}


def client_id() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _log_history(
    conn: psycopg.Connection,
    m: Migration | LedgerRow,
    direction: str,
    started: float,
    wall_start: float,
    error: str | None,
) -> None:
    elapsed_ms = int((time.monotonic() - started) * 1000)
    conn.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.migration_history "
        "(version, name, direction, checksum, success, error, started_at, execution_ms, client) "
        "VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, %s)",
        (
            m.version,
            m.name,
            direction,
            m.checksum,
            error is None,
            error,
            wall_start,
            elapsed_ms,
            client_id(),
        ),
    )


# --------------------------------------------------------------------------- checks


def check_drift(migrations: list[Migration], applied: dict[int, LedgerRow]) -> list[Drift]:
    """Problems with applied migrations: changed files and files that disappeared."""
    by_version = {m.version: m for m in migrations}
    problems = []
    for version, row in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            problems.append(
                Drift(
                    version,
                    f"applied migration {version:04d}_{row.name} has no file any more",
                    True,
                )
            )
        elif m.checksum != row.checksum.strip():
            problems.append(
                Drift(
                    version,
                    f"{m.up_path.name} changed since it was applied on "
                    f"{row.applied_at:%Y-%m-%d %H:%M} "
                    f"(checksum {row.checksum.strip()[:12]}... now {m.checksum[:12]}...)",
                    False,
                )
            )
    return problems


def forget_command(versions: list[int]) -> str:
    return "dbtier migrate repair " + " ".join(f"--forget {v}" for v in versions)


def raise_on_drift(problems: list[Drift]) -> None:
    if not problems:
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    gone = [d.version for d in problems if d.missing]
    if not gone:
        fix = "restore the file, or accept the new contents with 'dbtier migrate repair'"
    elif len(gone) == len(problems):
        fix = f"restore the file, or if it was deleted on purpose: '{forget_command(gone)}'"
    else:
        fix = (
            "restore the files, or accept changed files and forget deleted ones on purpose "
            f"with '{forget_command(gone)}'"
        )
    raise DriftError(f"checksum drift: {problems[0]}{more}; {fix} (or --allow-drift for this run)")


def invalid_indexes(conn: psycopg.Connection) -> list[str]:
    """schema.name of every INVALID index (a failed CREATE INDEX CONCURRENTLY leaves one)."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisvalid
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]


def invalid_indexes_of(conn: psycopg.Connection, text: str) -> list[tuple[str, str]]:
    """(schema, name) of the INVALID indexes that the file's CREATE INDEX statements build.

    Matched as PostgreSQL resolves the statement: the index name exactly (after folding), on the
    table the statement names, looked up through this session's search_path when unqualified.
    """
    found: list[tuple[str, str]] = []
    for ref in index_refs(text):
        table = sql.Identifier(*filter(None, [ref.schema, ref.table])).as_string(conn)
        row = conn.execute(
            """
            SELECT n.nspname, c.relname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT i.indisvalid AND c.relname = %s AND i.indrelid = to_regclass(%s)
            """,
            (ref.name, table),
        ).fetchone()
        if row and row not in found:
            found.append((row[0], row[1]))
    return found


def _resolve_target(migrations: list[Migration], target: int | None, direction: str) -> int:
    known = [m.version for m in migrations]
    if target is None:
        if direction == "down":
            raise UsageError("migrate down needs --target VERSION (0 reverts everything)")
        return max(known, default=0)
    if target == 0 or target in known:
        return target
    listed = ", ".join(str(v) for v in known) or "none"
    raise UsageError(f"unknown migration version {target} (known: 0, {listed})")


def out_of_order(migrations: list[Migration], applied: dict[int, LedgerRow]) -> list[Migration]:
    """Files not applied whose version is below the highest applied one (added late)."""
    top = current_version(applied)
    return [m for m in migrations if m.version not in applied and m.version < top]


def raise_on_out_of_order(steps: list[Step], applied: dict[int, LedgerRow]) -> None:
    """Like Flyway's validate: a file slipped in below the applied version is not applied
    silently, it may depend on (or conflict with) what later versions already changed."""
    top = current_version(applied)
    late = [s.migration.up_path.name for s in steps if s.migration.version < top]
    if late:
        raise UsageError(
            f"{', '.join(late)} {'is' if len(late) == 1 else 'are'} below the applied version "
            f"{top} but not applied (added out of order): renumber above the latest migration, "
            "or apply deliberately with --out-of-order"
        )


def plan_steps(
    migrations: list[Migration],
    applied: dict[int, LedgerRow],
    direction: str,
    target: int | None,
    *,
    allow_out_of_order: bool = False,
) -> list[Step]:
    goal = _resolve_target(migrations, target, direction)
    if direction == "up":
        steps = [
            Step("up", m) for m in migrations if m.version not in applied and m.version <= goal
        ]
        if not allow_out_of_order:
            raise_on_out_of_order(steps, applied)
        return steps  # in version order, out-of-order files included
    return [
        Step("down", m) for m in reversed(migrations) if m.version in applied and m.version > goal
    ]


# --------------------------------------------------------------------------- lock


def _lock_holder(conn: psycopg.Connection) -> str:
    key = LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        """
        SELECT a.pid, a.usename, a.client_addr::text, a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.classid::bigint = %s AND l.objid::bigint = %s
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    if not row:
        return "another session"
    return f"pid {row[0]} ({row[1]} from {row[2] or 'local socket'}, connected {row[3]:%H:%M:%S})"


@contextmanager
def migration_lock(
    dsn: str, timeout: float, report: Reporter = _silent, poll: float = 0.25
) -> Iterator[None]:
    """Session advisory lock on a dedicated connection, polled until `timeout` seconds."""
    conn = db.connect(dsn, autocommit=True)
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"migration lock on {db.describe(dsn)} is held by {_lock_holder(conn)}; "
                    f"gave up after {timeout:g}s (raise --lock-timeout or stop the other run)"
                )
            if not announced:
                report(f"waiting for the migration lock (held by {_lock_holder(conn)})")
                announced = True
            time.sleep(poll)
        try:
            yield
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


# --------------------------------------------------------------------------- apply


def _repair_invalid_indexes(conn: psycopg.Connection, m: Migration, report: Reporter) -> list[str]:
    """Drop INVALID indexes this migration creates, so that it builds them again."""
    dropped = []
    for schema, name in invalid_indexes_of(conn, m.up_sql):
        qualified = f"{schema}.{name}"
        report(f"index {qualified} is INVALID (an earlier build failed): dropping to rebuild")
        conn.execute(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        )
        dropped.append(qualified)
    return dropped


def _run_one(conn: psycopg.Connection, step: Step, report: Reporter) -> dict[str, Any]:
    m, direction = step.migration, step.direction
    text = m.sql_for(direction)
    transactional = m.transactional_for(direction)
    mode = "" if transactional else " (non-transactional)"
    report(f"{direction:<4} {m.label}{mode} ...")
    wall_start, started = time.time(), time.monotonic()
    if direction == "up":
        record = sql.SQL(
            "INSERT INTO {}.schema_migrations (version, name, checksum, success, transactional, "
            "execution_ms) VALUES (%s, %s, %s, true, %s, %s)"
        ).format(sql.Identifier(LEDGER_SCHEMA))
    else:
        record = sql.SQL("DELETE FROM {}.schema_migrations WHERE version = %s").format(
            sql.Identifier(LEDGER_SCHEMA)
        )

    def write_record() -> None:
        if direction == "up":
            elapsed = int((time.monotonic() - started) * 1000)
            conn.execute(record, (m.version, m.name, m.checksum, m.up_transactional, elapsed))
        else:
            conn.execute(record, (m.version,))

    try:
        if transactional:
            with conn.transaction():
                conn.execute(text)  # no parameters: simple protocol, several statements allowed
                write_record()
        else:
            for statement in split_statements(text):
                conn.execute(statement)
            if direction == "up":
                bad = invalid_indexes_of(conn, text)
                if bad:
                    raise DbtierError(f"index {'.'.join(bad[0])} is INVALID after the build")
            write_record()
    except psycopg.Error as exc:
        error = db.first_line(exc)
        _log_history(conn, m, direction, started, wall_start, error)
        where = f"{m.path_for(direction).name}"
        note = "rolled back" if transactional else "statements before it stay applied; not recorded"
        raise DbtierError(f"migration {where} failed: {error} ({note})") from None
    except DbtierError as exc:
        _log_history(conn, m, direction, started, wall_start, str(exc))
        raise DbtierError(f"migration {m.path_for(direction).name} failed: {exc}") from None
    _log_history(conn, m, direction, started, wall_start, None)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    report(f"     {m.label} done in {elapsed_ms} ms")
    return {**step.as_dict(), "execution_ms": elapsed_ms}


def current_version(applied: dict[int, LedgerRow]) -> int:
    return max(applied, default=0)


def migrate(
    dsn: str | None,
    directory: str | Path,
    direction: str = "up",
    target: int | None = None,
    *,
    allow_drift: bool = False,
    out_of_order: bool = False,
    lock_timeout: float = 60.0,
    ddl_lock_timeout: str | None = None,
    report: Reporter = _silent,
) -> RunResult:
    """Apply (up) or revert (down) migrations up to `target`, under the advisory lock.

    `out_of_order` applies files whose version is below the highest applied one (refused
    otherwise)."""
    if direction not in ("up", "down"):
        raise UsageError(f"unknown direction {direction!r} (expected up or down)")
    migrations = load_migrations(directory)
    dsn = db.resolve_dsn(dsn)
    _resolve_target(migrations, target, direction)  # fail on a bad target before connecting
    with migration_lock(dsn, lock_timeout, report), db.connect(dsn, autocommit=True) as conn:
        if ddl_lock_timeout:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(ddl_lock_timeout)))
        ensure_ledger(conn)
        applied = read_ledger(conn)
        if not allow_drift:
            raise_on_drift(check_drift(migrations, applied))
        steps = plan_steps(migrations, applied, direction, target, allow_out_of_order=out_of_order)
        result = RunResult(before_version=current_version(applied))
        for step in steps:
            if direction == "up" and not step.migration.up_transactional:
                result.rebuilt_indexes += _repair_invalid_indexes(conn, step.migration, report)
            result.steps.append(_run_one(conn, step, report))
        result.after_version = current_version(read_ledger(conn))
    return result


def plan(
    dsn: str | None,
    directory: str | Path,
    direction: str = "up",
    target: int | None = None,
    *,
    allow_drift: bool = False,
    out_of_order: bool = False,
) -> RunResult:
    """What `migrate` would do, without changing anything (the ledger is not even created)."""
    migrations = load_migrations(directory)
    _resolve_target(migrations, target, direction)
    with db.connect(dsn, autocommit=True) as conn:
        applied = read_ledger(conn)
        if not allow_drift:
            raise_on_drift(check_drift(migrations, applied))
        steps = plan_steps(migrations, applied, direction, target, allow_out_of_order=out_of_order)
        rebuilt = [
            f"{schema}.{name}"
            for s in steps
            if direction == "up" and not s.migration.up_transactional
            for schema, name in invalid_indexes_of(conn, s.migration.up_sql)
        ]
    result = RunResult(before_version=current_version(applied))
    result.steps = [s.as_dict() for s in steps]
    result.rebuilt_indexes = rebuilt
    versions = set(applied)
    for s in steps:
        if s.direction == "up":
            versions.add(s.migration.version)
        else:
            versions.discard(s.migration.version)
    result.after_version = max(versions, default=0)
    return result


def status(dsn: str | None, directory: str | Path) -> dict[str, Any]:
    """Every known migration with its state, plus drift and INVALID indexes."""
    migrations = load_migrations(directory)
    with db.connect(dsn, autocommit=True) as conn:
        applied = read_ledger(conn)
        invalid = invalid_indexes(conn)
        server = conn.info.parameter_status("server_version")
    drift = check_drift(migrations, applied)
    late = {m.version for m in out_of_order(migrations, applied)}
    rows = []
    files = {m.version: m for m in migrations}
    for version in sorted(set(files) | set(applied)):
        m, row = files.get(version), applied.get(version)
        if row is None:
            state = "out-of-order" if version in late else "pending"
        elif m is None:
            state = "missing-file"
        elif m.checksum != row.checksum.strip():
            state = "drifted"
        else:
            state = "applied"
        rows.append(
            {
                "version": version,
                "name": m.name if m else row.name,  # type: ignore[union-attr]
                "state": state,
                "transactional": m.up_transactional if m else row.transactional,  # type: ignore[union-attr]
                "applied_at": row.applied_at.isoformat() if row else None,
                "applied_by": row.applied_by if row else None,
                "execution_ms": row.execution_ms if row else None,
            }
        )
    return {
        "database": db.describe(db.resolve_dsn(dsn)),
        "server_version": server,
        "current_version": current_version(applied),
        "latest_version": max(files, default=0),
        "migrations": rows,
        "drift": [str(d) for d in drift],
        "out_of_order": [files[v].up_path.name for v in sorted(late)],
        "invalid_indexes": invalid,
    }


def _allow_forget_in_history(conn: psycopg.Connection) -> None:
    """Widen the direction CHECK of a history table created before 'forget' existed."""
    row = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND conname = 'migration_history_direction_check'",
        (f"{LEDGER_SCHEMA}.migration_history",),
    ).fetchone()
    if row and "'forget'" not in row[0]:
        conn.execute(
            f"ALTER TABLE {LEDGER_SCHEMA}.migration_history "
            "DROP CONSTRAINT migration_history_direction_check, "
            "ADD CONSTRAINT migration_history_direction_check "
            f"CHECK (direction IN {HISTORY_DIRECTIONS})"
        )


def repair(
    dsn: str | None,
    directory: str | Path,
    *,
    forget: Collection[int] = (),
    lock_timeout: float = 60.0,
    report: Reporter = _silent,
) -> RepairResult:
    """Accept the current files: set the ledger's checksums to theirs.

    A ledger row whose file is gone is removed only when its version is in `forget`: a file
    lost by accident must not be forgotten silently. Forgetting reverts nothing in the schema.
    """
    migrations = load_migrations(directory)
    files = {m.version: m for m in migrations}
    dsn = db.resolve_dsn(dsn)
    result = RepairResult()
    with migration_lock(dsn, lock_timeout, report), db.connect(dsn, autocommit=True) as conn:
        applied = read_ledger(conn)
        for version in sorted(set(forget)):  # all checked before anything changes
            if version in files:
                raise UsageError(
                    f"--forget {version}: {files[version].up_path.name} still exists; forget "
                    "only rows whose file was deleted (to revert it, use 'dbtier migrate down')"
                )
            if version not in applied:
                listed = ", ".join(str(v) for v in applied) or "none"
                raise UsageError(
                    f"--forget {version}: version {version} is not applied (applied: {listed})"
                )
        for m in migrations:
            row = applied.get(m.version)
            if row is None or row.checksum.strip() == m.checksum:
                continue
            wall_start, started = time.time(), time.monotonic()
            with conn.transaction():
                conn.execute(
                    f"UPDATE {LEDGER_SCHEMA}.schema_migrations SET checksum = %s "
                    "WHERE version = %s",
                    (m.checksum, m.version),
                )
                _log_history(conn, m, "repair", started, wall_start, None)
            report(f"repair {m.label}: checksum set to the file's ({m.checksum[:12]}...)")
            result.repaired.append(m.label)
        for version, row in sorted(applied.items()):
            if version in files:
                continue
            label = f"{version:04d}_{row.name}"
            if version not in forget:
                result.missing.append(label)
                continue
            wall_start, started = time.time(), time.monotonic()
            with conn.transaction():
                _allow_forget_in_history(conn)
                conn.execute(
                    f"DELETE FROM {LEDGER_SCHEMA}.schema_migrations WHERE version = %s",
                    (version,),
                )
                _log_history(conn, row, "forget", started, wall_start, None)
            report(f"forget {label}: ledger row removed (what it created stays in the database)")
            result.forgotten.append(label)
    return result
