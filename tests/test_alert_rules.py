"""roles/monitoring's alert rules as the role deploys them (rendered by ansible-playbook with the
role's defaults, and once as on RDS), checked and unit-tested by the real promtool
(tests/prometheus/*.test.yml), plus what promtool cannot see: every alert of the contract has a
rule, a severity, a summary and a runbook section, and is tested both firing and quiet."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.ansible  # renders the template with ansible-playbook

ROLE = ROOT / "ansible/roles/monitoring"
TESTS = ROOT / "tests/prometheus"
RUNBOOK = ROOT / "docs/RUNBOOK.md"
ALERTS = {
    "SlowQuery",
    "BackupStale",
    "BaseBackupStale",
    "WALArchiveFailing",
    "ArchiveJobFailed",
    "PgBouncerConnectionsHigh",
    "PgBouncerClientsWaiting",
    "DiskSpaceLow",
    "ReplicationLag",
    "PostgresDown",
    "PgBouncerDown",
    "DbtierJobFailed",
    "SlowQueryCollectionStale",
    "ExporterDown",
}
# variant -> (rules file name the test file loads, its test file, extra vars)
VARIANTS = {
    "self-managed": ("dbtier-alerts.rules.yml", "dbtier-alerts.test.yml", {}),
    "rds": (
        "dbtier-alerts-rds.rules.yml",
        "dbtier-alerts-rds.test.yml",
        {"dbtier_self_managed": False},
    ),
}
PROMTOOL = shutil.which("promtool")


def render(dest: Path, extra: dict | None = None) -> subprocess.CompletedProcess[str]:
    """tests/support/render_alert_rules.yml: the role's defaults, then its template, into dest."""
    variables = {
        "rules_dest": str(dest),
        "ansible_python_interpreter": sys.executable,
        **(extra or {}),
    }
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            str(ROOT / "tests/support/render_alert_rules.yml"),
            "-e",
            json.dumps(variables),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        },
        cwd=ROOT,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Each variant's rules file next to a copy of its promtool test file."""
    directory = tmp_path_factory.mktemp("alert-rules")
    paths = {}
    for variant, (rules, tests, extra) in VARIANTS.items():
        proc = render(directory / rules, extra)
        assert proc.returncode == 0, f"render {variant}:\n{proc.stdout[-4000:]}{proc.stderr}"
        shutil.copy(TESTS / tests, directory / tests)
        paths[variant] = directory / rules
    yield paths


def rules_of(path: Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults/main/alerts.yml").read_text())


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool missing: run `make system-deps` (Debian package prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_promtool_checks_the_rules(rendered: dict[str, Path], variant: str) -> None:
    path = rendered[variant]
    proc = promtool("check", "rules", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_promtool_unit_tests_pass(rendered: dict[str, Path], variant: str) -> None:
    path = rendered[variant]
    proc = promtool("test", "rules", VARIANTS[variant][1], cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr


def test_the_unit_tests_fail_when_a_threshold_moves(rendered: dict[str, Path], tmp_path) -> None:
    """The boundary cases are tight: a SlowQuery limit of 0.3 s instead of 0.2 s fails them."""
    rules = (rendered["self-managed"]).read_text()
    assert "dbtier_slow_query_p95_seconds > 0.2\n" in rules
    (tmp_path / "dbtier-alerts.rules.yml").write_text(
        rules.replace(
            "dbtier_slow_query_p95_seconds > 0.2\n", "dbtier_slow_query_p95_seconds > 0.3\n"
        )
    )
    shutil.copy(TESTS / "dbtier-alerts.test.yml", tmp_path)
    proc = promtool("test", "rules", "dbtier-alerts.test.yml", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "alertname: SlowQuery" in output, output


def test_every_alert_has_a_rule_and_base_backups_only_when_self_managed(
    rendered: dict[str, Path],
) -> None:
    assert {r["alert"] for r in rules_of(rendered["self-managed"])} == ALERTS
    assert {r["alert"] for r in rules_of(rendered["rds"])} == ALERTS - {"BaseBackupStale"}


def test_every_rule_has_severity_summary_description_and_a_runbook_section(
    rendered: dict[str, Path],
) -> None:
    sections = set(re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), flags=re.M))
    base = alert_defaults()["monitoring_runbook_base_url"]
    for rule in rules_of(rendered["self-managed"]):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}", name
        assert name in sections, f"docs/RUNBOOK.md has no '## {name}' section"


def test_for_durations_are_the_defaults_one_per_alert(rendered: dict[str, Path]) -> None:
    durations = alert_defaults()["monitoring_alert_for"]
    assert set(durations) == ALERTS
    for rule in rules_of(rendered["self-managed"]):
        assert rule["for"] == durations[rule["alert"]], rule["alert"]


def test_a_missing_for_entry_fails_the_render_naming_it(tmp_path) -> None:
    proc = render(tmp_path / "rules.yml", {"monitoring_alert_for": {"SlowQuery": "1m"}})
    assert proc.returncode != 0
    assert "monitoring_alert_for has no entry for BackupStale" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS.glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert ALERTS - firing == set(), "alerts no test sees firing"
    assert ALERTS - quiet == set(), "alerts no test sees quiet"
    assert (firing | quiet) - ALERTS == set(), "tests of alerts that do not exist"


def test_the_argument_specs_document_every_alert_variable() -> None:
    options = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]
    defaults = alert_defaults()
    spec = {name: options["main"]["options"][name] for name in defaults}  # KeyError: undocumented
    for name, option in spec.items():
        assert option["description"], name
        if "default" in option:
            assert option["default"] == defaults[name], name


def test_the_runbook_table_gives_each_alert_its_rules_severity(rendered: dict[str, Path]) -> None:
    table = dict(re.findall(r"^\| (\w+) \| (critical|warning) \|", RUNBOOK.read_text(), flags=re.M))
    severities = {r["alert"]: r["labels"]["severity"] for r in rules_of(rendered["self-managed"])}
    assert table == severities
