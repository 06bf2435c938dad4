"""Repositories (file:// and S3 on a real moto_server) and the encrypted up/download pipeline."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from dbtier.crypto import IntegrityError
from dbtier.errors import DbtierError, UsageError
from dbtier.pipeline import download_decrypted, upload_encrypted, verify_object
from dbtier.repository import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    FileRepository,
    ObjectNotFound,
    Repository,
    S3Repository,
    max_stream_size,
    open_repository,
    part_size_for,
)
from tests.support.moto_server import MotoServer, free_port

MiB = 1 << 20
GiB = 1 << 30
DATA_KEY = bytes(range(32, 64))
ROOT = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FailingSource(io.RawIOBase):
    """Returns `good` bytes of random data, then raises: a source dying mid-stream."""

    def __init__(self, good: int) -> None:
        self._left = good

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self._left <= 0:
            raise RuntimeError("source died half way")
        n = min(self._left, size if size and size > 0 else MiB)
        self._left -= n
        return os.urandom(n)


# -- the part-size schedule (pure) ---------------------------------------------------------


def test_part_size_schedule() -> None:
    assert part_size_for(1) == 8 * MiB
    assert part_size_for(1000) == 8 * MiB
    assert part_size_for(1001) == 16 * MiB
    assert part_size_for(2001) == 32 * MiB
    assert part_size_for(9001) == 4 * GiB
    assert part_size_for(MAX_PARTS) == 4 * GiB
    assert part_size_for(1, base=5 * MiB) == 5 * MiB
    assert part_size_for(50_000) == MAX_PART_SIZE  # capped
    sizes = [part_size_for(n) for n in range(1, MAX_PARTS + 1)]
    assert sizes == sorted(sizes)
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in sizes)
    with pytest.raises(ValueError):
        part_size_for(0)


def test_schedule_reaches_far_beyond_fixed_parts() -> None:
    # Fixed 8 MiB parts stop at 78 GiB; the growing schedule passes S3's 5 TiB object limit.
    fixed_limit = DEFAULT_PART_SIZE * MAX_PARTS
    assert fixed_limit < 80 * GiB
    assert max_stream_size() == 8 * MiB * 1000 * 1023
    assert max_stream_size() > 5 * 1024 * GiB


# -- URLs ----------------------------------------------------------------------------------


def test_open_repository_urls(tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path}/repo")
    assert isinstance(repo, FileRepository)
    assert repo.describe() == f"file://{tmp_path}/repo"
    s3 = open_repository("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Repository)
    assert (s3.bucket, s3.prefix, s3.describe()) == (
        "bucket",
        "some/prefix",
        "s3://bucket/some/prefix",
    )
    for bad in (
        "file://relative/path",
        "http://example.com/x",
        "/abs/path",
        "s3://",
        "s3://a:b@bucket/x",
    ):
        with pytest.raises(UsageError):
            open_repository(bad)


def test_secrets_never_echoed_from_s3_url() -> None:
    with pytest.raises(UsageError) as caught:
        open_repository("s3://AKIAXXXX:supersecret@bucket/prefix")
    assert "supersecret" not in str(caught.value)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../x", "a/./b", "a/.tmp-x"])
def test_invalid_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(UsageError, match="invalid object key"):
        FileRepository(tmp_path).put_bytes(key, b"x")


# -- behaviour common to both backends -----------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "DBTIER_AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    return boto3.client("s3", **moto.client_kwargs())


def new_bucket(s3: Any) -> str:
    name = f"dbtier-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def s3_repo(moto: MotoServer, s3: Any, **kwargs: Any) -> S3Repository:
    repo = open_repository(
        f"s3://{new_bucket(s3)}/backups-root", endpoint_url=moto.url, region="us-east-1", **kwargs
    )
    assert isinstance(repo, S3Repository)
    return repo


@pytest.fixture(params=["file", "s3"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    if request.param == "file":
        (tmp_path / "repo").mkdir()
        return open_repository(f"file://{tmp_path}/repo")
    moto = request.getfixturevalue("moto")
    return s3_repo(moto, request.getfixturevalue("s3"))


def test_basic_operations(repo: Repository) -> None:
    info = repo.put_bytes("backups/b1/manifest.json", b'{"id": "b1"}')
    assert (info.key, info.size, info.sha256) == (
        "backups/b1/manifest.json",
        12,
        sha(b'{"id": "b1"}'),
    )
    repo.put_stream("backups/b1/dump", io.BytesIO(b"dump bytes"))
    repo.put_stream("backups/b2/dump", [b"par", b"ts", b""])
    repo.put_bytes("wal/000000010000000000000001", b"")
    assert repo.get_bytes("backups/b2/dump") == b"parts"
    assert repo.exists("backups/b1/dump")
    assert not repo.exists("backups/nope")
    assert repo.size("backups/b1/dump") == 10
    assert repo.size("wal/000000010000000000000001") == 0
    assert repo.size("backups/nope") is None
    assert repo.list("backups/") == [
        "backups/b1/dump",
        "backups/b1/manifest.json",
        "backups/b2/dump",
    ]
    assert repo.list("backups/b1") == ["backups/b1/dump", "backups/b1/manifest.json"]
    assert repo.list("wal/") == ["wal/000000010000000000000001"]
    assert repo.list("nothing/") == []
    with repo.open_read("backups/b1/dump") as handle:
        assert handle.read(4) == b"dump"
        assert handle.read() == b" bytes"
    repo.put_bytes("backups/b1/dump", b"replaced")
    assert repo.get_bytes("backups/b1/dump") == b"replaced"
    repo.delete("backups/b2/dump")
    repo.delete("backups/b2/dump")  # deleting a missing key is fine
    assert repo.list("backups/") == ["backups/b1/dump", "backups/b1/manifest.json"]
    repo.delete_many(["backups/b1/dump", "backups/b1/manifest.json"])
    assert repo.list("") == ["wal/000000010000000000000001"]
    with pytest.raises(ObjectNotFound, match=r"^object backups/b1/dump not found in "):
        repo.open_read("backups/b1/dump")


def test_interrupted_put_leaves_nothing(repo: Repository) -> None:
    repo.put_bytes("backups/keep", b"old")

    def source() -> Iterator[bytes]:
        yield os.urandom(MiB)
        raise RuntimeError("source died half way")

    with pytest.raises(RuntimeError, match="half way"):
        repo.put_stream("backups/new", source())
    with pytest.raises(RuntimeError):
        repo.put_stream("backups/keep", source())
    assert repo.list("") == ["backups/keep"]
    assert repo.get_bytes("backups/keep") == b"old"  # never half-replaced


def test_encrypted_round_trip_and_tamper(repo: Repository) -> None:
    data = os.urandom(3 * MiB) + b"compressible " * 300_000
    up = upload_encrypted(repo, "backups/b1/dump.zst.enc", io.BytesIO(data), DATA_KEY, level=3)
    assert (up.raw_size, up.raw_sha256) == (len(data), sha(data))
    assert up.size == repo.size("backups/b1/dump.zst.enc")
    assert up.size < len(data)
    stored = repo.get_bytes("backups/b1/dump.zst.enc")
    assert up.sha256 == sha(stored)

    out = io.BytesIO()
    down = download_decrypted(
        repo, up.key, out, DATA_KEY, expected_sha256=up.sha256, expected_size=up.size
    )
    assert out.getvalue() == data
    assert (down.size, down.sha256, down.raw_size, down.raw_sha256) == (
        up.size,
        up.sha256,
        up.raw_size,
        up.raw_sha256,
    )
    assert verify_object(repo, up.key, DATA_KEY, up.sha256).raw_sha256 == sha(data)

    # One flipped byte in the middle of the stored object: named object, named chunk.
    tampered = bytearray(stored)
    tampered[len(stored) // 2] ^= 0x04
    repo.put_bytes(up.key, bytes(tampered))
    with pytest.raises(
        IntegrityError, match=r"^object backups/b1/dump.zst.enc: authentication failed at chunk \d+"
    ):
        verify_object(repo, up.key, DATA_KEY, up.sha256)
    # Truncated: the size check fires before a byte is decrypted; without it, the stream does.
    repo.put_bytes(up.key, stored[: len(stored) - 100])
    with pytest.raises(IntegrityError, match="size mismatch"):
        verify_object(repo, up.key, DATA_KEY, up.sha256, expected_size=up.size)
    with pytest.raises(IntegrityError, match=r"^object backups/b1/dump.zst.enc: stream truncated"):
        verify_object(repo, up.key, DATA_KEY, up.sha256)
    # Intact object, manifest says otherwise.
    repo.put_bytes(up.key, stored)
    with pytest.raises(
        IntegrityError, match=r"checksum mismatch \(stored [0-9a-f]{64}, manifest 00"
    ):
        verify_object(repo, up.key, DATA_KEY, "00" * 32)
    with pytest.raises(IntegrityError, match="authentication failed at chunk 0"):
        verify_object(repo, up.key, os.urandom(32), up.sha256)


def test_unhashed_content_is_still_checked_by_the_zstd_frame_checksum(repo: Repository) -> None:
    """hash_raw=False (base backups): no raw SHA-256, and still a plaintext that differs from
    what was compressed is refused. Here the frame's XXH64 is damaged *before* encryption, so
    every GCM tag and the stored SHA-256 are right and only the content checksum can tell."""
    import zstandard

    from dbtier.compression import compressor
    from dbtier.crypto import EncryptingWriter

    data = os.urandom(MiB) + b"compressible " * 100_000
    up = upload_encrypted(repo, "backups/b2/base.tar.zst.enc", io.BytesIO(data), DATA_KEY,
                          hash_raw=False)  # fmt: skip
    assert up.raw_sha256 is None and up.raw_size == len(data)
    out = io.BytesIO()
    down = download_decrypted(repo, up.key, out, DATA_KEY, up.sha256, hash_raw=False)
    assert out.getvalue() == data and down.raw_sha256 is None and down.raw_size == len(data)
    # A manifest with a raw SHA-256 (older backups) is checked against it even so.
    with pytest.raises(IntegrityError, match="content checksum mismatch"):
        download_decrypted(repo, up.key, None, DATA_KEY, expected_raw_sha256="0" * 64,
                           hash_raw=False)  # fmt: skip

    frame = bytearray(compressor(3, 0).compress(data))
    assert zstandard.get_frame_parameters(bytes(frame)).has_checksum
    frame[-1] ^= 0x01  # the last 4 bytes are the XXH64 content checksum
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, DATA_KEY, context=up.key.encode())
    writer.write(bytes(frame))
    writer.close()
    info = repo.put_stream(up.key, io.BytesIO(sink.getvalue()))
    with pytest.raises(IntegrityError, match="decompression failed"):
        verify_object(repo, up.key, DATA_KEY, info.sha256, hash_raw=False)


def test_empty_source_round_trip(repo: Repository) -> None:
    up = upload_encrypted(repo, "wal/empty", io.BytesIO(b""), DATA_KEY)
    out = io.BytesIO()
    download_decrypted(repo, "wal/empty", out, DATA_KEY, up.sha256)
    assert out.getvalue() == b""
    assert up.raw_sha256 == sha(b"")


def test_upload_interrupted_mid_stream_leaves_no_object(repo: Repository) -> None:
    with pytest.raises(RuntimeError, match="half way"):
        upload_encrypted(repo, "backups/b9/dump.zst.enc", FailingSource(12 * MiB), DATA_KEY)
    assert repo.list("") == []


def test_copy_between_repositories(repo: Repository, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    repo.put_bytes("backups/b1/obj", data)
    (tmp_path / "dr").mkdir()
    (tmp_path / "back").mkdir()
    other = FileRepository(tmp_path / "dr")
    repo.copy_to(other, "backups/b1/obj")
    assert other.get_bytes("backups/b1/obj") == data
    back = FileRepository(tmp_path / "back")
    other.copy_to(back, "backups/b1/obj")
    assert back.get_bytes("backups/b1/obj") == data


# -- file:// specifics ---------------------------------------------------------------------


def test_file_repository_killed_writer_leaves_no_visible_key(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    marker = tmp_path / "writing"
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from dbtier.repository import FileRepository

        def source():
            yield os.urandom(1 << 20)
            Path({str(marker)!r}).touch()
            time.sleep(60)
            yield b"never"

        FileRepository(Path({str(root)!r})).put_stream("backups/b1/dump", source())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    repo = FileRepository(root)
    leftovers = [p.name for p in (root / "backups" / "b1").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-dump.")
    assert repo.list("") == []
    assert not repo.exists("backups/b1/dump")
    # cleanup's debris sweep finds it once older than its grace period, and only then
    assert repo.debris(older_than=3600) == []
    [item] = repo.debris(older_than=0)
    assert item.what == "tmp-file" and item.key.startswith("backups/b1/.tmp-dump.")
    repo.remove_debris(item)
    assert not (root / "backups" / "b1").exists() or not any((root / "backups" / "b1").iterdir())


def test_file_repository_prunes_empty_dirs(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    repo = FileRepository(tmp_path / "repo")
    repo.put_bytes("backups/b1/a", b"1")
    repo.put_bytes("backups/b2/a", b"2")
    repo.delete("backups/b1/a")
    assert not (tmp_path / "repo" / "backups" / "b1").exists()
    assert (tmp_path / "repo" / "backups" / "b2").is_dir()


def test_file_repository_write_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "backups").write_text("a file where a directory should be")
    with pytest.raises(DbtierError, match=r"^cannot write backups/b1/x in file://"):
        FileRepository(tmp_path / "repo").put_bytes("backups/b1/x", b"x")


def test_missing_file_repository_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    """An unmounted or mistyped path must never read as "no backups" or "WAL not archived"."""
    repo = open_repository(f"file://{tmp_path}/nonexistent")
    for action in (
        lambda: repo.list("backups/"),
        lambda: repo.exists("wal/x"),
        lambda: repo.open_read("wal/x"),
        lambda: repo.put_bytes("backups/b1/x", b"x"),
    ):
        with pytest.raises(UsageError, match="does not exist or is not a directory"):
            action()
    assert not (tmp_path / "nonexistent").exists()


def test_new_directories_are_created_and_synced(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    repo = FileRepository(tmp_path / "repo")
    repo.put_bytes("backups/b1/deep/x", b"x")
    assert (tmp_path / "repo" / "backups" / "b1" / "deep" / "x").read_bytes() == b"x"


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_create_if_absent_has_exactly_one_winner(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Concurrent create-if-absent writers of one key, for real: one wins, the rest get
    ObjectExists, and the stored object is the winner's, whole."""
    from concurrent.futures import ThreadPoolExecutor

    from dbtier.repository import ObjectExists

    if backend == "file":
        (tmp_path / "repo").mkdir()
        repo: Repository = FileRepository(tmp_path / "repo")
    else:
        repo = s3_repo(request.getfixturevalue("moto"), request.getfixturevalue("s3"))
    for round_ in range(10):
        key = f"wal/race-{round_}"
        payloads = [bytes([i]) * (MiB + i) for i in range(6)]

        def write(data: bytes, key: str = key) -> bytes | None:
            try:
                repo.put_bytes(key, data, if_absent=True)
            except ObjectExists:
                return None
            return data

        with ThreadPoolExecutor(max_workers=6) as pool:
            winners = [w for w in pool.map(write, payloads) if w is not None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} writers won"
        assert repo.get_bytes(key) == winners[0]
    with pytest.raises(ObjectExists):
        repo.put_bytes("wal/race-0", b"late", if_absent=True)
    repo.put_bytes("wal/race-0", b"overwrite")  # plain writes still replace
    assert repo.get_bytes("wal/race-0") == b"overwrite"


