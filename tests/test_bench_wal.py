"""benchmarks/suite_wal.py at --quick: it runs against a real cluster, dbtier and pgBackRest,
its section has the expected shape, and it renders with its PNG (a smoke test, not a speed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import common, suite_wal

from .conftest import BenchQuick

pytestmark = pytest.mark.skipif(
    shutil.which("pgbackrest") is None, reason="pgBackRest (Debian package) is not installed"
)


def test_wal_suite_quick_runs_and_renders(bench_quick: BenchQuick, tmp_path: Path) -> None:
    ctx = common.Context(quick=True, work=tmp_path, assets=tmp_path / "assets")
    section = bench_quick.section(suite_wal.NAME)
    section = json.loads(json.dumps(section))  # JSON-able, as the results file needs

    assert suite_wal.NAME == "wal"
    assert set(section["load"]["variants"]) == set(suite_wal.VARIANTS)
    assert set(section["ceiling"]["variants"]) == set(suite_wal.VARIANTS)
    for name in suite_wal.VARIANTS:
        (load,) = section["load"]["variants"][name]["runs"]
        extra = load["extra"]
        assert extra["failures"] == 0, name
        assert extra["wal_bytes"] > 0 and extra["produced_mb_s"] > 0, name
        assert extra["archived_segments"] >= 1, name
        assert extra["drained"] and extra["drain_s"] is not None, name
        assert isinstance(extra["lag_growth_per_min"], float), name
        assert extra["series"] and {"t", "lag_segments", "lag_s"} <= set(extra["series"][0])
        assert load["cpu"] >= 0, name  # a second or two of load: maybe under one clock tick
        (drain,) = section["ceiling"]["variants"][name]["runs"]
        assert drain["extra"]["drained"] and drain["extra"]["failures"] == 0, name
        assert drain["extra"]["segments"] >= 3 and drain["extra"]["mb_s"] > 0, name
        assert drain["cpu"] > 0, name
        assert 0 < drain["extra"]["stored_kb_per_segment"] < 16 * 1024, name  # compressed
    profile = section["profile"]
    assert profile["dbtier_push_s"]["median"] > profile["python_start_s"]["median"] > 0
    assert profile["python_needed_imports_s"]["median"] > 0
    assert profile["imports"]["total_s"] > 0 and profile["imports"]["top"]
    assert len(section["targets"]) == 2  # drains within archive_timeout; the lag stays bounded
    for target in section["targets"]:
        assert set(target) == {"target", "measured", "limit", "met"}

    markdown = suite_wal.render(section, ctx)
    assert f"## {suite_wal.TITLE}" not in markdown  # the harness writes the heading, once
    assert "assets/wal.png" in markdown
    for name in suite_wal.VARIANTS:
        assert f"| {name} |" in markdown
    assert "repo1-cipher-pass=<random>" in markdown
    png = ctx.assets / "wal.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
