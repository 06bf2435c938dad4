"""init / apply / second plan (no changes) / destroy of an environment against moto_server.

The environment is the real `terraform/environments/staging` with its real terraform.tfvars,
in a private copy, with the S3 backend + DynamoDB lock table pointed at the same local server.
Only the copied `moto_override.tf` files (tests/terraform/moto/) differ from the real tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.moto_server import MotoServer

from .conftest import MOTO_OVERRIDES, ROOT, Terraform, copy_tree

boto3 = pytest.importorskip("boto3")

pytestmark = [pytest.mark.terraform, pytest.mark.terraform_apply]

ENVIRONMENT = "staging"
STATE_BUCKET = "dbtier-tfstate"
LOCK_TABLE = "dbtier-tf-locks"
INVENTORY = ROOT / "inventories" / "terraform_inventory.py"


@dataclass
class Applied:
    workdir: Path
    moto: MotoServer
    tf: Terraform
    env: dict[str, str]
    outputs: dict
    timings: dict[str, float]


def install_overrides(tree: Path, environment: str) -> None:
    shutil.copy(
        MOTO_OVERRIDES / "environment" / "moto_override.tf",
        tree / "environments" / environment / "moto_override.tf",
    )
    for src in (MOTO_OVERRIDES / "modules").glob("*/moto_override.tf"):
        shutil.copy(src, tree / "modules" / src.parent.name / "moto_override.tf")


def backend_config(path: Path, moto: MotoServer) -> Path:
    path.write_text(
        "\n".join(
            [
                f'bucket         = "{STATE_BUCKET}"',
                f'key            = "dbtier/{ENVIRONMENT}/terraform.tfstate"',
                'region         = "us-east-1"',
                "encrypt        = true",
                f'dynamodb_table = "{LOCK_TABLE}"',
                'access_key     = "testing"',
                'secret_key     = "testing"',
                "use_path_style = true",
                "skip_credentials_validation = true",
                "skip_requesting_account_id  = true",
                "skip_metadata_api_check     = true",
                f'endpoints = {{ s3 = "{moto.url}", dynamodb = "{moto.url}" }}',
                "",
            ]
        )
    )
    return path


@pytest.fixture(scope="module")
def applied(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    base = tmp_path_factory.mktemp("tf-moto")
    tree = copy_tree(base)
    install_overrides(tree, ENVIRONMENT)
    workdir = tree / "environments" / ENVIRONMENT
    # AWS-managed policies (AmazonRDSEnhancedMonitoringRole) exist in moto only on request
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    try:
        moto = MotoServer(log_path=base / "moto.log").start()
    finally:
        os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
    try:
        s3 = boto3.client("s3", **moto.client_kwargs())
        s3.create_bucket(Bucket=STATE_BUCKET)
        boto3.client("dynamodb", **moto.client_kwargs()).create_table(
            TableName=LOCK_TABLE,
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        env = {
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        timings: dict[str, float] = {}

        def timed(name: str, *args: str, timeout: float = 420) -> None:
            started = time.monotonic()
            terraform.run(workdir, *args, timeout=timeout, extra_env=env)
            timings[name] = time.monotonic() - started

        timed(
            "init",
            "init",
            "-input=false",
            f"-backend-config={backend_config(base / 'b.hcl', moto)}",
        )
        timed("apply", "apply", "-input=false", "-auto-approve")
        out = terraform.run(workdir, "output", "-json", extra_env=env).stdout
        yield Applied(workdir, moto, terraform, env, json.loads(out), timings)
    finally:
        moto.stop()


def test_state_is_in_the_s3_backend(applied: Applied) -> None:
    s3 = boto3.client("s3", **applied.moto.client_kwargs())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=STATE_BUCKET).get("Contents", [])]
    assert keys == [f"dbtier/{ENVIRONMENT}/terraform.tfstate"]
    assert not (applied.workdir / "terraform.tfstate").exists()


def test_second_plan_shows_no_changes(applied: Applied) -> None:
    proc = applied.tf.run(
        applied.workdir,
        "plan",
        "-input=false",
        "-detailed-exitcode",
        check=False,
        timeout=300,
        extra_env=applied.env,
    )
    assert proc.returncode == 0, f"plan after apply is not empty:\n{proc.stdout[-8000:]}"


def test_applied_resources_have_what_matters(applied: Applied) -> None:
    rds = boto3.client("rds", **applied.moto.client_kwargs())
    db = rds.describe_db_instances(DBInstanceIdentifier="dbtier-staging")["DBInstances"][0]
    assert db["MultiAZ"] and db["StorageEncrypted"] and not db["PubliclyAccessible"]
    assert db["BackupRetentionPeriod"] == 7 and db["DeletionProtection"] is False  # override
    assert db["Engine"] == "postgres" and db["EngineVersion"].startswith("15")

    s3 = boto3.client("s3", **applied.moto.client_kwargs())
    bucket = "mockupaws-dbtier-staging-backups"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values())
    repl = s3.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]
    assert repl["Rules"][0]["Destination"]["Bucket"].endswith(
        ":::mockupaws-dbtier-staging-backups-dr"
    )
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert any(
        s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))
        for s in policy["Statement"]
    )
    dr = boto3.client("s3", **applied.moto.client_kwargs("eu-west-1"))
    loc = dr.get_bucket_location(Bucket="mockupaws-dbtier-staging-backups-dr")
    assert loc["LocationConstraint"] == "eu-west-1"


def test_inventory_from_real_outputs(applied: Applied, tmp_path: Path) -> None:
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(applied.outputs))
    proc = subprocess.run(
        [sys.executable, str(INVENTORY), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, DBTIER_TF_OUTPUT_JSON=str(saved)),
    )
    inv = json.loads(proc.stdout)
    assert inv["pgbouncer"]["hosts"] == ["dbtier-staging-pgbouncer-1", "dbtier-staging-pgbouncer-2"]
    assert inv["ops"]["hosts"] == ["dbtier-staging-ops"]
    assert inv["postgresql"]["hosts"] == []
    v = inv["all"]["vars"]
    assert v["dbtier_db_host"].startswith("dbtier-staging.")
    assert v["dbtier_db_port"] == 5432 and v["dbtier_db_name"] == "mockupaws"
    assert v["dbtier_backup_bucket"] == "mockupaws-dbtier-staging-backups"
    assert v["dbtier_backup_dr_bucket"] == "mockupaws-dbtier-staging-backups-dr"
    assert (v["dbtier_backup_region"], v["dbtier_dr_region"]) == ("us-east-1", "eu-west-1")
    assert v["dbtier_kms_key_id"].startswith("arn:aws:kms:us-east-1:")
    for host in inv["pgbouncer"]["hosts"] + inv["ops"]["hosts"]:
        assert inv["_meta"]["hostvars"][host]["ansible_host"].startswith("10.41.")

    # and straight from `terraform output -json` in the environment, as Ansible would run it
    proc = subprocess.run(
        [sys.executable, str(INVENTORY), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(
            applied.tf.env,
            **applied.env,
            DBTIER_ENV=ENVIRONMENT,
            DBTIER_TF_DIR=str(applied.workdir),
        ),
    )
    assert json.loads(proc.stdout) == inv


def test_destroy(applied: Applied) -> None:
    started = time.monotonic()
    applied.tf.run(
        applied.workdir,
        "destroy",
        "-input=false",
        "-auto-approve",
        timeout=420,
        extra_env=applied.env,
    )
    applied.timings["destroy"] = time.monotonic() - started
    rds = boto3.client("rds", **applied.moto.client_kwargs())
    assert rds.describe_db_instances()["DBInstances"] == []
    s3 = boto3.client("s3", **applied.moto.client_kwargs())
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [STATE_BUCKET]
    print("terraform timings (s):", {k: round(v, 1) for k, v in applied.timings.items()})
