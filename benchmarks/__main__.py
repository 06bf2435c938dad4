"""`make bench` / `make bench-quick`: every suite side by side, one results file, one report.

    python -m benchmarks                      # the whole thing (3 repetitions, scale 2.5)
    python -m benchmarks --quick --out DIR    # smoke test: tiny scale, 1 repetition
    python -m benchmarks --only backup --scale 0.3 --out /tmp/b
    python -m benchmarks --render-only bench/results/2026-11-30-host.json

Without --out the results go to bench/results/<YYYY-MM-DD>-<host>.json, the report to
docs/BENCHMARKS.md and its charts to docs/bench/. --quick never writes into the repository: it
uses --out, else a new temporary directory.

Suites run in a fixed order (SUITES); a suite whose module is absent from this checkout is
skipped with a progress line; a suite that fails stops the run with a one-line error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from benchmarks.common import ROOT, Context, progress

SUITES = ("queries", "backup", "wal", "pgbouncer")
QUICK_SCALE = 0.01
FULL_SCALE = 2.5  # ≈ 2.5 GB, the size issue 12 asks for
FULL_REPS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny scale, 1 repetition (smoke)")
    parser.add_argument("--only", help="comma-separated suites: " + ",".join(SUITES))
    parser.add_argument("--reps", type=int, help="repetitions per variant (default 3; quick 1)")
    parser.add_argument("--scale", type=float, help="sample data scale, 1 ≈ 1 GB (default 2.5)")
    parser.add_argument("--out", type=Path, help="directory for results, report and charts")
    parser.add_argument(
        "--render-only", type=Path, metavar="RESULTS.json", help="re-render, measure nothing"
    )
    parser.add_argument(
        "--update",
        type=Path,
        metavar="RESULTS.json",
        help="measure the --only suites again (same scale and repetitions) and replace their "
        "sections in this results file, then re-render; the report says which were re-measured",
    )
    args = parser.parse_args(argv)
    if args.update is not None:
        if not args.only or args.quick:
            parser.error("--update needs --only SUITE[,SUITE] and no --quick")
        if not args.update.is_file():
            parser.error(f"--update: no results file {args.update}")
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(SUITES))
        if unknown:
            parser.error(f"unknown suite {', '.join(unknown)} (known: {', '.join(SUITES)})")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.scale is not None and args.scale <= 0:
        parser.error("--scale must be > 0")
    return args


def load_suite(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"benchmarks.suite_{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.suite_{name}":
            return None
        raise


def host() -> str:
    return socket.gethostname().split(".")[0] or "host"


def paths(args: argparse.Namespace, today: str) -> tuple[Path, Path, Path]:
    """(results JSON, report markdown, assets directory)."""
    out = args.out
    if out is None and args.quick:
        out = Path(tempfile.mkdtemp(prefix="dbtier-bench-quick-"))
    if out is None:
        results = ROOT / "bench" / "results" / f"{today}-{host()}.json"
        return results, ROOT / "docs" / "BENCHMARKS.md", ROOT / "docs" / "bench"
    out = out.resolve()
    return out / f"{today}-{host()}.json", out / "BENCHMARKS.md", out / "bench"


# --- the machine and the versions -------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _output(*cmd: str) -> str | None:
    """First line of a command's output, or None when it is not installed."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0].strip() if proc.returncode == 0 and text else None


def machine() -> dict:
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    return {
        "host": host(),
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "debian": _read("/etc/debian_version").strip() or None,
    }


def versions() -> dict:
    from dbtier.pgcluster import pg_bindir

    def pg(program: str) -> str | None:
        try:
            return _output(str(pg_bindir(15, program) / program), "--version")
        except Exception:  # not installed: the report says None
            return None

    commit = _output("git", "-C", str(ROOT), "rev-parse", "HEAD")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "postgresql": pg("postgres"),
        "pg_dump": pg("pg_dump"),
        "pgbackrest": _output("pgbackrest", "version"),
        "pgbouncer": _output("pgbouncer", "--version"),
        "zstd": (_output("zstd", "--version") or "").strip("* ") or None,
        "python": sys.version.split()[0],
        "dbtier_commit": commit,
        "dbtier_dirty": bool(dirty),
    }


# --- the report -----------------------------------------------------------------------------


def collect_targets(node: object, suite: str) -> list[dict]:
    """Every target() anywhere in a section, in order."""
    found: list[dict] = []
    if isinstance(node, dict):
        if {"target", "measured", "limit", "met"} <= node.keys():
            return [{"suite": suite, **node}]
        for value in node.values():
            found += collect_targets(value, suite)
    elif isinstance(node, list):
        for value in node:
            found += collect_targets(value, suite)
    return found


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _made_by(options: dict) -> str:
    command = options.get("command", "python -m benchmarks")
    named = {
        "python -m benchmarks": "make bench",
        "python -m benchmarks --quick": "make bench-quick",
    }
    return f"`{named.get(command, command)}`"


