"""dbtier restore: logical restores (pg_restore -j), PITR from base backup + WAL, RDS PITR."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import backup, catalog, db
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job
from .pgcluster import (
    SERVER_USER,
    LocalCluster,
    chown_to_server_user,
    free_port,
    private_dir,
    require_server,
    server_identity,
)
from .pgtools import Child, last_line, program, split_password
from .pipeline import download_decrypted
from .repository import Repository
from .store import REPOSITORY_HINT, Store, open_store
from .untar import TarExtractor, ThreadedWriter

# A restore never overwrites the live database: it restores into <target>__new_<stamp>, then
# renames the live one aside to <target>__pre_<stamp> (kept: the instant safety copy) and the
# staging one to <target>. PostgreSQL truncates names to 63 bytes, so every name is checked.
NAME_LIMIT = 63  # NAMEDATALEN - 1, in bytes
STAGING_MARK = "__new_"
ASIDE_MARK = "__pre_"
STAMP_FORMAT = "%Y%m%d%H%M%S"
ASIDE_RE = re.compile(rf"^(?P<target>.+){ASIDE_MARK}\d{{14}}$")


def _open(settings: Settings, ref: str) -> tuple[Store, catalog.Manifest]:
    """Resolve latest | id | <repository URL>/backups/<id> to (store, authenticated manifest).

    `latest` is the newest *logical* backup: a safety backup is restored only by its id.
    """
    url = None
    backup_id = ref
    if "://" in ref:
        url, backup_id = catalog.split_backup_url(ref)
    elif not settings.repository:
        raise UsageError(f"no repository configured ({REPOSITORY_HINT} or pass a backup URL)")
    store = open_store(settings, url)
    manifest = catalog.find_backup(store.repo, store.provider, backup_id, kinds=("logical",))
    if manifest.kind not in ("logical", "safety"):
        raise UsageError(
            f"backup {manifest.id} is a {manifest.kind} backup: a logical restore needs a "
            "logical or safety backup (for base backups: dbtier restore pitr)"
        )
    return store, manifest


def _private_file(path: Path) -> BinaryIO:
    """A new file only its owner can read: it holds decrypted data."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _download(
    repo: Repository, manifest: catalog.Manifest, provider: Any, workdir: Path
) -> list[Path]:
    """Every object of the backup, verified and decrypted, into workdir (nothing else touched)."""
    data_key = provider.unwrap(manifest.wrapped_key)
    paths = []
    for obj in manifest.objects:
        path = workdir / obj.key.removesuffix(".zst.enc")
        started = time.monotonic()
        with _private_file(path) as handle:
            result = download_decrypted(
                repo,
                catalog.object_key(manifest.id, obj.key),
                handle,
                data_key,
                expected_sha256=obj.sha256,
                expected_size=obj.size,
                expected_raw_sha256=obj.raw_sha256,
                hash_raw=False,  # unless the manifest has a raw SHA-256 to compare with
                expected_raw_size=obj.raw_size,
            )
        log(
            "restore.downloaded",
            object=obj.key,
            bytes=result.raw_size,
            seconds=round(time.monotonic() - started, 2),
        )
        paths.append(path)
    return paths


