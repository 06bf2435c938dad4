"""dbtier restore: logical restores (pg_restore -j), PITR from base backup + WAL, RDS PITR."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import backup, catalog, db, keys
from .config import Settings
from .errors import DbtierError, UsageError
from .jobs import Job, log, run_job
from .pgcluster import SERVER_USER, LocalCluster, chown_to_server_user, free_port
from .pgtools import Child, program, split_password
from .pipeline import download_decrypted
from .repository import Repository, open_repository
from .store import Store

RESTORE_SUFFIX = "__dbtier_restore"


def _open(settings: Settings, ref: str, provider: Any) -> tuple[Repository, catalog.Manifest, str]:
    """Resolve latest | id | <repository URL>/backups/<id> to (repository, manifest, id)."""
    if "://" in ref:
        url, backup_id = catalog.split_backup_url(ref)
    else:
        url = settings.require("repository", "set BACKUP_REPOSITORY or pass a backup URL")
        backup_id = ref
    repo = open_repository(url, endpoint_url=settings.endpoint_url, region=settings.region)
    manifest = catalog.find_backup(repo, provider, backup_id, kinds=("logical", "safety"))
    return repo, manifest, manifest.id


def _download(
    repo: Repository, manifest: catalog.Manifest, provider: Any, workdir: Path
) -> list[Path]:
    """Every object of the backup, verified and decrypted, into workdir (nothing else touched)."""
    data_key = keys.unwrap_data_key(provider, manifest.encryption["data_key"])
    paths = []
    for obj in manifest.objects:
        path = workdir / obj.key.removesuffix(".zst.enc")
        started = time.monotonic()
        with path.open("wb") as handle:
            result = download_decrypted(
                repo,
                catalog.object_key(manifest.id, obj.key),
                handle,
                data_key,
                expected_sha256=obj.sha256,
            )
        if result.raw_sha256 != obj.raw_sha256:
            raise DbtierError(f"object {obj.key}: content checksum mismatch after decryption")
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
        raise DbtierError(f"pg_restore --list failed: {proc.stderr.strip().splitlines()[-1]}")
    return [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith(";")]


def _dsn_for(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn) if dsn else {}
    params["dbname"] = dbname
    return make_conninfo("", **{k: str(v) for k, v in params.items()})


def count_rows(dsn: str, tables: list[str]) -> dict[str, int | str]:
    counts: dict[str, int | str] = {}
    with db.connect(dsn, autocommit=True) as conn:
        for table in tables:
            schema, name = table.split(".", 1)
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
            try:
                counts[table] = conn.execute(query).fetchone()[0]
            except psycopg.Error as exc:
                counts[table] = f"error: {db.first_line(exc)}"
    return counts


def validate_counts(dsn: str, expected: dict[str, int]) -> list[str]:
    """Mismatches between the restored database and the manifest's row counts."""
    actual = count_rows(dsn, sorted(expected))
    return [
        f"{t}: expected {expected[t]} rows, found {actual[t]}"
        for t in sorted(expected)
        if actual[t] != expected[t]
    ]


