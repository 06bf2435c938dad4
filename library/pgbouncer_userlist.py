#!/usr/bin/python
"""Ansible module pgbouncer_userlist: a thin adapter over `dbtier.scram` and `dbtier.pgbouncer`."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbouncer_userlist
short_description: Write a PgBouncer userlist.txt holding SCRAM-SHA-256 verifiers only
description:
  - Writes PgBouncer's C(auth_file) with one C("user" "SCRAM-SHA-256$...") line per user. Plaintext
    passwords are never written.
  - I(source=server) reads the verifiers PostgreSQL stores in C(pg_authid) (self-managed PostgreSQL;
    needs a superuser connection, typically the Unix socket as C(postgres) on the database host).
    Without I(path) the module only returns them (use C(no_log)), so that a second call with
    I(source=verifier) on the PgBouncer host writes the file there.
  - I(source=password) computes the verifiers from the (vaulted) passwords with a salt derived
    from the password and the user name, so a rerun computes the same verifier and changes nothing.
    With I(set_on_server=true) it also runs C(ALTER ROLE ... PASSWORD '<verifier>') as
    I(login_user) (the RDS master user, or postgres) so PostgreSQL stores exactly that verifier;
    PgBouncer then passes the client's SCRAM proof through to the server. Only roles whose stored
    verifier differs are updated: compared in C(pg_authid), or where that is not readable (RDS) by
    a SCRAM login of the role (see the pg_scram_verifiers module, which does this alone).
    I(login_user) is required: a role cannot log in with a password it does not have yet, so the
    role itself cannot set a rotated password.
  - I(source=verifier) writes verifiers given by the caller.
  - Supports check mode and diff; the diff masks the verifiers.
version_added: "1.0.0"
author: dbtier
options:
  path:
    description: The userlist file to write. Omit it to only return the verifiers.
    type: path
  users:
    description: The users to list, in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Role name.
        type: str
        required: true
      password:
        description: Password, for I(source=password).
        type: str
      verifier:
        description: A C(SCRAM-SHA-256$...) verifier, for I(source=verifier).
        type: str
  source:
    description: Where the verifiers come from.
    type: str
    choices: [server, password, verifier]
    default: server
  iterations:
    description: PBKDF2 iterations for computed verifiers (PostgreSQL's default is 4096).
    type: int
    default: 4096
  set_on_server:
    description: With I(source=password), store the computed verifier on the server with ALTER ROLE.
    type: bool
    default: false
  force_set_on_server:
    description: Run the ALTER ROLE even when the server already stores the verifier.
    type: bool
    default: false
  login_host:
    description: Host to connect to (empty = the Unix socket in I(login_unix_socket)).
    type: str
    default: ""
  login_port:
    description: Port.
    type: int
    default: 5432
  login_unix_socket:
    description: Unix socket directory, used when I(login_host) is empty.
    type: str
    default: ""
  login_user:
    description:
      - Role to connect as. For I(source=server) a superuser. For I(set_on_server) (required) a role
        allowed to change the users' passwords (the RDS master user, postgres).
    type: str
    default: ""
  login_password:
    description: Password of I(login_user).
    type: str
    default: ""
  login_db:
    description: Database to connect to.
    type: str
    default: postgres
  sslmode:
    description: libpq sslmode of the connections (I(source=server), I(set_on_server)).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description: CA bundle for I(sslmode) verify-ca/verify-full.
    type: str
    default: ""
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
extends_documentation_fragment: [files]
requirements:
  - psycopg2 or psycopg (3) on the host that connects to PostgreSQL
  - dbtier.scram and dbtier.pgbouncer (standard library only), which Ansible ships with the module
    from the repository's C(src/) (C(module_utils = src) in its ansible.cfg), or dbtier installed
    for the interpreter
notes:
  - The computed salt is PBKDF2-HMAC-SHA256(password, "dbtier-scram-salt:" + user, iterations),
    so it costs as much to brute-force as the verifier itself and reveals nothing more.
  - A thin adapter over C(dbtier.scram) (SASLprep, verifiers, stable salt) and C(dbtier.pgbouncer)
    (userlist text, verifiers on the server).
"""

EXAMPLES = r"""
- name: Read the verifiers on the self-managed database host
  pgbouncer_userlist:
    users: [{name: mockupaws_app}]
    source: server
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  delegate_to: db1
  register: verifiers
  no_log: true

- name: Write them on the PgBouncer host
  pgbouncer_userlist:
    path: /etc/pgbouncer/userlist.txt
    users: "{{ verifiers.users }}"
    source: verifier
    owner: postgres
    group: postgres
    mode: "0640"

- name: RDS - compute stable verifiers from vaulted passwords and set them on the server
  pgbouncer_userlist:
    path: /etc/pgbouncer/userlist.txt
    users:
      - {name: mockupaws_app, password: "{{ dbtier_app_password }}"}
    source: password
    set_on_server: true
    login_host: "{{ dbtier_db_host }}"
    login_user: "{{ rds_master.username }}"
    login_password: "{{ rds_master.password }}"
    login_db: mockupaws
    sslmode: require
"""

RETURN = r"""
users:
  description: Names and verifiers (only when I(path) is omitted; register it with no_log).
  returned: when path is omitted
  type: list
  elements: dict
  sample: [{name: mockupaws_app, verifier: "SCRAM-SHA-256$4096:...$...:..."}]
names:
  description: The user names in the file.
  returned: always
  type: list
  elements: str
server_updated:
  description: Roles whose verifier was set on the server with ALTER ROLE.
  returned: always
  type: list
  elements: str
"""

