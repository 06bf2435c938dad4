"""inventories/terraform_inventory.py on `terraform output -json` documents (no terraform needed).

The same script is run on the outputs of a real apply in test_apply_moto.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

INVENTORY = ROOT / "inventories" / "terraform_inventory.py"

VARS = {
    "ansible_user": "admin",
    "dbtier_db_host": "dbtier-production.abc.us-east-1.rds.amazonaws.com",
    "dbtier_db_port": 5432,
    "dbtier_db_name": "mockupaws",
    "dbtier_backup_bucket": "b",
    "dbtier_backup_dr_bucket": "b-dr",
    "dbtier_backup_region": "us-east-1",
    "dbtier_dr_region": "eu-west-1",
    "dbtier_kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/mrk-1",
    "dbtier_secondary_repository": "s3://b-dr/dbtier/",
    "dbtier_secondary_region": "eu-west-1",
    "dbtier_secondary_check_replication": True,
    "dbtier_retention_days": 30,
    "postgresql_allowed_cidrs": ["10.40.1.0/24", "10.40.2.0/24"],
    "dbtier_vpc_cidr": "10.40.0.0/16",
    "dbtier_postgresql_major": 15,
    "pgbouncer_health_port": 8008,
    "pgbouncer_health_path": "/health",
    "dbtier_alerts_sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:dbtier-production-alerts",
    "monitoring_node_exporter_port": 9100,
    "ansible_connection": "amazon.aws.aws_ssm",
    "ansible_aws_ssm_bucket_name": "b-ssm",
    "ansible_aws_ssm_region": "us-east-1",
}


def outputs(**override: object) -> dict:
    value = {
        "groups": {
            "postgresql": {},
            "pgbouncer": {
                "p-2": {
                    "ansible_host": "10.40.2.5",
                    "ansible_aws_ssm_instance_id": "i-2",
                    "ec2_instance_id": "i-2",
                },
                "p-1": {
                    "ansible_host": "10.40.1.5",
                    "ansible_aws_ssm_instance_id": "i-1",
                    "ec2_instance_id": "i-1",
                },
            },
            "ops": {
                "ops-1": {
                    "ansible_host": "10.40.1.9",
                    "ansible_aws_ssm_instance_id": "i-3",
                    "ec2_instance_id": "i-3",
                }
            },
        },
        "vars": dict(VARS),
    }
    value.update(override)
    return {
        "ansible_inventory": {"sensitive": False, "type": ["object", {}], "value": value},
        "rds_endpoint": {"sensitive": False, "type": "string", "value": "x:5432"},
    }


def run(doc: object, *args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    saved = tmp_path / "out.json"
    saved.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.run(
        [sys.executable, str(INVENTORY), *args],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, DBTIER_TF_OUTPUT_JSON=str(saved), **env),
    )


def test_list_groups_and_vars(tmp_path: Path) -> None:
    proc = run(outputs(), "--list", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    assert inv["pgbouncer"] == {"hosts": ["p-1", "p-2"]}
    assert inv["ops"] == {"hosts": ["ops-1"]}
    assert inv["postgresql"] == {"hosts": []}
    assert set(inv["all"]["children"]) == {"postgresql", "pgbouncer", "ops"}
    assert inv["all"]["vars"] == VARS
    assert inv["_meta"]["hostvars"]["p-2"]["ansible_host"] == "10.40.2.5"


def test_dr_retention_network_and_engine_reach_the_roles(tmp_path: Path) -> None:
    """The Terraform outputs the roles read arrive under the roles' own variable names."""
    inv = json.loads(run(outputs(), "--list", tmp_path=tmp_path).stdout)
    v = inv["all"]["vars"]
    assert v["dbtier_secondary_repository"] == "s3://b-dr/dbtier/"
    assert v["dbtier_secondary_region"] == "eu-west-1"
    assert v["dbtier_retention_days"] == 30
    assert v["postgresql_allowed_cidrs"] == ["10.40.1.0/24", "10.40.2.0/24"]
    assert v["dbtier_postgresql_major"] == 15
    assert (v["pgbouncer_health_port"], v["pgbouncer_health_path"]) == (8008, "/health")


def test_alert_topic_reaches_alertmanager(tmp_path: Path) -> None:
    """The tier's SNS topic is Alertmanager's receiver (monitoring_alertmanager_sns_topic_arn)."""
    v = json.loads(run(outputs(), "--list", tmp_path=tmp_path).stdout)["all"]["vars"]
    assert v["dbtier_alerts_sns_topic_arn"] == (
        "arn:aws:sns:us-east-1:123456789012:dbtier-production-alerts"
    )
    assert v["monitoring_node_exporter_port"] == 9100


