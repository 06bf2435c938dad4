"""fmt, validate and `terraform test` (mock providers) for every module and environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import (
    BOOTSTRAP,
    MOTO_OVERRIDES,
    ROOT,
    TF_SRC,
    Terraform,
    environment_dirs,
    example_dirs,
    module_dirs,
    needs_provider_aliases,
)

pytestmark = pytest.mark.terraform


def rel(p: Path) -> str:
    return str(p.relative_to(TF_SRC))


VALIDATE_DIRS = [
    *(m for m in module_dirs() if not needs_provider_aliases(m)),
    *example_dirs(),
    *environment_dirs(),
]


def test_fmt(terraform: Terraform) -> None:
    for tree in (TF_SRC, MOTO_OVERRIDES):
        proc = terraform.run(ROOT, "fmt", "-check", "-recursive", "-diff", str(tree), check=False)
        assert proc.returncode == 0, f"terraform fmt would change files:\n{proc.stdout}"


def test_every_module_is_validated() -> None:
    """A module with provider aliases is validated through its examples: it must have one."""
    for module in module_dirs():
        if needs_provider_aliases(module):
            assert list(module.glob("examples/*/main.tf")), f"{rel(module)} needs an example"
        for required in ("variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (module / required).is_file(), f"{rel(module)}/{required} missing"
        assert list((module / "tests").glob("*.tftest.hcl")), f"{rel(module)} has no tftest"


@pytest.mark.parametrize("src", VALIDATE_DIRS, ids=rel)
def test_validate(terraform: Terraform, tf_copy: Path, src: Path) -> None:
    workdir = tf_copy / rel(src)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "validate", "-json", check=False)
    result = json.loads(proc.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)


@pytest.mark.parametrize("src", module_dirs(), ids=rel)
def test_terraform_test(terraform: Terraform, tf_copy: Path, src: Path) -> None:
    """The module's *.tftest.hcl: validations reject bad input; the plan has what matters."""
    workdir = tf_copy / rel(src)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "test", timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    assert " 0 failed" in proc.stdout or "Success!" in proc.stdout, proc.stdout[-4000:]


def test_no_environment_points_at_a_local_api() -> None:
    """Endpoints, fake credentials and skip flags live only in the moto override files."""
    for tf in TF_SRC.rglob("*.tf"):
        if ".terraform" in tf.parts:
            continue
        text = tf.read_text()
        assert not tf.name.endswith("_override.tf"), f"override file in the real tree: {tf}"
        for needle in ("127.0.0.1", "localhost", "endpoints", "skip_credentials_validation"):
            assert needle not in text, f"{tf.relative_to(ROOT)} mentions {needle}"


def test_checkov() -> None:
    """checkov (its own venv under .run/, offline) finds no failed check in terraform/."""
    proc = subprocess.run(
        [
            "bash",
            str(BOOTSTRAP),
            "checkov",
            "--directory",
            str(TF_SRC),
            "--framework",
            "terraform",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode == 4:
        pytest.skip(f"checkov could not be installed: {proc.stderr.strip()}")
    assert proc.stdout.strip(), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert passed > 50, f"checkov passed only {passed} checks: did it scan terraform/?"
