"""init / apply / second plan (no changes) / destroy of an environment against moto_server.

The environment is the real `terraform/environments/staging` (module "tier" with staging's
terraform.tfvars: NAT gateway on), in a private copy, with the S3 backend + DynamoDB lock table
pointed at the same local server. Only the copied `moto_override.tf` files
(tests/terraform/moto/) differ from the real tree. Everything the tier creates is applied here,
VPC endpoints, NAT gateway and SSM access included; nothing is left out for moto.
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
        # As docs/DEPLOYMENT.md step 3 has it: a saved plan, then apply exactly that plan.
        timed("plan", "plan", "-input=false", "-out=tfplan")
        timed("apply", "apply", "-input=false", "tfplan")
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
    tags = {t["Key"]: t["Value"] for t in db["TagList"]}
    assert tags | {"Project": "dbtier", "Environment": "staging", "ManagedBy": "terraform"} == tags

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


def test_network_has_a_private_way_to_aws_and_nat(applied: Applied) -> None:
    ec2 = boto3.client("ec2", **applied.moto.client_kwargs())
    vpc_id = applied.outputs["vpc_id"]["value"]
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    subnets = ec2.describe_subnets(Filters=in_vpc)["Subnets"]
    private = sorted(
        (s for s in subnets if {"Key": "Tier", "Value": "private"} in s.get("Tags", [])),
        key=lambda s: s["CidrBlock"],
    )
    public = [s for s in subnets if {"Key": "Tier", "Value": "public"} in s.get("Tags", [])]
    assert [s["CidrBlock"] for s in private] == ["10.41.1.0/24", "10.41.2.0/24"]
    assert [s["CidrBlock"] for s in public] == ["10.41.201.0/24"]
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets)

    endpoints = ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"]
    by_service = {e["ServiceName"].rsplit(".", 1)[1]: e for e in endpoints}
    services = [
        "kms",
        "secretsmanager",
        "ssm",
        "ssmmessages",
        "ec2messages",
        "logs",
        "sts",
        "rds",
        "sns",
    ]
    assert set(by_service) == {"s3", *services}
    s3 = by_service["s3"]
    assert s3["VpcEndpointType"] == "Gateway"

    # each private subnet: its own route table with the S3 endpoint and 0.0.0.0/0 -> NAT
    nat = ec2.describe_nat_gateways(Filters=in_vpc)["NatGateways"]
    assert len(nat) == 1 and nat[0]["SubnetId"] == public[0]["SubnetId"]
    assert nat[0]["NatGatewayAddresses"][0].get("PublicIp")
    tables = ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]
    for subnet in private:
        table = next(
            t
            for t in tables
            if any(a.get("SubnetId") == subnet["SubnetId"] for a in t["Associations"])
        )
        assert table["RouteTableId"] in s3["RouteTableIds"]
        default = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        assert [r.get("NatGatewayId") for r in default] == [nat[0]["NatGatewayId"]]
    igw = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    )["InternetGateways"]
    assert len(igw) == 1

    groups = {
        g["GroupId"]: g for g in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]
    }
    endpoint_sg = {g for e in endpoints for g in (x["GroupId"] for x in e.get("Groups", []))}
    for name in services:
        e = by_service[name]
        assert e["VpcEndpointType"] == "Interface" and e["PrivateDnsEnabled"], name
        assert sorted(e["SubnetIds"]) == sorted(s["SubnetId"] for s in private), name
    assert len(endpoint_sg) == 1
    (sg,) = endpoint_sg
    rules = groups[sg]["IpPermissions"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [("tcp", 443, 443)]
    assert [ip["CidrIp"] for ip in rules[0]["IpRanges"]] == ["10.41.0.0/16"]

    # nothing opens SSH, nothing is open to the world
    for group in groups.values():
        for rule in group["IpPermissions"]:
            assert not (rule.get("FromPort", 0) <= 22 <= rule.get("ToPort", -1)), group["GroupName"]
            assert all(ip["CidrIp"] != "0.0.0.0/0" for ip in rule.get("IpRanges", []))


def test_pgbouncer_health_check_and_ssm_access(applied: Applied) -> None:
    elb = boto3.client("elbv2", **applied.moto.client_kwargs())
    (tg,) = elb.describe_target_groups(Names=["dbtier-staging-pgbouncer"])["TargetGroups"]
    assert (tg["Protocol"], tg["Port"]) == ("TCP", 6432)
    assert (tg["HealthCheckProtocol"], tg["HealthCheckPort"], tg["HealthCheckPath"]) == (
        "HTTP",
        "8008",
        "/health",
    )
    assert tg["Matcher"] == {"HttpCode": "200"}

    ec2 = boto3.client("ec2", **applied.moto.client_kwargs())
    pgb_sg = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["dbtier-staging-pgbouncer"]}]
    )["SecurityGroups"][0]
    opened = {
        (r["FromPort"], ip["CidrIp"]) for r in pgb_sg["IpPermissions"] for ip in r["IpRanges"]
    }
    assert opened == {(6432, "10.41.100.0/22"), (8008, "10.41.0.0/16")}

    iam = boto3.client("iam", **applied.moto.client_kwargs())
    instance_ids = applied.outputs["instance_ids"]["value"]
    assert set(instance_ids) == {
        "dbtier-staging-pgbouncer-1",
        "dbtier-staging-pgbouncer-2",
        "dbtier-staging-ops",
    }
    reservations = ec2.describe_instances(InstanceIds=list(instance_ids.values()))["Reservations"]
    for instance in (i for r in reservations for i in r["Instances"]):
        profile = instance["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
        (role,) = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
        attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
        assert "AmazonSSMManagedInstanceCore" in {p["PolicyName"] for p in attached}, profile

    s3 = boto3.client("s3", **applied.moto.client_kwargs())
    bucket = applied.outputs["ssm_bucket"]["value"]
    assert bucket == "mockupaws-dbtier-staging-ssm-transfer"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None  # never versioned
    (life,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert life["Expiration"]["Days"] == 1

    policy_arn = applied.outputs["ansible_controller_policy_arn"]["value"]
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]
    statements = document["Document"]["Statement"]
    start = next(s for s in statements if s["Sid"] == "StartSessionsOnTheTierHosts")
    assert {r.rsplit("/", 1)[1] for r in start["Resource"] if ":instance/" in r} == set(
        instance_ids.values()
    )


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is missing: make system-deps")
def test_controller_policy_attaches_as_documented(applied: Applied) -> None:
    """docs/DEPLOYMENT.md step 4: the controller policy from `terraform -chdir=... output -raw`,
    attached with the AWS CLI to the role that runs Ansible (moto's IAM)."""
    arn = applied.tf.run(
        applied.workdir.parent.parent,
        f"-chdir={applied.workdir}",
        "output",
        "-raw",
        "ansible_controller_policy_arn",
        extra_env=applied.env,
    ).stdout.strip()
    assert arn == applied.outputs["ansible_controller_policy_arn"]["value"]
    iam = boto3.client("iam", **applied.moto.client_kwargs())
    iam.create_role(RoleName="runs-ansible", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                       "Action": "sts:AssumeRole"}],
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(applied.env, AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")
    proc = subprocess.run(
        ["aws", "--endpoint-url", applied.moto.url, "iam", "attach-role-policy",
         "--role-name", "runs-ansible", "--policy-arn", arn],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    attached = iam.list_attached_role_policies(RoleName="runs-ansible")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [arn]


ALERTS = "dbtier-staging-alerts"
ALARMS = {
    "dbtier-staging-cpu",
    "dbtier-staging-free-storage",
    "dbtier-staging-connections",
    "dbtier-staging-pgbouncer-1-status-check",
    "dbtier-staging-pgbouncer-2-status-check",
    "dbtier-staging-ops-status-check",
    "dbtier-staging-pgbouncer-unhealthy-hosts",
    "dbtier-staging-pgbouncer-no-healthy-hosts",
}


def statements(document: str | dict) -> list[dict]:
    doc = json.loads(document) if isinstance(document, str) else document
    found = doc["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_alert_topic_encrypted_with_its_key_and_subscribed(applied: Applied) -> None:
    topic_arn = applied.outputs["alerts_sns_topic_arn"]["value"]
    assert topic_arn.endswith(f":{ALERTS}") and topic_arn.startswith("arn:aws:sns:us-east-1:")
    sns = boto3.client("sns", **applied.moto.client_kwargs())
    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]

    kms = boto3.client("kms", **applied.moto.client_kwargs())
    key = kms.describe_key(KeyId=attributes["KmsMasterKeyId"])["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["KeyState"] == "Enabled"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [f"alias/{ALERTS}"]
    key_policy = statements(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    (cloudwatch,) = [s for s in key_policy if s.get("Sid") == "CloudWatchAlarmsUseTheKey"]
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(as_list(cloudwatch["Action"])) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    account = topic_arn.split(":")[4]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}

    (publish,) = statements(attributes["Policy"])
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert as_list(publish["Action"]) == ["sns:Publish"]
    assert as_list(publish["Resource"]) == [topic_arn]
    assert publish["Condition"]["StringEquals"] == {"aws:SourceAccount": account}
    assert publish["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{account}:alarm:*"
    }

    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [
        ("email", "oncall-dbtier@example.com")
    ]


def test_every_alarm_notifies_the_alert_topic(applied: Applied) -> None:
    topic_arn = applied.outputs["alerts_sns_topic_arn"]["value"]
    cloudwatch = boto3.client("cloudwatch", **applied.moto.client_kwargs())
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert set(alarms) == ALARMS
    for name, alarm in alarms.items():
        assert topic_arn in alarm["AlarmActions"], name
        assert topic_arn in alarm["OKActions"], name
        assert alarm["ActionsEnabled"], name

    instance_ids = applied.outputs["instance_ids"]["value"]
    for host, instance_id in instance_ids.items():
        alarm = alarms[f"{host}-status-check"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/EC2", "StatusCheckFailed")
        assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": instance_id}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)

    elb = boto3.client("elbv2", **applied.moto.client_kwargs())
    (tg,) = elb.describe_target_groups(Names=["dbtier-staging-pgbouncer"])["TargetGroups"]
    (lb_arn,) = tg["LoadBalancerArns"]
    expected_dimensions = {
        "TargetGroup": tg["TargetGroupArn"].split(":", 5)[5],
        "LoadBalancer": lb_arn.split(":loadbalancer/", 1)[1],
    }
    for name, metric, comparison, threshold, missing in (
        ("unhealthy-hosts", "UnHealthyHostCount", "GreaterThanThreshold", 0, "notBreaching"),
        ("no-healthy-hosts", "HealthyHostCount", "LessThanThreshold", 1, "breaching"),
    ):
        alarm = alarms[f"dbtier-staging-pgbouncer-{name}"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/NetworkELB", metric)
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (comparison, threshold)
        assert alarm["TreatMissingData"] == missing
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims == expected_dimensions, name


def test_prometheus_scrape_rules(applied: Applied) -> None:
    """Ops -> PgBouncer hosts on 9100 (node exporter) and 8008 (/metrics): by security group."""
    ec2 = boto3.client("ec2", **applied.moto.client_kwargs())
    groups = {
        g["GroupName"]: g["GroupId"]
        for g in ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [applied.outputs["vpc_id"]["value"]]}]
        )["SecurityGroups"]
    }
    pgbouncer, ops = groups["dbtier-staging-pgbouncer"], groups["dbtier-staging-ops"]
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [pgbouncer, ops]}]
    )["SecurityGroupRules"]

    def by_group(group: str, egress: bool) -> set[tuple[int, int, str | None]]:
        return {
            (r["FromPort"], r["ToPort"], r.get("ReferencedGroupInfo", {}).get("GroupId"))
            for r in rules
            if r["GroupId"] == group and r["IsEgress"] == egress
        }

    assert {(9100, 9100, ops), (8008, 8008, ops)} <= by_group(pgbouncer, egress=False)
    assert {(9100, 9100, pgbouncer), (8008, 8008, pgbouncer)} <= by_group(ops, egress=True)
    # nothing reaches the ops host: Prometheus and Alertmanager only by SSM port forwarding
    assert by_group(ops, egress=False) == set()
    for rule in rules:
        assert rule.get("CidrIpv4") != "0.0.0.0/0" or rule["IsEgress"], rule


