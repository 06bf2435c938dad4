"""`dbtier archive --reports`: report files older than the policy move to the backup repository.

Per report, oldest first (policy "reports older than 180 days are compressed to S3"):

1. lock its row (FOR UPDATE SKIP LOCKED: a row the application holds is skipped, not waited
   for); the lock is held for this one report only, so an application update waits at most one
   upload, never a whole batch;
2. upload the file, zstd + AES-256-GCM as backups do, create-if-absent under
   reports/<scenario_id>/<id>.<format>.zst.enc (reportobject.py); an object left by an
   interrupted run is reused if it holds this very file, and refused loudly if it does not;
3. read the object back and check it (stored SHA-256 and size, authentication, the file's
   SHA-256 after decryption) BEFORE the database changes;
4. one transaction: INSERT reports_archive, DELETE the reports row, job.checkpoint;
5. after the commit, delete the local file, under the reports_archive row's lock (a
   restore_report that took the row back in between keeps the file: it is live again).

A crash between 4 and 5 leaves a stray file: the reports_archive row carries
extra_data.dbtier_archive.unlink_pending_since from step 4 until the file is gone, and every
run starts by finishing those (re-verify the object against the file, then delete the file).

A report whose file is missing keeps its row, is counted, and is marked in the live row:
extra_data.dbtier_archive = {missing_file_at (first seen), missing_checks (runs that found it
missing), last_checked_at, path}; each run warns once per such report with that count. Find
them with: SELECT id, file_path, extra_data->'dbtier_archive' FROM reports
WHERE extra_data ? 'dbtier_archive'.

A report that fails (S3 error, object corrupted before the check, object of another content)
keeps its file and its row, is counted with a one-line reason, and the run goes on; after
MAX_CONSECUTIVE_FAILURES failures in a row the run stops (the repository is down: every other
report would fail the same way, each after its retries). archive_reports RETURNS such results
(failed, stopped, error): the caller decides; raise_for_failures() is the CLI's one line.

restore_report puts a report back (file, then row) and keeps the object: a report archived
again later reuses it when the file is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import db, keys, reportobject
from .config import Settings
from .errors import DbtierError, Terminated, UsageError, first_line
from .jobs import log
from .repository import ObjectExists, ObjectNotFound, Repository
from .store import Store, open_store

MARK = "dbtier_archive"  # our key in extra_data (the application owns the rest)
MAX_CONSECUTIVE_FAILURES = 5
MAX_ERRORS = 20  # reasons kept in the result
_NIL = "00000000-0000-0000-0000-000000000000"

_COLUMNS = "id, scenario_id, created_at, report_format, file_path, file_size_bytes, "
_COLUMNS += "generated_by, extra_data"
_CANDIDATES = f"""
SELECT {_COLUMNS} FROM reports
WHERE created_at < %(cutoff)s AND (created_at, id) > (%(after_at)s, %(after_id)s)
ORDER BY created_at, id LIMIT %(limit)s
"""
_LOCK = f"SELECT {_COLUMNS} FROM reports WHERE id = %s AND created_at < %s FOR UPDATE SKIP LOCKED"
_INSERT = """
INSERT INTO reports_archive (id, scenario_id, created_at, report_format, file_path, generated_by,
    extra_data, s3_bucket, s3_key, s3_version_id, storage_class, compression, original_size,
    compressed_size, sha256, archive_batch_id)
VALUES (%(id)s, %(scenario_id)s, %(created_at)s, %(report_format)s, %(file_path)s,
    %(generated_by)s, %(extra_data)s, %(s3_bucket)s, %(s3_key)s, %(s3_version_id)s,
    %(storage_class)s, 'zstd', %(original_size)s, %(compressed_size)s, %(sha256)s, %(batch)s)