def render_report(results: dict, report: Path, assets: Path) -> None:
    assets.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        quick=results["options"]["quick"],
        work=assets,
        assets=assets,
        reps=results["options"]["reps"],
        scale=results["options"]["scale"],
    )
    m, v = results["machine"], results["versions"]
    commit = (v.get("dbtier_commit") or "?")[:12] + (" (dirty)" if v.get("dbtier_dirty") else "")
    lines = [
        "# Benchmarks",
        "",
        f"<!-- generated by make bench on {results['started'][:10]}; do not edit: "
        "edit benchmarks/ and rerun -->",
        "",
        f"Generated by {_made_by(results['options'])} on "
        f"{results['started'][:16].replace('T', ' ')} UTC "
        f"(finished {results['finished'][11:16]}); **do not edit**: this file is rewritten by "
        "every run from the results file "
        f"`{results.get('results_file', '?')}`.",
        "",
    ]
    opts = results["options"]
    command = opts.get("command", "python -m benchmarks")
    if opts["quick"]:
        lines += [
            f"> **Quick run** (`{command}`): tiny data, one repetition. A smoke test of the "
            "machinery; its figures mean nothing.",
            "",
        ]
    elif opts["scale"] != FULL_SCALE or opts["reps"] < FULL_REPS or opts.get("only"):
        lines += [
            f"> **Not the full benchmark**: `{command}` (scale {opts['scale']:g}, "
            f"{opts['reps']} repetitions{', only ' + opts['only'] if opts.get('only') else ''}"
            f"); `make bench` runs every suite at scale {FULL_SCALE:g} with {FULL_REPS} "
            "repetitions.",
            "",
        ]
    for u in results.get("updates", []):
        lines += [
            f"> **Re-measured** on {u['started'][:16].replace('T', ' ')} UTC with dbtier "
            f"{(u['versions'].get('dbtier_commit') or '?')[:12]} (`{u['command']}`): "
            f"{', '.join(u['suites'])}. The other sections are from the run above.",
            "",
        ]
    lines += [
        "## The machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| kernel / Debian | {m['kernel']} / {m['debian']} |",
        f"| PostgreSQL | {v.get('postgresql')} |",
        f"| pg_dump | {v.get('pg_dump')} |",
        f"| pgBackRest | {v.get('pgbackrest')} |",
        f"| PgBouncer | {v.get('pgbouncer')} |",
        f"| zstd | {v.get('zstd')} |",
        f"| Python | {v.get('python')} |",
        f"| dbtier | {commit} |",
        "",
        "A shared 2-core machine is noisy: every comparison alternates its variants (round "
        "robin, order rotated each repetition) in one run on the same data and shows min, median "
        "and max. Client CPU (user + sys of the commands and their children) varies far less "
        "than wall time; machine CPU counts every process, the server's included.",
        "",
        "## How to reproduce",
        "",
        f"`make bench` runs everything: {FULL_REPS} repetitions, scale {FULL_SCALE:g} (1 ≈ 1 GB); "
        "it writes bench/results/<date>-<host>.json, this file and docs/bench/*.png. "
        "`make bench-quick` is the smoke test at a tiny scale into a temporary directory "
        "(part of `make test`). Both run the harness, which also measures one suite or "
        "renders this file again from a results file:",
        "",
        # tests/test_docs_commands.py: the tests that run these commands (docs/ markers).
        "<!-- not run: covered by tests/test_bench_quick.py::test_results_file_has_every_suite_of_"
        "the_tree and tests/test_bench_quick.py::test_an_unknown_suite_is_a_one_line_usage_error "
        "and tests/test_bench_quick.py::test_the_committed_report_is_the_rendering_of_its_results"
        "_file -->",
        "```sh",
        "python -m benchmarks --quick --out /tmp/bench-quick                       # bench-quick",
        "python -m benchmarks --only backup --scale 0.3 --reps 3 --out /tmp/bench  # one suite",
        "python -m benchmarks --render-only bench/results/<date>-<host>.json       # re-render",
        "```",
        "",
        f"Options of this run: `{json.dumps(results['options'])}`.",
        "",
    ]
    targets = [t for name, sec in results["suites"].items() for t in collect_targets(sec, name)]
    lines += ["## Targets", ""]
    if targets:
        lines += ["| suite | target | measured | limit | |", "| --- | --- | --- | --- | --- |"]
        for t in targets:
            verdict = "met" if t["met"] else "**MISSED**"
            name = t["target"].replace("|", "\\|")
            lines.append(
                f"| {t['suite']} | {name} | {_num(t['measured'])} | {_num(t['limit'])} "
                f"| {verdict} |"
            )
        missed = sum(not t["met"] for t in targets)
        lines += ["", f"{len(targets) - missed} of {len(targets)} targets met."]
    else:
        lines.append("No targets were measured in this run.")
    lines.append("")
    for name in SUITES:
        if name in results.get("skipped", []):
            lines += [f"## {name}", "", f"Not run: no benchmarks/suite_{name}.py here.", ""]
        if name not in results["suites"]:
            continue
        module = load_suite(name)
        section = results["suites"][name]
        if module is None:
            lines += [f"## {name}", "", "(no renderer in this checkout)", ""]
            continue
        lines += [f"## {module.TITLE}", "", module.render(section, ctx).rstrip(), ""]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))