# -- S3 specifics --------------------------------------------------------------------------


def uploads_in_progress(s3: Any, bucket: str) -> list[Any]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_multipart_upload(moto: MotoServer, s3: Any) -> None:
    repo = s3_repo(moto, s3, storage_class="STANDARD_IA", part_size=5 * MiB)
    data = os.urandom(23 * MiB + 17)
    info = repo.put_stream("backups/b1/big", io.BytesIO(data))
    assert (info.size, info.sha256) == (len(data), sha(data))
    head = s3.head_object(Bucket=repo.bucket, Key="backups-root/backups/b1/big")
    assert head["ETag"].strip('"').endswith("-5")  # 5 parts: 4 x 5 MiB + the rest
    assert head["StorageClass"] == "STANDARD_IA"
    assert repo.get_bytes("backups/b1/big") == data
    assert uploads_in_progress(s3, repo.bucket) == []


@pytest.mark.parametrize(("size", "parts"), [(5 * MiB, 0), (10 * MiB, 2), (5 * MiB + 1, 2)])
def test_s3_part_boundaries(moto: MotoServer, s3: Any, size: int, parts: int) -> None:
    repo = s3_repo(moto, s3, part_size=5 * MiB)
    data = os.urandom(size)
    # Odd-sized chunks from an iterable: parts must still be cut at exact part sizes.
    info = repo.put_stream("obj", (data[i : i + 777_777] for i in range(0, size, 777_777)))
    assert info.sha256 == sha(data)
    etag = s3.head_object(Bucket=repo.bucket, Key="backups-root/obj")["ETag"].strip('"')
    assert etag.endswith(f"-{parts}") if parts else "-" not in etag
    assert repo.get_bytes("obj") == data


