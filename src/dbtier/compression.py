"""zstd compression for backup streams: multi-threaded, streaming, bounded memory."""

from __future__ import annotations

from typing import BinaryIO

import zstandard

from .errors import UsageError

# Read/write granularity of the streaming helpers: large enough to keep the per-call Python
# overhead negligible, small enough that memory stays a few MiB whatever the stream size.
IO_SIZE = 1 << 20
MIN_LEVEL = 1
MAX_LEVEL = 19  # 20-22 ("ultra") need windows of up to 128 MiB on restore: not worth it here


def check_level(level: int) -> int:
    if not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise UsageError(f"compression level must be {MIN_LEVEL}..{MAX_LEVEL}, got {level!r}")
    return level


def compressor(level: int = 3, threads: int = -1) -> zstandard.ZstdCompressor:
    """A zstd compressor; threads=-1 uses every core (zstd's own worker threads, GIL released).

    The frame carries a content checksum, so a decoder also notices damage that slipped past
    the encryption layer (there should be none: every chunk is authenticated).
    """
    return zstandard.ZstdCompressor(level=check_level(level), threads=threads, write_checksum=True)


def decompressor() -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor()


def compress_stream(
    src: BinaryIO, dest: BinaryIO, level: int = 3, threads: int = -1
) -> tuple[int, int]:
    """Compress src into dest until src's EOF; returns (bytes read, bytes written).

    dest is not closed. Memory: zstd's window and job buffers (a few MiB at the default level).
    """
    read, written = compressor(level, threads).copy_stream(
        src, dest, read_size=IO_SIZE, write_size=IO_SIZE
    )
    return int(read), int(written)


def decompress_stream(src: BinaryIO, dest: BinaryIO) -> tuple[int, int]:
    """Decompress src into dest; returns (bytes read, bytes written). dest is not closed."""
    read, written = decompressor().copy_stream(src, dest, read_size=IO_SIZE, write_size=IO_SIZE)
    return int(read), int(written)
