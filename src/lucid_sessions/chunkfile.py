"""The stored chunk: a chunk's plaintext compressed with zstd and sealed with
XChaCha20-Poly1305, in a small container whose bytes are the chunk's Merkle leaf.

Format (version 1, integers little-endian)::

    stored  = header ciphertext
    header  = "LSCK" u8 version u8 compression(1 = zstd) u8 level u8 reserved
              u64 sequence  16 bytes data key id  24 bytes nonce
    ciphertext = XChaCha20-Poly1305(data key, nonce, zstd(plaintext), aad) (tag included)
    aad     = header || u16 len(session id) || session id (UTF-8)

The associated data binds the whole header (sequence number and key id) and the session
id, so a stored chunk that is altered, renumbered, moved to another position or into
another session fails authentication. The MAC is checked before anything is
decompressed, and decompression is capped, so hostile bytes cost bounded work.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

import zstandard

from lucid_sessions.crypto.xchacha import NONCE_SIZE, XChaCha20Poly1305
from lucid_sessions.errors import CompressionError, FormatError, InvalidConfigError

__all__ = [
    "HEADER_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "QUALITY_LEVELS",
    "ChunkHeader",
    "open_chunk",
    "parse_header",
    "seal_chunk",
    "zstd_compress",
    "zstd_level",
]

MAGIC = b"LSCK"
VERSION = 1
COMPRESSION_ZSTD = 1
KEY_ID_SIZE = 16
_HEADER = struct.Struct(f"<4sBBBBQ{KEY_ID_SIZE}s{NONCE_SIZE}s")
HEADER_SIZE = _HEADER.size
MAX_PLAINTEXT_SIZE = 1 << 30
"""Largest chunk plaintext this program will decompress (1 GiB)."""

QUALITY_LEVELS: dict[str, int] = {"low": 1, "medium": 3, "high": 9, "ultra": 15}
"""zstd level for each recording quality."""


def zstd_level(quality: str) -> int:
    try:
        return QUALITY_LEVELS[quality]
    except KeyError:
        names = ", ".join(QUALITY_LEVELS)
        raise InvalidConfigError(f"quality must be one of {names}, not {quality!r}") from None


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    version: int
    compression: int
    level: int
    sequence: int
    key_id: str
    """Hex of the data key id."""
    nonce: bytes


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def zstd_compress(data: bytes, level: int) -> bytes:
    """zstd with a per-thread compressor (safe to call from several threads)."""
    if not 1 <= level <= 22:
        raise InvalidConfigError(f"zstd level must be 1..22, not {level}")
    try:
        return bytes(_compressor(level).compress(data))
    except zstandard.ZstdError as exc:
        raise CompressionError(f"zstd compression failed: {exc}") from exc


def _aad(header: bytes, session_id: str) -> bytes:
    sid = session_id.encode("utf-8")
    if len(sid) > 0xFFFF:
        raise InvalidConfigError("session id is too long")
    return header + struct.pack("<H", len(sid)) + sid


def seal_chunk(
    plaintext: bytes,
    *,
    session_id: str,
    sequence: int,
    key_id: str,
    key: bytes,
    level: int,
    nonce: bytes | None = None,
) -> bytes:
    """The stored bytes for one chunk. ``nonce`` is random unless given (tests only)."""
    if len(plaintext) > MAX_PLAINTEXT_SIZE:
        raise CompressionError(f"chunk of {len(plaintext)} bytes exceeds the 1 GiB limit")
    key_id_raw = bytes.fromhex(key_id)
    if len(key_id_raw) != KEY_ID_SIZE:
        raise InvalidConfigError("data key id must be 16 bytes")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    compressed = zstd_compress(plaintext, level)
    header = _HEADER.pack(MAGIC, VERSION, COMPRESSION_ZSTD, level, 0, sequence, key_id_raw, nonce)
    sealed = XChaCha20Poly1305(key).encrypt(nonce, compressed, _aad(header, session_id))
    return header + sealed


def parse_header(stored: bytes | memoryview) -> ChunkHeader:
    """The clear header of a stored chunk; FormatError if it is not one."""
    if len(stored) < HEADER_SIZE + 16:
        raise FormatError(f"stored chunk is too short ({len(stored)} bytes)")
    magic, version, compression, level, _r, sequence, key_id, nonce = _HEADER.unpack_from(stored, 0)
    if magic != MAGIC:
        raise FormatError("not a stored chunk (bad magic)")
    if version != VERSION:
        raise FormatError(f"stored chunk version {version} is not supported (reads {VERSION})")
    if compression != COMPRESSION_ZSTD:
        raise FormatError(f"stored chunk uses unknown compression {compression}")
    return ChunkHeader(version, compression, level, sequence, key_id.hex(), nonce)


def open_chunk(
    stored: bytes,
    *,
    session_id: str,
    sequence: int,
    key: bytes,
    max_size: int = MAX_PLAINTEXT_SIZE,
) -> bytes:
    """The plaintext of a stored chunk, after checking its MAC.

    Raises :class:`FormatError` for bytes that are not a stored chunk or that claim the
    wrong sequence number, :class:`~lucid_sessions.errors.AuthenticationError` when the
    MAC fails (altered, truncated, wrong key, or bound to another session or position),
    and :class:`CompressionError` when the authenticated payload does not decompress.
    """
    header = parse_header(stored)
    if header.sequence != sequence:
        raise FormatError(f"stored chunk says it is number {header.sequence}, not {sequence}")
    raw_header = bytes(stored[:HEADER_SIZE])
    compressed = XChaCha20Poly1305(key).decrypt(
        header.nonce, bytes(stored[HEADER_SIZE:]), _aad(raw_header, session_id)
    )
    try:
        claimed = zstandard.frame_content_size(compressed)
        if claimed > max_size:
            raise CompressionError(
                f"chunk {sequence} would decompress to {claimed} bytes, over the "
                f"{max_size}-byte limit"
            )
        return bytes(_decompressor().decompress(compressed, max_output_size=max_size))
    except zstandard.ZstdError as exc:
        raise CompressionError(f"chunk {sequence} does not decompress: {exc}") from exc
