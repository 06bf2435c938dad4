"""dbtier wal-push / wal-fetch: archive_command and restore_command.

Push semantics (as pgBackRest and WAL-G): a file already archived with the same content succeeds
without uploading; with different content it fails, because two clusters writing one archive, or
a replayed old segment, must never silently replace history. The sidecar (raw SHA-256, wrapped
key) is written after the object, so a half-pushed file is not archived and will be pushed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from . import catalog, keys
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, write_metrics
from .pipeline import download_decrypted, upload_encrypted
from .repository import Repository, open_repository

# restore_command exit codes: 1 = "not in the archive" (normal at the end of the archive);
# above 125 PostgreSQL aborts recovery instead of ending it early at a bad segment.
FETCH_MISSING = 1
FETCH_ABORT = 126


def _repo(settings: Settings) -> Repository:
    url = settings.require("repository", "set BACKUP_REPOSITORY or repository= in dbtier.toml")
    return open_repository(
        url,
        storage_class=settings.storage_class,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def push(settings: Settings, path: str) -> str:
    """Archive one WAL file; returns 'uploaded' or 'exists'."""
    source = Path(path)
    name = source.name
    if not catalog.WAL_FILE_RE.match(name):
        raise UsageError(f"not a WAL file name: {name}")
    if not source.is_file():
        raise UsageError(f"WAL file not found: {source}")
    provider = keys.from_settings(settings)
    repo = _repo(settings)
    job = Job(name="wal_push")
    raw_sha = _sha256(source)
    sidecar_key = catalog.wal_sidecar_key(name)
    if repo.exists(sidecar_key):
        archived = json.loads(repo.get_bytes(sidecar_key))
        if archived.get("raw_sha256") == raw_sha:
            log("wal_push.exists", file=name)
            write_metrics(settings.metrics_dir, job, ok=True, finished=time.time())
            return "exists"
        write_metrics(settings.metrics_dir, job, ok=False, finished=time.time())
        raise DbtierError(
            f"WAL file {name} is already archived with different content (archived sha256 "
            f"{archived.get('raw_sha256', '?')[:12]}..., local {raw_sha[:12]}...): refusing to "
            "overwrite; is another cluster archiving into the same repository?"
        )
    data_key, wrapped = keys.generate_data_key(provider)
    with source.open("rb") as handle:
        # Level 1: WAL must leave fast (RPO); it compresses well even so.
        result = upload_encrypted(repo, catalog.wal_key(name), handle, data_key, level=1)
    sidecar: dict[str, Any] = {
        "name": name,
        "raw_size": result.raw_size,
        "raw_sha256": result.raw_sha256,
        "size": result.size,
        "sha256": result.sha256,
        "data_key": wrapped,
        "pushed_at": catalog.iso(catalog.now_utc()),
        "host": socket.gethostname(),
    }
    repo.put_bytes(sidecar_key, json.dumps(sidecar, sort_keys=True).encode())
    job.bytes = result.size
    write_metrics(settings.metrics_dir, job, ok=True, finished=time.time())
    log("wal_push.done", file=name, bytes=result.size)
    return "uploaded"


def fetch(settings: Settings, name: str, destination: str) -> int:
    """restore_command: 0 fetched, FETCH_MISSING not archived, FETCH_ABORT unusable."""
    if not catalog.WAL_FILE_RE.match(name):
        raise UsageError(f"not a WAL file name: {name}")
    repo = _repo(settings)
    sidecar_key = catalog.wal_sidecar_key(name)
    if not repo.exists(sidecar_key):
        log("wal_fetch.missing", file=name)
        return FETCH_MISSING
    sidecar = json.loads(repo.get_bytes(sidecar_key))
    provider = keys.from_settings(settings)
    data_key = keys.unwrap_data_key(provider, sidecar["data_key"])
    dest = Path(destination)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            result = download_decrypted(
                repo, catalog.wal_key(name), handle, data_key, expected_sha256=sidecar["sha256"]
            )
        if result.raw_sha256 != sidecar["raw_sha256"]:
            raise DbtierError(f"WAL file {name}: content checksum mismatch after decryption")
        os.replace(tmp, dest)
    except DbtierError as exc:
        Path(tmp).unlink(missing_ok=True)
        log("wal_fetch.failed", "error", file=name, error=str(exc))
        return FETCH_ABORT
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log("wal_fetch.done", file=name, bytes=result.raw_size)
    return 0


def read_archived(repo: Repository, provider: keys.KeyProvider, name: str) -> bytes:
    """A small archived file (.history, .backup) in memory, checked like wal-fetch checks."""
    sidecar = json.loads(repo.get_bytes(catalog.wal_sidecar_key(name)))
    data_key = keys.unwrap_data_key(provider, sidecar["data_key"])
    buffer = io.BytesIO()
    result = download_decrypted(
        repo, catalog.wal_key(name), buffer, data_key, expected_sha256=sidecar["sha256"]
    )
    if result.raw_sha256 != sidecar["raw_sha256"]:
        raise DbtierError(f"WAL file {name}: content checksum mismatch after decryption")
    return buffer.getvalue()


def last_archived(repo: Repository) -> tuple[str, str] | None:
    """(name, pushed_at) of the newest archived WAL segment, by name order."""
    names = sorted(n for n in catalog.archived_wal(repo) if catalog.WAL_SEGMENT_RE.match(n))
    if not names:
        return None
    sidecar = json.loads(repo.get_bytes(catalog.wal_sidecar_key(names[-1])))
    return names[-1], sidecar["pushed_at"]
