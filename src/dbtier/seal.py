"""Authenticated JSON documents: backup manifests, WAL object headers, the repository identity.

A document is readable JSON ``{"dbtier": <kind>, "format": 2, "body": {...}, "mac": <hex>}``.
The body carries a data key wrapped by the master key (``body["data_key"]``, or
``body["encryption"]["data_key"]`` for manifests); the MAC is HMAC-SHA-256 over the canonical
bytes of (kind, context, body) with a key derived from that data key (HKDF). Forging or editing a
document therefore needs the master key: a changed digit, a swapped wrapped key or a document
moved to another place (the context is its key in the repository) all fail authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .crypto import IntegrityError

FORMAT = 2
_MAC_INFO = b"dbtier document mac v1"


def _mac_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(
        bytes(data_key)
    )


def _canonical(kind: str, context: str, body: dict[str, Any]) -> bytes:
    return json.dumps(
        [kind, context, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def _mac(kind: str, context: str, body: dict[str, Any], data_key: bytes) -> str:
    return hmac.new(_mac_key(data_key), _canonical(kind, context, body), hashlib.sha256).hexdigest()


def seal(kind: str, context: str, body: dict[str, Any], data_key: bytes) -> bytes:
    """The document's bytes (indented JSON: operators read manifests)."""
    doc = {"dbtier": kind, "format": FORMAT, "body": body}
    doc["mac"] = _mac(kind, context, body, data_key)
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def parse(raw: bytes, kind: str, where: str) -> dict[str, Any]:
    """The unauthenticated body (to find its wrapped data key); structure errors are named."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
        if isinstance(doc, dict) and "manifest_format" in doc:
            raise IntegrityError(f"{where} has format 1 (not authenticated): take a new backup")
        raise IntegrityError(f"{where} is not a dbtier {kind} document")
    if doc.get("dbtier") != kind:
        raise IntegrityError(f"{where} is a {doc.get('dbtier')!r} document, not a {kind}")
    if doc.get("format") != FORMAT:
        raise IntegrityError(f"{where} has unsupported format {doc.get('format')!r}")
    if not isinstance(doc.get("mac"), str):
        raise IntegrityError(f"{where} has no MAC")
    return doc


def verify(doc: dict[str, Any], kind: str, context: str, data_key: bytes, where: str) -> None:
    """Raise IntegrityError unless the MAC matches (constant-time comparison)."""
    expected = _mac(kind, context, doc["body"], data_key)
    if not hmac.compare_digest(expected, doc["mac"]):
        raise IntegrityError(f"{where}: authentication failed (edited, corrupted or moved)")


# A sealed document in front of a stream (WAL and report objects): magic, length, document.
_LEAD = struct.Struct(">8sI")


def frame(magic: bytes, sealed: bytes) -> bytes:
    return _LEAD.pack(magic, len(sealed)) + sealed


def read_frame(handle: BinaryIO, magic: bytes, limit: int, what: str, noun: str) -> bytes:
    """The sealed document framed at the start of handle (left at the stream after it)."""
    from .pipeline import read_exact  # pipeline imports crypto, which this module also does

    lead = read_exact(handle, _LEAD.size)
    if len(lead) < _LEAD.size or lead[:8] != magic:
        raise IntegrityError(f"{what}: not a dbtier {noun} object (bad magic or empty)")
    length = _LEAD.unpack(lead)[1]
    raw = read_exact(handle, length) if length <= limit else b""
    if len(raw) != length:
        raise IntegrityError(f"{what}: header truncated or corrupted")
    return raw