def _pg_restore_list(major: int, bindir: str | None, dump: Path) -> list[str]:
    proc = subprocess.run(
        [program("pg_restore", major, bindir), "--list", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DbtierError(f"pg_restore --list failed: {last_line(proc.stderr, proc.returncode)}")
    return [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith(";")]


def _dsn_for(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn) if dsn else {}
    params["dbname"] = dbname
    return make_conninfo("", **{k: str(v) for k, v in params.items()})


def count_rows(dsn: str, tables: list[str]) -> dict[str, int | str]:
    """Row counts of a restored database; a table that cannot be read counts as its error."""
    with db.connect(dsn, autocommit=True) as conn:
        return db.count_rows(conn, tables, errors_as_text=True)


def validate_counts(dsn: str, expected: dict[str, int]) -> list[str]:
    """Mismatches between the restored database and the manifest's row counts."""
    actual = count_rows(dsn, sorted(expected))
    return [
        f"{t}: expected {expected[t]} rows, found {actual[t]}"
        for t in sorted(expected)
        if actual[t] != expected[t]
    ]


def _progress(total: int) -> Callable[[str], None]:
    seen = {"n": 0, "pct": -10}
    lock = threading.Lock()

    def on_line(line: str) -> None:
        if "processing item" in line or "processing data for table" in line:
            with lock:
                seen["n"] += 1
                pct = min(100, seen["n"] * 100 // max(total, 1))
                if pct >= seen["pct"] + 10:
                    seen["pct"] = pct
                    log("restore.progress", percent=pct, items=seen["n"], total=total)

    return on_line


@dataclass(frozen=True)
class SwapNames:
    """The databases of one logical restore; all distinct and within PostgreSQL's limit."""

    target: str
    staging: str
    aside: str

    @classmethod
    def for_target(cls, target: str, when: datetime) -> SwapNames:
        stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
        names = cls(target, f"{target}{STAGING_MARK}{stamp}", f"{target}{ASIDE_MARK}{stamp}")
        longest = max(len(names.staging.encode()), len(names.aside.encode()))
        if longest > NAME_LIMIT:
            room = NAME_LIMIT - (longest - len(target.encode()))
            raise UsageError(
                f"database name {target!r} is {len(target.encode())} bytes: the restore's "
                f"staging and kept-aside names ({names.aside!r}) need it to be at most {room} "
                f"bytes (PostgreSQL cuts names at {NAME_LIMIT}); restore into a shorter "
                "--target-db and rename it afterwards"
            )
        assert len({names.target, names.staging, names.aside}) == 3
        return names


def _drop_command(admin_dsn: str, database: str) -> str:
    """The exact command an operator runs to drop a database dbtier left behind."""
    bare, _ = split_password(admin_dsn)
    # By hand: Debian's psycopg 3.1 (the hosts' python3-psycopg) quotes only with a connection.
    statement = 'DROP DATABASE "{}"'.format(database.replace('"', '""'))
    return f"psql -X -d {shlex.quote(bare)} -c {shlex.quote(statement)}"


def _database_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def _require_createdb(conn: psycopg.Connection, names: SwapNames) -> None:
    """A restore creates its staging database: without CREATEDB it would fail after the
    download, so say up front which role lacks it and who can run the restore."""
    role, allowed = conn.execute(
        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not allowed:
        raise UsageError(createdb_denied(role, names.staging))


def createdb_denied(role: str, database: str) -> str:
    """The one line for a role without CREATEDB: who can run it instead."""
    return (
        f"permission denied to create database {database}: role {role} lacks CREATEDB; "
        f"run the restore as postgres on the database host (sudo -u postgres dbtier-job "
        f"restore logical ...) or as the database's owner role through dbtier-job on the ops "
        f"host (or ALTER ROLE {role} CREATEDB)"
    )


def _default_target(manifest: catalog.Manifest) -> str | None:
    """The dump's database; for a safety backup (taken of the kept-aside copy) the original."""
    name = manifest.database
    match = ASIDE_RE.match(name or "")
    return match["target"] if manifest.kind == "safety" and match else name


def restore_logical(
    settings: Settings,
    ref: str,
    *,
    target_db: str | None = None,
    jobs: int = 4,
    dry_run: bool = False,
    verify_only: bool = False,
    skip_safety_backup: bool = False,
    no_owner: bool = False,
) -> dict[str, Any]:
    """Restore a dump into a staging database, validate it, then swap it in by renames; the live
    database is kept (renamed aside) as the instant safety copy, and is backed up from there."""
    store, manifest = _open(settings, ref)  # the manifest is authenticated: the key fits
    repo, provider, backup_id = store.repo, store.provider, manifest.id
    dsn = settings.dsn or db.resolve_dsn(None)
    target = target_db or _default_target(manifest)
    if not target:
        raise UsageError("no target database (pass --target-db)")
    if target in ("postgres", "template0", "template1"):
        raise UsageError(f"refusing to restore over the {target} database: pass --target-db")
    names = SwapNames.for_target(target, catalog.now_utc())
    admin_dsn = _dsn_for(dsn, "postgres")
    with db.connect(admin_dsn, autocommit=True) as conn:
        exists = _database_exists(conn, target)
        for leftover in (names.staging, names.aside):
            if _database_exists(conn, leftover):
                raise UsageError(f"database {leftover} already exists: retry in a second")
        major = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
        if not verify_only:
            _require_createdb(conn, names)
    major //= 10000
    safety = exists and not skip_safety_backup
    plan = {
        "backup_id": backup_id,
        "repository": repo.describe(),
        "kind": manifest.kind,
        "source_database": manifest.database,
        "taken": manifest.stopped_at,
        "size": manifest.size,
        "raw_size": manifest.raw_size,
        "target_database": target,
        "target_exists": exists,
        "staging_database": names.staging,
        "kept_database": names.aside if exists else None,
        "jobs": jobs,
        "safety_backup": safety and not verify_only,
        "tables": len(manifest.row_counts),
        "steps": _steps(names, exists, jobs, verify_only, safety),
    }
    if dry_run:
        return {"dry_run": True, **plan}
    # The row goes to the target database at the end, once: before the swap it is the old
    # database (renamed aside afterwards, where nobody would look).
    job = Job(
        name="restore",
        kind="restore",
        backup_id=f"{catalog.new_backup_id('restore')}-{backup_id}",
        record_start=False,
    )
    history = settings.history_dsn if settings.history_dsn is not None else _dsn_for(dsn, target)
    with (
        run_job(job, history_dsn=history, metrics_dir=settings.metrics_dir),
        tempfile.TemporaryDirectory(prefix="dbtier-restore-") as tmp,
    ):
        job.set(database=target, repository=repo.describe())
        dump = _download(repo, manifest, provider, Path(tmp))[0]
        job.bytes = manifest.raw_size
        entries = _pg_restore_list(major, settings.pg_bindir, dump)
        log("restore.verified", backup_id=backup_id, entries=len(entries))
        if verify_only:
            return {"verified": True, **plan, "toc_entries": len(entries)}
        _restore_into_staging(settings, manifest, dump, dsn, names, major, jobs, no_owner, entries)
        _swap(admin_dsn, names, exists)
        _settle_own_row(_dsn_for(dsn, target), manifest)
    result = {**plan, "restored": True, "validated_tables": len(manifest.row_counts)}
    if exists:
        result["drop_kept_database"] = _drop_command(admin_dsn, names.aside)
        log("restore.kept", database=names.aside, drop=result["drop_kept_database"])
    result["safety_backup_id"] = _safety_backup(settings, dsn, names) if safety else None
    return result


def _settle_own_row(dsn: str, manifest: catalog.Manifest) -> None:
    """The dump caught the backup_history row of its own backup while it was 'running': mark it
    completed from the manifest, or the next job would reap it as interrupted."""
    try:
        with db.connect(dsn, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('public.backup_history')").fetchone()[0]:
                # The manifest's times have whole seconds: never before the row's start.
                conn.execute(
                    "UPDATE backup_history SET status = 'completed', "
                    "completed_at = greatest(started_at, %(at)s), duration_seconds = "
                    "round(extract(epoch FROM greatest(started_at, %(at)s) - started_at), 3), "
                    "size_bytes = %(size)s WHERE backup_id = %(id)s AND status = 'running'",
                    {"at": manifest.stopped, "size": manifest.size, "id": manifest.id},
                )
    except (DbtierError, psycopg.Error) as exc:
        log("history.unavailable", "warning", reason=db.first_line(exc))


def _steps(names: SwapNames, exists: bool, jobs: int, verify_only: bool, safety: bool) -> list[str]:
    steps = ["download, verify checksums, decrypt", "pg_restore --list"]
    if verify_only:
        return steps
    steps += [
        f"create {names.staging} and pg_restore -j {jobs} into it",
        "validate: every table readable, row counts equal the manifest's",
    ]
    if not exists:
        return [*steps, f"rename {names.staging} to {names.target}"]
    steps += [
        f"swap: block and end connections to {names.target}, rename it to {names.aside} "
        f"(kept), rename {names.staging} to {names.target}",
    ]
    if safety:
        steps.append(f"safety backup (kind safety) of {names.aside} into the repository")
    return steps


def _restore_into_staging(
    settings: Settings,
    manifest: catalog.Manifest,
    dump: Path,
    dsn: str,
    names: SwapNames,
    major: int,
    jobs: int,
    no_owner: bool,
    entries: list[str],
) -> None:
    """pg_restore into the staging database and validate it; the live database is not touched.
    On failure the staging database is left for inspection and the error says how to drop it."""
    admin_dsn = _dsn_for(dsn, "postgres")
    with db.connect(admin_dsn, autocommit=True) as conn:
        try:
            conn.execute(_create_staging(conn, names))
        except psycopg.errors.InsufficientPrivilege as exc:
            if "create database" not in str(exc):
                raise
            role = conn.execute("SELECT current_user").fetchone()[0]
            raise UsageError(createdb_denied(role, names.staging)) from None
    left = (
        f"{names.target} untouched; staging database {names.staging} left for inspection, "
        f"drop it with: {_drop_command(admin_dsn, names.staging)}"
    )
    log("restore.staging", database=names.staging)
    try:
        bare_dsn, env = split_password(_dsn_for(dsn, names.staging))
        cmd = [
            program("pg_restore", major, settings.pg_bindir),
            "--verbose",
            "--exit-on-error",
            f"--jobs={jobs}",
            "--no-password",
            *(["--no-owner"] if no_owner else []),
            "--dbname",
            bare_dsn,
            str(dump),
        ]
        child = Child(cmd, env, on_line=_progress(len(entries)))
        try:
            rc = child.wait()
        finally:
            child.kill()  # an interrupted restore (SIGTERM, ^C) leaves no pg_restore behind
        if rc != 0:
            raise DbtierError(f"pg_restore failed: {child.error_line()}")
        problems = validate_counts(_dsn_for(dsn, names.staging), manifest.row_counts)
        if problems:
            raise DbtierError(f"validation failed: {problems[0]} ({len(problems)} table(s))")
    except DbtierError as exc:
        raise DbtierError(f"{exc} ({left})", exc.exit_code) from None
    except psycopg.Error as exc:
        raise DbtierError(f"PostgreSQL: {db.first_line(exc)} ({left})") from None
    except BaseException:
        log("restore.left", "error", database=names.staging, detail=left)
        raise


def _create_staging(conn: psycopg.Connection, names: SwapNames) -> sql.Composed:
    """CREATE DATABASE for the staging database: like the live one (owner, encoding, locale)
    when it exists, so the swap changes the content only."""
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
        "FROM pg_database WHERE datname = %s",
        (names.target,),
    ).fetchone()
    create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(names.staging))
    if row is None:
        return create
    return sql.SQL("{} OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        create, sql.Identifier(row[0]), *(sql.Literal(v) for v in row[1:])
    )


def _swap(admin_dsn: str, names: SwapNames, exists: bool) -> None:
    """Put the staging database in place by renames, in one transaction: either the restored
    database is <target> and the old one is <aside>, or nothing changed."""
    rename = "ALTER DATABASE {} RENAME TO {}"
    with db.connect(admin_dsn, autocommit=True) as conn:
        if exists:
            # No new sessions, then end the current ones: a database in use cannot be renamed.
            _allow_connections(conn, names.target, False)
        try:
            if exists:
                terminated = conn.execute(
                    "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (names.target,),
                ).fetchone()[0]
                log("restore.sessions_ended", database=names.target, sessions=terminated)
            with conn.transaction():
                if exists:
                    conn.execute(
                        sql.SQL(rename).format(
                            sql.Identifier(names.target), sql.Identifier(names.aside)
                        )
                    )
                conn.execute(
                    sql.SQL(rename).format(
                        sql.Identifier(names.staging), sql.Identifier(names.target)
                    )
                )
        except BaseException as exc:
            if exists:  # whatever failed, the live database takes connections again
                _allow_connections(conn, names.target, True)
            if isinstance(exc, psycopg.Error):
                raise DbtierError(
                    f"swap failed, {names.target} untouched: PostgreSQL: {db.first_line(exc)} "
                    f"(the validated restore is in {names.staging}; drop it with: "
                    f"{_drop_command(admin_dsn, names.staging)})"
                ) from None
            raise
        if exists:
            _allow_connections(conn, names.aside, True)  # to inspect it and back it up
    log("restore.swapped", database=names.target, kept=names.aside if exists else None)


def _allow_connections(conn: psycopg.Connection, database: str, allow: bool) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allow else "false")
        )
    )


