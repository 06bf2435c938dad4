"""Streams between a source and the repository: zstd, then chunked AES-256-GCM, then storage.

Upload: a producer thread reads the source, compresses (zstd's own threads) and encrypts into a
bounded queue; the calling thread hands the queue to ``repo.put_stream``, which uploads. No
temporary file; memory is the queue plus the repository's part buffers. A failure on either
side stops the other and is raised; the repository then holds no object under the key.

Every stream is bound to its object key (the AAD context, see crypto.py): an object moved or
copied over another fails authentication.

Download: the stored object is hashed as it streams in, decrypted chunk by chunk (each chunk
authenticated) and decompressed into dest; its raw size and SHA-256 are checked against the
manifest's at the end. The stored SHA-256 can only be compared with the
manifest's at the end, and a missing tail only shows at the end, so dest has already received
data when an error is raised: CALLERS MUST WRITE TO A SCRATCH PLACE (temp file, scratch
directory) and only move it into place after download_decrypted returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from .compression import IO_SIZE, compressor, decompressor
from .crypto import CHUNK_SIZE, DecryptingReader, EncryptingWriter, IntegrityError
from .errors import DbtierError
from .repository import ObjectNotFound, Repository

__all__ = ["decrypt_into", "download_decrypted", "upload_encrypted", "verify_object"]

QUEUE_DEPTH = 8  # encrypted chunks (~1 MiB each) between the producer and the upload


@dataclass(frozen=True)
class UploadResult:
    key: str
    size: int  # bytes stored (compressed + encrypted)
    sha256: str  # of the stored bytes: what the manifest records and download checks
    raw_size: int  # bytes read from the source
    raw_sha256: str | None  # of the source bytes (None: not hashed, see upload_encrypted)
    version_id: str | None = None  # S3 VersionId when the bucket is versioned


@dataclass(frozen=True)
class DownloadResult:
    key: str
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str | None


class _Cancelled(Exception):
    """The consumer went away; the producer stops quietly."""


class HashingReader:
    """Passes a stream through, counting and hashing (SHA-256) what was read (digest None:
    counting only)."""

    def __init__(self, src: BinaryIO, *, hashing: bool = True) -> None:
        self._src = src
        self.digest = hashlib.sha256() if hashing else None
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        if self.digest is not None:
            self.digest.update(data)
        self.size += len(data)
        return data


def read_exact(handle: Any, size: int) -> bytes:
    """size bytes from a stream that may return less per read (fewer only at its end)."""
    parts, remaining = [], size
    while remaining > 0:
        part = handle.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class _HashingWriter:
    def __init__(self, dest: BinaryIO | None, *, hashing: bool = True) -> None:
        self._dest = dest
        self.digest = hashlib.sha256() if hashing else None
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.digest is not None:
            self.digest.update(data)
        self.size += len(data)
        if self._dest is not None:
            self._dest.write(data)
        return len(data)

    def flush(self) -> None:
        if self._dest is not None and hasattr(self._dest, "flush"):
            self._dest.flush()


class _QueueSink:
    """File-like end of the bounded queue the producer writes encrypted bytes into."""

    def __init__(self, q: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._q = q
        self._cancelled = cancelled

    def _put(self, item: Any) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> int:
        # The encrypting writer hands over a fresh bytes object per chunk: no copy needed.
        self._put(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        self._put(_END)


_END: Any = object()


def upload_encrypted(
    repo: Repository,
    key: str,
    src: BinaryIO,
    data_key: bytes,
    level: int = 3,
    threads: int = -1,
    *,
    chunk_size: int = CHUNK_SIZE,
    prefix: bytes = b"",
    if_absent: bool = False,
    hash_raw: bool = True,
) -> UploadResult:
    """src -> zstd -> AES-256-GCM chunks -> repo.put_stream(key); the object exists only if
    this returns. prefix: bytes stored before the stream (a WAL object's header); if_absent:
    create-if-absent (ObjectExists if the key is there).

    hash_raw=False skips the SHA-256 of the source (raw_sha256 None; a base backup's gigabytes
    cost 1.5 CPU seconds): the content is then protected by zstd's frame checksum (XXH64 of
    the uncompressed data, always written, checked by every decompression) under the GCM tags
    that authenticate every compressed byte, and the stored bytes by their SHA-256."""
    cctx = compressor(level, threads)  # bad level: UsageError before anything starts
    q: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
    cancelled = threading.Event()
    raw = HashingReader(src, hashing=hash_raw)
    failure: list[BaseException] = []

    def produce() -> None:
        sink = _QueueSink(q, cancelled)
        try:
            writer = EncryptingWriter(
                sink,  # type: ignore[arg-type]
                data_key,
                chunk_size,
                context=key.encode(),
            )
            try:
                cctx.copy_stream(raw, writer, read_size=IO_SIZE, write_size=IO_SIZE)
            except BaseException:
                writer.abort()  # never seal a stream the source did not finish
                raise
            writer.close()
            sink.end()
        except _Cancelled:
            return
        except BaseException as exc:
            failure.append(exc)
            # Wake the consumer; if the queue is full, it sees `failure` on its next get.
            with contextlib.suppress(queue.Full):
                q.put_nowait(_END)

    def consume() -> Any:
        if prefix:
            yield prefix
        while True:
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                if failure:
                    raise failure[0] from None
                if not producer.is_alive() and q.empty():
                    raise DbtierError(f"upload of {key}: producer stopped unexpectedly") from None
                continue
            if item is _END:
                if failure:
                    raise failure[0]
                return
            yield item

    producer = threading.Thread(target=produce, name=f"encrypt-{key}", daemon=True)
    producer.start()
    try:
        info = repo.put_stream(key, consume(), if_absent=if_absent)
    except BaseException as exc:
        cancelled.set()
        # The producer stops at its next write; a stalled source may keep it in read() (the
        # caller then kills the source), so do not wait for it forever.
        producer.join(timeout=10)
        root = failure[0] if failure else exc  # the producer's error is the root cause
        if isinstance(root, zstandard.ZstdError):
            raise DbtierError(f"upload of {key}: compression failed: {root}") from root
        if isinstance(root, OSError):
            raise DbtierError(f"upload of {key}: reading the source failed: {root}") from root
        if root is exc:
            raise
        raise root from None
    producer.join()
    return UploadResult(
        key=key,
        size=info.size,
        sha256=info.sha256,
        raw_size=raw.size,
        raw_sha256=raw.digest.hexdigest() if raw.digest is not None else None,
        version_id=info.version_id,
    )


def decrypt_into(
    handle: BinaryIO, dest: BinaryIO | None, data_key: bytes, key: str, *, hash_raw: bool = True
) -> Any:
    """Decrypt and decompress the rest of handle (an object's stream, bound to key) into dest.
    Returns the hashing writer (size, digest of the plaintext; digest None unless hash_raw)."""
    out = _HashingWriter(dest, hashing=hash_raw)
    try:
        reader = DecryptingReader(handle, data_key, context=key.encode())
        decompressor().copy_stream(reader, out, read_size=IO_SIZE, write_size=IO_SIZE)
        if not reader.complete:
            # zstd stopped at the end of its frame; whatever follows is not ours.
            raise IntegrityError("trailing data after the compressed stream")
    except IntegrityError as exc:
        raise IntegrityError(f"object {key}: {exc}") from None
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"object {key}: decompression failed: {exc}") from None
    except OSError as exc:
        raise DbtierError(f"object {key}: writing the restored data failed: {exc}") from exc
    out.flush()
    return out


def download_decrypted(
    repo: Repository,
    key: str,
    dest: BinaryIO | None,
    data_key: bytes,
    expected_sha256: str | None = None,
    *,
    expected_size: int | None = None,
    expected_raw_sha256: str | None = None,
    expected_raw_size: int | None = None,
    hash_raw: bool = True,
) -> DownloadResult:
    """Stream key from repo, verify, decrypt, decompress into dest (None: discard).

    Raises IntegrityError naming the object on any mismatch. dest has received data by then:
    write to a scratch place, commit only after this returns (see the module docstring).
    expected_size (the manifest's stored size) is checked first, before dest sees a byte; the
    stored and raw checksums and the raw size at the end.
    """
    if expected_size is not None:
        stored_size = repo.size(key)
        if stored_size is None:
            raise ObjectNotFound(f"object {key} not found in {repo.describe()}")
        if stored_size != expected_size:
            raise IntegrityError(
                f"object {key}: size mismatch (stored {stored_size}, manifest {expected_size})"
            )
    with repo.open_read(key) as handle:
        stored = HashingReader(handle)
        # hash_raw=False: no SHA-256 of the plaintext unless there is one to compare with.
        out = decrypt_into(
            stored,  # type: ignore[arg-type]
            dest,
            data_key,
            key,
            hash_raw=hash_raw or expected_raw_sha256 is not None,
        )
    sha256 = stored.digest.hexdigest()  # type: ignore[union-attr]
    raw_sha256 = out.digest.hexdigest() if out.digest is not None else None
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise IntegrityError(
            f"object {key}: checksum mismatch (stored {sha256}, manifest {expected_sha256})"
        )
    if expected_raw_size is not None and out.size != expected_raw_size:
        raise IntegrityError(
            f"object {key}: content size mismatch after decryption (got {out.size} bytes, "
            f"manifest {expected_raw_size})"
        )
    if expected_raw_sha256 is not None and raw_sha256 != expected_raw_sha256:
        raise IntegrityError(f"object {key}: content checksum mismatch after decryption")
    return DownloadResult(
        key=key,
        size=stored.size,
        sha256=sha256,
        raw_size=out.size,
        raw_sha256=raw_sha256,
    )


def verify_object(
    repo: Repository,
    key: str,
    data_key: bytes,
    expected_sha256: str | None,
    *,
    expected_size: int | None = None,
    expected_raw_sha256: str | None = None,
    expected_raw_size: int | None = None,
    hash_raw: bool = True,
) -> DownloadResult:
    """Read, authenticate, decrypt and decompress key to nowhere, checking everything."""
    return download_decrypted(
        repo,
        key,
        None,
        data_key,
        expected_sha256,
        expected_size=expected_size,
        expected_raw_sha256=expected_raw_sha256,
        expected_raw_size=expected_raw_size,
        hash_raw=hash_raw,
    )
