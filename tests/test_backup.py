"""dbtier backup / restore / wal against a real PostgreSQL and a file:// repository."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from dbtier import catalog, config, keys, migrations, restore, sampledata
from dbtier.errors import DbtierError
from dbtier.pgcluster import LocalCluster, chown_to_server_user
from dbtier.pgtools import Child
from dbtier.repository import FileRepository

from .conftest import (
    SERVER_DBTIER,
    SQL_DIR,
    TABLES,
    VENV_BIN,
    fake_segment,
    fingerprints,
    run_dbtier,
)


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


def provider(store: dict) -> keys.KeyProvider:
    return keys.load_key_provider(f"file:{store['key']}")


def manifest_of(store: dict, backup_id: str) -> catalog.Manifest:
    return catalog.read_manifest(catalog_repo(store), provider(store), backup_id)


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
    manifest = manifest_of(store, result["backup_id"])
    counted = json.loads(deep.stdout)["row_counts"]
    assert counted == {
        "tables": len(manifest.row_counts),
        "rows": sum(manifest.row_counts.values()),
    }
    assert manifest.row_counts["public.scenario_logs"] == 1000

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
    segment = fake_segment(store["base"], "000000010000000000000007")
    first = cli(store, "wal-push", str(segment))
    assert first.returncode == 0, first.stderr
    stored = store["repo"] / "wal" / "000000010000000000000007.zst.enc"
    mtime = stored.stat().st_mtime_ns

    again = cli(store, "wal-push", str(segment))
    assert again.returncode == 0 and "event=wal_push.exists" in again.stderr
    assert stored.stat().st_mtime_ns == mtime  # nothing uploaded

    fake_segment(store["base"], segment.name)  # same name, other content
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


@contextmanager
def archiving(store: dict, **extra: str) -> Iterator[LocalCluster]:
    """A cluster whose archive_command is dbtier wal-push into the store's repository."""
    base = shared_dir("dbtier-pitr-")
    command = f"DBTIER_CONFIG={store['config']} {SERVER_DBTIER} wal-push --quiet %p"
    cluster = LocalCluster(
        base=base,
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'{command}'",
            "max_wal_senders": "4",
            **extra,
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


@pytest.fixture
def archiving_cluster(store: dict) -> Iterator[LocalCluster]:
    with archiving(store) as cluster:
        yield cluster


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
    base_manifest = manifest_of(store, manifest["backup_id"])
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
    manifest = manifest_of(store, next(store["repo"].glob("backups/*-base")).name)
    # remove the first segment after the base backup's end
    stop = manifest.stop_wal_file
    following = sorted(
        n for n in catalog.archived_wal(catalog_repo(store)) if len(n) == 24 and n > stop
    )
    assert following, "no WAL after the base backup was archived"
    gone = following[0]
    (store["repo"] / "wal" / f"{gone}.zst.enc").unlink()

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


@pytest.mark.parametrize(
    "name, link, kind",
    [
        ("../evil", None, None),
        ("/tmp/evil", None, None),
        ("ok", "../../etc/passwd", None),
        ("ok", "/etc/passwd", None),
        ("ok", "PG_VERSION", "hardlink"),
        ("fifo", None, "fifo"),
    ],
)
def test_base_backup_unpacking_refuses_escaping_members(
    tmp_path: Path, name: str, link: str | None, kind: str | None
) -> None:
    """The base backup's tar extractor refuses what could land outside the data directory or
    what a base backup never holds, naming the member, whatever the chunking of the stream."""
    import io
    import tarfile

    from dbtier.errors import DbtierError
    from dbtier.untar import TarExtractor

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("PG_VERSION"), io.BytesIO(b""))
        member = tarfile.TarInfo(name)
        if link:
            member.type = tarfile.LNKTYPE if kind == "hardlink" else tarfile.SYMTYPE
            member.linkname = link
        elif kind == "fifo":
            member.type = tarfile.FIFOTYPE
        tar.addfile(member, io.BytesIO(b""))
    data = buffer.getvalue()
    extractor = TarExtractor(tmp_path / "data")
    with pytest.raises(DbtierError, match="unsafe member in base backup"):
        for start in range(0, len(data), 100):  # odd chunks: headers split across writes
            extractor.write(data[start : start + 100])
        extractor.close()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_base_backup_unpacking_writes_what_tar_holds_and_refuses_a_truncated_stream(
    tmp_path: Path,
) -> None:
    """Files (sizes around the 512-byte blocks, empty ones), directories, an inner relative
    link and their modes arrive intact through any chunking; a stream cut short or followed by
    anything but tar's zero padding is refused."""
    import io
    import os
    import tarfile

    from dbtier.errors import DbtierError
    from dbtier.untar import TarExtractor

    files = {
        "PG_VERSION": b"15\n",
        "base/1/1259": os.urandom(8192 * 3 + 7),
        "base/1/empty": b"",
        "global/pg_control": os.urandom(512),
        "pg_wal/archive_status/x": os.urandom(511),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in ("base", "base/1", "global", "pg_wal", "pg_wal/archive_status"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o600, 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("base/latest")
        link.type, link.linkname = tarfile.SYMTYPE, "1"
        tar.addfile(link)
    data = buffer.getvalue()
    for chunk in (1, 511, 512, 4096, len(data)):
        root = tmp_path / f"data-{chunk}"
        extractor = TarExtractor(root)
        for start in range(0, len(data), chunk):
            extractor.write(data[start : start + chunk])
        extractor.close()
        for name, content in files.items():
            assert (root / name).read_bytes() == content, (chunk, name)
            assert (root / name).stat().st_mode & 0o777 == 0o600
            assert int((root / name).stat().st_mtime) == 1_700_000_000
        assert os.readlink(root / "base/latest") == "1"
        assert extractor.files == len(files)
    end = data.rstrip(b"\0")
    for broken, error in (
        (data[: len(end) - 100], "truncated"),  # in the middle of the last file
        (end, "truncated"),  # no end-of-archive blocks
        (data + b"junk", "after the end of the archive"),
    ):
        extractor = TarExtractor(tmp_path / "broken")
        with pytest.raises(DbtierError, match=error):
            extractor.write(broken)
            extractor.close()
        shutil.rmtree(tmp_path / "broken")


# ============================================================ restore safety (items 3, 9-13)


def admin(dsn: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/postgres"


def databases_like(dsn: str, pattern: str) -> list[str]:
    with psycopg.connect(admin(dsn)) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,)
        ).fetchall()
    return [r[0] for r in rows]


def drop_databases(dsn: str, names: list[str]) -> None:
    with psycopg.connect(admin(dsn), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr when a command is refused: one line, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def bigger_db(dsn: str) -> str:
    migrations.migrate(dsn, SQL_DIR)
    sampledata.load(
        dsn, sampledata.SampleSize(scenarios=40, logs_per_scenario=4000, metrics_per_scenario=100)
    )
    return dsn


# ------------------------------------------------------------------------ A: explicit modes


def test_restore_without_an_explicit_mode_is_refused_and_touches_nothing(
    source_db: str, store: dict
) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    with psycopg.connect(source_db) as conn:
        conn.execute("DELETE FROM reports")
    after_accident = fingerprints(source_db)

    # Once, an empty --target-time meant "logical restore of latest over the live database".
    for args in (
        ["restore", "--target-time", "", "--data-dir", ""],
        ["restore", "--data-dir", str(store["base"] / "pitr")],
        ["restore", "latest"],
        ["restore"],
    ):
        proc = cli(store, *args, dsn=source_db)
        assert proc.returncode == 2, (args, proc.stderr)
        one_line_error(proc)
    assert "logical" in proc.stderr and "pitr" in proc.stderr and "rds" in proc.stderr

    refused = {
        # empty values
        ("pitr", "--target-time", "", "--data-dir", "/tmp/x"): "--target-time",
        ("pitr", "--target-time", "2026-01-01", "--data-dir", ""): "--data-dir",
        ("rds", "--rds-instance", "a", "--new-instance", "b", "--target-time", ""): "empty",
        ("logical", "", "--target-db", "x"): "empty",
        # options of another mode
        ("logical", "--data-dir", "/tmp/x"): "--data-dir",
        ("logical", "--target-time", "2026-01-01"): "--target-time",
        (
            "pitr",
            "--target-time",
            "2026-01-01",
            "--data-dir",
            "/x",
            "--target-db",
            "d",
        ): "target-db",
        ("pitr", "--target-time", "2026-01-01", "--data-dir", "/x", "--dsn", "x"): "--dsn",
        ("rds", "--rds-instance", "a", "--new-instance", "b", "--repo", "file:///x"): "--repo",
        # what a mode needs
        ("pitr", "--data-dir", "/tmp/x"): "--target-time",
        ("rds", "--rds-instance", "a"): "--new-instance",
    }
    for args, named in refused.items():
        proc = cli(store, "restore", *args, dsn=source_db)
        assert proc.returncode == 2, (args, proc.stderr)
        assert named in one_line_error(proc), (args, proc.stderr)
    assert fingerprints(source_db) == after_accident
    assert databases_like(source_db, f"{dbname(source_db)}_%") == []


# ----------------------------------------------------------------- B: staging, swap, keep


def test_logical_restore_swaps_in_and_keeps_the_live_database_with_late_writes(
    database: str, store: dict
) -> None:
    live = bigger_db(database)
    made = cli(store, "backup", "full", "--json", dsn=live)
    assert made.returncode == 0, made.stderr
    logical_id = json.loads(made.stdout)["backup_id"]
    backed_up = fingerprints(live)
    with psycopg.connect(live) as conn:
        conn.execute("DELETE FROM reports")  # the accident we recover from
        conn.execute("CREATE TABLE late_writes (note text)")

    plan = cli(store, "restore", "logical", "--dry-run", "--json", dsn=live)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["backup_id"] == logical_id and planned["kept_database"].startswith(
        f"{dbname(live)}__pre_"
    )

    # An application session on the live database, open before the restore starts.
    app = psycopg.connect(live, autocommit=True)
    proc = subprocess.Popen(
        [str(VENV_BIN / "dbtier"), "restore", "logical", "latest", "--json", "-j", "2"],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "DATABASE_URL": live},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not databases_like(live, f"{dbname(live)}__new_%") and time.monotonic() < deadline:
        time.sleep(0.01)
    # pg_restore is filling the staging database: the live one still takes writes.
    app.execute("INSERT INTO late_writes VALUES ('written during the restore')")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)

    kept = result["kept_database"]
    assert kept.startswith(f"{dbname(live)}__pre_") and kept in err
    assert fingerprints(live) == backed_up  # the restored database is now the live one
    kept_dsn = live.rsplit("/", 1)[0] + "/" + kept
    with psycopg.connect(kept_dsn) as conn:
        assert conn.execute("SELECT note FROM late_writes").fetchall() == [
            ("written during the restore",)
        ]
        assert conn.execute("SELECT count(*) FROM reports").fetchone()[0] == 0
    with pytest.raises(psycopg.OperationalError):  # its session was ended for the rename
        app.execute("SELECT 1")
    app.close()
    assert databases_like(live, f"{dbname(live)}__new_%") == []

    # The safety backup was taken of the kept copy, after the swap; `latest` is still the
    # logical backup, the safety one is restored only by its id (into the original name).
    safety_id = result["safety_backup_id"]
    assert safety_id and safety_id.endswith("-safety")
    listed = json.loads(cli(store, "backup", "list", "--json").stdout)["backups"]
    assert sorted(b["kind"] for b in listed) == ["logical", "safety"]
    again = json.loads(cli(store, "restore", "logical", "--dry-run", "--json", dsn=live).stdout)
    assert again["backup_id"] == logical_id
    by_id = json.loads(
        cli(store, "restore", "logical", safety_id, "--dry-run", "--json", dsn=live).stdout
    )
    assert by_id["kind"] == "safety" and by_id["target_database"] == dbname(live)
    verified = json.loads(cli(store, "backup", "verify", "latest", "--json").stdout)
    assert verified["backup_id"] == logical_id

    # The printed command drops the kept copy.
    drop = subprocess.run(
        shlex.split(result["drop_kept_database"]), capture_output=True, text=True, check=False
    )
    assert drop.returncode == 0, drop.stderr
    assert databases_like(live, f"{dbname(live)}__%") == []


def test_a_name_too_long_for_the_staging_names_is_refused_before_anything(
    source_db: str, store: dict
) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    long_name = "l" * 63  # PostgreSQL's limit: "<name>__dbtier_restore" was cut back to it
    with psycopg.connect(admin(source_db), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{long_name}"')
    long_dsn = source_db.rsplit("/", 1)[0] + "/" + long_name
    try:
        with psycopg.connect(long_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious AS SELECT 42 AS answer")
        for name in (long_name, "m" * 60):
            proc = cli(store, "restore", "logical", "--target-db", name, dsn=source_db)
            assert proc.returncode == 2, proc.stderr
            line = one_line_error(proc)
            assert "at most 43 bytes" in line and "shorter --target-db" in line
        with psycopg.connect(long_dsn) as conn:
            assert conn.execute("SELECT answer FROM precious").fetchone()[0] == 42
        assert databases_like(source_db, "l%") == [long_name]
        assert databases_like(source_db, "m%") == []
    finally:
        drop_databases(source_db, [long_name])


def test_a_failed_pg_restore_leaves_the_live_database_and_says_how_to_clean_up(
    source_db: str, store: dict
) -> None:
    role = f"gone_{dbname(source_db)}"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}"')
        conn.execute("CREATE TABLE owned_by_a_role (x int)")
        conn.execute(f'ALTER TABLE owned_by_a_role OWNER TO "{role}"')
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("DROP TABLE owned_by_a_role")
        conn.execute(f'DROP ROLE "{role}"')  # pg_restore's ALTER ... OWNER TO now fails
        conn.execute("DELETE FROM reports")
    before = fingerprints(source_db)

    proc = cli(store, "restore", "logical", dsn=source_db)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "pg_restore failed" in last and f"{dbname(source_db)} untouched" in last
    [staging] = databases_like(source_db, f"{dbname(source_db)}__new_%")
    assert f"staging database {staging} left" in last
    assert fingerprints(source_db) == before
    assert databases_like(source_db, f"{dbname(source_db)}__pre_%") == []
    drop = last.split("drop it with: ", 1)[1].rstrip(")")
    done = subprocess.run(shlex.split(drop), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert databases_like(source_db, f"{dbname(source_db)}__%") == []


@pytest.fixture
def two_phase_cluster() -> Iterator[LocalCluster]:
    """A cluster that allows prepared transactions: one of them pins a database (no rename)."""
    base = shared_dir("dbtier-2pc-")
    cluster = LocalCluster(base=base, settings={"max_prepared_transactions": "4"})
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_a_failed_swap_leaves_the_live_database_in_service(
    two_phase_cluster: LocalCluster, store: dict
) -> None:
    with psycopg.connect(two_phase_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE live")
    live = two_phase_cluster.dsn("live")
    migrations.migrate(live, SQL_DIR)
    sampledata.load(live, sampledata.SampleSize(scenarios=3, logs_per_scenario=10))
    assert cli(store, "backup", "full", dsn=live).returncode == 0
    with psycopg.connect(live, autocommit=True) as conn:
        conn.execute("DELETE FROM reports")
    before = fingerprints(live)
    pinned = psycopg.connect(live)
    pinned.execute("SELECT 1")
    pinned.execute("PREPARE TRANSACTION 'pin'")  # survives pg_terminate_backend
    pinned.close()
    try:
        proc = cli(store, "restore", "logical", dsn=live)
        assert proc.returncode == 1, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert "swap failed, live untouched" in last and "drop it with: " in last
        assert fingerprints(live) == before  # and it takes connections again
        [staging] = databases_like(live, "live__new_%")
        assert databases_like(live, "live__pre_%") == []
    finally:
        with psycopg.connect(live, autocommit=True) as conn:
            conn.execute("ROLLBACK PREPARED 'pin'")
    drop = last.split("drop it with: ", 1)[1].rstrip(")")
    assert staging in drop
    done = subprocess.run(shlex.split(drop), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert databases_like(live, "live__%") == []


# ------------------------------------------------------- C: content checked before start


def test_pitr_refuses_a_base_backup_whose_content_differs_from_the_manifest(
    archiving_cluster: LocalCluster, store: dict
) -> None:
    """In-process: the manifest object's raw_sha256 is changed (no tampering with the stored
    manifest, which the integrator's MAC will protect): recovery stops before any server."""
    dsn = archiving_cluster.dsn()
    made = cli(store, "backup", "base", "--json", dsn=dsn)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["backup_id"]
    settings = config.load(str(store["config"]))
    repo = FileRepository(store["repo"])
    provider = keys.from_settings(settings)
    manifest = catalog.find_backup(repo, provider, backup_id, kinds=("base",))
    wrong = dataclasses.replace(manifest.objects[0], raw_sha256="0" * 64)
    tampered = dataclasses.replace(manifest, objects=[wrong])

    parent = shared_dir("dbtier-tampered-")
    try:
        with pytest.raises(DbtierError, match="content checksum mismatch"):
            restore.recover(
                settings,
                repo,
                provider,
                tampered,
                parent / "data",
                restore.RecoveryTarget.immediate(),
            )
        assert list((parent / "data").iterdir()) == []  # nothing unverified left to start
        assert not (parent / "postgres.log").exists()  # no server was started
        # the untampered manifest recovers (same code path, same repository)
        done = restore.recover(
            settings,
            repo,
            provider,
            manifest,
            parent / "data",
            restore.RecoveryTarget.immediate(),
            timeline=str(manifest.timeline),
            action="shutdown",
        )
        assert done["state"] == "shut down in recovery"
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    # the logical path's download checks raw size as well as raw sha256
    wrong_size = dataclasses.replace(manifest.objects[0], raw_size=1)
    work = shared_dir("dbtier-download-")
    try:
        with pytest.raises(DbtierError, match="content size mismatch after decryption"):
            restore._download(
                repo, dataclasses.replace(manifest, objects=[wrong_size]), provider, work
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------- D: scratch servers never archive


@pytest.fixture
def self_archiving_cluster(store: dict) -> Iterator[tuple[LocalCluster, Path]]:
    """A cluster whose archive settings live in its data directory (postgresql.auto.conf), so
    every base backup carries them; archive_command also notes which data directory ran it."""
    base = shared_dir("dbtier-selfarch-")
    marker = shared_dir("dbtier-marker-")
    cluster = LocalCluster(base=base, settings={"wal_level": "replica", "max_wal_senders": "4"})
    cluster.init()
    push = f"DBTIER_CONFIG={store['config']} {SERVER_DBTIER} wal-push --quiet %p"
    command = f'echo "$PWD %f" >> {marker}/archived.log && {push}'
    with (cluster.datadir / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"archive_mode = on\narchive_command = '{command}'\n")
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text(hba.read_text() + "\nhost replication all 127.0.0.1/32 trust\n")
    cluster.start()
    try:
        yield cluster, marker
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(marker, ignore_errors=True)


def test_deep_verify_and_pitr_servers_archive_nothing(
    self_archiving_cluster: tuple[LocalCluster, Path], store: dict
) -> None:
    cluster, marker = self_archiving_cluster
    dsn = cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    made = cli(store, "backup", "base", "--json", dsn=dsn)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["backup_id"]

    deep = cli(store, "backup", "verify", backup_id, "--deep", "--json")
    assert deep.returncode == 0, deep.stderr
    assert json.loads(deep.stdout)["recovery"]["state"] == "shut down in recovery"

    time.sleep(1.2)
    target = datetime.now(UTC)
    time.sleep(1.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (0)")  # after the target: not recovered
    wait_archived(dsn, switch_wal(dsn))
    datadir = shared_dir("dbtier-restored-") / "data"
    try:
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
        )
        assert restored.returncode == 0, restored.stderr
        port = json.loads(restored.stdout)["port"]
        recovered = LocalCluster(base=datadir.parent, port=port, data=datadir)
        with psycopg.connect(recovered.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
            conn.execute("CREATE TABLE written_after_promotion AS SELECT 1")
            conn.execute("SELECT pg_switch_wal()")
        time.sleep(2)  # an archiver would have run by now
        recovered.stop()
        # persisted config is untouched: the operator's own restart decides about archiving
        assert "archive_mode = on" in (datadir / "postgresql.auto.conf").read_text()
    finally:
        shutil.rmtree(datadir.parent, ignore_errors=True)

    wait_archived(dsn, switch_wal(dsn))  # the production cluster still archives
    archivers = {line.split(" ")[0] for line in (marker / "archived.log").read_text().splitlines()}
    assert archivers == {str(cluster.datadir)}
    timelines = {p.name[:8] for p in (store["repo"] / "wal").iterdir()}
    assert timelines == {"00000001"}, "a scratch server pushed a new timeline"


# ----------------------------------------------------------- E: privacy, locks, children


def test_deep_verify_keeps_decrypted_data_private(source_db: str, store: dict) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    exposed: set[str] = set()
    stop = threading.Event()
    # Only what verify creates (other test clusters under /tmp are not its business).
    scratch = ("dbtier-verify-*", "dbtier-deep-*")
    before = {p for pattern in scratch for p in Path("/tmp").glob(pattern)}

    def watch() -> None:
        while not stop.is_set():
            now = {p for pattern in scratch for p in Path("/tmp").glob(pattern)}
            for top in now - before:
                try:
                    paths = [top, *top.rglob("*")]
                except OSError:  # a directory vanished while listing: look again next round
                    continue
                for path in paths:
                    try:
                        mode = path.lstat().st_mode
                    except OSError:
                        continue
                    if not stat.S_ISSOCK(mode) and mode & 0o077:
                        exposed.add(f"{path} {stat.filemode(mode)}")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deep = cli(store, "backup", "verify", "latest", "--deep")
    finally:
        stop.set()
        watcher.join()
    assert deep.returncode == 0, deep.stderr
    assert not exposed, sorted(exposed)


def test_backup_gives_up_on_a_held_lock_instead_of_queueing_forever(
    source_db: str, store: dict
) -> None:
    with psycopg.connect(source_db) as holder:
        holder.execute("LOCK TABLE scenarios IN ACCESS EXCLUSIVE MODE")  # e.g. a migration
        started = time.monotonic()
        proc = run_backup(store, source_db, BACKUP_LOCK_WAIT_TIMEOUT="1s")
        assert proc.returncode == 1, proc.stderr
        assert time.monotonic() - started < 60
        assert "lock timeout" in one_line_error_tail(proc)
    assert not list(store["repo"].glob("backups/*/manifest.json"))


def run_backup(store: dict, dsn: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "dbtier"), "backup", "full", "--quiet"],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "DATABASE_URL": dsn, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def one_line_error_tail(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_child_hands_every_stderr_line_to_on_line_from_the_first() -> None:
    failures: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    try:
        for _ in range(30):
            seen: list[str] = []
            child = Child(["sh", "-c", "echo first >&2; echo second >&2"], {}, on_line=seen.append)
            assert child.wait() == 0
            assert seen == ["first", "second"]
    finally:
        threading.excepthook = previous
    assert failures == []
    silent = Child(["sh", "-c", "exit 3"], {})
    assert silent.wait() == 3 and silent.error_line() == "exit code 3, no message"


def test_sigterm_during_a_backup_cleans_up_like_a_failure(database: str, store: dict) -> None:
    dsn = bigger_db(database)
    proc = subprocess.Popen(
        [str(VENV_BIN / "dbtier"), "backup", "full"],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(store["repo"].glob("backups/*/.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the backup finished before it could be stopped"
    dump_pids = children_named(proc.pid, "pg_dump")
    assert dump_pids, "no pg_dump running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "dbtier: error: terminated by SIGTERM"
    assert not list(store["repo"].glob("backups/*/manifest.json"))
    assert not list(store["repo"].rglob(".tmp-*"))
    assert not [pid for pid in dump_pids if Path(f"/proc/{pid}").exists()], "orphan pg_dump"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT status, error FROM backup_history").fetchall()
        dumping = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
        ).fetchone()[0]
    assert rows == [("failed", "terminated by SIGTERM")]
    assert dumping == 0
    prom = (store["metrics"] / "dbtier_backup_full.prom").read_text()
    assert 'dbtier_job_last_status{job="backup_full"} 0' in prom


def children_named(parent: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == parent and comm == name:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------- F: bad input


def test_bad_data_directories_are_one_line_usage_errors(store: dict, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for datadir, said in (("relative/pitr", "relative"), (str(a_file), "not a directory")):
        proc = cli(
            store,
            "restore",
            "pitr",
            "--target-time",
            "2026-01-01 00:00:00+00",
            "--data-dir",
            datadir,
        )
        assert proc.returncode == 2, proc.stderr
        assert said in one_line_error(proc)


def test_a_child_that_fails_silently_is_named_with_its_exit_code(
    source_db: str, store: dict
) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    bindir = shared_dir("dbtier-fakebin-")
    try:
        fake = bindir / "pg_restore"
        fake.write_text("#!/bin/sh\nexit 3\n")  # fails without a word on stderr
        fake.chmod(0o755)
        with store["config"].open("a") as conf:
            conf.write(f'pg_bindir = "{bindir}"\n')
        for args in (("backup", "verify", "latest"), ("restore", "logical", "--verify-only")):
            proc = cli(store, *args, dsn=source_db)
            assert proc.returncode == 1, proc.stderr
            assert one_line_error_tail(proc).endswith(
                "pg_restore --list failed: exit code 3, no message"
            )
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def test_an_unknown_setting_is_named_with_the_closest_known_one(store: dict) -> None:
    with store["config"].open("a") as conf:
        conf.write("retention_dyas = 7\n")
    proc = cli(store, "backup", "list")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "'retention_dyas'" in line and "did you mean retention_days?" in line
    assert str(store["config"]) in line


def test_settings_files_ansible_writes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "dbtier.toml"
    path.write_text(
        'repository = "file:///r"\nkey = "file:/k"\nretention_days = 7\nretention_count = 2\n'
        'compression_level = 3\nmetrics_dir = "/m"\nlock_wait_timeout = "5min"\n'
        '[backup]\nstorage_class = "STANDARD_IA"\n'
    )
    settings = config.load(str(path))
    assert (settings.retention_days, settings.lock_wait_timeout) == (7, "5min")
    assert settings.storage_class == "STANDARD_IA"


# ------------------------------------------------------------- scheduled jobs (issue 9)


def test_verify_latest_of_each_kind(archiving_cluster: LocalCluster, store: dict) -> None:
    """`verify latest` is the newest of either kind; the schedule verifies the newest of each,
    so a base backup is checked although a newer logical one exists (and the other way round)."""
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kinds (i int)")
    no_base = cli(store, "backup", "verify", "latest", "--kind", "base")
    assert no_base.returncode == 2 and "no base backup in" in no_base.stderr

    base = json.loads(cli(store, "backup", "base", "--json", dsn=dsn).stdout)
    logical = json.loads(cli(store, "backup", "full", "--json", dsn=dsn).stdout)
    assert (base["kind"], logical["kind"]) == ("base", "logical")

    newest = json.loads(cli(store, "backup", "verify", "latest", "--json").stdout)
    assert newest["backup_id"] == logical["backup_id"]
    for kind, made in (("base", base), ("logical", logical)):
        proc = cli(store, "backup", "verify", "latest", "--kind", kind, "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert (report["backup_id"], report["kind"]) == (made["backup_id"], kind)
    assert "wal" in json.loads(
        cli(store, "backup", "verify", "--kind", "base", "--json").stdout
    )  # `latest` is the default reference

    wrong = cli(store, "backup", "verify", base["backup_id"], "--kind", "logical")
    assert wrong.returncode == 2
    assert f"backup {base['backup_id']} is a base backup, not logical" in wrong.stderr
    bad = cli(store, "backup", "verify", "latest", "--kind", "safety")
    assert bad.returncode == 2 and "invalid choice: 'safety'" in bad.stderr


@pytest.fixture
def standby_cluster() -> Iterator[LocalCluster]:
    """A server in recovery, as a streaming standby is: initdb, standby.signal, start."""
    base = shared_dir("dbtier-standby-")
    cluster = LocalCluster(base=base)
    cluster.init()
    signal_file = cluster.datadir / "standby.signal"
    signal_file.touch()
    chown_to_server_user(signal_file)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_primary_only_backups_skip_a_standby(
    standby_cluster: LocalCluster, source_db: str, store: dict
) -> None:
    with psycopg.connect(standby_cluster.dsn()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    for action in ("full", "base"):
        skipped = cli(
            store,
            "backup",
            action,
            "--primary-only",
            "--quiet",
            "--json",
            dsn=standby_cluster.dsn(),
        )
        assert skipped.returncode == 0, skipped.stderr
        assert json.loads(skipped.stdout)["skipped"] is True
        assert f"event=backup_{action}.skipped" in skipped.stderr  # in the cron log despite --quiet
        assert "reason=standby" in skipped.stderr
    assert not list((store["repo"]).glob("backups/*"))  # nothing written
    # the nightly archive run from the ops host, pointed at a standby: nothing, exit 0
    archived = cli(store, "archive", "--all", "--primary-only", "--quiet", "--json",
                   dsn=standby_cluster.dsn())  # fmt: skip
    assert archived.returncode == 0, archived.stderr
    assert json.loads(archived.stdout) == {"skipped": True, "reason": "standby"}
    assert "event=archive.skipped" in archived.stderr

    made = cli(store, "backup", "full", "--primary-only", "--json", dsn=source_db)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["kind"] == "logical"

    down = cli(store, "backup", "full", "--primary-only", dsn="postgresql://127.0.0.1:1/x")
    assert down.returncode == 5 and "cannot connect" in down.stderr  # never a silent skip


def test_every_job_records_a_history_row_when_the_database_comes_from_pg_variables(
    source_db: str, store: dict
) -> None:
    """The jobs on database hosts connect through PGHOST/PGDATABASE (no DSN at all): backups,
    verifies, cleanups and restores must still write their backup_history rows there."""
    params = conninfo_to_dict(source_db)
    env = {
        "DBTIER_CONFIG": str(store["config"]),
        "PGHOST": str(params["host"]),
        "PGPORT": str(params["port"]),
        "PGUSER": str(params["user"]),
        "PGDATABASE": str(params["dbname"]),
        "DATABASE_URL": "",
    }
    for args in (
        ("backup", "full"),
        ("backup", "verify", "latest", "--kind", "logical"),
        ("backup", "cleanup"),
        ("restore", "logical", "latest", "--no-safety-backup"),
    ):
        proc = run_dbtier(*args, "--quiet", env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "history.unavailable" not in proc.stderr, proc.stderr
    server = source_db.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        [(aside,)] = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (params["dbname"] + "\\_\\_pre\\_%",),
        ).fetchall()
    try:
        query = "SELECT kind, status FROM backup_history ORDER BY id"
        with psycopg.connect(f"{server}/{aside}") as conn:
            old = conn.execute(query).fetchall()
        with psycopg.connect(source_db) as conn:
            restored = conn.execute(query).fetchall()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{aside}" WITH (FORCE)')
    assert old == [("logical", "completed"), ("verify", "completed"), ("cleanup", "completed")]
    # The dump caught its own backup's row while it ran: the restore settles it from the
    # manifest (a 'running' row would be reaped as failed), then adds its own row.
    assert restored == [("logical", "completed"), ("restore", "completed")]


def test_messages_that_quote_sql_work_with_the_hosts_psycopg() -> None:
    """Hosts run dbtier on Debian's python3-psycopg (3.1), not this venv's: what builds the
    operator's commands must work there too (3.1 cannot quote an identifier without a
    connection)."""
    code = (
        "from dbtier.restore import _drop_command; "
        "print(_drop_command('host=/var/run/postgresql dbname=postgres', 'my\"db__new_1'))"
    )
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("""-c 'DROP DATABASE "my""db__new_1"'""")