def test_s3_small_object_single_put_with_storage_class(moto: MotoServer, s3: Any) -> None:
    repo = s3_repo(moto, s3, storage_class="STANDARD_IA")
    repo.put_bytes("m.json", b"{}")
    head = s3.head_object(Bucket=repo.bucket, Key="backups-root/m.json")
    assert head["StorageClass"] == "STANDARD_IA"


def test_s3_killed_upload_leaves_no_object_and_no_multipart(moto: MotoServer, s3: Any) -> None:
    repo = s3_repo(moto, s3, part_size=5 * MiB)
    with pytest.raises(RuntimeError, match="half way"):
        repo.put_stream("backups/b1/big", FailingSource(17 * MiB))
    with pytest.raises(RuntimeError, match="half way"):
        upload_encrypted(repo, "backups/b2/dump.zst.enc", FailingSource(14 * MiB), DATA_KEY)
    assert repo.list("") == []
    assert uploads_in_progress(s3, repo.bucket) == []


def test_s3_failed_part_aborts_and_names_the_key(moto: MotoServer, s3: Any) -> None:
    repo = s3_repo(moto, s3, part_size=5 * MiB)
    s3.delete_bucket(Bucket=repo.bucket)
    repo._probed = True  # the bucket vanished after the probe: fail inside the upload
    with pytest.raises(DbtierError, match=r"backups/b1/big.*NoSuchBucket"):
        repo.put_stream("backups/b1/big", io.BytesIO(os.urandom(11 * MiB)))


