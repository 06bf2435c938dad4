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


# Supplied by inventories/terraform_inventory.py (the `ansible_inventory` Terraform output) in
# staging and production; set in group_vars only for local. group_vars would override them.
FROM_TERRAFORM = ("dbtier_environment", "dbtier_db_host", "dbtier_db_port", "dbtier_db_name")
# Added by Terraform for issue 9: set in group_vars they would shadow Terraform's values.
FROM_TERRAFORM_ONLY = (
    "postgresql_allowed_cidrs",
    "dbtier_postgresql_major",
    "dbtier_secondary_repository",
    "dbtier_secondary_region",
    "dbtier_retention_days",
    "dbtier_alerts_sns_topic_arn",
)
SHARED = (
    "dbtier_app_user",
    "dbtier_app_password",
    "dbtier_migration_user",
    "dbtier_migration_password",
    "dbtier_self_managed",
)
TF_VARS = {
    "ansible_user": "admin",
    "dbtier_environment": "ENV",
    "dbtier_db_host": "dbtier-ENV.abc.eu-west-1.rds.amazonaws.com",
    "dbtier_db_port": 5432,
    "dbtier_db_name": "mockupaws",
    "dbtier_backup_bucket": "dbtier-ENV-backups",
    "dbtier_backup_dr_bucket": "dbtier-ENV-backups-dr",
    "dbtier_backup_prefix": "dbtier/",
    "dbtier_backup_region": "eu-west-1",
    "dbtier_dr_region": "eu-central-1",
    "dbtier_kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/mrk-1",
    "postgresql_allowed_cidrs": ["10.77.0.0/16", "10.78.0.0/16"],
    "dbtier_postgresql_major": 16,
    "dbtier_secondary_repository": "s3://dbtier-ENV-backups-dr/dbtier/",
    "dbtier_secondary_region": "eu-central-1",
    "dbtier_retention_days": 14,
    "dbtier_alerts_sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:dbtier-ENV-alerts",
}


def _tf_outputs(env: str, tmp_path: Path) -> dict[str, str]:
    """A saved `terraform output -json` of an applied environment, for terraform.py."""
    variables = {k: v.replace("ENV", env) if isinstance(v, str) else v for k, v in TF_VARS.items()}
    doc = {
        "ansible_inventory": {
            "sensitive": False,
            "value": {
                "groups": {
                    "postgresql": {},
                    "pgbouncer": {f"pgbouncer-{env}-a": {"ansible_host": "10.20.1.10"}},
                    "ops": {f"ops-{env}-1": {"ansible_host": "10.20.1.20"}},
                },
                "vars": variables,
            },
        }
    }
    path = tmp_path / f"{env}-outputs.json"
    path.write_text(json.dumps(doc))
    return {"DBTIER_TF_OUTPUT_JSON": str(path)}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_groups_and_shared_variables(env, tmp_path):
    extra_env = None if env == "local" else _tf_outputs(env, tmp_path)
    proc = _inventory(env, "--list", "--export", extra_env=extra_env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"postgresql", "pgbouncer", "ops"} <= set(data["all"]["children"])
    variables = _group_vars(env)
    for name in SHARED:
        assert name in variables, f"{env}: {name} missing"
    for name in FROM_TERRAFORM:
        if env == "local":
            assert name in variables, f"local: {name} missing"
        else:
            assert name not in variables, f"{env}: {name} would override Terraform's value"
    if env != "local":
        for name in FROM_TERRAFORM_ONLY:
            assert name not in variables, f"{env}: {name} would override Terraform's value"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_terraform_script_supplies_hosts_and_endpoint(env, tmp_path):
    """-i inventories/<env> runs terraform.py (-> ../terraform_inventory.py) for that env."""
    link = ROOT / "inventories" / env / "terraform.py"
    assert link.is_symlink() and link.resolve() == ROOT / "inventories/terraform_inventory.py"
    hosts_yml = yaml.safe_load((ROOT / "inventories" / env / "hosts.yml").read_text())
    assert all(not group for group in hosts_yml["all"]["children"].values()), (
        f"{env}/hosts.yml must not list hosts (they come from Terraform)"
    )
    proc = _inventory(env, "--host", f"ops-{env}-1", extra_env=_tf_outputs(env, tmp_path))
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)
    assert hostvars["dbtier_db_host"] == f"dbtier-{env}.abc.eu-west-1.rds.amazonaws.com"
    assert hostvars["dbtier_environment"] == env
    assert hostvars["ansible_host"] == "10.20.1.20"
    # what roles/postgresql (pg_hba), roles/dbtier (DR copy, retention, client major) read
    assert hostvars["postgresql_allowed_cidrs"] == ["10.77.0.0/16", "10.78.0.0/16"]
    assert hostvars["dbtier_postgresql_major"] == 16
    assert hostvars["dbtier_secondary_repository"] == f"s3://dbtier-{env}-backups-dr/dbtier/"
    assert hostvars["dbtier_retention_days"] == 14


