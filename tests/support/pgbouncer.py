"""A real PgBouncer process for tests, run as the postgres OS user (it refuses root), with its
socket, pid file and log in a private directory under /tmp."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from dbtier.pgcluster import chown_to_server_user, free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """PgBouncer with `databases` ({name: connection string}) and extra [pgbouncer] `settings`;
    `auth_file` is copied in (the postgres user must read it). `include`: a pgbouncer.ini (say one
    Ansible rendered, ending with its [pgbouncer] section) used as the start; `databases` are then
    ignored and the settings here (port, socket, pid, log, auth file) win."""

    def __init__(
        self,
        databases: dict[str, str],
        auth_file: Path,
        include: Path | None = None,
        **settings: str,
    ) -> None:
        self.include = include
        self.dir = Path(tempfile.mkdtemp(prefix="dbtier-pgbouncer-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.databases = databases
        self.settings = settings
        self.userlist = self.dir / "userlist.txt"
        self.ini = self.dir / "pgbouncer.ini"
        self.pid: int | None = None
        self.set_userlist(auth_file)

    def set_userlist(self, auth_file: Path) -> None:
        shutil.copyfile(auth_file, self.userlist)
        self.userlist.chmod(0o600)
        chown_to_server_user(self.userlist)

    def write_ini(self) -> None:
        if self.include:
            # Appended to the included file's last section, [pgbouncer]: a second [pgbouncer]
            # header would reset all of its settings to their defaults.
            lines = [self.include.read_text().rstrip("\n")]
        else:
            lines = ["[databases]"]
            lines += [f"{name} = {conn}" for name, conn in self.databases.items()]
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.dir),
            "pidfile": f"{self.dir}/pgbouncer.pid",
            "logfile": f"{self.dir}/pgbouncer.log",
            "auth_file": str(self.userlist),
            "syslog": "0",
            **({} if self.include else {"auth_type": "scram-sha-256", "pool_mode": "transaction"}),
            **self.settings,
        }
        lines += ([] if self.include else ["[pgbouncer]"]) + [
            f"{k} = {v}" for k, v in settings.items()
        ]
        self.ini.write_text("\n".join(lines) + "\n")
        chown_to_server_user(self.ini)
        chown_to_server_user(self.dir)

    def start(self) -> PgBouncer:
        self.write_ini()
        subprocess.run(
            ["runuser", "-u", "postgres", "--", PGBOUNCER, "-d", "-q", str(self.ini)],
            check=True,
            timeout=30,
        )
        pidfile = self.dir / "pgbouncer.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not pidfile.exists():
            time.sleep(0.1)
        self.pid = int(pidfile.read_text())
        return self

    def reload(self) -> None:
        """SIGHUP: re-read pgbouncer.ini and the auth file, keep the clients."""
        assert self.pid
        os.kill(self.pid, signal.SIGHUP)
        time.sleep(0.5)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGINT)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
