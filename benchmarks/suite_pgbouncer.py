"""PgBouncer as roles/pgbouncer deploys it: `pgbench -S` direct vs through PgBouncer (issue 12).

The configuration is the role's own: its templates (pgbouncer.ini.j2 and the per-process
pgbouncer-instance.ini.j2) rendered by ansible-playbook with the role's defaults and vars, the
number of processes and the pool sizes the role derives from this machine's vCPUs, a userlist of
SCRAM-SHA-256 verifiers read from pg_authid (dbtier.pgbouncer, what the pgbouncer_userlist module
writes), client TLS `require` with a certificate of a throwaway CA, TLS to the server (`prefer`,
the local stack's default). Only the paths are changed: port, socket directories, pid and log
files, auth_file in the scratch directory. PgBouncer's processes run as the postgres OS user.

The direct path goes to the same scratch PostgreSQL 15 with the same TLS (sslmode=require) and the
same authentication. Every variant runs with SCRAM-SHA-256 (what production uses) and with trust
(on both hops, TLS kept), so the cost of SCRAM is visible. "before" is the role as it was: one
process, default_pool_size 25.

Variants alternate (round robin, the order rotated each repetition); each run records tps, the
client's CPU (pgbench), PgBouncer's CPU (its processes, from /proc) and the machine's CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/suite_pgbouncer.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import Context, Sample, Stopwatch, progress
from dbtier import pgbouncer as userlist
from dbtier.pgcluster import (
    LocalCluster,
    as_server_user,
    chown_to_server_user,
    free_port,
    pg_bindir,
)

NAME = "pgbouncer"
TITLE = "PgBouncer as the role deploys it (pgbench -S, direct vs pooled)"

ROOT = common.ROOT
ROLE = ROOT / "ansible/roles/pgbouncer"
DB = "bench"
PASSWORD = "bench-password-0123"  # noqa: S105 - a scratch cluster on 127.0.0.1 only
USERS = {"scram": "bench_scram", "trust": "bench_trust"}
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _pgbench() -> str:
    return str(pg_bindir(15, "pgbench") / "pgbench")


# --- the stack -----------------------------------------------------------------------------------


class Pooler:
    """The role's PgBouncer processes for one auth method, on one port."""

    def __init__(self, name: str, directory: Path, port: int) -> None:
        self.name = name
        self.dir = directory
        self.port = port
        self.inis: list[Path] = []
        self.pids: list[int] = []

    def start(self) -> None:
        for ini in self.inis:
            subprocess.run(
                as_server_user([PGBOUNCER, "-d", "-q", str(ini)]),
                check=True,
                timeout=30,
            )
        deadline = time.monotonic() + 10
        pidfiles = [self.dir / f"pgbouncer-{n}.pid" for n in range(1, len(self.inis) + 1)]
        while time.monotonic() < deadline and not all(p.exists() for p in pidfiles):
            time.sleep(0.1)
        self.pids = [int(p.read_text()) for p in pidfiles]

    def cpu(self) -> float:
        """CPU seconds (user + sys) of this pooler's processes so far."""
        return sum((common.proc_cpu(pid) or (0.0, 0.0))[0] for pid in self.pids)

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 2)
        deadline = time.monotonic() + 10
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids = []


def _children(postmaster: int) -> dict[int, tuple[str, float]]:
    """pid -> (state, CPU seconds) of the postmaster's children."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == postmaster:
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found[int(entry.name)] = (fields[0], cpu)
    return found


def server_cpu(postmaster: int, started: set[int] | None = None) -> tuple[float, set[int]]:
    """CPU seconds of a PostgreSQL server so far: the postmaster, its reaped children (backends
    that ended, as with pgbench -C) and its live children (pooled server connections); and the
    live children's pids. Waits (at most 5 s) until no child is a zombie and, with `started`
    (the children before a direct run), until the backends the run started have exited: a
    backend still exiting would be in neither figure, or in the next run's."""
    deadline = time.monotonic() + 5
    while True:
        children = _children(postmaster)
        zombies = any(state in "ZX" for state, _ in children.values())
        leftover = started is not None and bool(set(children) - started)
        if not (zombies or leftover) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    total = sum(common.proc_cpu(postmaster) or (0.0, 0.0)) + sum(
        cpu for _, cpu in children.values()
    )
    return total, set(children)


