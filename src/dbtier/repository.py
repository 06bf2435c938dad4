"""Where backups live: a local directory (file:///path) or S3 (s3://bucket/prefix).

Keys are relative, '/'-separated paths ("backups/<id>/dump.pgc.zst.enc"). Writes are atomic in
both backends: an object is either absent or complete. FileRepository writes a ``.tmp-*`` file
in the target directory, fsyncs it and renames (or, create-if-absent, hard-links) it into place;
S3 makes an object visible only when its single PUT or its multipart upload completes, and a
failed upload is aborted. ``if_absent=True`` writes are create-if-absent in both backends
(``link`` on file://, ``If-None-Match: *`` on S3): of two concurrent writers exactly one wins
and the other gets ObjectExists, so history can never be silently replaced.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from .config import first_env
from .errors import DbtierError, UsageError
from .jobs import log

READ_SIZE = 1 << 20
TMP_PREFIX = ".tmp-"

# S3 multipart schedule. A stream of unknown length must fit in S3's 10,000 parts, so parts
# grow: 8 MiB for parts 1-1000, doubling every 1000 parts, capped at S3's 5 GiB. Reachable:
# 1000 x 8 MiB x (1 + 2 + ... + 512) = 8 MiB x 1,023,000 ~= 7.8 TiB, above S3's 5 TiB object
# limit, so the object limit binds first. Fixed 8 MiB parts would stop at 78 GiB.
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 8 << 20
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
PARTS_PER_DOUBLING = 1000
# Bytes of parts held in memory while uploading: workers shrink as parts grow, so memory stays
# about this (+ the part being read) instead of (workers + 1) x 5 GiB on a huge stream.
DEFAULT_MEMORY_BUDGET = 256 << 20
# Every S3 call is bounded: botocore retries (its own backoff, one place) with socket timeouts,
# so an endpoint that accepts and never answers, or a cut line, fails in well under a minute
# instead of hanging. A streamed GET resumes from its offset this many times after a drop.
S3_CONNECT_TIMEOUT = 5
S3_READ_TIMEOUT = 20
S3_MAX_ATTEMPTS = 3
READ_RESUMES = 3


def part_size_for(part_number: int, base: int = DEFAULT_PART_SIZE) -> int:
    """Size of multipart part number part_number (1-based) for a stream of unknown length."""
    if part_number < 1:
        raise ValueError(f"part numbers start at 1, got {part_number}")
    return min(base << ((part_number - 1) // PARTS_PER_DOUBLING), MAX_PART_SIZE)


def max_stream_size(base: int = DEFAULT_PART_SIZE) -> int:
    """Largest stream the part schedule can upload within MAX_PARTS parts."""
    return sum(part_size_for(n, base) for n in range(1, MAX_PARTS + 1))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int  # bytes as stored
    sha256: str  # hex SHA-256 of the bytes as stored
    version_id: str | None = None  # S3 VersionId when the bucket is versioned


class ObjectNotFound(DbtierError):
    """The key does not exist in the repository (a confirmed absence, not an error reaching it)."""


class ObjectExists(DbtierError):
    """A create-if-absent write found the key already there (another writer won)."""


@dataclass(frozen=True)
class Debris:
    """Something a killed writer left behind: a scratch file or an unfinished multipart upload."""

    what: str  # "tmp-file" | "multipart-upload"
    key: str
    age_seconds: float
    handle: str = ""  # the multipart upload id


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid object key {key!r}")
    if parts[-1].startswith(TMP_PREFIX):
        raise UsageError(f"invalid object key {key!r} ({TMP_PREFIX}* names are reserved)")
    return key


def iter_chunks(src: BinaryIO | Iterable[bytes], size: int = READ_SIZE) -> Iterator[bytes]:
    """A file-like object (read until EOF) or an iterable of bytes, as chunks of bytes."""
    read = getattr(src, "read", None)
    if read is None:
        for chunk in src:  # type: ignore[union-attr]
            if chunk:
                yield bytes(chunk)
        return
    while chunk := read(size):
        yield chunk


class Repository(ABC):
    url: str

    @abstractmethod
    def put_stream(
        self, key: str, src: BinaryIO | Iterable[bytes], *, if_absent: bool = False
    ) -> ObjectInfo:
        """Store src under key atomically; exceptions from src propagate and store nothing.
        if_absent: create-if-absent, ObjectExists (and nothing stored) when key exists."""

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        return self.put_stream(key, [data], if_absent=if_absent)

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A streaming reader; ObjectNotFound if the key does not exist."""

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as handle:
            return handle.read()

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Stored size in bytes, None if the key does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys starting with prefix (relative to the repository root), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove key; a missing key is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def copy_to(self, other: Repository, key: str) -> None:
        """Copy key to the same key in other (streamed; S3 to S3 is server-side)."""
        with self.open_read(key) as handle:
            other.put_stream(key, handle)

    @abstractmethod
    def debris(self, older_than: float) -> list[Debris]:
        """Leftovers of killed writers older than older_than seconds (never a finished object)."""

    @abstractmethod
    def remove_debris(self, item: Debris) -> None:
        """Remove one leftover that debris() reported."""

    def describe(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class FileRepository(Repository):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        self._require_root()
        return self.root.joinpath(*check_key(key).split("/"))

    def _require_root(self) -> None:
        # A missing root is a wrong path or an unmounted volume, never "no backups" (or "WAL
        # not archived", which would end a recovery early).
        if not self.root.is_dir():
            raise UsageError(
                f"repository {self.url} does not exist or is not a directory: check the path "
                "and that its volume is mounted (the first backup does not create it)"
            )

    def _fail(self, action: str, key: str, exc: OSError) -> DbtierError:
        return DbtierError(f"cannot {action} {key} in {self.url}: {exc.strerror or exc}")

    def put_stream(
        self, key: str, src: BinaryIO | Iterable[bytes], *, if_absent: bool = False
    ) -> ObjectInfo:
        path = self._path(key)
        if if_absent and path.exists():
            raise ObjectExists(f"object {key} already exists in {self.url}")
        digest = hashlib.sha256()
        size = 0
        for attempt in range(3):
            try:
                _makedirs_durable(path.parent, self.root)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
                break
            except FileNotFoundError:
                if attempt == 2:  # a concurrent delete() keeps pruning the directory
                    raise self._fail(
                        "write", key, FileNotFoundError("directory vanished")
                    ) from None
            except OSError as exc:
                raise self._fail("write", key, exc) from None
        try:
            # mkstemp creates 0600; objects get the mode any new file would (0666 & ~umask) so
            # hosts sharing the repository through a group can read what this one wrote.
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_chunks(src):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())  # the rename must not land before the data does
            if if_absent:
                # link() fails if the name exists: of two concurrent writers exactly one wins.
                os.link(tmp, path)
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        except FileExistsError:
            Path(tmp).unlink(missing_ok=True)
            raise ObjectExists(f"object {key} already exists in {self.url}") from None
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._fail("write", key, exc) from exc
            raise
        return ObjectInfo(key=key, size=size, sha256=digest.hexdigest())

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None
        except OSError as exc:
            raise self._fail("read", key, exc) from None

    def size(self, key: str) -> int | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail("stat", key, exc) from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> list[str]:
        self._require_root()
        # Walk only the directory the prefix names ("backups/2026" walks backups/).
        directory = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not directory.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(directory):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue  # a writer's scratch file (or one a killed writer left behind)
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("delete", key, exc) from None
        # Prune now-empty directories (backups/<id>/) up to the root; non-empty ones stay.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def debris(self, older_than: float) -> list[Debris]:
        self._require_root()
        now = time.time()
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                try:
                    age = now - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # its writer just finished or cleaned up
                if age >= older_than:
                    found.append(Debris("tmp-file", path.relative_to(self.root).as_posix(), age))
        return sorted(found, key=lambda d: d.key)

    def remove_debris(self, item: Debris) -> None:
        path = self.root.joinpath(*item.key.split("/"))
        if not path.name.startswith(TMP_PREFIX):
            raise ValueError(f"not debris: {item.key}")
        path.unlink(missing_ok=True)


