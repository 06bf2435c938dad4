"""Chunked AES-256-GCM streams: every chunk authenticated, truncation and reordering detected.

Format (all integers big-endian)::

    header  = b"DBTIERE2" | chunk_size:u32 | stream_id:16 bytes (random)
    chunk i = 0x00 | nonce:12 bytes (random) | AES-256-GCM(plaintext) | tag:16 bytes
    final   = 0x01 | length:u32 | nonce:12 | AES-256-GCM(plaintext) | tag:16
    AAD(i)  = stream_id | i:u64 | final:u8 | SHA-256(context)

Every chunk but the last holds exactly chunk_size bytes of plaintext; the final one holds fewer,
possibly none, and says how many, so the reader knows exactly where the stream ends. Because the
index and the final flag are authenticated, a missing tail, swapped, repeated or dropped chunks,
chunks spliced in from another stream (other stream id) and flipped bits all fail; bytes after
the final chunk are reported as trailing data. The context is the object's key in the repository
("wal/000000010000000000000007.zst.enc"): an object copied or renamed over another one fails
authentication even under the same data key.

Chunk numbers in error messages are the 0-based indexes of the format.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DbtierError

MAGIC = b"DBTIERE2"
OLD_MAGICS = (b"DBTIERE1",)
CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20  # a corrupted header must not make the reader allocate gigabytes
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
STREAM_ID_SIZE = 16
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE  # per chunk
FINAL_OVERHEAD = OVERHEAD + 4  # the final chunk also carries its length
_MORE, _FINAL = b"\x00", b"\x01"
_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">8sI16s")
HEADER_SIZE = _HEADER.size
_AAD = struct.Struct(">16sQB32s")


class IntegrityError(DbtierError):
    """Stored data failed a check: authentication, checksum, structure."""


def _check_key(data_key: bytes) -> AESGCM:
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes, got {len(data_key)}")
    return AESGCM(bytes(data_key))


def encrypted_size(plain_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Size of the encrypted stream for plain_size bytes of plaintext."""
    full_chunks = plain_size // chunk_size
    last = plain_size % chunk_size
    return HEADER_SIZE + full_chunks * (chunk_size + OVERHEAD) + last + FINAL_OVERHEAD


class EncryptingWriter(io.RawIOBase):
    """Write plaintext, get the encrypted stream in dest. close() writes the final chunk.

    dest is not closed; memory is one chunk.
    """

    def __init__(
        self, dest: BinaryIO, data_key: bytes, chunk_size: int = CHUNK_SIZE, context: bytes = b""
    ) -> None:
        super().__init__()
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        self._aead = _check_key(data_key)
        self._dest = dest
        self._chunk_size = chunk_size
        self._stream_id = os.urandom(STREAM_ID_SIZE)
        self._context = hashlib.sha256(context).digest()
        self._index = 0
        self._buf = bytearray()
        self._aborted = False
        self.bytes_in = 0
        self.bytes_out = 0
        self._emit_raw(_HEADER.pack(MAGIC, chunk_size, self._stream_id))

    def writable(self) -> bool:
        return True

    def _emit_raw(self, data: bytes) -> None:
        self._dest.write(data)
        self.bytes_out += len(data)

    def _emit(self, plaintext: bytes | bytearray | memoryview, final: bool) -> None:
        nonce = os.urandom(NONCE_SIZE)
        aad = _AAD.pack(self._stream_id, self._index, 1 if final else 0, self._context)
        lead = _FINAL + _LENGTH.pack(len(plaintext)) if final else _MORE
        self._emit_raw(lead + nonce + self._aead.encrypt(nonce, bytes(plaintext), aad))
        self._index += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed or aborted EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        self.bytes_in += size
        cs = self._chunk_size
        if self._buf:
            take = cs - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < cs:
                return size
            self._emit(self._buf, final=False)
            self._buf.clear()
        # Full chunks straight from the caller's buffer: no copy, no quadratic re-slicing.
        while len(view) >= cs:
            self._emit(view[:cs], final=False)
            view = view[cs:]
        self._buf += view
        return size

    def abort(self) -> None:
        """Close WITHOUT the final chunk: the stream then reads as truncated, never as complete."""
        self._aborted = True
        super().close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # IOBase.__exit__ would close() and seal a stream cut short by an exception.
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Garbage collection must not seal a half-written stream either.
        if not self.closed:
            self.abort()

    def close(self) -> None:
        if not self.closed and not self._aborted:
            try:
                # Always shorter than a chunk (possibly empty): that is what marks it final.
                self._emit(self._buf, final=True)
                self._buf.clear()
                flush = getattr(self._dest, "flush", None)
                if flush is not None:
                    flush()
            finally:
                super().close()


