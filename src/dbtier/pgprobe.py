"""Does the server store exactly this SCRAM verifier for a role? Answered by logging in.

Where pg_authid cannot be read (RDS: the master user is not a superuser), the stored verifier is
still observable: in a SCRAM-SHA-256 login the server announces the salt and iteration count it
stores for the role, accepts the client proof only if the StoredKey matches, and proves its
ServerKey in its final signature. Same salt, same iterations, proof accepted and signature right
means the stored verifier is the one computed from the password with that salt, i.e. identical.

This speaks just enough of the PostgreSQL protocol for that (SSLRequest, StartupMessage, the SASL
exchange, Terminate), with the standard library only: it runs inside the Ansible module on hosts
where dbtier is not installed (module_utils), like dbtier.scram.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import struct
from dataclasses import dataclass

from . import scram
from .errors import DbtierError, UsageError

SSL_REQUEST = 80877103
PROTOCOL_3_0 = 196608
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = (
    0,
    3,
    5,
    10,
    11,
    12,
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class Endpoint:
    """Where to log in: a host name or address (or a Unix socket directory), as libpq takes it."""

    host: str
    port: int = 5432
    dbname: str = "postgres"
    sslmode: str = "prefer"
    sslrootcert: str = ""  # CA bundle for verify-ca/verify-full; "system" = the system store
    timeout: float = 10.0


@dataclass(frozen=True)
class Verdict:
    """holds: True = the server stores exactly that verifier, False = something else (another
    salt or password, no password, no such role), None = cannot tell (the server did not ask for
    SCRAM: trust, md5 or password authentication); detail says why."""

    holds: bool | None
    detail: str


class _Conn:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if endpoint.sslmode not in SSLMODES:
            raise UsageError(f"sslmode {endpoint.sslmode!r} is not one of {', '.join(SSLMODES)}")
        self.sock = self._open()

    def _open(self) -> socket.socket:
        ep = self.endpoint
        try:
            if ep.host.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(ep.timeout)
                sock.connect(f"{ep.host}/.s.PGSQL.{ep.port}")
                return sock  # no TLS over a Unix socket (libpq ignores sslmode there too)
            sock = socket.create_connection((ep.host, ep.port), timeout=ep.timeout)
        except OSError as exc:
            raise DbtierError(f"cannot connect to {ep.host}:{ep.port}: {exc}") from None
        if ep.sslmode == "disable":
            return sock
        try:
            sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
            answer = self._recv_exact(sock, 1)
        except OSError as exc:
            sock.close()
            raise DbtierError(f"{ep.host}:{ep.port}: TLS negotiation failed: {exc}") from None
        if answer != b"S":
            if ep.sslmode in ("allow", "prefer"):
                return sock
            sock.close()
            raise DbtierError(f"{ep.host}:{ep.port} does not offer TLS (sslmode={ep.sslmode})")
        try:
            return self._tls_context().wrap_socket(
                sock, server_hostname=ep.host if ep.sslmode == "verify-full" else None
            )
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise DbtierError(f"{ep.host}:{ep.port}: TLS failed: {exc}") from None

    def _tls_context(self) -> ssl.SSLContext:
        ep = self.endpoint
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if ep.sslmode in ("verify-ca", "verify-full"):
            if ep.sslrootcert == "system":
                ctx.load_default_certs()
            else:
                cafile = ep.sslrootcert or os.path.expanduser("~/.postgresql/root.crt")
                try:
                    ctx.load_verify_locations(cafile=cafile)
                except (OSError, ssl.SSLError) as exc:
                    raise UsageError(f"sslrootcert {cafile}: {exc}") from None
            ctx.check_hostname = ep.sslmode == "verify-full"
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:  # require, prefer, allow: encrypted, not authenticated (libpq's meaning)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    @staticmethod
    def _recv_exact(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def send(self, kind: bytes, payload: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", len(payload) + 4) + payload)

    def startup(self, user: str) -> None:
        params = {"user": user, "database": self.endpoint.dbname, "application_name": "dbtier"}
        body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        body = struct.pack("!i", PROTOCOL_3_0) + body + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)

    def receive(self) -> tuple[bytes, bytes]:
        head = self._recv_exact(self.sock, 5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        return kind, self._recv_exact(self.sock, length - 4)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(b"X", b"")
        self.sock.close()


def _error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def _auth(kind: bytes, payload: bytes) -> tuple[int, bytes]:
    if kind == b"E":
        fields = _error_fields(payload)
        raise _ServerError(fields.get("C", ""), fields.get("M", "error"))
    if kind != b"R":
        raise DbtierError(f"unexpected message {kind!r} during authentication")
    return struct.unpack("!i", payload[:4])[0], payload[4:]


class _ServerError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _parse_attributes(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


def holds_verifier(endpoint: Endpoint, user: str, password: str, verifier: str) -> Verdict:
    """Log in as `user` with `password` and tell whether the server stores exactly `verifier`.

    Raises DbtierError when the server cannot be reached or refuses before authentication (no
    pg_hba.conf entry, TLS required, ...): that is not an answer about the verifier."""
    want_iterations, want_salt, _, _ = scram.parse_verifier(verifier)
    conn = _Conn(endpoint)
    try:
        conn.startup(user)
        code, data = _auth(*conn.receive())
        if code == AUTH_OK:
            return Verdict(None, "the server let the role in without a password (trust)")
        if code in (AUTH_CLEARTEXT, AUTH_MD5):
            return Verdict(None, "the server asked for an md5/plain password, not SCRAM")
        if code != AUTH_SASL:
            return Verdict(None, f"the server asked for authentication method {code}")
        mechanisms = [m.decode() for m in data.split(b"\0") if m]
        if "SCRAM-SHA-256" not in mechanisms:
            return Verdict(None, f"the server offers {', '.join(mechanisms)}, not SCRAM-SHA-256")

        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        conn.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        code, data = _auth(*conn.receive())
        if code != AUTH_SASL_CONTINUE:
            raise DbtierError(f"unexpected SCRAM step {code} from the server")
        server_first = data.decode()
        attrs = _parse_attributes(server_first)
        if not attrs.get("r", "").startswith(nonce):
            raise DbtierError("the server's SCRAM nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])

        salted = hashlib.pbkdf2_hmac("sha256", scram.saslprep(password), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        conn.send(b"p", final.encode())
        try:
            code, data = _auth(*conn.receive())
        except _ServerError as exc:
            if exc.sqlstate == "28P01":  # invalid_password: another password, none, or no role
                return Verdict(False, "the server refused the password")
            raise
        if code != AUTH_SASL_FINAL:
            raise DbtierError(f"unexpected SCRAM step {code} from the server")
        expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        got = _parse_attributes(data.decode()).get("v", "")
        if not hmac.compare_digest(base64.b64decode(got), expected):
            raise DbtierError("the server's SCRAM signature is wrong (not the server we asked?)")
        if (salt, iterations) != (want_salt, want_iterations):
            return Verdict(False, "the password is right but stored with another salt")
        return Verdict(True, "the server stores this verifier")
    except _ServerError as exc:
        raise DbtierError(f"{endpoint.host}:{endpoint.port} refused {user!r}: {exc}") from None
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise DbtierError(f"{endpoint.host}:{endpoint.port}: SCRAM login failed: {exc}") from None
    finally:
        conn.close()