def _safety_backup(settings: Settings, dsn: str, names: SwapNames) -> str:
    """Back up the kept-aside database into the repository (kind safety; `latest` never picks
    it). After the swap nothing writes to it, so the copy is exact and the restore is already
    in service. A failure here loses nothing: the kept database is still there."""
    try:
        # Its backup_history row goes to the restored database, where operators look.
        history = settings.history_dsn or _dsn_for(dsn, names.target)
        safety = backup.backup_logical(
            dataclasses.replace(settings, history_dsn=history),
            kind="safety",
            database_dsn=_dsn_for(dsn, names.aside),
        )
    except (DbtierError, psycopg.Error) as exc:
        reason = f"PostgreSQL: {db.first_line(exc)}" if isinstance(exc, psycopg.Error) else exc
        raise DbtierError(
            f"restored {names.target}, but the safety backup of the kept database "
            f"{names.aside} failed: {reason} (the old data is still in {names.aside})",
            getattr(exc, "exit_code", None),
        ) from None
    log("restore.safety_backup", backup_id=safety["backup_id"], database=names.aside)
    return str(safety["backup_id"])


# --------------------------------------------------------------------------------- PITR


_LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops, as recovery_target* settings.

    time: the last commit at or before a moment; lsn: a WAL position; name: a restore point
    (pg_create_restore_point); latest: the end of the archive (no target at all); immediate:
    the base backup's consistency point (deep verify, or PITR to the backup itself).
    """

    kind: str
    value: str
    time: datetime | None = None
    lsn: int | None = None

    @classmethod
    def at_time(cls, text: str) -> RecoveryTarget:
        if not text.strip():
            raise UsageError("empty target time (e.g. --target-time '2026-04-07 14:30:00+00')")
        when = catalog.parse_time(text)
        return cls("time", catalog.iso_precise(when), when)

    @classmethod
    def at_lsn(cls, text: str) -> RecoveryTarget:
        value = text.strip().upper()
        if not _LSN_RE.match(value):
            raise UsageError(
                f"bad LSN {text!r}: give it as pg_current_wal_lsn() shows it, e.g. 0/3000060"
            )
        return cls("lsn", value, lsn=catalog.lsn_value(value))

    @classmethod
    def named(cls, name: str) -> RecoveryTarget:
        if not name.strip() or len(name.encode()) > NAME_LIMIT:
            raise UsageError(
                f"bad restore point name {name!r}: the name given to "
                f"pg_create_restore_point(), 1 to {NAME_LIMIT} bytes"
            )
        return cls("name", name)

    @classmethod
    def latest(cls) -> RecoveryTarget:
        return cls("latest", "end of the archive")

    @classmethod
    def immediate(cls) -> RecoveryTarget:
        return cls("immediate", "consistency")

    def describe(self) -> str:
        return {
            "time": f"target {self.value}",
            "lsn": f"target LSN {self.value}",
            "name": f"restore point {self.value}",
        }.get(self.kind, f"target {self.kind}")

    def conf_lines(self) -> list[str]:
        if self.kind == "time" and self.time is not None:
            stamp = f"{self.time.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f+00}"
            return [f"recovery_target_time = {_conf_quote(stamp)}"]
        if self.kind == "lsn":
            return [f"recovery_target_lsn = {_conf_quote(self.value)}"]
        if self.kind == "name":
            return [f"recovery_target_name = {_conf_quote(self.value)}"]
        if self.kind == "immediate":
            return ["recovery_target = 'immediate'"]
        if self.kind == "latest":
            return []  # no target: replay everything the archive has, then promote
        raise AssertionError(f"unknown recovery target kind {self.kind}")

    def reachable_from(self, base: catalog.Manifest) -> bool:
        """Whether recovery from this base backup can stop at the target: a time or an LSN
        must not lie before the backup's consistency point (its stop)."""
        if self.time is not None:
            return base.stopped <= self.time
        if self.lsn is not None:
            return catalog.lsn_value(base.stop_lsn or "0/0") <= self.lsn
        return True


