#!/usr/bin/python3
"""HTTP health check of a PgBouncer host, for the load balancer in front of the PgBouncer hosts.

GET /health answers 200 "ok" only when `SELECT 1` through the local PgBouncer succeeds within the
timeout, else 503 with the reason (PgBouncer down, the database behind it down or unreachable,
authentication refused, no answer in time). HEAD /health the same without a body.

GET /metrics: PgBouncer's metrics for Prometheus (pgbouncermetrics.py), every process's admin
console asked over its socket as the same login, which must be one of PgBouncer's stats_users;
200 even when a process does not answer (its pgbouncer_up is 0). Anything else: 404.

Each check or scrape runs psql in a child process that is killed at the timeout, so a hung
PgBouncer or server never piles up checks; at most --max-checks checks and --max-scrapes scrapes
run at once (beyond that: 503 "busy"; separate budgets, so scrapes never crowd out the load
balancer's checks).

Standard library and psql only: roles/pgbouncer installs this file and pgbouncermetrics.py alone on
the PgBouncer hosts (no dbtier there) and runs it as an unprivileged user, with the health-check
role's password in a libpq password file (PGPASSFILE; for the database and for `pgbouncer`).

    python3 health.py --port 8008 --dsn 'host=/var/run/postgresql port=6432 dbname=mockupaws'

With several PgBouncer processes sharing the port (roles/pgbouncer, so_reuseport) give one --dsn
per process (its own Unix socket): the host is healthy only when every process answers, since a
TCP check would reach whichever process the kernel picks.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if __package__:
    from . import pgbouncermetrics
else:  # run as a script: roles/pgbouncer installs pgbouncermetrics.py beside it
    import pgbouncermetrics

PATH = "/health"
METRICS_PATH = "/metrics"


def check(dsn: str, timeout: float, psql: str = "psql") -> tuple[bool, str]:
    """(healthy, reason): SELECT 1 through PgBouncer with psql, killed after `timeout` seconds."""
    cmd = [psql, "-X", "-A", "-t", "-q", "-w", "-c", "SELECT 1", "-d", dsn]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"cannot run {psql}: {exc.strerror or exc}"
    if proc.returncode == 0 and proc.stdout.strip() == "1":
        return True, "ok"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return False, (lines[-1] if lines else f"psql exited with {proc.returncode}")[:300]


def check_all(dsns: Sequence[str], timeout: float, psql: str = "psql") -> tuple[bool, str]:
    """check() on every DSN at once (one psql each, all within `timeout`): healthy when all are;
    else the first failure's reason, naming the process when there are several."""
    if len(dsns) == 1:
        return check(dsns[0], timeout, psql)
    results = pgbouncermetrics.at_once(lambda dsn: check(dsn, timeout, psql), dsns)
    for i, (healthy, reason) in enumerate(results):
        if not healthy:
            return False, f"process {i + 1} of {len(dsns)}: {reason}"
    return True, "ok"


class Handler(BaseHTTPRequestHandler):
    server: HealthServer
    server_version = "dbtier-health"
    sys_version = ""

    def do_GET(self) -> None:  # http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            exposition = self.server.run_scrape()
            if exposition is None:
                self._send(503, "busy: earlier scrapes are still waiting for PgBouncer", body)
            else:
                self._send(200, exposition, body, pgbouncermetrics.CONTENT_TYPE)
            return
        if path != PATH:
            self._send(404, "not found", body)
            return
        healthy, reason = self.server.run_check()
        self._send(200 if healthy else 503, reason, body)

    def _send(
        self, status: int, text: str, body: bool, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        payload = (text if text.endswith("\n") else text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per state change instead (see HealthServer.run_check)


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        dsn: str | Sequence[str],
        timeout: float,
        max_checks: int,
        psql: str,
        max_scrapes: int = 2,
    ):
        super().__init__(address, Handler)
        self.dsns = [dsn] if isinstance(dsn, str) else list(dsn)
        self.timeout, self.psql = timeout, psql
        self._slots = threading.BoundedSemaphore(max_checks)
        self._scrape_slots = threading.BoundedSemaphore(max_scrapes)
        self._last: bool | None = None
        self._last_failures: list[str] = []
        self._lock = threading.Lock()

    def run_scrape(self) -> str | None:
        """The metrics of every process, or None when --max-scrapes are already running."""
        if not self._scrape_slots.acquire(blocking=False):
            return None
        try:
            exposition, failures = pgbouncermetrics.scrape(self.dsns, self.timeout, self.psql)
        finally:
            self._scrape_slots.release()
        with self._lock:
            if failures != self._last_failures:
                message = "; ".join(failures) if failures else "every process answers again"
                print(f"metrics: {message}", file=sys.stderr, flush=True)
                self._last_failures = failures
        return exposition

    def run_check(self) -> tuple[bool, str]:
        if not self._slots.acquire(blocking=False):
            return False, "busy: earlier checks are still waiting for PgBouncer"
        try:
            healthy, reason = check_all(self.dsns, self.timeout, self.psql)
        finally:
            self._slots.release()
        with self._lock:
            if healthy is not self._last:
                print(
                    f"health: {'healthy' if healthy else 'unhealthy'}: {reason}",
                    file=sys.stderr,
                    flush=True,
                )
                self._last = healthy
        return healthy, reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--listen",
        default="0.0.0.0",  # noqa: S104 - the load balancer reaches it on the host's address
        help="address to listen on (default 0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=8008, help="port (default 8008)")
    parser.add_argument(
        "--dsn",
        required=True,
        action="append",
        help="libpq connection string (key=value) to the local PgBouncer, one per process",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per check (default 3)")
    parser.add_argument(
        "--max-checks", type=int, default=4, help="checks running at once (default 4)"
    )
    parser.add_argument(
        "--max-scrapes", type=int, default=2, help="/metrics scrapes running at once (default 2)"
    )
    parser.add_argument(
        "--psql", default=shutil.which("psql") or "/usr/bin/psql", help="psql to run"
    )
    args = parser.parse_args(argv)
    server = HealthServer(
        (args.listen, args.port),
        args.dsn,
        args.timeout,
        args.max_checks,
        args.psql,
        args.max_scrapes,
    )
    print(
        f"health: listening on {args.listen}:{args.port}{PATH} and {METRICS_PATH}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