class DecryptingReader(io.RawIOBase):
    """Read plaintext back from an encrypted stream; every byte returned is authenticated.

    Raises IntegrityError on a bad header, a chunk that fails authentication, a missing final
    chunk, or bytes after the final chunk. src is not closed; memory is one chunk.

    Note: data before a damaged or missing chunk has already been returned when the error is
    raised, so callers must write to a scratch place and only commit after a clean EOF.
    """

    def __init__(self, src: BinaryIO, data_key: bytes, context: bytes = b"") -> None:
        super().__init__()
        self._aead = _check_key(data_key)
        self._context = hashlib.sha256(context).digest()
        self._src = src
        self._index = 0
        self._done = False
        self._buf = b""
        self._pos = 0
        self.bytes_in = 0
        self.bytes_out = 0
        header = self._read_exact(HEADER_SIZE)
        if not header:
            raise IntegrityError("stream truncated (empty, no header)")
        if len(header) < HEADER_SIZE and MAGIC.startswith(header[: len(MAGIC)]):
            raise IntegrityError("stream truncated (incomplete header)")
        if header[: len(MAGIC)] in OLD_MAGICS:
            raise IntegrityError(
                "stream format 1 (dbtier < 1.1, not bound to its object key): take a new backup"
            )
        if len(header) < HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
            raise IntegrityError("not a dbtier encrypted stream (bad magic)")
        _, chunk_size, self._stream_id = _HEADER.unpack(header)
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise IntegrityError(f"corrupted header (chunk size {chunk_size})")
        self.chunk_size = chunk_size

    def readable(self) -> bool:
        return True

    def _read_exact(self, size: int) -> bytes:
        """Up to size bytes; fewer only at EOF (pipes and sockets return short reads)."""
        parts = []
        remaining = size
        while remaining > 0:
            part = self._src.read(remaining)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_in += len(data)
        return data

    def _next_chunk(self) -> None:
        n = self._index
        marker = self._read_exact(1)
        if not marker:
            raise IntegrityError("stream truncated (no final chunk)")
        if marker == _MORE:
            final, length = False, self.chunk_size
        elif marker == _FINAL:
            raw_length = self._read_exact(_LENGTH.size)
            if len(raw_length) < _LENGTH.size:
                raise IntegrityError(f"stream truncated (incomplete chunk {n})")
            final, (length,) = True, _LENGTH.unpack(raw_length)
            if length > self.chunk_size:
                raise IntegrityError(f"corrupted stream at chunk {n} (bad final chunk length)")
        else:
            raise IntegrityError(f"corrupted stream at chunk {n} (bad chunk marker)")
        record = self._read_exact(NONCE_SIZE + length + TAG_SIZE)
        if len(record) < NONCE_SIZE + length + TAG_SIZE:
            raise IntegrityError(f"stream truncated (incomplete chunk {n})")
        aad = _AAD.pack(self._stream_id, n, 1 if final else 0, self._context)
        try:
            plaintext = self._aead.decrypt(record[:NONCE_SIZE], record[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError(
                f"authentication failed at chunk {n} (corrupted or wrong key)"
            ) from None
        self._index += 1
        if final:
            if self._read_exact(1):
                raise IntegrityError("trailing data after final chunk")
            self._done = True
        self._buf = plaintext
        self._pos = 0

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            return self.readall()
        while self._pos >= len(self._buf):
            if self._done:
                return b""
            self._next_chunk()
        if self._pos == 0 and size >= len(self._buf):
            out, self._buf = self._buf, b""  # hand over the whole chunk without a copy
        else:
            out = self._buf[self._pos : self._pos + size]
            self._pos += len(out)
        self.bytes_out += len(out)
        return out

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(self.chunk_size):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    @property
    def complete(self) -> bool:
        """True once the final chunk was authenticated and nothing followed it."""
        return self._done and self._pos >= len(self._buf)
