"""Issue 9, end to end: the production path as an operator walks it, on the closest stand-ins.

    terraform apply (staging, against moto_server)
      -> terraform output -json -> inventories/terraform_inventory.py (the real script)
      -> ansible-playbook ansible/site.yml -i inventories/staging (+ a thin test layer)
      -> the application through PgBouncer over TLS, a logical backup in S3 + its DR copy,
         a second run with changed=0, a password rotation, a run without Terraform outputs.

Networking (the hard part): everything runs in ONE podman pod, dbtier-e2e-<id>, so the containers
share one network namespace and talk over 127.0.0.1:
  * moto_server runs in the pod (the host's venv and interpreter bind-mounted read-only into a
    container of the base image), listening on 0.0.0.0 *inside the pod's namespace* and published
    on the host as 127.0.0.1:PORT:PORT, so the controller (terraform, boto3, the inventory script)
    and the containers (dbtier, the rds_master_credentials module) use the same URL,
    http://127.0.0.1:PORT. (A moto_server on the host's loopback is unreachable from a pod; a
    bridge network with DNS needs the dnsname/aardvark plugin, absent here: CNI backend.)
  * the RDS stand-in is a container of the pod running Debian's PostgreSQL 15: master user from
    the Secrets Manager secret Terraform's RDS module manages (manage_master_user_password), not a
    superuser (CREATEROLE, CREATEDB, member of rds_superuser), TLS only (hostssl), reached by the
    endpoint name Terraform outputs: each container's /etc/hosts maps that name to 127.0.0.1 and
    the stand-in's certificate names it, so PgBouncer's verify-full checks the name.
  * the EC2 hosts (pgbouncer-1, pgbouncer-2, ops) are systemd containers of the pod. Sharing one
    network namespace, the second PgBouncer listens on 6433 and its /health on 8009: the only
    per-host difference of the test layer.
The test layer (inventory e2e.yml + extra vars) only maps hosts to containers (podman connection
instead of aws_ssm), points the AWS SDK at moto (endpoint URL; credentials play the instance
profile) and supplies the secrets a vault would (app/owner/health passwords, the client TLS key,
the CA of the stand-in instead of the RDS CA bundle). Everything else comes from Terraform outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.tlsca import CAFiles, make_ca

from .conftest import ROOT, Terraform, copy_tree
from .test_apply_moto import LOCK_TABLE, STATE_BUCKET, backend_config, install_overrides

boto3 = pytest.importorskip("boto3")
psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.terraform, pytest.mark.terraform_apply]

ENVIRONMENT = "staging"
VENV_PATH = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
IMAGE = os.environ.get("DBTIER_BASE_IMAGE", "localhost/dbtier-base:bookworm")
PREFIX = "dbtier-e2e-"
HOSTS = ("dbtier-staging-pgbouncer-1", "dbtier-staging-pgbouncer-2", "dbtier-staging-ops")
PASSWORDS = {
    "dbtier_app_password": "app-pw-1-" + uuid.uuid4().hex[:8],
    "dbtier_migration_password": "owner-pw-" + uuid.uuid4().hex[:8],
    "dbtier_health_password": "health-pw-" + uuid.uuid4().hex[:8],
    "dbtier_monitor_password": "monitor-pw-" + uuid.uuid4().hex[:8],
}
ACCESS_KEY = SECRET_KEY = "testing"


def sh(*cmd: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)[:200]} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-3000:]}",
            pytrace=False,
        )
    return proc


@dataclass
class PodMoto:
    """moto_server inside the pod, published on the host's loopback at the same port."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_kwargs(self, region: str = "us-east-1") -> dict[str, str]:
        return {
            "endpoint_url": self.url,
            "region_name": region,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }


