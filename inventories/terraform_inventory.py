#!/usr/bin/env python3
"""Ansible inventory script: Terraform outputs of an environment -> groups and dbtier_* variables.

It reads the `ansible_inventory` output of `terraform/environments/<env>` (see outputs.tf there)
and prints the JSON Ansible expects from an inventory script:

    groups   postgresql (self-managed DB hosts; empty on RDS), pgbouncer, ops; every host has
             ansible_host (private IP) and ansible_aws_ssm_instance_id (its EC2 instance id)
    all:vars dbtier_db_host, dbtier_db_port, dbtier_db_name, dbtier_backup_bucket,
             dbtier_backup_dr_bucket, dbtier_backup_region, dbtier_dr_region, dbtier_kms_key_id,
             dbtier_secondary_repository (s3://<DR bucket>/<prefix>), dbtier_secondary_region,
             dbtier_retention_days, postgresql_allowed_cidrs, dbtier_postgresql_major,
             pgbouncer_health_port, pgbouncer_health_path, dbtier_alerts_sns_topic_arn (the
             SNS topic Alertmanager publishes to), monitoring_node_exporter_port,
             ansible_connection, ansible_aws_ssm_bucket_name, ansible_aws_ssm_region, ...

The variables keep the names Terraform gives them in the output; the script checks that the ones
the roles need are there and have the right shape, and says which one is wrong on one line.

Which environment:
  * DBTIER_ENV=production, or
  * the name of the folder the script is called from: a symlink
    inventories/production/terraform.py -> ../terraform_inventory.py makes
    `ansible-playbook -i inventories/production` use terraform/environments/production.
Where the outputs come from:
  * DBTIER_TF_OUTPUT_JSON=/path/to/file saved from `terraform output -json`, or
  * `terraform -chdir=terraform/environments/<env> output -json` (needs `terraform init` done).

Usage: terraform_inventory.py --list | --host NAME
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("postgresql", "pgbouncer", "ops")
REQUIRED_VARS = (
    "dbtier_db_host",
    "dbtier_db_port",
    "dbtier_db_name",
    "dbtier_backup_bucket",
    "dbtier_backup_dr_bucket",
    "dbtier_backup_region",
    "dbtier_dr_region",
    "dbtier_kms_key_id",
    "dbtier_secondary_repository",
    "dbtier_secondary_region",
    "dbtier_retention_days",
    "postgresql_allowed_cidrs",
    "dbtier_postgresql_major",
    "dbtier_alerts_sns_topic_arn",
)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _cidr_list(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    try:
        return all(isinstance(c, str) and ipaddress.ip_network(c) for c in value)
    except ValueError:
        return False


def _s3_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("s3://") and len(value) > len("s3://")


def _port(value: Any) -> bool:
    return _positive_int(value) and value < 65536


SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")


def _sns_topic_arn(value: Any) -> bool:
    return isinstance(value, str) and SNS_TOPIC_ARN.fullmatch(value) is not None


# variable -> (check, what it must be); only checked when present (REQUIRED_VARS says which must be)
VAR_SHAPES = {
    "dbtier_db_port": (_port, "a TCP port"),
    "dbtier_secondary_repository": (_s3_url, "an s3://bucket/prefix URL"),
    "dbtier_retention_days": (_positive_int, "a positive number of days"),
    "postgresql_allowed_cidrs": (_cidr_list, "a non-empty list of CIDR blocks"),
    "dbtier_postgresql_major": (_positive_int, "a PostgreSQL major version number"),
    "pgbouncer_health_port": (_port, "a TCP port"),
    "dbtier_alerts_sns_topic_arn": (
        _sns_topic_arn,
        "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
    ),
    "monitoring_node_exporter_port": (_port, "a TCP port"),
}


class InventoryError(Exception):
    """A problem worth one line on stderr."""


def environment_name(argv0: str, environ: dict[str, str]) -> str:
    env = environ.get("DBTIER_ENV")
    if env:
        return env
    parent = Path(argv0).parent  # the symlink's folder, not the target's
    if parent.parent.name == "inventories" and parent.name:
        return parent.name
    raise InventoryError(
        "cannot tell the environment: set DBTIER_ENV or call me through inventories/<env>/"
    )


def read_outputs(environ: dict[str, str], argv0: str) -> dict[str, Any]:
    saved = environ.get("DBTIER_TF_OUTPUT_JSON")
    if saved:
        try:
            text = Path(saved).read_text()
        except OSError as exc:
            raise InventoryError(f"cannot read DBTIER_TF_OUTPUT_JSON={saved}: {exc}") from exc
    else:
        env = environment_name(argv0, environ)
        tf_dir = Path(environ.get("DBTIER_TF_DIR", ROOT / "terraform" / "environments" / env))
        if not tf_dir.is_dir():
            raise InventoryError(f"no Terraform environment at {tf_dir}")
        try:
            proc = subprocess.run(
                ["terraform", f"-chdir={tf_dir}", "output", "-json", "-no-color"],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InventoryError(f"terraform output failed: {exc}") from exc
        if proc.returncode != 0:
            raise InventoryError(
                f"terraform output -json in {tf_dir} failed: {_terraform_error(proc.stderr)}"
            )
        text = proc.stdout
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"terraform outputs are not JSON: {exc}") from exc
    if not isinstance(outputs, dict):
        raise InventoryError("terraform outputs are not a JSON object")
    return outputs


def _terraform_error(stderr: str) -> str:
    """The line of terraform's stderr that says what went wrong ("Error: ..."), else the last."""
    lines = [ln.strip(" \u2502\u2575\u2577") for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["no message"])[0 if errors else -1]


def build_inventory(outputs: dict[str, Any]) -> dict[str, Any]:
    """`terraform output -json` -> the --list document."""
    if "ansible_inventory" not in outputs:
        raise InventoryError(
            "terraform outputs hold no ansible_inventory (not applied yet, or the wrong directory)"
        )
    data = outputs["ansible_inventory"].get("value")
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise InventoryError("ansible_inventory output has no groups map")
    variables = dict(data.get("vars") or {})
    missing = [v for v in REQUIRED_VARS if variables.get(v) in (None, "", [])]
    if missing:
        raise InventoryError(f"ansible_inventory output lacks {', '.join(missing)}")
    for name, (check, what) in VAR_SHAPES.items():
        if name in variables and not check(variables[name]):
            raise InventoryError(
                f"ansible_inventory output: {name} = {json.dumps(variables[name])} is not {what}"
            )

    inventory: dict[str, Any] = {
        "_meta": {"hostvars": {}},
        "all": {"children": list(GROUPS), "vars": variables},
    }
    hostvars = inventory["_meta"]["hostvars"]
    for group in GROUPS:
        hosts = data["groups"].get(group) or {}
        if not isinstance(hosts, dict):
            raise InventoryError(f"group {group} in ansible_inventory is not a map of hosts")
        inventory[group] = {"hosts": sorted(hosts)}
        for name, hv in hosts.items():
            hostvars.setdefault(name, {}).update(hv or {})
    return inventory


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="print the whole inventory")
    mode.add_argument("--host", metavar="NAME", help="print one host's variables")
    args = parser.parse_args(argv)
    environ = dict(os.environ if environ is None else environ)
    try:
        inventory = build_inventory(read_outputs(environ, sys.argv[0]))
    except InventoryError as exc:
        print(f"terraform_inventory: {exc}", file=sys.stderr)
        return 1
    if args.list:
        json.dump(inventory, sys.stdout, indent=2, sort_keys=True)
    else:
        json.dump(inventory["_meta"]["hostvars"].get(args.host, {}), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
