#!/usr/bin/python
"""Ansible module: write PgBouncer's auth_file with SCRAM-SHA-256 verifiers, never plaintext."""

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
    With I(set_on_server=true) it also runs C(ALTER ROLE ... PASSWORD '<verifier>') so PostgreSQL
    (for example RDS, where C(pg_authid) is not readable) stores exactly that verifier; PgBouncer
    then passes the client's SCRAM proof through to the server. The server is only updated when
    the user's line in the file changes (or I(force_set_on_server=true)), because the stored
    verifier cannot be read back on RDS.
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
    description: Run the ALTER ROLE even when the user's line in the file did not change.
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
      - Role to connect as. For I(source=server) a superuser. For I(set_on_server), empty means each
        user connects as itself with its own password (a role may change its own password).
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
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
extends_documentation_fragment: [files]
requirements: [psycopg2 or psycopg (3) on the host that connects to PostgreSQL]
notes:
  - The computed salt is PBKDF2-HMAC-SHA256(password, "dbtier-scram-salt:" + user, iterations),
    so it costs as much to brute-force as the verifier itself and reveals nothing more.
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
    login_db: mockupaws
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

import base64
import hashlib
import hmac
import os
import stringprep
import tempfile
import unicodedata
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

SCRAM_PREFIX = "SCRAM-SHA-256$"
SALT_LEN = 16  # what PostgreSQL uses
HEADER = "; managed by Ansible (pgbouncer_userlist): SCRAM-SHA-256 verifiers only\n"


class UserlistError(Exception):
    """Bad input or a server answer the module cannot use; the message names the problem."""


# --- pure functions (unit-tested in tests/test_pgbouncer_userlist.py) ---------------------------


def saslprep(password: str) -> bytes:
    """SASLprep (RFC 4013) as PostgreSQL applies it: on failure the raw UTF-8 bytes are used."""
    if password.isascii():
        # PostgreSQL skips normalization for pure ASCII (control characters included).
        return password.encode()
    chars = []
    for ch in password:
        if stringprep.in_table_c12(ch):  # non-ASCII space -> SPACE
            chars.append(" ")
        elif stringprep.in_table_b1(ch):  # commonly mapped to nothing
            continue
        else:
            chars.append(ch)
    norm = unicodedata.normalize("NFKC", "".join(chars))
    if not norm:
        return password.encode()
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if any(table(ch) for ch in norm for table in prohibited):
        return password.encode()
    has_ral = any(stringprep.in_table_d1(ch) for ch in norm)
    if has_ral and (
        any(stringprep.in_table_d2(ch) for ch in norm)
        or not stringprep.in_table_d1(norm[0])
        or not stringprep.in_table_d1(norm[-1])
    ):
        return password.encode()
    if any(stringprep.in_table_a1(ch) for ch in norm):
        return password.encode()
    return norm.encode()


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """The verifier PostgreSQL stores for `password` with this salt and iteration count."""
    if iterations < 1:
        raise UserlistError(f"iterations must be positive, got {iterations}")
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"{SCRAM_PREFIX}{iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def stable_salt(username: str, password: str, iterations: int = 4096) -> bytes:
    """A salt that depends only on user and password, costing as much to attack as the verifier."""
    return hashlib.pbkdf2_hmac(
        "sha256", saslprep(password), b"dbtier-scram-salt:" + username.encode(), iterations
    )[:SALT_LEN]


def stable_verifier(username: str, password: str, iterations: int = 4096) -> str:
    """The deterministic verifier for `username` / `password` (same inputs, same output)."""
    if not password:
        raise UserlistError(f"user {username!r}: empty password")
    return scram_sha256_verifier(password, stable_salt(username, password, iterations), iterations)


def parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """(iterations, salt, stored_key, server_key); UserlistError when it is not a SCRAM verifier."""
    if not isinstance(verifier, str) or not verifier.startswith(SCRAM_PREFIX):
        raise UserlistError("not a SCRAM-SHA-256 verifier")
    try:
        head, keys = verifier[len(SCRAM_PREFIX) :].split("$", 1)
        iters, salt = head.split(":", 1)
        stored, server = keys.split(":", 1)
        result = (
            int(iters),
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored, validate=True),
            base64.b64decode(server, validate=True),
        )
    except (ValueError, TypeError) as exc:
        raise UserlistError("malformed SCRAM-SHA-256 verifier") from exc
    if result[0] < 1 or len(result[2]) != 32 or len(result[3]) != 32:
        raise UserlistError("malformed SCRAM-SHA-256 verifier")
    return result


def verify_password(password: str, verifier: str) -> bool:
    """True when `password` matches `verifier` (how a server checks a SCRAM secret)."""
    iterations, salt, _, _ = parse_verifier(verifier)
    return hmac.compare_digest(scram_sha256_verifier(password, salt, iterations), verifier)


def _quote(value: str) -> str:
    if any(ch in value for ch in "\n\r\0"):
        raise UserlistError(f"user name {value!r} contains a line break or NUL")
    return '"' + value.replace('"', '""') + '"'


def render_userlist(entries: list[tuple[str, str]]) -> str:
    """The auth_file text for (name, verifier) pairs; refuses anything but SCRAM verifiers."""
    seen = set()
    lines = [HEADER]
    for name, verifier in entries:
        if name in seen:
            raise UserlistError(f"user {name!r} listed twice")
        seen.add(name)
        try:
            parse_verifier(verifier)
        except UserlistError as exc:
            raise UserlistError(f"user {name!r}: {exc}") from None
        lines.append(f"{_quote(name)} {_quote(verifier)}\n")
    return "".join(lines)


def parse_userlist(text: str) -> dict[str, str]:
    """name -> secret for the lines of an existing auth_file (comments and blanks skipped)."""
    result = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith('"'):
            continue
        fields, buf, i, inside = [], [], 0, False
        while i < len(line):
            ch = line[i]
            if inside:
                if ch == '"' and line[i + 1 : i + 2] == '"':
                    buf.append('"')
                    i += 1
                elif ch == '"':
                    fields.append("".join(buf))
                    buf, inside = [], False
                else:
                    buf.append(ch)
            elif ch == '"':
                inside = True
            i += 1
        if len(fields) >= 2:
            result[fields[0]] = fields[1]
    return result


def mask(text: str) -> str:
    """Userlist text with each verifier replaced by a short fingerprint (for diffs and logs)."""
    out = []
    for line in text.splitlines(keepends=True):
        parsed = parse_userlist(line)
        if parsed:
            ((name, secret),) = parsed.items()
            digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
            out.append(f'{_quote(name)} "<SCRAM-SHA-256 verifier sha256:{digest}>"\n')
        else:
            out.append(line)
    return "".join(out)


# --- database access --------------------------------------------------------------------------


def _connect(params: dict, user: str, password: str):
    kwargs = {
        "dbname": params["login_db"],
        "user": user,
        "port": params["login_port"],
        "connect_timeout": params["connect_timeout"],
        "application_name": "pgbouncer_userlist",
    }
    host = params["login_host"] or params["login_unix_socket"]
    if host:
        kwargs["host"] = host
    if password:
        kwargs["password"] = password
    try:
        import psycopg2  # Debian: python3-psycopg2, what community.postgresql uses too

        conn = psycopg2.connect(**kwargs)
    except ImportError:
        try:
            import psycopg
        except ImportError:
            raise UserlistError(
                "neither psycopg2 nor psycopg is installed on the host running this module"
            ) from None
        conn = psycopg.connect(**kwargs)
    conn.autocommit = True
    return conn