def test_s3_server_side_copy(moto: MotoServer, s3: Any) -> None:
    src = s3_repo(moto, s3)
    dr = s3_repo(moto, s3, storage_class="STANDARD_IA")
    data = os.urandom(3 * MiB)
    src.put_bytes("backups/b1/obj", data)
    src.copy_to(dr, "backups/b1/obj")
    assert dr.get_bytes("backups/b1/obj") == data
    head = s3.head_object(Bucket=dr.bucket, Key="backups-root/backups/b1/obj")
    assert head["StorageClass"] == "STANDARD_IA"
    with pytest.raises(DbtierError, match="backups/b1/missing"):
        src.copy_to(dr, "backups/b1/missing")


def test_s3_missing_bucket(moto: MotoServer) -> None:
    repo = open_repository("s3://no-such-bucket-dbtier/x", endpoint_url=moto.url)
    with pytest.raises(DbtierError, match=r"^S3 bucket no-such-bucket-dbtier does not exist"):
        repo.exists("k")


def test_s3_unreachable_endpoint_fails_fast() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    repo = open_repository("s3://bucket/prefix", endpoint_url=endpoint, region="us-east-1")
    started = time.monotonic()
    for action in (
        lambda: repo.exists("k"),
        lambda: repo.put_bytes("k", b"x"),
        lambda: repo.list(""),
    ):
        with pytest.raises(DbtierError) as caught:
            action()
        assert str(caught.value) == f"cannot reach S3 at {endpoint}: connection refused"
    assert time.monotonic() - started < 30


