"""dbtier backup full | base: stream a dump or a base backup, compressed and encrypted, to the
repository; the manifest is written last, then the DR copy is made or checked."""

from __future__ import annotations

import contextlib
import fcntl
import re
import socket
import subprocess
import threading
import time
from typing import Any

import psycopg

from . import __version__, catalog, db, wal
from .catalog import StoredObject
from .config import Settings
from .errors import DbtierError
from .jobs import Job, ProgressReader, log, run_job
from .pgtools import Child, program, split_password
from .pipeline import upload_encrypted
from .repository import open_repository
from .store import Store, open_store


def _server_facts(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_database(), current_setting('server_version'), "
        "current_setting('server_version_num')::int, "
        "(SELECT system_identifier::text FROM pg_control_system())"
    ).fetchone()
    return {
        "database": row[0],
        "server_version": row[1],
        "major": row[2] // 10000,
        "system_identifier": row[3],
    }


PIPE_SIZE = 1 << 20  # the child's stdout pipe (Linux default 64 KiB: 16 wake-ups per MiB)


def _widen_pipe(handle: Any) -> None:
    """Best effort: a bigger pipe buffer between the child and us (Linux F_SETPIPE_SZ)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size for a non-root user
        fcntl.fcntl(handle.fileno(), setpipe, PIPE_SIZE)


class StreamClock:
    """Passes a stream through and notes when its first and last bytes came and its longest
    pause: for a base backup, the wait for the checkpoint before the first byte and the wait
    of pg_backup_stop for the archiver (before PostgreSQL's backup_manifest is sent)."""

    def __init__(self, src: Any, started: float) -> None:
        self.src, self.started = src, started
        self.first: float | None = None
        self.last = started
        self.pause, self.pause_at = 0.0, 0.0

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        now = time.monotonic()
        if data:
            if self.first is None:
                self.first = now
            elif now - self.last > self.pause:
                self.pause, self.pause_at = now - self.last, self.last
            self.last = now
        return data

    def phases(self) -> dict[str, float]:
        first = self.first if self.first is not None else self.last
        return {
            "checkpoint_seconds": round(first - self.started, 2),
            "stream_seconds": round(self.last - first - self.pause, 2),
            "longest_pause_seconds": round(self.pause, 2),
            "longest_pause_after_seconds": round(max(0.0, self.pause_at - self.started), 2),
        }


def _stream_object(
    store: Store,
    backup_id: str,
    name: str,
    child: Child,
    total: int | None,
    data_key: bytes,
    *,
    hash_raw: bool = True,
    clock: StreamClock | None = None,
    level: int | None = None,
) -> StoredObject:
    """The child's stdout, compressed and encrypted, as one new object of the backup."""
    key = catalog.object_key(backup_id, name)
    try:
        assert child.proc.stdout is not None
        _widen_pipe(child.proc.stdout)
        raw: Any = child.proc.stdout
        if clock is not None:
            clock.src = raw
            raw = clock
        source = ProgressReader(raw, "backup.progress", total, backup_id=backup_id)
        upload = upload_encrypted(
            store.repo,
            key,
            source,
            data_key,
            level=store.settings.compression_level if level is None else level,
            if_absent=True,
            hash_raw=hash_raw,
        )
    except BaseException:
        child.kill()
        raise
    return StoredObject(
        key=name,
        size=upload.size,
        sha256=upload.sha256,
        raw_size=upload.raw_size,
        raw_sha256=upload.raw_sha256,
    )


def _check_child(store: Store, child: Child, obj: StoredObject, backup_id: str, what: str) -> None:
    """A child that failed after its output was stored: the object is no backup, remove it."""
    if child.wait() != 0:
        store.repo.delete(catalog.object_key(backup_id, obj.key))
        raise DbtierError(f"{what} failed: {child.error_line()}")


def _manifest(
    kind: str,
    backup_id: str,
    facts: dict[str, Any],
    started: Any,
    obj: StoredObject,
    wrapped: dict[str, str],
    settings: Settings,
    fmt: str,
    level: int | None = None,
    **extra: Any,
) -> catalog.Manifest:
    return catalog.Manifest(
        id=backup_id,
        kind=kind,
        database=extra.pop("database", None),
        server_version=facts["server_version"],
        system_identifier=facts["system_identifier"],
        started_at=catalog.iso(started),
        stopped_at=catalog.iso(catalog.now_utc()),
        objects=[obj],
        encryption={"algorithm": "AES-256-GCM", "data_key": wrapped},
        compression={
            "algorithm": "zstd",
            "level": settings.compression_level if level is None else level,
            # written only when an object leaves its raw_sha256 out (see catalog.py)
            **({"content_checksum": catalog.CONTENT_CHECKSUM} if obj.raw_sha256 is None else {}),
        },
        format=fmt,
        tool_version=__version__,
        host=socket.gethostname(),
        **extra,
    )


def is_standby(settings: Settings) -> bool:
    """True when the server of settings.dsn is in recovery (a standby or a restoring server)."""
    with db.connect(settings.dsn, autocommit=True) as conn:
        return bool(conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0])