def read_server_verifiers(params: dict, names: list[str]) -> dict[str, str]:
    conn = _connect(params, params["login_user"], params["login_password"])
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
            (list(names),),
        )
        found = dict(cur.fetchall())
    finally:
        conn.close()
    missing = [n for n in names if n not in found]
    if missing:
        raise UserlistError(f"role(s) not found on the server: {', '.join(missing)}")
    for name in names:
        secret = found[name]
        if not secret or not secret.startswith(SCRAM_PREFIX):
            kind = "no password" if not secret else "a non-SCRAM (md5?) password"
            raise UserlistError(
                f"role {name!r} has {kind} on the server; set password_encryption=scram-sha-256 "
                "and reset its password"
            )
    return {n: found[n] for n in names}


def set_server_verifier(params: dict, name: str, password: str, verifier: str) -> None:
    login_user = params["login_user"] or name
    login_password = params["login_password"] if params["login_user"] else password
    conn = _connect(params, login_user, login_password)
    try:
        cur = conn.cursor()
        # The verifier is a literal PostgreSQL recognises as pre-hashed; quote_ident for the name.
        cur.execute(
            "SELECT pg_catalog.quote_ident(%s), pg_catalog.quote_literal(%s)", (name, verifier)
        )
        ident, literal = cur.fetchone()
        cur.execute(f"ALTER ROLE {ident} PASSWORD {literal}")
    finally:
        conn.close()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the module -------------------------------------------------------------------------------


def build_entries(module: AnsibleModule) -> list[tuple[str, str]]:
    params = module.params
    users = params["users"]
    names = [u["name"] for u in users]
    if not names:
        raise UserlistError("users: at least one user is required")
    source = params["source"]
    if source == "server":
        verifiers = read_server_verifiers(params, names)
        return [(n, verifiers[n]) for n in names]
    entries = []
    for user in users:
        if source == "password":
            if not user.get("password"):
                raise UserlistError(f"users: {user['name']!r} has no password (source=password)")
            entries.append(
                (
                    user["name"],
                    stable_verifier(user["name"], user["password"], params["iterations"]),
                )
            )
        else:
            if not user.get("verifier"):
                raise UserlistError(f"users: {user['name']!r} has no verifier (source=verifier)")
            entries.append((user["name"], user["verifier"]))
    return entries


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
            "connect_timeout": {"type": "int", "default": 10},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    if params["set_on_server"] and params["source"] != "password":
        module.fail_json(msg="set_on_server: only meaningful with source=password")
    try:
        entries = build_entries(module)
        new_text = render_userlist(entries)
    except UserlistError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # driver errors: one line, no traceback, no secrets
        module.fail_json(msg=f"PostgreSQL: {first_line(exc)}")

    result = {"changed": False, "names": [n for n, _ in entries], "server_updated": []}
    path = params["path"]
    if not path:
        result["users"] = [{"name": n, "verifier": v} for n, v in entries]
        module.exit_json(**result)

    old_text = ""
    if Path(path).exists():
        old_text = Path(path).read_text()
    old_entries = parse_userlist(old_text)

    if params["set_on_server"]:
        passwords = {u["name"]: u["password"] for u in params["users"]}
        for name, verifier in entries:
            if params["force_set_on_server"] or old_entries.get(name) != verifier:
                if not module.check_mode:
                    try:
                        set_server_verifier(params, name, passwords[name], verifier)
                    except Exception as exc:
                        module.fail_json(msg=f"ALTER ROLE {name}: {first_line(exc)}")
                result["server_updated"].append(name)
                result["changed"] = True

    if old_text != new_text:
        result["changed"] = True
        if module._diff:
            result["diff"] = {
                "before_header": path,
                "after_header": path,
                "before": mask(old_text),
                "after": mask(new_text),
            }
        if not module.check_mode:
            directory = str(Path(path).parent)
            fd, tmp = tempfile.mkstemp(prefix=".userlist.", dir=directory)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(new_text)
                Path(tmp).chmod(0o600)
                module.atomic_move(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)

    file_args = module.load_file_common_arguments(params)
    if not module.check_mode or Path(path).exists():
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
