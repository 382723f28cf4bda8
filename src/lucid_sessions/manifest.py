"""The session manifest: what a finished recording consists of, signed by the cluster.

A manifest lists every chunk (sequence, time range, frame count, sizes, leaf hash), the
Merkle tree size and root, the hash algorithm and the data key id, plus the session's
metadata. It is serialised as canonical JSON (sorted keys, no spaces, ASCII) so the same
manifest always has the same bytes; the Ed25519 signature covers
``SIGNING_CONTEXT || canonical bytes``.

:func:`parse_manifest` accepts only a well-formed manifest of a known version and raises
:class:`~lucid_sessions.errors.FormatError` naming the first field that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lucid_sessions.errors import FormatError

__all__ = [
    "FORMAT_VERSION",
    "SIGNING_CONTEXT",
    "Manifest",
    "ManifestChunk",
    "canonical_json",
    "leaf_hashes",
    "parse_manifest",
    "signed_message",
]

FORMAT_VERSION = 1
SIGNING_CONTEXT = b"lucid-sessions manifest v1\n"
_HASH_SIZES = {"blake3": 32, "sha256": 32}


def canonical_json(value: object) -> bytes:
    """The one byte form of a JSON value used for hashing and signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class ManifestChunk:
    sequence: int
    start_us: int
    end_us: int
    frame_count: int
    raw_size: int
    """Bytes of the chunk's plaintext (encoded frame data)."""
    stored_size: int
    """Bytes of the stored chunk, the Merkle leaf."""
    leaf_hash: str
    """Hex of the leaf hash of the stored chunk."""


@dataclass(frozen=True, slots=True)
class Manifest:
    session_id: str
    name: str
    status: str
    """How the recording ended: ``completed`` or ``interrupted``."""
    created_at: str
    started_at: str | None
    ended_at: str | None
    hash_algorithm: str
    key_id: str
    tree_size: int
    root: str
    chunks: tuple[ManifestChunk, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks"] = [asdict(c) for c in self.chunks]
        data["metadata"] = dict(self.metadata)
        return data

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def duration_us(self) -> int:
        return self.chunks[-1].end_us - self.chunks[0].start_us if self.chunks else 0

    def chunk_for_time(self, timestamp_us: int) -> ManifestChunk:
        """The chunk that holds the frame on screen at ``timestamp_us``."""
        if not self.chunks:
            raise LookupError("the session has no chunks")
        chosen = self.chunks[0]
        lo, hi = 0, len(self.chunks) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.chunks[mid].start_us <= timestamp_us:
                chosen = self.chunks[mid]
                lo = mid + 1
            else:
                hi = mid - 1
        return chosen


def signed_message(manifest_bytes: bytes) -> bytes:
    return SIGNING_CONTEXT + manifest_bytes


def _require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise FormatError(f"manifest: {where}{key} is missing")
    value = data[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise FormatError(f"manifest: {where}{key} has the wrong type")
    return value


def _hex(value: str, size: int, name: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"manifest: {name} is not hex") from None
    if len(raw) != size:
        raise FormatError(f"manifest: {name} must be {size} bytes")
    return value


def _parse_chunk(item: object, index: int, hash_size: int) -> ManifestChunk:
    if not isinstance(item, dict):
        raise FormatError(f"manifest: chunks[{index}] is not an object")
    where = f"chunks[{index}]."
    values = {
        name: _require(item, name, int, where)
        for name in ("sequence", "start_us", "end_us", "frame_count", "raw_size", "stored_size")
    }
    if any(v < 0 for v in values.values()):
        raise FormatError(f"manifest: {where} has a negative number")
    if values["end_us"] < values["start_us"]:
        raise FormatError(f"manifest: {where}end_us is before start_us")
    leaf = _hex(_require(item, "leaf_hash", str, where), hash_size, f"{where}leaf_hash")
    return ManifestChunk(leaf_hash=leaf, **values)


def parse_manifest(data: bytes) -> Manifest:
    """A :class:`Manifest` from its JSON bytes; FormatError naming what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise FormatError("manifest is not a JSON object")
    version = _require(raw, "version", int, "")
    if version != FORMAT_VERSION:
        raise FormatError(f"manifest version {version} is not supported (reads {FORMAT_VERSION})")
    algorithm = _require(raw, "hash_algorithm", str, "")
    if algorithm not in _HASH_SIZES:
        raise FormatError(f"manifest: unknown hash_algorithm {algorithm!r}")
    size = _HASH_SIZES[algorithm]
    chunks_raw = _require(raw, "chunks", list, "")
    chunks = tuple(_parse_chunk(item, i, size) for i, item in enumerate(chunks_raw))
    for i, chunk in enumerate(chunks):
        if chunk.sequence != i:
            raise FormatError(f"manifest: chunks[{i}] has sequence {chunk.sequence}")
    tree_size = _require(raw, "tree_size", int, "")
    if tree_size != len(chunks):
        raise FormatError(f"manifest: tree_size {tree_size} but {len(chunks)} chunks listed")
    optional_str: tuple[type, ...] = (str, type(None))
    metadata = _require(raw, "metadata", dict, "")
    return Manifest(
        session_id=_require(raw, "session_id", str, ""),
        name=_require(raw, "name", str, ""),
        status=_require(raw, "status", str, ""),
        created_at=_require(raw, "created_at", str, ""),
        started_at=_require(raw, "started_at", optional_str, ""),
        ended_at=_require(raw, "ended_at", optional_str, ""),
        hash_algorithm=algorithm,
        key_id=_require(raw, "key_id", str, ""),
        tree_size=tree_size,
        root=_hex(_require(raw, "root", str, ""), size, "root"),
        chunks=chunks,
        metadata=metadata,
        version=version,
    )


def leaf_hashes(chunks: Sequence[ManifestChunk]) -> list[bytes]:
    return [bytes.fromhex(c.leaf_hash) for c in chunks]