def pitr_target(
    when: str | None = None, target: str | None = None, name: str | None = None,
    lsn: str | None = None,
) -> RecoveryTarget:  # fmt: skip
    """The one target restore pitr was given (--target-time | --target | --target-name |
    --target-lsn)."""
    given = [v for v in (when, target, name, lsn) if v is not None]
    if len(given) != 1:
        raise UsageError(
            "give exactly one of --target-time, --target latest|immediate, --target-name, "
            "--target-lsn"
        )
    if when is not None:
        return RecoveryTarget.at_time(when)
    if name is not None:
        return RecoveryTarget.named(name)
    if lsn is not None:
        return RecoveryTarget.at_lsn(lsn)
    if target == "latest":
        return RecoveryTarget.latest()
    if target == "immediate":
        return RecoveryTarget.immediate()
    raise UsageError(f"unknown --target {target!r} (latest or immediate)")


def parse_timeline(text: str) -> str:
    """recovery_target_timeline: latest, current or a timeline id."""
    value = text.strip().lower()
    if value in ("latest", "current") or (value.isdigit() and int(value) > 0):
        return value
    raise UsageError(f"bad timeline {text!r} (latest, current or a number such as 2)")


def timeline_ancestry(store: Store, archived: list[str], timeline: str) -> tuple[int, dict]:
    """The timeline recovery will follow (latest = the highest with a history file, as
    PostgreSQL picks it) and its ancestors: {parent timeline: LSN where the child branched}."""
    histories = sorted(int(n[:8], 16) for n in archived if catalog.HISTORY_RE.match(n))
    if timeline == "latest":
        wanted = max(histories, default=1)
    elif timeline == "current":
        return 0, {}  # each base backup's own timeline
    else:
        wanted = int(timeline)
    if wanted not in histories:
        return wanted, {}
    from . import wal

    ancestors = {}
    text = wal.read_archived(store, f"{wanted:08X}.history").decode(errors="replace")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            ancestors[int(fields[0])] = catalog.lsn_value(fields[1])
    return wanted, ancestors