@dataclass
class Stack:
    pod: str
    moto: PodMoto
    base: Path
    containers: dict[str, str] = field(default_factory=dict)  # inventory host -> container
    timings: dict[str, float] = field(default_factory=dict)

    def exec(self, container: str, *cmd: str, check: bool = True, timeout: float = 600):
        return sh("podman", "exec", container, *cmd, check=check, timeout=timeout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_systemd(container: str) -> None:
    for _ in range(90):
        state = sh("podman", "exec", container, "systemctl", "is-system-running", check=False)
        if state.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(1)
    pytest.fail(f"systemd in {container} did not boot: {state.stdout.strip()}", pytrace=False)


@contextlib.contextmanager
def pod_stack() -> Iterator[Stack]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    if sh("podman", "image", "exists", IMAGE, check=False).returncode != 0:
        # podman's config and the base image, as Molecule's create does (built once, reused)
        sh("bash", str(ROOT / "scripts" / "bootstrap-containers.sh"))
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "moto_server").exists():
        pytest.skip("moto_server is not in the venv")
    run_id = uuid.uuid4().hex[:6]
    pod = f"{PREFIX}{run_id}"
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix=pod + "-", dir="/tmp"))
    stack = Stack(pod=pod, moto=PodMoto(port), base=base)
    try:
        sh(
            "podman",
            "pod",
            "create",
            "--name",
            pod,
            "--share",
            "net",
            "--label",
            "app=dbtier-e2e",
            "-p",
            f"127.0.0.1:{port}:{port}",
        )
        # moto: the host's interpreter and venv, read-only (venv python -> the real interpreter)
        real_python = Path(os.path.realpath(sys.executable))
        interp_root = real_python.parents[1]  # e.g. /root/.pyenv/versions/3.11.7
        venv = venv_bin.parent
        sh(
            "podman",
            "run",
            "-d",
            "--pod",
            pod,
            "--name",
            f"{pod}-moto",
            "--stop-timeout",
            "2",
            "-v",
            f"{interp_root}:{interp_root}:ro",
            "-v",
            f"{venv}:{venv}:ro",
            "-e",
            "MOTO_IAM_LOAD_MANAGED_POLICIES=true",
            "-e",
            f"AWS_ACCESS_KEY_ID={ACCESS_KEY}",
            "-e",
            f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
            # 0.0.0.0 of the pod's own network namespace: only the published port reaches it
            IMAGE,
            str(venv_bin / "moto_server"),
            "-H",
            "0.0.0.0",  # noqa: S104
            "-p",
            str(port),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{stack.moto.url}/moto-api/", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    logs = sh("podman", "logs", f"{pod}-moto", check=False)
                    pytest.fail(f"moto_server in the pod does not answer: {logs.stderr[-500:]}")
                time.sleep(0.3)
        for name in (*HOSTS, "rds"):
            container = f"{pod}-{name.removeprefix('dbtier-staging-')}"
            sh(
                "podman",
                "run",
                "-d",
                "--pod",
                pod,
                "--name",
                container,
                "--hostname",
                name,
                "--systemd",
                "always",
                "--stop-timeout",
                "5",
                "--label",
                "app=dbtier-e2e",
                IMAGE,
                "/sbin/init",
            )
            stack.containers[name] = container
        for container in stack.containers.values():
            wait_for_systemd(container)
        yield stack
    finally:
        sh("podman", "pod", "rm", "-f", "-t", "5", pod, check=False, timeout=120)
        if not os.environ.get("DBTIER_E2E_KEEP_LOGS"):  # site-N.log, outputs.json, ...
            shutil.rmtree(base, ignore_errors=True)


def terraform_apply(terraform: Terraform, stack: Stack) -> tuple[Path, dict[str, str], dict]:
    tree = copy_tree(stack.base)
    install_overrides(tree, ENVIRONMENT)
    workdir = tree / "environments" / ENVIRONMENT
    boto3.client("s3", **stack.moto.client_kwargs()).create_bucket(Bucket=STATE_BUCKET)
    boto3.client("dynamodb", **stack.moto.client_kwargs()).create_table(
        TableName=LOCK_TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    env = {
        "AWS_ENDPOINT_URL": stack.moto.url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    backend = backend_config(stack.base / "backend.hcl", stack.moto)  # type: ignore[arg-type]
    terraform.run(
        workdir, "init", "-input=false", f"-backend-config={backend}", timeout=300, extra_env=env
    )
    terraform.run(workdir, "apply", "-input=false", "-auto-approve", timeout=600, extra_env=env)
    outputs = json.loads(terraform.run(workdir, "output", "-json", extra_env=env).stdout)
    return workdir, env, outputs


def start_rds_standin(
    stack: Stack, endpoint: str, secret_arn: str, tls: CAFiles
) -> tuple[str, str]:
    """Debian's PostgreSQL 15 shaped like RDS, with the master user of the Terraform secret."""
    sm = boto3.client("secretsmanager", **stack.moto.client_kwargs())
    secret = json.loads(sm.get_secret_value(SecretId=secret_arn)["SecretString"])
    master, password = secret["username"], secret["password"]
    c = stack.containers["rds"]
    stack.exec(
        c,
        "sh",
        "-c",
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get "
        "install -y -q --no-install-recommends postgresql-15 ca-certificates",
        timeout=900,
    )
    conf = "/etc/postgresql/15/main"
    copies = (
        (tls.server_cert, "server.crt"),
        (tls.server_key, "server.key"),
        (tls.ca_cert, "ca.crt"),
    )
    for src, dest in copies:
        sh("podman", "cp", str(src), f"{c}:{conf}/{dest}")
    quoted = password.replace("'", "''")
    sql = stack.base / "rds-master.sql"
    sql.write_text(
        "CREATE ROLE rds_superuser NOLOGIN;\n"
        f"CREATE ROLE {master} LOGIN CREATEROLE CREATEDB IN ROLE rds_superuser"
        f" PASSWORD '{quoted}';\n"
        f"CREATE DATABASE mockupaws OWNER {master};\n"
    )
    sql.chmod(0o644)
    sh("podman", "cp", str(sql), f"{c}:/tmp/rds-master.sql")
    script = f"""set -e
cd {conf}
chown postgres:postgres server.crt server.key ca.crt && chmod 600 server.key
cat > conf.d/rds.conf <<'EOF'
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '{conf}/server.crt'
ssl_key_file = '{conf}/server.key'
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'pg_stat_statements'
EOF
cat > pg_hba.conf <<'EOF'
local all postgres peer
hostssl all all 127.0.0.1/32 scram-sha-256
EOF
systemctl restart postgresql@15-main
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -f /tmp/rds-master.sql && rm /tmp/rds-master.sql
# rds_superuser may create pg_stat_statements on RDS; only a superuser may here
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -d mockupaws \
  -qc "CREATE EXTENSION pg_stat_statements"
"""
    stack.exec(c, "sh", "-c", script)
    # every container resolves the endpoint name to the pod's loopback
    for container in stack.containers.values():
        stack.exec(container, "sh", "-c", f"echo '127.0.0.1 {endpoint}' >> /etc/hosts")
        # the instance profile's stand-in: the AWS SDK of root finds these credentials
        stack.exec(
            container,
            "sh",
            "-c",
            "mkdir -p /root/.aws && printf "
            f"'[default]\\naws_access_key_id = {ACCESS_KEY}\\n"
            f"aws_secret_access_key = {SECRET_KEY}\\n' > /root/.aws/credentials",
        )
    return master, password


def write_test_layer(stack: Stack, tls: CAFiles, client_tls: CAFiles, passwords: dict) -> Path:
    """The inventory layer (hosts -> containers) and the extra vars (what a vault would hold)."""
    layer = stack.base / "e2e-inventory.yml"
    hosts = {
        name: {
            "ansible_connection": "containers.podman.podman",
            "ansible_host": container,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_user": "root",  # Terraform says ssm-user (the SSM session user)
        }
        for name, container in stack.containers.items()
        if name in HOSTS
    }
    hosts["dbtier-staging-pgbouncer-2"] |= {
        "pgbouncer_listen_port": 6433,
        "pgbouncer_health_port": 8009,
    }
    # one network namespace: a node exporter port per host, every exporter on the loopback
    for port, name in enumerate(HOSTS, start=9100):
        hosts[name] |= {
            "monitoring_node_exporter_port": port,
            "monitoring_scrape_address": "127.0.0.1",
        }
    layer.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))
    extra = stack.base / "e2e-vars.json"
    extra.write_text(
        json.dumps(
            {
                **passwords,
                "dbtier_db_ca_bundle": tls.ca_cert.read_text(),
                "pgbouncer_client_tls_cert": client_tls.server_cert.read_text(),
                "pgbouncer_client_tls_key": client_tls.server_key.read_text(),
                "dbtier_aws_endpoint_url": stack.moto.url,
                "database_bootstrap_aws_endpoint_url": stack.moto.url,
                "dbtier_job_environment": {
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                },
                # Alertmanager publishes to Terraform's alerts topic on moto (an instance role
                # would sign in production), and alerts fire within seconds, not minutes
                "monitoring_alertmanager_sns_api_url": stack.moto.url,
                "monitoring_alertmanager_environment": {
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                },
                "monitoring_scrape_interval": "5s",
                "monitoring_evaluation_interval": "5s",
                "monitoring_alertmanager_group_wait": "5s",
                "monitoring_alert_for": {name: "0s" for name in alert_names()},
            },
            indent=2,
        )
    )
    return extra


def alert_names() -> list[str]:
    """Every alert of roles/monitoring (the keys of monitoring_alert_for)."""
    defaults = ROOT / "ansible/roles/monitoring/defaults/main/alerts.yml"
    return sorted(yaml.safe_load(defaults.read_text())["monitoring_alert_for"])


def subscribe_queue(stack: Stack, topic_arn: str) -> tuple[object, str]:
    """An SQS queue on moto subscribed to the alerts topic: what SNS delivers, the test reads."""
    sqs = boto3.client("sqs", **stack.moto.client_kwargs())
    url = sqs.create_queue(QueueName="e2e-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns = boto3.client("sns", **stack.moto.client_kwargs())
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return sqs, url


def wait_for_alert_notification(sqs, url: str, timeout: float = 180) -> dict:
    """The first message Alertmanager published to the topic, as SNS delivered it to SQS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=5)
        for message in got.get("Messages", []):
            return json.loads(message["Body"])
    pytest.fail(f"no alert reached the SNS topic within {timeout:.0f} s", pytrace=False)


def site(
    stack: Stack, outputs_json: Path | None, extra: Path, *more: str, check: bool = True
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PYTHONPATH=str(ROOT / "src"),
        PATH=VENV_PATH,  # ansible-playbook and the tools it runs, from the venv
    )
    env.pop("DBTIER_TF_OUTPUT_JSON", None)
    if outputs_json is not None:
        env["DBTIER_TF_OUTPUT_JSON"] = str(outputs_json)
    runs = sum(1 for k in stack.timings if k.startswith("site.yml"))
    name = f"site.yml #{runs + 1}"
    log = stack.base / f"site-{runs + 1}.log"  # streamed: tail -f it while the test runs
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        str(ROOT / "ansible" / "site.yml"),
    ]
    cmd += [
        "-i",
        str(ROOT / "inventories" / ENVIRONMENT),
        "-i",
        str(stack.base / "e2e-inventory.yml"),
    ]
    cmd += ["-e", f"@{extra}", *more]
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800, check=False
        )
    stack.timings[name] = time.monotonic() - started
    proc.stdout = log.read_text()
    if check and proc.returncode != 0:
        failed = [ln for ln in proc.stdout.splitlines() if "fatal:" in ln or "FAILED" in ln]
        pytest.fail(
            f"site.yml exited {proc.returncode}: {' | '.join(failed)[-3000:]}\n"
            f"{proc.stdout[-4000:]}",
            pytrace=False,
        )
    return proc


def recap_changed(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\S+)\s*: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    }


def connect_through_pgbouncer(stack: Stack, tls: CAFiles, password: str) -> tuple[int, str]:
    """psql from the ops container to each PgBouncer, TLS required, as the app user."""
    ops = stack.containers["dbtier-staging-ops"]
    results = []
    for port in (6432, 6433):
        proc = stack.exec(
            ops,
            "env",
            f"PGPASSWORD={password}",
            "psql",
            f"host=127.0.0.1 port={port} dbname=mockupaws user=mockupaws_app "
            "sslmode=require connect_timeout=5",
            "-Atc",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            check=False,
        )
        results.append((proc.returncode, (proc.stdout + proc.stderr).strip()))
    worst = max(results)
    return worst


def test_staging_end_to_end(terraform: Terraform) -> None:
    started = time.monotonic()
    with pod_stack() as stack:
        t = time.monotonic()
        _, _, outputs = terraform_apply(terraform, stack)
        stack.timings["terraform init+apply"] = time.monotonic() - t
        saved = stack.base / "outputs.json"
        saved.write_text(json.dumps(outputs))
        inv = json.loads(
            sh(
                sys.executable,
                str(ROOT / "inventories" / "terraform_inventory.py"),
                "--list",
                env=dict(os.environ, DBTIER_TF_OUTPUT_JSON=str(saved)),
            ).stdout
        )
        v = inv["all"]["vars"]
        assert sorted(inv["pgbouncer"]["hosts"] + inv["ops"]["hosts"]) == sorted(HOSTS), inv
        endpoint, secret_arn = v["dbtier_db_host"], v["dbtier_db_master_secret_arn"]
        # moto limitation, not a tier change: moto evaluates a conditional Deny whose condition
        # does not match (aws:SecureTransport=false, s3:TlsVersion<1.2: moto knows neither key)
        # as DENIED, so the buckets' TLS-only policies refuse every request. The test checks the
        # policies Terraform applied, then removes them from moto's copy only.
        for bucket, region in (
            (v["dbtier_backup_bucket"], v["dbtier_backup_region"]),
            (v["dbtier_backup_dr_bucket"], v["dbtier_dr_region"]),
        ):
            s3 = boto3.client("s3", **stack.moto.client_kwargs(region))
            policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
            assert "aws:SecureTransport" in policy, f"{bucket} policy: {policy}"
            s3.delete_bucket_policy(Bucket=bucket)

        t = time.monotonic()
        tls = make_ca(stack.base / "rds-tls", dns_names=(endpoint,))
        client_tls = make_ca(stack.base / "client-tls")
        master, master_pw = start_rds_standin(stack, endpoint, secret_arn, tls)
        # RDS-shaped: the master user (Terraform's secret) logs in by name over TLS only, is no
        # superuser, and cannot read pg_authid
        probe = stack.exec(
            stack.containers["rds"], "env", f"PGPASSWORD={master_pw}", "psql",
            f"host={endpoint} dbname=mockupaws user={master} sslmode=verify-full "
            "sslrootcert=/etc/postgresql/15/main/ca.crt",
            "-Atc", "SELECT rolsuper, rolcreaterole, pg_has_role('rds_superuser', 'MEMBER'),"
            " has_table_privilege('pg_authid', 'SELECT')"
            " FROM pg_roles WHERE rolname = current_user",
            check=False,
        )  # fmt: skip
        assert probe.stdout.strip() == "f|t|t|f", f"RDS stand-in: {probe.stdout}{probe.stderr}"
        stack.timings["rds stand-in"] = time.monotonic() - t
        extra = write_test_layer(stack, tls, client_tls, PASSWORDS)
        sqs, alerts_queue = subscribe_queue(stack, v["dbtier_alerts_sns_topic_arn"])

        # 1. the first run configures everything
        site(stack, saved, extra)
        rc, out = connect_through_pgbouncer(stack, tls, PASSWORDS["dbtier_app_password"])
        assert rc == 0 and out.endswith("t"), f"app through PgBouncer over TLS: {out}"

        # 2. a second run changes nothing
        again = site(stack, saved, extra)
        changed = recap_changed(again)
        assert changed and not any(changed.values()), f"second run changed: {changed}"

        # the postgres exporter on the ops host reads the RDS-shaped server as dbtier_monitor (the
        # stand-in accepts TLS only: pg_up 1 means a TLS login), with the archiver's custom queries
        metrics = stack.exec(
            stack.containers["dbtier-staging-ops"],
            "curl", "-sf", "--max-time", "10", "http://127.0.0.1:9187/metrics",
            check=False,
        )  # fmt: skip
        assert re.search(r"^pg_up 1$", metrics.stdout, re.M), f"postgres exporter: {metrics}"
        assert "dbtier_archiver_failed_count" in metrics.stdout, metrics.stdout[-2000:]
        # an alert reaches on-call through the topic Terraform created: no logical backup was taken
        # yet, so BackupStale fires, and Alertmanager publishes it to SNS (signed, moto's API)
        notification = wait_for_alert_notification(sqs, alerts_queue)
        assert notification.get("TopicArn") == v["dbtier_alerts_sns_topic_arn"], notification
        assert "[FIRING" in notification.get("Subject", ""), notification
        assert "alertname" in notification.get("Message", ""), notification

        # 3. rotate the app password: the new one works through PgBouncer, the old is refused
        old = PASSWORDS["dbtier_app_password"]
        new = "app-pw-2-" + uuid.uuid4().hex[:8]
        extra2 = write_test_layer(stack, tls, client_tls, {**PASSWORDS, "dbtier_app_password": new})
        site(stack, saved, extra2)
        rc, out = connect_through_pgbouncer(stack, tls, new)
        assert rc == 0 and out.endswith("t"), f"new app password through PgBouncer: {out}"
        rc, out = connect_through_pgbouncer(stack, tls, old)
        assert rc != 0 and "authentication failed" in out, f"old password: {out}"  # PgBouncer: SASL

        # 4. without Terraform outputs (no state in the environment dir): one clear failure
        empty = stack.base / "tf-empty" / "environments" / ENVIRONMENT
        empty.mkdir(parents=True)
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            DBTIER_TF_DIR=str(empty),
            PATH=VENV_PATH,
        )
        env.pop("DBTIER_TF_OUTPUT_JSON", None)
        no_state = sh(
            str(Path(sys.executable).parent / "ansible-playbook"),
            str(ROOT / "ansible" / "site.yml"),
            "-i",
            str(ROOT / "inventories" / ENVIRONMENT),
            "-e",
            f"@{extra}",
            env=env,
            check=False,
        )
        text = no_state.stdout + no_state.stderr
        why = [ln for ln in text.splitlines() if "terraform_inventory:" in ln]
        assert no_state.returncode != 0 and why, f"a run without Terraform state: {text[-2000:]}"
        assert "not applied yet" in why[0] or "terraform output" in why[0], why[0]
        assert "PLAY RECAP" not in text, f"a play ran without Terraform state: {text[-2000:]}"
        # 5. a logical backup from the ops host lands in S3, verifies, and is copied to DR
        # (with Debian 12's botocore on the host: create-if-absent is a signed If-None-Match header)
        ops = stack.containers["dbtier-staging-ops"]
        backup = stack.exec(
            ops, "runuser", "-u", "dbtier", "--", "dbtier-job", "backup", "full", check=False
        )
        assert backup.returncode == 0, f"dbtier-job backup full: {backup.stderr.strip()[-1500:]}"
        verify = stack.exec(
            ops,
            "runuser",
            "-u",
            "dbtier",
            "--",
            "dbtier-job",
            "backup",
            "verify",
            "latest",
            check=False,
        )
        assert verify.returncode == 0, (
            f"dbtier-job backup verify latest: {verify.stderr.strip()[-1500:]}"
        )
        bucket, dr_bucket = v["dbtier_backup_bucket"], v["dbtier_backup_dr_bucket"]
        s3 = boto3.client("s3", **stack.moto.client_kwargs())
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.endswith("manifest.json") for k in keys), f"backup bucket holds {keys}"
        dr = boto3.client("s3", **stack.moto.client_kwargs(v["dbtier_dr_region"]))
        dr_keys = [o["Key"] for o in dr.list_objects_v2(Bucket=dr_bucket).get("Contents", [])]
        assert any(k.endswith("manifest.json") for k in dr_keys), f"DR bucket holds {dr_keys}"

    total = time.monotonic() - started
    print(
        "e2e timings (s):",
        {k: round(x, 1) for k, x in stack.timings.items()},
        "total",
        round(total, 1),
    )
