"""`make bench-quick`: the whole benchmark at a tiny scale runs and its report renders.

A smoke test of the machinery (every suite in the tree, the results file, the report with each
section and its charts); it asserts nothing about speed.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BenchQuick

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def suites_in_tree() -> dict[str, str]:
    """NAME -> TITLE of every benchmarks/suite_<name>.py of the harness's list present here."""
    from benchmarks.__main__ import SUITES

    found = {}
    for name in SUITES:
        if (ROOT / "benchmarks" / f"suite_{name}.py").exists():
            module = importlib.import_module(f"benchmarks.suite_{name}")
            found[module.NAME] = module.TITLE
    return found


@pytest.fixture(scope="module")
def quick_run(bench_quick: BenchQuick) -> Path:
    assert "[bench " in bench_quick.stderr  # progress lines
    return bench_quick.out


def test_results_file_has_every_suite_of_the_tree(quick_run: Path) -> None:
    (results_file,) = quick_run.glob("*.json")
    results = json.loads(results_file.read_text())
    assert set(results["suites"]) == set(suites_in_tree())
    assert results["options"]["quick"] is True
    assert results["options"]["reps"] == 1
    assert results["machine"]["cores"] >= 1
    assert results["versions"]["postgresql"]
    assert results["versions"]["dbtier_commit"]
    assert results["started"] <= results["finished"]


def test_report_renders_every_section_with_valid_charts(quick_run: Path) -> None:
    report = (quick_run / "BENCHMARKS.md").read_text()
    assert "do not edit" in report
    assert "## The machine" in report
    assert "make bench-quick" in report
    assert "## Targets" in report
    for title in suites_in_tree().values():
        assert f"## {title}\n" in report
    charts = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    if "backup" in suites_in_tree():
        assert "bench/backup.png" in charts
    for chart in charts:
        assert (quick_run / chart).read_bytes()[:8] == PNG, chart


def test_render_only_rewrites_the_same_report(quick_run: Path, tmp_path: Path) -> None:
    (results_file,) = quick_run.glob("*.json")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render-only", str(results_file), "--out", tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "BENCHMARKS.md").read_text() == (quick_run / "BENCHMARKS.md").read_text()


def test_the_committed_report_is_the_rendering_of_its_results_file(tmp_path: Path) -> None:
    """docs/BENCHMARKS.md is generated: `--render-only` of the newest results file gives it back."""
    results_file = sorted((ROOT / "bench" / "results").glob("*.json"))[-1]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render-only", str(results_file), "--out", tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert rendered == (ROOT / "docs" / "BENCHMARKS.md").read_text(), (
        f"docs/BENCHMARKS.md is not the rendering of {results_file.name}: "
        f"python -m benchmarks --render-only bench/results/{results_file.name}"
    )


def test_an_unknown_suite_is_a_one_line_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown suite nope" in proc.stderr


def test_a_failing_suite_stops_the_run_with_one_line_and_keeps_what_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from benchmarks import __main__ as harness

    def fake(name: str, fails: bool) -> types.ModuleType:
        module = types.ModuleType(f"benchmarks.suite_{name}")
        module.NAME, module.TITLE = name, name

        def run(ctx: object) -> dict:
            if fails:
                raise RuntimeError("first line\nthe server went away")
            return {"measured": 1}

        module.run = run
        return module

    suites = {"queries": fake("queries", False), "backup": fake("backup", True)}
    monkeypatch.setattr(harness, "load_suite", lambda name: suites.get(name))
    with pytest.raises(SystemExit) as stopped:
        harness.main(["--out", str(tmp_path), "--reps", "1"])
    assert stopped.value.code == ("bench: suite backup failed: RuntimeError: the server went away")
    (partial,) = tmp_path.glob("*.failed.json")
    results = json.loads(partial.read_text())
    assert results["suites"] == {"queries": {"measured": 1}}
    assert results["failed"]["suite"] == "backup"
    assert results["skipped"] == []  # wal and pgbouncer come after the failure
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_update_replaces_only_the_remeasured_sections_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from benchmarks import __main__ as harness

    def fake(name: str, value: int) -> types.ModuleType:
        module = types.ModuleType(f"benchmarks.suite_{name}")
        module.NAME, module.TITLE = name, f"Suite {name}"
        module.run = lambda ctx: {"measured": value}
        module.render = lambda section, ctx: f"measured {section['measured']}"
        return module

    first = {"queries": fake("queries", 1), "backup": fake("backup", 1)}
    monkeypatch.setattr(harness, "load_suite", lambda name: first.get(name))
    harness.main(["--out", str(tmp_path), "--reps", "1", "--scale", "0.5"])
    (results_file,) = tmp_path.glob("*.json")

    # the same data and repetitions as the run it updates, or nothing is measured
    with pytest.raises(SystemExit) as refused:
        harness.main(["--only", "backup", "--update", str(results_file), "--scale", "2"])
    assert "drop --scale/--reps" in str(refused.value.code)

    again = {"queries": fake("queries", 2), "backup": fake("backup", 2)}
    monkeypatch.setattr(harness, "load_suite", lambda name: again.get(name))
    harness.main(["--only", "backup", "--update", str(results_file), "--out", str(tmp_path)])
    results = json.loads(results_file.read_text())
    assert results["suites"] == {"queries": {"measured": 1}, "backup": {"measured": 2}}
    assert results["options"]["scale"] == 0.5  # the original run's options stay
    (update,) = results["updates"]
    assert update["suites"] == ["backup"] and "--update" in update["command"]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**Re-measured**" in report and ": backup. The other sections" in report
    assert "measured 1" in report and "measured 2" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--update", "x.json"], "--update needs --only"),
        (["--only", "backup", "--update", "/nonexistent.json"], "no results file"),
    ],
)
def test_update_usage_errors(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
