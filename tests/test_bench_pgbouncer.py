"""benchmarks/suite_pgbouncer.py at --quick: PgBouncer as roles/pgbouncer renders it, against a
real PostgreSQL with TLS and SCRAM; its section has the expected shape and renders with its PNG
(a smoke test, not a speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, suite_pgbouncer

from .conftest import BenchQuick

pytestmark = [
    pytest.mark.ansible,  # renders the role's templates with ansible-playbook
    pytest.mark.skipif(
        not Path(suite_pgbouncer.PGBOUNCER).exists(), reason="pgbouncer is not installed"
    ),
]


def test_pgbouncer_suite_quick_runs_and_renders(bench_quick: BenchQuick, tmp_path: Path) -> None:
    ctx = common.Context(quick=True, work=tmp_path, assets=tmp_path / "assets")
    section = bench_quick.section(suite_pgbouncer.NAME)
    section = json.loads(json.dumps(section))  # JSON-able, as the results file needs

    assert suite_pgbouncer.NAME == "pgbouncer"
    assert section["reps"] == 1 and section["clients"] == 2 and section["seconds"] == 2
    # the role's configuration: the processes and pool shares it derives from this machine
    role = section["role"]
    assert set(role) == {
        f"{c}-{a}" for c in ("pgbouncer", "pgbouncer-before") for a in ("scram", "trust")
    }
    assert role["pgbouncer-before-scram"]["pgbouncer_processes"] == 1
    assert role["pgbouncer-before-scram"]["pgbouncer_default_pool_size"] == 25
    processes = role["pgbouncer-scram"]["pgbouncer_processes"]
    assert processes == min(max(__import__("os").cpu_count() or 1, 1), 8)
    assert role["pgbouncer-scram"]["pgbouncer_default_pool_size"] == -(-25 // processes)
    assert role["pgbouncer-scram"]["pgbouncer_client_tls_sslmode"] == "require"

    variants = {
        f"{w} {a}" for w in ("direct", "pgbouncer", "pgbouncer-before") for a in ("scram", "trust")
    }
    for mode in ("reuse", "connect"):
        section_mode = section["modes"][mode]
        assert set(section_mode["variants"]) == variants
        for name, v in section_mode["variants"].items():
            (run,) = v["runs"]
            assert run["extra"]["tps"] > 0 and run["extra"]["failed"] == 0, (mode, name)
            assert v["tps"]["min"] <= v["tps"]["median"] <= v["tps"]["max"]
            assert v["ratio_tps"] > 0
            if name.startswith("pgbouncer"):
                assert run["extra"]["pooler_cpu"] >= 0
    assert any("-C" in c for c in section["commands"].values())
    assert all("sslmode=require" in c for c in section["commands"].values())
    assert len(section["targets"]) == 4
    for target in section["targets"]:
        assert set(target) == {"target", "measured", "limit", "met"}

    markdown = suite_pgbouncer.render(section, ctx)
    png = ctx.assets / "pgbouncer.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({ctx.assets.name}/pgbouncer.png)" in markdown
    assert "### Targets" in markdown and "pgbench -n -S -C" in markdown