def _progress(total: int) -> Any:
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
    provider = keys.from_settings(settings)
    repo, manifest, backup_id = _open(settings, ref, provider)
    keys.unwrap_data_key(provider, manifest.encryption["data_key"])  # wrong key: fail now
    dsn = settings.dsn or db.resolve_dsn(None)
    target = target_db or manifest.database
    if not target:
        raise UsageError("no target database (pass --target-db)")
    admin_dsn = _dsn_for(dsn, "postgres")
    with db.connect(admin_dsn, autocommit=True) as conn:
        exists = (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone()
            is not None
        )
        major = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
    major //= 10000
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
        "jobs": jobs,
        "safety_backup": exists and not skip_safety_backup and not verify_only,
        "tables": len(manifest.row_counts),
        "steps": [
            "download, verify checksums, decrypt",
            "pg_restore --list",
            *(
                []
                if verify_only
                else [
                    *(
                        ["safety backup of the existing database"]
                        if exists and not skip_safety_backup
                        else []
                    ),
                    f"create {target}{RESTORE_SUFFIX} and pg_restore -j {jobs} into it",
                    "validate: every table readable, row counts equal the manifest's",
                    f"swap: {target} replaced by the restored database"
                    if exists
                    else f"rename to {target}",
                ]
            ),
        ],
    }
    if dry_run:
        return {"dry_run": True, **plan}
    job = Job(
        name="restore", kind="restore", backup_id=f"{catalog.new_backup_id('restore')}-{backup_id}"
    )
    with (
        run_job(job, history_dsn=settings.history_dsn, metrics_dir=settings.metrics_dir),
        tempfile.TemporaryDirectory(prefix="dbtier-restore-") as tmp,
    ):
        job.set(database=target, repository=repo.describe())
        workdir = Path(tmp)
        dump = _download(repo, manifest, provider, workdir)[0]
        job.bytes = manifest.raw_size
        entries = _pg_restore_list(major, settings.pg_bindir, dump)
        log("restore.verified", backup_id=backup_id, entries=len(entries))
        if verify_only:
            return {"verified": True, **plan, "toc_entries": len(entries)}
        safety = None
        if exists and not skip_safety_backup:
            safety = backup.backup_logical(
                settings, kind="safety", database_dsn=_dsn_for(dsn, target)
            )
            log("restore.safety_backup", backup_id=safety["backup_id"])
        staging = f"{target}{RESTORE_SUFFIX}"
        with db.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(staging))
            )
        bare_dsn, env = split_password(_dsn_for(dsn, staging))
        cmd = [
            program("pg_restore", major, settings.pg_bindir),
            "--verbose",
            "--exit-on-error",
            f"--jobs={jobs}",
            "--no-password",
            "--dbname",
            bare_dsn,
            str(dump),
        ]
        if no_owner:
            cmd.insert(1, "--no-owner")
        child = Child(cmd, env)
        child.on_line = _progress(len(entries))
        if child.wait() != 0:
            raise DbtierError(
                f"pg_restore failed: {child.error_line()} "
                f"(staging database {staging} left for inspection)"
            )
        problems = validate_counts(_dsn_for(dsn, staging), manifest.row_counts)
        if problems:
            raise DbtierError(
                f"validation failed: {problems[0]} ({len(problems)} table(s); "
                f"staging database {staging} left, {target} untouched)"
            )
        with db.connect(admin_dsn, autocommit=True) as conn:
            if exists:
                conn.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target))
                )
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(staging), sql.Identifier(target)
                )
            )
        log("restore.done", database=target, tables=len(manifest.row_counts))
        return {
            **plan,
            "restored": True,
            "safety_backup_id": safety["backup_id"] if safety else None,
            "validated_tables": len(manifest.row_counts),
        }
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------- PITR


def choose_base(repo: Repository, provider: Any, target: Any) -> catalog.Manifest:
    bases = catalog.list_backups(repo, provider, kind="base")
    if not bases:
        raise UsageError(
            f"no base backup in {repo.describe()}: PITR needs one (dbtier backup base)"
        )
    usable = [m for m in bases if m.stopped <= target]
    if not usable:
        raise UsageError(
            f"target {catalog.iso(target)} is before the oldest base backup "
            f"({bases[0].id}, consistent at {bases[0].stopped_at})"
        )
    return usable[-1]


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


