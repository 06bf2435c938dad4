#!/usr/bin/python
"""Ansible module rds_master_credentials: a thin adapter over `dbtier.awssecret`."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rds_master_credentials
short_description: Read the RDS master user's name and password from its Secrets Manager secret
description:
  - Reads the secret RDS manages for an instance with C(manage_master_user_password) (a JSON
    document with C(username) and C(password)) on the managed host, with that host's AWS
    identity: the ops host's instance role may read that one secret, the controller need not.
  - Read only; supports check mode. Use C(no_log) on the task: the password is returned.
version_added: "1.1.0"
author: dbtier
options:
  secret_id:
    description: >-
      ARN (or name) of the secret; Terraform's inventory has it as
      C(dbtier_db_master_secret_arn).
    type: str
    required: true
  region:
    description: AWS region; default the one in the ARN, else the host's AWS configuration.
    type: str
    default: ""
  endpoint_url:
    description: Secrets Manager endpoint override (tests against moto_server, VPC endpoints).
    type: str
    default: ""
requirements:
  - boto3 on the host (Debian python3-boto3; roles/dbtier installs it on the ops host)
  - dbtier.awssecret, shipped with the module from the repository's C(src/) (C(module_utils = src))
"""

EXAMPLES = r"""
- name: Read the RDS master credentials on the ops host
  rds_master_credentials:
    secret_id: "{{ dbtier_db_master_secret_arn }}"
  register: rds_master
  no_log: true
"""

RETURN = r"""
username:
  description: The master user's name.
  returned: success
  type: str
password:
  description: Its password.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.dbtier import awssecret
    from ansible.module_utils.dbtier.errors import DbtierError
except ImportError:
    try:
        from dbtier import awssecret
        from dbtier.errors import DbtierError
    except ImportError:
        awssecret = None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "secret_id": {"type": "str", "required": True},
            "region": {"type": "str", "default": ""},
            "endpoint_url": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    if awssecret is None:
        module.fail_json(
            msg="rds_master_credentials needs the dbtier package: point Ansible's module_utils "
            "at the dbtier repository's src/ (its ansible.cfg does)"
        )
    p = module.params
    try:
        credentials = awssecret.read_credentials(
            p["secret_id"], region=p["region"], endpoint_url=p["endpoint_url"]
        )
    except DbtierError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **credentials)


if __name__ == "__main__":
    main()
