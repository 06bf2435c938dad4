"""WAL archiving throughput: `dbtier wal-push` vs pgBackRest `archive-push` (sync and async).

One scratch PostgreSQL 15 cluster (wal_level replica, archive_mode on, archive_timeout 60 s)
with pgbench data; three archivers, each pushing into its own repository on this disk:

  dbtier             archive_command = dbtier wal-push %p (a Python process per segment: zstd
                     level 1, AES-256-GCM, fsync, create-if-absent), Debian's python3 as on the
                     database hosts
  pgbackrest         pgbackrest archive-push %p (sync: a C process per segment), zst, AES-256-CBC
  pgbackrest-async   the same with archive-async=y, a spool directory and process-max=2 (the
                     background process pushes ahead; PostgreSQL's call only acknowledges)

Two measurements, the variants alternated (round robin, rotated each repetition):

  under load   archive_command set (ALTER SYSTEM + pg_reload_conf), `pgbench -N -c 8 -j 2` for
               60 s, pg_stat_archiver, pg_current_wal_lsn() and the .ready files sampled every
               second until the backlog drained: WAL MB/s produced and archived, the lag in
               segments and in seconds, the time the backlog takes to drain after the load
               stops ("keeps up" = drained in less than archive_timeout), failures;
  ceiling      archiving off (empty archive_command), N segments of WAL written by UPDATEs of
               pgbench_accounts, then the archiver turned on and the drain timed: the MB/s of
               WAL each archiver can push when it never waits for WAL, per-segment
               milliseconds and CPU.

CPU of archiving = the archiver's waited-for children (cutime + cstime of the archiver process:
every archive_command and what it runs) plus pgBackRest's detached async process and its local
workers (sampled from /proc every 0.2 s; they are not the archiver's children). Also a start-up
profile of one `dbtier wal-push` run by hand (interpreter, imports, work).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common
from dbtier.pgcluster import (
    LocalCluster,
    as_server_user,
    chown_to_server_user,
    pg_bindir,
    private_dir,
)

NAME = "wal"
TITLE = "WAL archiving: dbtier wal-push vs pgBackRest archive-push"

VARIANTS = ("dbtier", "pgbackrest", "pgbackrest-async")
BASELINE = "pgbackrest"
ARCHIVE_TIMEOUT = 60  # seconds: the target's limit for draining the backlog after the load
STANZA = "bench"
CLIENTS, THREADS = 8, 2
SAMPLE_EVERY = 1.0  # seconds between pg_stat_archiver samples
PROC_EVERY = 0.2  # seconds between /proc scans for pgBackRest's detached processes
DETACHED = (b"archive-push:async", b"archive-push:local")
PROFILE_RUNS = 3
GROWTH_LIMIT = 1.0  # segments/min of lag growth under the load still called "bounded"
BACKLOG_ROWS = 20_000  # rows per UPDATE while writing a backlog

_SAMPLE_SQL = """
SELECT extract(epoch FROM clock_timestamp())::float8,
       (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8,
       a.archived_count, a.last_archived_wal, a.failed_count,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')::int
FROM pg_stat_archiver a
"""


@dataclass
class _Bench:
    ctx: common.Context
    base: Path
    cluster: LocalCluster
    commands: dict[str, str]
    pgbr_conf: Path
    dbtier_conf: Path
    seg_size: int = 16 << 20
    configs: dict[str, str] = field(default_factory=dict)

    def dsn(self) -> str:
        return self.cluster.dsn()

    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def segno(self, name: str) -> int:
        per_id = 0x100000000 // self.seg_size
        return int(name[8:16], 16) * per_id + int(name[16:24], 16)

    def set_command(self, command: str, *, settle: bool = True) -> None:
        """archive_command by ALTER SYSTEM + reload, waiting until a new session sees it
        (settle=False: return at once after the reload, for a drain timed from it)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = {_literal(command)}")
            conn.execute("SELECT pg_reload_conf()")
        if not settle:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sql("SELECT current_setting('archive_command')")[0][0] == command:
                time.sleep(0.3)  # the archiver handles its SIGHUP on its next wakeup
                return
            time.sleep(0.1)
        raise RuntimeError(f"archive_command not applied after 30 s: {command}")

    def archiver_pid(self) -> int:
        rows = self.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'")
        if not rows:
            raise RuntimeError("no archiver process (archive_mode off?)")
        return int(rows[0][0])

    def state(self) -> dict[str, Any]:
        t, lsn, archived, last, failed, ready = self.sql(_SAMPLE_SQL)[0]
        return {
            "t": t,
            "lsn": int(lsn),
            "archived": int(archived),
            "last": last,
            "failed": int(failed),
            "ready": int(ready),
        }

    def drained(self, state: dict[str, Any]) -> bool:
        """Every completed segment archived: nothing .ready, the last archived one is the
        segment before the one being written."""
        if state["ready"] or not state["last"]:
            return False
        last = state["last"]
        if not re.fullmatch(r"[0-9A-F]{24}", last):
            return False
        return self.segno(last) >= state["lsn"] // self.seg_size - 1

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.drained(self.state()):
                return True
            time.sleep(0.2)
        return False

    def pgbench(self, seconds: float) -> list[str]:
        return [
            str(pg_bindir(15, "pgbench") / "pgbench"),
            "-n",
            "-N",
            "-c",
            str(CLIENTS),
            "-j",
            str(THREADS),
            "-T",
            str(int(seconds)),
            "-d",
            self.dsn(),
        ]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _detached_pgbackrest() -> dict[tuple[int, bytes], float]:
    """CPU seconds so far of every pgBackRest async/local process, keyed by (pid, start time)."""
    found: dict[tuple[int, bytes], float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
            if not any(tag in cmdline for tag in DETACHED):
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        tick = os.sysconf("SC_CLK_TCK")
        found[(int(entry.name), rest[19])] = (int(rest[11]) + int(rest[12])) / tick
    return found


class _Sampler:
    """A thread: pg_stat_archiver + WAL position every second, pgBackRest's detached
    processes every 0.2 s, the archiver's children's CPU at start and stop."""

    def __init__(self, bench: _Bench) -> None:
        self.bench = bench
        self.samples: list[dict[str, Any]] = []
        self.detached: dict[tuple[int, bytes], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> _Sampler:
        self.pid = self.bench.archiver_pid()
        self.cpu0 = common.proc_cpu(self.pid) or (0.0, 0.0)
        self.machine0 = common._machine_busy()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        cpu1 = common.proc_cpu(self.pid) or self.cpu0
        self.archiver_cpu = cpu1[0] - self.cpu0[0]
        self.children_cpu = cpu1[1] - self.cpu0[1]
        self.machine_cpu = common._machine_busy() - self.machine0
        if self.error is not None:
            raise self.error

    @property
    def cpu(self) -> float:
        """Client CPU of archiving: archive_command processes + pgBackRest's detached ones."""
        return self.children_cpu + sum(self.detached.values())

    def _loop(self) -> None:
        try:
            with psycopg.connect(self.bench.dsn(), autocommit=True) as conn:
                next_sample = 0.0
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= next_sample:
                        row = conn.execute(_SAMPLE_SQL).fetchone()
                        _t, lsn, archived, last, failed, ready = row
                        self.samples.append(
                            {
                                "t": now - self.t0,
                                "lsn": int(lsn),
                                "archived": int(archived),
                                "last": last,
                                "failed": int(failed),
                                "ready": int(ready),
                            }
                        )
                        next_sample = now + SAMPLE_EVERY
                    for key, cpu in _detached_pgbackrest().items():
                        self.detached[key] = max(cpu, self.detached.get(key, 0.0))
                    self._stop.wait(PROC_EVERY)
        except BaseException as exc:  # re-raised by __exit__
            self.error = exc

    def latest(self) -> dict[str, Any] | None:
        return self.samples[-1] if self.samples else None


# ---------------------------------------------------------------------------------------------
# set-up


def _setup(ctx: common.Context, scale: int) -> _Bench:
    base = private_dir(ctx.work / "wal")
    base.chmod(0o755)
    dirs = {}
    for name in ("dbtier-repo", "pgbackrest-repo", "pgbackrest-spool", "pgbackrest-log"):
        dirs[name] = private_dir(base / name)
    key = base / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    chown_to_server_user(key)
    dbtier_conf = base / "dbtier.toml"
    dbtier_conf.write_text(f'repository = "file://{dirs["dbtier-repo"]}"\nkey = "file:{key}"\n')
    dbtier_conf.chmod(0o644)
    cluster = LocalCluster(
        base=base / "pg",
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_timeout": str(ARCHIVE_TIMEOUT),
            "shared_buffers": "256MB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "15min",
            # no autovacuum: its WAL would land in one variant's window and not another's (and
            # a slow archiver's drain would chase it)
            "autovacuum": "off",
        },
    )
    private_dir(base / "pgbackrest-lock")
    pgbr_conf = base / "pgbackrest.conf"
    pgbr_conf.write_text(
        "[global]\n"
        f"repo1-path={dirs['pgbackrest-repo']}\n"
        "repo1-cipher-type=aes-256-cbc\n"
        f"repo1-cipher-pass={os.urandom(24).hex()}\n"
        "compress-type=zst\n"
        f"log-path={dirs['pgbackrest-log']}\n"
        f"lock-path={base / 'pgbackrest-lock'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        "\n"
        f"[{STANZA}]\n"
        f"pg1-path={cluster.datadir}\n"
        f"pg1-port={cluster.port}\n"
        f"pg1-socket-path={cluster.sockdir}\n"
        "pg1-user=postgres\n"
    )
    pgbr_conf.chmod(0o640)
    chown_to_server_user(pgbr_conf)
    pgbr = f"pgbackrest --config={pgbr_conf} --stanza={STANZA}"
    commands = {
        "dbtier": f"DBTIER_CONFIG={dbtier_conf} {ctx.server_dbtier} wal-push --quiet %p",
        "pgbackrest": f"{pgbr} archive-push %p",
        "pgbackrest-async": (
            f"{pgbr} --archive-async --spool-path={dirs['pgbackrest-spool']} --process-max=2 "
            "archive-push %p"
        ),
    }
    bench = _Bench(ctx, base, cluster, commands, pgbr_conf, dbtier_conf)
    bench.configs = {
        "pgbackrest.conf": re.sub(
            r"cipher-pass=\S+", "cipher-pass=<random>", pgbr_conf.read_text()
        ),
        "dbtier.toml": dbtier_conf.read_text(),
    }
    return bench


def _start(bench: _Bench, scale: int) -> None:
    cluster = bench.cluster
    common.progress(f"wal: initdb + pgbench -i -s {scale}")
    cluster.init()
    cluster.start()
    segment = "SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'"
    bench.seg_size = int(bench.sql(segment)[0][0])
    bench.set_command("true")  # the initial load's WAL is not part of any measurement
    subprocess.run(
        [
            str(pg_bindir(15, "pgbench") / "pgbench"),
            "-i",
            "-q",
            "-s",
            str(scale),
            "-d",
            cluster.dsn(),
        ],
        check=True,
        capture_output=True,
    )
    bench.sql("CHECKPOINT")
    bench.sql("SELECT pg_switch_wal()")
    bench.wait_drained(300)
    _as_postgres(f"pgbackrest --config={bench.pgbr_conf} --stanza={STANZA} stanza-create")


def _as_postgres(command: str) -> subprocess.CompletedProcess[str]:
    argv = as_server_user(["bash", "-c", command])
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{command}` failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


def _reset(bench: _Bench, name: str) -> None:
    """Before each run: the variant's command in place, the backlog empty, a checkpoint (every
    run starts with the same full-page-write state) and a fresh segment."""
    bench.set_command(bench.commands[name])
    if not bench.wait_drained(300):
        raise RuntimeError(f"{name}: the archive backlog did not drain before the run")
    bench.sql("CHECKPOINT")
    bench.sql("SELECT pg_switch_wal()")
    if not bench.wait_drained(120):
        raise RuntimeError(f"{name}: the switched segment was not archived")


# ---------------------------------------------------------------------------------------------
# under load


def _load_run(bench: _Bench, name: str, seconds: float, drain_limit: float) -> common.Sample:
    seg = bench.seg_size
    with _Sampler(bench) as sampler:
        start = bench.state()
        load = subprocess.run(bench.pgbench(seconds), capture_output=True, text=True, check=False)
        if load.returncode != 0:
            raise RuntimeError(f"pgbench failed: {load.stderr.strip()[-500:]}")
        end = bench.state()
        t_end = time.monotonic() - sampler.t0
        drained_at = None
        deadline = time.monotonic() + drain_limit
        while time.monotonic() < deadline:
            if bench.drained(bench.state()):
                drained_at = time.monotonic() - sampler.t0
                break
            time.sleep(0.2)
        final = bench.state()
    load_s = end["t"] - start["t"]
    produced = end["lsn"] - start["lsn"]
    archived_in_load = end["archived"] - start["archived"]
    archived_total = final["archived"] - start["archived"]
    series = _lag_series(bench, sampler.samples)
    tps = re.search(r"tps = ([0-9.]+)", load.stdout)
    extra = {
        "load_s": load_s,
        "tps": float(tps.group(1)) if tps else None,
        "wal_bytes": produced,
        "produced_mb_s": produced / 2**20 / load_s,
        "archived_segments_in_load": archived_in_load,
        "archived_mb_s_in_load": archived_in_load * seg / 2**20 / load_s,
        "archived_segments": archived_total,
        "max_lag_segments": max((s["lag_segments"] for s in series), default=0),
        "max_lag_s": max((s["lag_s"] for s in series), default=0.0),
        "lag_growth_per_min": _growth(series, load_s),
        "lag_at_load_end": end["ready"],
        "drain_s": None if drained_at is None else max(0.0, drained_at - t_end),
        "drained": drained_at is not None,
        "failures": final["failed"] - start["failed"],
        "cpu_per_segment_ms": 1000 * sampler.cpu / archived_total if archived_total else None,
        "archiver_cpu": sampler.archiver_cpu,
        "detached_cpu": sum(sampler.detached.values()),
        "series": series,
    }
    wall = drained_at if drained_at is not None else time.monotonic() - sampler.t0
    return common.Sample(
        wall=wall,
        cpu=sampler.cpu,
        machine_cpu=sampler.machine_cpu,
        bytes=archived_total * seg,
        extra=extra,
    )


def _growth(series: list[dict[str, Any]], load_s: float) -> float:
    """Segments per minute the lag grew in the second half of the load (least-squares slope):
    about 0 when the archiver keeps up, the archiving deficit when it does not. The first half
    holds the burst of full-page writes after the run's checkpoint (WAL at 2-3 times the later
    rate), where a slow archiver falls behind before its lag levels off: max lag shows that."""
    points = [(s["t"], s["lag_segments"]) for s in series if load_s / 2 <= s["t"] <= load_s]
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return 0.0
    fit = statistics.linear_regression([t for t, _ in points], [lag for _, lag in points])
    return 60 * fit.slope


def _lag_series(bench: _Bench, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sample: the lag in segments (.ready files) and in seconds (how long the oldest
    unarchived completed segment has been complete: since the first sample that saw WAL beyond
    it, or since the start for one completed before; 0 when nothing waits), and the MB
    produced and archived so far."""
    if not samples:
        return []
    seg = bench.seg_size
    first = samples[0]
    completed_at: dict[int, float] = {}
    previous = first["lsn"] // seg
    out = []
    for s in samples:
        current = s["lsn"] // seg
        for segno in range(previous, current):
            completed_at.setdefault(segno, s["t"])
        previous = max(previous, current)
        lag_s = 0.0
        last = s["last"]
        if s["ready"] and last and re.fullmatch(r"[0-9A-F]{24}", last):
            oldest = bench.segno(last) + 1
            if oldest < current:
                lag_s = s["t"] - completed_at.get(oldest, 0.0)
        out.append(
            {
                "t": round(s["t"], 2),
                "lag_segments": s["ready"],
                "lag_s": round(lag_s, 2),
                "produced_mb": round((s["lsn"] - first["lsn"]) / 2**20, 1),
                "archived_mb": round((s["archived"] - first["archived"]) * seg / 2**20, 1),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# ceiling: drain a backlog


def _make_backlog(bench: _Bench, segments: int) -> int:
    """Archiving off, then `segments` segments of WAL written as fast as the server can:
    UPDATEs of pgbench_accounts in ranges of BACKLOG_ROWS rows (the table the load updates:
    heap and index records and full-page images after a checkpoint, like pgbench's WAL, at
    several times pgbench's rate). Returns how many segments wait (.ready)."""
    bench.set_command("")
    bench.sql("CHECKPOINT")
    bench.sql("SELECT pg_switch_wal()")
    seg = bench.seg_size
    with psycopg.connect(bench.dsn(), autocommit=True) as conn:
        rows = int(conn.execute("SELECT max(aid) FROM pgbench_accounts").fetchone()[0])
        target = conn.execute(_SAMPLE_SQL).fetchone()[1] // seg + segments
        aid = 1
        while conn.execute(_SAMPLE_SQL).fetchone()[1] // seg < target:
            conn.execute(
                "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid >= %s AND aid < %s",
                (aid, aid + BACKLOG_ROWS),
            )
            aid = aid + BACKLOG_ROWS if aid + BACKLOG_ROWS <= rows else 1
        conn.execute("SELECT pg_switch_wal()")
    return bench.state()["ready"]


def _repository(bench: _Bench, name: str) -> Path:
    return bench.base / ("dbtier-repo" if name == "dbtier" else "pgbackrest-repo")


def _drain_run(bench: _Bench, name: str, limit: float) -> common.Sample:
    stored_before = common.size_of(_repository(bench, name))
    with _Sampler(bench) as sampler:
        before = bench.state()
        waiting = before["ready"]
        bench.set_command(bench.commands[name], settle=False)
        started = time.monotonic()  # from the reload: the archiver wakes on its SIGHUP
        drained = bench.wait_drained(limit)
        wall = time.monotonic() - started
        after = bench.state()
    pushed = after["archived"] - before["archived"]
    seg = bench.seg_size
    stored = common.size_of(_repository(bench, name)) - stored_before
    return common.Sample(
        wall=wall,
        cpu=sampler.cpu,
        machine_cpu=sampler.machine_cpu,
        bytes=stored,
        extra={
            "segments": pushed,
            "stored_kb_per_segment": stored / 1024 / pushed if pushed else None,
            "waiting": waiting,
            "drained": drained,
            "mb_s": pushed * seg / 2**20 / wall,
            "ms_per_segment": 1000 * wall / pushed if pushed else None,
            "cpu_per_segment_ms": 1000 * sampler.cpu / pushed if pushed else None,
            "failures": after["failed"] - before["failed"],
        },
    )


# ---------------------------------------------------------------------------------------------
# start-up profile of one wal-push, by hand


def _profile(bench: _Bench) -> dict[str, Any]:
    """Copies of a few waiting segments pushed by hand (each into a fresh repository) as the
    postgres user: wall time of `python3 -c pass`, of `dbtier wal-push`, of a sync
    `pgbackrest archive-push`, and `-X importtime` of wal-push."""
    bench.set_command("")
    bench.sql("SELECT pg_switch_wal()")
    _make_backlog(bench, PROFILE_RUNS)
    wal = bench.cluster.datadir / "pg_wal"
    ready = sorted(p.name[: -len(".ready")] for p in (wal / "archive_status").glob("*.ready"))
    names = [n for n in ready if re.fullmatch(r"[0-9A-F]{24}", n)][:PROFILE_RUNS]
    hand = private_dir(bench.base / "by-hand")
    copies = []
    for n in names:
        shutil.copy2(wal / n, hand / n)
        chown_to_server_user(hand / n)
        copies.append(hand / n)
    python = bench.ctx.server_dbtier.split(" -m ")[0]
    out: dict[str, Any] = {"segments": len(copies), "runs": []}
    floor = [_timed_as_postgres(f"{python} -c pass")[0] for _ in range(PROFILE_RUNS)]
    out["python_start_s"] = common.stats(floor)
    # what any Python wal-push must import, however lazy: zstd and cryptography's AES-GCM/HKDF
    needed = (
        "import zstandard; from cryptography.hazmat.primitives.ciphers.aead import AESGCM; "
        "from cryptography.hazmat.primitives.kdf.hkdf import HKDF"
    )
    floor = [_timed_as_postgres(f'{python} -c "{needed}"') for _ in range(PROFILE_RUNS)]
    out["python_needed_imports_s"] = common.stats([w for w, _ in floor])
    out["python_needed_imports_cpu_s"] = common.stats([c for _, c in floor])
    pushes, pgbr_pushes = [], []
    for i, copy in enumerate(copies):
        repo = private_dir(hand / f"repo-{i}")
        conf = hand / f"dbtier-{i}.toml"
        conf.write_text(bench.dbtier_conf.read_text().replace(
            str(bench.base / "dbtier-repo"), str(repo)))  # fmt: skip
        conf.chmod(0o644)
        wall, cpu = _timed_as_postgres(
            f"DBTIER_CONFIG={conf} {bench.ctx.server_dbtier} wal-push --quiet {copy}"
        )
        pushes.append({"wall": wall, "cpu": cpu})
    # pgBackRest by hand into its own repository (a second stanza-create there)
    pgbr_repo = private_dir(hand / "pgbackrest-repo")
    pgbr = f"pgbackrest --config={bench.pgbr_conf} --stanza={STANZA} --repo1-path={pgbr_repo}"
    _as_postgres(f"{pgbr} stanza-create")
    for copy in copies:
        wall, cpu = _timed_as_postgres(f"{pgbr} archive-push {copy}")
        pgbr_pushes.append({"wall": wall, "cpu": cpu})
    out["dbtier_push_s"] = common.stats([p["wall"] for p in pushes])
    out["dbtier_push_cpu_s"] = common.stats([p["cpu"] for p in pushes])
    out["pgbackrest_push_s"] = common.stats([p["wall"] for p in pgbr_pushes])
    out["pgbackrest_push_cpu_s"] = common.stats([p["cpu"] for p in pgbr_pushes])
    # import time of the wal-push path (one more run, into a fresh repository)
    repo = private_dir(hand / "repo-importtime")
    conf = hand / "dbtier-importtime.toml"
    conf.write_text(
        bench.dbtier_conf.read_text().replace(str(bench.base / "dbtier-repo"), str(repo))
    )
    conf.chmod(0o644)
    command = bench.ctx.server_dbtier.replace(" -m dbtier", " -X importtime -m dbtier")
    proc = _as_postgres(f"DBTIER_CONFIG={conf} {command} wal-push --quiet {copies[0]}")
    out["imports"] = _importtime(proc.stderr)
    # the archiving is re-enabled by the next _reset
    bench.set_command(bench.commands["dbtier"])
    bench.wait_drained(300)
    return out


def _timed_as_postgres(command: str) -> tuple[float, float]:
    sample = common.run_command(as_server_user(["bash", "-c", command]))
    return sample.wall, sample.cpu


def _importtime(stderr: str) -> dict[str, Any]:
    """-X importtime: total, and the biggest modules imported at the top two levels
    (cumulative microseconds, self included)."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    top_level = [r for r in rows if r[2] == 0]
    total = sum(r[1] for r in top_level) / 1e6
    dbtier_side = [r for r in rows if r[2] <= 1 and r[3] != "dbtier.cli"]
    biggest = sorted(dbtier_side, key=lambda r: -r[1])[:12]
    return {
        "total_s": total,
        "modules": len(rows),
        "top": [
            {"module": r[3], "cumulative_ms": r[1] / 1000, "self_ms": r[0] / 1000} for r in biggest
        ],
    }


# ---------------------------------------------------------------------------------------------


def run(ctx: common.Context) -> dict:
    quick = ctx.quick
    scale = 1 if quick else 50
    load_s = 3 if quick else 60
    backlog = 3 if quick else 48
    reps = 1 if quick else ctx.reps
    drain_limit = 30 if quick else 3 * ARCHIVE_TIMEOUT
    bench = _setup(ctx, scale)
    try:
        _start(bench, scale)
        common.progress("wal: start-up profile of one wal-push, by hand")
        profile = _profile(bench)
        load = common.side_by_side(
            {n: (lambda n=n: _load_run(bench, n, load_s, drain_limit)) for n in VARIANTS},
            reps,
            before_each=lambda n: _reset(bench, n),
            label=f"wal under load ({load_s}s pgbench -N -c {CLIENTS}): ",
        )
        ceiling = common.side_by_side(
            {n: (lambda n=n: _drain_run(bench, n, 600)) for n in VARIANTS},
            reps,
            before_each=lambda n: _make_backlog(bench, backlog),
            label=f"wal ceiling (drain {backlog} segments): ",
        )
        dbtier_drains = [s.extra["drain_s"] for s in load["dbtier"]]
        worst = max((d if d is not None else float("inf")) for d in dbtier_drains)
        growth = max(s.extra["lag_growth_per_min"] for s in load["dbtier"])
        return {
            "settings": {
                "pgbench_scale": scale,
                "load_seconds": load_s,
                "clients": CLIENTS,
                "threads": THREADS,
                "backlog_segments": backlog,
                "reps": reps,
                "archive_timeout": ARCHIVE_TIMEOUT,
                "wal_segment_bytes": bench.seg_size,
                "cores": os.cpu_count(),
            },
            "commands": dict(bench.commands),
            "configs": bench.configs,
            "pgbench": shlex.join(bench.pgbench(load_s)).replace(bench.dsn(), "<dsn>"),
            "load": common.comparison(load, baseline=BASELINE),
            "ceiling": common.comparison(ceiling, baseline=BASELINE),
            "profile": profile,
            "targets": [
                common.target(
                    "archiving keeps up with the write load: dbtier's backlog drains in less "
                    f"than archive_timeout ({ARCHIVE_TIMEOUT} s) after the load (worst run, s)",
                    worst,
                    ARCHIVE_TIMEOUT,
                ),
                common.target(
                    "the lag stays bounded under the load: dbtier's lag grows by less than "
                    f"{GROWTH_LIMIT:.0f} segment a minute while it runs (worst run, segments/min)",
                    growth,
                    GROWTH_LIMIT,
                ),
            ],
        }
    finally:
        common.progress("wal: removing the scratch cluster")
        bench.cluster.destroy()
        shutil.rmtree(bench.base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# render


def _extras(variant: dict, key: str) -> list[float]:
    return [r["extra"][key] for r in variant["runs"] if r["extra"].get(key) is not None]


def _mmm(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "—"
    lo, med, hi = min(values), statistics.median(values), max(values)
    if len(values) == 1 or lo == hi:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _chart(section: dict, ctx: common.Context) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"dbtier": "tab:blue", "pgbackrest": "tab:orange", "pgbackrest-async": "tab:green"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, variant in section["load"]["variants"].items():
        for i, run in enumerate(variant["runs"]):
            series = run["extra"]["series"]
            ax1.plot(
                [s["t"] for s in series],
                [s["lag_segments"] for s in series],
                color=colors.get(name),
                alpha=1.0 if i == 0 else 0.4,
                label=name if i == 0 else None,
            )
    load_s = section["settings"]["load_seconds"]
    ax1.axvline(load_s, color="grey", linestyle="--", linewidth=1)
    ax1.set_xlabel("seconds since the load started (dashed: load stops)")
    ax1.set_ylabel("archiver lag (segments .ready)")
    ax1.set_title(f"Lag under pgbench -N -c {section['settings']['clients']}")
    ax1.legend()
    names = list(section["ceiling"]["variants"])
    med = [statistics.median(_extras(section["ceiling"]["variants"][n], "mb_s")) for n in names]
    lo = [min(_extras(section["ceiling"]["variants"][n], "mb_s")) for n in names]
    hi = [max(_extras(section["ceiling"]["variants"][n], "mb_s")) for n in names]
    ax2.bar(
        names,
        med,
        yerr=[
            [m - a for m, a in zip(med, lo, strict=True)],
            [b - m for m, b in zip(med, hi, strict=True)],
        ],
        color=[colors.get(n) for n in names],
        capsize=4,
    )
    produced = [
        statistics.median(_extras(section["load"]["variants"][n], "produced_mb_s"))
        for n in section["load"]["variants"]
    ]
    ax2.axhline(
        max(produced), color="grey", linestyle="--", linewidth=1, label="WAL MB/s of the load"
    )
    ax2.set_ylabel("MB/s of WAL archived")
    ax2.set_title(f"Ceiling: draining {section['settings']['backlog_segments']} segments")
    ax2.legend()
    fig.tight_layout()
    ctx.assets.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.assets / "wal.png", dpi=100)
    plt.close(fig)


def render(section: dict, ctx: common.Context) -> str:
    _chart(section, ctx)
    s = section["settings"]
    lines = [  # the harness writes the "## TITLE" heading
        f"pgbench scale {s['pgbench_scale']}, {s['cores']} cores, {s['reps']} alternating "
        f"repetition(s), WAL segments of {s['wal_segment_bytes'] >> 20} MB, archive_timeout "
        f"{s['archive_timeout']} s; every archiver writes to its own repository on the local disk "
        "(file://, fsync), compressed with zstd and encrypted. Figures: median (min-max).",
        "",
        f"![WAL archiving]({ctx.assets.name}/wal.png)",
        "",
        f"### Under a write load: `{section['pgbench']}`",
        "",
        "| archiver | WAL produced MB/s | archived MB/s during load | tps | max lag (segments) "
        "| max lag (s) | lag growth (segments/min) | drain after load (s) | failures "
        "| archiving CPU (s) | CPU ms/segment |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in section["load"]["variants"].items():
        drains = [r["extra"]["drain_s"] for r in v["runs"]]
        drain_txt = _mmm([d for d in drains if d is not None])
        if any(d is None for d in drains):
            drain_txt += f" ({sum(d is None for d in drains)} did not drain)"
        lines.append(
            f"| {name} | {_mmm(_extras(v, 'produced_mb_s'))} | "
            f"{_mmm(_extras(v, 'archived_mb_s_in_load'))} | {_mmm(_extras(v, 'tps'), '{:.0f}')} | "
            f"{_mmm(_extras(v, 'max_lag_segments'), '{:.0f}')} | {_mmm(_extras(v, 'max_lag_s'))} | "
            f"{_mmm(_extras(v, 'lag_growth_per_min'))} | {drain_txt} | "
            f"{sum(_extras(v, 'failures'))} | "
            f"{_mmm([r['cpu'] for r in v['runs']], '{:.2f}')} | "
            f"{_mmm(_extras(v, 'cpu_per_segment_ms'), '{:.0f}')} |"
        )
    lines += [
        "",
        "Lag in segments: completed segments not archived yet (`.ready` files). Lag in seconds: "
        "how long the oldest of them has been complete. Lag growth: the least-squares slope of "
        "the lag in segments in the second half of the load (about 0 when the archiver keeps up; "
        "otherwise the backlog grows for as long as the load lasts; the first half holds the "
        "burst of full-page writes after the run's checkpoint, which the max lag shows). "
        "Drain: from the end of the load until "
        "every completed segment is archived. CPU: the archive_command processes (the "
        "archiver's cutime + cstime) plus pgBackRest's detached async process and its workers "
        "(sampled from /proc every 0.2 s).",
        "",
        f"### Ceiling: draining a backlog of {s['backlog_segments']} segments",
        "",
        "| archiver | segments | drain wall (s) | MB/s | ms/segment | CPU (s) | CPU ms/segment "
        "| stored KB/segment | wall vs pgbackrest |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in section["ceiling"]["variants"].items():
        w = v["wall"]
        lines.append(
            f"| {name} | {_mmm(_extras(v, 'segments'), '{:.0f}')} | "
            f"{w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f}) | {_mmm(_extras(v, 'mb_s'))} | "
            f"{_mmm(_extras(v, 'ms_per_segment'), '{:.0f}')} | "
            f"{_mmm([r['cpu'] for r in v['runs']], '{:.2f}')} | "
            f"{_mmm(_extras(v, 'cpu_per_segment_ms'), '{:.0f}')} | "
            f"{_mmm(_extras(v, 'stored_kb_per_segment'), '{:.0f}')} | {v['ratio_wall']:.2f}x |"
        )
    p = section["profile"]
    lines += [
        "",
        "### One segment by hand (as the postgres user, each into a fresh repository)",
        "",
        "| step | wall s (median, min-max) | CPU s (median) |",
        "| --- | ---: | ---: |",
        f"| `python3 -c pass` (interpreter floor) | {_fmt_stats(p['python_start_s'])} | |",
        "| `python3 -c 'import zstandard; from cryptography...aead import AESGCM; from "
        "cryptography...hkdf import HKDF'` (what any Python push imports) | "
        f"{_fmt_stats(p['python_needed_imports_s'])} | "
        f"{p['python_needed_imports_cpu_s']['median']:.3f} |",
        f"| `dbtier wal-push` | {_fmt_stats(p['dbtier_push_s'])} | "
        f"{p['dbtier_push_cpu_s']['median']:.3f} |",
        f"| `pgbackrest archive-push` (sync) | {_fmt_stats(p['pgbackrest_push_s'])} | "
        f"{p['pgbackrest_push_cpu_s']['median']:.3f} |",
        "",
        f"`python3 -X importtime -m dbtier wal-push`: {p['imports']['total_s'] * 1000:.0f} ms of "
        f"imports ({p['imports']['modules']} modules). Biggest (cumulative ms, self ms):",
        "",
        ", ".join(
            f"`{m['module']}` {m['cumulative_ms']:.0f} ({m['self_ms']:.0f})"
            for m in p["imports"]["top"]
        ),
        "",
    ]
    for t in section["targets"]:
        verdict = "met" if t["met"] else "**MISSED**"
        lines.append(
            f"**Target** — {t['target']}: {t['measured']:.1f} vs < {t['limit']:.0f}: {verdict}."
        )
        lines.append("")
    lines += ["", "### Commands", "", "```"]
    for name, command in section["commands"].items():
        lines.append(f"{name}: archive_command = '{command}'")
    lines += ["```", ""]
    for name, text in section["configs"].items():
        lines += [f"`{name}`:", "", "```ini", text.rstrip(), "```", ""]
    return "\n".join(lines)


def _fmt_stats(st: dict[str, float]) -> str:
    return f"{st['median']:.3f} ({st['min']:.3f}-{st['max']:.3f})"