def _finish(
    store: Store,
    manifest: catalog.Manifest,
    data_key: bytes,
    job: Job,
    secondary: str | None,
    check_replication: bool,
) -> dict[str, Any]:
    key = catalog.write_manifest(store.repo, manifest, data_key)
    job.set(manifest_key=key, location=store.repo.describe() + "/" + key)
    log("backup.manifest", backup_id=manifest.id, key=key)
    result: dict[str, Any] = {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "size": manifest.size,
        "raw_size": manifest.raw_size,
        "repository": store.repo.describe(),
        "dr": None,
    }
    result["dr"] = dr_copy(store, manifest, secondary, check_replication)
    return result


def dr_copy(
    store: Store, manifest: catalog.Manifest, secondary: str | None, check_replication: bool
) -> dict[str, Any] | None:
    """Copy the backup to the DR repository (manifest last), or check replication delivered it."""
    settings = store.settings
    url = secondary or settings.secondary
    if not url:
        return None
    dr = open_repository(
        url,
        storage_class=settings.storage_class,
        endpoint_url=settings.endpoint_url,
        region=settings.secondary_region or settings.region,
    )
    keys_in_order = [catalog.object_key(manifest.id, o.key) for o in manifest.objects]
    keys_in_order.append(catalog.manifest_key(manifest.id))
    if check_replication:
        # S3 replication is asynchronous (Replication Time Control promises 15 minutes): poll.
        deadline = time.monotonic() + settings.replication_wait
        missing = [k for k in keys_in_order if not dr.exists(k)]
        while missing and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            missing = [k for k in missing if not dr.exists(k)]
        state = "replicated" if not missing else "missing"
        log(
            "backup.dr_check",
            backup_id=manifest.id,
            secondary=dr.describe(),
            state=state,
            missing=len(missing),
        )
        if missing:
            raise DbtierError(
                f"DR check: {len(missing)} object(s) of {manifest.id} not in {dr.describe()} "
                f"(first: {missing[0]}); replication has not delivered them within "
                f"{settings.replication_wait:g}s"
            )
        return {
            "mode": "replication-checked",
            "secondary": dr.describe(),
            "objects": len(keys_in_order),
        }
    catalog.bind(dr, store.provider, manifest.system_identifier)  # the DR copy: same key
    started = time.monotonic()
    for key in keys_in_order:
        store.repo.copy_to(dr, key)
    log(
        "backup.dr_copy",
        backup_id=manifest.id,
        secondary=dr.describe(),
        objects=len(keys_in_order),
        seconds=round(time.monotonic() - started, 2),
    )
    return {"mode": "copied", "secondary": dr.describe(), "objects": len(keys_in_order)}


def backup_logical(
    settings: Settings,
    *,
    kind: str = "logical",
    database_dsn: str | None = None,
    secondary: str | None = None,
    check_replication: bool = False,
    row_counts: bool = True,
) -> dict[str, Any]:
    """pg_dump (custom format) in a snapshot shared with exact row counts, streamed."""
    store = open_store(settings)
    dsn = database_dsn or settings.dsn or db.resolve_dsn(None)
    started = catalog.now_utc()
    backup_id = catalog.new_backup_id(kind, started)
    job = Job(
        name=f"backup_{'full' if kind == 'logical' else kind}", kind=kind, backup_id=backup_id
    )
    with (
        run_job(
            job,
            history_dsn=dsn if settings.history_dsn is None else settings.history_dsn,
            metrics_dir=settings.metrics_dir,
        ),
        db.connect(dsn) as conn,
    ):
        facts = _server_facts(conn)
        store.bind(facts["system_identifier"])  # before a byte is written
        job.set(
            database=facts["database"],
            server_version=facts["server_version"],
            repository=store.describe(),
            encrypted=True,
            compression="zstd",
        )
        conn.commit()  # the snapshot's transaction must start with SET TRANSACTION
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (settings.lock_wait_timeout,))
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        counts = db.count_rows(conn, db.user_tables(conn)) if row_counts else {}
        data_key, wrapped = store.provider.generate_data_key()
        bare_dsn, env = split_password(dsn)
        cmd = [
            program("pg_dump", facts["major"], settings.pg_bindir),
            "--format=custom",
            "--compress=0",
            f"--snapshot={snapshot}",
            f"--lock-wait-timeout={settings.lock_wait_timeout}",
            "--no-password",
            "--dbname",
            bare_dsn,
        ]
        child = Child(cmd, env, stdout=subprocess.PIPE)
        log("backup.dump", backup_id=backup_id, database=facts["database"], tables=len(counts))
        # A dump's size is unknown up front: bytes and rate only.
        obj = _stream_object(store, backup_id, "dump.pgc.zst.enc", child, None, data_key)
        _check_child(store, child, obj, backup_id, "pg_dump")
        conn.rollback()
        job.bytes = obj.size
        manifest = _manifest(
            kind,
            backup_id,
            facts,
            started,
            obj,
            wrapped,
            settings,
            "pg_dump-custom",
            database=facts["database"],
            row_counts=counts,
        )
        job.set(checksum=obj.sha256)
        return _finish(store, manifest, data_key, job, secondary, check_replication)
    raise AssertionError("unreachable")  # pragma: no cover


