"""dbtier restore switch: put a recovered (PITR) data directory into service, by renames.

`dbtier restore pitr --data-dir DIR` recovers into a scratch data directory next to the live one.
The switch then, on the database host and as root:

1. preflight  DIR is a promoted, cleanly shut down copy of the live Debian cluster (same system
              identifier, a higher timeline), not running, on the live data directory's filesystem
2. stop       the live cluster: first its current WAL segment is closed (pg_switch_wal) and
              archived, so the old timeline is in the archive up to the switch (the way back is
              a PITR of it: --target latest --target-timeline <live_timeline>); then a clean
              shutdown (systemctl, else pg_ctlcluster)
3. move_aside the live data directory to <datadir>.pre-switch-<UTC stamp> (kept, never deleted)
4. move_in    DIR to the live data directory's path (rename), owner postgres, mode 0700
5. clear_recovery  dbtier's "# dbtier recovery" block of postgresql.auto.conf, recovery.signal,
              standby.signal and the placeholder configuration files restore wrote into DIR
6. archive    the new timeline's history file (and any WAL segment of the new timeline completed
              while archiving was off) with dbtier wal-push, as postgres
7. start      the service; wait for connections; check: not in recovery, on the new timeline
8. base_backup  dbtier backup base as postgres (the new timeline starts a new recovery chain)

Progress lives in a state file next to the live data directory
(<datadir parent>/.dbtier-switch-<version>-<cluster>.json, e.g.
/var/lib/postgresql/15/.dbtier-switch-15-main.json): an interrupted switch (a failing step, a
crash, SIGTERM) is resumed by re-running the same command; completed steps are skipped. When the
switch completes the file is renamed to .dbtier-switch-<version>-<cluster>.<stamp>.done.json.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from . import catalog, db
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import History, Job, log, run_job
from .pgcluster import SERVER_USER, pg_bindir, server_identity
from .pgtools import Child, last_line

STEPS = (
    "preflight",
    "stop",
    "move_aside",
    "move_in",
    "clear_recovery",
    "archive",
    "start",
    "base_backup",
)
STATE_VERSION = 1
ASIDE_MARK = ".pre-switch-"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
RECOVERY_MARKER = "# dbtier recovery"
# What `dbtier restore pitr` writes into a data directory restored from a Debian cluster, whose
# configuration lives in /etc/postgresql (restore._ensure_config_files): removed only when the
# content is exactly this (a real configuration file in the data directory is kept).
PLACEHOLDERS = {
    "postgresql.conf": "# dbtier restore: the original configuration was outside the data "
    "directory.\n",
    "pg_hba.conf": "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
    "pg_ident.conf": "",
}
RECOVERY_SETTING = re.compile(r"^\s*(restore_command|recovery_target\w*)\s*=", re.IGNORECASE)
START_TIMEOUT = 300.0


# ------------------------------------------------------------------------ the live cluster


@dataclass(frozen=True)
class LiveCluster:
    """A Debian cluster (postgresql-common), as pg_lsclusters --json describes it."""

    version: int
    name: str
    pgdata: Path
    port: int
    socketdir: str
    logfile: Path | None
    configdir: Path

    @property
    def spec(self) -> str:
        return f"{self.version}/{self.name}"

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-{self.name}"

    @property
    def state_file(self) -> Path:
        return self.pgdata.parent / f".dbtier-switch-{self.version}-{self.name}.json"

    def aside(self, stamp: str) -> Path:
        return self.pgdata.with_name(f"{self.pgdata.name}{ASIDE_MARK}{stamp}")

    def command(self, action: str) -> list[str]:
        """stop/start through systemd when it runs (the unit's state stays right), else
        pg_ctlcluster."""
        if Path("/run/systemd/system").is_dir():
            return ["systemctl", action, self.unit]
        return ["pg_ctlcluster", str(self.version), self.name, action]

    def dsn(self) -> str:
        return make_conninfo(
            host=self.socketdir, port=str(self.port), dbname="postgres", user=SERVER_USER
        )


def parse_cluster(spec: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*(\d+)[/-]([A-Za-z0-9_.-]+)\s*", spec or "")
    if not match:
        raise UsageError(f"bad --cluster {spec!r}: give <version>/<name>, e.g. 15/main")
    return match[1], match[2]


def find_cluster(spec: str) -> LiveCluster:
    version, name = parse_cluster(spec)
    if shutil.which("pg_lsclusters") is None:
        raise UsageError(
            "pg_lsclusters not found: restore switch runs on the database host (Debian's "
            "postgresql-common)"
        )
    proc = subprocess.run(["pg_lsclusters", "--json"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DbtierError(f"pg_lsclusters failed: {last_line(proc.stderr, proc.returncode)}")
    try:
        clusters = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        raise DbtierError("pg_lsclusters --json printed no JSON") from None
    for entry in clusters:
        if str(entry.get("version")) == version and entry.get("cluster") == name:
            config = entry.get("config") or {}
            pgdata = entry.get("pgdata") or config.get("data_directory")
            if not pgdata:
                raise DbtierError(f"cluster {spec}: pg_lsclusters names no data directory")
            sockets = str(entry.get("socketdir") or "/var/run/postgresql")
            return LiveCluster(
                version=int(version),
                name=name,
                pgdata=Path(pgdata),
                port=int(entry.get("port") or config.get("port") or 5432),
                socketdir=sockets.split(",")[0].strip(),
                logfile=Path(entry["logfile"]) if entry.get("logfile") else None,
                configdir=Path(entry.get("configdir") or f"/etc/postgresql/{version}/{name}"),
            )
    known = ", ".join(f"{c.get('version')}/{c.get('cluster')}" for c in clusters) or "none"
    raise UsageError(
        f"no PostgreSQL cluster {version}/{name} on this host (pg_lsclusters: {known})"
    )


# ------------------------------------------------------------------------------ helpers


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def _as_server(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd]


def control_data(major: int, datadir: Path) -> dict[str, str]:
    """pg_controldata's fields of a data directory (read as root: it only reads pg_control)."""
    proc = _run([str(pg_bindir(major, "pg_controldata") / "pg_controldata"), str(datadir)])
    if proc.returncode != 0:
        raise UsageError(
            f"{datadir}: pg_controldata failed: {last_line(proc.stderr, proc.returncode)}"
        )
    pairs = (line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _timeline(control: dict[str, str]) -> int:
    return int(control.get("Latest checkpoint's TimeLineID", "0") or 0)


def running_pid(datadir: Path) -> int | None:
    """The pid of the postmaster running on datadir, None when none runs. Errs on the safe side:
    a live pid in postmaster.pid counts as running unless its process is visibly not PostgreSQL
    (/proc/<pid>/exe is not readable in a container without CAP_SYS_PTRACE; comm is)."""
    try:
        first = (datadir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's: running
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return pid
    return pid if comm in ("postgres", "postmaster") else None


def server_dbtier(settings: Settings) -> list[str]:
    """dbtier as the postgres OS user runs it (settings.command, else this program's path)."""
    if settings.command:
        return shlex.split(settings.command)
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "dbtier" else None
    return [str(exe) if exe and exe.exists() else str(Path(sys.executable).parent / "dbtier")]


def _server_env(settings: Settings, config: str | None) -> dict[str, str]:
    """What dbtier children run as postgres add to the environment: this run's settings by
    reference (no secrets: the key is a file name, a variable name or a KMS id)."""
    refs = {
        "DBTIER_CONFIG": config or os.environ.get("DBTIER_CONFIG"),
        "BACKUP_REPOSITORY": settings.repository,
        "DBTIER_MASTER_KEY_SPEC": settings.key,
        "DBTIER_AWS_ENDPOINT_URL": settings.endpoint_url,
        "BACKUP_REGION": settings.region,
        "DBTIER_METRICS_DIR": settings.metrics_dir,
        "DATABASE_URL": settings.dsn,
    }
    return {k: v for k, v in refs.items() if v}


def sudo_command(argv: list[str] | None = None) -> str:
    """The command an operator runs to do the same as root."""
    args = list(sys.argv[1:] if argv is None else argv)
    config = os.environ.get("DBTIER_CONFIG")
    if config == "/etc/dbtier/dbtier.toml" and shutil.which("dbtier-job"):
        return shlex.join(["sudo", "dbtier-job", *args])  # the host's wrapper loads its settings
    if Path(sys.argv[0]).name == "__main__.py":
        program = [sys.executable, "-m", "dbtier"]
    else:
        program = [str(Path(sys.argv[0]).resolve())]
    prefix = ["env", f"DBTIER_CONFIG={config}"] if config else []
    return shlex.join(["sudo", *prefix, *program, *args])


def require_root(argv: list[str] | None = None) -> None:
    if os.geteuid() != 0:
        raise UsageError(
            "restore switch must run as root (it stops the service and renames data "
            f"directories): {sudo_command(argv)}"
        )


def _stamp() -> str:
    return datetime.now(UTC).strftime(STAMP_FORMAT)


def _absolute(data_dir: str) -> Path:
    if not data_dir.strip():
        raise UsageError("empty --data-dir (the directory restore pitr recovered into)")
    directory = Path(data_dir)
    if not directory.is_absolute():
        raise UsageError(f"--data-dir {data_dir} is relative: give an absolute path")
    return Path(os.path.normpath(directory))


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_placement(live: LiveCluster, directory: Path) -> None:
    """Renames only: DIR next to the live data directory, never inside it, same filesystem."""
    pgdata = live.pgdata
    if directory == pgdata or directory.is_relative_to(pgdata):
        raise UsageError(
            f"--data-dir {directory} is (inside) the live data directory {pgdata}: recover "
            f"next to it instead, e.g. --data-dir {pgdata.parent}/pitr"
        )
    if not pgdata.is_dir():
        raise UsageError(f"the data directory of {live.spec}, {pgdata}, does not exist")
    device = os.stat(pgdata.parent).st_dev
    if os.stat(pgdata).st_dev != device:
        raise UsageError(
            f"the live data directory {pgdata} is a mount point: the switch cannot rename it "
            "aside; switch by hand (stop, move the contents, start)"
        )
    if os.stat(_existing_ancestor(directory)).st_dev != device:
        raise UsageError(
            f"{directory} is on another filesystem than the live data directory {pgdata}: "
            "the switch renames, it never copies; recover next to it instead, e.g. "
            f"dbtier restore pitr ... --data-dir {pgdata.parent}/pitr"
        )


# ---------------------------------------------------------------------------- the state


@contextmanager
def _locked(live: LiveCluster) -> Iterator[None]:
    path = live.state_file.with_suffix(".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another restore switch of {live.spec} is running (it holds {path})"
            ) from None
        yield
    finally:
        os.close(fd)


def _load_state(live: LiveCluster) -> dict[str, Any] | None:
    try:
        text = live.state_file.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except json.JSONDecodeError:
        raise DbtierError(
            f"the switch state file {live.state_file} is not JSON: inspect it (the old data "
            "directory, if already moved, is the newest "
            f"{live.pgdata.name}{ASIDE_MARK}* next to it)"
        ) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise DbtierError(f"unknown switch state file format in {live.state_file}")
    return state


def _save_state(live: LiveCluster, state: dict[str, Any]) -> None:
    state["updated_at"] = catalog.iso(catalog.now_utc())
    path = live.state_file
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(state, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _done_records(live: LiveCluster, directory: Path) -> list[Path]:
    pattern = f".dbtier-switch-{live.version}-{live.name}.*.done.json"
    found = []
    for path in sorted(live.pgdata.parent.glob(pattern)):
        try:
            if json.loads(path.read_text()).get("data_dir") == str(directory):
                found.append(path)
        except (OSError, json.JSONDecodeError):
            continue
    return found


# -------------------------------------------------------------------------- preflight


def _recovery_target(directory: Path) -> str | None:
    """The recovery target restore pitr wrote (its "# dbtier recovery" block), for the plan."""
    try:
        lines = (directory / "postgresql.auto.conf").read_text().splitlines()
    except OSError:
        return None
    if RECOVERY_MARKER not in lines:
        return None
    targets = []
    for line in lines[lines.index(RECOVERY_MARKER) + 1 :]:
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("recovery_target") and key not in (
            "recovery_target_timeline",
            "recovery_target_action",
            "recovery_target_inclusive",
        ):
            targets.append(value.strip().strip("'") if key == "recovery_target_time" else line)
    return ", ".join(targets) or None


def inspect_recovered(live: LiveCluster, directory: Path) -> dict[str, Any]:
    """Refuse anything but a promoted, cleanly shut down copy of the live cluster on a newer
    timeline, not running."""
    if not directory.is_dir():
        raise UsageError(f"--data-dir {directory} does not exist or is not a directory")
    version = directory / "PG_VERSION"
    if not version.is_file() or not (directory / "global" / "pg_control").is_file():
        raise UsageError(f"{directory} is not a PostgreSQL data directory (no PG_VERSION)")
    found = version.read_text().strip()
    if found != str(live.version):
        raise UsageError(
            f"{directory} is a PostgreSQL {found} cluster, {live.spec} is {live.version}"
        )
    pid = running_pid(directory)
    if pid is not None:
        stop = f"runuser -u {SERVER_USER} -- {pg_bindir(live.version, 'pg_ctl')}/pg_ctl stop"
        raise UsageError(
            f"{directory} is running (postmaster pid {pid}): stop it cleanly first "
            f"({stop} -D {directory} -m fast), then rerun"
        )
    control = control_data(live.version, directory)
    state = control.get("Database cluster state", "unknown")
    if state != "shut down":
        why = {
            "shut down in recovery": "it stopped in recovery, never promoted",
            "in archive recovery": "it was still recovering (never promoted) when it stopped",
            "in production": "it was not shut down cleanly (crashed or killed)",
        }.get(state, "not a cleanly shut down, promoted cluster")
        raise UsageError(
            f"{directory} is not a recovered, promoted, cleanly shut down cluster (state "
            f"'{state}': {why}); recover with dbtier restore pitr (it promotes and stops "
            "cleanly)"
        )
    if (directory / "recovery.signal").exists() or (directory / "standby.signal").exists():
        # pg_control says shut down, not in recovery; a signal file would put it back there.
        log("switch.signal_file", "warning", directory=str(directory))
    return {
        "system_identifier": control.get("Database system identifier"),
        "timeline": _timeline(control),
        "checkpoint_time": control.get("Time of latest checkpoint"),
        "redo_wal_file": control.get("Latest checkpoint's REDO WAL file"),
        "recovery_target": _recovery_target(directory),
    }


def _fresh_state(live: LiveCluster, directory: Path) -> dict[str, Any]:
    _check_placement(live, directory)
    recovered = inspect_recovered(live, directory)
    live_control = control_data(live.version, live.pgdata)
    live_sysid = live_control.get("Database system identifier")
    if recovered["system_identifier"] != live_sysid:
        raise UsageError(
            f"{directory} is a copy of another cluster (system identifier "
            f"{recovered['system_identifier']}, {live.spec} has {live_sysid})"
        )
    live_tli = _timeline(live_control)
    if recovered["timeline"] <= live_tli:
        raise UsageError(
            f"{directory} is on timeline {recovered['timeline']}, the live cluster on "
            f"{live_tli}: a recovered, promoted cluster runs on a newer timeline"
        )
    stamp = _stamp()
    aside = live.aside(stamp)
    if aside.exists():
        raise UsageError(f"{aside} already exists: rerun in a second")
    return {
        "version": STATE_VERSION,
        "cluster": live.spec,
        "data_dir": str(directory),
        "pgdata": str(live.pgdata),
        "aside": str(aside),
        "stamp": stamp,
        "system_identifier": live_sysid,
        "timeline": recovered["timeline"],
        "live_timeline": live_tli,
        "redo_wal_file": recovered["redo_wal_file"],
        "recovery_target": recovered["recovery_target"],
        "started_at": catalog.iso(catalog.now_utc()),
        "done": [],
        "errors": [],
    }


def _resume_state(live: LiveCluster, directory: Path, state: dict[str, Any]) -> None:
    if state.get("data_dir") != str(directory):
        raise UsageError(
            f"an unfinished switch of {state.get('data_dir')} into {live.spec} is recorded in "
            f"{live.state_file}: finish it first (dbtier restore switch --data-dir "
            f"{state.get('data_dir')} --cluster {live.spec}); the old data directory is at "
            f"{state.get('aside')}"
        )
    if state.get("pgdata") != str(live.pgdata):
        raise UsageError(
            f"{live.state_file} is about data directory {state.get('pgdata')}, but {live.spec}'s "
            f"is {live.pgdata} now: inspect it by hand"
        )
    if "move_in" not in state["done"] and directory.exists():
        recovered = inspect_recovered(live, directory)
        if recovered["system_identifier"] != state["system_identifier"] or (
            recovered["timeline"] != state["timeline"]
        ):
            raise UsageError(f"{directory} changed since the switch began: inspect it by hand")


# ------------------------------------------------------------------------------- plan


def _descriptions(
    live: LiveCluster, directory: Path, state: dict[str, Any], base_backup: bool
) -> dict[str, str]:
    tli = int(state["timeline"])
    return {
        "preflight": f"{directory}: promoted, cleanly shut down copy of {live.spec} (system "
        f"{state['system_identifier']}) on timeline {tli} (live: {state['live_timeline']}), "
        "not running, on the live data directory's filesystem",
        "stop": f"stop the live cluster: {shlex.join(live.command('stop'))}",
        "move_aside": f"move {live.pgdata} aside to {state['aside']} (kept, never deleted)",
        "move_in": f"move {directory} to {live.pgdata} (rename), owner {SERVER_USER}, mode 0700",
        "clear_recovery": f"remove the '{RECOVERY_MARKER}' settings from postgresql.auto.conf, "
        "recovery.signal, standby.signal and restore's placeholder postgresql.conf, "
        f"pg_hba.conf, pg_ident.conf (the configuration in {live.configdir} applies)",
        "archive": f"archive pg_wal/{tli:08X}.history (the recovered server ran with "
        f"archive_mode=off) with dbtier wal-push as {SERVER_USER}",
        "start": f"start: {shlex.join(live.command('start'))}; wait for connections; check it "
        f"is not in recovery and runs on timeline {tli}",
        "base_backup": f"dbtier backup base as {SERVER_USER} (the new timeline starts a new "
        "recovery chain)"
        if base_backup
        else "skipped (--no-base-backup): take one soon, PITR after the switch needs it",
    }


def _way_back(live: LiveCluster, state: dict[str, Any]) -> str:
    pgdata = shlex.quote(str(live.pgdata))
    switched = shlex.quote(f"{live.pgdata}.switched-{state['stamp']}")
    return (
        f"{shlex.join(live.command('stop'))} && mv {pgdata} {switched} && "
        f"mv {shlex.quote(state['aside'])} {pgdata} && {shlex.join(live.command('start'))}"
    )


def _plan(
    live: LiveCluster, directory: Path, state: dict[str, Any], base_backup: bool
) -> dict[str, Any]:
    texts = _descriptions(live, directory, state, base_backup)
    done = set(state["done"])
    target = state.get("recovery_target") or "the recovery target"
    return {
        "cluster": live.spec,
        "data_directory": str(live.pgdata),
        "recovered_directory": str(directory),
        "kept_directory": state["aside"],
        "timeline": state["timeline"],
        "live_timeline": state.get("live_timeline"),
        "recovery_target": state.get("recovery_target"),
        "state_file": str(live.state_file),
        "warning": f"EVERY COMMIT MADE TO THE LIVE CLUSTER AFTER {target} IS LOST FROM SERVICE "
        f"(it stays only in the set-aside directory {state['aside']})",
        "steps": [
            f"[{'done' if name in done else 'todo'}] {n}. {name}: {texts[name]}"
            for n, name in enumerate(STEPS, 1)
        ],
        "remove_kept": f"rm -rf {shlex.quote(state['aside'])}",
        "way_back": _way_back(live, state),
    }


def _plan_text(plan: dict[str, Any], resumed: bool) -> str:
    head = "resuming the switch" if resumed else "switch"
    lines = [
        f"{head}: {plan['recovered_directory']} into service as {plan['cluster']} "
        f"({plan['data_directory']}); state in {plan['state_file']}",
        *(f"  {step}" for step in plan["steps"]),
        f"  *** {plan['warning']} ***",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ steps


@dataclass
class Context:
    settings: Settings
    live: LiveCluster
    directory: Path
    state: dict[str, Any]
    config: str | None
    quiet: bool

    @property
    def aside(self) -> Path:
        return Path(self.state["aside"])

    @property
    def timeline(self) -> int:
        return int(self.state["timeline"])


def _unit_active(live: LiveCluster) -> bool:
    if not Path("/run/systemd/system").is_dir():
        return False
    proc = _run(["systemctl", "is-active", "--quiet", live.unit])
    return proc.returncode == 0


def _stop(ctx: Context) -> None:
    live = ctx.live
    if not live.pgdata.exists():
        log("switch.stop", state="moved already")
        return
    pid = running_pid(live.pgdata)
    if pid is not None or _unit_active(live):
        _archive_current_wal(live)
        proc = _run(live.command("stop"))
        if proc.returncode != 0:
            reason = last_line(proc.stderr or proc.stdout, proc.returncode)
            raise DbtierError(f"stopping {live.spec} failed: {reason}")
        deadline = time.monotonic() + 60
        while running_pid(live.pgdata) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if running_pid(live.pgdata) is not None or _unit_active(live):
            raise DbtierError(f"{live.spec} still runs after '{shlex.join(live.command('stop'))}'")
    state = control_data(live.version, live.pgdata).get("Database cluster state")
    if state != "shut down":
        log("switch.unclean", "warning", state=state, detail="its last WAL may not be archived")
    log("switch.stop", cluster=live.spec, was_running=pid is not None, state=state)


def _archive_current_wal(live: LiveCluster, timeout: float = 60) -> None:
    """Close the live cluster's current WAL segment and wait until it is archived, so that the
    old timeline is in the archive up to the switch: the way back is then a PITR of that
    timeline to its end (--target latest --target-timeline N). Best effort: a cluster that
    cannot archive is still switched (its set-aside directory has every byte)."""
    try:
        with server_identity(), db.connect(live.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT current_setting('archive_mode') = 'off'").fetchone()[0]:
                return
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                last = conn.execute(
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"
                ).fetchone()[0]
                if last[:24] >= segment:
                    log("switch.wal_archived", segment=segment)
                    return
                time.sleep(0.5)
    except (DbtierError, psycopg.Error) as exc:
        log("switch.wal_not_archived", "warning", reason=db.first_line(exc))
        return
    log("switch.wal_not_archived", "warning", segment=segment, waited=timeout)


def _move_aside(ctx: Context) -> None:
    pgdata, aside = ctx.live.pgdata, ctx.aside
    if not pgdata.exists() and aside.is_dir():
        log("switch.move_aside", kept=str(aside), already=True)
        return
    if aside.exists():
        raise DbtierError(f"both {pgdata} and {aside} exist: inspect them by hand")
    if running_pid(pgdata) is not None or _unit_active(ctx.live):
        stop = shlex.join(ctx.live.command("stop"))
        raise DbtierError(f"{ctx.live.spec} runs again: stop it ({stop})")
    os.rename(pgdata, aside)
    log("switch.move_aside", kept=str(aside), remove=f"rm -rf {shlex.quote(str(aside))}")


def _fix_ownership(path: Path) -> None:
    entry = pwd.getpwnam(SERVER_USER)
    owner = (entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files, None]:
            target = Path(root) / name if name else Path(root)
            info = target.lstat()
            if (info.st_uid, info.st_gid) != owner:
                os.lchown(target, *owner)
    path.chmod(0o700)


def _move_in(ctx: Context) -> None:
    pgdata, directory = ctx.live.pgdata, ctx.directory
    if not directory.exists() and pgdata.is_dir():
        control = control_data(ctx.live.version, pgdata)
        same = control.get("Database system identifier") == ctx.state["system_identifier"]
        if not same or _timeline(control) != ctx.timeline:
            raise DbtierError(f"{directory} is gone and {pgdata} is not it: inspect by hand")
        log("switch.move_in", already=True)
    else:
        if pgdata.exists():
            raise DbtierError(f"{pgdata} exists again: inspect it by hand ({ctx.aside} is kept)")
        os.rename(directory, pgdata)
    _fix_ownership(pgdata)
    log("switch.move_in", data_directory=str(pgdata), source=str(directory))


def _write_server_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.dbtier-switch")
    tmp.write_text(text)
    entry = pwd.getpwnam(SERVER_USER)
    os.chown(tmp, entry.pw_uid, entry.pw_gid)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def clean_auto_conf(text: str) -> tuple[str, list[str]]:
    """postgresql.auto.conf without dbtier's recovery block (the marker and the restore_command
    and recovery_target* lines after it) and without any recovery_target* line (a target would
    apply again the day this server becomes a standby). Returns (text, removed lines)."""
    kept: list[str] = []
    removed: list[str] = []
    in_block = False
    for line in text.splitlines():
        if line.strip() == RECOVERY_MARKER:
            in_block = True
            while kept and not kept[-1].strip():  # the blank line restore put before it
                kept.pop()
            removed.append(line)
            continue
        setting = RECOVERY_SETTING.match(line)
        if in_block and (setting or not line.strip()):
            removed.append(line)
            continue
        in_block = False
        if setting and setting[1].lower().startswith("recovery_target"):
            removed.append(line)
            continue
        kept.append(line)
    return "".join(f"{line}\n" for line in kept), [ln for ln in removed if ln.strip()]


def _clear_recovery(ctx: Context) -> None:
    pgdata = ctx.live.pgdata
    removed: list[str] = []
    auto = pgdata / "postgresql.auto.conf"
    if auto.is_file():
        text, lines = clean_auto_conf(auto.read_text())
        if lines:
            _write_server_file(auto, text)
            removed += [f"postgresql.auto.conf: {line}" for line in lines]
    for name in ("recovery.signal", "standby.signal", "postmaster.opts"):
        if (pgdata / name).exists():
            (pgdata / name).unlink()
            removed.append(name)
    outside = (ctx.live.configdir / "postgresql.conf").is_file()
    for name, placeholder in PLACEHOLDERS.items():
        path = pgdata / name
        if outside and path.is_file() and path.read_text() == placeholder:
            path.unlink()
            removed.append(name)
        elif path.exists():
            log("switch.kept_file", "warning", file=str(path), reason="not dbtier's placeholder")
    log("switch.clear_recovery", removed="; ".join(removed) or "nothing")


def _child_error(text: str | None, returncode: int) -> str:
    return last_line(text, returncode).removeprefix("dbtier: error: ")


def _server_child(ctx: Context, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = _as_server([*server_dbtier(ctx.settings), *args])
    return _run(cmd, env={**os.environ, **_server_env(ctx.settings, ctx.config)}, cwd="/")


def _archive(ctx: Context) -> None:
    pg_wal = ctx.live.pgdata / "pg_wal"
    history = pg_wal / f"{ctx.timeline:08X}.history"
    if not history.is_file():
        raise DbtierError(
            f"{history} is missing: a promoted cluster on timeline {ctx.timeline} has it"
        )
    files = [history]
    # Segments of the new timeline completed while archiving was off (before the shutdown
    # checkpoint's): nothing would ever archive them. Later ones hold recycled garbage.
    redo = ctx.state.get("redo_wal_file") or ""
    prefix = f"{ctx.timeline:08X}"
    files += sorted(
        p
        for p in pg_wal.iterdir()
        if catalog.WAL_SEGMENT_RE.match(p.name) and p.name.startswith(prefix) and p.name < redo
    )
    for path in files:
        proc = _server_child(ctx, "wal-push", "--quiet", str(path))
        if proc.returncode != 0:
            raise DbtierError(
                f"archiving {path.name} failed: {_child_error(proc.stderr, proc.returncode)}"
            )
        log("switch.archive", file=path.name)


def _log_size(live: LiveCluster) -> int:
    try:
        return live.logfile.stat().st_size if live.logfile else 0
    except OSError:
        return 0


def _server_log_failure(live: LiveCluster, offset: int) -> str:
    if live.logfile is None:
        return "see the server log"
    try:
        with live.logfile.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return f"see {live.logfile}"
    for line in reversed(lines):
        if "FATAL:" in line or "PANIC:" in line:
            return re.sub(r"^.*?(FATAL|PANIC):\s*", "", line).strip()
    return f"see {live.logfile}"


def _start(ctx: Context) -> None:
    live = ctx.live
    if running_pid(live.pgdata) is None:
        offset = _log_size(live)
        proc = _run(live.command("start"))
        if proc.returncode != 0 or running_pid(live.pgdata) is None:
            raise DbtierError(f"start failed: {_server_log_failure(live, offset)}")
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            with server_identity(), db.connect(live.dsn(), autocommit=True) as conn:
                in_recovery, timeline = conn.execute(
                    "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"
                ).fetchone()
            break
        except DbtierError as exc:
            last_error = str(exc)
            if running_pid(live.pgdata) is None:
                raise DbtierError(f"start failed: {_server_log_failure(live, 0)}") from None
            time.sleep(1)
    else:
        raise DbtierError(
            f"{live.spec} takes no connections after {START_TIMEOUT:g}s: {last_error}"
        )
    if in_recovery:
        raise DbtierError(
            f"{live.spec} started in recovery (a recovery.signal or standby.signal in "
            f"{live.pgdata}?): it must run as a primary"
        )
    if timeline != ctx.timeline:
        raise DbtierError(f"{live.spec} runs on timeline {timeline}, expected {ctx.timeline}")
    log("switch.start", cluster=live.spec, timeline=timeline)


def _base_backup(ctx: Context) -> None:
    cmd = _as_server([*server_dbtier(ctx.settings), "backup", "base", "--quiet", "--json"])
    forward: Callable[[str], None] | None = None
    if not ctx.quiet:

        def forward(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    env = _server_env(ctx.settings, ctx.config)
    child = Child(cmd, env, stdout=subprocess.PIPE, on_line=forward)
    try:
        assert child.proc.stdout is not None
        out = child.proc.stdout.read().decode(errors="replace")
        rc = child.wait()
    finally:
        child.kill()
    if rc != 0:
        reason = child.error_line().removeprefix("dbtier: error: ")
        raise DbtierError(f"base backup failed: {reason}")
    try:
        backup_id = json.loads(out)["backup_id"]
    except (json.JSONDecodeError, KeyError, TypeError):
        backup_id = None
    ctx.state["base_backup_id"] = backup_id
    log("switch.base_backup", backup_id=backup_id)


STEP_FUNCTIONS: dict[str, Callable[[Context], None]] = {
    "stop": _stop,
    "move_aside": _move_aside,
    "move_in": _move_in,
    "clear_recovery": _clear_recovery,
    "archive": _archive,
    "start": _start,
    "base_backup": _base_backup,
}


# ----------------------------------------------------------------------------- entries


def precheck(
    data_dir: str, *, cluster: str = "15/main", keep_running: bool = False
) -> dict[str, Any]:
    """Before `restore pitr --switch` recovers (possibly for an hour): the switch afterwards
    must be possible (root, the live cluster, no other unfinished switch, same filesystem)."""
    if keep_running:
        raise UsageError(
            "--switch stops the recovered server cleanly after promotion, then switches: "
            "drop --keep-running"
        )
    require_root()
    live = find_cluster(cluster)
    directory = _absolute(data_dir)
    _check_placement(live, directory)
    state = _load_state(live)
    if state is not None and state.get("data_dir") != str(directory):
        _resume_state(live, directory, state)  # raises: another switch is unfinished
    return {
        "cluster": live.spec,
        "data_directory": str(live.pgdata),
        "then": f"dbtier restore switch --data-dir {directory} --cluster {live.spec}",
    }


def switch(
    settings: Settings,
    data_dir: str,
    *,
    cluster: str = "15/main",
    dry_run: bool = False,
    base_backup: bool = True,
    config: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Put the recovered cluster in data_dir into service as `cluster` (see the module doc)."""
    require_root()
    live = find_cluster(cluster)
    directory = _absolute(data_dir)
    with _locked(live) if not dry_run else _nothing():
        state = _load_state(live)
        resumed = state is not None
        if state is None:
            if not directory.exists():
                for record in _done_records(live, directory):
                    raise UsageError(
                        f"{directory} was switched into {live.spec} already (record: {record})"
                    )
            state = _fresh_state(live, directory)
        else:
            _resume_state(live, directory, state)
        if dry_run:
            return {"dry_run": True, **_plan(live, directory, state, base_backup)}
        if "preflight" not in state["done"]:
            state["done"].append("preflight")
            _save_state(live, state)
        plan = _plan(live, directory, state, base_backup)
        print(_plan_text(plan, resumed), file=sys.stderr, flush=True)
        log("switch.preflight", data_dir=str(directory), cluster=live.spec, resumed=resumed)
        ctx = Context(settings, live, directory, state, config, quiet)
        return _execute(ctx, base_backup)
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _execute(ctx: Context, base_backup: bool) -> dict[str, Any]:
    live, state = ctx.live, ctx.state
    job = Job(
        name="switch",
        kind="switch",
        backup_id=catalog.new_backup_id("switch"),
        record_start=False,  # the row goes to the database in service at the end
    )
    job.set(location=str(live.pgdata), timeline=ctx.timeline)
    history = History(ctx.settings.history())  # as postgres over the socket when root
    step = "preflight"
    with run_job(job, history_dsn=None, metrics_dir=ctx.settings.metrics_dir):
        try:
            for step in STEPS[1:]:
                if step in state["done"]:
                    log(f"switch.{step}", skipped="done before")
                    continue
                if step == "base_backup" and not base_backup:
                    log("switch.base_backup", skipped="--no-base-backup")
                    continue
                STEP_FUNCTIONS[step](ctx)
                state["done"].append(step)
                _save_state(live, state)
        except BaseException as exc:
            message = db.first_line(exc) if str(exc) else type(exc).__name__
            if isinstance(exc, psycopg.Error):
                message = f"PostgreSQL: {message}"
            state.setdefault("errors", []).append(
                {"step": step, "error": message, "at": catalog.iso(catalog.now_utc())}
            )
            _save_state(live, state)
            history.finish(job, f"{step}: {message}")
            where = (
                f"the old data directory is at {ctx.aside}"
                if "move_aside" in state["done"]
                else f"the live data directory {live.pgdata} is untouched"
            )
            text = (
                f"switch step {step} failed: {message}; fix it and rerun the same command to "
                f"resume ({where}; state: {live.state_file})"
            )
            if isinstance(exc, DbtierError | OSError | psycopg.Error):
                raise DbtierError(text, getattr(exc, "exit_code", None)) from None
            log("switch.interrupted", "error", step=step, detail=text)
            raise
        history.finish(job, None)
    state["completed_at"] = catalog.iso(catalog.now_utc())
    _save_state(live, state)
    record = live.state_file.with_name(
        f".dbtier-switch-{live.version}-{live.name}.{state['stamp']}.done.json"
    )
    os.replace(live.state_file, record)
    result = _plan(live, ctx.directory, state, base_backup)
    result.update(switched=True, base_backup_id=state.get("base_backup_id"), record=str(record))
    log("switch.done", cluster=live.spec, kept=state["aside"], timeline=ctx.timeline)
    return result


def after_pitr(settings: Settings, pitr: dict[str, Any], args: Any) -> dict[str, Any]:
    """`restore pitr --switch`: the switch after the recovery (which stopped the promoted
    server cleanly); a dry run shows what would follow."""
    if pitr.get("dry_run"):
        then = precheck(args.data_dir, cluster=args.cluster)
        return {**pitr, **{f"switch_{k}": v for k, v in then.items()}}
    done = switch(
        settings,
        args.data_dir,
        cluster=args.cluster,
        base_backup=not args.no_base_backup,
        config=args.config,
        quiet=args.quiet,
    )
    return {**pitr, **{f"switch_{k}": v for k, v in done.items()}}
