"""Refresh the reporting materialized views without blocking readers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import UsageError

VIEWS = ("mv_scenario_daily_stats", "mv_monthly_costs", "mv_source_analytics")


def refresh(
    dsn: str | None,
    names: list[str] | None = None,
    *,
    concurrently: bool = True,
    report: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """REFRESH each view; CONCURRENTLY needs it populated and a unique index (the migration
    creates both), so a never-populated view gets a plain refresh first."""
    wanted = list(names) if names else list(VIEWS)
    results = []
    from psycopg import sql  # not at import: the CLI (wal-push too) imports this module

    from . import db

    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT schemaname, matviewname, ispopulated FROM pg_matviews "
            "WHERE matviewname = ANY(%s)",
            (wanted,),
        ).fetchall()
        found = {name: (schema, populated) for schema, name, populated in rows}
        missing = [name for name in wanted if name not in found]
        if missing:
            raise UsageError(
                f"materialized view {missing[0]} not found (is the database migrated?)"
            )
        for name in wanted:
            schema, populated = found[name]
            mode = "concurrently" if concurrently and populated else "blocking"
            statement = sql.SQL("REFRESH MATERIALIZED VIEW {conc}{schema}.{name}").format(
                conc=sql.SQL("CONCURRENTLY " if mode == "concurrently" else ""),
                schema=sql.Identifier(schema),
                name=sql.Identifier(name),
            )
            started = time.monotonic()
            report(f"refreshing {schema}.{name} ({mode})")
            conn.execute(statement)
            results.append(
                {
                    "view": f"{schema}.{name}",
                    "mode": mode,
                    "execution_ms": int((time.monotonic() - started) * 1000),
                }
            )
    return results
