"""Errors that end a dbtier command with a one-line message and a documented exit code."""

from __future__ import annotations

# Exit codes, documented in the README ("Exit codes"). Keep them stable: cron wrappers,
# Ansible and alerting match on them.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (SQL error in a migration, ...)
EXIT_USAGE = 2  # bad input: unknown version, missing or malformed file, bad option
EXIT_DRIFT = 3  # an applied migration's file changed or disappeared
EXIT_LOCKED = 4  # another run holds the lock and did not release it in time
EXIT_UNREACHABLE = 5  # cannot connect to PostgreSQL
EXIT_TERMINATED = 143  # stopped by SIGTERM (128 + 15, what a shell reports), after cleaning up


class DbtierError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DbtierError):
    exit_code = EXIT_USAGE


class DriftError(DbtierError):
    exit_code = EXIT_DRIFT


class LockTimeout(DbtierError):
    exit_code = EXIT_LOCKED


class Unreachable(DbtierError):
    exit_code = EXIT_UNREACHABLE


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Terminated(DbtierError):
    """Raised by the SIGTERM handler, so a stopped job cleans up exactly as a failed one."""

    exit_code = EXIT_TERMINATED