"""
_PENDING = "SELECT id FROM reports_archive WHERE extra_data ? 'dbtier_archive' ORDER BY archived_at"
_PENDING_ONE = """
SELECT id, scenario_id, report_format, file_path, s3_bucket, s3_key, compressed_size, sha256
FROM reports_archive WHERE id = %s AND extra_data ? 'dbtier_archive' FOR UPDATE SKIP LOCKED
"""
_HOLD = "SELECT 1 FROM reports_archive WHERE id = %s FOR UPDATE"
_CLEAR = "UPDATE reports_archive SET extra_data = extra_data - 'dbtier_archive' WHERE id = %s"


def local_path(settings: Settings, file_path: str) -> Path:
    """Where this host reads reports.file_path: as stored, or below settings.reports_root."""
    path = Path(file_path)
    if not path.is_absolute() or ".." in path.parts:
        raise DbtierError(f"file_path {file_path!r} is not a plain absolute path: fix the row")
    if not settings.reports_root:
        return path
    return Path(settings.reports_root).joinpath(*path.parts[1:])


def _row_for_header(row: dict[str, Any]) -> dict[str, Any]:
    """The report row as JSON (what the object's header keeps)."""
    return {
        "id": str(row["id"]),
        "scenario_id": str(row["scenario_id"]),
        "created_at": row["created_at"].isoformat(),
        "report_format": row["report_format"],
        "file_path": row["file_path"],
        "file_size_bytes": row["file_size_bytes"],
        "generated_by": row["generated_by"],
        "extra_data": _unmarked(row["extra_data"]),
    }


def _unmarked(extra: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (extra or {}).items() if k != MARK}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Run:
    """One archive_reports call: its counters and the result it returns."""

    def __init__(self, settings: Settings, conn: psycopg.Connection, job: Any) -> None:
        self.settings, self.conn, self.job = settings, conn, job
        self.result: dict[str, Any] = {
            "type": "reports",
            "dry_run": False,
            "cutoff": None,
            "selected": 0,
            "archived": 0,
            "missing": 0,
            "missing_new": 0,
            "failed": 0,
            "skipped": 0,
            "orphans_removed": 0,
            "orphans_left": 0,
            "bytes_original": 0,
            "bytes_stored": 0,
            "date_range": None,
            "errors": [],
            "error": None,
            "warning": None,
            "stopped": None,
            "orphans_pending": None,  # dry run: stray files a run would remove first
        }
        self.after: tuple[Any, str] | None = None
        self.in_a_row = 0
        self.store: Store | None = None

    # -- bookkeeping ---------------------------------------------------------------------------

    def see(self, row: dict[str, Any]) -> None:
        r = self.result
        r["selected"] += 1
        created = _iso(row["created_at"])
        if r["date_range"] is None:
            r["date_range"] = [created, created]
        r["date_range"][1] = created  # oldest first: the last seen is the newest
        self.after = (row["created_at"], str(row["id"]))

    def cursor(self) -> dict[str, Any]:
        r = self.result
        return {
            "after_created_at": _iso(self.after[0]) if self.after else None,
            "after_id": self.after[1] if self.after else None,
            "archived": r["archived"],
            "missing": r["missing"],
            "failed": r["failed"],
            "skipped": r["skipped"],
        }

    def checkpoint(self) -> None:
        """Counters and cursor into archive_jobs, in the current transaction."""
        self.job.checkpoint(self.conn, self.cursor())

    def fail(self, report_id: Any, reason: str, *, streak: bool = True) -> None:
        """Count a failed report; streak: a sign that the repository may be down."""
        r = self.result
        r["failed"] += 1
        self.in_a_row += 1 if streak else 0
        line = f"report {report_id}: {reason}"
        if len(r["errors"]) < MAX_ERRORS:
            r["errors"].append(line)
        log("report_archive.failed", "error", report=report_id, error=reason)
        if self.in_a_row >= MAX_CONSECUTIVE_FAILURES:
            r["stopped"] = f"{self.in_a_row} reports failed in a row, the last: {reason}"

    def summary(self) -> None:
        r = self.result
        if r["missing"]:
            r["warning"] = (
                f"{r['missing']} report file(s) missing ({r['missing_new']} new): rows kept and "
                "marked, see reports.extra_data->'dbtier_archive'"
            )
        if r["failed"]:
            first = r["errors"][0] if r["errors"] else ""
            stop = ", run stopped early" if r["stopped"] else ""
            r["error"] = (
                f"{r['failed']} report(s) failed{stop} (files and rows kept: fix the cause, "
                f"then rerun); first: {first}"
            )

    # -- the run ---------------------------------------------------------------------------------

    def candidates(self, cutoff: datetime, batch_size: int) -> list[dict[str, Any]]:
        after_at, after_id = self.after or ("-infinity", _NIL)
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                _CANDIDATES,
                {"cutoff": cutoff, "after_at": after_at, "after_id": after_id, "limit": batch_size},
            )
            return cur.fetchall()

    def dry_run(self, cutoff: datetime, batch_size: int) -> None:
        r = self.result
        r["dry_run"] = True
        r["bytes_stored"] = None
        while rows := self.candidates(cutoff, batch_size):
            for row in rows:
                self.see(row)
                try:
                    path = local_path(self.settings, row["file_path"])
                except DbtierError as exc:
                    self.fail(row["id"], first_line(exc), streak=False)
                    continue
                if path.is_file():
                    r["bytes_original"] += path.stat().st_size
                else:
                    r["missing"] += 1
        r["orphans_pending"] = self.conn.execute(
            "SELECT count(*) FROM reports_archive WHERE extra_data ? 'dbtier_archive'"
        ).fetchone()[0]

    def archive(self, cutoff: datetime, batch_size: int) -> None:
        self.store = open_store(self.settings)
        self.store.bind(self.system_identifier())  # the key (and cluster) backups write with
        self.finish_pending()
        while not self.result["stopped"] and (rows := self.candidates(cutoff, batch_size)):
            self.conn.rollback()  # the candidate read holds no lock; each report has its own
            for row in rows:
                self.see(row)
                self.one(row["id"], cutoff)
                if self.result["stopped"]:
                    break

    def system_identifier(self) -> str | None:
        """This cluster's, for a repository bound here first (None where it is not readable)."""
        try:
            row = self.conn.execute(
                "SELECT system_identifier::text FROM pg_control_system()"
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = None
        self.conn.rollback()
        return row[0] if row else None

    def one(self, report_id: Any, cutoff: datetime) -> None:
        conn = self.conn
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_LOCK, (report_id, cutoff)).fetchone()
        if row is None:  # the application holds it (or changed or deleted it meanwhile)
            conn.rollback()
            self.result["skipped"] += 1
            return
        counted = dict(self.result)  # counters as they were, if this report's commit fails
        try:
            path = local_path(self.settings, row["file_path"])
            present = path.is_file()
            if present:
                self.move(row, path)
            else:
                self.missing(row, path)
            conn.commit()
        except (DbtierError, OSError, psycopg.Error) as exc:
            conn.rollback()
            if isinstance(exc, Terminated | psycopg.OperationalError):
                raise  # stopped, or the database went away: nothing more can be recorded
            self.result.update(counted)
            self.fail(report_id, first_line(exc))
            self.job.add(processed=1)
            self.checkpoint()
            conn.commit()
            return
        if present:
            self.unlink(row["id"], path)

    def missing(self, row: dict[str, Any], path: Path) -> None:
        mark = (row["extra_data"] or {}).get(MARK) or {}
        checks = int(mark.get("missing_checks") or 0) + 1
        now = self.conn.execute("SELECT now()").fetchone()[0].isoformat()
        first = mark.get("missing_file_at") or now
        new_mark = {
            "missing_file_at": first,
            "missing_checks": checks,
            "last_checked_at": now,
            "path": str(path),
        }
        self.conn.execute(
            "UPDATE reports SET extra_data = jsonb_set(extra_data, %s, %s) WHERE id = %s",
            ([MARK], Jsonb(new_mark), row["id"]),
        )
        self.result["missing"] += 1
        if checks == 1:
            self.result["missing_new"] += 1
        self.job.add(processed=1)
        self.checkpoint()
        log("report_archive.missing_file", "warning", report=row["id"], path=str(path),
            since=first, times=checks)  # fmt: skip

    def move(self, row: dict[str, Any], path: Path) -> None:
        """Upload, check, then move the row (the caller commits)."""
        assert self.store is not None
        repo, provider = self.store.repo, self.store.provider
        key = reportobject.object_key(row["scenario_id"], row["id"], row["report_format"])
        raw = reportobject.file_digest(path)
        stored = self.upload(repo, provider, key, path, row, raw)
        bucket, s3_key = reportobject.location(repo, key)
        self.conn.execute(
            _INSERT,
            {
                **row,
                "extra_data": Jsonb(
                    {
                        **_unmarked(row["extra_data"]),
                        MARK: {"unlink_pending_since": datetime.now(UTC).isoformat()},
                    }
                ),
                "s3_bucket": bucket,
                "s3_key": s3_key,
                "s3_version_id": stored.version_id,
                "storage_class": reportobject.storage_class(repo),
                "original_size": stored.raw_size,
                "compressed_size": stored.size,
                "sha256": stored.sha256,
                "batch": self.job.id,
            },
        )
        self.conn.execute("DELETE FROM reports WHERE id = %s", (row["id"],))
        r = self.result
        r["archived"] += 1
        r["bytes_original"] += stored.raw_size
        r["bytes_stored"] += stored.size
        self.in_a_row = 0
        self.job.add(processed=1, archived=1, deleted=1, bytes=stored.raw_size)
        self.checkpoint()
        log("report_archive.moved", report=row["id"], key=key, bytes=stored.raw_size,
            stored=stored.size)  # fmt: skip

    def upload(
        self,
        repo: Repository,
        provider: keys.KeyProvider,
        key: str,
        path: Path,
        row: dict[str, Any],
        raw: tuple[int, str],
    ) -> reportobject.Stored:
        """The checked object holding this file: written now, or left by an earlier run."""
        header = _row_for_header(row)
        try:
            written = reportobject.write(
                repo, provider, key, path, header, raw, self.settings.compression_level
            )
        except ObjectExists:
            return self.reuse(repo, provider, key, row, raw)
        try:
            back = reportobject.read(repo, provider, key, str(row["id"]), None)
            if (back.size, back.sha256) != (written.size, written.sha256):
                raise DbtierError(
                    f"object {key} read back as {back.size} bytes sha256 {back.sha256[:12]}..., "
                    f"uploaded {written.size} bytes sha256 {written.sha256[:12]}..."
                )
            if (back.raw_size, back.raw_sha256) != raw:
                raise DbtierError(f"object {key} does not decrypt to the file {path}")
        except BaseException as exc:
            # Ours and referenced by no row: remove it, so a rerun uploads afresh.
            try:
                repo.delete(key)
            except DbtierError as gone:
                log("report_archive.delete_failed", "warning", key=key, error=first_line(gone))
            if isinstance(exc, DbtierError) and not isinstance(exc, Terminated):
                raise DbtierError(f"verify after upload failed: {first_line(exc)}") from None
            raise
        return reportobject.Stored(
            key, written.size, written.sha256, *raw, written.version_id, written.header
        )

    def reuse(
        self,
        repo: Repository,
        provider: keys.KeyProvider,
        key: str,
        row: dict[str, Any],
        raw: tuple[int, str],
    ) -> reportobject.Stored:
        try:
            found = reportobject.read(repo, provider, key, str(row["id"]), None)
        except Terminated:
            raise
        except DbtierError as exc:
            raise DbtierError(
                f"object {key} already exists and does not verify ({first_line(exc)}): "
                "inspect it, delete it, then rerun"
            ) from None
        if (found.raw_size, found.raw_sha256) != raw:
            raise DbtierError(
                f"object {key} already exists with other content (sha256 "
                f"{found.raw_sha256[:12]}..., file {raw[1][:12]}...): check which is right, "
                "delete the object, then rerun"
            )
        log("report_archive.reused", report=row["id"], key=key)
        return found

    def unlink(self, report_id: Any, path: Path) -> None:
        """Delete an archived report's local file, under its reports_archive row's lock: a
        restore_report that won the row meanwhile made the file the live report's again."""
        held = self.conn.execute(_HOLD, (report_id,)).fetchone()
        if held is None:
            self.conn.rollback()
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self.conn.rollback()
            self.result["orphans_left"] += 1
            log("report_archive.unlink_failed", "warning", report=report_id, path=str(path),
                error=exc.strerror or str(exc))  # fmt: skip
            return
        self.conn.execute(_CLEAR, (report_id,))
        self.conn.commit()

    def finish_pending(self) -> None:
        """Local files an earlier run archived but did not delete (killed between commit and
        unlink): re-verify the object against the file, then delete the file."""
        assert self.store is not None
        pending = [r[0] for r in self.conn.execute(_PENDING).fetchall()]
        self.conn.rollback()
        for report_id in pending:
            with self.conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(_PENDING_ONE, (report_id,)).fetchone()
            if row is None:  # restored or being restored meanwhile
                self.conn.rollback()
                continue
            try:
                path = local_path(self.settings, row["file_path"])
                if path.is_file():
                    self.check_stray(row, path)
                    path.unlink()
                    self.result["orphans_removed"] += 1
                    log("report_archive.orphan_removed", "warning", report=report_id,
                        path=str(path))  # fmt: skip
            except (DbtierError, OSError) as exc:
                self.conn.rollback()
                if isinstance(exc, Terminated):
                    raise
                self.result["orphans_left"] += 1
                self.fail(report_id, f"stray local file kept: {first_line(exc)}", streak=False)
                continue
            self.conn.execute(_CLEAR, (report_id,))
            self.conn.commit()

    def check_stray(self, row: dict[str, Any], path: Path) -> None:
        """The object must be the archived one and hold exactly the stray file."""
        assert self.store is not None
        key = reportobject.object_key(row["scenario_id"], row["id"], row["report_format"])
        repo = reportobject.repository_at(self.settings, row["s3_bucket"], row["s3_key"], key)
        found = reportobject.read(repo, self.store.provider, key, str(row["id"]), None)
        if (found.size, found.sha256) != (row["compressed_size"], row["sha256"]):
            raise DbtierError(
                f"object {key} is not the one reports_archive records: check it, then rerun"
            )
        if found.raw_sha256 != reportobject.file_digest(path)[1]:
            raise DbtierError(
                f"local file {path} differs from the archived object: keep the right one "
                "(restore-report refuses to overwrite it), then rerun"
            )