# --- main -----------------------------------------------------------------------------------


def render_only(args: argparse.Namespace) -> None:
    results = json.loads(args.render_only.read_text())
    if args.out is not None:
        out = args.out.resolve()
        report, assets = out / "BENCHMARKS.md", out / "bench"
    else:
        report, assets = ROOT / "docs" / "BENCHMARKS.md", ROOT / "docs" / "bench"
    render_report(results, report, assets)
    progress(f"rendered {report} from {args.render_only}")


def _scratch() -> Path:
    from dbtier.pgcluster import chown_to_server_user

    work = Path(tempfile.mkdtemp(prefix="dbtier-bench-", dir=os.environ.get("BENCH_DIR")))
    work.chmod(0o755)
    chown_to_server_user(work)
    return work


def keep_partial(results: dict, results_path: Path, suite: str, message: str) -> None:
    """What was measured before a suite failed, beside where the results would have gone (a
    20-minute run that fails at the end still leaves its figures)."""
    partial = results_path.with_suffix(".failed.json")
    results["failed"] = {"suite": suite, "error": message}
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(results, indent=1, default=str) + "\n")
    progress(f"suite {suite} failed; what was measured before is in {partial}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        render_only(args)
        return 0
    started = dt.datetime.now(dt.UTC)
    results_path, report, assets = paths(args, started.strftime("%Y-%m-%d"))
    reps = args.reps or (1 if args.quick else FULL_REPS)
    scale = args.scale or (QUICK_SCALE if args.quick else FULL_SCALE)
    if args.update is not None:  # same data and repetitions as the run it updates
        previous = json.loads(args.update.read_text())["options"]
        reps, scale = args.reps or previous["reps"], args.scale or previous["scale"]
        if (reps, scale) != (previous["reps"], previous["scale"]):
            sys.exit(
                f"bench: --update of a run at scale {previous['scale']:g} with "
                f"{previous['reps']} repetitions: drop --scale/--reps"
            )
        results_path = args.update.resolve()
    wanted = args.only.split(",") if args.only else list(SUITES)
    options = {
        "quick": args.quick,
        "reps": reps,
        "scale": scale,
        "only": args.only,
        "command": shlex.join(
            ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
        ),
    }
    progress(f"results: {results_path}; report: {report}; options: {json.dumps(options)}")
    results: dict = {
        "started": started.isoformat(timespec="seconds"),
        "options": options,
        "machine": machine(),
        "versions": versions(),
        "suites": {},
        "skipped": [],
    }
    work = _scratch()
    assets.mkdir(parents=True, exist_ok=True)
    # Deployed dbtier is a pip-installed wheel, byte-compiled at install; this checkout, run as
    # postgres by archive_command (who cannot write __pycache__ here), would compile every
    # module on every WAL segment. Compile once, as the install does (git-ignored output).
    subprocess.run(
        ["/usr/bin/python3", "-m", "compileall", "-q", str(ROOT / "src" / "dbtier")],
        check=True,
        capture_output=True,
    )
    ctx = Context(quick=args.quick, work=work, assets=assets, reps=reps, scale=scale)
    try:
        for name in (n for n in SUITES if n in wanted):
            module = load_suite(name)
            if module is None:
                progress(f"suite {name}: skipped (no benchmarks/suite_{name}.py in this checkout)")
                results["skipped"].append(name)
                continue
            progress(f"suite {name}: {module.TITLE}")
            try:
                results["suites"][module.NAME] = module.run(ctx)
            except (SystemExit, KeyboardInterrupt, Exception) as exc:
                if isinstance(exc, SystemExit) and isinstance(exc.code, str):
                    message = exc.code.removeprefix("bench: ")  # run_command's, saying what
                elif isinstance(exc, SystemExit | KeyboardInterrupt):
                    raise
                else:  # one line, not a traceback
                    detail = str(exc).strip().splitlines()
                    message = f"{type(exc).__name__}: {detail[-1] if detail else ''}"
                keep_partial(results, results_path, name, message)
                sys.exit(f"bench: suite {name} failed: {message}")
            progress(f"suite {name}: done")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if args.update is not None:
        updated = json.loads(results_path.read_text())
        updated["suites"].update(results["suites"])
        updated.setdefault("updates", []).append(
            {
                "suites": sorted(results["suites"]),
                "started": results["started"],
                "finished": results["finished"],
                "command": options["command"],
                "versions": results["versions"],
            }
        )
        results = updated
    with contextlib.suppress(ValueError):
        results["results_file"] = str(results_path.relative_to(ROOT))
    results.setdefault("results_file", str(results_path))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render_report(results, report, assets)
    progress(f"wrote {results_path} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