def test_ops_role_publishes_to_the_alert_topic_only(applied: Applied) -> None:
    topic_arn = applied.outputs["alerts_sns_topic_arn"]["value"]
    iam = boto3.client("iam", **applied.moto.client_kwargs())
    role = applied.outputs["ops_role_arn"]["value"].rsplit("/", 1)[1]
    (policy,) = [
        p
        for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        if p["PolicyName"] == role
    ]
    version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)
    found = statements(document["PolicyVersion"]["Document"])
    sns_statements = [
        s for s in found if any(a.lower().startswith("sns:") for a in as_list(s["Action"]))
    ]
    assert len(sns_statements) == 1, sns_statements
    (publish,) = sns_statements
    assert publish["Effect"] == "Allow"
    assert as_list(publish["Action"]) == ["sns:Publish"]
    assert as_list(publish["Resource"]) == [topic_arn]

    sns = boto3.client("sns", **applied.moto.client_kwargs())
    key_id = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["KmsMasterKeyId"]
    key_arn = boto3.client("kms", **applied.moto.client_kwargs()).describe_key(KeyId=key_id)[
        "KeyMetadata"
    ]["Arn"]
    (key,) = [s for s in found if key_arn in as_list(s["Resource"])]
    assert set(as_list(key["Action"])) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert as_list(key["Resource"]) == [key_arn]
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}}


