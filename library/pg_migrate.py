#!/usr/bin/python
"""Ansible module pg_migrate: a thin adapter over `dbtier.migrations`."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_migrate
short_description: Apply or revert dbtier's versioned SQL migrations idempotently
description:
  - Applies (C(state=up)) or reverts (C(state=down)) the migrations of a directory of
    C(NNNN_name.up.sql) / C(NNNN_name.down.sql) files, recording each in the ledger table
    C(dbtier.schema_migrations), under a PostgreSQL advisory lock.
  - All logic lives in the C(dbtier) Python package, which must be importable by the
    interpreter that runs this module (set C(ansible_python_interpreter) to dbtier's venv).
  - Refuses to run when an applied migration's file changed (checksum drift) unless
    O(allow_drift=true).
  - Refuses to apply a file whose version is below the highest applied version (added out of
    order) unless O(out_of_order=true).
  - Supports check mode (reports what would run) and diff mode (applied versions before/after).
version_added: "1.0.0"
author: dbtier maintainers
options:
  dsn:
    description:
      - libpq connection string or URL. Takes precedence over the O(login_*) options.
      - When neither is given, the PG* environment variables of the target host apply.
    type: str
  login_host:
    description: Host of the PostgreSQL server (or PgBouncer is NOT supported; use the server).
    type: str
  login_port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
  login_user:
    description: Role that owns the schema objects.
    type: str
  login_password:
    description: Password of O(login_user).
    type: str
  db:
    description: Database to migrate.
    type: str
  sslmode:
    description: libpq sslmode.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  path:
    description: Directory of migration files on the target host.
    type: path
    required: true
  state:
    description: C(up) applies pending migrations; C(down) reverts those above O(target).
    type: str
    default: up
    choices: [up, down]
  target:
    description:
      - Version to stop at. Default for C(up) is the latest file; C(down) requires it
        (C(0) reverts everything).
    type: int
  allow_drift:
    description: Proceed although applied migration files changed (see C(dbtier migrate repair)).
    type: bool
    default: false
  out_of_order:
    description:
      - Apply pending files whose version is below the highest applied version (for example
        C(0003) added after C(0004) was applied), in version order, together with the others.
      - When false, such files fail the task (exit code 2) and nothing is applied.
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for another run's migration lock before failing.
    type: float
    default: 60
  ddl_lock_timeout:
    description: PostgreSQL C(lock_timeout) for the migration session, for example C(10s).
    type: str
requirements:
  - dbtier (and its dependency psycopg 3) on the target host
"""

EXAMPLES = r"""
- name: Apply all pending migrations
  pg_migrate:
    login_host: db1.internal
    login_user: mockupaws_owner
    login_password: "{{ vault_mockupaws_owner_password }}"
    db: mockupaws
    path: /opt/dbtier/sql
  vars:
    ansible_python_interpreter: /opt/dbtier/venv/bin/python

- name: Revert everything above version 2
  pg_migrate:
    dsn: "postgresql://mockupaws_owner@db1.internal/mockupaws"
    path: /opt/dbtier/sql
    state: down
    target: 2
"""

RETURN = r"""
steps:
  description: Migrations applied or reverted (or that would be, in check mode), in order.
  returned: always
  type: list
  elements: dict
  sample: [{"version": 2, "name": "performance_indexes", "direction": "up",
            "file": "0002_performance_indexes.up.sql", "transactional": false}]
before_version:
  description: Highest applied version before the run.
  returned: always
  type: int
after_version:
  description: Highest applied version after the run (predicted in check mode).
  returned: always
  type: int
rebuilt_indexes:
  description: INVALID indexes (left by a failed CONCURRENTLY build) dropped and rebuilt.
  returned: always
  type: list
  elements: str
exit_code:
  description: dbtier's exit code on failure (2 bad input, 3 drift, 4 lock timeout, 5 unreachable).
  returned: failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from psycopg.conninfo import make_conninfo

    from dbtier import migrations
    from dbtier.errors import DbtierError
except ImportError:  # pragma: no cover - reported through fail_json below
    HAS_DBTIER = False
else:
    HAS_DBTIER = True


def build_dsn(params: dict) -> str:
    if params["dsn"]:
        return params["dsn"]
    parts = {
        "host": params["login_host"],
        "port": params["login_port"] if params["login_host"] else None,
        "user": params["login_user"],
        "password": params["login_password"],
        "dbname": params["db"],
        "sslmode": params["sslmode"],
    }
    return make_conninfo("", **{k: v for k, v in parts.items() if v not in (None, "")})


def versions_text(version: int, steps: list[dict], direction: str, after: bool) -> str:
    lines = [f"version: {version}"]
    if after:
        lines += [f"{s['direction']}: {s['file']}" for s in steps]
    return "\n".join(lines) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "no_log": True},
            "login_host": {"type": "str"},
            "login_port": {"type": "int", "default": 5432},
            "login_user": {"type": "str"},
            "login_password": {"type": "str", "no_log": True},
            "db": {"type": "str"},
            "sslmode": {
                "type": "str",
                "default": "prefer",
                "choices": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
            },
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "default": "up", "choices": ["up", "down"]},
            "target": {"type": "int"},
            "allow_drift": {"type": "bool", "default": False},
            "out_of_order": {"type": "bool", "default": False},
            "lock_timeout": {"type": "float", "default": 60},
            "ddl_lock_timeout": {"type": "str"},
        },
        required_if=[("state", "down", ["target"])],
        supports_check_mode=True,
    )
    if not HAS_DBTIER:
        module.fail_json(msg=missing_required_lib("dbtier"))
    params = module.params
    dsn = build_dsn(params)
    try:
        if module.check_mode:
            result = migrations.plan(
                dsn,
                params["path"],
                params["state"],
                params["target"],
                allow_drift=params["allow_drift"],
                out_of_order=params["out_of_order"],
            )
        else:
            result = migrations.migrate(
                dsn,
                params["path"],
                params["state"],
                params["target"],
                allow_drift=params["allow_drift"],
                out_of_order=params["out_of_order"],
                lock_timeout=params["lock_timeout"],
                ddl_lock_timeout=params["ddl_lock_timeout"],
            )
    except DbtierError as exc:
        module.fail_json(msg=str(exc), exit_code=exc.exit_code)

    output = {
        "changed": result.changed,
        "steps": result.steps,
        "before_version": result.before_version,
        "after_version": result.after_version,
        "rebuilt_indexes": result.rebuilt_indexes,
    }
    if module._diff:
        output["diff"] = {
            "before_header": "applied migrations",
            "after_header": "applied migrations",
            "before": versions_text(result.before_version, [], params["state"], after=False),
            "after": versions_text(result.after_version, result.steps, params["state"], True),
        }
    module.exit_json(**output)


if __name__ == "__main__":
    main()