def on_the_way(manifest: catalog.Manifest, wanted: int, ancestors: dict[int, int]) -> bool:
    """Whether recovery from this base backup can follow the wanted timeline: the base is on
    it, or on an ancestor and consistent before the wanted timeline branched off."""
    base_tli = manifest.timeline or 1
    if wanted == 0 or base_tli == wanted:
        return True
    branch = ancestors.get(base_tli)
    return branch is not None and catalog.lsn_value(manifest.stop_lsn or "0/0") <= branch


def choose_base(
    store: Store, target: RecoveryTarget, base_id: str | None = None, timeline: str = "latest"
) -> catalog.Manifest:
    """base_id's base backup, checked; else the newest good one the target is reachable from
    (complete, not failed by its last verification: the same rule retention uses; an older
    good one beats a newer bad one), on the way to the timeline recovery follows (after a
    switch and a way back, the abandoned timeline's base backups lead nowhere)."""
    bases = catalog.list_backups(store.repo, store.provider, kind="base")
    if not bases:
        raise UsageError(
            f"no base backup in {store.describe()}: PITR needs one (dbtier backup base)"
        )
    archived = catalog.archived_wal(store.repo)
    wanted, ancestors = timeline_ancestry(store, archived, timeline)
    if base_id is not None:
        manifest = _explicit_base(store, target, base_id, archived)
        if not on_the_way(manifest, wanted, ancestors):
            raise UsageError(
                f"base backup {manifest.id} (timeline {manifest.timeline}) cannot reach "
                f"timeline {wanted}: pass another --base or --target-timeline"
            )
        return manifest
    bases = [m for m in bases if on_the_way(m, wanted, ancestors)]
    if not bases:
        raise UsageError(
            f"no base backup leads to timeline {wanted}: pass --target-timeline of one that "
            "has base backups (dbtier backup list), or take one (dbtier backup base)"
        )
    usable = [m for m in bases if target.reachable_from(m)]
    if not usable:
        raise UsageError(
            f"{target.describe()} is before the oldest base backup ({bases[0].id}, consistent "
            f"at {bases[0].stopped_at}, LSN {bases[0].stop_lsn}): no base backup reaches it"
        )
    good = [m for m in usable if catalog.is_good(store.repo, store.provider, m, archived)]
    if not good:
        raise DbtierError(
            f"no usable base backup for {target.describe()}: {usable[-1].id} and older ones are "
            "incomplete or failed verification (dbtier backup list / backup verify ID)"
        )
    if good[-1] is not usable[-1]:
        log("pitr.skipped_bad_base", "warning", skipped=usable[-1].id, using=good[-1].id)
    return good[-1]


def _explicit_base(
    store: Store, target: RecoveryTarget, base_id: str, archived: list[str]
) -> catalog.Manifest:
    """--base ID: a good base backup from before the target, or a one-line refusal."""
    manifest = catalog.find_backup(store.repo, store.provider, base_id, kinds=("base",))
    if manifest.kind != "base":
        raise UsageError(
            f"backup {manifest.id} is a {manifest.kind} backup: --base needs a base backup "
            "(dbtier backup list)"
        )
    if not catalog.is_good(store.repo, store.provider, manifest, archived):
        raise UsageError(
            f"base backup {manifest.id} is incomplete or failed its last verification: pass "
            "another --base (dbtier backup list), or check it with dbtier backup verify "
            f"{manifest.id}"
        )
    if not target.reachable_from(manifest):
        raise UsageError(
            f"base backup {manifest.id} is consistent at {manifest.stopped_at} (LSN "
            f"{manifest.stop_lsn}), after {target.describe()}: pass an older --base "
            "(dbtier backup list) or leave --base out"
        )
    return manifest


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def _restore_command(settings: Settings) -> str:
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "dbtier" else None
    dbtier = str(exe) if exe and exe.exists() else str(Path(sys.executable).parent / "dbtier")
    dbtier = settings.command or shlex.quote(dbtier)
    env = {
        "BACKUP_REPOSITORY": settings.repository,
        "DBTIER_MASTER_KEY_SPEC": settings.key,
        "DBTIER_AWS_ENDPOINT_URL": settings.endpoint_url,
        "BACKUP_REGION": settings.region,
        "DBTIER_CONFIG": os.environ.get("DBTIER_CONFIG"),
    }
    # Only references go into postgresql.auto.conf, never secrets: the master key and AWS
    # credentials reach wal-fetch through the server's environment or dbtier.toml.
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if v)
    return f"{prefix} {dbtier} wal-fetch %f %p".strip()


def _extract(repo: Repository, manifest: catalog.Manifest, provider: Any, datadir: Path) -> None:
    """Decrypt and decompress the base backup straight into the data directory (untar.py: file
    data is written from the decompressed chunks, no second copy on disk), then check the
    whole stream against the manifest: stored size and sha256, raw size (and the raw sha256 of
    backups that have one) by download_decrypted, zstd's content checksum by the decompressor,
    before anything may start a server on it."""
    data_key = provider.unwrap(manifest.wrapped_key)
    obj = manifest.objects[0]
    extractor = TarExtractor(datadir)
    writer = ThreadedWriter(extractor)
    try:
        download_decrypted(
            repo,
            catalog.object_key(manifest.id, obj.key),
            writer,  # type: ignore[arg-type]
            data_key,
            expected_sha256=obj.sha256,
            expected_size=obj.size,
            expected_raw_sha256=obj.raw_sha256,
            expected_raw_size=obj.raw_size,
            hash_raw=False,  # unless the manifest has a raw SHA-256 to compare with
        )
        writer.close()
        extractor.close()
    except BaseException:
        with contextlib.suppress(BaseException):
            writer.close()  # the thread must not write on while the caller cleans up
        extractor.abort()
        raise
    log("restore.unpacked", backup_id=manifest.id, files=extractor.files, bytes=extractor.bytes)
    _check_system_identifier(datadir, manifest)