def _safe_extract(tar: tarfile.TarFile, destination: Path) -> None:
    """Unpack a streamed tar, refusing members that would land outside destination.

    Python >= 3.11.4 has the "data" filter; Debian 12's 3.11.2 does not, so check by hand.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    root = destination.resolve()
    for member in tar:
        path = (root / member.name).resolve()
        unsafe = not path.is_relative_to(root) or member.isdev()
        if member.issym() or member.islnk():
            base = path.parent if member.issym() else root
            unsafe = unsafe or not (base / member.linkname).resolve().is_relative_to(root)
        if unsafe:
            raise DbtierError(f"unsafe member in base backup: {member.name}")
        tar.extract(member, root, set_attrs=True)


def _extract(repo: Repository, manifest: catalog.Manifest, provider: Any, datadir: Path) -> None:
    data_key = keys.unwrap_data_key(provider, manifest.encryption["data_key"])
    obj = manifest.objects[0]
    # Decrypt into a pipe and untar from it: no second copy of the cluster on disk.
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                download_decrypted(
                    repo,
                    catalog.object_key(manifest.id, obj.key),
                    sink,
                    data_key,
                    expected_sha256=obj.sha256,
                )
        except BaseException as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        with os.fdopen(read_fd, "rb") as source, tarfile.open(fileobj=source, mode="r|") as tar:
            _safe_extract(tar, datadir)
    except (tarfile.TarError, OSError) as exc:
        producer.join(timeout=60)
        if errors:
            raise errors[0] from None
        raise DbtierError(f"cannot unpack base backup {manifest.id}: {exc}") from None
    producer.join()
    if errors:
        raise errors[0]


def restore_pitr(
    settings: Settings,
    target_time: str,
    datadir: str,
    *,
    port: int | None = None,
    keep_running: bool = False,
    timeout: float = 1800,
    dry_run: bool = False,
) -> dict[str, Any]:
    from . import wal  # local import: wal imports pipeline lazily too

    target = catalog.parse_time(target_time)
    provider = keys.from_settings(settings)
    url = settings.require("repository", "set BACKUP_REPOSITORY or repository= in dbtier.toml")
    repo = open_repository(url, endpoint_url=settings.endpoint_url, region=settings.region)
    base = choose_base(repo, provider, target)
    last = wal.last_archived(Store(repo=repo, provider=provider, settings=settings))
    if last is None:
        raise UsageError(f"no WAL archived in {repo.describe()}: PITR impossible")
    if catalog.parse_time(last[1]) < target:
        raise UsageError(
            f"target {catalog.iso(target)} is after the last archived WAL ({last[0]}, pushed "
            f"{last[1]}): the archive cannot reach it"
        )
    keys.unwrap_data_key(provider, base.encryption["data_key"])  # wrong key: fail now
    directory = Path(datadir)
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"data directory {directory} is not empty: restore into a new one")
    plan = {
        "target_time": catalog.iso(target),
        "base_backup": base.id,
        "base_consistent_at": base.stopped_at,
        "start_wal": base.start_wal_file,
        "last_archived_wal": last[0],
        "data_directory": str(directory),
    }
    if dry_run:
        return {"dry_run": True, **plan}
    job = Job(name="restore_pitr", kind="pitr", backup_id=f"{catalog.new_backup_id('pitr')}")
    with run_job(job, history_dsn=settings.history_dsn, metrics_dir=settings.metrics_dir):
        job.bytes = base.raw_size
        target_setting = (
            f"recovery_target_time = '{target.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f+00}'"
        )
        result = recover(
            settings,
            repo,
            provider,
            base,
            directory,
            target_setting,
            port=port,
            keep_running=keep_running,
            timeout=timeout,
        )
        return {**plan, **result}
    raise AssertionError("unreachable")  # pragma: no cover


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


def recover(
    settings: Settings,
    repo: Repository,
    provider: Any,
    base: catalog.Manifest,
    directory: Path,
    target_setting: str,
    *,
    port: int | None = None,
    keep_running: bool = False,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Unpack a base backup into directory, recover with WAL from the archive up to
    target_setting (a recovery_target* line), promote, and check the server answers."""
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    _extract(repo, base, provider, directory)
    _ensure_config_files(directory)
    (directory / "recovery.signal").touch()
    with (directory / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            "\n# dbtier recovery\n"
            f"restore_command = {_conf_quote(_restore_command(settings))}\n"
            f"{target_setting}\n"
            "recovery_target_action = 'promote'\n"
        )
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                chown_to_server_user(Path(root) / name)
        chown_to_server_user(directory)
    cluster = LocalCluster(
        base=directory.parent, port=port or free_port(), data=directory, scratch=False
    )
    log("pitr.start", data_directory=str(directory), port=cluster.port)
    try:
        try:
            cluster.start(timeout=int(timeout))
        except DbtierError:
            raise DbtierError(f"recovery failed: {_recovery_failure(cluster)}") from None
        replayed = _wait_promoted(cluster, timeout, directory)
    except BaseException:
        if cluster.is_running():
            cluster.stop("immediate")
        raise
    elapsed = time.monotonic() - started
    if not keep_running:
        cluster.stop()
    log("pitr.done", port=cluster.port, recovered_to=replayed, seconds=round(elapsed, 1))
    return {
        "restored": True,
        "port": cluster.port,
        "recovered_to": replayed,
        "seconds": round(elapsed, 1),
        "running": keep_running,
    }


def _wait_promoted(cluster: LocalCluster, timeout: float, datadir: Path) -> str | None:
    deadline = time.monotonic() + timeout
    # The socket, not TCP: the server's pg_hba.conf may want passwords on TCP (peer locally).
    dsn = make_conninfo(host=str(cluster.sockdir), port=str(cluster.port), dbname="postgres",
                        user=SERVER_USER)  # fmt: skip
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not cluster.is_running():
            raise DbtierError(f"recovery stopped: {_recovery_failure(cluster)}")
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                in_recovery, replayed = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()"
                ).fetchone()
                if not in_recovery:
                    return replayed.isoformat() if replayed else None
        except psycopg.OperationalError as exc:
            last_error = db.reason(exc)
            if "authentication" in last_error or "pg_hba.conf" in last_error:
                raise DbtierError(f"cannot check the recovered server: {last_error}") from None
        time.sleep(0.5)
    raise DbtierError(
        f"recovery did not finish within {timeout:g}s ({last_error}; log: {cluster.logfile})"
    )


def _recovery_failure(cluster: LocalCluster) -> str:
    try:
        lines = cluster.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return "see the server log"
    for line in reversed(lines):
        if "FATAL" in line or "PANIC" in line:
            return re.sub(r"^.*?(FATAL|PANIC):\s*", "", line)
    return f"see {cluster.logfile}"


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
        with run_job(job, history_dsn=settings.history_dsn, metrics_dir=settings.metrics_dir):
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