class Stack:
    """A scratch PostgreSQL 15 with TLS and SCRAM, and PgBouncer poolers rendered by the role."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.dir = ctx.work / "pgbouncer"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        chown_to_server_user(self.dir)
        self.cluster: LocalCluster | None = None
        self.poolers: dict[str, Pooler] = {}
        self.role_settings: dict = {}

    # PostgreSQL
    def start_cluster(self) -> None:
        from tests.support.tlsca import make_ca  # the project's throwaway CA (cryptography)

        tls = make_ca(self.dir / "tls")
        for path in (tls.server_cert, tls.server_key, tls.ca_cert):
            chown_to_server_user(path)
        self.tls = tls
        self.dir.joinpath("tls").chmod(0o755)
        hba = self.dir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            f"hostssl all {USERS['scram']} 127.0.0.1/32 scram-sha-256\n"
            f"hostssl all {USERS['trust']} 127.0.0.1/32 trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
        )
        chown_to_server_user(hba)
        self.cluster = LocalCluster(
            base=self.dir / "pg",
            settings={
                "ssl": "on",
                "ssl_cert_file": f"'{tls.server_cert}'",
                "ssl_key_file": f"'{tls.server_key}'",
                "hba_file": f"'{hba}'",
                "password_encryption": "'scram-sha-256'",
                "max_connections": "300",
                "shared_buffers": "256MB",
            },
        )
        self.cluster.init()
        self.cluster.start()
        scale = 1 if self.ctx.quick else 10
        self.psql("postgres", f"CREATE DATABASE {DB}")
        subprocess.run(
            [
                *as_server_user([]),
                _pgbench(),
                "-i",
                "-q",
                "-s",
                str(scale),
                "-h",
                str(self.cluster.sockdir),
                "-p",
                str(self.cluster.port),
                "-U",
                "postgres",
                DB,
            ],
            check=True,
            capture_output=True,
        )
        for user in USERS.values():
            self.psql(DB, f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
            self.psql(DB, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
        self.psql(DB, "VACUUM ANALYZE")

    def psql(self, dbname: str, sql: str) -> str:
        assert self.cluster
        proc = subprocess.run(
            [
                *as_server_user([]),
                str(pg_bindir(15, "psql") / "psql"),
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.cluster.sockdir),
                "-p",
                str(self.cluster.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.strip()

    # PgBouncer
    def render(self, name: str, overrides: dict) -> dict:
        """The role's templates rendered with its defaults and vars into self.dir/name; returns
        the values the role derived (processes, pool sizes)."""
        assert self.cluster
        out = self.dir / name
        out.mkdir(exist_ok=True)
        extra = {
            "dbtier_db_host": "127.0.0.1",
            "dbtier_db_port": self.cluster.port,
            "dbtier_db_name": DB,
            "dbtier_app_password": "unused",
            "dbtier_migration_password": "unused",
            "ansible_processor_vcpus": os.cpu_count() or 1,
            "pgbouncer_listen_port": free_port(),
            "pgbouncer_unix_socket_dir": str(out / "run-1"),
            "pgbouncer_client_tls_cert_file": str(self.tls.server_cert),
            "pgbouncer_client_tls_key_file": str(self.tls.server_key),
            "_pgbouncer_ini": str(out / "pgbouncer.ini"),
            "_pgbouncer_run_dir": str(out / "run"),
            **overrides,
        }
        (out / "extra.json").write_text(json.dumps(extra))
        derived = [
            "_pgbouncer_processes",
            "_pgbouncer_default_pool_size",
            "_pgbouncer_reserve_pool_size",
            "pgbouncer_max_client_conn",
            "pgbouncer_pool_mode",
            "pgbouncer_client_tls_sslmode",
            "pgbouncer_server_tls_sslmode",
            "pgbouncer_listen_port",
        ]
        play = {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "name": "pgbouncer.ini",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates/pgbouncer.ini.j2"),
                        "dest": str(out / "role.ini"),
                        "mode": "0644",
                    },
                },
                {
                    "name": "instances",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates/pgbouncer-instance.ini.j2"),
                        "dest": str(out / "pgbouncer-{{ _pgbouncer_instance }}.ini"),
                        "mode": "0644",
                    },
                    "loop": "{{ range(2, _pgbouncer_processes | int + 1) | list }}",
                    "loop_control": {"loop_var": "_pgbouncer_instance"},
                },
                {
                    "name": "derived",
                    "ansible.builtin.copy": {
                        "content": "{{ {"
                        + ", ".join(f"'{v}': {v}" for v in derived)
                        + "} | to_json }}",
                        "dest": str(out / "derived.json"),
                        "mode": "0644",
                    },
                },
            ],
        }
        (out / "play.json").write_text(json.dumps([play]))
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                "localhost,",
                str(out / "play.json"),
                "-e",
                f"@{out / 'extra.json'}",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
            timeout=300,
        )
        if proc.returncode != 0:
            sys.exit(f"bench: rendering roles/pgbouncer failed:\n{proc.stdout[-3000:]}")
        values = json.loads((out / "derived.json").read_text())
        return {k.lstrip("_"): v for k, v in values.items()}

    def start_pooler(self, config: str, auth: str, overrides: dict) -> Pooler:
        """The processes of one rendering of the role (`config`) for one auth method; every auth
        method gets its own copy of the rendered files (own port, sockets, pid files)."""
        assert self.cluster
        rendered = self.dir / config
        if not (rendered / "derived.json").exists():
            self.render(config, overrides)
        name = f"{config}-{auth}"
        out = self.dir / name
        shutil.copytree(rendered, out)
        settings = json.loads((out / "derived.json").read_text())
        settings = {k.lstrip("_"): v for k, v in settings.items()}
        settings["pgbouncer_listen_port"] = port = free_port()
        for ini in [out / "role.ini", *out.glob("pgbouncer-*.ini")]:
            text = ini.read_text().replace(str(rendered), str(out))
            text = re.sub(r"^listen_port = \d+$", f"listen_port = {port}", text, flags=re.M)
            ini.write_text(text)
        ul = out / "userlist.txt"
        rows = self.psql(
            "postgres",
            "SELECT rolname || ' ' || rolpassword FROM pg_authid WHERE rolname IN "
            + "("
            + ", ".join(f"'{u}'" for u in USERS.values())
            + ") ORDER BY 1",
        )
        ul.write_text(userlist.render_userlist(line.split(" ", 1) for line in rows.splitlines()))
        ul.chmod(0o600)
        chown_to_server_user(ul)
        pooler = Pooler(name, out, int(settings["pgbouncer_listen_port"]))
        processes = int(settings["pgbouncer_processes"])
        # the role's pgbouncer.ini with the paths of this scratch directory appended to its last
        # section, [pgbouncer]
        tail = [
            f"auth_file = {ul}",
            f"logfile = {out}/pgbouncer.log",
            f"pidfile = {out}/pgbouncer-1.pid",
        ]
        if auth == "trust":
            tail += [
                "; the bench's trust variant (the users are still listed)",
                "auth_type = trust",
            ]
        main = out / "pgbouncer.ini"
        main.write_text((out / "role.ini").read_text().rstrip("\n") + "\n" + "\n".join(tail) + "\n")
        inis = [main]
        (out / "run").mkdir(exist_ok=True)
        chown_to_server_user(out / "run")
        for n in range(1, processes + 1):
            run = out / (f"run-{n}" if n == 1 else f"run/pgbouncer-{n}")
            run.mkdir(parents=True, exist_ok=True)
            chown_to_server_user(run)
            if n > 1:
                ini = out / f"pgbouncer-{n}.ini"
                ini.write_text(ini.read_text() + f"pidfile = {out}/pgbouncer-{n}.pid\n")
                inis.append(ini)
        for path in [out, *out.iterdir()]:
            chown_to_server_user(path)
        pooler.inis = inis
        pooler.start()
        self.poolers[name] = pooler
        self.role_settings[name] = settings
        return pooler

    def stop(self) -> None:
        for pooler in self.poolers.values():
            pooler.stop()
        if self.cluster:
            self.cluster.stop()


# --- one pgbench run -----------------------------------------------------------------------------


def pgbench_command(port: int, user: str, clients: int, threads: int, seconds: int, connect: bool):
    dsn = f"host=127.0.0.1 port={port} dbname={DB} user={user} sslmode=require"
    return [
        _pgbench(),
        "-n",
        "-S",
        *(["-C"] if connect else []),
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-T",
        str(seconds),
        dsn,
    ]


TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


def run_pgbench(cmd: list[str], pooler: Pooler | None, postmaster: int) -> Sample:
    pooler_cpu = pooler.cpu() if pooler else 0.0
    server, before = server_cpu(postmaster)
    with Stopwatch() as sw:
        proc = subprocess.run(
            cmd,
            env={**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "require"},
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0 or not TPS.search(proc.stdout):
        sys.exit(f"bench: `{shlex.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")
    sample = sw.sample
    tps = float(TPS.findall(proc.stdout)[-1])
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    sample.extra = {
        "tps": tps,
        "pooler_cpu": (pooler.cpu() - pooler_cpu) if pooler else 0.0,
        "server_cpu": server_cpu(postmaster, None if pooler else before)[0] - server,
        "transactions": int(tps * sample.wall),
        "failed": int(failed.group(1)) if failed else 0,
    }
    return sample


# --- the suite -----------------------------------------------------------------------------------


def run(ctx: Context) -> dict:
    clients = 2 if ctx.quick else int(os.environ.get("BENCH_PGBOUNCER_CLIENTS", "50"))
    seconds = 2 if ctx.quick else int(os.environ.get("BENCH_PGBOUNCER_SECONDS", "15"))
    threads = min(os.cpu_count() or 1, clients)
    reps = 1 if ctx.quick else ctx.reps
    stack = Stack(ctx)
    try:
        progress("pgbouncer: scratch PostgreSQL 15 with TLS and SCRAM, pgbench -i")
        stack.start_cluster()
        progress("pgbouncer: rendering roles/pgbouncer and starting its processes")
        configs = {
            "pgbouncer": {},  # the role's defaults on this machine
            "pgbouncer-before": {  # the role before issue 12: one process, pool 25
                "pgbouncer_processes": 1,
                "pgbouncer_default_pool_size": 25,
                "pgbouncer_reserve_pool_size": 5,
            },
        }
        for config, overrides in configs.items():
            for auth in USERS:
                stack.start_pooler(config, auth, overrides)
        assert stack.cluster
        sections: dict = {}
        commands: dict = {}
        postmaster = int((stack.cluster.datadir / "postmaster.pid").read_text().split()[0])
        for connect in (False, True):
            mode = "connect" if connect else "reuse"
            variants = {}
            for auth, user in USERS.items():
                targets = {"direct": (stack.cluster.port, None)}
                for config in configs:
                    pooler = stack.poolers[f"{config}-{auth}"]
                    targets[config] = (pooler.port, pooler)
                for where, (port, pooler) in targets.items():
                    cmd = pgbench_command(port, user, clients, threads, seconds, connect)
                    name = f"{where} {auth}"
                    commands[f"{name} {mode}"] = shlex.join(cmd)
                    variants[name] = lambda cmd=cmd, pooler=pooler: run_pgbench(
                        cmd, pooler, postmaster
                    )
            samples = common.side_by_side(
                variants, reps, label=f"pgbouncer pgbench -S{' -C' if connect else ''}: "
            )
            section = common.comparison(samples, baseline="direct scram")
            for name, runs in samples.items():
                tps = [s.extra["tps"] for s in runs]
                variant = section["variants"][name]
                variant["tps"] = common.stats(tps)
                variant["pooler_cpu"] = common.stats([s.extra["pooler_cpu"] for s in runs])
                variant["failed"] = sum(s.extra["failed"] for s in runs)
                # CPU ms per transaction of each part: the load generator (pgbench and libpq),
                # PgBouncer, PostgreSQL. Robust where tps is not: the machine is shared.
                per_tx = {
                    part: statistics.median(
                        cpu(s) / max(s.extra["tps"] * s.wall, 1) * 1000 for s in runs
                    )
                    for part, cpu in (
                        ("client", lambda s: s.cpu),
                        ("pooler", lambda s: s.extra["pooler_cpu"]),
                        ("server", lambda s: s.extra["server_cpu"]),
                    )
                }
                variant["cpu_ms_per_tx"] = per_tx
                # what these costs allow on this machine's cores if nothing else ran (derived)
                variant["ceiling_tps"] = (
                    (os.cpu_count() or 1) * 1000 / max(sum(per_tx.values()), 1e-6)
                )
            for name, variant in section["variants"].items():
                auth = name.split()[-1]
                direct = section["variants"][f"direct {auth}"]["tps"]["median"]
                variant["ratio_tps"] = variant["tps"]["median"] / direct if direct else None
            sections[mode] = section
        targets = []
        reuse, connect = sections["reuse"]["variants"], sections["connect"]["variants"]
        for auth in USERS:
            targets.append(
                common.target(
                    f"through PgBouncer ≥ 1.0x direct tps without -C ({auth})",
                    reuse[f"pgbouncer {auth}"]["ratio_tps"],
                    1.0,
                    lower_is_better=False,
                )
            )
            targets.append(
                common.target(
                    f"through PgBouncer ≥ 5x direct tps with -C ({auth})",
                    connect[f"pgbouncer {auth}"]["ratio_tps"],
                    5.0,
                    lower_is_better=False,
                )
            )
        # the same ratios from what each part costs in CPU per transaction (derived): what the
        # pooler allows on these cores, whatever share of them the shared machine gave the run
        ceilings = [
            {
                "mode": mode,
                "auth": auth,
                "direct": sections[mode]["variants"][f"direct {auth}"]["ceiling_tps"],
                "pgbouncer": sections[mode]["variants"][f"pgbouncer {auth}"]["ceiling_tps"],
                "ratio": sections[mode]["variants"][f"pgbouncer {auth}"]["ceiling_tps"]
                / sections[mode]["variants"][f"direct {auth}"]["ceiling_tps"],
                # with the load generator's own CPU left out (as if pgbench ran elsewhere)
                "ratio_without_client": _without_client(sections[mode]["variants"], auth),
            }
            for mode in sections
            for auth in USERS
        ]
        return {
            "ceilings": ceilings,
            "clients": clients,
            "threads": threads,
            "seconds": seconds,
            "reps": reps,
            "cpus": os.cpu_count(),
            "pgbouncer_version": subprocess.run(
                [PGBOUNCER, "--version"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[0],
            "role": stack.role_settings,
            "modes": sections,
            "commands": commands,
            "targets": targets,
        }
    finally:
        stack.stop()
        shutil.rmtree(stack.dir, ignore_errors=True)


def _without_client(variants: dict, auth: str) -> float:
    def server_side(name: str) -> float:
        per_tx = variants[name]["cpu_ms_per_tx"]
        return max(per_tx["pooler"] + per_tx["server"], 1e-9)

    return server_side(f"direct {auth}") / server_side(f"pgbouncer {auth}")


# --- the report ----------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _chart(section: dict, ctx: Context) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx.assets.mkdir(parents=True, exist_ok=True)
    fig, grid = plt.subplots(2, 2, figsize=(12, 7.5))
    modes = (("reuse", "pgbench -S"), ("connect", "pgbench -S -C (connection per tx)"))
    for ax, (mode, title) in zip(grid[1], modes, strict=True):
        # where the time goes: CPU per transaction of each part, stacked
        variants = section["modes"][mode]["variants"]
        names = list(variants)
        left = [0.0] * len(names)
        for part, label, color in (
            ("client", "pgbench + libpq", "#ff7f0e"),
            ("pooler", "PgBouncer", "#1f77b4"),
            ("server", "PostgreSQL", "#2ca02c"),
        ):
            width = [variants[n]["cpu_ms_per_tx"][part] * 1000 for n in names]
            ax.barh(names, width, left=left, color=color, label=label)
            left = [a + b for a, b in zip(left, width, strict=True)]
        ax.set_title(f"CPU per transaction ({title.split(' (')[0]})")
        ax.set_xlabel("CPU µs per transaction (median)")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize="small")
    for ax, (mode, title) in zip(grid[0], modes, strict=True):
        variants = section["modes"][mode]["variants"]
        names = list(variants)
        med = [variants[n]["tps"]["median"] for n in names]
        low = [m - variants[n]["tps"]["min"] for m, n in zip(med, names, strict=True)]
        high = [variants[n]["tps"]["max"] - m for m, n in zip(med, names, strict=True)]
        colors = ["#888888" if n.startswith("direct") else "#1f77b4" for n in names]
        colors = [
            "#aec7e8" if n.startswith("pgbouncer-before") else c
            for n, c in zip(names, colors, strict=True)
        ]
        ax.barh(names, med, xerr=[low, high], color=colors)
        ax.set_title(title)
        ax.set_xlabel("transactions/s (median, min-max)")
        ax.invert_yaxis()
    fig.tight_layout()
    path = ctx.assets / "pgbouncer.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"{ctx.assets.name}/pgbouncer.png"


def _why_missed(section: dict) -> list[str]:
    """Why the targets are missed, from this run's CPU costs (docs/PGBOUNCER.md has the perf
    profiles behind it)."""
    reuse = section["modes"]["reuse"]["variants"]
    connect = section["modes"]["connect"]["variants"]

    def part(variants: dict, name: str, key: str) -> float:  # µs
        return variants[name]["cpu_ms_per_tx"][key] * 1000

    ceilings = {(c["mode"], c["auth"]): c for c in section.get("ceilings", [])}
    scram = ceilings.get(("connect", "scram"))
    return [
        "Why the targets are missed on this machine:",
        "",
        f"- Without `-C`: PgBouncer adds {part(reuse, 'pgbouncer scram', 'pooler'):.0f} µs of "
        "CPU per transaction (most of it the kernel's work for the second loopback TCP hop) "
        f"while PostgreSQL's own cost does not drop ({part(reuse, 'direct scram', 'server'):.0f} "
        f"µs direct, {part(reuse, 'pgbouncer scram', 'server'):.0f} µs pooled): with pgbench, "
        "PgBouncer and PostgreSQL on the same 2 cores, the pooled path does more work per "
        "transaction than the direct one and no setting removes the hop. One process per vCPU "
        f"(the role's change) took it from {reuse['pgbouncer-before scram']['ratio_tps']:.2f}x "
        f"(one process) to {reuse['pgbouncer scram']['ratio_tps']:.2f}x of direct.",
        f"- With `-C` under SCRAM: pgbench itself spends "
        f"{part(connect, 'direct scram', 'client'):,.0f} µs of CPU per connection (libpq 15 with "
        "OpenSSL 3: TLS and the SCRAM key derivation of 4096 iterations), on the same 2 cores "
        "as the servers, which caps both paths near the same rate. Without the client's CPU "
        "(applications run on other machines) the pooled path costs "
        + (f"{scram['ratio_without_client']:.1f}x less per connection" if scram else "less")
        + ". The iterations stay at 4096 (RFC 7677's minimum) rather than weaken SCRAM.",
    ]


def render(section: dict, ctx: Context) -> str:
    role = section["role"]
    lines = [
        f"{section['pgbouncer_version']}, {section['cpus']} vCPUs shared by pgbench, PgBouncer and "
        f"PostgreSQL 15; pgbench -S, {section['clients']} clients, -j {section['threads']}, "
        f"{section['seconds']} s per run, {section['reps']} alternating repetitions. TLS on every "
        "TCP hop (client → PgBouncer `require`, PgBouncer → server `prefer`, direct `require`). "
        "`scram`: SCRAM-SHA-256 (4096 iterations) on every hop; `trust`: no password on either "
        "hop (PgBouncer's `auth_type = trust`), to show what SCRAM costs.",
        "",
        "| config | processes | default_pool_size (each) | reserve_pool_size (each) | pool_mode |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, s in role.items():
        lines.append(
            f"| {name} | {s['pgbouncer_processes']} | {s['pgbouncer_default_pool_size']} | "
            f"{s['pgbouncer_reserve_pool_size']} | {s['pgbouncer_pool_mode']} |"
        )
    lines += ["", f"![pgbench -S direct vs through PgBouncer]({_chart(section, ctx)})", ""]
    for mode, title in (("reuse", "without -C"), ("connect", "with -C (a new connection per tx)")):
        variants = section["modes"][mode]["variants"]
        lines += [
            f"### pgbench -S {title}",
            "",
            "| variant | tps min | tps median | tps max | x direct | client CPU s | "
            "CPU µs/tx: pgbench | PgBouncer | PostgreSQL | ceiling tps | machine CPU s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, v in variants.items():
            tps, per_tx = v["tps"], v["cpu_ms_per_tx"]
            lines.append(
                f"| {name} | {_fmt(tps['min'])} | {_fmt(tps['median'])} | {_fmt(tps['max'])} | "
                f"{v['ratio_tps']:.2f} | {v['cpu']['median']:.1f} | "
                f"{per_tx['client'] * 1000:,.0f} | {per_tx['pooler'] * 1000:,.0f} | "
                f"{per_tx['server'] * 1000:,.0f} | {_fmt(v['ceiling_tps'])} | "
                f"{v['machine_cpu']['median']:.1f} |"
            )
        lines.append("")
    lines += [
        "CPU µs/tx: CPU time per transaction of pgbench (with libpq: TLS and the SCRAM key "
        "derivation of every connection), of PgBouncer's processes and of PostgreSQL (postmaster, "
        "backends, ended ones included), medians. Ceiling: the tps those costs allow on "
        f"{section['cpus']} cores with nothing else running (derived, not measured): the "
        "machine is shared, so the CPU costs are steadier than tps.",
        "",
    ]
    lines += ["### Targets", "", "| target | measured | limit | |", "| --- | ---: | ---: | --- |"]
    for t in section["targets"]:
        lines.append(
            f"| {t['target']} | {t['measured']:.2f}x | {t['limit']:.1f}x | "
            f"{'met' if t['met'] else 'MISSED'} |"
        )
    lines += [
        "",
        "The same ratios derived from CPU per transaction (what each part costs, whatever share "
        "of the shared machine a run got): through PgBouncer / direct, all parts counted, and "
        "without pgbench's own CPU (as if the clients ran on other machines, as applications do):",
        "",
        "| pgbench | auth | ceiling direct tps | ceiling PgBouncer tps | ratio | "
        "ratio without the client's CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in section.get("ceilings", []):
        lines.append(
            f"| {'-S -C' if c['mode'] == 'connect' else '-S'} | {c['auth']} | "
            f"{_fmt(c['direct'])} | {_fmt(c['pgbouncer'])} | {c['ratio']:.2f}x | "
            f"{c['ratio_without_client']:.2f}x |"
        )
    if any(not t["met"] for t in section["targets"]):
        lines += ["", *_why_missed(section)]
    lines += ["", "Commands (PGPASSWORD set; ports are the run's):", "", "```"]
    lines += [f"{name}: {cmd}" for name, cmd in section["commands"].items()]
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # a standalone run: python benchmarks/suite_pgbouncer.py [--quick]
    import tempfile

    quick = "--quick" in sys.argv
    work = Path(tempfile.mkdtemp(prefix="dbtier-bench-pgb-", dir="/tmp"))
    work.chmod(0o755)
    chown_to_server_user(work)
    out = Path(os.environ.get("BENCH_OUT", work / "report"))
    ctx = Context(
        quick=quick, work=work, assets=out / "assets", reps=int(os.environ.get("BENCH_REPS", "3"))
    )
    try:
        result = run(ctx)
        (out).mkdir(parents=True, exist_ok=True)
        (out / "pgbouncer.json").write_text(json.dumps(result, indent=1))
        (out / "BENCHMARKS.md").write_text(f"## {TITLE}\n\n" + render(result, ctx))
        print(out / "BENCHMARKS.md")
    finally:
        shutil.rmtree(work, ignore_errors=True)
