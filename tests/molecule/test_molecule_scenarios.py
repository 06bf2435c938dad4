"""Molecule scenarios as pytest tests (slow: real containers with systemd; marker `molecule`).

Skip them for a quick run with `pytest -m "not molecule"` (make test-quick). They need root,
podman and the base image, which scripts/bootstrap-containers.sh provides (it runs in create).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.molecule,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the podman stack runs rootful (needs root)"),
]


def _molecule(scenario: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }
    return subprocess.run(
        [str(VENV_BIN / "molecule"), "test", "-s", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", ["default", "auth-query"])
def test_molecule_scenario(scenario):
    """create, converge site.yml, idempotence (changed=0), testinfra verify, destroy."""
    started = time.monotonic()
    proc = _molecule(scenario)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"molecule test -s {scenario} failed after {elapsed:.0f}s:\n{output[-12000:]}"
    )
