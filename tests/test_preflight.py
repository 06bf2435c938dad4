"""site.yml refuses an environment whose inventory is missing or empty (issue 9): no Terraform
outputs used to make every play say "no hosts matched" and the run end green."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.ansible

HINT = "run `terraform apply` in terraform/environments/staging"


def outputs(tmp_path: Path, groups: dict[str, dict], **extra_vars) -> Path:
    """A saved `terraform output -json` of staging with these groups."""
    variables = {
        "ansible_user": "admin",
        "dbtier_environment": "staging",
        "dbtier_db_host": "dbtier-staging.abc.eu-west-1.rds.amazonaws.com",
        "dbtier_db_port": 5432,
        "dbtier_db_name": "mockupaws",
        "dbtier_backup_bucket": "b",
        "dbtier_backup_dr_bucket": "b-dr",
        "dbtier_backup_region": "eu-west-1",
        "dbtier_dr_region": "eu-central-1",
        "dbtier_kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/mrk-1",
        "dbtier_secondary_repository": "s3://b-dr/dbtier/",
        "dbtier_secondary_region": "eu-central-1",
        "dbtier_retention_days": 30,
        "postgresql_allowed_cidrs": ["10.20.1.0/24", "10.20.2.0/24"],
        "dbtier_postgresql_major": 15,
        "dbtier_alerts_sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:dbtier-staging-alerts",
        **extra_vars,
    }
    path = tmp_path / "outputs.json"
    path.write_text(
        json.dumps({"ansible_inventory": {"value": {"groups": groups, "vars": variables}}})
    )
    return path


def playbook(book: str, inventory: str, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DBTIER_TF_")}
    full_env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            **(env or {}),
        }
    )
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", inventory, f"ansible/{book}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=300,
        check=False,
    )
    return proc, proc.stdout + proc.stderr


def test_site_without_terraform_state_fails_naming_the_cause(tmp_path):
    """No state: the inventory script fails, and that is fatal (any_unparsed_is_failed)."""
    empty = tmp_path / "no-state"
    empty.mkdir()
    proc, out = playbook("site.yml", "inventories/staging", {"DBTIER_TF_DIR": str(empty)})
    assert proc.returncode != 0, out
    assert "Completely failed to parse inventory source" in out
    assert "inventories/staging/terraform.py" in out
    assert (
        "terraform_inventory: terraform outputs hold no ansible_inventory (not applied yet" in out
    )
    assert "no hosts matched" not in out


def test_site_with_empty_groups_fails_in_preflight(tmp_path):
    saved = outputs(tmp_path, {"postgresql": {}, "pgbouncer": {}, "ops": {"ops1": {}}})
    proc, out = playbook("site.yml", "inventories/staging", {"DBTIER_TF_OUTPUT_JSON": str(saved)})
    assert proc.returncode != 0, out
    assert "group(s) pgbouncer have no hosts" in out
    assert HINT in out and "DBTIER_TF_OUTPUT_JSON" in out
    # nothing after the preflight ran
    assert "PLAY [PostgreSQL (self-managed)]" not in out


def test_hosts_yml_alone_is_refused(tmp_path):
    proc, out = playbook("preflight.yml", "inventories/staging/hosts.yml")
    assert proc.returncode != 0, out
    assert "group(s) pgbouncer, ops have no hosts" in out
    assert HINT in out


def test_rds_with_postgresql_hosts_is_a_contradiction(tmp_path):
    saved = outputs(
        tmp_path,
        {"postgresql": {"db1": {}}, "pgbouncer": {"pgb1": {}}, "ops": {"ops1": {}}},
    )
    proc, out = playbook(
        "preflight.yml", "inventories/staging", {"DBTIER_TF_OUTPUT_JSON": str(saved)}
    )
    assert proc.returncode != 0, out
    assert "group postgresql has hosts (db1)" in out


@pytest.mark.parametrize("env", ["staging", "production"])
def test_populated_rds_inventory_passes(tmp_path, env):
    saved = outputs(tmp_path, {"postgresql": {}, "pgbouncer": {"pgb1": {}}, "ops": {"ops1": {}}})
    proc, out = playbook(
        "preflight.yml", f"inventories/{env}", {"DBTIER_TF_OUTPUT_JSON": str(saved)}
    )
    assert proc.returncode == 0, out


def test_local_inventory_passes():
    proc, out = playbook("preflight.yml", "inventories/local")
    assert proc.returncode == 0, out


def test_an_inventory_that_does_not_say_rds_or_self_managed_is_refused(tmp_path):
    """An unknown kind is an error, never taken for RDS (which needs no PostgreSQL hosts)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    pgbouncer:\n      hosts: {pgb1: {}}\n")
    proc, out = playbook("preflight.yml", str(inventory))
    assert proc.returncode != 0, out
    assert "dbtier_db_kind is unset: set it to self-managed or rds" in out
