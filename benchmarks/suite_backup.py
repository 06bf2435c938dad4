"""Backup, restore and PITR side by side with their peers, on one realistic database.

One scratch PostgreSQL 15 cluster (archive_mode on) holds the mockupAWS sample data at
ctx.scale. Every comparison alternates its variants (common.side_by_side):

  logical   pg_dump > /dev/null (the limit) | the v1.0.0 plan's pg_dump | gzip -9 | openssl enc
            | pg_dump -Fc | dbtier backup full to file:// | dbtier backup full to S3 (moto_server,
            KMS master key)
  physical  pg_basebackup -Ft -D - -X none > /dev/null (the limit) | pg_basebackup | zstd -T2
            | pgBackRest full backup (zst, process-max 2, encrypted) | dbtier backup base
  logical restore   createdb + pg_restore -j2 | dbtier restore logical -j 2 (into a new database)
  base restore      unpack: pgBackRest restore | dbtier's unpack of a base backup;
                    to a server that answers: pgBackRest restore --type=immediate + start
                    | dbtier restore pitr --target immediate
  PITR drill        dbtier restore pitr --target-time T: base + WAL replay to T, server answering

WAL archiving: archive_command is switched (ALTER SYSTEM + reload, untimed) before each physical
run: pgBackRest's archive-push for its own backups, dbtier wal-push for every other variant
(pg_basebackup -X none waits for the archiver too). Each tool's backup pays only its own
archiver, as it would in production.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.common import (
    ROOT,
    Context,
    Sample,
    comparison,
    progress,
    run_command,
    side_by_side,
    target,
)

NAME = "backup"
TITLE = "Backup and restore"
DB = "mockupaws"
STANZA = "bench"
PGBACKREST_CIPHER = "aes-256-cbc"  # dbtier always encrypts: the peer does too (like for like)


# --- data -----------------------------------------------------------------------------------


def load_database(ctx: Context, dsn: str) -> dict:
    """The realistic database at ctx.scale (1 ≈ 1 GB): every migration, then
    `dbtier sample-data --scale`. Returns what was loaded."""
    from dbtier import migrations

    migrations.migrate(dsn, ROOT / "files" / "sql")
    sample = run_command(
        [ctx.dbtier, "sample-data", "--scale", f"{ctx.scale:g}", "--dsn", dsn, "-q"]
    )
    return {"loader": f"dbtier sample-data --scale {ctx.scale:g}", "load_seconds": sample.wall}


# --- the scratch setup ----------------------------------------------------------------------


def _as_postgres(cmd: str) -> str:
    """A shell command run as the server's OS user (when we are root)."""
    from dbtier.pgcluster import as_server_user

    if os.geteuid() == 0:
        return shlex.join(as_server_user(["bash", "-o", "pipefail", "-c", cmd]))
    return cmd


def _owned_dir(path: Path, mode: int = 0o750) -> Path:
    from dbtier.pgcluster import chown_to_server_user

    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_to_server_user(path)
    return path


def _owned_file(path: Path, text: str, mode: int = 0o640) -> Path:
    from dbtier.pgcluster import chown_to_server_user

    path.write_text(text)
    path.chmod(mode)
    chown_to_server_user(path)
    return path


