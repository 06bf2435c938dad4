"""dbtier backup verify | list | cleanup."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import catalog, db, wal
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job
from .pgcluster import LocalCluster, require_server, scratch_dir
from .pgtools import last_line, program
from .pipeline import verify_object
from .repository import Repository
from .restore import _download, _pg_restore_list, count_rows
from .store import Store, open_store

DEBRIS_GRACE_HOURS = 24  # leftovers of killed writers are removed once this old


def _row(m: catalog.Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "status": "ok",
        "database": m.database,
        "started_at": m.started_at,
        "stopped_at": m.stopped_at,
        "size": m.size,
        "raw_size": m.raw_size,
        "server_version": m.server_version,
        "start_wal_file": m.start_wal_file,
        "stop_wal_file": m.stop_wal_file,
        "tables": len(m.row_counts),
    }


def list_all(settings: Settings) -> list[dict[str, Any]]:
    """Every backup, oldest first; a broken one is listed with its reason, never hidden and
    never hiding the others."""
    store = open_store(settings)
    found = catalog.scan(store.repo, store.provider)
    rows = [_row(m) for m in found.backups]
    for bad in found.broken:
        when = catalog.backup_time(bad.id)
        rows.append(
            {
                "id": bad.id,
                "kind": bad.id.rsplit("-", 1)[-1],
                "status": "broken",
                "reason": bad.reason,
                "stopped_at": catalog.iso(when) if when else "",
                "size": None,
            }
        )
    rows.sort(key=lambda r: (r["stopped_at"] or "", r["id"]))
    now = catalog.now_utc()
    for r in rows:
        stopped = catalog.parse_time(r["stopped_at"]) if r["stopped_at"] else None
        r["age_seconds"] = int((now - stopped).total_seconds()) if stopped else None
    return rows


VERIFY_KINDS = ("logical", "base")


def verify(
    settings: Settings, ref: str, *, deep: bool = False, kind: str | None = None
) -> dict[str, Any]:
    """Verify one backup: `ref` is an id or `latest`, the newest good backup of `kind` (logical or
    base), or of either kind when `kind` is None. Scheduled checks verify the newest of each kind,
    so a broken base backup is not hidden behind a newer good logical one."""
    if kind is not None and kind not in VERIFY_KINDS:
        raise UsageError(f"unknown backup kind {kind!r} (logical or base)")
    store = open_store(settings)
    repo, provider = store.repo, store.provider
    # `latest` never means a safety backup (those are verified by id)
    manifest = catalog.find_backup(repo, provider, ref, kinds=(kind,) if kind else VERIFY_KINDS)
    if kind is not None and manifest.kind != kind:
        raise UsageError(f"backup {manifest.id} is a {manifest.kind} backup, not {kind}")
    if deep:
        _deep_prerequisites(settings, manifest)
    data_key = provider.unwrap(manifest.wrapped_key)
    job = Job(
        name="verify", kind="verify", backup_id=f"{catalog.new_backup_id('verify')}-{manifest.id}"
    )
    with run_job(job, history_dsn=settings.history(), metrics_dir=settings.metrics_dir):
        try:
            report = _verify(store, settings, manifest, data_key, job, deep)
        except DbtierError as exc:
            if not isinstance(exc, UsageError):  # a setup problem says nothing of the backup
                _record(repo, manifest, data_key, ok=False, deep=deep, error=str(exc))
            raise
        _record(repo, manifest, data_key, ok=True, deep=deep)
        log("verify.ok", backup_id=manifest.id)
        return report
    raise AssertionError("unreachable")  # pragma: no cover


def _deep_prerequisites(settings: Settings, manifest: catalog.Manifest) -> None:
    """What this host needs for a deep verify, checked before the job starts: a missing server
    or an unusable /tmp is its setup, not a failed verification of the backup (no metric, no
    verify.json)."""
    major = int(manifest.server_version.split(".")[0])
    require_server(major, settings.pg_bindir, f"backup verify --deep {manifest.id}")
    try:
        shutil.rmtree(scratch_dir("dbtier-deep-"))
    except OSError as exc:
        raise UsageError(
            f"cannot create the deep verify's scratch directory in /tmp ({exc.strerror or exc}): "
            "free space or fix /tmp's permissions, or run it on another host"
        ) from None


def _record(repo: Repository, manifest: catalog.Manifest, data_key: bytes, **result: Any) -> None:
    try:
        catalog.write_verification(repo, manifest, data_key, **result)
    except DbtierError as exc:  # a read-only host can verify; retention then ignores the result
        log("verify.unrecorded", "warning", backup_id=manifest.id, reason=str(exc))


def _verify(
    store: Store,
    settings: Settings,
    manifest: catalog.Manifest,
    data_key: bytes,
    job: Job,
    deep: bool,
) -> dict[str, Any]:
    repo, provider = store.repo, store.provider
    checked = []
    for obj in manifest.objects:
        result = verify_object(
            repo,
            catalog.object_key(manifest.id, obj.key),
            data_key,
            obj.sha256,
            expected_size=obj.size,
            expected_raw_sha256=obj.raw_sha256,
            hash_raw=False,  # unless the manifest has a raw SHA-256 to compare with
            expected_raw_size=obj.raw_size,
        )
        job.bytes += result.raw_size
        checked.append(obj.key)
        log("verify.object", backup_id=manifest.id, object=obj.key, ok=True)
    report: dict[str, Any] = {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "objects": checked,
        "deep": deep,
    }
    if manifest.kind == "base":
        report["wal"] = verify_wal(store, manifest)
        if deep:
            report["recovery"] = _deep_base(settings, repo, provider, manifest)
    else:
        major = int(manifest.server_version.split(".")[0])
        with tempfile.TemporaryDirectory(prefix="dbtier-verify-") as tmp:
            dump = _download(repo, manifest, provider, Path(tmp))[0]
            report["toc_entries"] = len(_pg_restore_list(major, settings.pg_bindir, dump))
            if deep:
                report["row_counts"] = _deep_logical(settings, manifest, dump, major)
    return report


def verify_wal(store: Store, manifest: catalog.Manifest) -> dict[str, Any]:
    """Every WAL object the base backup needs: from its start to the end of the archive,
    present (no gap), authentic and intact (fully decrypted and checked), history files too."""
    names = catalog.archived_wal(store.repo)
    missing = catalog.missing_wal(names, manifest)
    if missing:
        raise DbtierError(
            f"base backup {manifest.id} is unusable: it needs WAL {missing[0]}, which is not "
            f"archived ({len(missing)} segment(s) missing)"
        )
    size = manifest.wal_segment_size
    have, gaps = catalog.wal_gaps(names, manifest)
    start = catalog.segment_number(manifest.start_wal_file or "", size)
    last = max(have)
    if gaps:
        before = max(n for n in have if n < gaps[0])
        first = catalog.segment_name(manifest.timeline or 1, gaps[0], size)
        raise DbtierError(
            f"WAL archive gap: segment {first} is missing ({len(gaps)} segment(s) in all): "
            f"point-in-time recovery from {manifest.id} cannot go past {have[before][-1]}"
        )
    histories = [
        n for n in names if n.endswith(".history") and int(n[:8], 16) > (manifest.timeline or 1)
    ]
    checked = 0
    for number in range(start, last + 1):
        for name in have[number]:
            wal.read_object(store, name, None)
            checked += 1
    for name in histories:
        wal.read_object(store, name, None)
    return {
        "required": f"{manifest.start_wal_file}..{manifest.stop_wal_file}",
        "through": max(have[last]),
        "segments_checked": checked,
        "history_files_checked": len(histories),
    }


def _deep_base(
    settings: Settings, repo: Repository, provider: Any, manifest: catalog.Manifest
) -> dict[str, Any]:
    """Recover the base backup to its consistency point in a private scratch directory, on its
    own timeline, shut down there (never promoted: no new timeline, nothing archived), drop it."""
    from .restore import RecoveryTarget, recover

    base = scratch_dir("dbtier-deep-")
    try:
        result = recover(
            settings,
            repo,
            provider,
            manifest,
            base / "data",
            RecoveryTarget.immediate(),
            timeline=str(manifest.timeline or "current"),
            action="shutdown",
        )
        return {"consistent": True, "state": result["state"], "seconds": result["seconds"]}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _deep_logical(
    settings: Settings, manifest: catalog.Manifest, dump: Path, major: int
) -> dict[str, Any]:
    """Restore into a scratch cluster and compare every table's row count. The dump stays in
    its private directory: pg_restore runs as this user and sends it over the connection."""
    bindir = Path(settings.pg_bindir) if settings.pg_bindir else None
    cluster = LocalCluster(base=scratch_dir("dbtier-deep-"), major=major, bindir=bindir)
    try:
        cluster.init()
        cluster.start()
        with db.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE verify")
        proc = subprocess.run(
            [
                program("pg_restore", major, settings.pg_bindir),
                "--no-owner",
                "--no-acl",
                "--jobs=2",
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "-d",
                "verify",
                str(dump),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise DbtierError(
                f"deep verify: pg_restore failed: {last_line(proc.stderr, proc.returncode)}"
            )
        actual = count_rows(cluster.dsn("verify"), sorted(manifest.row_counts))
        bad = [t for t in manifest.row_counts if actual[t] != manifest.row_counts[t]]
        if bad:
            raise DbtierError(
                f"deep verify: {bad[0]} has {actual[bad[0]]} rows, manifest says "
                f"{manifest.row_counts[bad[0]]}"
            )
        return {
            "tables": len(actual),
            "rows": sum(v for v in actual.values() if isinstance(v, int)),
        }
    finally:
        cluster.destroy()


def cleanup(
    settings: Settings,
    *,
    days: int | None = None,
    count: int | None = None,
    dry_run: bool = False,
    grace_hours: float = DEBRIS_GRACE_HOURS,
) -> dict[str, Any]:
    """Retention. Keeps every backup newer than `days`; of each kind the newest good backup
    (whatever its age) and the newest `count` good ones; the newest good base backup from
    before the cutoff, so point-in-time recovery reaches back the whole window; and all WAL
    that a kept base backup needs. "Good" = complete and not failed verification: a broken or
    incomplete backup is never what retention keeps instead of a good one. Also removes what
    killed backups left behind once older than the grace period."""
    days = settings.retention_days if days is None else days
    count = settings.retention_count if count is None else count
    if days < 0 or count < 0:
        raise UsageError("retention days and count must be >= 0")
    store = open_store(settings)
    repo = store.repo
    found = catalog.scan(repo, store.provider)
    backups = found.backups
    archived = catalog.archived_wal(repo)
    now = catalog.now_utc()
    cutoff = now - timedelta(days=days)
    good = [m for m in backups if catalog.is_good(store.repo, store.provider, m, archived)]
    keep = {m.id for m in backups if m.stopped >= cutoff}
    for kind in {m.kind for m in good}:
        of_kind = [m for m in good if m.kind == kind]
        keep.add(of_kind[-1].id)
        keep.update(m.id for m in of_kind[-count:] if count)
    older_bases = [m for m in good if m.kind == "base" and m.stopped < cutoff]
    if older_bases:
        keep.add(older_bases[-1].id)  # the window's start is recoverable from it
    doomed = [m for m in backups if m.id not in keep]
    grace = timedelta(hours=grace_hours)

    def old(backup_id: str, limit: Any) -> bool:
        when = catalog.backup_time(backup_id)
        return when is not None and when < limit

    broken = [b.id for b in found.broken if old(b.id, cutoff)]
    orphans = [o for o in found.orphans if old(o, now - grace)]
    debris = repo.debris(grace.total_seconds())
    kept_bases = [m for m in backups if m.kind == "base" and m.id in keep]
    wal_doomed: list[str] = []
    if kept_bases:
        # By segment number on any timeline; history files are always kept.
        oldest = min(
            catalog.segment_number(m.start_wal_file or "", m.wal_segment_size) for m in kept_bases
        )
        size = kept_bases[0].wal_segment_size
        wal_doomed = [
            n
            for n in archived
            if catalog.WAL_SEGMENT_RE.match(n[:24])
            and not n.endswith(".history")
            and catalog.segment_number(n, size) < oldest
        ]
    result = {
        "dry_run": dry_run,
        "retention_days": days,
        "retention_count": count,
        "kept": sorted(keep),
        "not_good": sorted(m.id for m in backups if m not in good),
        "deleted_backups": [m.id for m in doomed],
        "deleted_broken": broken,
        "deleted_orphans": orphans,
        "deleted_debris": [f"{d.what}:{d.key}" for d in debris],
        "deleted_wal": len(wal_doomed),
        "oldest_wal_kept": min((m.start_wal_file or "" for m in kept_bases), default=None),
    }
    if dry_run:
        return result
    job = Job(name="cleanup", kind="cleanup", backup_id=catalog.new_backup_id("cleanup"))
    with run_job(job, history_dsn=settings.history(), metrics_dir=settings.metrics_dir):
        for m in doomed:
            # Manifest first: from that moment the backup no longer exists for anyone.
            repo.delete(catalog.manifest_key(m.id))
            repo.delete_many(catalog.object_key(m.id, o.key) for o in m.objects)
            repo.delete(catalog.object_key(m.id, catalog.VERIFY_NAME))
            log("cleanup.backup", backup_id=m.id)
        for backup_id in broken + orphans:
            keys = repo.list(f"backups/{backup_id}/")
            keys.sort(key=lambda k: not k.endswith(catalog.MANIFEST_NAME))  # manifest first
            repo.delete_many(keys)
            log("cleanup.leftover", backup_id=backup_id, objects=len(keys))
        for item in debris:
            repo.remove_debris(item)
            log(
                "cleanup.debris", what=item.what, key=item.key, hours=round(item.age_seconds / 3600)
            )
        repo.delete_many(catalog.wal_key(n) for n in wal_doomed)
        job.bytes = sum(m.size for m in doomed)
        return result
    raise AssertionError("unreachable")  # pragma: no cover
