"""Backup and restore throughput of dbtier on this machine (`make bench-backup`).

Builds a scratch PostgreSQL 15 cluster with WAL archiving through `dbtier wal-push`, fills it with
pgbench data (scale set by BENCH_SCALE, default 170 ≈ 2.5 GB on disk, the size pgBackRest's
9.7 s reference figure was taken at), then times, against a file:// repository:

  backup base        pg_basebackup -> zstd -> AES-256-GCM -> repository
  backup full        pg_dump -Fc   -> zstd -> AES-256-GCM -> repository
  verify --deep base download, decrypt, recover to consistency in a scratch directory (RTO-like)

and prints the figures. Nothing here asserts a target: the numbers are for the reader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from dbtier.pgcluster import LocalCluster, chown_to_server_user, pg_bindir

ROOT = Path(__file__).resolve().parents[1]
SERVER_DBTIER = f"env PYTHONPATH={ROOT / 'src'} /usr/bin/python3 -m dbtier"
DBTIER = str(Path(sys.executable).parent / "dbtier")


def shared_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_DIR")))
    path.chmod(0o755)
    chown_to_server_user(path)
    return path


def timed(env: dict[str, str], *args: str) -> tuple[float, dict]:
    started = time.monotonic()
    proc = subprocess.run(
        [DBTIER, *args, "--json", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench: dbtier {' '.join(args)} failed: {proc.stderr.strip()}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    scale = int(os.environ.get("BENCH_SCALE", "170"))
    work = shared_dir("dbtier-bench-")
    repo = work / "repo"
    repo.mkdir()
    chown_to_server_user(repo)
    key = work / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    chown_to_server_user(key)
    config = work / "dbtier.toml"
    config.write_text(
        f'repository = "file://{repo}"\nkey = "file:{key}"\ncommand = "{SERVER_DBTIER}"\n'
    )
    config.chmod(0o644)
    command = f"DBTIER_CONFIG={config} {SERVER_DBTIER} wal-push --quiet %p"
    cluster = LocalCluster(
        base=work / "pg",
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'{command}'",
            "max_wal_senders": "4",
            "shared_buffers": "512MB",
            "max_wal_size": "4GB",
        },
    )
    try:
        cluster.init()
        hba = cluster.datadir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "\nhost replication all 127.0.0.1/32 trust\n")
        cluster.start()
        print(f"bench: loading pgbench scale {scale} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [str(pg_bindir() / "pgbench"), "-i", "-q", "-s", str(scale), "-d", cluster.dsn()],
            check=True,
            capture_output=True,
        )
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            db_bytes = conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]
            conn.execute("CHECKPOINT")
        env = {"DBTIER_CONFIG": str(config), "DATABASE_URL": cluster.dsn()}
        rows = []
        seconds, base = timed(env, "backup", "base")
        rows.append(("backup base", seconds, base["raw_size"], base["size"]))
        seconds, full = timed(env, "backup", "full")
        rows.append(("backup full", seconds, full["raw_size"], full["size"]))
        seconds, _ = timed(env, "backup", "verify", base["backup_id"], "--deep")
        rows.append(("verify --deep base (restore)", seconds, base["raw_size"], base["size"]))
        print(f"database size: {db_bytes / 2**30:.2f} GiB (pgbench scale {scale}), "
              f"cores: {os.cpu_count()}, repository: file:// on {repo}")  # fmt: skip
        print(f"{'operation':<30} {'seconds':>8} {'raw MiB':>9} {'stored MiB':>11} {'MiB/s':>7}")
        for name, secs, raw, stored in rows:
            print(f"{name:<30} {secs:>8.1f} {raw / 2**20:>9.0f} {stored / 2**20:>11.0f} "
                  f"{raw / 2**20 / secs:>7.0f}")  # fmt: skip
        print("reference: pgBackRest full zst backup of a 2.5 GB cluster here: about 9.7 s")
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
