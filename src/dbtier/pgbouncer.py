"""PgBouncer's auth_file (userlist.txt) with SCRAM-SHA-256 verifiers only, never plaintext, and
the verifiers on the PostgreSQL server (read from pg_authid, or set with ALTER ROLE).

Standard library only (see dbtier.scram): library/pgbouncer_userlist.py runs it on hosts without
dbtier. The server functions take any DB-API connection with the %s paramstyle (psycopg 3 or
psycopg2, whichever the host has), in autocommit mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import pgdriver, scram
from .errors import UsageError

HEADER = "; managed by Ansible (pgbouncer_userlist): SCRAM-SHA-256 verifiers only\n"


def quote(value: str) -> str:
    """A userlist field: double quotes, embedded quotes doubled; no line breaks or NULs."""
    if any(ch in value for ch in "\n\r\0"):
        raise UsageError(f"user name {value!r} contains a line break or NUL")
    return '"' + value.replace('"', '""') + '"'


def render_userlist(entries: Iterable[tuple[str, str]]) -> str:
    """The auth_file text for (name, verifier) pairs; refuses anything but SCRAM verifiers."""
    seen = set()
    lines = [HEADER]
    for name, verifier in entries:
        if name in seen:
            raise UsageError(f"user {name!r} listed twice")
        seen.add(name)
        try:
            scram.parse_verifier(verifier)
        except UsageError as exc:
            raise UsageError(f"user {name!r}: {exc}") from None
        lines.append(f"{quote(name)} {quote(verifier)}\n")
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
            out.append(f'{quote(name)} "<SCRAM-SHA-256 verifier sha256:{digest}>"\n')
        else:
            out.append(line)
    return "".join(out)


def entries_from_users(
    users: Iterable[Mapping], source: str, iterations: int = scram.DEFAULT_ITERATIONS
) -> list[tuple[str, str]]:
    """(name, verifier) pairs from users given with a `password` (source "password": stable
    verifiers) or a `verifier` (source "verifier"), in their order."""
    if source not in ("password", "verifier"):
        raise UsageError(f"source: {source!r} is neither password nor verifier")
    entries = []
    for user in users:
        name, secret = user["name"], user.get(source)
        if not secret:
            raise UsageError(f"users: {name!r} has no {source} (source={source})")
        if source == "password":
            secret = scram.stable_verifier(name, secret, iterations)
        entries.append((name, secret))
    return entries


def stored_verifiers(conn, names: list[str]) -> dict[str, str | None] | None:
    """name -> rolpassword from pg_authid for the roles that exist, or None when pg_authid is not
    readable by this connection (not a superuser: the RDS master user)."""
    cur = conn.cursor()
    try:
        cur.execute(
            "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
            (list(names),),
        )
    except Exception as exc:
        if pgdriver.sqlstate(exc) == "42501":  # insufficient_privilege
            return None
        raise
    return dict(cur.fetchall())


def verifiers_to_set(
    conn,
    users: Iterable[Mapping],
    probe: Callable[[str, str, str], Any],
    force: bool = False,
) -> list[tuple[str, str]]:
    """(name, why) for each user (name, password, verifier) whose stored verifier on the server is
    not exactly `verifier`. Compared in pg_authid when the connection may read it (superuser);
    otherwise `probe(name, password, verifier)` logs in as the user and returns a
    dbtier.pgprobe.Verdict (RDS). `force`: every user."""
    users = list(users)
    if force:
        return [(u["name"], "forced") for u in users]
    stored = stored_verifiers(conn, [u["name"] for u in users])
    result = []
    for user in users:
        name, verifier = user["name"], user["verifier"]
        if stored is not None:
            if name not in stored:
                result.append((name, "no such role"))
            elif stored[name] != verifier:
                result.append(
                    (name, "another verifier in pg_authid" if stored[name] else "no password")
                )
            continue
        verdict = probe(name, user["password"], verifier)
        if verdict.holds is not True:
            result.append((name, verdict.detail))
    return result


def read_server_verifiers(conn, names: list[str]) -> dict[str, str]:
    """name -> the SCRAM verifier in pg_authid (superuser connection), in the order of `names`."""
    cur = conn.cursor()
    cur.execute(
        "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
        (list(names),),
    )
    found = dict(cur.fetchall())
    missing = [n for n in names if n not in found]
    if missing:
        raise UsageError(f"role(s) not found on the server: {', '.join(missing)}")
    for name in names:
        secret = found[name]
        if not secret or not secret.startswith(scram.PREFIX):
            kind = "no password" if not secret else "a non-SCRAM (md5?) password"
            raise UsageError(
                f"role {name!r} has {kind} on the server; set password_encryption=scram-sha-256 "
                "and reset its password"
            )
    return {n: found[n] for n in names}


def set_server_verifier(conn, name: str, verifier: str) -> None:
    """ALTER ROLE name PASSWORD '<verifier>': PostgreSQL stores a SCRAM verifier as it is."""
    scram.parse_verifier(verifier)  # never send a plaintext password
    cur = conn.cursor()
    # Quoted by the server (quote_ident, quote_literal): works with either driver.
    cur.execute("SELECT pg_catalog.quote_ident(%s), pg_catalog.quote_literal(%s)", (name, verifier))
    ident, literal = cur.fetchone()
    cur.execute(f"ALTER ROLE {ident} PASSWORD {literal}")
