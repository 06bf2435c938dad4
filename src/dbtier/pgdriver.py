"""A DB-API connection with whichever PostgreSQL driver the host has: psycopg2 (Debian's
python3-psycopg2, what community.postgresql uses) or psycopg 3. For the Ansible modules that run
on hosts without dbtier (module_utils): standard library only, the driver imported when needed."""

from __future__ import annotations

from typing import Any

from .errors import DbtierError


def connect(**params: Any) -> Any:
    """connect(host=..., port=..., dbname=..., user=..., password=..., sslmode=..., ...) in
    autocommit mode; empty or None parameters are left to libpq's defaults."""
    kwargs = {k: v for k, v in params.items() if v not in (None, "")}
    kwargs.setdefault("application_name", "dbtier")
    try:
        import psycopg2

        conn = psycopg2.connect(**kwargs)
    except ImportError:
        try:
            import psycopg
        except ImportError:
            raise DbtierError(
                "neither psycopg2 nor psycopg is installed on the host running this module"
            ) from None
        conn = psycopg.connect(**kwargs)
    conn.autocommit = True
    return conn


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg2: pgcode, psycopg 3: sqlstate)."""
    return getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
