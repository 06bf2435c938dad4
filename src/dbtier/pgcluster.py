"""Scratch PostgreSQL clusters on this machine: tests, the demo, deep verify and PITR drills.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
`postgres` OS user (runuser) and the data and socket directories belong to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DbtierError, UsageError

SERVER_USER = "postgres"


def pg_bindir(major: int = 15, program: str = "postgres") -> Path:
    """Where `program` of a PostgreSQL major version lives (Debian layout, else PATH).

    Client-only hosts (postgresql-client-15) have pg_dump and pg_restore there but no server.
    """
    debian = Path(f"/usr/lib/postgresql/{major}/bin")
    if (debian / program).exists():
        return debian
    found = shutil.which(program)
    if found:
        return Path(found).resolve().parent
    if program in SERVER_PROGRAMS:
        raise server_missing(major, f"{debian} and PATH")
    raise DbtierError(f"PostgreSQL {major} {program} not found (install postgresql-client-{major})")


def server_missing(major: int, looked: str, rerun: str = "...") -> DbtierError:
    """The one-line error for a host without the server binaries (an ops host, usually)."""
    return UsageError(
        f"PostgreSQL {major} server binaries not found (looked in {looked}): install "
        f"postgresql-{major} on this host, or run it on the database host: "
        f"sudo -u {SERVER_USER} dbtier-job {rerun}"
    )


def require_server(major: int, bindir: str | None, rerun: str) -> Path:
    """Check before a job starts that every server program is there: their absence is this
    host's setup, and must not count as a failed job. rerun: the command to suggest instead."""
    directory = Path(bindir) if bindir else None
    if directory is None:
        try:
            directory = pg_bindir(major, "postgres")
        except DbtierError:
            raise server_missing(
                major, f"/usr/lib/postgresql/{major}/bin and PATH", rerun
            ) from None
    absent = [p for p in sorted(SERVER_PROGRAMS) if not (directory / p).exists()]
    if absent:
        raise server_missing(major, str(directory), rerun)
    return directory


SERVER_PROGRAMS = {"postgres", "initdb", "pg_ctl", "pg_controldata"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *cmd]
    return cmd


def chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextmanager
def server_identity() -> Iterator[None]:
    """Act as the server's OS user (effective uid and gid) while connecting through a Unix
    socket: peer authentication lets `postgres` in, root not (Debian's pg_hba.conf, and the one
    restore gives a recovered Debian cluster). No-op unless we are root."""
    if os.geteuid() != 0:
        yield
        return
    entry = pwd.getpwnam(SERVER_USER)
    egid = os.getegid()
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)


def private_dir(path: Path) -> Path:
    """Create path (if needed) mode 0700, owned by whoever runs the server: scratch data, logs
    and decrypted dumps are nobody else's business (root can still read them)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    chown_to_server_user(path)
    return path


def scratch_dir(prefix: str) -> Path:
    """A new private directory in /tmp (not pytest's or root's: the server user must enter it)."""
    return private_dir(Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")))


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in `base` (data in base/data, socket and log beside it)."""

    base: Path
    port: int = field(default_factory=free_port)
    major: int = 15
    superuser: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)
    data: Path | None = None  # data directory when not base/data (a restored cluster)
    scratch: bool = True  # scratch clusters run without fsync; a restored one never does
    bindir: Path | None = None  # server programs (default: found by pg_bindir)

    @property
    def datadir(self) -> Path:
        return self.data or self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "postgres.log"

    @property
    def sockdir(self) -> Path:
        return self.base

    def program(self, name: str) -> str:
        """Full path of a server program (pg_ctl, postgres, ...) of this cluster's major."""
        return str((self.bindir or pg_bindir(self.major, name)) / name)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(as_server_user(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise DbtierError(f"{what} failed: {detail[-1] if detail else proc.returncode}")

    def init(self) -> None:
        """initdb with trust auth on loopback only (a scratch cluster, never reachable)."""
        private_dir(self.base)
        if (self.datadir / "PG_VERSION").exists():
            return
        self._run(
            [
                self.program("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )

    def is_running(self) -> bool:
        proc = subprocess.run(
            as_server_user([self.program("pg_ctl"), "status", "-D", str(self.datadir)]),
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def start(self, timeout: int = 60) -> None:
        options = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            **({"fsync": "off"} if self.scratch else {}),  # scratch data needs no durability
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            [
                self.program("pg_ctl"),
                "start",
                "-D",
                str(self.datadir),
                "-w",
                "-t",
                str(timeout),
                "-l",
                str(self.logfile),
                "-o",
                opts,
            ],
            f"starting PostgreSQL on 127.0.0.1:{self.port} (log: {self.logfile})",
        )

    def stop(self, mode: str = "fast") -> None:
        if self.datadir.exists() and self.is_running():
            self._run(
                [
                    self.program("pg_ctl"),
                    "stop",
                    "-D",
                    str(self.datadir),
                    "-m",
                    mode,
                    "-w",
                ],
                "stopping PostgreSQL",
            )

    def run_to_exit(self, timeout: float) -> int | None:
        """Run the server in the foreground until it exits by itself (e.g. shut down at its
        recovery target): its exit code, or None if it still ran after timeout (then stopped).
        pg_ctl start cannot wait for that: the server may stop before it ever takes connections.
        """
        options = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.sockdir),
            **{k: v.strip("'") for k, v in self.settings.items()},
        }
        cmd = [self.program("postgres"), "-D", str(self.datadir)]
        cmd += [arg for k, v in options.items() for arg in ("-c", f"{k}={v}")]
        with self.logfile.open("ab") as log:
            chown_to_server_user(self.logfile)
            proc = subprocess.Popen(
                as_server_user(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=self.base
            )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                self.stop("immediate")
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def control_data(self) -> dict[str, str]:
        """pg_controldata's fields, e.g. {'Database cluster state': 'shut down in recovery'}."""
        proc = subprocess.run(
            as_server_user([self.program("pg_controldata"), str(self.datadir)]),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise DbtierError(f"pg_controldata failed: {(proc.stderr or '').strip()[:200]}")
        pairs = (line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