def archive_reports(
    settings: Settings,
    conn: psycopg.Connection,
    policy: dict[str, Any],
    job: Any,
    *,
    dry_run: bool,
    batch_size: int,
) -> dict[str, Any]:
    """Move report files older than policy["archive_after_days"] to the repository.

    conn: autocommit=False and idle (no open transaction): this commits once per report, so the
    caller's per-type advisory lock must be session-level (pg_advisory_lock). job: .id
    (archive_batch_id), .add(processed=, archived=, deleted=, bytes=) and .checkpoint(conn,
    cursor), called inside each report's transaction; dry_run touches neither job nor data.
    Returns the counters; failed > 0 or stopped means the caller must end non-zero (see
    raise_for_failures). Raises DbtierError only when the run cannot start or go on at all
    (repository or key unusable, database gone, terminated)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise UsageError("archive_reports needs an idle connection: commit or roll back first")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if not (policy.get("compress", True) and policy.get("s3_offload", True)):
        raise UsageError(
            "report files only move compressed to the repository: set compress and s3_offload "
            "true in archive_policies (table_name 'reports'), or disable the policy"
        )
    run = _Run(settings, conn, job)
    try:
        cutoff = conn.execute(
            "SELECT now() - make_interval(days => %s)", (int(policy["archive_after_days"]),)
        ).fetchone()[0]
        run.result["cutoff"] = _iso(cutoff)
        if dry_run:
            run.dry_run(cutoff, batch_size)
        else:
            run.archive(cutoff, batch_size)
    finally:
        # Never leave the caller a transaction (dry run: nothing was written); a broken
        # connection must not hide the error that broke it.
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
    run.summary()
    r = run.result
    log("report_archive.done", dry_run=dry_run, selected=r["selected"], archived=r["archived"],
        missing=r["missing"], failed=r["failed"], skipped=r["skipped"])  # fmt: skip
    return r


def raise_for_failures(result: dict[str, Any]) -> None:
    """The CLI's end of a run: one line, exit 1, when a report failed."""
    if result.get("error"):
        raise DbtierError(f"archive reports: {result['error']}")


