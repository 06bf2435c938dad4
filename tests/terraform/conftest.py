"""Terraform test helpers: the offline CLI config, a private copy of terraform/, a runner.

Every Terraform command runs in a copy of the tree under pytest's tmp dir, so `.terraform/`,
lock files and state never land in the shared working tree, and the moto-only override files
(tests/terraform/moto/) are only ever copied into that copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF_SRC = ROOT / "terraform"
BOOTSTRAP = ROOT / "scripts" / "terraform-env.sh"
MOTO_OVERRIDES = Path(__file__).resolve().parent / "moto"


def module_dirs() -> list[Path]:
    return sorted(p for p in (TF_SRC / "modules").iterdir() if (p / "versions.tf").is_file())


def environment_dirs() -> list[Path]:
    return sorted(p for p in (TF_SRC / "environments").iterdir() if (p / "main.tf").is_file())


def example_dirs() -> list[Path]:
    return sorted(p.parent for p in TF_SRC.glob("modules/*/examples/*/main.tf"))


def needs_provider_aliases(module: Path) -> bool:
    """Modules with configuration_aliases validate only through a caller (their examples)."""
    return "configuration_aliases" in (module / "versions.tf").read_text()


@dataclass
class Terraform:
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        cwd: Path,
        *args: str,
        timeout: float = 300,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **(extra_env or {}))
        started = time.monotonic()
        proc = subprocess.run(
            ["terraform", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings[f"{cwd.name}: terraform {args[0]}"] = time.monotonic() - started
        if check and proc.returncode != 0:
            pytest.fail(
                f"terraform {' '.join(args)} in {cwd} exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}",
                pytrace=False,
            )
        return proc

    def init(self, cwd: Path, *extra: str, timeout: float = 180) -> None:
        self.run(cwd, "init", "-input=false", *extra, timeout=timeout)


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    """Terraform with the project's CLI config (offline provider mirror), or a skip."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed (not on PATH)")
    mirror = subprocess.run(
        ["bash", str(BOOTSTRAP), "mirror"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not mirror:
        pytest.skip(
            "no Terraform provider mirror on this machine (no registry.terraform.io/ folder "
            "within 4 levels of /); the tests run offline only"
        )
    run_dir = tmp_path_factory.mktemp("tf-run")
    proc = subprocess.run(
        ["bash", str(BOOTSTRAP), "env"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, DBTIER_RUN_DIR=str(run_dir)),
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/terraform-env.sh failed: {proc.stderr.strip()}", pytrace=False)
    env = dict(os.environ)
    # Never the machine's TF_CLI_CONFIG_FILE (may not exist) nor any real AWS credentials.
    for key in list(env):
        if key.startswith(("TF_", "AWS_")):
            del env[key]
    for line in proc.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    env.update(
        {
            "TF_INPUT": "0",
            "TF_CLI_ARGS": "-no-color",
            "CHECKPOINT_DISABLE": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return Terraform(env=env)


def copy_tree(dest: Path) -> Path:
    """A clean copy of terraform/ (no .terraform, state or lock files) at dest/terraform."""
    target = dest / "terraform"
    shutil.copytree(
        TF_SRC,
        target,
        ignore=shutil.ignore_patterns(
            ".terraform", ".terraform.lock.hcl", "*.tfstate", "*.tfstate.backup", "backend.hcl"
        ),
    )
    return target


@pytest.fixture(scope="session")
def tf_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One shared copy of terraform/ for the read-only checks (fmt, validate, test)."""
    yield copy_tree(tmp_path_factory.mktemp("tf-copy"))
