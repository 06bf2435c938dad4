"""The repository never lies: authenticated manifests, key and cluster binding, race-free WAL,
WAL verification, restore_command semantics, retention that counts only good backups.

Real PostgreSQL 15, real dbtier processes, a real file:// repository; faults injected for real
(edited bytes, concurrent processes, kills)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from dbtier import catalog, config, keys, maintenance, wal
from dbtier.catalog import Manifest, StoredObject
from dbtier.crypto import IntegrityError
from dbtier.pipeline import upload_encrypted
from dbtier.store import Store, open_store

from .conftest import VENV_BIN, fake_segment
from .support.moto_server import free_port
from .test_backup import (  # noqa: F401  (fixtures)
    archiving_cluster,
    catalog_repo,
    cli,
    source_db,
    store,
    switch_wal,
    wait_archived,
)

SYSID = "7300000000000000001"
SEG = 16 << 20


def settings_of(store: dict) -> config.Settings:
    return config.load(str(store["config"]))


def wal_object(store: dict, name: str) -> Path:
    return store["repo"] / "wal" / f"{name}.zst.enc"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ the manifest is the truth


@pytest.fixture
def base_backup(archiving_cluster, store: dict) -> dict:
    dsn = archiving_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    made = cli(store, "backup", "base", "--json", dsn=dsn)
    assert made.returncode == 0, made.stderr
    for _ in range(2):  # WAL after the backup's end, two segments at least
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        wait_archived(dsn, switch_wal(dsn))
    return {"id": json.loads(made.stdout)["backup_id"], "dsn": dsn}


@pytest.mark.parametrize(
    "field, edit",
    [
        ("start_lsn", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1")),
        ("start_wal_file", lambda v: v[:-1] + ("9" if v[-1] != "9" else "8")),
        ("stopped_at", lambda v: v.replace("20", "21", 1)),
        ("system_identifier", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1")),
        ("objects", lambda v: [{**v[0], "sha256": "0" * 64}]),
    ],
)
def test_edited_manifest_is_broken_everywhere(
    base_backup: dict,
    store: dict,
    field: str,
    edit,
) -> None:
    path = store["repo"] / "backups" / base_backup["id"] / "manifest.json"
    doc = json.loads(path.read_text())
    doc["body"][field] = edit(doc["body"][field])
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    archived_before = catalog.archived_wal(catalog_repo(store))

    verify = cli(store, "backup", "verify", base_backup["id"])
    assert verify.returncode == 1, verify.stderr
    assert "authentication failed" in verify.stderr.strip().splitlines()[-1]
    listed = cli(store, "backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["backups"]
    assert row["status"] == "broken" and "authentication failed" in row["reason"]
    # the PITR path does not use it either
    pitr = cli(store, "restore", "pitr", "--target-time", "2099-01-01 00:00:00+00", "--data-dir",
               str(store["base"] / "never"), "--dry-run")  # fmt: skip
    assert pitr.returncode == 2 and "no base backup" in pitr.stderr
    # and retention is not misled into deleting WAL by it
    cleaned = cli(store, "backup", "cleanup", "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert json.loads(cleaned.stdout)["deleted_wal"] == 0
    assert catalog.archived_wal(catalog_repo(store)) == archived_before


def test_a_base_backup_without_raw_sha256_still_detects_a_corrupted_object(
    base_backup: dict, store: dict
) -> None:
    """Base backups record no SHA-256 of the raw tar (zstd's XXH64 and the GCM tags cover it,
    the manifest says so) and are taken at base_compression_level (2); one flipped byte of the
    stored object still fails verify, names the object, and the deep verify unpacks nothing."""
    body = json.loads(
        (store["repo"] / "backups" / base_backup["id"] / "manifest.json").read_text()
    )["body"]
    assert body["compression"] == {
        "algorithm": "zstd",
        "level": 2,
        "content_checksum": catalog.CONTENT_CHECKSUM,
    }
    [obj] = body["objects"]
    assert obj["raw_sha256"] is None and obj["raw_size"] > 0
    verify = cli(store, "backup", "verify", base_backup["id"], "--json")
    assert verify.returncode == 0, verify.stderr

    path = store["repo"] / "backups" / base_backup["id"] / obj["key"]
    flip(path, path.stat().st_size // 2)
    for args in (("backup", "verify", base_backup["id"]),
                 ("backup", "verify", base_backup["id"], "--deep")):  # fmt: skip
        proc = cli(store, *args)
        assert proc.returncode == 1, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert obj["key"] in last and "authentication failed" in last, last


def test_manifest_moved_to_another_backup_is_refused(base_backup: dict, store: dict) -> None:
    made = cli(store, "backup", "base", "--json", dsn=base_backup["dsn"])
    assert made.returncode == 0, made.stderr
    second = json.loads(made.stdout)["backup_id"]
    first_dir = store["repo"] / "backups" / base_backup["id"]
    shutil.copy(first_dir / "manifest.json", store["repo"] / "backups" / second / "manifest.json")
    verify = cli(store, "backup", "verify", second)
    assert verify.returncode == 1 and "authentication failed" in verify.stderr


def test_inconsistent_manifests_are_refused_even_when_sealed() -> None:
    """What the key holder writes is sanity-checked too (start <= stop, names match LSNs)."""
    good = synthetic_manifest("base", catalog.now_utc(), start_segment=2)
    good.check(good.id)
    for change, message in [
        ({"start_lsn": "0/9000000"}, "start LSN after stop LSN"),
        ({"stop_wal_file": "000000010000000000000009"}, "does not hold stop LSN"),
        ({"started_at": "2099-01-01T00:00:00Z"}, "stopped before it started"),
        ({"system_identifier": "abc"}, "bad system identifier"),
        ({"objects": []}, "no objects"),
        # no raw SHA-256 is allowed only where the compression records its content checksum
        ({"objects": [StoredObject("data.zst.enc", 0, "0" * 64, 0, None)]}, "bad checksum"),
    ]:
        bad = Manifest(**{**good.__dict__, **change})
        with pytest.raises(IntegrityError, match=message):
            bad.check(bad.id)
    unhashed = Manifest(
        **{
            **good.__dict__,
            "objects": [StoredObject("data.zst.enc", 0, "0" * 64, 0, None)],
            "compression": {**good.compression, "content_checksum": catalog.CONTENT_CHECKSUM},
        }
    )
    unhashed.check(unhashed.id)


def test_one_unreadable_manifest_does_not_take_the_repository_down(
    source_db: str,
    store: dict,
) -> None:
    first = cli(store, "backup", "full", "--json", dsn=source_db)
    assert first.returncode == 0, first.stderr
    time.sleep(1.1)
    second = cli(store, "backup", "full", "--json", dsn=source_db)
    assert second.returncode == 0, second.stderr
    bad_id = json.loads(first.stdout)["backup_id"]
    good_id = json.loads(second.stdout)["backup_id"]
    (store["repo"] / "backups" / bad_id / "manifest.json").write_text('{"truncated": ')

    listed = cli(store, "backup", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(bad_id in ln and "broken" in ln and "not valid JSON" in ln for ln in lines)
    assert any(good_id in ln and " ok " in ln for ln in lines)
    assert cli(store, "backup", "verify", "latest").returncode == 0
    assert cli(store, "backup", "cleanup", "--json").returncode == 0
    target = f"{source_db.rsplit('/', 1)[1]}_r"
    restored = cli(
        store, "restore", "logical", "latest", "--target-db", target, "--json", dsn=source_db
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == good_id
    with psycopg.connect(source_db.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    bad = cli(store, "backup", "verify", bad_id)
    assert bad.returncode == 1 and "is broken" in bad.stderr


# ------------------------------------------------------------ the repository is bound to its key


def test_writes_with_another_key_are_refused_before_anything_is_written(
    source_db: str,
    store: dict,
) -> None:
    assert cli(store, "backup", "full", dsn=source_db).returncode == 0
    before = sorted(str(p) for p in store["repo"].rglob("*"))
    other = store["base"] / "other.key"
    other.write_bytes(os.urandom(32))
    segment = fake_segment(store["base"], "000000010000000000000003")

    for args in (("backup", "full"), ("wal-push", str(segment))):
        proc = cli(store, *args, "--key", f"file:{other}", dsn=source_db)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert "is bound to master key" in last and "refusing to write" in last
    assert sorted(str(p) for p in store["repo"].rglob("*")) == before

    # the same key moved to an environment variable still writes (it is the same key)
    import base64

    env_key = base64.b64encode(store["key"].read_bytes()).decode()
    proc = subprocess.run(
        [str(VENV_BIN / "dbtier"), "wal-push", "--key", "env:MY_KEY", str(segment)],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "MY_KEY": env_key},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "holds the backups of the cluster" in proc.stderr


def test_a_repository_holds_one_cluster(store: dict) -> None:
    first = fake_segment(store["base"], "000000010000000000000003", sysid=111)
    assert cli(store, "wal-push", str(first)).returncode == 0
    other = store["base"] / "other"
    other.mkdir()
    foreign = fake_segment(other, "000000010000000000000004", sysid=222)
    proc = cli(store, "wal-push", str(foreign))
    assert proc.returncode == 2
    assert "holds the backups of the cluster with system identifier 111" in proc.stderr
    assert not wal_object(store, foreign.name).exists()


# ------------------------------------------------------------------------------- WAL objects


def test_segments_that_must_never_be_archived_are_refused(store: dict) -> None:
    base = store["base"]
    empty = base / "000000010000000000000001"
    empty.write_bytes(b"")
    short = base / "000000010000000000000002"
    short.write_bytes(os.urandom(30))
    garbage = base / "000000010000000000000005"
    garbage.write_bytes(bytes(1000))
    cut = fake_segment(base, "000000010000000000000003")
    cut.write_bytes(cut.read_bytes()[: 8 << 20])
    renamed = base / "000000010000000000000009"
    fake_segment(base, "000000010000000000000004").rename(renamed)
    for path, message in [
        (empty, "is empty"),
        (short, "too short for a WAL segment"),
        (garbage, "does not start with a WAL segment header"),
        (cut, "has 8388608 bytes but its header says 16777216"),
        (renamed, "not the one its name says"),
    ]:
        proc = cli(store, "wal-push", str(path))
        assert proc.returncode == 2, (path, proc.stderr)
        assert message in proc.stderr.strip().splitlines()[-1]
        assert not wal_object(store, path.name).exists()


def test_concurrent_pushes_of_one_segment_store_it_once_and_readable(
    store: dict,
) -> None:
    pairs = 12
    same = [fake_segment(store["base"], f"0000000100000000000000{n:02X}") for n in range(pairs)]
    # and pairs of different content under one name: exactly one of each wins
    rivals = []
    for n in range(pairs):
        name = f"0000000100000001000000{n:02X}"
        a, b = store["base"] / "a", store["base"] / "b"
        a.mkdir(exist_ok=True)
        b.mkdir(exist_ok=True)
        rivals.append((fake_segment(a, name), fake_segment(b, name)))
    jobs = [p for p in same for _ in range(2)] + [p for pair in rivals for p in pair]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda p: cli(store, "wal-push", str(p)), jobs))
    for segment, first, second in zip(
        same, results[0::2], results[1 : 2 * pairs : 2], strict=False
    ):
        assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
        fetched = store["base"] / "fetched"
        assert cli(store, "wal-fetch", segment.name, str(fetched)).returncode == 0
        assert fetched.read_bytes() == segment.read_bytes()
    rival_results = results[2 * pairs :]
    for (a, b), ra, rb in zip(rivals, rival_results[0::2], rival_results[1::2], strict=True):
        assert sorted([ra.returncode, rb.returncode]) == [0, 1], (ra.stderr, rb.stderr)
        loser = ra if ra.returncode else rb
        assert "already archived with different content" in loser.stderr
        winner = a if ra.returncode == 0 else b
        fetched = store["base"] / "fetched"
        assert cli(store, "wal-fetch", a.name, str(fetched)).returncode == 0
        assert fetched.read_bytes() == winner.read_bytes()


def test_an_object_swapped_for_another_fails_authentication(store: dict) -> None:
    for n in (7, 8):
        segment = fake_segment(store["base"], f"0000000100000000000000{n:02X}")
        assert cli(store, "wal-push", str(segment)).returncode == 0
    seven = wal_object(store, "000000010000000000000007")
    shutil.copy(seven, wal_object(store, "000000010000000000000008"))
    proc = cli(store, "wal-fetch", "000000010000000000000008", str(store["base"] / "x"))
    assert proc.returncode == wal.FETCH_ABORT
    assert "authentication failed" in proc.stderr


def test_timeline_history_goes_along_with_the_first_segment_of_its_timeline(
    store: dict,
) -> None:
    """A server promoted with archiving off never archives its .history: the first segment of
    the new timeline brings it, so a later recovery can follow the switch."""
    pg_wal = store["base"] / "pg_wal"
    pg_wal.mkdir()
    history = pg_wal / "00000002.history"
    history.write_text("1\t0/5000000\tbefore 2026-11-30 04:00:00+00\n")
    segment = fake_segment(pg_wal, "000000020000000000000005")
    proc = cli(store, "wal-push", str(segment))
    assert proc.returncode == 0, proc.stderr
    assert "00000002.history" in catalog.archived_wal(catalog_repo(store))
    fetched = store["base"] / "h"
    assert cli(store, "wal-fetch", "00000002.history", str(fetched)).returncode == 0
    assert fetched.read_text() == history.read_text()


def test_wal_fetch_returns_not_found_only_for_a_confirmed_absence(
    store: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    segment = fake_segment(store["base"], "000000010000000000000007")
    assert cli(store, "wal-push", str(segment)).returncode == 0
    dest = str(store["base"] / "RECOVERYXLOG")
    assert cli(store, "wal-fetch", "000000010000000000000099", dest).returncode == 1
    assert cli(store, "wal-fetch", "00000009.history", dest).returncode == 1

    wrong = store["base"] / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    junk = wal_object(store, "000000010000000000000008")
    junk.write_bytes(b"not a wal object")
    unreachable = f"http://127.0.0.1:{free_port()}"
    for args, why in [
        (("--key", f"file:{wrong}", "000000010000000000000007", dest), "wrong master key"),
        (("000000010000000000000008", dest), "not a dbtier WAL object"),
        (("000000010000000000000007", str(store["base"] / "no" / "dir")), "does not exist"),
        (
            ("--repo", f"file://{store['base']}/nonexistent", "000000010000000000000007", dest),
            "does not exist",
        ),
        (
            (
                "--repo",
                "s3://bucket/x",
                "--endpoint-url",
                unreachable,
                "--region",
                "us-east-1",
                "000000010000000000000007",
                dest,
            ),
            "cannot reach S3",
        ),
        (("not-a-wal-name", dest), "not a WAL file name"),
    ]:
        proc = cli(store, "wal-fetch", *args)
        assert proc.returncode == wal.FETCH_ABORT, (args, proc.stdout, proc.stderr)
        assert why in proc.stderr.strip().splitlines()[-1]
    assert not Path(dest).exists()


def test_verify_checks_every_wal_object_a_base_backup_needs(
    base_backup: dict,
    store: dict,
) -> None:
    ok = cli(store, "backup", "verify", base_backup["id"], "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)["wal"]
    assert report["segments_checked"] >= 2
    manifest = catalog.read_manifest(
        catalog_repo(store), keys.load_key_provider(f"file:{store['key']}"), base_backup["id"]
    )
    needed = wal_object(store, manifest.stop_wal_file or "")
    later = wal_object(store, report["through"])
    for path, offset in ((needed, -100), (needed, 40), (later, -100)):
        original = path.read_bytes()
        flip(path, offset)
        try:
            for extra in ((), ("--deep",)):
                proc = cli(store, "backup", "verify", base_backup["id"], *extra)
                assert proc.returncode == 1, proc.stderr
                assert path.name.removesuffix(".zst.enc") in proc.stderr.strip().splitlines()[-1]
        finally:
            path.write_bytes(original)
    # a gap after the backup's end limits PITR: found and named
    after = [n for n in catalog.archived_wal(catalog_repo(store))
             if len(n) == 24 and n > (manifest.stop_wal_file or "")]  # fmt: skip
    assert len(after) >= 2
    wal_object(store, after[0]).unlink()
    proc = cli(store, "backup", "verify", base_backup["id"])
    assert proc.returncode == 1
    assert f"segment {after[0]} is missing" in proc.stderr and "cannot go past" in proc.stderr


# ---------------------------------------------------------------------------------- retention


def synthetic_manifest(kind: str, stopped, start_segment: int = 2) -> Manifest:
    backup_id = catalog.new_backup_id(kind, stopped)
    extra = {}
    if kind == "base":
        start, stop = start_segment * SEG + 0x28, (start_segment + 1) * SEG + 0x100
        extra = {
            "start_lsn": f"{start >> 32:X}/{start & 0xFFFFFFFF:X}",
            "stop_lsn": f"{stop >> 32:X}/{stop & 0xFFFFFFFF:X}",
            "timeline": 1,
            "start_wal_file": catalog.segment_name(1, start_segment),
            "stop_wal_file": catalog.segment_name(1, start_segment + 1),
        }
    return Manifest(
        id=backup_id,
        kind=kind,
        database="db" if kind != "base" else None,
        server_version="15.10",
        system_identifier=SYSID,
        started_at=catalog.iso(stopped - timedelta(minutes=5)),
        stopped_at=catalog.iso(stopped),
        objects=[StoredObject("data.zst.enc", 0, "0" * 64, 0, "0" * 64)],
        encryption={},
        compression={"algorithm": "zstd", "level": 3},
        format="tar" if kind == "base" else "pg_dump-custom",
        tool_version="test",
        host="test",
        **extra,
    )


def store_synthetic(st: Store, manifest: Manifest) -> Manifest:
    """A real backup in the repository (object + sealed manifest) with a chosen date."""
    data_key, wrapped = st.provider.generate_data_key()
    name = manifest.objects[0].key
    up = upload_encrypted(
        st.repo, catalog.object_key(manifest.id, name), io.BytesIO(b"data" * 100), data_key
    )
    manifest.objects = [StoredObject(name, up.size, up.sha256, up.raw_size, up.raw_sha256)]
    manifest.encryption = {"algorithm": "AES-256-GCM", "data_key": wrapped}
    catalog.write_manifest(st.repo, manifest, data_key)
    return manifest


@pytest.fixture
def synthetic_store(store: dict) -> Store:
    st = open_store(settings_of(store))
    st.bind(SYSID)
    for n in range(1, 9):
        wal.push(settings_of(store), str(fake_segment(store["base"], catalog.segment_name(1, n),
                                                      sysid=int(SYSID))))  # fmt: skip
    return st


def test_retention_keeps_the_window_start_and_counts_only_good_backups(
    synthetic_store: Store,
    store: dict,
) -> None:
    now = catalog.now_utc()
    st = synthetic_store
    b1 = store_synthetic(st, synthetic_manifest("base", now - timedelta(days=20), 2))
    b2 = store_synthetic(st, synthetic_manifest("base", now - timedelta(days=10), 4))
    b3 = store_synthetic(st, synthetic_manifest("base", now - timedelta(days=2), 6))

    result = maintenance.cleanup(settings_of(store), days=7, count=0)
    # b2 is the newest base before the cutoff: without it, the window's first days are lost
    assert result["deleted_backups"] == [b1.id]
    assert set(result["kept"]) == {b2.id, b3.id}
    assert catalog.archived_wal(st.repo)[0] == b2.start_wal_file

    # the newest base fails verification: retention keeps the older good one instead
    catalog.write_verification(
        st.repo, b3, st.provider.unwrap(b3.wrapped_key), ok=False, deep=False, error="x"
    )
    result = maintenance.cleanup(settings_of(store), days=0, count=0)
    assert result["kept"] == [b2.id] and result["deleted_backups"] == [b3.id]
    assert result["not_good"] == [b3.id]

    # an incomplete backup (object gone) does not count either
    b4 = store_synthetic(st, synthetic_manifest("base", now - timedelta(hours=1), 7))
    (store["repo"] / "backups" / b4.id / "data.zst.enc").unlink()
    result = maintenance.cleanup(settings_of(store), days=0, count=0, dry_run=True)
    assert result["kept"] == [b2.id] and b4.id in result["deleted_backups"]


def test_a_backup_written_with_another_key_is_broken_and_not_counted(
    synthetic_store: Store,
    store: dict,
) -> None:
    now = catalog.now_utc()
    good = store_synthetic(synthetic_store, synthetic_manifest("logical", now - timedelta(days=3)))
    other = store["base"] / "other.key"
    other.write_bytes(os.urandom(32))
    intruder = Store(synthetic_store.repo, keys.load_key_provider(f"file:{other}"),
                     synthetic_store.settings)  # fmt: skip
    newer = store_synthetic(intruder, synthetic_manifest("logical", now - timedelta(days=1)))
    found = catalog.scan(synthetic_store.repo, synthetic_store.provider)
    assert [m.id for m in found.backups] == [good.id]
    assert [b.id for b in found.broken] == [newer.id]
    assert "wrong master key" in found.broken[0].reason
    result = maintenance.cleanup(settings_of(store), days=0, count=0)
    assert result["kept"] == [good.id] and result["deleted_broken"] == [newer.id]


def test_cleanup_removes_debris_of_killed_backups_after_the_grace_period(
    synthetic_store: Store,
    store: dict,
) -> None:
    repo = synthetic_store.repo
    old_id = catalog.new_backup_id("base", catalog.now_utc() - timedelta(days=3))
    new_id = catalog.new_backup_id("logical", catalog.now_utc())
    repo.put_bytes(catalog.object_key(old_id, "base.tar.zst.enc"), b"half")
    repo.put_bytes(catalog.object_key(new_id, "dump.pgc.zst.enc"), b"running")
    scratch = store["repo"] / "backups" / new_id / ".tmp-dump.pgc.zst.enc.x1"
    scratch.write_bytes(b"killed writer")
    past = time.time() - 2 * 86400
    os.utime(scratch, (past, past))
    proc = cli(store, "backup", "cleanup", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["deleted_orphans"] == [old_id]
    assert result["deleted_debris"] == [f"tmp-file:backups/{new_id}/.tmp-dump.pgc.zst.enc.x1"]
    assert not (store["repo"] / "backups" / old_id).exists()
    assert (store["repo"] / "backups" / new_id / "dump.pgc.zst.enc").exists()  # may be running
    assert not scratch.exists()


def test_killed_job_is_not_left_running_in_backup_history(
    source_db: str,
    store: dict,
) -> None:
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 2e6) g"
        )
    proc = subprocess.Popen(
        [str(VENV_BIN / "dbtier"), "backup", "full"],
        env={**os.environ, "DBTIER_CONFIG": str(store["config"]), "DATABASE_URL": source_db},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(source_db, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT status FROM backup_history").fetchone()
            if row and list(store["repo"].glob("backups/*/.tmp-*")):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert conn.execute("SELECT status FROM backup_history").fetchone() == ("running",)
        time.sleep(1.1)  # backup ids have one-second resolution
        again = cli(store, "backup", "full", dsn=source_db)
        assert again.returncode == 0, again.stderr
        rows = conn.execute("SELECT status, error FROM backup_history ORDER BY id").fetchall()
    assert rows[0][0] == "failed" and f"process {proc.pid}" in rows[0][1]
    assert rows[1] == ("completed", None)


def test_pitr_uses_an_older_good_base_when_the_newest_failed_verification(
    base_backup: dict, store: dict
) -> None:
    time.sleep(1.1)
    made = cli(store, "backup", "base", "--json", dsn=base_backup["dsn"])
    assert made.returncode == 0, made.stderr
    newest = json.loads(made.stdout)["backup_id"]
    time.sleep(1.1)
    target = catalog.iso(catalog.now_utc())
    time.sleep(1.1)
    with psycopg.connect(base_backup["dsn"], autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    wait_archived(base_backup["dsn"], switch_wal(base_backup["dsn"]))
    plan = cli(store, "restore", "pitr", "--target-time", target, "--data-dir",
               str(store["base"] / "never"), "--dry-run", "--json")  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["base_backup"] == newest
    # its object loses a byte on disk: verify says so, and PITR (and retention) stop using it
    obj = store["repo"] / "backups" / newest / "base.tar.zst.enc"
    obj.write_bytes(obj.read_bytes()[:-1])
    assert cli(store, "backup", "verify", newest).returncode == 1
    plan = cli(store, "restore", "pitr", "--target-time", target, "--data-dir",
               str(store["base"] / "never"), "--dry-run", "--json")  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["base_backup"] == base_backup["id"]
    assert "pitr.skipped_bad_base" in plan.stderr