def _check_system_identifier(datadir: Path, manifest: catalog.Manifest) -> None:
    """The unpacked cluster must be the one the manifest names (pg_control starts with its
    system identifier, a native-endian u64)."""
    try:
        raw = (datadir / "global" / "pg_control").read_bytes()[:8]
    except OSError as exc:
        raise DbtierError(
            f"base backup {manifest.id}: no readable global/pg_control ({exc})"
        ) from None
    found = str(int.from_bytes(raw, sys.byteorder)) if len(raw) == 8 else "?"
    if found != manifest.system_identifier:
        raise DbtierError(
            f"base backup {manifest.id}: the unpacked cluster has system identifier {found}, "
            f"the manifest says {manifest.system_identifier}"
        )


def _check_datadir(datadir: str) -> Path:
    """The new data directory: absolute, and absent or an empty directory."""
    if not datadir.strip():
        raise UsageError("empty --data-dir (a new or empty directory, e.g. /var/lib/pitr)")
    directory = Path(datadir)
    if not directory.is_absolute():
        raise UsageError(f"--data-dir {datadir} is relative: give an absolute path")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--data-dir {datadir} is not a directory: give a new or empty one")
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"data directory {directory} is not empty: restore into a new one")
    return directory


class TargetNotReached(DbtierError):
    """PostgreSQL ended recovery at the end of the archive without reaching its target."""


