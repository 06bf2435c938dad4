"""docs/ARCHITECTURE.md: its picture is generated from docs/architecture/tier.dot and up to date,
and its layout table matches the repository (every path exists, every role and Terraform module
has a row, every box is in the picture)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
DOT = ROOT / "docs" / "architecture" / "tier.dot"
SVG = ROOT / "docs" / "architecture" / "tier.svg"
STAMP = re.compile(r"<!-- source: docs/architecture/tier\.dot sha256: ([0-9a-f]{64}) ")
# Added by the other branches of issue 13: their rows are in the table before the files are in
# this branch. Empty this set once merged (then a missing path is an error like any other).
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot missing: make system-deps"
)


def layout_rows() -> list[tuple[str, str, str]]:
    """(path, what, boxes) of each row of the layout table."""
    text = DOC.read_text().split("## The repository layout mapped onto it", 1)[1]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


def dot_ids() -> set[str]:
    """Node ids and cluster names declared in tier.dot."""
    source = DOT.read_text()
    nodes = re.findall(r"^\s*(\w+)\s*\[", source, re.MULTILINE)
    clusters = re.findall(r"^\s*subgraph\s+(cluster_\w+)", source, re.MULTILINE)
    return (set(nodes) | set(clusters)) - {"graph", "node", "edge"}


@needs_dot
def test_the_dot_source_compiles(tmp_path: Path) -> None:
    out = tmp_path / "tier.svg"
    proc = subprocess.run(
        ["dot", "-Tsvg", str(DOT), "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    assert "<svg" in out.read_text()


def test_the_committed_svg_is_rendered_from_the_current_source() -> None:
    match = STAMP.search(SVG.read_text())
    assert match, f"{SVG.relative_to(ROOT)} has no source stamp: run make docs-architecture"
    assert match.group(1) == hashlib.sha256(DOT.read_bytes()).hexdigest(), (
        "docs/architecture/tier.svg is older than tier.dot: run make docs-architecture"
    )
    assert "<svg" in SVG.read_text() and "architecture/tier.svg" in DOC.read_text()


@needs_dot
def test_the_render_script_stamps_what_it_renders(tmp_path: Path) -> None:
    """scripts/render-architecture.sh on a copy of the repository layout it needs."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "docs" / "architecture").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "render-architecture.sh", tmp_path / "scripts")
    changed = DOT.read_text().replace('label="dbtier:', 'label="dbtier (changed):')
    (tmp_path / "docs" / "architecture" / "tier.dot").write_text(changed)
    subprocess.run(["bash", "scripts/render-architecture.sh"], cwd=tmp_path, check=True)
    svg = (tmp_path / "docs" / "architecture" / "tier.svg").read_text()
    assert STAMP.search(svg).group(1) == hashlib.sha256(changed.encode()).hexdigest()
    assert "dbtier (changed)" in svg and svg.startswith("<?xml")


def test_every_path_of_the_layout_table_exists() -> None:
    rows = layout_rows()
    assert len(rows) > 20, "the layout table was not found"
    for path, _, _ in rows:
        assert (ROOT / path).exists(), f"ARCHITECTURE.md names {path}, which does not exist"


def test_every_box_of_the_layout_table_is_in_the_picture() -> None:
    ids = dot_ids()
    for path, _, boxes in layout_rows():
        named = re.findall(r"`(\w+)`", boxes)
        assert named, f"{path}: no box"
        unknown = set(named) - ids
        assert not unknown, f"{path}: {sorted(unknown)} are not nodes of tier.dot"


@pytest.mark.parametrize("parent", ["ansible/roles", "terraform/modules"])
def test_every_role_and_module_has_a_row(parent: str) -> None:
    listed = {path.rstrip("/") for path, _, _ in layout_rows()}
    for child in sorted((ROOT / parent).iterdir()):
        if child.is_dir():
            assert f"{parent}/{child.name}" in listed, f"{parent}/{child.name}/ has no row"


def test_every_dbtier_module_is_in_a_group() -> None:
    grouped: list[str] = []
    for path, what, _ in layout_rows():
        if path == "src/dbtier/":
            grouped += re.findall(r"`(\w+\.py)`", what)
    assert len(grouped) == len(set(grouped)), "a module is in two groups"
    actual = {p.name for p in (ROOT / "src" / "dbtier").glob("*.py")}
    assert set(grouped) == actual, (
        f"not in a group: {sorted(actual - set(grouped))}; gone: {sorted(set(grouped) - actual)}"
    )
