#!/usr/bin/python
"""Ansible module pg_scram_verifiers: a thin adapter over dbtier.pgbouncer and dbtier.pgprobe."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_scram_verifiers
short_description: Make PostgreSQL store the stable SCRAM-SHA-256 verifier of each role's password
description:
  - For each user, computes the stable verifier of its (vaulted) password (the salt derived from
    password and user name, see C(dbtier.scram)) and, where the server stores anything else, sets
    it with C(ALTER ROLE ... PASSWORD '<verifier>') as O(login_user). PgBouncer's userlist holds
    the same verifiers, so its SCRAM pass-through works, and the server never sees a plaintext
    password (nor does pg_stat_statements).
  - The comparison needs no superuser. As a superuser (C(postgres) over the Unix socket) it reads
    C(pg_authid). Where C(pg_authid) is not readable (RDS, whose master user is not a superuser)
    it logs in as each user over the network with a SCRAM exchange, which shows the salt and
    iteration count the server stores and proves both keys; the same host, port, database and
    TLS settings are used as for O(login_user).
  - So a rotated password in the vault is set by the privileged login, never by logging in as the
    role with the password it does not have yet.
  - Supports check mode (reports what it would set). Returns no secrets.
version_added: "1.1.0"
author: dbtier
options:
  users:
    description: The roles and their passwords (the roles must exist).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Role name.
        type: str
        required: true
      password:
        description: Its password (vault).
        type: str
        required: true
  iterations:
    description: PBKDF2 iterations of the verifiers (PostgreSQL's default is 4096).
    type: int
    default: 4096
  force:
    description: Set every verifier, whatever the server stores.
    type: bool
    default: false
  login_host:
    description: Host to connect to; empty = the Unix socket directory O(login_unix_socket).
    type: str
    default: ""
  login_unix_socket:
    description: Unix socket directory, used when O(login_host) is empty.
    type: str
    default: ""
  login_port:
    description: Port.
    type: int
    default: 5432
  login_user:
    description: >-
      A role allowed to change the users' passwords: C(postgres) (peer, self-managed) or the RDS
      master user (CREATEROLE).
    type: str
    required: true
  login_password:
    description: Password of O(login_user) (empty for peer authentication).
    type: str
    default: ""
  login_db:
    description: Database to connect to (also the one the SCRAM logins name).
    type: str
    default: postgres
  sslmode:
    description: libpq sslmode for the connection and the SCRAM logins.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description: CA bundle for verify-ca/verify-full (the RDS bundle).
    type: str
    default: ""
  connect_timeout:
    description: Seconds to wait for a connection.
    type: int
    default: 10
requirements:
  - psycopg2 or psycopg (3) on the host that runs the module
  - dbtier.scram, dbtier.pgbouncer, dbtier.pgprobe and dbtier.pgdriver (standard library only),
    shipped with the module from the repository's C(src/) (C(module_utils = src) in its ansible.cfg)
notes:
  - A role whose password the server stores as md5, or that authenticates with trust, cannot be
    compared; its verifier is set (and reported as changed) on every run until the server
    authenticates it with SCRAM.
"""

EXAMPLES = r"""
- name: Self-managed - as postgres over the socket (compared in pg_authid)
  pg_scram_verifiers:
    users:
      - {name: mockupaws_app, password: "{{ dbtier_app_password }}"}
    login_unix_socket: /var/run/postgresql
    login_user: postgres
  become: true
  become_user: postgres
  no_log: true

- name: RDS - as the master user (compared by SCRAM logins of the roles)
  pg_scram_verifiers:
    users:
      - {name: mockupaws_app, password: "{{ dbtier_app_password }}"}
    login_host: "{{ dbtier_db_host }}"
    login_user: "{{ master.username }}"
    login_password: "{{ master.password }}"
    login_db: mockupaws
    sslmode: verify-full
    sslrootcert: /etc/dbtier/rds-ca.pem
  no_log: true
"""

RETURN = r"""
updated:
  description: The roles whose verifier was (or, in check mode, would be) set.
  returned: always
  type: list
  elements: str
reasons:
  description: Why each of them was set (no secrets).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.dbtier import pgbouncer, pgdriver, pgprobe
    from ansible.module_utils.dbtier.errors import DbtierError, first_line
except ImportError:
    try:
        from dbtier import pgbouncer, pgdriver, pgprobe
        from dbtier.errors import DbtierError, first_line
    except ImportError:
        pgbouncer = None


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "users": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "required": True, "no_log": True},
                },
            },
            "iterations": {"type": "int", "default": 4096},
            "force": {"type": "bool", "default": False},
            "login_host": {"type": "str", "default": ""},
            "login_unix_socket": {"type": "str", "default": ""},
            "login_port": {"type": "int", "default": 5432},
            "login_user": {"type": "str", "required": True},
            "login_password": {"type": "str", "default": "", "no_log": True},
            "login_db": {"type": "str", "default": "postgres"},
            "sslmode": {
                "type": "str",
                "default": "prefer",
                "choices": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
            },
            "sslrootcert": {"type": "str", "default": ""},
            "connect_timeout": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    if pgbouncer is None:
        module.fail_json(
            msg="pg_scram_verifiers needs the dbtier package: point Ansible's module_utils at the "
            "dbtier repository's src/ (its ansible.cfg does)"
        )
    p = module.params
    host = p["login_host"] or p["login_unix_socket"]
    endpoint = pgprobe.Endpoint(
        host=host or "/var/run/postgresql",
        port=p["login_port"],
        dbname=p["login_db"],
        sslmode=p["sslmode"],
        sslrootcert=p["sslrootcert"],
        timeout=p["connect_timeout"],
    )
    result = {"changed": False, "updated": [], "reasons": {}}
    try:
        entries = pgbouncer.entries_from_users(p["users"], "password", p["iterations"])
        users = [
            {"name": n, "password": u["password"], "verifier": v}
            for (n, v), u in zip(entries, p["users"], strict=True)
        ]
        conn = pgdriver.connect(
            host=host,
            port=p["login_port"],
            dbname=p["login_db"],
            user=p["login_user"],
            password=p["login_password"],
            sslmode=p["sslmode"],
            sslrootcert=p["sslrootcert"],
            connect_timeout=p["connect_timeout"],
        )
        try:

            def probe(name, password, verifier):
                return pgprobe.holds_verifier(endpoint, name, password, verifier)

            todo = pgbouncer.verifiers_to_set(conn, users, probe, force=p["force"])
            verifiers = dict(entries)
            for name, why in todo:
                if not module.check_mode:
                    pgbouncer.set_server_verifier(conn, name, verifiers[name])
                result["updated"].append(name)
                result["reasons"][name] = why
        finally:
            conn.close()
    except DbtierError as exc:
        module.fail_json(msg=str(exc), **result)
    except Exception as exc:  # driver errors: one line, no traceback, no secrets
        module.fail_json(msg=f"PostgreSQL: {first_line(exc)}", **result)
    result["changed"] = bool(result["updated"])
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
