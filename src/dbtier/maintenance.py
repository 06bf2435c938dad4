"""dbtier backup verify | list | cleanup."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import catalog, db, keys
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job
from .pgcluster import LocalCluster, scratch_dir
from .pgtools import last_line, program
from .pipeline import verify_object
from .repository import Repository, open_repository
from .restore import _download, _pg_restore_list, count_rows


def _repo(settings: Settings) -> Repository:
    url = settings.require("repository", "set BACKUP_REPOSITORY or repository= in dbtier.toml")
    return open_repository(
        url,
        storage_class=settings.storage_class,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )


def list_all(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for m in catalog.list_backups(_repo(settings)):
        rows.append(
            {
                "id": m.id,
                "kind": m.kind,
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
        )
    return rows


def verify(settings: Settings, ref: str, *, deep: bool = False) -> dict[str, Any]:
    provider = keys.from_settings(settings)
    repo = _repo(settings)
    # `latest` never means a safety backup (those are verified by id)
    manifest = catalog.find_backup(repo, ref, kinds=("logical", "base"))
    data_key = keys.unwrap_data_key(provider, manifest.encryption["data_key"])
    job = Job(
        name="verify", kind="verify", backup_id=f"{catalog.new_backup_id('verify')}-{manifest.id}"
    )
    with run_job(job, history_dsn=settings.history_dsn, metrics_dir=settings.metrics_dir):
        checked = []
        for obj in manifest.objects:
            result = verify_object(
                repo, catalog.object_key(manifest.id, obj.key), data_key, obj.sha256
            )
            if result.raw_sha256 != obj.raw_sha256 or result.raw_size != obj.raw_size:
                raise DbtierError(f"object {obj.key}: content differs from the manifest")
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
            missing = _missing_wal(repo, manifest)
            if missing:
                raise DbtierError(
                    f"base backup {manifest.id} needs WAL {missing[0]}, which is not archived"
                )
            report["wal"] = f"{manifest.start_wal_file}..{manifest.stop_wal_file} archived"
            if deep:
                report["recovery"] = _deep_base(settings, repo, provider, manifest)
        else:
            major = int(manifest.server_version.split(".")[0])
            with tempfile.TemporaryDirectory(prefix="dbtier-verify-") as tmp:
                dump = _download(repo, manifest, provider, Path(tmp))[0]
                report["toc_entries"] = len(_pg_restore_list(major, settings.pg_bindir, dump))
                if deep:
                    report["row_counts"] = _deep_logical(settings, manifest, dump, major)
        log("verify.ok", backup_id=manifest.id)
        return report
    raise AssertionError("unreachable")  # pragma: no cover


def _missing_wal(repo: Repository, manifest: catalog.Manifest) -> list[str]:
    archived = catalog.archived_wal(repo)
    start, stop = manifest.start_wal_file, manifest.stop_wal_file
    if not start or not stop:
        return ["(manifest has no WAL range)"]
    per_log = 0x100000000 // catalog.WAL_SEGMENT_SIZE  # segments per log id (256 for 16 MB)
    tli = start[:8]

    def segno(name: str) -> int:
        return int(name[8:16], 16) * per_log + int(name[16:24], 16)

    missing = []
    for n in range(segno(start), segno(stop) + 1):
        name = f"{tli}{n // per_log:08X}{n % per_log:08X}"
        if name not in archived:
            missing.append(name)
    return missing


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
    cluster = LocalCluster(base=scratch_dir("dbtier-deep-"), major=major)
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
    settings: Settings, *, days: int | None = None, count: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Retention: delete backups older than `days` beyond the newest `count` of each kind;
    never the newest backup of a kind, never WAL a kept base backup needs."""
    days = settings.retention_days if days is None else days
    count = settings.retention_count if count is None else count
    if days < 0 or count < 0:
        raise UsageError("retention days and count must be >= 0")
    repo = _repo(settings)
    backups = catalog.list_backups(repo)
    cutoff = catalog.now_utc() - timedelta(days=days)
    keep: set[str] = set()
    for kind in {m.kind for m in backups}:
        of_kind = [m for m in backups if m.kind == kind]
        keep.add(of_kind[-1].id)  # the newest good backup, whatever its age
        keep.update(m.id for m in of_kind[-count:] if count)
    keep.update(m.id for m in backups if m.stopped >= cutoff)
    doomed = [m for m in backups if m.id not in keep]
    kept_bases = [m for m in backups if m.kind == "base" and m.id in keep]
    wal_doomed: list[str] = []
    if kept_bases:
        # Compare segment numbers, not names: a segment of an older timeline past the oldest
        # kept start is kept too (conservative). Timeline history files are always kept.
        oldest_needed = min((m.start_wal_file or "0" * 24)[8:] for m in kept_bases)
        wal_doomed = sorted(
            n
            for n in catalog.archived_wal(repo)
            if catalog.WAL_SEGMENT_RE.match(n[:24])
            and not n.endswith(".history")
            and n[8:24] < oldest_needed
        )
    job = Job(name="cleanup", kind="cleanup", backup_id=catalog.new_backup_id("cleanup"))
    result = {
        "dry_run": dry_run,
        "retention_days": days,
        "retention_count": count,
        "kept": sorted(keep),
        "deleted_backups": [m.id for m in doomed],
        "deleted_wal": len(wal_doomed),
        "oldest_wal_kept": min((m.start_wal_file or "" for m in kept_bases), default=None),
    }
    if dry_run:
        return result
    with run_job(job, history_dsn=settings.history_dsn, metrics_dir=settings.metrics_dir):
        for m in doomed:
            # Manifest first: from that moment the backup no longer exists for anyone.
            repo.delete(catalog.manifest_key(m.id))
            repo.delete_many([catalog.object_key(m.id, o.key) for o in m.objects])
            log("cleanup.backup", backup_id=m.id)
        for name in wal_doomed:
            repo.delete_many([catalog.wal_sidecar_key(name), catalog.wal_key(name)])
        job.bytes = sum(m.size for m in doomed)
        return result
    raise AssertionError("unreachable")  # pragma: no cover