# ------------------------------------------------------------------------------------ restore


def restore_report(settings: Settings, report_id: str) -> dict[str, Any]:
    """Put an archived report back: file (checked) at its file_path, then its reports row, in
    one transaction with the removal of its reports_archive row. The object is kept."""
    try:
        uuid.UUID(str(report_id))
    except ValueError:
        raise UsageError(f"{report_id!r} is not a report id (a UUID)") from None
    provider = keys.from_settings(settings)
    with db.connect(settings.dsn) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            try:
                row = cur.execute(
                    "SELECT * FROM reports_archive WHERE id = %s FOR UPDATE NOWAIT", (report_id,)
                ).fetchone()
            except psycopg.errors.LockNotAvailable:
                raise DbtierError(
                    f"report {report_id} is being archived or restored by another run: retry"
                ) from None
            if row is None:
                live = cur.execute("SELECT 1 FROM reports WHERE id = %s", (report_id,)).fetchone()
                where = "it is a live report" if live else "no such report"
                raise UsageError(f"report {report_id} is not in reports_archive ({where})")
        key = reportobject.object_key(row["scenario_id"], row["id"], row["report_format"])
        repo = reportobject.repository_at(settings, row["s3_bucket"], row["s3_key"], key)
        dest = local_path(settings, row["file_path"])
        placed, header = _place_file(repo, provider, key, row, dest)
        try:
            conn.execute(
                "INSERT INTO reports (id, scenario_id, created_at, report_format, file_path, "
                "file_size_bytes, generated_by, extra_data) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (row["id"], row["scenario_id"], row["created_at"], row["report_format"],
                 row["file_path"], header["report"].get("file_size_bytes"),
                 row["generated_by"], Jsonb(_unmarked(row["extra_data"]))),
            )  # fmt: skip
            conn.execute("DELETE FROM reports_archive WHERE id = %s", (report_id,))
            conn.commit()
        except BaseException as exc:
            conn.rollback()
            if placed == "written":
                dest.unlink(missing_ok=True)  # ours: leave nothing the database does not know
            if isinstance(exc, psycopg.Error):
                raise DbtierError(
                    f"restoring report {report_id} failed: {db.first_line(exc)}"
                ) from None
            raise
    log("report_archive.restored", report=report_id, path=str(dest), file=placed)
    return {
        "type": "reports",
        "id": str(report_id),
        "file_path": str(dest),
        "file": placed,
        "bytes": header["raw_size"],
        "object": f"{repo.describe()}/{key}",
        "object_kept": True,
    }