def test_backup_lifecycle_outlives_the_retention(applied: Applied) -> None:
    """Staging used to expire backups after 14 days while dbtier keeps them 30."""
    retention = applied.outputs["backup_retention_days"]["value"]
    assert retention == 30
    for region, bucket in (
        ("us-east-1", "mockupaws-dbtier-staging-backups"),
        ("eu-west-1", "mockupaws-dbtier-staging-backups-dr"),
    ):
        s3 = boto3.client("s3", **applied.moto.client_kwargs(region))
        (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert rule["Expiration"]["Days"] >= retention + 1, bucket
        assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= retention + 1, bucket


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
    assert v["dbtier_secondary_repository"] == "s3://mockupaws-dbtier-staging-backups-dr/dbtier/"
    assert v["dbtier_secondary_region"] == "eu-west-1"
    assert v["dbtier_retention_days"] == 30
    assert v["postgresql_allowed_cidrs"] == ["10.41.1.0/24", "10.41.2.0/24"]
    assert v["dbtier_vpc_cidr"] == "10.41.0.0/16"
    assert v["dbtier_postgresql_major"] == 15
    assert v["dbtier_rds_restore_prefix"] == "dbtier-staging-pitr-"
    assert (v["pgbouncer_health_port"], v["pgbouncer_health_path"]) == (8008, "/health")
    assert v["ansible_connection"] == "amazon.aws.aws_ssm"
    assert v["ansible_aws_ssm_bucket_name"] == "mockupaws-dbtier-staging-ssm-transfer"
    assert v["ansible_aws_ssm_region"] == "us-east-1"
    assert v["dbtier_alerts_sns_topic_arn"] == applied.outputs["alerts_sns_topic_arn"]["value"]
    assert v["dbtier_alerts_sns_topic_arn"].endswith(":dbtier-staging-alerts")
    assert v["monitoring_node_exporter_port"] == 9100
    ec2 = boto3.client("ec2", **applied.moto.client_kwargs())
    for host in inv["pgbouncer"]["hosts"] + inv["ops"]["hosts"]:
        hv = inv["_meta"]["hostvars"][host]
        assert hv["ansible_host"].startswith("10.41.")
        (reservation,) = ec2.describe_instances(InstanceIds=[hv["ansible_aws_ssm_instance_id"]])[
            "Reservations"
        ]
        assert reservation["Instances"][0]["PrivateIpAddress"] == hv["ansible_host"]

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
