"""Envelope encryption: a random data key per backup, wrapped by a master key.

Master keys come from a spec string: ``file:/etc/dbtier/master.key`` (32 raw bytes or their
44-character base64), ``env:VARNAME`` (base64 of 32 bytes) or ``kms:<key id, ARN or alias>``
(AWS KMS GenerateDataKey / Decrypt). The wrapped data key is a JSON-serialisable dict stored in
the manifest::

    {"provider": "file"|"env"|"kms", "key_id": ..., "wrapped_key": base64, "algorithm": ...}

key_id is the master key's fingerprint (first 16 hex digits of its SHA-256) for local keys and
the KMS key ARN for KMS, so a wrong key is named before a single byte is decrypted or written.
A local key moved from a file to an environment variable (or back) still unwraps: what counts is
the key, not where it is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import Settings, first_env
from .crypto import KEY_SIZE, NONCE_SIZE, IntegrityError
from .errors import EXIT_USAGE, DbtierError, UsageError

ALGORITHM = "AES-256-GCM"
_WRAP_AAD = b"dbtier data key v1"  # binds wrapped keys to this use of the master key
KEY_SPEC_HELP = "file:PATH, env:VARNAME or kms:KEY-ID"


class WrongKeyError(IntegrityError):
    """The configured master key is not the one that wrapped the data key (a setup problem)."""

    exit_code = EXIT_USAGE


def _fingerprint(master: bytes) -> str:
    return hashlib.sha256(master).hexdigest()[:16]


def _b64_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_SIZE else None


class KeyProvider(ABC):
    kind: str
    family: str  # what a repository is bound to: "local" (file or env: the same key) or "kms"

    @abstractmethod
    def generate_data_key(self) -> tuple[bytes, dict[str, str]]: ...

    @abstractmethod
    def unwrap(self, wrapped: dict[str, Any]) -> bytes: ...

    @abstractmethod
    def fingerprint(self) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the key comes from, never the key itself."""


class LocalKeyProvider(KeyProvider):
    """A 32-byte master key held by this host (key file or environment variable)."""

    family = "local"

    def __init__(self, kind: str, source: str, master: bytes) -> None:
        self.kind = kind
        self.source = source
        self._aead = AESGCM(master)
        self._fingerprint = _fingerprint(master)

    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> str:
        return f"{self.kind}:{self.source} (fingerprint {self._fingerprint})"

    def generate_data_key(self) -> tuple[bytes, dict[str, str]]:
        data_key = os.urandom(KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        blob = nonce + self._aead.encrypt(nonce, data_key, _WRAP_AAD)
        return data_key, {
            "provider": self.kind,
            "key_id": self._fingerprint,
            "wrapped_key": base64.b64encode(blob).decode("ascii"),
            "algorithm": ALGORITHM,
        }

    def unwrap(self, wrapped: dict[str, Any]) -> bytes:
        provider, key_id, blob = _parse_wrapped(wrapped)
        if provider == "kms":
            raise WrongKeyError(
                f"wrong master key: data key {key_id} was wrapped by KMS, "
                f"but the configured master key is {self.kind}:{self.source}"
            )
        if key_id != self._fingerprint:
            raise WrongKeyError(
                f"wrong master key: data key {key_id} cannot be unwrapped "
                f"(key fingerprint {self._fingerprint} does not match {key_id})"
            )
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], _WRAP_AAD)
        except InvalidTag:
            raise IntegrityError(
                f"data key {key_id} cannot be unwrapped: wrapped key corrupted"
            ) from None


