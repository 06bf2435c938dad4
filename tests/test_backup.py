"""dbtier backup / restore / wal against a real PostgreSQL and a file:// repository."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from dbtier import catalog, migrations, sampledata
from dbtier.pgcluster import LocalCluster, chown_to_server_user
from dbtier.repository import FileRepository

from .conftest import SERVER_DBTIER, SQL_DIR, TABLES, VENV_BIN, fingerprints, run_dbtier


def shared_dir(prefix: str) -> Path:
    """A directory the postgres OS user (archive_command, restored servers) can use too."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    chown_to_server_user(path)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[dict]:
    base = shared_dir("dbtier-store-")
    repo = base / "repo"
    repo.mkdir()
    chown_to_server_user(repo)
    key = base / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    chown_to_server_user(key)
    metrics = base / "metrics"
    config = base / "dbtier.toml"
    config.write_text(
        f'repository = "file://{repo}"\nkey = "file:{key}"\nmetrics_dir = "{metrics}"\n'
        f'command = "{SERVER_DBTIER}"\n'
    )
    config.chmod(0o644)
    try:
        yield {"base": base, "repo": repo, "key": key, "config": config, "metrics": metrics}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def cli(store: dict, *args: str, dsn: str | None = None, timeout: float = 600):
    env = {"DBTIER_CONFIG": str(store["config"])}
    if dsn:
        env["DATABASE_URL"] = dsn
    return run_dbtier(*args, env=env, timeout=timeout)


def cli_as_server(store: dict, *args: str, dsn: str | None = None, timeout: float = 600):
    env = [f"DBTIER_CONFIG={store['config']}"] + ([f"DATABASE_URL={dsn}"] if dsn else [])
    cmd = ["runuser", "-u", "postgres", "--", "env", *env, *shlex.split(SERVER_DBTIER), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd="/tmp", check=False
    )


@pytest.fixture
def source_db(database: str) -> str:
    migrations.migrate(database, SQL_DIR)
    sampledata.load(
        database,
        sampledata.SampleSize(scenarios=10, logs_per_scenario=100, metrics_per_scenario=50),
    )
    return database


def catalog_repo(store: dict) -> FileRepository:
    return FileRepository(store["repo"])