import os
import sys
import tempfile
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

# The logic lives in the dbtier package. Ansible ships dbtier.scram and dbtier.pgbouncer (standard
# library only) with the module from the repository's src/ (module_utils = src in ansible.cfg), so
# PgBouncer hosts need no dbtier installed; an interpreter that has dbtier installed also works.
try:
    from ansible.module_utils.dbtier import pgbouncer, pgdriver, pgprobe
    from ansible.module_utils.dbtier.errors import DbtierError, first_line
except ImportError:
    try:
        from dbtier import pgbouncer, pgdriver, pgprobe
        from dbtier.errors import DbtierError, first_line
    except ImportError:
        pgbouncer = None

MISSING_DBTIER = (
    "pgbouncer_userlist needs the dbtier package (dbtier.pgbouncer, dbtier.scram): point Ansible's "
    "module_utils at the dbtier repository's src/ (its ansible.cfg does) or install dbtier for {}"
)


def _connect(params: dict, user: str, password: str):
    return pgdriver.connect(
        host=params["login_host"] or params["login_unix_socket"],
        port=params["login_port"],
        dbname=params["login_db"],
        user=user,
        password=password,
        sslmode=params["sslmode"],
        sslrootcert=params["sslrootcert"],
        connect_timeout=params["connect_timeout"],
        application_name="pgbouncer_userlist",
    )


def build_entries(params: dict) -> list[tuple[str, str]]:
    names = [u["name"] for u in params["users"]]
    if not names:
        raise DbtierError("users: at least one user is required")
    if params["source"] != "server":
        return pgbouncer.entries_from_users(params["users"], params["source"], params["iterations"])
    conn = _connect(params, params["login_user"], params["login_password"])
    try:
        verifiers = pgbouncer.read_server_verifiers(conn, names)
    finally:
        conn.close()
    return [(n, verifiers[n]) for n in names]


def set_on_server(params: dict, entries: list[tuple[str, str]], check_mode: bool) -> list[str]:
    """As login_user: set the verifiers the server does not store yet; returns those roles."""
    passwords = {u["name"]: u["password"] for u in params["users"]}
    users = [{"name": n, "password": passwords[n], "verifier": v} for n, v in entries]
    endpoint = pgprobe.Endpoint(
        host=params["login_host"] or params["login_unix_socket"] or "/var/run/postgresql",
        port=params["login_port"],
        dbname=params["login_db"],
        sslmode=params["sslmode"],
        sslrootcert=params["sslrootcert"],
        timeout=params["connect_timeout"],
    )
    conn = _connect(params, params["login_user"], params["login_password"])
    try:
        todo = pgbouncer.verifiers_to_set(
            conn,
            users,
            lambda n, pw, v: pgprobe.holds_verifier(endpoint, n, pw, v),
            force=params["force_set_on_server"],
        )
        verifiers = dict(entries)
        for name, _why in todo:
            if not check_mode:
                pgbouncer.set_server_verifier(conn, name, verifiers[name])
    finally:
        conn.close()
    return [name for name, _why in todo]


def write_atomically(module: AnsibleModule, path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".userlist.", dir=str(Path(path).parent))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        Path(tmp).chmod(0o600)
        module.atomic_move(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "users": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "no_log": True},
                    "verifier": {"type": "str", "no_log": True},
                },
            },
            "source": {
                "type": "str",
                "choices": ["server", "password", "verifier"],
                "default": "server",
            },
            "iterations": {"type": "int", "default": 4096},
            "set_on_server": {"type": "bool", "default": False},
            "force_set_on_server": {"type": "bool", "default": False},
            "login_host": {"type": "str", "default": ""},
            "login_port": {"type": "int", "default": 5432},
            "login_unix_socket": {"type": "str", "default": ""},
            "login_user": {"type": "str", "default": ""},
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
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if pgbouncer is None:
        module.fail_json(msg=MISSING_DBTIER.format(sys.executable))
    params = module.params
    if params["set_on_server"] and params["source"] != "password":
        module.fail_json(msg="set_on_server: only meaningful with source=password")
    if params["set_on_server"] and not params["login_user"]:
        module.fail_json(
            msg="set_on_server needs login_user (and login_password): a role allowed to change "
            "the users' passwords, the RDS master user or postgres; a role cannot log in with a "
            "password it does not have yet"
        )
    try:
        entries = build_entries(params)
        new_text = pgbouncer.render_userlist(entries)
    except DbtierError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # driver errors: one line, no traceback, no secrets
        module.fail_json(msg=f"PostgreSQL: {first_line(exc)}")

    result = {"changed": False, "names": [n for n, _ in entries], "server_updated": []}
    path = params["path"]
    if not path:
        result["users"] = [{"name": n, "verifier": v} for n, v in entries]
        module.exit_json(**result)

    old_text = Path(path).read_text() if Path(path).exists() else ""

    if params["set_on_server"]:
        try:
            result["server_updated"] = set_on_server(params, entries, module.check_mode)
        except DbtierError as exc:
            module.fail_json(msg=str(exc))
        except Exception as exc:
            module.fail_json(msg=f"setting verifiers on the server: {first_line(exc)}")
        result["changed"] = bool(result["server_updated"])

    if old_text != new_text:
        result["changed"] = True
        if module._diff:
            result["diff"] = {
                "before_header": path,
                "after_header": path,
                "before": pgbouncer.mask(old_text),
                "after": pgbouncer.mask(new_text),
            }
        if not module.check_mode:
            write_atomically(module, path, new_text)

    file_args = module.load_file_common_arguments(params)
    if not module.check_mode or Path(path).exists():
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