class KmsKeyProvider(KeyProvider):
    """AWS KMS: the master key never leaves KMS; data keys come from GenerateDataKey."""

    kind = "kms"
    family = "kms"

    def __init__(
        self, key_id: str, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.key_id = key_id
        self.endpoint_url = endpoint_url or first_env(
            "DBTIER_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"
        )
        self.region = region or first_env("AWS_DEFAULT_REGION", "AWS_REGION")
        self._client: Any = None
        self._arn: str | None = None
        # Every manifest read unwraps its key: one KMS Decrypt per data key per process.
        self._unwrapped: dict[str, bytes] = {}

    def describe(self) -> str:
        return f"kms:{self.key_id}"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # lazy: local keys need no AWS SDK
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            )
            self._client = boto3.client(
                "kms", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        return self._client

    def _call(self, action: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )

        try:
            return getattr(self.client, action)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = err.get("Code", "?"), err.get("Message", "")
            if action == "decrypt" and code in (
                "IncorrectKeyException",
                "InvalidCiphertextException",
                "AccessDeniedException",
            ):
                raise WrongKeyError(
                    f"wrong master key: data key {kwargs.get('KeyId')} cannot be unwrapped "
                    f"by KMS ({code}: {message})"
                ) from None
            raise DbtierError(
                f"KMS {action} with key {self.key_id} failed: {code}: {message}"
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            where = self.endpoint_url or f"region {self.region or 'default'}"
            raise DbtierError(f"cannot reach KMS at {where}: {exc}") from None
        except NoCredentialsError:
            raise UsageError("KMS: no AWS credentials found") from None
        except NoRegionError:
            raise UsageError("KMS: no AWS region configured (set AWS_DEFAULT_REGION)") from None
        except BotoCoreError as exc:
            raise DbtierError(f"KMS {action} with key {self.key_id} failed: {exc}") from None

    def fingerprint(self) -> str:
        if self._arn is None:
            meta = self._call("describe_key", KeyId=self.key_id)["KeyMetadata"]
            self._arn = str(meta["Arn"])
        return self._arn

    def generate_data_key(self) -> tuple[bytes, dict[str, str]]:
        resp = self._call("generate_data_key", KeyId=self.key_id, KeySpec="AES_256")
        return bytes(resp["Plaintext"]), {
            "provider": "kms",
            "key_id": str(resp["KeyId"]),
            "wrapped_key": base64.b64encode(resp["CiphertextBlob"]).decode("ascii"),
            "algorithm": ALGORITHM,
        }

    def unwrap(self, wrapped: dict[str, Any]) -> bytes:
        provider, key_id, blob = _parse_wrapped(wrapped)
        if provider != "kms":
            raise WrongKeyError(
                f"wrong master key: data key {key_id} was wrapped by a local {provider} key "
                f"(fingerprint {key_id}), but the configured master key is kms:{self.key_id}"
            )
        cached = self._unwrapped.get(wrapped["wrapped_key"])
        if cached is not None:
            return cached
        # KeyId pins the key KMS must use: a blob from another key is refused, not guessed.
        resp = self._call("decrypt", CiphertextBlob=blob, KeyId=key_id)
        plaintext = bytes(resp["Plaintext"])
        if len(plaintext) != KEY_SIZE:
            raise IntegrityError(f"data key {key_id}: KMS returned {len(plaintext)} bytes")
        self._unwrapped[wrapped["wrapped_key"]] = plaintext
        return plaintext


def _parse_wrapped(wrapped: Any) -> tuple[str, str, bytes]:
    if not isinstance(wrapped, dict):
        raise IntegrityError("wrapped data key malformed (not an object)")
    missing = [f for f in ("provider", "key_id", "wrapped_key") if not wrapped.get(f)]
    if missing:
        raise IntegrityError(f"wrapped data key malformed (missing {', '.join(missing)})")
    algorithm = wrapped.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise IntegrityError(f"data key {wrapped['key_id']}: unsupported algorithm {algorithm}")
    try:
        blob = base64.b64decode(wrapped["wrapped_key"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise IntegrityError(
            f"data key {wrapped['key_id']}: wrapped key is not valid base64"
        ) from None
    return str(wrapped["provider"]), str(wrapped["key_id"]), blob


def _file_provider(path_text: str) -> LocalKeyProvider:
    if not path_text:
        raise UsageError(f"empty key file path in master key spec (use {KEY_SPEC_HELP})")
    path = Path(path_text)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"master key file {path} not found") from None
    except OSError as exc:
        raise UsageError(f"cannot read master key file {path}: {exc.strerror}") from None
    if len(data) == KEY_SIZE:
        return LocalKeyProvider("file", str(path), data)
    master = _b64_key(data.decode("ascii", errors="replace"))
    if master is None:
        raise UsageError(
            f"master key file {path}: expected 32 raw bytes or 44 base64 characters "
            f"of a 32-byte key, got {len(data)} bytes"
        )
    return LocalKeyProvider("file", str(path), master)


def _env_provider(name: str) -> LocalKeyProvider:
    if not name:
        raise UsageError(f"empty variable name in master key spec (use {KEY_SPEC_HELP})")
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"master key environment variable {name} is not set")
    master = _b64_key(value)
    if master is None:
        raise UsageError(f"master key environment variable {name}: expected base64 of 32 bytes")
    return LocalKeyProvider("env", name, master)


def load_key_provider(
    spec: str | None, *, endpoint_url: str | None = None, region: str | None = None
) -> KeyProvider:
    """The master key named by spec; local keys are read and checked now (fail before work)."""
    if not spec:
        raise UsageError(
            f"no master key configured (set DBTIER_MASTER_KEY_SPEC or --key {KEY_SPEC_HELP})"
        )
    kind, sep, rest = spec.partition(":")
    if sep and kind == "file":
        return _file_provider(rest)
    if sep and kind == "env":
        return _env_provider(rest)
    if sep and kind == "kms":
        if not rest:
            raise UsageError(f"empty KMS key id in master key spec (use {KEY_SPEC_HELP})")
        return KmsKeyProvider(rest, endpoint_url=endpoint_url, region=region)
    # Never echo the spec: a pasted key must not end up in logs.
    raise UsageError(f"master key spec must be {KEY_SPEC_HELP}")


def from_settings(settings: Settings) -> KeyProvider:
    """The configured master key; KMS in kms_region (a DR restore may use another region)."""
    return load_key_provider(
        settings.key,
        endpoint_url=settings.endpoint_url,
        region=settings.kms_region or settings.region,
    )