def restore_pitr(
    settings: Settings,
    target: RecoveryTarget,
    datadir: str,
    *,
    base_id: str | None = None,
    timeline: str = "latest",
    port: int | None = None,
    keep_running: bool = False,
    timeout: float = 1800,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Recover a base backup (base_id, else the newest good one before target) into a new data
    directory with WAL from the archive, promote it and check it answers; archiving stays off
    on the recovered server."""
    from . import wal  # local import: wal imports pipeline lazily too

    directory = _check_datadir(datadir)
    timeline = parse_timeline(timeline)
    store = open_store(settings)
    repo, provider = store.repo, store.provider
    base = choose_base(store, target, base_id, timeline)
    last = wal.last_archived(store)
    if last is None:
        raise UsageError(f"no WAL archived in {repo.describe()}: PITR impossible")
    _check_archive_reaches(settings, target, base, last)
    plan = {
        "target": target.kind,
        **(
            {f"target_{target.kind}": target.value}
            if target.kind in ("time", "lsn", "name")
            else {}
        ),
        "target_timeline": timeline,
        "base_backup": base.id,
        "base_consistent_at": base.stopped_at,
        "base_stop_lsn": base.stop_lsn,
        "start_wal": base.start_wal_file,
        "last_archived_wal": last[0],
        "last_archived_at": last[1],
        "data_directory": str(directory),
    }
    if dry_run:
        return {"dry_run": True, **plan}
    require_server(_major(base), settings.pg_bindir, "restore pitr ...")
    job = Job(name="restore_pitr", kind="pitr", backup_id=f"{catalog.new_backup_id('pitr')}")
    with run_job(job, history_dsn=settings.history(), metrics_dir=settings.metrics_dir):
        job.bytes = base.raw_size
        try:
            result = recover(
                settings,
                repo,
                provider,
                base,
                directory,
                target,
                timeline=timeline,
                port=port,
                keep_running=keep_running,
                timeout=timeout,
                database=_dbname(settings.dsn),
            )
        except TargetNotReached:
            _empty(directory)  # a half-recovered cluster is of no use: retry into it
            raise DbtierError(_not_reached(target, base, last, directory)) from None
        return {**plan, **result}
    raise AssertionError("unreachable")  # pragma: no cover


def _major(base: catalog.Manifest) -> int:
    return int(base.server_version.split(".")[0])


def _dbname(dsn: str | None) -> str:
    """The database the settings name (what the operator will want to look at), else postgres."""
    try:
        return str(conninfo_to_dict(dsn or "").get("dbname") or "postgres")
    except psycopg.ProgrammingError:
        return "postgres"


def _check_archive_reaches(
    settings: Settings, target: RecoveryTarget, base: catalog.Manifest, last: tuple[str, str]
) -> None:
    """Refuse a time or LSN target beyond the archive, saying how to get it archived."""
    name, pushed = last
    end = (catalog.segment_number(name, base.wal_segment_size) + 1) * base.wal_segment_size
    # pushed_at has whole seconds: the push may have been up to a second later
    if target.time is not None and catalog.parse_time(pushed) + timedelta(seconds=1) < target.time:
        where = f"the last archived WAL ({name}, pushed {pushed})"
    elif target.lsn is not None and target.lsn >= end:
        where = f"the end of the last archived WAL ({name}, pushed {pushed})"
    else:
        return
    raise UsageError(
        f"{target.describe()} is after {where}: run SELECT pg_switch_wal() on the primary "
        f"{_archive_wait(settings.dsn)}, then retry; or use --target latest to recover "
        "everything archived so far"
    )


def _archive_wait(dsn: str | None) -> str:
    """How long until the primary archives its current segment by itself, if it answers."""
    try:
        with psycopg.connect(dsn or "", connect_timeout=3, autocommit=True) as conn:
            value = str(conn.execute("SHOW archive_timeout").fetchone()[0])
    except psycopg.Error:
        return "or wait archive_timeout for it to archive the current segment"
    if value == "0":
        return "(its archive_timeout is 0: only a switch or a full segment archives WAL)"
    return f"or wait archive_timeout ({value}) for it to archive the current segment"


def _not_reached(
    target: RecoveryTarget, base: catalog.Manifest, last: tuple[str, str], directory: Path
) -> str:
    """What recovery that ended before its target means for this target, and what to run."""
    archived = f"up to {last[0]}, pushed {last[1]}"
    retry = f"(--data-dir {directory} was emptied for the retry)"
    if target.kind == "time":
        return (
            f"no transaction committed after {target.value} is archived, so recovery cannot "
            f"confirm it reached {target.value}: use --target latest (everything archived, "
            f"{archived}), or commit something and SELECT pg_switch_wal() on the primary and "
            f"retry {retry}"
        )
    if target.kind == "name":
        return (
            f"restore point {target.value} not found after base backup {base.id}: it may "
            "predate that base backup (pass --base of an older one: dbtier backup list) or not "
            f"be archived yet (SELECT pg_switch_wal() on the primary, then retry) {retry}"
        )
    return (
        f"recovery from base backup {base.id} ended before {target.describe()}: the archive "
        f"ends at {last[0]} (pushed {last[1]}); SELECT pg_switch_wal() on the primary and "
        f"retry, or use --target latest {retry}"
    )


def _ensure_config_files(directory: Path) -> None:
    """Debian keeps postgresql.conf and pg_hba.conf in /etc, outside the base backup: give the
    recovered server minimal ones (local peer, loopback SCRAM) so that it can start."""
    defaults = {
        "postgresql.conf": "# dbtier restore: the original configuration was outside the data "
        "directory.\n",
        "pg_hba.conf": "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
        "pg_ident.conf": "",
    }
    for name, text in defaults.items():
        path = directory / name
        if not path.exists():
            path.write_text(text)
            path.chmod(0o600)


def _empty(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _prepare(
    settings: Settings,
    repo: Repository,
    provider: Any,
    base: catalog.Manifest,
    directory: Path,
    lines: list[str],
) -> None:
    """Unpack and check the base backup, then set it up to recover (recovery.signal, lines)."""
    fresh = not directory.exists() or not any(directory.iterdir())
    private_dir(directory)
    try:
        _extract(repo, base, provider, directory)
    except BaseException:
        if fresh:  # leave nothing unverified that someone could start by mistake
            _empty(directory)
        raise
    _ensure_config_files(directory)
    (directory / "recovery.signal").touch()
    with (directory / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# dbtier recovery\n" + "".join(f"{line}\n" for line in lines))
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                chown_to_server_user(Path(root) / name)


def recover(
    settings: Settings,
    repo: Repository,
    provider: Any,
    base: catalog.Manifest,
    directory: Path,
    target: RecoveryTarget,
    *,
    timeline: str = "latest",
    action: str = "promote",
    port: int | None = None,
    keep_running: bool = False,
    timeout: float = 1800,
    database: str = "postgres",
) -> dict[str, Any]:
    """Unpack a base backup into directory and recover with WAL from the archive up to target.

    action "promote": promote there and check the server answers (PITR); "shutdown": stop at
    the target and check the control data says so (deep verify: nothing new is ever written).
    The server runs with archive_mode=off (command line, not persisted): a scratch server must
    never push WAL or a timeline history file into the production repository.
    """
    started = time.monotonic()
    lines = [
        f"restore_command = {_conf_quote(_restore_command(settings))}",
        *target.conf_lines(),
        f"recovery_target_timeline = {_conf_quote(timeline)}",
        f"recovery_target_action = {_conf_quote(action)}",
    ]
    _prepare(settings, repo, provider, base, directory, lines)
    cluster = LocalCluster(
        base=directory.parent,
        port=port or free_port(),
        major=_major(base),
        data=directory,
        scratch=False,
        bindir=Path(settings.pg_bindir) if settings.pg_bindir else None,
        # Not persisted: the operator's own start of a recovered directory decides. The log
        # stays in cluster.logfile, where failures are read from.
        settings={"archive_mode": "off", "logging_collector": "off"},
    )
    log("pitr.start", data_directory=str(directory), port=cluster.port, action=action)
    if action == "shutdown":
        state = _run_to_target(cluster, timeout)
        seconds = round(time.monotonic() - started, 1)
        log("pitr.done", state=state, seconds=seconds)
        return {"consistent": True, "state": state, "seconds": seconds}
    try:
        try:
            cluster.start(timeout=int(timeout))
        except DbtierError:
            raise _failed(cluster, "recovery failed") from None
        replayed = _wait_promoted(cluster, timeout, directory)
    except BaseException:
        if cluster.is_running():
            cluster.stop("immediate")
        raise
    elapsed = time.monotonic() - started
    if not keep_running:
        cluster.stop()
    log("pitr.done", port=cluster.port, recovered_to=replayed, seconds=round(elapsed, 1))
    result = {
        "restored": True,
        "port": cluster.port,
        "recovered_to": replayed,
        "seconds": round(elapsed, 1),
        "running": keep_running,
    }
    return {**result, **(_how_to_use(cluster, database) if keep_running else {})}


def _how_to_use(cluster: LocalCluster, database: str) -> dict[str, str]:
    """The commands that reach and stop the recovered server: its socket directory (local
    peer auth), as the server's OS user."""
    as_server = (
        "" if os.geteuid() == pwd.getpwnam(SERVER_USER).pw_uid else f"sudo -u {SERVER_USER} "
    )
    psql = ["psql", "-h", str(cluster.sockdir), "-p", str(cluster.port), "-U", SERVER_USER]
    stop = [cluster.program("pg_ctl"), "-D", str(cluster.datadir), "stop", "-m", "fast"]
    return {
        "socket_directory": str(cluster.sockdir),
        "connect": as_server + shlex.join([*psql, "-d", database]),
        "stop": as_server + shlex.join(stop),
    }


def _run_to_target(cluster: LocalCluster, timeout: float) -> str:
    """Run recovery until the server shuts itself down at the target, then check in the control
    file that it got there: shut down in recovery, the backup's end replayed (consistent)."""
    if cluster.run_to_exit(timeout) is None:
        raise DbtierError(
            f"recovery did not reach its target within {timeout:g}s (log: {cluster.logfile})"
        )
    control = cluster.control_data()
    state = control.get("Database cluster state", "unknown")
    consistent = (
        state == "shut down in recovery"
        and control.get("Backup start location") == "0/0"
        and control.get("End-of-backup record required") == "no"
    )
    if not consistent:
        raise DbtierError(f"recovery failed: {_recovery_failure(cluster)} (state: {state})")
    return state


def _wait_promoted(cluster: LocalCluster, timeout: float, datadir: Path) -> str | None:
    deadline = time.monotonic() + timeout
    # The socket, not TCP: the server's pg_hba.conf may want passwords on TCP (peer locally).
    dsn = make_conninfo(host=str(cluster.sockdir), port=str(cluster.port), dbname="postgres",
                        user=SERVER_USER)  # fmt: skip
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not cluster.is_running():
            raise _failed(cluster, "recovery stopped")
        try:
            with (
                server_identity(),
                psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn,
            ):
                in_recovery, replayed = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()"
                ).fetchone()
                if not in_recovery:
                    return catalog.iso_precise(replayed) if replayed else None
        except psycopg.OperationalError as exc:
            last_error = db.reason(exc)
            if "authentication" in last_error or "pg_hba.conf" in last_error:
                raise DbtierError(f"cannot check the recovered server: {last_error}") from None
        time.sleep(0.5)
    raise DbtierError(
        f"recovery did not finish within {timeout:g}s ({last_error}; log: {cluster.logfile})"
    )


