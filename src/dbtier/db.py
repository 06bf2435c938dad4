"""Connections: a libpq URL or the usual PG* environment variables; passwords never shown."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .errors import Unreachable, UsageError, first_line

APPLICATION_NAME = "dbtier"


def resolve_dsn(dsn: str | None) -> str:
    """The explicit DSN, else $DATABASE_URL, else "" (libpq then reads PGHOST, PGPORT, ...)."""
    return dsn if dsn is not None else os.environ.get("DATABASE_URL", "")


def describe(dsn: str) -> str:
    """user@host:port/dbname for messages, with defaults from the PG* variables, no password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"invalid connection string: {first_line(exc)}") from None
    host = params.get("host") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or os.environ.get("USER", "?")
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"{user}@{host}:{port}/{dbname}"


def connect(dsn: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection or raise Unreachable with a one-line reason (never the password)."""
    dsn = resolve_dsn(dsn)
    where = describe(dsn)
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=int(os.environ.get("PGCONNECT_TIMEOUT", "10")),
        )
    except psycopg.OperationalError as exc:
        raise Unreachable(f"cannot connect to {where}: {reason(exc)}{job_hint()}") from None
    return conn


def job_hint() -> str:
    """What works instead, unless already under dbtier-job (it exports DBTIER_CONFIG and the
    PG* variables of credentials.env): its settings and credentials are what this lacked."""
    if os.environ.get("DBTIER_CONFIG") and os.environ.get("PGHOST"):
        return ""
    return (
        " (run it through the wrapper that loads /etc/dbtier/dbtier.toml and its credentials: "
        "dbtier-job ... on the ops host, sudo -u postgres dbtier-job ... on the database host)"
    )


def reason(exc: psycopg.OperationalError) -> str:
    """The useful part of a libpq connection error (the last non-empty line names the cause)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    # libpq prefixes: 'connection to server at "h" (ip), port p failed: FATAL:  ...'
    return last.split("failed: ", 1)[-1]


def user_tables(conn: psycopg.Connection) -> list[str]:
    """schema.table of every ordinary user table."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
        ORDER BY 1, 2
        """
    ).fetchall()
    return [f"{schema}.{name}" for schema, name in rows]


def count_rows(
    conn: psycopg.Connection, tables: Iterable[str], *, errors_as_text: bool = False
) -> dict[str, Any]:
    """Exact row counts (in the connection's current snapshot) of schema.table names.
    errors_as_text (autocommit connections): a table that cannot be read counts as
    "error: <reason>" instead of failing the whole count."""
    counts: dict[str, Any] = {}
    for table in tables:
        schema, name = table.split(".", 1)
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name)
        )
        try:
            counts[table] = conn.execute(query).fetchone()[0]
        except psycopg.Error as exc:
            if not errors_as_text:
                raise
            counts[table] = f"error: {first_line(exc)}"
    return counts
