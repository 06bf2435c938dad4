"""Inventories: the same groups everywhere, secrets only through ansible-vault outside `local`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ENVIRONMENTS = ["local", "staging", "production"]


class _VaultLoader(yaml.SafeLoader):
    pass


_VaultLoader.add_constructor(
    "!vault", lambda loader, node: ("VAULT", loader.construct_scalar(node))
)


def _group_vars(env: str) -> dict[str, object]:
    merged: dict[str, object] = {}
    for path in sorted((ROOT / "inventories" / env / "group_vars").rglob("*.yml")):
        merged.update(yaml.load(path.read_text(), Loader=_VaultLoader) or {})  # noqa: S506
    return merged


def _inventory(env: str, *args: str, extra_env: dict[str, str] | None = None):
    return subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(ROOT / "inventories" / env), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **(extra_env or {})},
        timeout=120,
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_groups_and_shared_variables(env):
    proc = _inventory(env, "--list", "--export")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"postgresql", "pgbouncer", "ops"} <= set(data["all"]["children"])
    variables = _group_vars(env)
    for name in (
        "dbtier_db_host",
        "dbtier_db_port",
        "dbtier_db_name",
        "dbtier_app_user",
        "dbtier_app_password",
        "dbtier_migration_user",
        "dbtier_migration_password",
        "dbtier_self_managed",
    ):
        assert name in variables, f"{env}: {name} missing"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_secrets_are_vaulted(env):
    variables = _group_vars(env)
    secrets = {k: v for k, v in variables.items() if re.search("password|secret|token", k)}
    assert secrets
    for name, value in secrets.items():
        vaulted = isinstance(value, tuple) and value[0] == "VAULT"
        indirect = isinstance(value, str) and re.fullmatch(r"\{\{ vault_\w+ \}\}", value)
        assert vaulted or indirect, f"{env}: {name} is neither vaulted nor a vault_ reference"
        if indirect:
            target = variables[value.strip("{} ")]
            assert isinstance(target, tuple) and target[0] == "VAULT", f"{env}: {value} not vaulted"


@pytest.mark.skipif(
    not os.environ.get("DBTIER_VAULT_PASSWORD"), reason="DBTIER_VAULT_PASSWORD is not set"
)
@pytest.mark.parametrize("env", ["staging", "production"])
def test_vault_decrypts_with_the_password_from_the_environment(env):
    host = {"staging": "ops-staging-1", "production": "ops-production-1"}[env]
    proc = _inventory(
        env, "--host", host, "--vault-password-file", str(ROOT / "scripts/vault-pass.sh")
    )
    assert proc.returncode == 0, proc.stderr
    assert "vault_dbtier_app_password" in json.loads(proc.stdout)


def test_local_secrets_are_marked_insecure():
    text = (ROOT / "inventories/local/group_vars/all/insecure-local-secrets.yml").read_text()
    assert "INSECURE" in text
    assert "insecure-local-app-password" in text