NOT_REACHED = "recovery ended before configured recovery target was reached"


def _failed(cluster: LocalCluster, what: str) -> DbtierError:
    """The server's FATAL line; TargetNotReached when the archive ended before the target."""
    reason = _recovery_failure(cluster)
    if NOT_REACHED in reason:
        return TargetNotReached(f"{what}: {reason}")
    return DbtierError(f"{what}: {reason}")


def _recovery_failure(cluster: LocalCluster) -> str:
    try:
        lines = cluster.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return "see the server log"
    for line in reversed(lines):
        # The connection attempts of _wait_promoted are refused with FATALs of their own
        # ("the database system is in recovery mode"), possibly logged after the startup
        # process's: they say nothing about why recovery stopped.
        if ("FATAL" in line or "PANIC" in line) and not _CONNECTION_REFUSED.search(line):
            return re.sub(r"^.*?(FATAL|PANIC):\s*", "", line)
    return f"see {cluster.logfile}"


_CONNECTION_REFUSED = re.compile(
    r"the database system is (starting up|in recovery mode|shutting down|not yet accepting"
    r" connections|not accepting connections)"
)


# ---------------------------------------------------------------------------------- RDS


def restore_rds(
    settings: Settings,
    instance: str,
    new_instance: str,
    target_time: str | None,
    *,
    wait: bool = True,
    timeout: float = 3600,
    dry_run: bool = False,
) -> dict[str, Any]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("rds", endpoint_url=settings.endpoint_url, region_name=settings.region)
    args: dict[str, Any] = {
        "SourceDBInstanceIdentifier": instance,
        "TargetDBInstanceIdentifier": new_instance,
    }
    if target_time:
        args["RestoreTime"] = catalog.parse_time(target_time)
    else:
        args["UseLatestRestorableTime"] = True
    try:
        source = client.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
        for key in ("DBSubnetGroupName",):
            group = source.get("DBSubnetGroup", {}).get(key)
            if group:
                args[key] = group
        args["MultiAZ"] = bool(source.get("MultiAZ"))
        args["VpcSecurityGroupIds"] = [
            g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])
        ]
        if not args["VpcSecurityGroupIds"]:
            del args["VpcSecurityGroupIds"]
        if dry_run:
            return {"dry_run": True, "request": {k: str(v) for k, v in args.items()}}
        job = Job(name="restore_rds", kind="pitr", backup_id=catalog.new_backup_id("rds-pitr"))
        with run_job(job, history_dsn=settings.history(), metrics_dir=settings.metrics_dir):
            client.restore_db_instance_to_point_in_time(**args)
            log(
                "rds.restore_requested",
                source=instance,
                target=new_instance,
                restore_time=target_time or "latest",
            )
            status = "requested"
            if wait:
                client.get_waiter("db_instance_available").wait(
                    DBInstanceIdentifier=new_instance,
                    WaiterConfig={"Delay": 15, "MaxAttempts": max(1, int(timeout // 15))},
                )
                status = "available"
            described = client.describe_db_instances(DBInstanceIdentifier=new_instance)[
                "DBInstances"
            ][0]
            endpoint = described.get("Endpoint", {})
            return {
                "instance": new_instance,
                "status": status,
                "endpoint": f"{endpoint.get('Address')}:{endpoint.get('Port')}",
            }
    except ClientError as exc:
        raise DbtierError(f"RDS: {exc.response['Error'].get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise DbtierError(f"RDS: {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover
