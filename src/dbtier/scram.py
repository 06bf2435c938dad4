"""SCRAM-SHA-256 verifiers exactly as PostgreSQL computes and stores them, and stable ones.

Standard library only: library/pgbouncer_userlist.py gets this module shipped by Ansible
(module_utils = src) to hosts where dbtier is not installed (PgBouncer hosts, a database host
before roles/dbtier ran). Not `scramp`: Debian 12 does not package it, and its SASLprep raises
where PostgreSQL falls back to the raw bytes (ASCII control characters, prohibited code points)
and it refuses fewer than 4096 iterations, so it would not reproduce PostgreSQL's verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

from .errors import UsageError

PREFIX = "SCRAM-SHA-256$"
SALT_LEN = 16  # what PostgreSQL uses
DEFAULT_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
STABLE_SALT_CONTEXT = b"dbtier-scram-salt:"

_PROHIBITED = (
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


def saslprep(password: str) -> bytes:
    """SASLprep (RFC 4013) as PostgreSQL applies it: on failure the raw UTF-8 bytes are used."""
    if password.isascii():
        # PostgreSQL skips normalization for pure ASCII (control characters included).
        return password.encode()
    chars = []
    for ch in password:
        if stringprep.in_table_c12(ch):  # non-ASCII space -> SPACE
            chars.append(" ")
        elif not stringprep.in_table_b1(ch):  # B.1: commonly mapped to nothing
            chars.append(ch)
    norm = unicodedata.normalize("NFKC", "".join(chars))
    if not norm:
        return password.encode()
    if any(table(ch) for ch in norm for table in _PROHIBITED):
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


def compute_verifier(password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for `password` with this salt and iteration count."""
    if iterations < 1:
        raise UsageError(f"iterations must be positive, got {iterations}")
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"{PREFIX}{iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def stable_salt(username: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> bytes:
    """A salt that depends only on user and password, costing as much to attack as the verifier.

    PBKDF2-HMAC-SHA256(SASLprep(password), "dbtier-scram-salt:" + user, iterations)[:16]: a rerun
    computes the same verifier (idempotent where the server's cannot be read back, as on RDS).
    """
    return hashlib.pbkdf2_hmac(
        "sha256", saslprep(password), STABLE_SALT_CONTEXT + username.encode(), iterations
    )[:SALT_LEN]


def stable_verifier(username: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The deterministic verifier for `username` / `password` (same inputs, same output)."""
    if not password:
        raise UsageError(f"user {username!r}: empty password")
    return compute_verifier(password, stable_salt(username, password, iterations), iterations)


def parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """(iterations, salt, stored_key, server_key); UsageError when it is not a SCRAM verifier."""
    if not isinstance(verifier, str) or not verifier.startswith(PREFIX):
        raise UsageError("not a SCRAM-SHA-256 verifier")
    try:
        head, keys = verifier[len(PREFIX) :].split("$", 1)
        iters, salt = head.split(":", 1)
        stored, server = keys.split(":", 1)
        result = (
            int(iters),
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored, validate=True),
            base64.b64decode(server, validate=True),
        )
    except (ValueError, TypeError) as exc:
        raise UsageError("malformed SCRAM-SHA-256 verifier") from exc
    if result[0] < 1 or len(result[2]) != 32 or len(result[3]) != 32:
        raise UsageError("malformed SCRAM-SHA-256 verifier")
    return result


def verify_password(password: str, verifier: str) -> bool:
    """True when `password` matches `verifier` (how a server checks a SCRAM secret)."""
    iterations, salt, _, _ = parse_verifier(verifier)
    return hmac.compare_digest(compute_verifier(password, salt, iterations), verifier)