def test_ssm_connection_per_host(tmp_path: Path) -> None:
    """Ansible reaches the hosts over SSM: instance id per host, bucket and region for all."""
    inv = json.loads(run(outputs(), "--list", tmp_path=tmp_path).stdout)
    assert inv["all"]["vars"]["ansible_connection"] == "amazon.aws.aws_ssm"
    assert inv["all"]["vars"]["ansible_aws_ssm_bucket_name"] == "b-ssm"
    assert inv["all"]["vars"]["ansible_aws_ssm_region"] == "us-east-1"
    hostvars = inv["_meta"]["hostvars"]
    assert {h: hv["ansible_aws_ssm_instance_id"] for h, hv in hostvars.items()} == {
        "p-1": "i-1",
        "p-2": "i-2",
        "ops-1": "i-3",
    }


def test_host(tmp_path: Path) -> None:
    proc = run(outputs(), "--host", "ops-1", tmp_path=tmp_path)
    assert json.loads(proc.stdout)["ec2_instance_id"] == "i-3"
    assert json.loads(run(outputs(), "--host", "nope", tmp_path=tmp_path).stdout) == {}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "no ansible_inventory"),
        ("not json", "not JSON"),
        (outputs(vars={k: v for k, v in VARS.items() if k != "dbtier_kms_key_id"}), "lacks"),
        (outputs(groups={"pgbouncer": ["a"]}), "not a map of hosts"),
        (outputs(vars={**VARS, "dbtier_secondary_repository": ""}), "lacks"),
        (outputs(vars={**VARS, "postgresql_allowed_cidrs": []}), "lacks"),
        (outputs(vars={k: v for k, v in VARS.items() if k != "dbtier_retention_days"}), "lacks"),
        (
            outputs(vars={**VARS, "dbtier_secondary_repository": "b-dr/dbtier/"}),
            "dbtier_secondary_repository",
        ),
        (outputs(vars={**VARS, "dbtier_retention_days": "30"}), "dbtier_retention_days"),
        (outputs(vars={**VARS, "dbtier_retention_days": 0}), "dbtier_retention_days"),
        (outputs(vars={**VARS, "postgresql_allowed_cidrs": ["10.40.1.5/24"]}), "CIDR"),
        (outputs(vars={**VARS, "postgresql_allowed_cidrs": "10.40.0.0/16"}), "CIDR"),
        (outputs(vars={**VARS, "dbtier_postgresql_major": "15"}), "dbtier_postgresql_major"),
        (outputs(vars={**VARS, "pgbouncer_health_port": 70000}), "pgbouncer_health_port"),
        (
            outputs(vars={k: v for k, v in VARS.items() if k != "dbtier_alerts_sns_topic_arn"}),
            "lacks dbtier_alerts_sns_topic_arn",
        ),
        (
            outputs(vars={**VARS, "dbtier_alerts_sns_topic_arn": "dbtier-production-alerts"}),
            "dbtier_alerts_sns_topic_arn",
        ),
        (
            outputs(
                vars={
                    **VARS,
                    "dbtier_alerts_sns_topic_arn": "arn:aws:sqs:us-east-1:123456789012:alerts",
                }
            ),
            "is not an SNS topic ARN",
        ),
        (
            outputs(vars={**VARS, "monitoring_node_exporter_port": "9100"}),
            "monitoring_node_exporter_port",
        ),
    ],
)
def test_bad_outputs_one_line_error(tmp_path: Path, doc: object, message: str) -> None:
    proc = run(doc, "--list", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_environment_from_the_inventory_folder(tmp_path: Path) -> None:
    """inventories/<env>/terraform.py -> ../terraform_inventory.py picks <env>."""
    inv_dir = tmp_path / "inventories" / "production"
    inv_dir.mkdir(parents=True)
    link = inv_dir / "terraform.py"
    link.symlink_to(INVENTORY)
    fake_env = tmp_path / "tf-production"
    fake_env.mkdir()
    proc = subprocess.run(
        [sys.executable, str(link), "--list"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PATH="/nonexistent", DBTIER_TF_DIR=str(fake_env)),
    )
    # no terraform on that PATH: the error names the command, not a traceback
    assert proc.returncode == 1 and "terraform output failed" in proc.stderr, proc.stderr


def test_no_environment_is_an_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DBTIER_ENV", "DBTIER_TF_OUTPUT_JSON")}
    proc = subprocess.run(
        [sys.executable, str(INVENTORY), "--list"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 1 and "DBTIER_ENV" in proc.stderr