def _makedirs_durable(directory: Path, root: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry changed: a crash must not lose a directory
    that a written (and fsynced) object lives in."""
    missing = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current == root or current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # a concurrent writer made it
        _fsync_dir(path.parent)


def _umask() -> int:
    """The process umask (reading it means setting it; done once, before any threads write)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _S3Reader:
    """Streaming body of a GET; a dropped connection resumes with a Range request."""

    def __init__(self, repo: S3Repository, key: str) -> None:
        self._repo = repo
        self._key = key
        self._offset = 0
        self._resumes = 0
        resp = repo._call("GetObject", key, repo.client.get_object, Key=repo._full(key))
        self._etag = resp["ETag"]
        self._body = resp["Body"]

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        while True:
            try:
                data = self._body.read(None if size is None or size < 0 else size)
                self._offset += len(data)
                return data
            except (BotoCoreError, HTTPError, OSError) as exc:
                # botocore does not resume a streamed body: continue from our offset.
                self._resumes += 1
                if self._resumes > READ_RESUMES:
                    raise DbtierError(
                        f"reading {self._key} from {self._repo.url} failed: {_reason(exc)}"
                    ) from None
                time.sleep(0.5 * self._resumes)
                self._reopen()

    def _reopen(self) -> None:
        repo = self._repo
        resp = repo._call(
            "GetObject",
            self._key,
            repo.client.get_object,
            Key=repo._full(self._key),
            Range=f"bytes={self._offset}-",
            IfMatch=self._etag,  # the same object, not one replaced meanwhile
        )
        self._body = resp["Body"]

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _S3Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Repository(Repository):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        storage_class: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        workers: int = 4,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        import boto3  # lazy: file:// repositories need no AWS SDK
        from botocore.config import Config

        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} (S3's minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.storage_class = storage_class
        self.part_size = part_size
        self.workers = max(1, workers)
        self.memory_budget = memory_budget
        self.endpoint_url = endpoint_url or first_env(
            "DBTIER_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        )
        self.region = region or first_env("AWS_DEFAULT_REGION", "AWS_REGION")
        common: dict[str, Any] = {
            "connect_timeout": S3_CONNECT_TIMEOUT,
            "read_timeout": S3_READ_TIMEOUT,
            # Custom endpoints (moto, MinIO, IP addresses) rarely resolve bucket subdomains.
            "s3": {"addressing_style": "path" if self.endpoint_url else "auto"},
        }
        session = boto3.session.Session()
        config = Config(
            retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=16,
            **common,
        )
        self.client = session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )
        # Create-if-absent writes send `If-None-Match: *` as a header added before signing:
        # Debian 12's botocore (1.29, what database hosts run) predates the IfNoneMatch
        # parameter and would refuse it, while S3 has honoured the header since 2024.
        self._create_only = session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )
        for operation in ("PutObject", "CompleteMultipartUpload"):
            self._create_only.meta.events.register(f"before-sign.s3.{operation}", _if_none_match)
        # A reachability probe without retries answers "cannot reach S3" (or "does not
        # answer") in seconds, before a backup starts streaming.
        self._probe_client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **common),
        )
        self._probed = False
        self._probe_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _probe(self) -> None:
        from botocore.exceptions import ClientError

        with self._probe_lock:
            if self._probed:
                return
            try:
                self._probe_client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = _error_code(exc)
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise DbtierError(
                        f"S3 bucket {self.bucket} does not exist (at {self.endpoint})"
                    ) from None
                # 403 and friends: the policy may allow objects but not HeadBucket; go on.
            except Exception as exc:
                raise self._translate("HeadBucket", "", exc) from None
            self._probed = True

    def _translate(self, action: str, key: str, exc: BaseException) -> DbtierError:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        what = f"{self.url}/{key}" if key else self.url
        if isinstance(exc, DbtierError):
            return exc
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return DbtierError(f"cannot reach S3 at {self.endpoint}: {_reason(exc)}")
        if isinstance(exc, ReadTimeoutError):
            return DbtierError(
                f"S3 {action} {what} failed: no answer from {self.endpoint} within "
                f"{S3_READ_TIMEOUT}s ({S3_MAX_ATTEMPTS} attempts): check the endpoint and network"
            )
        if isinstance(exc, ConnectionClosedError):
            return DbtierError(f"S3 {action} {what} failed: {_reason(exc)}")
        if isinstance(exc, NoCredentialsError):
            return UsageError("S3: no AWS credentials found (environment, profile or role)")
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            message = exc.response.get("Error", {}).get("Message") or ""
            if code in ("403", "AccessDenied"):
                message = message or "access denied"
            return DbtierError(f"S3 {action} {what} failed: {code}: {message}".rstrip(": "))
        return DbtierError(f"S3 {action} {what} failed: {exc}")

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        """fn(Bucket=..., **kwargs) with every failure turned into a one-line DbtierError."""
        self._probe()
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            code = _error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") and action == "GetObject":
                raise ObjectNotFound(f"object {key} not found in {self.url}") from None
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise ObjectExists(f"object {key} already exists in {self.url}") from None
            raise self._translate(action, key, exc) from None

    def _extra(self) -> dict[str, str]:
        return {"StorageClass": self.storage_class} if self.storage_class else {}

    # -- writing ---------------------------------------------------------------------------

    def put_stream(
        self, key: str, src: BinaryIO | Iterable[bytes], *, if_absent: bool = False
    ) -> ObjectInfo:
        full = self._full(key)
        self._probe()
        digest = hashlib.sha256()
        reader = _PartReader(src, digest)
        first = reader.take(part_size_for(1, self.part_size))
        writer = self._create_only if if_absent else self.client
        if not reader.eof:
            return self._multipart(key, full, first, reader, digest, writer)
        resp = self._call(
            "PutObject", key, writer.put_object, Key=full, Body=first, **self._extra()
        )
        return ObjectInfo(
            key=key, size=len(first), sha256=digest.hexdigest(), version_id=resp.get("VersionId")
        )

    def _multipart(
        self,
        key: str,
        full: str,
        first: bytes,
        reader: _PartReader,
        digest: Any,
        completer: Any,
    ) -> ObjectInfo:
        upload_id = self._call(
            "CreateMultipartUpload",
            key,
            self.client.create_multipart_upload,
            Key=full,
            **self._extra(),
        )["UploadId"]
        uploader = _PartUploader(self, key, full, upload_id)
        try:
            number, data = 1, first
            while True:
                uploader.submit(number, data)
                if reader.eof:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise DbtierError(
                        f"upload of {key} to {self.url} failed: stream larger than "
                        f"{max_stream_size(self.part_size)} bytes ({MAX_PARTS} parts)"
                    )
                data = reader.take(part_size_for(number, self.part_size))
                if not data:  # the previous part ended exactly at EOF
                    break
            parts = uploader.finish()
            resp = self._call(
                "CompleteMultipartUpload",
                key,
                completer.complete_multipart_upload,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            uploader.cancel()
            self._abort(full, upload_id)
            if isinstance(exc, OSError):  # reading the source failed
                raise DbtierError(f"upload of {key} to {self.url} failed: {exc}") from exc
            raise  # S3 errors already name the key; the source's own errors pass unchanged
        return ObjectInfo(
            key=key, size=reader.total, sha256=digest.hexdigest(), version_id=resp.get("VersionId")
        )

    def _abort(self, full: str, upload_id: str) -> None:
        # One try without retries (the line may be what failed): the original error is what
        # the user must see; `backup cleanup` and the bucket's AbortIncompleteMultipartUpload
        # lifecycle rule remove an upload this could not abort.
        try:
            self._probe_client.abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id
            )
        except Exception as exc:
            log("repository.abort_failed", "warning", key=full, reason=_reason(exc))

    # -- reading and the rest -------------------------------------------------------------

    def open_read(self, key: str) -> BinaryIO:
        return _S3Reader(self, key)  # type: ignore[return-value]

    def size(self, key: str) -> int | None:
        self._probe()
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            err = self._translate("HeadObject", key, exc)
            if _error_code(exc) == "403":
                # Without s3:ListBucket, S3 answers 403 for a missing key too.
                err = DbtierError(f"{err} (a missing key looks like this without s3:ListBucket)")
            raise err from None
        return int(head["ContentLength"])

    def list(self, prefix: str) -> list[str]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        keys: list[str] = []

        def pages() -> None:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(self._relative(o["Key"]) for o in page.get("Contents", []))

        self._call("ListObjectsV2", prefix, lambda Bucket: pages())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("DeleteObject", key, self.client.delete_object, Key=self._full(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        batch = [self._full(k) for k in keys]
        for start in range(0, len(batch), 1000):  # DeleteObjects takes at most 1000 keys
            objects = [{"Key": k} for k in batch[start : start + 1000]]
            resp = self._call(
                "DeleteObjects",
                objects[0]["Key"],
                self.client.delete_objects,
                Delete={"Objects": objects, "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise DbtierError(
                    f"S3 DeleteObjects in {self.url}: {len(errors)} keys not deleted, first "
                    f"{self._relative(first['Key'])}: {first.get('Code')}: {first.get('Message')}"
                )

    def debris(self, older_than: float) -> list[Debris]:
        from datetime import UTC, datetime

        uploads: list[Debris] = []
        now = datetime.now(UTC)

        def pages() -> None:
            paginator = self.client.get_paginator("list_multipart_uploads")
            prefix = f"{self.prefix}/" if self.prefix else ""
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    age = (now - upload["Initiated"]).total_seconds()
                    if age >= older_than:
                        key = self._relative(upload["Key"])
                        uploads.append(Debris("multipart-upload", key, age, upload["UploadId"]))

        self._call("ListMultipartUploads", "", lambda Bucket: pages())
        return sorted(uploads, key=lambda d: d.key)

    def remove_debris(self, item: Debris) -> None:
        self._call(
            "AbortMultipartUpload",
            item.key,
            self.client.abort_multipart_upload,
            Key=self._full(item.key),
            UploadId=item.handle,
        )

    def copy_to(self, other: Repository, key: str) -> None:
        if not isinstance(other, S3Repository):
            super().copy_to(other, key)
            return
        from boto3.s3.transfer import TransferConfig

        extra = other._extra()
        other._probe()
        self._call(
            "CopyObject",
            key,
            lambda Bucket: other.client.copy(
                {"Bucket": Bucket, "Key": self._full(key)},
                other.bucket,
                other._full(key),
                ExtraArgs=extra or None,
                SourceClient=self.client,
                Config=TransferConfig(
                    multipart_threshold=64 << 20, multipart_chunksize=256 << 20, max_concurrency=8
                ),
            ),
        )


class _PartReader:
    """Cuts a source into parts of the requested sizes, hashing as it goes."""

    def __init__(self, src: BinaryIO | Iterable[bytes], digest: Any) -> None:
        self._chunks = iter_chunks(src)
        self._digest = digest
        self._pending = b""
        self.eof = False
        self.total = 0

    def take(self, size: int) -> bytes:
        parts = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if len(data) > size:
            data, self._pending = data[:size], data[size:]
        if not self.eof and not self._pending:
            # Peek one chunk so a stream ending exactly on a part boundary is seen as ended.
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
            else:
                self._pending = chunk
        self._digest.update(data)
        self.total += len(data)
        return data


class _PartUploader:
    """Uploads parts on a small thread pool; memory bounded by a byte budget."""

    def __init__(self, repo: S3Repository, key: str, full: str, upload_id: str) -> None:
        self.repo = repo
        self.key = key
        self.full = full
        self.upload_id = upload_id
        self.cancelled = threading.Event()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._etags: dict[int, str] = {}
        self._error: BaseException | None = None
        self._tasks: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"s3-part-{i}", daemon=True)
            for i in range(repo.workers)
        ]
        for thread in self._threads:
            thread.start()

    def _fits(self, size: int) -> bool:
        if self._in_flight == 0:
            return True  # one part always fits, however large
        return (
            self._in_flight < self.repo.workers
            and self._in_flight_bytes + size <= self.repo.memory_budget
        )

    def submit(self, number: int, data: bytes) -> None:
        with self._cond:
            while not self._fits(len(data)) and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._in_flight += 1
            self._in_flight_bytes += len(data)
        self._tasks.put((number, data))

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            number, data = task
            try:
                if not self.cancelled.is_set():
                    etag = self._upload(number, data)
                    with self._cond:
                        self._etags[number] = etag
            except BaseException as exc:
                with self._cond:
                    if self._error is None:
                        self._error = exc
                self.cancelled.set()
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._in_flight_bytes -= len(data)
                    self._cond.notify_all()

    def _upload(self, number: int, data: bytes) -> str:
        repo = self.repo
        try:  # botocore retries transient failures itself (S3_MAX_ATTEMPTS, with backoff)
            resp = repo.client.upload_part(
                Bucket=repo.bucket,
                Key=self.full,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            )
        except Exception as exc:
            raise repo._translate(f"UploadPart {number}", self.key, exc) from None
        return str(resp["ETag"])

    def _stop_threads(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()

    def finish(self) -> list[dict[str, Any]]:
        self._stop_threads()
        if self._error is not None:
            raise self._error
        return [{"ETag": self._etags[n], "PartNumber": n} for n in sorted(self._etags)]

    def cancel(self) -> None:
        """Stop uploading; waits for parts in flight so the abort that follows sticks."""
        self.cancelled.set()
        with self._cond:
            self._cond.notify_all()
        self._stop_threads()


def _if_none_match(request: Any, **_: Any) -> None:
    request.headers["If-None-Match"] = "*"


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _reason(exc: BaseException) -> str:
    # botocore's messages repeat the URL; the innermost cause is the useful part.
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text.splitlines()[0]


def open_repository(
    url: str,
    *,
    storage_class: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    workers: int = 4,
) -> Repository:
    """file:///abs/path or s3://bucket/prefix."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"repository URL {url}: use file:///absolute/path")
        path = Path(unquote(parsed.path))
        if not path.is_absolute() or parsed.query or parsed.fragment:
            raise UsageError(f"repository URL {url}: use file:///absolute/path")
        return FileRepository(path)
    if parsed.scheme == "s3":
        if not parsed.netloc or "@" in parsed.netloc or ":" in parsed.netloc:
            raise UsageError("repository URL: use s3://bucket/prefix (credentials never in URLs)")
        if parsed.query or parsed.fragment:
            raise UsageError(f"repository URL {url}: no query or fragment allowed")
        return S3Repository(
            parsed.netloc,
            unquote(parsed.path),
            storage_class=storage_class,
            endpoint_url=endpoint_url,
            region=region,
            part_size=part_size,
            workers=workers,
        )
    raise UsageError(f"repository URL {url}: use file:///absolute/path or s3://bucket/prefix")


__all__ = [
    "Debris",
    "FileRepository",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "Repository",
    "S3Repository",
    "open_repository",
    "part_size_for",
]
