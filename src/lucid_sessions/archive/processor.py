"""Chunk processing: compress, encrypt and hash one chunk.

Safe to call from several threads at once: zstd contexts are per thread and nothing else
is shared. The leaf hash is taken over the stored bytes, so anyone can check a chunk's
integrity without its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lucid_sessions.chunkfile import seal_chunk
from lucid_sessions.crypto import DataKey
from lucid_sessions.merkle import Hasher
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.storage.metadata import ChunkRecord, utc_now

__all__ = ["ChunkProcessor", "ProcessedChunk"]


@dataclass(frozen=True, slots=True)
class ProcessedChunk:
    session_id: str
    raw: RawChunk
    """The chunk as the chunker closed it (its ``data`` is the plaintext)."""
    stored: bytes
    leaf_hash: bytes
    level: int
    seconds: float
    """Time spent compressing, encrypting and hashing."""

    def record(self) -> ChunkRecord:
        raw = self.raw
        return ChunkRecord(
            session_id=self.session_id,
            sequence=raw.sequence,
            start_us=raw.start_us,
            end_us=raw.end_us,
            frame_count=raw.frame_count,
            keyframe_count=raw.keyframe_count,
            unchanged_count=raw.unchanged_count,
            dropped_count=raw.dropped_count,
            width=raw.width,
            height=raw.height,
            raw_bytes=raw.raw_bytes,
            plain_size=len(raw.data),
            stored_size=len(self.stored),
            leaf_hash=self.leaf_hash.hex(),
            level=self.level,
            created_at=utc_now(),
        )


class ChunkProcessor:
    """Turns a :class:`RawChunk` into its stored bytes and leaf hash."""

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher

    def process(
        self, raw: RawChunk, *, session_id: str, data_key: DataKey, level: int
    ) -> ProcessedChunk:
        started = time.perf_counter()
        stored = seal_chunk(
            raw.data,
            session_id=session_id,
            sequence=raw.sequence,
            key_id=data_key.key_id,
            key=data_key.key,
            level=level,
        )
        leaf = self.hasher.leaf_hash(stored)
        return ProcessedChunk(session_id, raw, stored, leaf, level, time.perf_counter() - started)
