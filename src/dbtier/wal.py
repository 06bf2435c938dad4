"""dbtier wal-push / wal-fetch: archive_command and restore_command.

One object per WAL file, so its data and its metadata can never disagree::

    wal/<name>.zst.enc = b"DBTIERW2" | header length:u32 | sealed JSON header | encrypted stream

The header (authenticated, bound to the name) carries the raw size and SHA-256, the wrapped data
key, the cluster's system identifier, when and where it was pushed. The stream is bound to the
object key too, so no object can stand in for another.

Push semantics (as pgBackRest and WAL-G, plus create-if-absent): a file already archived with the
same content succeeds without uploading; with different content it fails, because two clusters
writing one archive, or a replayed old segment, must never silently replace history. Two
concurrent pushes of one file race on a create-if-absent write: exactly one stores it, the other
then compares. A segment is checked before it leaves: not empty, not short, its page header's
address matches its name, and its system identifier matches the repository's cluster.

Fetch semantics: exit 1 ("not in the archive", which ends recovery normally) only for a confirmed
absence. Anything else -- a wrong key, a corrupt object, an unreachable repository after retries,
a bad destination -- exits FETCH_ABORT, which makes PostgreSQL stop recovery instead of ending it
early at the wrong point.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__, catalog, seal
from .config import Settings
from .crypto import IntegrityError
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job
from .pipeline import decrypt_into, upload_encrypted
from .repository import ObjectExists, ObjectNotFound, Repository
from .store import Store, open_store

# restore_command exit codes: 1 = "not in the archive" (normal at the end of the archive);
# above 125 PostgreSQL aborts recovery instead of ending it early at a bad segment.
FETCH_MISSING = 1
FETCH_ABORT = 126
FETCH_ATTEMPTS = 3

WAL_MAGIC = b"DBTIERW2"
MAX_HEADER = 64 << 10
# XLogLongPageHeaderData: xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
# xlp_rem_len u32 (+4 padding), xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32.
_PAGE_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002


def _is_text_file(name: str) -> bool:
    return name.endswith((".history", ".backup"))


def inspect_segment(path: Path, name: str) -> str | None:
    """The system identifier of a WAL segment (None for .history/.backup text files).

    Refuses what must never be archived: an empty or short file, one whose first page is not a
    WAL long page header, or one whose page address does not match its name (renamed, stale).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_PAGE_HEADER.size)
    except OSError as exc:
        raise UsageError(f"cannot read WAL file {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise UsageError(f"WAL file {path} is empty: refusing to archive it")
    if _is_text_file(name):
        return None
    if len(head) < _PAGE_HEADER.size:
        raise UsageError(f"WAL file {path} is {size} bytes: too short for a WAL segment")
    _magic, info, _tli, pageaddr, _rem, sysid, seg_size, blcksz = _PAGE_HEADER.unpack(head)
    sane_sizes = seg_size in {1 << n for n in range(20, 31)} and blcksz in {
        1 << n for n in range(10, 16)
    }
    if not info & XLP_LONG_HEADER or not sane_sizes:
        raise UsageError(f"WAL file {path} does not start with a WAL segment header")
    if size != seg_size:
        raise UsageError(
            f"WAL segment {path} has {size} bytes but its header says {seg_size}: refusing a "
            "short or padded segment"
        )
    expected = catalog.segment_number(name, seg_size) * seg_size
    if pageaddr != expected:
        raise UsageError(
            f"WAL file {name} holds the segment at {pageaddr >> 32:X}/{pageaddr & 0xFFFFFFFF:X}, "
            "not the one its name says: renamed or stale file"
        )
    return str(sysid)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encode_header(name: str, body: dict[str, Any], data_key: bytes) -> bytes:
    raw = seal.seal("wal", catalog.wal_key(name), body, data_key)
    return seal.frame(WAL_MAGIC, raw)


def read_header(handle: BinaryIO, name: str, store: Store) -> tuple[dict[str, Any], bytes]:
    """(authenticated header, data key) of an archived WAL object; handle stays at the stream."""
    key = catalog.wal_key(name)
    raw = seal.read_frame(handle, WAL_MAGIC, MAX_HEADER, f"WAL object {name}", "WAL")
    doc = seal.parse(raw, "wal", key)
    try:
        data_key = store.provider.unwrap(doc["body"]["data_key"])
    except KeyError:
        raise IntegrityError(f"WAL object {name}: header has no data key") from None
    seal.verify(doc, "wal", key, data_key, f"WAL object {name}")
    body: dict[str, Any] = doc["body"]
    if body.get("name") != name:
        raise IntegrityError(f"WAL object {name}: header names {body.get('name')!r}")
    return body, data_key


def read_object(store: Store, name: str, dest: BinaryIO | None) -> dict[str, Any]:
    """Authenticate, decrypt and check an archived WAL file into dest (None: verify only).

    ObjectNotFound when it is not archived. dest has received data when an error is raised.
    """
    key = catalog.wal_key(name)
    with store.repo.open_read(key) as handle:
        header, data_key = read_header(handle, name, store)
        out = decrypt_into(handle, dest, data_key, key)
    if out.size != header.get("raw_size") or out.digest.hexdigest() != header.get("raw_sha256"):
        raise IntegrityError(f"WAL object {name}: content does not match its header's checksum")
    return header


def read_archived(store: Store, name: str) -> bytes:
    """A small archived file (.history, .backup) in memory, checked like wal-fetch checks."""
    buffer = io.BytesIO()
    read_object(store, name, buffer)
    return buffer.getvalue()


def _existing(store: Store, name: str) -> dict[str, Any] | None:
    """The header of an archived file, None if it is not archived."""
    try:
        handle = store.repo.open_read(catalog.wal_key(name))
    except ObjectNotFound:
        return None
    with handle:
        return read_header(handle, name, store)[0]


def _same_or_refuse(existing: dict[str, Any], name: str, raw_sha: str) -> str:
    if existing.get("raw_sha256") == raw_sha:
        log("wal_push.exists", file=name)
        return "exists"
    raise DbtierError(
        f"WAL file {name} is already archived with different content (archived sha256 "
        f"{str(existing.get('raw_sha256'))[:12]}..., local {raw_sha[:12]}...): refusing to "
        "overwrite; is another cluster archiving into the same repository?"
    )


def _push_file(store: Store, source: Path, name: str, system_identifier: str | None) -> str:
    raw_sha = _sha256(source)
    existing = _existing(store, name)
    if existing is not None:
        return _same_or_refuse(existing, name, raw_sha)
    data_key, wrapped = store.provider.generate_data_key()
    header = {
        "name": name,
        "raw_size": source.stat().st_size,
        "raw_sha256": raw_sha,
        "data_key": wrapped,
        "system_identifier": system_identifier,
        "pushed_at": catalog.iso(catalog.now_utc()),
        "host": socket.gethostname(),
        "tool_version": __version__,
    }
    key = catalog.wal_key(name)
    try:
        with source.open("rb") as handle:
            # Level 1: WAL must leave fast (RPO); it compresses well even so.
            result = upload_encrypted(
                store.repo,
                key,
                handle,
                data_key,
                level=1,
                prefix=_encode_header(name, header, data_key),
                if_absent=True,
            )
    except ObjectExists:  # a concurrent push of the same file won the race
        existing = _existing(store, name)
        if existing is None:
            raise DbtierError(f"WAL file {name}: a concurrent push vanished; retry") from None
        return _same_or_refuse(existing, name, raw_sha)
    if result.raw_sha256 != raw_sha:  # the file changed while it was read: never keep that
        store.repo.delete(key)
        raise DbtierError(f"WAL file {name} changed while it was archived; retry")
    log("wal_push.done", file=name, bytes=result.size)
    return "uploaded"


def _ensure_history(store: Store, directory: Path, timeline: int) -> None:
    """A segment of timeline N > 1 brings N's history file along when it is not archived yet
    (a server promoted with archiving off never archives it, and a later recovery across the
    switch would silently stay on the old timeline)."""
    name = f"{timeline:08X}.history"
    if store.repo.size(catalog.wal_key(name)) is not None:
        return
    path = directory / name
    if not path.is_file():
        log("wal_push.history_missing", "warning", file=name, directory=str(directory))
        return
    _push_file(store, path, name, None)
    log("wal_push.history", file=name)


def push(settings: Settings, path: str) -> str:
    """Archive one WAL file; returns 'uploaded' or 'exists'."""
    source = Path(path)
    name = source.name
    if not catalog.WAL_FILE_RE.match(name):
        raise UsageError(f"not a WAL file name: {name}")
    if not source.is_file():
        raise UsageError(f"WAL file not found: {source}")
    job = Job(name="wal_push")
    with run_job(job, history_dsn=None, metrics_dir=settings.metrics_dir):
        system_identifier = inspect_segment(source, name)
        store = open_store(settings)
        store.bind(system_identifier)
        timeline = int(name[:8], 16)
        if timeline > 1 and not _is_text_file(name):
            _ensure_history(store, source.parent, timeline)
        outcome = _push_file(store, source, name, system_identifier)
        job.bytes = source.stat().st_size if outcome == "uploaded" else 0
        return outcome
    raise AssertionError("unreachable")  # pragma: no cover


def fetch(settings: Settings, name: str, destination: str) -> int:
    """restore_command: 0 fetched, FETCH_MISSING confirmed not archived, FETCH_ABORT otherwise."""
    try:
        if not catalog.WAL_FILE_RE.match(name):
            raise UsageError(f"not a WAL file name: {name}")
        dest = Path(destination)
        if not dest.parent.is_dir():
            raise UsageError(f"destination directory {dest.parent} does not exist")
        store = open_store(settings)
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                return _fetch_once(store, name, dest)
            except ObjectNotFound:
                log("wal_fetch.missing", file=name)
                return FETCH_MISSING
            except (IntegrityError, UsageError):
                raise  # retrying cannot fix a wrong key, a corrupt object or bad input
            except DbtierError as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise
                log("wal_fetch.retry", "warning", file=name, attempt=attempt, error=str(exc))
                time.sleep(attempt)
    except Exception as exc:  # anything but a confirmed absence must stop recovery
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log("wal_fetch.failed", "error", file=name, error=message)
        print(f"dbtier: error: wal-fetch {name}: {message} (recovery stops)", file=sys.stderr)
        return FETCH_ABORT
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch_once(store: Store, name: str, dest: Path) -> int:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            header = read_object(store, name, handle)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log("wal_fetch.done", file=name, bytes=header.get("raw_size"))
    return 0


def pushed_at(store: Store, name: str) -> str | None:
    """When an archived WAL file was pushed (its authenticated header), None if not archived."""
    header = _existing(store, name)
    return None if header is None else str(header["pushed_at"])


def last_archived(store: Store) -> tuple[str, str] | None:
    """(name, pushed_at) of the newest archived WAL segment (highest timeline, then number)."""
    names = [n for n in catalog.archived_wal(store.repo) if catalog.WAL_SEGMENT_RE.match(n)]
    if not names:
        return None
    header = _existing(store, names[-1])
    if header is None:
        return None
    return names[-1], str(header["pushed_at"])


def repository_of(store: Store) -> Repository:
    return store.repo
