"""An archived report file: one self-contained object in the backup repository.

    reports/<scenario_id>/<report id>.<pdf|csv>.zst.enc
        = b"DBTIERR1" | header length:u32 | sealed JSON header | encrypted stream

As a WAL object (wal.py): the header is sealed (seal.py) with the object's own data key, which
it carries wrapped by the master key; the stream is the file through zstd and AES-256-GCM chunks
bound to the object key (pipeline.upload_encrypted, as backups). The header holds the report row
as it was (the object alone says what it is, and a restore gets file_size_bytes back, for which
reports_archive has no column), the file's size and SHA-256, when and where it was archived.

Where an object is, in reports_archive terms (s3_bucket, s3_key):
  s3://bucket/prefix  -> (bucket, "prefix/reports/...")           the object's real S3 key
  file:///var/backups -> ("file://", "/var/backups/reports/...")  its absolute path
s3_key always ends with the repository-relative key, so the repository is what precedes it.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__, catalog, seal
from .config import Settings
from .crypto import IntegrityError
from .errors import DbtierError
from .keys import KeyProvider
from .pipeline import HashingReader, decrypt_into, upload_encrypted
from .repository import FileRepository, Repository, S3Repository, open_repository

MAGIC = b"DBTIERR1"
MAX_HEADER = 256 << 10  # the report row's extra_data rides along
FILE_MARKER = "file://"  # s3_bucket of a file:// repository (no S3 bucket name has "://")


def object_key(scenario_id: Any, report_id: Any, report_format: str) -> str:
    return f"reports/{scenario_id}/{report_id}.{report_format}.zst.enc"


@dataclass(frozen=True)
class Stored:
    """What a written or read object is: stored bytes and the file's bytes."""

    key: str
    size: int  # stored (header + compressed + encrypted)
    sha256: str  # of the stored bytes (reports_archive.sha256)
    raw_size: int
    raw_sha256: str
    version_id: str | None = None
    header: dict[str, Any] | None = None


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def write(
    repo: Repository,
    provider: KeyProvider,
    key: str,
    path: Path,
    report: dict[str, Any],
    raw: tuple[int, str],
    level: int,
) -> Stored:
    """Upload path create-if-absent (ObjectExists if key is there). raw = file_digest(path),
    taken before: a file that changed meanwhile is removed again and refused."""
    data_key, wrapped = provider.generate_data_key()
    body = {
        "report": report,
        "raw_size": raw[0],
        "raw_sha256": raw[1],
        "data_key": wrapped,
        "archived_at": catalog.iso(catalog.now_utc()),
        "host": socket.gethostname(),
        "tool_version": __version__,
    }
    sealed = seal.seal("report", key, body, data_key)
    with path.open("rb") as handle:
        result = upload_encrypted(
            repo,
            key,
            handle,
            data_key,
            level=level,
            prefix=seal.frame(MAGIC, sealed),
            if_absent=True,
        )
    if (result.raw_size, result.raw_sha256) != raw:
        repo.delete(key)
        raise DbtierError(f"report file {path} changed while it was archived: rerun")
    return Stored(key, result.size, result.sha256, raw[0], raw[1], result.version_id, body)


def read(
    repo: Repository, provider: KeyProvider, key: str, report_id: str, dest: BinaryIO | None
) -> Stored:
    """Authenticate and decrypt key into dest (None: verify only); the content must match the
    header's size and SHA-256 and the header must name report_id. dest has data on errors:
    write to a scratch file. ObjectNotFound when absent."""
    with repo.open_read(key) as handle:
        stored = HashingReader(handle)
        raw = seal.read_frame(stored, MAGIC, MAX_HEADER, f"object {key}", "report")
        doc = seal.parse(raw, "report", f"object {key}")
        try:
            data_key = provider.unwrap(doc["body"]["data_key"])
        except KeyError:
            raise IntegrityError(f"object {key}: header has no data key") from None
        seal.verify(doc, "report", key, data_key, f"object {key}")
        out = decrypt_into(stored, dest, data_key, key)  # type: ignore[arg-type]
    header: dict[str, Any] = doc["body"]
    if str((header.get("report") or {}).get("id")) != str(report_id):
        raise IntegrityError(f"object {key}: header is for report {header.get('report')!r}")
    raw_sha256 = out.digest.hexdigest()
    if out.size != header.get("raw_size") or raw_sha256 != header.get("raw_sha256"):
        raise IntegrityError(f"object {key}: content does not match its header's checksum")
    return Stored(key, stored.size, stored.digest.hexdigest(), out.size, raw_sha256, None, header)


def location(repo: Repository, key: str) -> tuple[str, str]:
    """(s3_bucket, s3_key) of key in repo, as reports_archive records it."""
    if isinstance(repo, S3Repository):
        return repo.bucket, repo._full(key)
    if isinstance(repo, FileRepository):
        return FILE_MARKER, str(repo.root.joinpath(*key.split("/")))
    raise DbtierError(f"repository {repo.describe()}: report archiving needs file:// or s3://")


def repository_at(settings: Settings, bucket: str, s3_key: str, key: str) -> Repository:
    """The repository holding an object recorded as (bucket, s3_key) whose relative key is key;
    S3 endpoint, region and storage class come from the settings."""
    if s3_key != key and not s3_key.endswith("/" + key):
        raise DbtierError(
            f"reports_archive key {s3_key} does not end with {key}: fix the row's s3_key"
        )
    base = s3_key[: -len(key)].rstrip("/")
    if bucket == FILE_MARKER:
        return FileRepository(Path(base or "/"))
    return open_repository(
        f"s3://{bucket}/{base}" if base else f"s3://{bucket}",
        storage_class=settings.storage_class,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )


def storage_class(repo: Repository) -> str:
    """reports_archive.storage_class: S3's class (STANDARD when none is set), LOCAL on file://."""
    if isinstance(repo, S3Repository):
        return repo.storage_class or "STANDARD"
    return "LOCAL"