def dbname(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def test_logical_round_trip_is_identical_and_recorded(source_db: str, store: dict) -> None:
    before = fingerprints(source_db)
    made = cli(store, "backup", "full", "--json", dsn=source_db)
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["kind"] == "logical" and result["size"] > 0
    assert "event=backup_full.done" in made.stderr  # logfmt, greppable

    listed = json.loads(cli(store, "backup", "list", "--json").stdout)["backups"]
    assert [b["id"] for b in listed] == [result["backup_id"]]
    verified = cli(store, "backup", "verify", "latest", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["toc_entries"] > 10
    deep = cli(store, "backup", "verify", "latest", "--deep", "--json")
    assert deep.returncode == 0, deep.stderr
    manifest = json.loads(
        (store["repo"] / "backups" / result["backup_id"] / "manifest.json").read_text()
    )
    counted = json.loads(deep.stdout)["row_counts"]
    assert counted == {
        "tables": len(manifest["row_counts"]),
        "rows": sum(manifest["row_counts"].values()),
    }
    assert manifest["row_counts"]["public.scenario_logs"] == 1000

    target = f"{dbname(source_db)}_copy"
    restored = cli(
        store, "restore", "logical", "latest", "--target-db", target, "--json", dsn=source_db
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["validated_tables"] >= len(TABLES)
    copy_dsn = source_db.rsplit("/", 1)[0] + "/" + target
    assert fingerprints(copy_dsn) == before

    with psycopg.connect(source_db) as conn:
        rows = conn.execute(
            "SELECT kind, status, size_bytes > 0, encrypted FROM backup_history ORDER BY id"
        ).fetchall()
    assert rows == [("logical", "completed", True, True)]
    prom = (store["metrics"] / "dbtier_backup_full.prom").read_text()
    assert 'dbtier_job_last_status{job="backup_full"} 1' in prom
    assert "dbtier_job_last_success_timestamp_seconds" in prom
    with psycopg.connect(source_db.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{target}" WITH (FORCE)')


def test_restore_over_existing_db_takes_safety_backup_first(source_db: str, store: dict) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    before = fingerprints(source_db)
    with psycopg.connect(source_db) as conn:
        conn.execute("DELETE FROM reports")  # the accident we recover from

    plan = cli(store, "restore", "logical", "latest", "--dry-run", "--json", dsn=source_db)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["safety_backup"] is True
    with psycopg.connect(source_db) as conn:
        assert conn.execute("SELECT count(*) FROM reports").fetchone()[0] == 0  # dry run

    done = cli(store, "restore", "logical", "latest", "--json", dsn=source_db)
    assert done.returncode == 0, done.stderr
    safety_id = json.loads(done.stdout)["safety_backup_id"]
    assert safety_id and safety_id.endswith("-safety")
    assert fingerprints(source_db) == before
    kinds = [
        b["kind"] for b in json.loads(cli(store, "backup", "list", "--json").stdout)["backups"]
    ]
    assert sorted(kinds) == ["logical", "safety"]


def test_tampered_object_fails_verify_and_restore_names_it(source_db: str, store: dict) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    [dump] = list(store["repo"].glob("backups/*/dump.pgc.zst.enc"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    verify = cli(store, "backup", "verify", "latest")
    assert verify.returncode == 1
    assert "dump.pgc.zst.enc" in verify.stderr.strip().splitlines()[-1]
    target = f"{dbname(source_db)}_tampered"
    restore = cli(store, "restore", "logical", "latest", "--target-db", target, dsn=source_db)
    assert restore.returncode == 1
    assert "dump.pgc.zst.enc" in restore.stderr.strip().splitlines()[-1]
    with psycopg.connect(source_db) as conn:
        exists = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{target}%",)
        ).fetchone()[0]
    assert exists == 0  # nothing restored, not even a staging database


def test_killed_backup_leaves_no_manifest_and_latest_unchanged(database: str, store: dict) -> None:
    migrations.migrate(database, SQL_DIR)
    sampledata.load(
        database,
        sampledata.SampleSize(scenarios=40, logs_per_scenario=4000, metrics_per_scenario=100),
    )
    first = cli(store, "backup", "full", "--json", dsn=database)
    assert first.returncode == 0, first.stderr
    good = json.loads(first.stdout)["backup_id"]
    time.sleep(1.1)  # backup ids have one-second resolution

    proc = subprocess.Popen(
        [str(VENV_BIN / "dbtier"), "backup", "full"],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "DATABASE_URL": database},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [
            p
            for p in store["repo"].glob("backups/*/*")
            if good not in str(p) and p.name != "manifest.json"
        ]
        if partial:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial, "the second backup never started writing"

    listed = json.loads(cli(store, "backup", "list", "--json").stdout)["backups"]
    assert [b["id"] for b in listed] == [good]
    verified = json.loads(cli(store, "backup", "verify", "latest", "--json").stdout)
    assert verified["backup_id"] == good


def test_wrong_or_missing_key_fails_before_writing(source_db: str, store: dict) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    before = sorted(p.name for p in store["repo"].rglob("*"))
    wrong = store["base"] / "wrong.key"
    wrong.write_bytes(os.urandom(32))

    proc = cli(
        store,
        "restore",
        "logical",
        "latest",
        "--key",
        f"file:{wrong}",
        "--target-db",
        "x",
        dsn=source_db,
    )
    # A wrong key is a configuration error (exit 2), named before anything is touched.
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr
    assert "cannot be unwrapped" in last and "does not match" in last
    proc = cli(store, "backup", "verify", "--key", f"file:{wrong}")
    assert proc.returncode == 2 and "cannot be unwrapped" in proc.stderr

    proc = cli(
        store, "backup", "full", "--key", f"file:{store['base'] / 'absent.key'}", dsn=source_db
    )
    assert proc.returncode == 2
    assert "absent.key" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in store["repo"].rglob("*")) == before


def test_wal_push_is_idempotent_and_refuses_different_content(store: dict) -> None:
    segment = store["base"] / "000000010000000000000007"
    segment.write_bytes(os.urandom(1024) * 64)
    first = cli(store, "wal-push", str(segment))
    assert first.returncode == 0, first.stderr
    stored = store["repo"] / "wal" / "000000010000000000000007.zst.enc"
    mtime = stored.stat().st_mtime_ns

    again = cli(store, "wal-push", str(segment))
    assert again.returncode == 0 and "event=wal_push.exists" in again.stderr
    assert stored.stat().st_mtime_ns == mtime  # nothing uploaded

    segment.write_bytes(os.urandom(1024) * 64)
    clash = cli(store, "wal-push", str(segment))
    assert clash.returncode == 1
    assert "already archived with different content" in clash.stderr

    fetched = store["base"] / "fetched"
    assert cli(store, "wal-fetch", segment.name, str(fetched)).returncode == 0
    assert fetched.read_bytes() != segment.read_bytes()  # the first content, as archived
    assert cli(store, "wal-fetch", "000000010000000000000099", str(fetched)).returncode == 1
    bad = cli(store, "wal-push", str(store["base"] / "not-a-wal-file"))
    assert bad.returncode == 2 and "not a WAL file name" in bad.stderr


# ------------------------------------------------------------------------------ PITR


@pytest.fixture
def archiving_cluster(store: dict) -> Iterator[LocalCluster]:
    base = shared_dir("dbtier-pitr-")
    command = f"DBTIER_CONFIG={store['config']} {SERVER_DBTIER} wal-push --quiet %p"
    cluster = LocalCluster(
        base=base,
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'{command}'",
            "max_wal_senders": "4",
        },
    )
    cluster.init()
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text(hba.read_text() + "\nhost replication all 127.0.0.1/32 trust\n")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def switch_wal(dsn: str) -> str:
    """Close the current WAL segment (so it gets archived); returns its name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # pg_walfile_name() of the switch point names the segment just completed.
        return conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def wait_archived(dsn: str, segment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = failed = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            last, failed = conn.execute(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver"
            ).fetchone()
            if last and last[:24] >= segment:
                return
            time.sleep(0.2)
    raise AssertionError(f"{segment} not archived in time (last {last}, failed {failed})")


def test_pitr_restores_exactly_to_the_target_time(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, batch text NOT NULL)")
        conn.execute("INSERT INTO events SELECT g, 'A' FROM generate_series(1, 100) g")
    base = cli(store, "backup", "base", "--json", dsn=dsn)
    assert base.returncode == 0, base.stderr
    manifest = json.loads(base.stdout)
    assert manifest["kind"] == "base"
    deep = cli(store, "backup", "verify", manifest["backup_id"], "--deep", "--json")
    assert deep.returncode == 0, deep.stderr
    assert json.loads(deep.stdout)["recovery"]["consistent"] is True

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO events SELECT g, 'A2' FROM generate_series(101, 150) g")
        time.sleep(1.2)
        target = conn.execute("SELECT now()").fetchone()[0]
        time.sleep(1.2)
        conn.execute("INSERT INTO events SELECT g, 'B' FROM generate_series(151, 200) g")
    wait_archived(dsn, switch_wal(dsn))  # the segment holding batch B

    datadir = shared_dir("dbtier-restored-") / "data"
    # As on a database host: the postgres OS user, Debian's python3 and python3-* packages.
    restored = cli_as_server(
        store,
        "restore",
        "pitr",
        "--target-time",
        target.isoformat(),
        "--data-dir",
        str(datadir),
        "--keep-running",
        "--json",
        dsn=dsn,
    )
    assert restored.returncode == 0, restored.stderr
    info = json.loads(restored.stdout)
    assert info["base_backup"] == manifest["backup_id"]
    recovered = LocalCluster(base=datadir.parent, port=info["port"], data=datadir)
    try:
        with psycopg.connect(recovered.dsn(), autocommit=True) as conn:
            batches = dict(
                conn.execute("SELECT batch, count(*) FROM events GROUP BY batch").fetchall()
            )
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert batches == {"A": 100, "A2": 50}  # B, committed after the target, is absent
    finally:
        recovered.stop("immediate")
        shutil.rmtree(datadir.parent, ignore_errors=True)

    # retention keeps the only base backup and the WAL it needs, however old; only WAL from
    # before the base backup's start may go
    base_manifest = catalog.Manifest.from_json(
        (store["repo"] / "backups" / manifest["backup_id"] / "manifest.json").read_text(), "m"
    )
    archived_before = set(catalog.archived_wal(catalog_repo(store)))
    cleanup = json.loads(cli(store, "backup", "cleanup", "--days", "0", "--json").stdout)
    assert cleanup["deleted_backups"] == [] and manifest["backup_id"] in cleanup["kept"]
    archived_after = set(catalog.archived_wal(catalog_repo(store)))
    assert cleanup["deleted_wal"] == len(archived_before - archived_after)
    assert all(n[:24] < base_manifest.start_wal_file for n in archived_before - archived_after)
    assert all(n[:24] >= base_manifest.start_wal_file for n in archived_after if "." not in n)

    # a target before the oldest base backup, or after the archive, is refused up front
    early = cli(
        store,
        "restore",
        "pitr",
        "--target-time",
        "2020-01-01 00:00:00+00",
        "--data-dir",
        str(store["base"] / "never"),
        dsn=dsn,
    )
    assert early.returncode == 2 and "before the oldest base backup" in early.stderr
    late = cli(
        store,
        "restore",
        "pitr",
        "--target-time",
        "2099-01-01 00:00:00+00",
        "--data-dir",
        str(store["base"] / "never"),
        dsn=dsn,
    )
    assert late.returncode == 2 and "after the last archived WAL" in late.stderr


def test_pitr_with_a_missing_wal_segment_fails_clearly(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    assert cli(store, "backup", "base", dsn=dsn).returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    switch_wal(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    time.sleep(1.2)
    target = datetime.now(UTC)
    time.sleep(1.2)
    wait_archived(dsn, switch_wal(dsn))
    manifest = catalog.Manifest.from_json(
        next(store["repo"].glob("backups/*-base/manifest.json")).read_text(), "m"
    )
    # remove the first segment after the base backup's end
    stop = manifest.stop_wal_file
    following = sorted(
        p for p in (store["repo"] / "wal").glob("*.json") if len(p.stem) == 24 and p.stem > stop
    )
    assert following, "no WAL after the base backup was archived"
    gone = following[0].stem
    (store["repo"] / "wal" / f"{gone}.json").unlink()

    datadir = shared_dir("dbtier-restored-") / "data"
    try:
        proc = cli(
            store,
            "restore",
            "pitr",
            "--target-time",
            target.isoformat(),
            "--data-dir",
            str(datadir),
            dsn=dsn,
        )
        assert proc.returncode == 1
        assert "recovery" in proc.stderr.strip().splitlines()[-1]
    finally:
        shutil.rmtree(datadir.parent, ignore_errors=True)


def test_progress_reader_passes_data_through_and_reports(capsys: pytest.CaptureFixture) -> None:
    import io

    from dbtier.jobs import ProgressReader

    reader = ProgressReader(io.BytesIO(b"x" * 4096), "backup.progress", 8192, 0.0, backup_id="b1")
    assert reader.read(1024) + reader.read() == b"x" * 4096
    lines = capsys.readouterr().err.strip().splitlines()
    assert "event=backup.progress bytes=1024" in lines[0] and "percent=12" in lines[0]
    assert "bytes=4096" in lines[-1] and "percent=50" in lines[-1] and "backup_id=b1" in lines[-1]


@pytest.mark.parametrize("name, link", [("../evil", None), ("ok", "../../etc/passwd")])
def test_base_backup_unpacking_refuses_escaping_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, link: str | None
) -> None:
    """Without Python's tar "data" filter (Debian 12's 3.11.2), members are checked by hand."""
    import io
    import tarfile

    from dbtier import restore
    from dbtier.errors import DbtierError

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("PG_VERSION"), io.BytesIO(b""))
        member = tarfile.TarInfo(name)
        if link:
            member.type, member.linkname = tarfile.SYMTYPE, link
        tar.addfile(member, io.BytesIO(b""))
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r|") as tar, pytest.raises(DbtierError, match="unsafe"):
        restore._safe_extract(tar, tmp_path / "data")
    assert not (tmp_path / "evil").exists()
