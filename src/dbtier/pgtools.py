"""Running PostgreSQL's client programs (pg_dump, pg_restore, pg_basebackup) safely.

Passwords never go on a command line (where `ps` shows them): the DSN is passed without its
password and PGPASSWORD is set in the child's environment instead.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import DbtierError
from .pgcluster import pg_bindir


def split_password(dsn: str) -> tuple[str, dict[str, str]]:
    """(DSN without password, environment additions)."""
    params = conninfo_to_dict(dsn) if dsn else {}
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo("", **{k: str(v) for k, v in params.items()}), env


def program(name: str, major: int, bindir: str | None = None) -> str:
    path = Path(bindir) / name if bindir else pg_bindir(major, name) / name
    if not path.exists():
        raise DbtierError(f"{name} not found at {path} (install postgresql-client-{major})")
    return str(path)


def last_line(text: str | bytes | None, returncode: int) -> str:
    """The last non-empty line of a child's output, or its exit code when it printed nothing."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {returncode}, no message"


class Child:
    """A child process whose stderr is drained in the background (no pipe deadlock).

    on_line sees every stderr line; it is set before the drain thread starts, so it never misses
    the first lines (and the thread never sees a half-built object).
    """

    def __init__(
        self,
        cmd: list[str],
        env_extra: dict[str, str],
        *,
        stdout: int | None = None,
        stdin: int | None = None,
        keep_lines: int = 200,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.cmd = cmd
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.on_line = on_line
        self.proc = subprocess.Popen(
            cmd,
            stdout=stdout,
            stdin=stdin,
            stderr=subprocess.PIPE,
            env={**os.environ, **env_extra},
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line)

    def wait(self) -> int:
        rc = self.proc.wait()
        self._reader.join(timeout=10)
        return rc

    def error_line(self) -> str:
        return last_line("\n".join(self.lines), self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
