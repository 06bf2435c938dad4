"""What every suite of `make bench` shares: the run context, side-by-side timing, statistics.

A suite is a module `benchmarks/suite_<name>.py` with

    NAME: str                                   # key in the results file, e.g. "queries"
    TITLE: str                                  # section heading in docs/BENCHMARKS.md
    def run(ctx: Context) -> dict               # measures; returns a JSON-able section
    def render(section: dict, ctx: Context) -> str   # markdown for that section; may write PNGs
                                                     # into ctx.assets and link them relatively

The harness (`python -m benchmarks`, benchmarks/__main__.py) runs the suites in a fixed order,
writes every section into one results JSON and renders docs/BENCHMARKS.md: every target() dict
found anywhere in a section also goes into the report's summary table of targets.

Rules (issue 12): same machine, same data, same run; variants alternate (round robin, the order
rotated each repetition), at least 3 repetitions outside --quick; report min/median/max of wall
time, of the client's CPU (user+sys of the commands and their children) and of the whole
machine's CPU (from /proc/stat, which also counts the server's processes), sizes, and ratios.
"""

from __future__ import annotations

import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_T0 = time.monotonic()


@dataclass
class Context:
    quick: bool  # tiny scale, 1 repetition: a smoke test, not a measurement
    work: Path  # scratch directory (mode 0755, owned by the server user), removed afterwards
    assets: Path  # PNG charts and EXPLAIN files referenced from the report
    reps: int = 3
    scale: float = 2.5  # `dbtier sample-data --scale` of the shared database (1 ≈ 1 GB)
    dbtier: str = str(Path(sys.executable).parent / "dbtier")  # the CLI, as the operator runs it
    # dbtier as the postgres OS user runs it (archive_command): Debian's Python, this checkout.
    server_dbtier: str = f"env PYTHONPATH={ROOT / 'src'} /usr/bin/python3 -m dbtier"
    shared: dict = field(default_factory=dict)  # what one suite hands the next (e.g. a cluster)


def progress(message: str) -> None:
    """One line per step on stderr, so a 20-minute run shows where it is."""
    elapsed = time.monotonic() - _T0
    print(
        f"[bench {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}",
        file=sys.stderr,
        flush=True,
    )


def _machine_busy() -> float:
    """CPU seconds spent by every process on the machine (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float] | None:
    """(own user+sys, waited-for children's user+sys) of a live process in seconds, from
    /proc/<pid>/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (int(rest[11]) + int(rest[12])) / tick, (int(rest[13]) + int(rest[14])) / tick


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # client CPU seconds: the command and its children (user + sys)
    machine_cpu: float  # CPU seconds of the whole machine during the run (server included)
    bytes: int | None = None  # size of what the run produced, when it produces something
    extra: dict = field(default_factory=dict)  # anything else worth keeping (tps, lag, ...)


class Stopwatch:
    """Measures a block: `with Stopwatch() as sw: ...; sw.sample`. Client CPU counts only
    children that were waited for inside the block (subprocess.run does)."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.monotonic()
        self._cpu = _children_cpu()
        self._machine = _machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample = Sample(
            wall=time.monotonic() - self._wall,
            cpu=_children_cpu() - self._cpu,
            machine_cpu=_machine_busy() - self._machine,
        )


def run_command(
    cmd: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output: Path | None = None,
) -> Sample:
    """Runs one command (a string goes through bash with pipefail) and measures it; a failure
    stops the benchmark with the command and its stderr. `output`: its size is the sample's bytes
    (a file, or a directory summed)."""
    shell = isinstance(cmd, str)
    argv = ["bash", "-o", "pipefail", "-c", cmd] if shell else list(cmd)
    with Stopwatch() as sw:
        proc = subprocess.run(
            argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        shown = cmd if shell else shlex.join(argv)
        sys.exit(f"bench: `{shown}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    sample = sw.sample
    if output is not None:
        sample.bytes = size_of(output)
    return sample


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def side_by_side(
    variants: Mapping[str, Callable[[], Sample]],
    reps: int,
    *,
    before_each: Callable[[str], None] | None = None,
    label: str = "",
) -> dict[str, list[Sample]]:
    """Runs every variant `reps` times, alternating: round robin, the order rotated by one each
    repetition so no variant always runs first (cold caches) or last. `before_each(name)` resets
    state between runs and is not timed."""
    names = list(variants)
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if before_each is not None:
                before_each(name)
            progress(f"{label}{name} (run {rep + 1}/{reps})")
            sample = variants[name]()
            samples[name].append(sample)
            progress(f"{label}{name}: {sample.wall:.2f} s wall, {sample.cpu:.2f} s CPU")
    return samples


def stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def summarize(samples: Sequence[Sample]) -> dict:
    """min/median/max of wall, client CPU and machine CPU, the size, and every run kept."""
    sizes = [s.bytes for s in samples if s.bytes is not None]
    return {
        "wall": stats([s.wall for s in samples]),
        "cpu": stats([s.cpu for s in samples]),
        "machine_cpu": stats([s.machine_cpu for s in samples]),
        "bytes": int(statistics.median(sizes)) if sizes else None,
        "runs": [asdict(s) for s in samples],
    }


def comparison(
    samples: Mapping[str, Sequence[Sample]],
    *,
    baseline: str,
    notes: Mapping[str, str] | None = None,
) -> dict:
    """A comparison section: each variant summarized, with the ratio of its median wall time
    (and size) to the baseline's. ratio > 1 means slower (larger) than the baseline."""
    base = summarize(samples[baseline])
    out: dict = {"baseline": baseline, "variants": {}}
    for name, runs in samples.items():
        summary = summarize(runs)
        summary["ratio_wall"] = summary["wall"]["median"] / base["wall"]["median"]
        summary["ratio_cpu"] = (
            summary["cpu"]["median"] / base["cpu"]["median"] if base["cpu"]["median"] else None
        )
        if summary["bytes"] and base["bytes"]:
            summary["ratio_bytes"] = summary["bytes"] / base["bytes"]
        if notes and name in notes:
            summary["note"] = notes[name]
        out["variants"][name] = summary
    return out


def target(
    description: str, measured: float, limit: float, *, lower_is_better: bool = True
) -> dict:
    """A target of the issue, judged on a measured figure; the report shows met / MISSED."""
    met = measured <= limit if lower_is_better else measured >= limit
    return {"target": description, "measured": measured, "limit": limit, "met": met}