def test_s3_no_credentials(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    repo = open_repository("s3://bucket/x", endpoint_url=moto.url)
    with pytest.raises(UsageError, match="no AWS credentials"):
        repo.exists("k")


def test_endpoint_from_environment(
    moto: MotoServer, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(s3)
    monkeypatch.setenv("DBTIER_AWS_ENDPOINT_URL", moto.url)
    repo = open_repository(f"s3://{bucket}")
    repo.put_bytes("k", b"v")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_file_objects_get_the_umask_mode(tmp_path: Path) -> None:
    """Hosts sharing a repository through a group read what another host wrote."""
    old = os.umask(0o007)
    try:
        import dbtier.repository as repository

        repository._UMASK = None  # read the umask this test set
        FileRepository(tmp_path).put_bytes("wal/000000010000000000000001.json", b"{}")
    finally:
        os.umask(old)
        repository._UMASK = None
    mode = (tmp_path / "wal" / "000000010000000000000001.json").stat().st_mode & 0o777
    assert mode == 0o660


class BlackholeProxy:
    """TCP proxy to a real endpoint that, once cut, keeps every connection open and silent:
    the network failure where an endpoint accepts and never answers."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.cut = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._held: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._held.append(client)
            if self.cut.is_set():
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._held.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        while not self.cut.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data or self.cut.is_set():
                return  # once cut, the bytes vanish and the peer waits forever
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for sock in self._held:
            sock.close()


def test_s3_endpoint_that_never_answers_fails_within_bounds(
    moto: MotoServer, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbtier import repository

    monkeypatch.setattr(repository, "S3_READ_TIMEOUT", 2)  # the real defaults: 20 s x 4
    bucket = new_bucket(s3)
    proxy = BlackholeProxy(int(moto.url.rsplit(":", 1)[1]))
    try:
        silent = BlackholeProxy(int(moto.url.rsplit(":", 1)[1]))
        silent.cut.set()
        repo = open_repository(
            f"s3://{bucket}/p", endpoint_url=f"http://127.0.0.1:{silent.port}", region="us-east-1"
        )
        started = time.monotonic()
        with pytest.raises(DbtierError, match=r"no answer from .* within 2s"):
            repo.list("")
        assert time.monotonic() - started < 15
        silent.close()

        # a line cut in the middle of a multipart upload is noticed in bounded time too
        repo = open_repository(
            f"s3://{bucket}/p",
            endpoint_url=f"http://127.0.0.1:{proxy.port}",
            region="us-east-1",
            part_size=5 * MiB,
        )
        assert repo.list("") == []

        def source() -> Iterator[bytes]:
            yield os.urandom(6 * MiB)
            proxy.cut.set()
            yield os.urandom(6 * MiB)

        started = time.monotonic()
        with pytest.raises(DbtierError, match="backups/b1/dump"):
            repo.put_stream("backups/b1/dump", source())
        assert time.monotonic() - started < 60
    finally:
        proxy.close()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
