"""dbtier backup / restore against S3, KMS and RDS APIs served by a real moto_server on loopback."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from dbtier import migrations, sampledata

from .conftest import SERVER_DBTIER, SQL_DIR, fake_segment, fingerprints, run_dbtier
from .support.moto_server import ACCESS_KEY, SECRET_KEY, MotoServer, free_port, moto_server_binary

pytestmark = pytest.mark.skipif(moto_server_binary() is None, reason="moto_server not installed")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, tmp_path: Path) -> dict[str, Any]:
    """Buckets in two regions and a KMS key; the environment a dbtier process needs for them."""
    s3 = boto3.client("s3", **moto.client_kwargs())
    s3_dr = boto3.client("s3", **moto.client_kwargs("eu-west-1"))
    primary, dr = f"backups-{uuid.uuid4().hex[:8]}", f"backups-dr-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=primary)
    s3_dr.create_bucket(Bucket=dr, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kms = boto3.client("kms", **moto.client_kwargs())
    key = kms.create_key(Description="dbtier backups")["KeyMetadata"]
    alias = f"alias/dbtier-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "DBTIER_CONFIG": str(tmp_path / "dbtier.toml"),
        "DBTIER_AWS_ENDPOINT_URL": moto.url,
        "BACKUP_REGION": "us-east-1",
        "BACKUP_REPOSITORY": f"s3://{primary}/dbtier",
        "BACKUP_STORAGE_CLASS": "STANDARD_IA",
        "BACKUP_SECONDARY_REGION": "eu-west-1",
        "DBTIER_MASTER_KEY_SPEC": f"kms:{alias}",
        "DBTIER_KMS_REGION": "us-east-1",  # the key stays in the primary region
        "DBTIER_METRICS_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "dbtier.toml").write_text("# settings come from the environment\n")
    return {"env": env, "s3": s3, "s3_dr": s3_dr, "primary": primary, "dr": dr, "moto": moto}


def cli(aws: dict[str, Any], *args: str, **env: str):
    return run_dbtier(*args, env={**aws["env"], **env}, timeout=300)


@pytest.fixture
def source_db(database: str) -> str:
    migrations.migrate(database, SQL_DIR)
    sampledata.load(
        database,
        sampledata.SampleSize(scenarios=8, logs_per_scenario=100, metrics_per_scenario=50),
    )
    return database


def keys_of(client: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_kms_backup_dr_copy_and_restore_from_the_dr_bucket(
    source_db: str, aws: dict[str, Any]
) -> None:
    before = fingerprints(source_db)
    made = cli(aws, "backup", "full", "--json", "--secondary", f"s3://{aws['dr']}/dbtier",
               DATABASE_URL=source_db)  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    backup_id = result["backup_id"]
    assert result["dr"] == {"mode": "copied", "secondary": f"s3://{aws['dr']}/dbtier", "objects": 2}

    expected = [f"dbtier/backups/{backup_id}/dump.pgc.zst.enc",
                f"dbtier/backups/{backup_id}/manifest.json",
                "dbtier/repository.json"]  # fmt: skip
    assert keys_of(aws["s3"], aws["primary"]) == expected
    assert keys_of(aws["s3_dr"], aws["dr"]) == expected  # the DR copy is bound to the key too
    head = aws["s3"].head_object(Bucket=aws["primary"], Key=expected[0])
    assert head.get("StorageClass") == "STANDARD_IA"
    manifest = json.loads(
        aws["s3"].get_object(Bucket=aws["primary"], Key=expected[1])["Body"].read()
    )["body"]
    assert manifest["encryption"]["data_key"]["provider"] == "kms"
    assert manifest["objects"][0]["size"] == head["ContentLength"]

    # The DR copy stands on its own: list, verify and restore with the DR bucket only.
    dr_repo = f"s3://{aws['dr']}/dbtier"
    listed = cli(aws, "backup", "list", "--json", "--repo", dr_repo, "--region", "eu-west-1")
    assert [b["id"] for b in json.loads(listed.stdout)["backups"]] == [backup_id]
    verified = cli(aws, "backup", "verify", backup_id, "--repo", dr_repo, "--region", "eu-west-1")
    assert verified.returncode == 0, verified.stderr

    target = f"{source_db.rsplit('/', 1)[1]}_dr"
    restored = cli(aws, "restore", "logical", f"{dr_repo}/backups/{backup_id}",
                   "--target-db", target, "--region", "eu-west-1", "--json",
                   DATABASE_URL=source_db)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    copy_dsn = source_db.rsplit("/", 1)[0] + "/" + target
    try:
        assert fingerprints(copy_dsn) == before
    finally:
        with psycopg.connect(source_db.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_replication_check_waits_for_delivery_and_reports_missing(
    source_db: str, aws: dict[str, Any]
) -> None:
    dr_repo = f"s3://{aws['dr']}/dbtier"
    # Nothing replicates: the backup is kept, the job fails naming what is missing.
    lonely = cli(aws, "backup", "full", "--secondary", dr_repo, "--check-replication",
                 BACKUP_REPLICATION_WAIT="1", DATABASE_URL=source_db)  # fmt: skip
    assert lonely.returncode == 1
    assert "replication has not delivered them within 1s" in lonely.stderr.splitlines()[-1]

    # A "replicator" copies every new object to the DR bucket, as S3 replication would.
    stop = threading.Event()

    def replicate() -> None:
        while not stop.is_set():
            for key in set(keys_of(aws["s3"], aws["primary"])) - set(
                keys_of(aws["s3_dr"], aws["dr"])
            ):
                aws["s3_dr"].copy_object(
                    Bucket=aws["dr"], Key=key, CopySource={"Bucket": aws["primary"], "Key": key}
                )
            time.sleep(0.5)

    replicator = threading.Thread(target=replicate, daemon=True)
    replicator.start()
    try:
        checked = cli(aws, "backup", "full", "--json", "--secondary", dr_repo,
                      "--check-replication", BACKUP_REPLICATION_WAIT="60",
                      DATABASE_URL=source_db)  # fmt: skip
    finally:
        stop.set()
        replicator.join()
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["dr"]["mode"] == "replication-checked"


def test_unreachable_s3_is_one_clear_line(source_db: str, aws: dict[str, Any]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = cli(aws, "backup", "full", DATABASE_URL=source_db, DBTIER_AWS_ENDPOINT_URL=dead)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dbtier: error:") and "127.0.0.1" in last, proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 120
    with psycopg.connect(source_db) as conn:  # the failure is on record
        status = conn.execute("SELECT status FROM backup_history ORDER BY id DESC").fetchone()
    assert status is None or status[0] == "failed"


def test_tampered_s3_object_fails_verify_and_restore(source_db: str, aws: dict[str, Any]) -> None:
    made = cli(aws, "backup", "full", "--json", DATABASE_URL=source_db)
    backup_id = json.loads(made.stdout)["backup_id"]
    key = f"dbtier/backups/{backup_id}/dump.pgc.zst.enc"
    body = bytearray(aws["s3"].get_object(Bucket=aws["primary"], Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    aws["s3"].put_object(Bucket=aws["primary"], Key=key, Body=bytes(body))
    verified = cli(aws, "backup", "verify", backup_id)
    assert verified.returncode != 0 and "dump.pgc.zst.enc" in verified.stderr.splitlines()[-1]
    restored = cli(
        aws, "restore", "logical", backup_id, "--target-db", "never_created", DATABASE_URL=source_db
    )
    assert restored.returncode != 0
    with psycopg.connect(source_db) as conn:
        exists = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'never_created%'"
        ).fetchone()[0]
    assert exists == 0


# ---------------------------------------------------------------------------------- RDS


@pytest.fixture
def rds(aws: dict[str, Any]) -> Any:
    client = boto3.client("rds", **aws["moto"].client_kwargs())
    name = f"mockupaws-{uuid.uuid4().hex[:6]}"
    client.create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass="db.t3.medium",
        Engine="postgres",
        EngineVersion="15.5",
        AllocatedStorage=20,
        MasterUsername="dbadmin",
        MasterUserPassword=uuid.uuid4().hex,
        MultiAZ=True,
        BackupRetentionPeriod=7,
    )
    return client, name


def test_rds_point_in_time_restore_creates_a_new_instance(
    aws: dict[str, Any], rds: tuple[Any, str]
) -> None:
    client, source = rds
    target_time = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(time.time() - 60))
    new = f"{source}-pitr"
    plan = cli(aws, "restore", "rds", "--rds-instance", source, "--new-instance", new,
               "--target-time", target_time, "--dry-run", "--json")  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    request = json.loads(plan.stdout)["request"]
    assert request["TargetDBInstanceIdentifier"] == new and request["MultiAZ"] == "True"
    assert new not in [
        i["DBInstanceIdentifier"] for i in client.describe_db_instances()["DBInstances"]
    ]

    done = cli(aws, "restore", "rds", "--rds-instance", source, "--new-instance", new,
               "--target-time", target_time, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["instance"] == new and result["status"] == "available"
    described = client.describe_db_instances(DBInstanceIdentifier=new)["DBInstances"][0]
    assert described["DBInstanceStatus"] == "available" and described["MultiAZ"] is True


def test_rds_restore_of_an_unknown_instance_fails_clearly(aws: dict[str, Any]) -> None:
    proc = cli(aws, "restore", "rds", "--rds-instance", "no-such-db", "--new-instance", "x",
               "--target-time", "2026-01-01 00:00:00+00")  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dbtier: error:") and "no-such-db" in last


def test_cleanup_aborts_unfinished_multipart_uploads_after_the_grace_period(
    aws: dict[str, Any],
) -> None:
    """A backup killed mid-upload leaves an incomplete multipart upload (invisible, but billed)."""
    s3, bucket = aws["s3"], aws["primary"]
    key = "dbtier/backups/20200101T000000Z-base/base.tar.zst.enc"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                   Body=b"x" * (5 << 20))  # fmt: skip
    # moto reports every upload as initiated in 2010, so the grace period itself is tested on
    # file:// (test_backup_integrity); here: that an unfinished upload is found and aborted.
    done = cli(aws, "backup", "cleanup", "--debris-grace-hours", "0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted_debris"] == [
        "multipart-upload:backups/20200101T000000Z-base/base.tar.zst.enc"
    ]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_create_if_absent_works_with_the_hosts_boto3(aws: dict[str, Any], tmp_path: Path) -> None:
    """Database and ops hosts run Debian 12's python3-boto3 (botocore 1.29, older than S3's
    IfNoneMatch parameter): wal-push's create-if-absent must hold there too, races included."""
    debian = [*shlex.split(SERVER_DBTIER), "wal-push"]
    env = {**os.environ, **aws["env"]}
    probe = ["/usr/bin/python3", "-c", "import botocore; print(botocore.__version__)"]
    version = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()

    def push(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*debian, str(path)], env=env, capture_output=True, text=True,
                              check=False, timeout=120)  # fmt: skip

    first = fake_segment(tmp_path, "000000010000000000000007")
    done = push(first)
    assert done.returncode == 0, f"botocore {version}: {done.stderr}"
    again = push(first)
    assert again.returncode == 0 and "event=wal_push.exists" in again.stderr, again.stderr
    rivals = []
    for n in range(4):
        directory = tmp_path / f"r{n}"
        directory.mkdir()
        rivals.append(fake_segment(directory, "000000010000000000000008"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(push, rivals))
    assert sorted(r.returncode for r in results) == [0, 1, 1, 1], [r.stderr for r in results]
    assert all(
        "already archived with different content" in r.stderr for r in results if r.returncode
    )
