"""docs/CONFIGURATION.md states for each setting its default and the file that holds it: every
table row is checked against that file (role defaults YAML, Terraform variables and tfvars, the
archive policies' seed migration), so the page cannot drift from the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CONFIGURATION.md"
ENVIRONMENTS = ("staging", "production")
MISSING = object()


def tables() -> list[dict[str, str]]:
    """Every row of every table whose first column is `variable`, as {header: cell}."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in DOC.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("- "):
            rows.append(dict(zip(header, cells, strict=True)))
    return [r for r in rows if "variable" in r]


def code(cell: str) -> str | None:
    """The cell's value when it is one code span, else None."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    return match.group(1) if match else None


def yaml_default(path: Path, name: str) -> Any:
    value: Any = yaml.safe_load(path.read_text())
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def hcl_value(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    return yaml.safe_load(text)  # numbers, "strings", [lists]


def tf_default(path: Path, name: str) -> Any:
    """The default of variable `name` (None for null), MISSING when it has none."""
    block = re.search(rf'^variable "{name}" \{{\n(.*?)^\}}', path.read_text(), re.M | re.S)
    assert block, f"{path.relative_to(ROOT)} declares no variable {name}"
    default = re.search(r"^  default\s*=\s*(.+)$", block.group(1), re.M)
    return hcl_value(default.group(1)) if default else MISSING


def tfvars(env: str) -> dict[str, Any]:
    text = (ROOT / "terraform" / "environments" / env / "terraform.tfvars").read_text()
    return {m[0]: hcl_value(m[1]) for m in re.findall(r"^(\w+)\s*=\s*(.+)$", text, re.M)}


def seeded_policy(path: Path, name: str) -> Any:
    """archive_policies.<table>.<column> from the migration's INSERT INTO archive_policies."""
    _, table, column = name.split(".")
    insert = re.search(
        r"INSERT INTO public\.archive_policies\s*\((.*?)\)\s*VALUES(.*?);", path.read_text(), re.S
    )
    assert insert, f"{path.relative_to(ROOT)} seeds no archive_policies"
    columns = [c.strip() for c in insert.group(1).split(",")]
    values = re.sub(r"\b(true|false)\b", lambda m: m.group(1).title(), insert.group(2))
    for row in ast.literal_eval(f"[{values}]"):
        if row[0] == table:
            return row[columns.index(column)] if column in columns else MISSING
    return MISSING


def actual_default(path: Path, name: str) -> Any:
    if path.suffix in (".yml", ".yaml"):
        return yaml_default(path, name)
    if path.suffix == ".tf":
        return tf_default(path, name)
    if path.suffix == ".sql":
        return seeded_policy(path, name)
    raise AssertionError(f"CONFIGURATION.md: no reader for {path.name}")


ROWS = tables()


def test_the_document_has_its_tables() -> None:
    names = {code(r["variable"]) for r in ROWS}
    assert len(ROWS) > 60
    assert {"pgbouncer_default_pool_size", "dbtier_retention_days", "db_instance_class",
            "monitoring_alert_disk_free_ratio"} <= names  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r["variable"].strip("`") for r in ROWS])
def test_each_variable_has_the_stated_default_where_stated(row: dict[str, str]) -> None:
    name, where = code(row["variable"]), code(row["lives in"])
    assert name and where, f"{row}: name and file must be code spans"
    path = ROOT / where
    assert path.is_file(), f"{name}: {where} does not exist"
    actual = actual_default(path, name)
    stated = row["default"]
    if stated.startswith("computed:"):
        assert isinstance(actual, str) and "{{" in actual, (
            f"{name} in {where} is {actual!r}, not computed as the document says"
        )
    elif stated == "none (required)":
        assert actual is MISSING, f"{name} in {where} has a default, {actual!r}"
    else:
        assert actual is not MISSING, f"{name} is not in {where}"
        expected = hcl_value(code(stated)) if path.suffix == ".tf" else yaml.safe_load(code(stated))
        assert actual == expected, f"{name} in {where} is {actual!r}, the document says {stated}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_terraform_values_per_environment(env: str) -> None:
    values = tfvars(env)
    checked = 0
    for row in ROWS:
        if env not in row:
            continue
        name, cell = code(row["variable"]), row[env]
        if cell == "—":
            assert name not in values, (
                f"{name} is set in {env}'s terraform.tfvars: {values[name]!r}"
            )
        else:
            assert values.get(name, MISSING) == hcl_value(code(cell)), (
                f"{env}'s terraform.tfvars has {name} = {values.get(name, 'nothing')!r}, "
                f"the document says {cell}"
            )
        checked += 1
    assert checked > 10


def test_the_readers_find_what_they_should(tmp_path: Path) -> None:
    tf = tmp_path / "variables.tf"
    tf.write_text(
        'variable "a" {\n  type = number\n  default     = 30\n  validation {\n  }\n}\n\n'
        'variable "b" {\n  type = string\n}\n'
    )
    assert (tf_default(tf, "a"), tf_default(tf, "b")) == (30, MISSING)
    sql = ROOT / "files" / "sql" / "0004_archive_tables_v1_0_0.up.sql"
    assert seeded_policy(sql, "archive_policies.reports.s3_offload") is True
    assert seeded_policy(sql, "archive_policies.nope.batch_size") is MISSING