def _place_file(
    repo: Repository, provider: keys.KeyProvider, key: str, row: dict[str, Any], dest: Path
) -> tuple[str, dict[str, Any]]:
    """Download, check and move the file into place: ("written" | "identical", header)."""
    if dest.exists() and (not dest.is_file() or dest.stat().st_size != row["original_size"]):
        raise UsageError(f"{dest} exists with other content: move it away, then rerun the restore")
    size = repo.size(key)
    if size is None:
        raise DbtierError(f"object {repo.describe()}/{key} not found: cannot restore")
    if size != row["compressed_size"]:
        raise DbtierError(
            f"object {key}: size mismatch (stored {size}, reports_archive "
            f"{row['compressed_size']}): check the object, it is not the archived one"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            got = reportobject.read(repo, provider, key, str(row["id"]), out)
            out.flush()
            os.fsync(out.fileno())
        if got.sha256 != row["sha256"].strip():
            raise DbtierError(
                f"object {key}: checksum mismatch (stored {got.sha256[:12]}..., reports_archive "
                f"{row['sha256'][:12]}...)"
            )
        if dest.exists():
            if reportobject.file_digest(dest)[1] != got.raw_sha256:
                raise UsageError(
                    f"{dest} exists with other content: move it away, then rerun the restore"
                )
            Path(tmp).unlink()
            return "identical", got.header or {}
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.link(tmp, dest)  # never replaces a file that appeared meanwhile
        Path(tmp).unlink()
        return "written", got.header or {}
    except ObjectNotFound:
        Path(tmp).unlink(missing_ok=True)
        raise DbtierError(f"object {repo.describe()}/{key} not found: cannot restore") from None
    except FileExistsError:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{dest} appeared during the restore: check it, then rerun") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
