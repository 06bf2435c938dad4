"""Chunked AES-256-GCM streams, zstd, and envelope keys (file, env, KMS on a real moto_server)."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from dbtier import keys
from dbtier.compression import compress_stream, compressor, decompress_stream
from dbtier.crypto import (
    CHUNK_SIZE,
    FINAL_OVERHEAD,
    HEADER_SIZE,
    OVERHEAD,
    DecryptingReader,
    EncryptingWriter,
    IntegrityError,
    encrypted_size,
)
from dbtier.errors import DbtierError, UsageError
from tests.support.moto_server import MotoServer

KEY = bytes(range(32))
SMALL = 1024  # chunk size for tamper tests: many chunks from little data


def encrypt(data: bytes, key: bytes = KEY, chunk_size: int = CHUNK_SIZE) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(out, key, chunk_size)
    # Uneven writes: chunking must not depend on how the caller slices its data.
    for start in range(0, len(data), 300_001):
        writer.write(data[start : start + 300_001])
    writer.close()
    return out.getvalue()


def decrypt(blob: bytes, key: bytes = KEY, read_size: int = 65536) -> bytes:
    reader = DecryptingReader(io.BytesIO(blob), key)
    parts = []
    while chunk := reader.read(read_size):
        parts.append(chunk)
    assert reader.complete
    return b"".join(parts)


def chunk_bounds(blob: bytes, chunk_size: int) -> list[tuple[int, int]]:
    bounds, pos = [], HEADER_SIZE
    while pos < len(blob):
        end = min(pos + chunk_size + OVERHEAD, len(blob))  # the final chunk is shorter
        bounds.append((pos, end))
        pos = end
    return bounds


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 5 * CHUNK_SIZE + 12345],
    ids=["empty", "1-byte", "chunk-1", "chunk", "chunk+1", "3-chunks", "multi-MB"],
)
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data)
    assert blob[:8] == b"DBTIERE2"
    assert len(blob) == encrypted_size(size)
    assert decrypt(blob) == data
    assert decrypt(blob, read_size=7) == data[: len(data)]


def test_empty_stream_still_has_an_authenticated_final_chunk() -> None:
    blob = encrypt(b"")
    assert len(blob) == HEADER_SIZE + FINAL_OVERHEAD
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(blob[:HEADER_SIZE])


def test_same_plaintext_encrypts_differently() -> None:
    assert encrypt(b"x" * 100) != encrypt(b"x" * 100)  # random stream id and nonces


def test_readall_and_readinto() -> None:
    data = os.urandom(3 * SMALL + 5)
    blob = encrypt(data, chunk_size=SMALL)
    assert DecryptingReader(io.BytesIO(blob), KEY).read() == data
    buf = bytearray(len(data) + 10)
    reader = DecryptingReader(io.BytesIO(blob), KEY)
    got = 0
    while n := reader.readinto(memoryview(buf)[got:]):
        got += n
    assert bytes(buf[:got]) == data


# -- tampering -----------------------------------------------------------------------------


def test_flipped_byte_names_the_chunk() -> None:
    blob = bytearray(encrypt(os.urandom(10 * SMALL), chunk_size=SMALL))
    start, _end = chunk_bounds(bytes(blob), SMALL)[4]
    blob[start + 100] ^= 0x01
    with pytest.raises(IntegrityError, match=r"^authentication failed at chunk 4 \(corrupted"):
        decrypt(bytes(blob))


@pytest.mark.parametrize("where", ["nonce", "tag", "last-byte"])
def test_any_flipped_bit_is_detected(where: str) -> None:
    blob = bytearray(encrypt(os.urandom(2 * SMALL + 9), chunk_size=SMALL))
    start, end = chunk_bounds(bytes(blob), SMALL)[1]
    offset = {"nonce": start + 1, "tag": end - 1, "last-byte": len(blob) - 1}[where]
    blob[offset] ^= 0x80
    with pytest.raises(IntegrityError, match="authentication failed at chunk"):
        decrypt(bytes(blob))


def test_truncation_at_a_chunk_boundary() -> None:
    blob = encrypt(os.urandom(4 * SMALL + 10), chunk_size=SMALL)
    last_start, _ = chunk_bounds(blob, SMALL)[-1]
    with pytest.raises(IntegrityError, match=r"^stream truncated \(no final chunk\)$"):
        decrypt(blob[:last_start])


@pytest.mark.parametrize("cut", [1, 3, 500, SMALL + OVERHEAD - 1])
def test_truncation_inside_a_chunk(cut: int) -> None:
    blob = encrypt(os.urandom(4 * SMALL + 10), chunk_size=SMALL)
    with pytest.raises(IntegrityError, match=r"^stream truncated \(incomplete chunk 2\)$"):
        decrypt(blob[: HEADER_SIZE + 2 * (SMALL + OVERHEAD) + cut])


def test_truncation_inside_the_final_chunk() -> None:
    blob = encrypt(os.urandom(4 * SMALL + 10), chunk_size=SMALL)
    for cut in (1, 3, 20):
        with pytest.raises(IntegrityError, match=r"^stream truncated \(incomplete chunk 4\)$"):
            decrypt(blob[:-cut])


def test_truncation_of_exact_multiple_drops_empty_final_chunk() -> None:
    # 3 full chunks + an empty final one: dropping the final chunk must not go unnoticed.
    blob = encrypt(os.urandom(3 * SMALL), chunk_size=SMALL)
    with pytest.raises(IntegrityError, match="stream truncated"):
        decrypt(blob[:-OVERHEAD])


def test_swapped_chunks_are_detected() -> None:
    blob = encrypt(os.urandom(5 * SMALL + 3), chunk_size=SMALL)
    b = chunk_bounds(blob, SMALL)
    c1, c2 = blob[b[1][0] : b[1][1]], blob[b[2][0] : b[2][1]]
    swapped = blob[: b[1][0]] + c2 + c1 + blob[b[2][1] :]
    assert len(swapped) == len(blob)
    with pytest.raises(IntegrityError, match="authentication failed at chunk 1"):
        decrypt(swapped)


def test_dropped_middle_chunk_is_detected() -> None:
    blob = encrypt(os.urandom(5 * SMALL + 3), chunk_size=SMALL)
    b = chunk_bounds(blob, SMALL)
    with pytest.raises(IntegrityError, match="authentication failed at chunk 2"):
        decrypt(blob[: b[2][0]] + blob[b[3][0] :])


def test_chunk_from_another_stream_is_detected() -> None:
    data = os.urandom(3 * SMALL + 1)
    one, two = encrypt(data, chunk_size=SMALL), encrypt(data, chunk_size=SMALL)
    b = chunk_bounds(one, SMALL)
    spliced = one[: b[1][0]] + two[b[1][0] : b[1][1]] + one[b[1][1] :]
    with pytest.raises(IntegrityError, match="authentication failed at chunk 1"):
        decrypt(spliced)


@pytest.mark.parametrize("size", [0, SMALL + 1, 2 * SMALL])
def test_trailing_data_after_final_chunk(size: int) -> None:
    blob = encrypt(os.urandom(size), chunk_size=SMALL)
    for extra in (b"\x00", blob):  # one stray byte; a second stream appended
        with pytest.raises(IntegrityError, match=r"^trailing data after final chunk$"):
            decrypt(blob + extra)


def test_flipped_chunk_marker_is_detected() -> None:
    blob = bytearray(encrypt(os.urandom(3 * SMALL + 1), chunk_size=SMALL))
    start, _ = chunk_bounds(bytes(blob), SMALL)[1]
    for value in (1, 7):
        tampered = bytearray(blob)
        tampered[start] = value
        with pytest.raises(IntegrityError, match="chunk 1"):
            decrypt(bytes(tampered))
    last, _ = chunk_bounds(bytes(blob), SMALL)[-1]
    blob[last] = 0  # final chunk claims "more follow"
    with pytest.raises(IntegrityError, match=r"(chunk 3|truncated)"):
        decrypt(bytes(blob))


def test_bad_header() -> None:
    with pytest.raises(IntegrityError, match="bad magic"):
        decrypt(b"NOTDBTIER" + b"\x00" * 64)
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(b"")
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(b"DBTIERE2\x00")
    huge = b"DBTIERE2" + struct.pack(">I", 1 << 31) + b"\x00" * 16
    with pytest.raises(IntegrityError, match="chunk size"):
        decrypt(huge)


def test_stream_is_bound_to_its_object_key() -> None:
    """An object copied over another one (same data key, other key) fails authentication."""
    out = io.BytesIO()
    with EncryptingWriter(out, KEY, SMALL, context=b"wal/000000010000000000000007.zst.enc") as w:
        w.write(b"x" * 5000)
    blob = out.getvalue()
    good = DecryptingReader(io.BytesIO(blob), KEY, context=b"wal/000000010000000000000007.zst.enc")
    assert good.readall() == b"x" * 5000
    swapped = DecryptingReader(
        io.BytesIO(blob), KEY, context=b"wal/000000010000000000000008.zst.enc"
    )
    with pytest.raises(IntegrityError, match="authentication failed at chunk 0"):
        swapped.readall()


def test_format_1_stream_is_refused_by_name() -> None:
    with pytest.raises(IntegrityError, match="format 1"):
        decrypt(b"DBTIERE1" + b"\x00" * 64)


def test_wrong_data_key() -> None:
    blob = encrypt(b"secret" * 100)
    with pytest.raises(IntegrityError, match=r"authentication failed at chunk 0 .*wrong key"):
        decrypt(blob, key=os.urandom(32))


def test_interrupted_writer_never_seals_the_stream() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), EncryptingWriter(out, KEY, SMALL) as writer:
        writer.write(os.urandom(2 * SMALL + 5))
        raise RuntimeError("source died")
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(out.getvalue())


def test_integrity_error_is_a_one_line_dbtier_error() -> None:
    assert issubclass(IntegrityError, DbtierError)


# -- compression ---------------------------------------------------------------------------


def test_zstd_stream_round_trip_multithreaded() -> None:
    data = b"".join(b"row %d some repeated text\n" % i for i in range(200_000))
    packed, restored = io.BytesIO(), io.BytesIO()
    read, written = compress_stream(io.BytesIO(data), packed, level=3, threads=-1)
    assert (read, written) == (len(data), len(packed.getvalue()))
    assert written < len(data) / 5
    decompress_stream(io.BytesIO(packed.getvalue()), restored)
    assert restored.getvalue() == data


@pytest.mark.parametrize("level", [0, 23, -5])
def test_bad_compression_level_is_a_usage_error(level: int) -> None:
    with pytest.raises(UsageError, match="compression level"):
        compressor(level)


# -- local master keys ---------------------------------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    path.write_bytes(os.urandom(32))
    return path


def test_file_key_round_trip_raw_and_base64(key_file: Path, tmp_path: Path) -> None:
    provider = keys.load_key_provider(f"file:{key_file}")
    data_key, wrapped = provider.generate_data_key()
    assert len(data_key) == 32
    assert json.loads(json.dumps(wrapped)) == wrapped
    assert wrapped["provider"] == "file"
    assert wrapped["algorithm"] == "AES-256-GCM"
    assert wrapped["key_id"] == provider.fingerprint()
    assert len(wrapped["key_id"]) == 16
    assert provider.unwrap(wrapped) == data_key

    b64 = tmp_path / "master.b64"
    b64.write_text(base64.b64encode(key_file.read_bytes()).decode() + "\n")
    same = keys.load_key_provider(f"file:{b64}")
    assert same.fingerprint() == provider.fingerprint()
    assert same.unwrap(wrapped) == data_key


def test_env_key_and_moving_a_key_from_file_to_env(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MASTER", base64.b64encode(key_file.read_bytes()).decode())
    from_env = keys.load_key_provider("env:TEST_MASTER")
    data_key, wrapped = from_env.generate_data_key()
    assert wrapped["provider"] == "env"
    assert from_env.unwrap(wrapped) == data_key
    assert keys.load_key_provider(f"file:{key_file}").unwrap(wrapped) == data_key


def test_wrong_master_key_is_named_by_fingerprint(key_file: Path, tmp_path: Path) -> None:
    provider = keys.load_key_provider(f"file:{key_file}")
    _data_key, wrapped = provider.generate_data_key()
    other_file = tmp_path / "other.key"
    other_file.write_bytes(os.urandom(32))
    other = keys.load_key_provider(f"file:{other_file}")
    with pytest.raises(IntegrityError) as caught:
        other.unwrap(wrapped)
    message = str(caught.value)
    assert message == (
        f"wrong master key: data key {wrapped['key_id']} cannot be unwrapped "
        f"(key fingerprint {other.fingerprint()} does not match {wrapped['key_id']})"
    )
    assert "\n" not in message


def test_corrupted_wrapped_key(key_file: Path) -> None:
    provider = keys.load_key_provider(f"file:{key_file}")
    _data_key, wrapped = provider.generate_data_key()
    blob = bytearray(base64.b64decode(wrapped["wrapped_key"]))
    blob[-1] ^= 1
    bad = dict(wrapped, wrapped_key=base64.b64encode(bytes(blob)).decode())
    with pytest.raises(IntegrityError, match="wrapped key corrupted"):
        provider.unwrap(bad)
    with pytest.raises(IntegrityError, match="malformed"):
        provider.unwrap({"provider": "file"})


def test_missing_key_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in (None, ""):
        with pytest.raises(UsageError, match=r"^no master key configured"):
            keys.load_key_provider(spec)
    with pytest.raises(UsageError, match=f"master key file {tmp_path}/nope.key not found"):
        keys.load_key_provider(f"file:{tmp_path}/nope.key")
    monkeypatch.delenv("DBTIER_TEST_NO_SUCH_VAR", raising=False)
    with pytest.raises(UsageError, match="DBTIER_TEST_NO_SUCH_VAR is not set"):
        keys.load_key_provider("env:DBTIER_TEST_NO_SUCH_VAR")


def test_malformed_keys_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(16))
    with pytest.raises(UsageError, match="expected 32 raw bytes or 44 base64"):
        keys.load_key_provider(f"file:{short}")
    monkeypatch.setenv("SHORT_KEY", base64.b64encode(os.urandom(16)).decode())
    with pytest.raises(UsageError, match="SHORT_KEY: expected base64 of 32 bytes"):
        keys.load_key_provider("env:SHORT_KEY")
    secret = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(UsageError) as caught:
        keys.load_key_provider(secret)  # a key pasted where a spec belongs
    assert secret not in str(caught.value)


# -- KMS on moto_server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def kms_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> boto3.client:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DBTIER_AWS_ENDPOINT_URL", moto.url)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    return boto3.client("kms", **moto.client_kwargs())


def test_kms_wrap_and_unwrap(kms_env: boto3.client) -> None:
    key = kms_env.create_key(Description="dbtier test")["KeyMetadata"]
    kms_env.create_alias(AliasName="alias/dbtier-test", TargetKeyId=key["KeyId"])
    provider = keys.load_key_provider("kms:alias/dbtier-test")
    data_key, wrapped = provider.generate_data_key()
    assert len(data_key) == 32
    assert wrapped["provider"] == "kms"
    assert wrapped["key_id"] == key["Arn"]
    assert provider.fingerprint() == key["Arn"]
    assert json.loads(json.dumps(wrapped)) == wrapped
    assert provider.unwrap(wrapped) == data_key
    # A restore configured with the key's id instead of the alias unwraps too.
    assert keys.load_key_provider(f"kms:{key['KeyId']}").unwrap(wrapped) == data_key


def test_kms_unknown_key_and_provider_mismatch(kms_env: boto3.client, key_file: Path) -> None:
    missing = keys.load_key_provider("kms:alias/does-not-exist")
    with pytest.raises(DbtierError, match=r"^KMS generate_data_key with key alias/does-not-exist"):
        missing.generate_data_key()
    local = keys.load_key_provider(f"file:{key_file}")
    _data_key, wrapped = local.generate_data_key()
    with pytest.raises(IntegrityError, match=r"^wrong master key: data key .* local file key"):
        missing.unwrap(wrapped)


def test_kms_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.moto_server import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"
    provider = keys.load_key_provider("kms:alias/x", endpoint_url=endpoint, region="us-east-1")
    with pytest.raises(DbtierError, match=f"^cannot reach KMS at {endpoint}"):
        provider.generate_data_key()