def backup_base(
    settings: Settings,
    *,
    secondary: str | None = None,
    check_replication: bool = False,
    wal_wait: float = 120.0,
) -> dict[str, Any]:
    """pg_basebackup (tar to stdout, WAL from the archive) — the basis for PITR."""
    store = open_store(settings)
    dsn = settings.dsn or db.resolve_dsn(None)
    started = catalog.now_utc()
    backup_id = catalog.new_backup_id("base", started)
    job = Job(name="backup_base", kind="base", backup_id=backup_id)
    with run_job(
        job,
        history_dsn=dsn if settings.history_dsn is None else settings.history_dsn,
        metrics_dir=settings.metrics_dir,
    ):
        with db.connect(dsn, autocommit=True) as conn:
            facts = _server_facts(conn)
            archiving = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
            if archiving == "off":
                raise DbtierError(
                    "archive_mode is off: a base backup without WAL archiving cannot "
                    "be used for point-in-time recovery"
                )
            failing = _archiver_failure(conn)
            first_segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[
                0
            ]
            total = conn.execute(
                "SELECT sum(pg_database_size(oid))::bigint FROM pg_database"
            ).fetchone()[0]
            segment_size = int(
                conn.execute(
                    "SELECT setting::bigint * CASE unit WHEN 'MB' THEN 1048576 WHEN 'kB' "
                    "THEN 1024 ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size'"
                ).fetchone()[0]
            )
        store.bind(facts["system_identifier"])
        if failing:
            # pg_basebackup would wait forever for WAL that never gets archived.
            raise DbtierError(f"WAL archiving is failing ({failing}): fix it before a base backup")
        job.set(
            database=facts["database"],
            server_version=facts["server_version"],
            repository=store.describe(),
            encrypted=True,
            compression="zstd",
        )
        data_key, wrapped = store.provider.generate_data_key()
        bare_dsn, env = split_password(dsn)
        label = f"dbtier {backup_id}"
        cmd = [
            program("pg_basebackup", facts["major"], settings.pg_bindir),
            f"--label={label}",
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            # PostgreSQL's own backup_manifest stays (file list, sizes, WAL range), without a
            # CRC-32C of every file computed by the walsender (0.4 CPU s per 2.5 GB on the
            # server): the stream is authenticated by GCM and checked by zstd's checksum.
            "--manifest-checksums=NONE",
            "--verbose",
            "--no-password",
            "--dbname",
            bare_dsn,
        ]
        clock = StreamClock(None, time.monotonic())
        child = Child(cmd, env, stdout=subprocess.PIPE)
        watchdog = ArchiverWatchdog(dsn, child, wal_wait)
        watchdog.start()
        log("backup.base", backup_id=backup_id)
        try:
            # No SHA-256 of the raw tar (1.5 CPU s per 2.5 GB on the critical path): zstd's
            # frame checksum and the GCM tags protect it (catalog.CONTENT_CHECKSUM).
            obj = _stream_object(
                store,
                backup_id,
                "base.tar.zst.enc",
                child,
                total,
                data_key,
                hash_raw=False,
                clock=clock,
                level=settings.base_compression_level,
            )
        finally:
            watchdog.stop()
        streamed = time.monotonic()
        if watchdog.reason:
            child.wait()
            store.repo.delete(catalog.object_key(backup_id, obj.key))
            raise DbtierError(f"base backup stopped: {watchdog.reason}")
        _check_child(store, child, obj, backup_id, "pg_basebackup")
        # The server archives a backup history file (<start segment>.<offset>.backup) naming
        # the label and the exact start and stop WAL positions; it is the authoritative record.
        history = _backup_history_file(store, label, first_segment, wal_wait)
        start_lsn, start_wal = _location(history, "START WAL LOCATION")
        stop_lsn, stop_wal = _location(history, "STOP WAL LOCATION")
        timeline = int(history.get("START TIMELINE", "1"))
        _wait_for_wal(store, stop_wal, wal_wait)
        phases = {
            **clock.phases(),
            "upload_end_seconds": round(streamed - clock.last, 2),
            "wal_check_seconds": round(time.monotonic() - streamed, 2),
        }
        log("backup.phases", backup_id=backup_id, **phases)
        job.bytes = obj.size
        job.set(start_lsn=start_lsn, stop_lsn=stop_lsn, timeline=timeline, checksum=obj.sha256)
        manifest = _manifest(
            "base",
            backup_id,
            facts,
            started,
            obj,
            wrapped,
            settings,
            "tar",
            level=settings.base_compression_level,
            start_lsn=start_lsn,
            stop_lsn=stop_lsn,
            timeline=timeline,
            start_wal_file=start_wal,
            stop_wal_file=stop_wal,
            wal_segment_size=segment_size,
        )
        written = time.monotonic()
        result = _finish(store, manifest, data_key, job, secondary, check_replication)
        phases["finish_seconds"] = round(time.monotonic() - written, 2)
        return {**result, "phases": phases}
    raise AssertionError("unreachable")  # pragma: no cover