class Bench:
    """The scratch cluster, the repositories and the tools' command lines."""

    def __init__(self, ctx: Context) -> None:
        from dbtier.pgcluster import LocalCluster, pg_bindir

        self.ctx = ctx
        self.work = _owned_dir(ctx.work / "backup", 0o755)
        self.bindir = pg_bindir(15, "pg_dump")
        self.repo = _owned_dir(self.work / "repo")
        key = self.work / "master.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        from dbtier.pgcluster import chown_to_server_user

        chown_to_server_user(key)
        self.config = _owned_file(
            self.work / "dbtier.toml",
            f'repository = "file://{self.repo}"\nkey = "file:{key}"\n'
            f'command = "{ctx.server_dbtier}"\n',
            0o644,
        )
        self.passfile = _owned_file(self.work / "old-pipeline.pass", secrets.token_hex(32), 0o600)
        self.cluster = LocalCluster(
            base=self.work / "pg",
            settings={
                "wal_level": "replica",
                "archive_mode": "on",
                "max_wal_senders": "4",
                "shared_buffers": "128MB" if ctx.quick else "512MB",
                "max_wal_size": "4GB",
                "checkpoint_timeout": "30min",
            },
        )
        self.dsn = self.cluster.dsn(DB)
        self.env = {"DBTIER_CONFIG": str(self.config), "DATABASE_URL": self.dsn}
        self.s3_env: dict[str, str] = {}
        self.moto = None
        # pgBackRest: its own repository and spool in the scratch directory.
        pgbr = _owned_dir(self.work / "pgbackrest")
        for sub in ("repo", "log", "lock", "spool"):
            _owned_dir(pgbr / sub)
        self.pgbr_conf = _owned_file(
            pgbr / "pgbackrest.conf",
            "[global]\n"
            f"repo1-path={pgbr / 'repo'}\n"
            f"repo1-cipher-type={PGBACKREST_CIPHER}\n"
            f"repo1-cipher-pass={secrets.token_hex(32)}\n"
            "repo1-retention-full=9999\n"
            "compress-type=zst\n"
            "compress-level=3\n"
            "process-max=2\n"
            "start-fast=y\n"
            f"log-path={pgbr / 'log'}\n"
            f"lock-path={pgbr / 'lock'}\n"
            f"spool-path={pgbr / 'spool'}\n"
            "log-level-console=error\n"
            "log-level-file=off\n"
            f"\n[{STANZA}]\n"
            f"pg1-path={self.cluster.datadir}\n"
            f"pg1-port={self.cluster.port}\n"
            f"pg1-socket-path={self.cluster.sockdir}\n"
            "pg1-user=postgres\n",
            0o600,
        )
        self.pgbackrest = f"pgbackrest --config={self.pgbr_conf} --stanza={STANZA}"
        self.archive_commands = {
            "dbtier": f"DBTIER_CONFIG={self.config} {ctx.server_dbtier} wal-push --quiet %p",
            "pgbackrest": f"{self.pgbackrest} archive-push %p",
        }
        self.archiver: str | None = None

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    # -- cluster --

    def start(self) -> dict:
        from dbtier.pgcluster import pg_bindir

        self.cluster.bindir = pg_bindir(15, "postgres")
        self.cluster.init()
        hba = self.cluster.datadir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "\nhost replication all 127.0.0.1/32 trust\n")
        self.cluster.start()
        self.set_archiver("dbtier")
        self.sql(f"CREATE DATABASE {DB}", db="postgres")
        progress(f"backup: loading the database at scale {self.ctx.scale:g} ...")
        started = time.monotonic()
        loaded = load_database(self.ctx, self.dsn)
        self.sql("VACUUM ANALYZE")
        self.sql("CHECKPOINT")
        loaded["seconds"] = round(time.monotonic() - started, 1)
        loaded["database_bytes"] = self.sql(f"SELECT pg_database_size('{DB}')")
        loaded["cluster_bytes"] = self.sql(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database", db="postgres"
        )
        loaded["tables"] = self.sql(
            "SELECT json_object_agg(relname, n_live_tup) FROM pg_stat_user_tables "
            "WHERE n_live_tup > 0"
        )
        progress(
            f"backup: loaded {loaded['database_bytes'] / 2**20:,.0f} MiB in "
            f"{loaded['seconds']:.0f} s ({loaded['loader']})"
        )
        run_command(_as_postgres(f"{self.pgbackrest} stanza-create"))
        self.start_s3()
        return loaded

    def sql(self, query: str, db: str = DB) -> object:
        import psycopg

        with psycopg.connect(self.cluster.dsn(db), autocommit=True) as conn:
            cur = conn.execute(query)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None

    def set_archiver(self, tool: str) -> None:
        """archive_command of `tool` (dbtier | pgbackrest), untimed; the archiver rereads its
        configuration at its next cycle."""
        if self.archiver == tool:
            return
        command = self.archive_commands[tool].replace("'", "''")
        self.sql(f"ALTER SYSTEM SET archive_command = '{command}'", db="postgres")
        self.sql("SELECT pg_reload_conf()", db="postgres")
        time.sleep(1.0)
        self.archiver = tool

    def wait_archived(self, timeout: float = 120) -> None:
        """Switch WAL and wait until the archiver has pushed that segment."""
        segment = self.sql(
            "SELECT pg_walfile_name(lsn) FROM (SELECT pg_switch_wal() AS lsn) s", db="postgres"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.sql("SELECT last_archived_wal FROM pg_stat_archiver", db="postgres")
            if last and str(last) >= str(segment):
                return
            time.sleep(0.2)
        raise RuntimeError(f"WAL {segment} not archived within {timeout:.0f} s")

    def start_s3(self) -> None:
        """moto_server on 127.0.0.1 with a bucket and a KMS key: the S3 repository."""
        import boto3

        from tests.support.moto_server import ACCESS_KEY, SECRET_KEY, MotoServer

        self.moto = MotoServer(log_path=self.work / "moto.log").start()
        s3 = boto3.client("s3", **self.moto.client_kwargs())
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        kms = boto3.client("kms", **self.moto.client_kwargs())
        key = kms.create_key(Description="dbtier bench")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/dbtier-bench", TargetKeyId=key)
        empty = _owned_file(self.work / "s3.toml", "# settings come from the environment\n")
        self.s3_env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.work / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.work / "no-aws-credentials"),
            "DBTIER_CONFIG": str(empty),
            "DBTIER_AWS_ENDPOINT_URL": self.moto.url,
            "BACKUP_REGION": "us-east-1",
            "BACKUP_REPOSITORY": f"s3://{bucket}/dbtier",
            "DBTIER_MASTER_KEY_SPEC": "kms:alias/dbtier-bench",
            "DBTIER_KMS_REGION": "us-east-1",
            "DATABASE_URL": self.dsn,
        }

    def stop(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        self.cluster.destroy()

    # -- commands --

    def dbtier(self, args: str, out: Path, env: dict[str, str] | None = None) -> Sample:
        """A dbtier command with --json: its output kept, size and id in the sample."""
        sample = run_command(
            f"{shlex.quote(self.ctx.dbtier)} {args} --json --quiet > {out}",
            env=env or self.env,
        )
        data = json.loads(out.read_text())
        sample.bytes = data.get("size")
        sample.extra = {
            k: data[k] for k in ("backup_id", "raw_size", "seconds", "recovered_to") if k in data
        }
        return sample

    def pgbackrest_last(self) -> dict:
        proc = subprocess.run(
            shlex.split(_as_postgres(f"{self.pgbackrest} info --output=json")),
            capture_output=True,
            text=True,
            check=True,
        )
        last = json.loads(proc.stdout)[0]["backup"][-1]
        return {
            "label": last["label"],
            "size": last["info"]["repository"]["size"],
            "raw_size": last["info"]["size"],
        }


# --- the comparisons ------------------------------------------------------------------------


def logical(b: Bench) -> tuple[dict, dict[str, str]]:
    dsn, w = shlex.quote(b.dsn), b.work
    pg_dump = b.tool("pg_dump")
    commands = {
        "pg_dump > /dev/null": f"{pg_dump} -d {dsn} > /dev/null",
        "pg_dump | gzip -9 | openssl enc": f"{pg_dump} -d {dsn} | gzip -9 | openssl enc "
        f"-aes-256-cbc -pbkdf2 -salt -pass file:{b.passfile} -out {w}/old.sql.gz.enc",
        "pg_dump -Fc": f"{pg_dump} -Fc -d {dsn} -f {w}/dump.fc",
        "dbtier backup full (file://)": "dbtier backup full --json --quiet  "
        "# repository file://, key file:",
        "dbtier backup full (S3, moto)": "dbtier backup full --json --quiet  "
        "# repository s3:// on moto_server, key kms:",
    }
    variants = {
        "pg_dump > /dev/null": lambda: run_command(commands["pg_dump > /dev/null"]),
        "pg_dump | gzip -9 | openssl enc": lambda: run_command(
            commands["pg_dump | gzip -9 | openssl enc"], output=w / "old.sql.gz.enc"
        ),
        "pg_dump -Fc": lambda: run_command(commands["pg_dump -Fc"], output=w / "dump.fc"),
        "dbtier backup full (file://)": lambda: b.dbtier("backup full", w / "full.json"),
        "dbtier backup full (S3, moto)": lambda: b.dbtier(
            "backup full", w / "full-s3.json", b.s3_env
        ),
    }
    samples = side_by_side(variants, b.ctx.reps, label="logical backup: ")
    notes = {"pg_dump > /dev/null": "the limit: plain dump, nothing stored"}
    return comparison(samples, baseline="pg_dump > /dev/null", notes=notes), commands


def physical(b: Bench) -> tuple[dict, dict[str, str]]:
    w = b.work
    repl = shlex.quote(b.cluster.dsn("postgres"))
    pg_basebackup = b.tool("pg_basebackup")
    raw = f"{pg_basebackup} -d {repl} -c fast -Ft -D - -X none"
    commands = {
        "pg_basebackup > /dev/null": f"{raw} > /dev/null",
        "pg_basebackup | zstd -T2": f"{raw} | zstd -q -T2 -3 > {w}/base.tar.zst",
        "pgBackRest backup": f"{b.pgbackrest} backup --type=full  # as postgres; "
        f"zst level 3, process-max 2, {PGBACKREST_CIPHER}, start-fast",
        "dbtier backup base": "dbtier backup base --json --quiet",
    }

    def pgbackrest() -> Sample:
        sample = run_command(_as_postgres(f"{b.pgbackrest} backup --type=full"))
        info = b.pgbackrest_last()
        sample.bytes = info["size"]
        sample.extra = info
        return sample

    variants = {
        "pg_basebackup > /dev/null": lambda: run_command(commands["pg_basebackup > /dev/null"]),
        "pg_basebackup | zstd -T2": lambda: run_command(
            commands["pg_basebackup | zstd -T2"], output=w / "base.tar.zst"
        ),
        "pgBackRest backup": pgbackrest,
        "dbtier backup base": lambda: b.dbtier("backup base", w / "base.json"),
    }

    def before(name: str) -> None:
        b.set_archiver("pgbackrest" if name.startswith("pgBackRest") else "dbtier")

    samples = side_by_side(variants, b.ctx.reps, before_each=before, label="base backup: ")
    b.set_archiver("dbtier")
    notes = {"pg_basebackup > /dev/null": "the limit: the server's tar stream, nothing stored"}
    return comparison(samples, baseline="pg_basebackup > /dev/null", notes=notes), commands


def logical_restore(b: Bench, backup_id: str) -> tuple[dict, dict[str, str]]:
    admin = shlex.quote(b.cluster.dsn("postgres"))
    target_pg = shlex.quote(b.cluster.dsn("restore_pg"))
    commands = {
        "createdb + pg_restore -j2": f"{b.tool('psql')} -d {admin} -qc "
        "'CREATE DATABASE restore_pg' && "
        f"{b.tool('pg_restore')} -j2 -d {target_pg} {b.work}/dump.fc",
        "dbtier restore logical": f"dbtier restore logical {backup_id} --target-db "
        "restore_dbtier -j 2 --json --quiet",
    }

    def before(_name: str) -> None:
        for name in ("restore_pg", "restore_dbtier"):
            b.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", db="postgres")

    variants = {
        "createdb + pg_restore -j2": lambda: run_command(commands["createdb + pg_restore -j2"]),
        "dbtier restore logical": lambda: b.dbtier(
            f"restore logical {backup_id} --target-db restore_dbtier -j 2",
            b.work / "restore-logical.json",
        ),
    }
    samples = side_by_side(variants, b.ctx.reps, before_each=before, label="logical restore: ")
    before("")
    notes = {
        "createdb + pg_restore -j2": "from the pg_dump -Fc file on local disk",
        "dbtier restore logical": "download + decrypt + pg_restore -j 2 into a staging "
        "database, row counts checked against the manifest, renamed into place",
    }
    return comparison(samples, baseline="createdb + pg_restore -j2", notes=notes), commands


def unpack_main(backup_id: str, directory: str) -> None:
    """`python -m benchmarks.suite_backup unpack ID DIR`: dbtier's base restore without
    recovery: download, decrypt, untar, check against the manifest, recovery.signal."""
    from dbtier import catalog, config, restore
    from dbtier.store import open_store

    settings = config.load()
    store = open_store(settings)
    manifest = catalog.read_manifest(store.repo, store.provider, backup_id)
    restore._prepare(settings, store.repo, store.provider, manifest, Path(directory), [])


def base_restore(b: Bench, dbtier_base: str, pgbr_label: str) -> tuple[dict, dict[str, str]]:
    dirs = {
        name: b.work / f"restore-{i}" / "data"
        for i, name in enumerate(
            (
                "pgBackRest restore",
                "dbtier unpack",
                "pgBackRest restore + start",
                "dbtier restore pitr --target immediate",
            )
        )
    }
    from dbtier.pgcluster import free_port

    pg_ctl = b.tool("pg_ctl")
    psql = b.tool("psql")
    up = dirs["pgBackRest restore + start"]
    port = free_port()
    promoted = (
        f'[ "$({psql} -h {up.parent} -p {port} -d postgres -Atc '
        "'SELECT pg_is_in_recovery()' 2>/dev/null)\" = f ]"
    )
    start = (
        f"{b.pgbackrest} restore --set={pgbr_label} --pg1-path={up} --type=immediate "
        f"--target-action=promote && {pg_ctl} start -w -D {up} -l {up.parent}/postgres.log "
        f"-o '-p {port} -c archive_mode=off -c unix_socket_directories={up.parent} "
        f"-c listen_addresses=' && for i in $(seq 6000); do {promoted} && break; sleep 0.1; "
        f"done && {promoted} && {pg_ctl} stop -w -m fast -D {up}"
    )
    commands = {
        "pgBackRest restore": f"{b.pgbackrest} restore --set={pgbr_label} --pg1-path=DIR "
        "# as postgres, process-max 2",
        "dbtier unpack": f"python -m benchmarks.suite_backup unpack {dbtier_base} DIR  "
        "# restore._prepare: what restore pitr does before it starts the server",
        "pgBackRest restore + start": start.replace(str(up), "DIR"),
        "dbtier restore pitr --target immediate": f"dbtier restore pitr --target immediate "
        f"--base {dbtier_base} --data-dir DIR --json --quiet",
    }

    def before(name: str) -> None:
        parent = dirs[name].parent
        if (dirs[name] / "postmaster.pid").exists():
            run_command(_as_postgres(f"{pg_ctl} stop -w -m immediate -D {dirs[name]}"))
        shutil.rmtree(parent, ignore_errors=True)
        _owned_dir(parent, 0o755)
        if name.startswith("pgBackRest"):
            _owned_dir(dirs[name], 0o700)

    variants = {
        "pgBackRest restore": lambda: run_command(
            _as_postgres(
                f"{b.pgbackrest} restore --set={pgbr_label} --pg1-path={dirs['pgBackRest restore']}"
            ),
            output=dirs["pgBackRest restore"],
        ),
        "dbtier unpack": lambda: run_command(
            [
                sys.executable,
                "-m",
                "benchmarks.suite_backup",
                "unpack",
                dbtier_base,
                str(dirs["dbtier unpack"]),
            ],
            env=b.env,
            cwd=ROOT,
            output=dirs["dbtier unpack"],
        ),
        "pgBackRest restore + start": lambda: run_command(_as_postgres(start)),
        "dbtier restore pitr --target immediate": lambda: b.dbtier(
            f"restore pitr --target immediate --base {dbtier_base} --data-dir "
            f"{dirs['dbtier restore pitr --target immediate']}",
            b.work / "restore-immediate.json",
        ),
    }
    samples = side_by_side(variants, b.ctx.reps, before_each=before, label="base restore: ")
    for name in dirs:
        before(name)
    notes = {
        "pgBackRest restore": "into an empty directory; no server started",
        "dbtier unpack": "into an empty directory, checked against the manifest; no server",
        "pgBackRest restore + start": "restore --type=immediate, start, wait until promoted, "
        "stop (fast)",
        "dbtier restore pitr --target immediate": "unpack, replay to consistency, promote, "
        "check it answers, stop (fast)",
    }
    return comparison(samples, baseline="pgBackRest restore", notes=notes), commands


def pitr_drill(b: Bench) -> tuple[dict, dict[str, str]]:
    """A base backup, then commits before and after a target time; recover to that time."""
    b.set_archiver("dbtier")
    progress("PITR drill: dbtier backup base (setup, untimed)")
    base = b.dbtier("backup base", b.work / "drill-base.json")
    start_lsn = b.sql("SELECT pg_current_wal_lsn()::text")
    rows = max(1000, round(40_000 * b.ctx.scale))
    b.sql(
        "CREATE TABLE pitr_drill (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
        "DEFAULT clock_timestamp(), payload text NOT NULL)"
    )
    insert = (
        f"INSERT INTO pitr_drill (payload) SELECT md5(g::text) || repeat('x', 200) "
        f"FROM generate_series(1, {rows}) g"
    )
    for _ in range(10):
        b.sql(insert)
    time.sleep(0.05)
    target_time = b.sql("SELECT clock_timestamp()::text")
    target_lsn = b.sql("SELECT pg_current_wal_lsn()::text")
    expected = b.sql("SELECT count(*) FROM pitr_drill")
    time.sleep(0.05)
    for _ in range(3):
        b.sql(insert)
    b.wait_archived()
    wal_bytes = b.sql(f"SELECT pg_wal_lsn_diff('{target_lsn}', '{start_lsn}')::bigint")
    progress(
        f"PITR drill: target {target_time}, {expected:,} drill rows committed before it, "
        f"{wal_bytes / 2**20:,.0f} MiB of WAL to replay after the base backup"
    )
    pg_ctl, psql = b.tool("pg_ctl"), b.tool("psql")
    runs: list[Sample] = []
    for rep in range(b.ctx.reps):
        data = b.work / f"drill-{rep}" / "data"
        _owned_dir(data.parent, 0o755)
        progress(f"PITR drill: dbtier restore pitr --target-time (run {rep + 1}/{b.ctx.reps})")
        out = b.work / f"drill-{rep}.json"
        sample = b.dbtier(
            f"restore pitr --target-time {shlex.quote(str(target_time))} "
            f"--data-dir {data} --keep-running",
            out,
        )
        result = json.loads(out.read_text())
        check = subprocess.run(
            shlex.split(
                _as_postgres(
                    f"{psql} -h {result['socket_directory']} -p {result['port']} -d {DB} -Atc "
                    "'SELECT count(*) FROM pitr_drill'"
                )
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        subprocess.run(
            shlex.split(_as_postgres(f"{pg_ctl} stop -w -m fast -D {data}")),
            capture_output=True,
            check=False,
        )
        found = check.stdout.strip()
        if found != str(expected):
            raise RuntimeError(
                f"PITR drill recovered {found or check.stderr.strip()!r} drill rows, expected "
                f"{expected} at {target_time}"
            )
        sample.extra = {"rows_at_target": expected, "recovered_to": result.get("recovered_to")}
        runs.append(sample)
        progress(f"PITR drill: {sample.wall:.2f} s wall, {sample.cpu:.2f} s CPU, rows checked")
        shutil.rmtree(data.parent, ignore_errors=True)
    section = comparison({"dbtier restore pitr --target-time": runs},
                         baseline="dbtier restore pitr --target-time")  # fmt: skip
    section.update(
        {
            "base_backup": base.extra.get("backup_id"),
            "target_time": str(target_time),
            "wal_bytes_to_replay": wal_bytes,
            "rows_at_target": expected,
        }
    )
    commands = {
        "dbtier restore pitr --target-time": "dbtier restore pitr --target-time 'T' --data-dir "
        "DIR --keep-running --json --quiet  # then: SELECT count(*) FROM pitr_drill on it",
    }
    return section, commands


# --- run and render -------------------------------------------------------------------------


def _median(section: dict, variant: str, what: str = "wall") -> float:
    return section["variants"][variant][what]["median"]


def run(ctx: Context) -> dict:
    b = Bench(ctx)
    out: dict = {"pgbackrest_cipher": PGBACKREST_CIPHER}
    try:
        out["database"] = b.start()
        ctx.shared["backup"] = {
            "dsn": b.dsn,
            "data_dir": str(b.cluster.datadir),
            "config": str(b.config),
            "pgbackrest_config": str(b.pgbr_conf),
        }
        commands: dict[str, str] = {}
        out["logical"], c = logical(b)
        commands.update(c)
        out["physical"], c = physical(b)
        commands.update(c)
        full_id = out["logical"]["variants"]["dbtier backup full (file://)"]["runs"][-1]["extra"][
            "backup_id"
        ]
        out["logical_restore"], c = logical_restore(b, full_id)
        commands.update(c)
        base_id = out["physical"]["variants"]["dbtier backup base"]["runs"][-1]["extra"][
            "backup_id"
        ]
        label = out["physical"]["variants"]["pgBackRest backup"]["runs"][-1]["extra"]["label"]
        out["base_restore"], c = base_restore(b, base_id, label)
        commands.update(c)
        out["pitr"], c = pitr_drill(b)
        commands.update(c)
        out["commands"] = commands
    finally:
        ctx.shared.pop("backup", None)
        b.stop()
    lg, ph, br = out["logical"], out["physical"], out["base_restore"]
    full, old = "dbtier backup full (file://)", "pg_dump | gzip -9 | openssl enc"
    out["targets"] = [
        target(
            "logical backup (dbtier backup full, file://) vs raw pg_dump, x time",
            lg["variants"][full]["ratio_wall"],
            1.3,
        ),
        target(
            "logical backup: times faster than the old pipeline (pg_dump | gzip -9 | openssl)",
            _median(lg, old) / _median(lg, full),
            2.5,
            lower_is_better=False,
        ),
        target(
            "logical backup size vs the old pipeline's, x",
            lg["variants"][full]["bytes"] / lg["variants"][old]["bytes"],
            1.0,
        ),
        target(
            "base backup (dbtier backup base) vs pgBackRest, x time",
            _median(ph, "dbtier backup base") / _median(ph, "pgBackRest backup"),
            1.0,
        ),
        target(
            "base backup size vs pgBackRest's, x",
            ph["variants"]["dbtier backup base"]["bytes"]
            / ph["variants"]["pgBackRest backup"]["bytes"],
            1.05,
        ),
        target(
            "base restore (unpack) vs pgBackRest restore, x time",
            br["variants"]["dbtier unpack"]["ratio_wall"],
            1.5,
        ),
        target(
            "PITR drill end to end (median), seconds",
            _median(out["pitr"], "dbtier restore pitr --target-time"),
            60.0,
        ),
    ]
    return out


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def _cell(text: str) -> str:
    """Text for a markdown table cell (a pipe in a command would split the cell)."""
    return text.replace("|", "\\|")


def _table(section: dict, size_base: int, size_ref: str | None = None) -> list[str]:
    """One comparison: x is the median wall time over the baseline's (the first row); x size
    is the stored size over size_ref's (the peer), when given."""
    ref = section["variants"][size_ref]["bytes"] if size_ref else None
    lines = [
        "| variant | wall s (min / median / max) | x | client CPU s (median) | machine CPU s "
        f"(median) | MB stored | x size{f' (vs {_cell(size_ref)})' if size_ref else ''} "
        "| MB/s of data |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in section["variants"].items():
        w = v["wall"]
        rb = v["bytes"] / ref if ref and v["bytes"] else None
        mbps = size_base / w["median"] / 1e6 if w["median"] else 0
        note = f"<br>*{v['note']}*" if v.get("note") else ""
        lines.append(
            f"| {_cell(name)}{note} | {w['min']:.2f} / **{w['median']:.2f}** / {w['max']:.2f} "
            f"| {v['ratio_wall']:.2f} | {v['cpu']['median']:.2f} "
            f"| {v['machine_cpu']['median']:.2f} "
            f"| {_mb(v['bytes'])} | {'-' if rb is None else f'{rb:.2f}'} | {mbps:,.0f} |"
        )
    return lines


def _chart(section: dict, ctx: Context) -> str:
    """backup.png: MB/s of data per variant (median bar; whiskers: slowest and fastest run), one
    panel per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db = section["database"]
    panels = [
        ("logical", "Logical backup: MB/s of the database", db["database_bytes"]),
        ("physical", "Base backup: MB/s of the cluster", db["cluster_bytes"]),
        ("logical_restore", "Logical restore: MB/s of the database", db["database_bytes"]),
        ("base_restore", "Base restore: MB/s of the cluster", db["cluster_bytes"]),
    ]
    heights = [len(section[key]["variants"]) + 1.2 for key, _, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(8, 0.42 * sum(heights) + 1),
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (key, title, size) in zip(axes, panels, strict=True):
        variants = list(section[key]["variants"].items())[::-1]
        names = [name for name, _ in variants]
        med = [size / v["wall"]["median"] / 1e6 for _, v in variants]
        slow = [m - size / v["wall"]["max"] / 1e6 for m, (_, v) in zip(med, variants, strict=True)]
        fast = [size / v["wall"]["min"] / 1e6 - m for m, (_, v) in zip(med, variants, strict=True)]
        colors = [
            "#2b7bba" if "dbtier" in n else "#999999" if "/dev/null" in n else "#e08a2b"
            for n in names
        ]
        ax.barh(names, med, xerr=[slow, fast], color=colors, capsize=3)
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
    fig.suptitle(
        f"{db['database_bytes'] / 1e9:.2f} GB database, {db['cluster_bytes'] / 1e9:.2f} GB "
        "cluster (blue: dbtier; grey: the limit; orange: the peers)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(ctx.assets / "backup.png", dpi=100)
    plt.close(fig)
    return f"{ctx.assets.name}/backup.png"


def render(section: dict, ctx: Context) -> str:
    db = section["database"]
    tables = ", ".join(f"{k} {v:,}" for k, v in sorted((db.get("tables") or {}).items()))
    lines = [
        f"Database `{DB}`: {db['database_bytes'] / 1e9:.2f} GB ({db['cluster_bytes'] / 1e9:.2f} "
        f"GB cluster), loaded in {db['seconds']:.0f} s by {db['loader']}. Rows: {tables}.",
        "",
        "Every variant below ran in the same run on this database, alternating (round robin, "
        "order rotated each repetition). `x` is the median wall time relative to the first row "
        "of the table; MB/s is the database (logical) or cluster (physical) size over the median.",
        "",
        f"![backup throughput]({_chart(section, ctx)})",
        "",
        "### Logical backup",
        "",
        *_table(section["logical"], db["database_bytes"], "pg_dump | gzip -9 | openssl enc"),
        "",
        "### Physical (base) backup",
        "",
        *_table(section["physical"], db["cluster_bytes"], "pgBackRest backup"),
        "",
        "The two limits move no data anywhere. With `-X none` pg_basebackup waits, like every "
        "physical backup here, until the archiver has pushed the backup's last WAL segment.",
        "",
        "WAL archiving during these runs: `archive_command` is switched (ALTER SYSTEM + reload, "
        "untimed) before each run, to `pgbackrest archive-push` for pgBackRest's backups and to "
        "`dbtier wal-push` for all others (pg_basebackup -X none waits for the archiver too), so "
        "each tool waits only for its own archiver, as in production. pgBackRest runs encrypted "
        f"({section['pgbackrest_cipher']}) because dbtier always encrypts (AES-256-GCM).",
        "",
        "### Logical restore",
        "",
        *_table(section["logical_restore"], db["database_bytes"]),
        "",
        "### Base restore",
        "",
        *_table(section["base_restore"], db["cluster_bytes"]),
        "",
        "The first two rows unpack only (no server); the last two end with a server that has "
        "replayed to the backup's consistency point, been promoted and answered, then stopped.",
        "",
        "### PITR drill",
        "",
    ]
    p = section["pitr"]
    w = p["variants"]["dbtier restore pitr --target-time"]["wall"]
    lines += [
        f"Base backup `{p['base_backup']}`, then {p['rows_at_target']:,} rows committed in 10 "
        f"transactions ({p['wal_bytes_to_replay'] / 1e6:,.0f} MB of WAL) before the target "
        f"time {p['target_time']} and 3 more after it. `dbtier restore pitr --target-time` "
        "chooses the base backup, unpacks it, replays WAL from the archive to the target, "
        "promotes and checks the server answers; then the drill counts the rows on it "
        f"(exactly the {p['rows_at_target']:,} before the target, every run): "
        f"{w['min']:.1f} / **{w['median']:.1f}** / {w['max']:.1f} s (min / median / max).",
        "",
        "### Targets",
        "",
        "| target | measured | limit | |",
        "| --- | --- | --- | --- |",
    ]
    for t in section["targets"]:
        lines.append(
            f"| {_cell(t['target'])} | {t['measured']:.2f} | {t['limit']:g} | "
            f"{'met' if t['met'] else '**MISSED**'} |"
        )
    missed = [t for t in section["targets"] if not t["met"]]
    lines.append("")
    if missed:
        lines += ["Missed, and why:", "", *(f"- {_why(t, section)}" for t in missed), ""]
    # A record of what this run measured (its temporary paths and ports), not commands to copy.
    lines += ["### Commands", "", "As this run ran them:", "", "```text"]
    lines += [f"# {name}\n{cmd}" for name, cmd in section["commands"].items()]
    lines += ["```", ""]
    return "\n".join(lines)


def _why(t: dict, section: dict) -> str:
    """The reason shown for a missed target, from the figures of the run."""
    name = t["target"]
    ph, br = section["physical"]["variants"], section["base_restore"]["variants"]
    if name.startswith("base backup (dbtier"):
        return (
            f"{name}: dbtier {ph['dbtier backup base']['wall']['median']:.1f} s vs pgBackRest "
            f"{ph['pgBackRest backup']['wall']['median']:.1f} s (client CPU "
            f"{ph['dbtier backup base']['cpu']['median']:.1f} vs "
            f"{ph['pgBackRest backup']['cpu']['median']:.1f} s): dbtier compresses and encrypts "
            "the single tar stream pg_basebackup sends, pgBackRest reads and compresses files "
            "with process-max 2"
        )
    if name.startswith("base backup size"):
        return (
            f"{name}: dbtier {ph['dbtier backup base']['bytes'] / 1e6:,.1f} MB vs pgBackRest "
            f"{ph['pgBackRest backup']['bytes'] / 1e6:,.1f} MB: dbtier compresses base backups "
            "at base_compression_level (default 2), pgBackRest at zstd level 3"
        )
    if name.startswith("base restore"):
        return (
            f"{name}: dbtier {br['dbtier unpack']['wall']['median']:.1f} s vs pgBackRest "
            f"{br['pgBackRest restore']['wall']['median']:.1f} s: dbtier decrypts, decompresses "
            "and untars one stream, pgBackRest restores files with process-max 2"
        )
    lg = section["logical"]["variants"]
    full = lg["dbtier backup full (file://)"]
    if name.startswith("logical"):
        return (
            f"{name}: measured {t['measured']:.2f} against {t['limit']:g}; dbtier backup full "
            f"{full['wall']['median']:.1f} s wall, {full['cpu']['median']:.1f} s client CPU "
            f"(pg_dump -Fc -Z0, zstd, AES-256-GCM, the repository write, row counts) vs raw "
            f"pg_dump {lg['pg_dump > /dev/null']['wall']['median']:.1f} s"
        )
    if name.startswith("PITR"):
        p = section["pitr"]
        return (
            f"{name}: {t['measured']:.1f} s for the unpack of the base backup and the replay of "
            f"{p['wal_bytes_to_replay'] / 1e6:,.0f} MB of WAL fetched one segment at a time by "
            "restore_command"
        )
    return f"{name}: measured {t['measured']:.2f} against {t['limit']:g}"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "unpack":
        unpack_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.suite_backup unpack BACKUP_ID DIRECTORY")
