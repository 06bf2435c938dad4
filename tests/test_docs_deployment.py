"""docs/DEPLOYMENT.md's account set-up, as written: the block that creates the Terraform state
bucket and lock table runs with the AWS CLI against moto_server on 127.0.0.1 (each `aws` call
gets --endpoint-url through a shell function; the block's text is not changed)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .support.moto_server import ACCESS_KEY, SECRET_KEY, MotoServer, moto_server_binary
from .support.runbook import DOCS, commands, shell_blocks

boto3 = pytest.importorskip("boto3")

# The commands of the block, in order (program and first arguments): the test fails when the
# document changes them, so that what runs here is what the operator reads.
STATE_COMMANDS = [
    ["aws", "s3api", "create-bucket"],
    ["aws", "s3api", "put-bucket-versioning"],
    ["aws", "s3api", "put-public-access-block"],
    ["aws", "kms", "create-alias"],
    ["aws", "s3api", "put-bucket-encryption"],
    ["aws", "dynamodb", "create-table"],
]


def state_block() -> str:
    (block,) = [
        b for b in shell_blocks(DOCS / "DEPLOYMENT.md") if "aws s3api create-bucket" in b.text
    ]
    assert [c[:3] for c in commands(block)] == STATE_COMMANDS
    return block.text


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is missing: make system-deps")
@pytest.mark.skipif(moto_server_binary() is None, reason="moto_server missing: make setup")
def test_state_bucket_and_lock_table_as_documented() -> None:
    with MotoServer() as moto:
        script = (
            "set -euo pipefail\n"
            f'aws() {{ command aws --endpoint-url "{moto.url}" "$@"; }}\n' + state_block()
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_PAGER="",
            AWS_EC2_METADATA_DISABLED="true",
        )
        proc = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr

        s3 = boto3.client("s3", **moto.client_kwargs())
        bucket = "mockupaws-terraform-state"
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        assert all(
            s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values()
        )
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
        default = rules[0]["ApplyServerSideEncryptionByDefault"]
        assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/terraform-state"}
        kms = boto3.client("kms", **moto.client_kwargs())
        aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
        assert aliases.get("alias/terraform-state")
        table = boto3.client("dynamodb", **moto.client_kwargs()).describe_table(
            TableName="terraform-locks"
        )["Table"]
        assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