HISTORY_LINE = re.compile(r"^(?P<key>[A-Z ]+): (?P<value>.*)$")
LOCATION = re.compile(r"^(?P<lsn>[0-9A-F]+/[0-9A-F]+) \(file (?P<file>[0-9A-F]{24})\)$")


def _parse_history(text: str) -> dict[str, str]:
    return {m["key"]: m["value"] for m in map(HISTORY_LINE.match, text.splitlines()) if m}


def _location(history: dict[str, str], key: str) -> tuple[str, str]:
    match = LOCATION.match(history.get(key, ""))
    if not match:
        raise DbtierError(f"backup history file: cannot read {key} ({history.get(key)!r})")
    return match["lsn"], match["file"]


def _backup_history_file(
    store: Store, label: str, first_segment: str, timeout: float
) -> dict[str, str]:
    """The archived backup history file carrying our label (the server archives it last)."""
    timeline, log_id = first_segment[:8], int(first_segment[8:16], 16)
    prefixes = [f"wal/{timeline}{log_id:08X}", f"wal/{timeline}{log_id + 1:08X}"]
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        for prefix in prefixes:
            for key in sorted(store.repo.list(prefix), reverse=True):
                name = key[len("wal/") : -len(".zst.enc")]
                if not key.endswith(".backup.zst.enc") or name < first_segment or name in seen:
                    continue
                seen.add(name)
                text = wal.read_archived(store, name).decode(errors="replace")
                history = _parse_history(text)
                if history.get("LABEL") == label:
                    return history
        if time.monotonic() >= deadline:
            raise DbtierError(
                f"the backup history file for '{label}' is not in {store.describe()} after "
                f"{timeout:g}s: does archive_command (dbtier wal-push) use this repository?"
            )
        time.sleep(0.5)


def _archiver_failure(conn: psycopg.Connection) -> str | None:
    """'last failed <wal> at <time>' when the archiver's latest attempt failed, else None."""
    row = conn.execute(
        "SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver "
        "WHERE last_failed_time > coalesce(last_archived_time, '-infinity')"
    ).fetchone()
    return f"last failed {row[0]} at {row[1]:%Y-%m-%d %H:%M:%S%z}" if row else None


class ArchiverWatchdog(threading.Thread):
    """Stops pg_basebackup when WAL archiving keeps failing during the backup.

    Without WAL streaming, the server ends a base backup only once the WAL it needs is archived;
    with a broken archive_command pg_basebackup would wait forever.
    """

    def __init__(self, dsn: str, child: Child, grace: float, interval: float = 2.0) -> None:
        super().__init__(name="archiver-watchdog", daemon=True)
        self.dsn, self.child, self.grace, self.interval = dsn, child, grace, interval
        self.reason: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        failing_since: float | None = None
        while not self._stop_event.wait(self.interval):
            try:
                with db.connect(self.dsn, autocommit=True) as conn:
                    failure = _archiver_failure(conn)
            except (DbtierError, psycopg.Error):
                continue  # the backup itself reports an unreachable server
            if failure is None:
                failing_since = None
                continue
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= self.grace:
                self.reason = f"WAL archiving failing for {self.grace:g}s ({failure})"
                log("backup.archiver_failing", "error", detail=failure)
                self.child.kill()
                return

    def stop(self) -> None:
        self._stop_event.set()


def _wait_for_wal(store: Store, name: str, timeout: float) -> None:
    """A base backup is usable only once the WAL up to its end point is archived."""
    deadline = time.monotonic() + timeout
    while not store.repo.exists(catalog.wal_key(name)):
        if time.monotonic() >= deadline:
            raise DbtierError(
                f"WAL segment {name} (end of the base backup) is not in {store.describe()} after "
                f"{timeout:g}s: check archive_command (dbtier wal-push) and the server log"
            )
        time.sleep(0.5)