@pytest.mark.parametrize("env", ["staging", "production"])
def test_pg_hba_allows_the_vpc_cidrs_from_terraform(env, tmp_path):
    """The VPC CIDRs of Terraform's inventory reach pg_hba.conf (no group_vars shadowing them)."""
    book = tmp_path / "hba.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "hosts": f"ops-{env}-1",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {
                        "ansible_python_interpreter": sys.executable,
                        "postgresql_pgbouncer_auth_query": False,
                        "postgresql_hba_require_ssl": True,
                    },
                    "tasks": [
                        {
                            "name": "render",
                            "ansible.builtin.debug": {
                                "msg": "{{ lookup('ansible.builtin.template', '"
                                + str(ROOT / "ansible/roles/postgresql/templates/pg_hba.conf.j2")
                                + "') }}"
                            },
                        }
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(ROOT / "inventories" / env), str(book)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
            **_tf_outputs(env, tmp_path),
        },
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    task = json.loads(proc.stdout)["plays"][0]["tasks"][0]
    rules = task["hosts"][f"ops-{env}-1"]["msg"]
    for cidr in ("10.77.0.0/16", "10.78.0.0/16"):
        assert re.search(rf"^hostssl\s+all\s+all\s+{re.escape(cidr)}\s+scram-sha-256$", rules, re.M)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_secrets_are_vaulted(env):
    variables = _group_vars(env)
    secrets = {k: v for k, v in variables.items() if re.search("password|secret|token|_key$", k)}
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
def test_vault_decrypts_with_the_password_from_the_environment(env, tmp_path):
    proc = _inventory(
        env,
        "--host",
        f"ops-{env}-1",
        "--vault-password-file",
        str(ROOT / "scripts/vault-pass.sh"),
        extra_env=_tf_outputs(env, tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "vault_dbtier_app_password" in json.loads(proc.stdout)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_graph_shows_the_hosts_from_terraform(env, tmp_path):
    """docs/DEPLOYMENT.md step 4: ansible-inventory -i inventories/<env> --graph."""
    proc = _inventory(env, "--graph", extra_env=_tf_outputs(env, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"@pgbouncer:\n  |  |--pgbouncer-{env}-a" in proc.stdout
    assert f"@ops:\n  |  |--ops-{env}-1" in proc.stdout


def test_encrypt_string_as_documented(tmp_path):
    """docs/DEPLOYMENT.md: a secret for vault.yml from ansible-vault encrypt_string, with the
    password from $DBTIER_VAULT_PASSWORD through scripts/vault-pass.sh, read back by a play."""
    env = {**os.environ, "DBTIER_VAULT_PASSWORD": "test-only-vault-password"}
    encrypted = subprocess.run(
        [str(VENV_BIN / "ansible-vault"), "encrypt_string", "--vault-password-file",
         "scripts/vault-pass.sh", "--name", "vault_dbtier_health_password", "s3cret value"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    assert "s3cret" not in encrypted.stdout and "!vault |" in encrypted.stdout
    (tmp_path / "vault.yml").write_text(encrypted.stdout)
    shown = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-m", "ansible.builtin.debug", "-a", "var=vault_dbtier_health_password",
         "-e", f"@{tmp_path / 'vault.yml'}", "--vault-password-file", "scripts/vault-pass.sh"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert '"vault_dbtier_health_password": "s3cret value"' in shown.stdout
    without = subprocess.run(
        [str(VENV_BIN / "ansible-vault"), "encrypt_string", "--vault-password-file",
         "scripts/vault-pass.sh", "--name", "x", "y"],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=60,
        env={k: v for k, v in env.items() if k != "DBTIER_VAULT_PASSWORD"},
    )  # fmt: skip
    assert without.returncode != 0 and "DBTIER_VAULT_PASSWORD is not set" in without.stderr


def test_local_secrets_are_marked_insecure():
    text = (ROOT / "inventories/local/group_vars/all/insecure-local-secrets.yml").read_text()
    assert "INSECURE" in text
    assert "insecure-local-app-password" in text
