"""Cuts a stream of timestamped frames into chunks that each decode on their own.

A chunk closes when the next frame would take it past its duration bound (measured
from the chunk's first frame) or past its size bound (bytes of encoded frame data).
A single frame larger than the size bound still gets a chunk of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from lucid_sessions.recording.codec import (
    DEFAULT_TILE_SIZE,
    ChunkEncoder,
    Pixels,
    keyframe_size,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DURATION_US",
    "Chunker",
    "RawChunk",
]

DEFAULT_MAX_DURATION_US = 10_000_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A closed chunk: its plaintext and what the pipeline records about it."""

    sequence: int
    start_us: int
    """Timestamp of the chunk's first frame."""
    end_us: int
    """Timestamp of the chunk's last frame."""
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    """Frames identical to the one before them."""
    dropped_count: int
    """Sampling ticks missed while this chunk was open (see :meth:`Chunker.note_dropped`)."""
    width: int
    height: int
    raw_bytes: int
    """Bytes the frames would take uncompressed (width * height * 3 each)."""
    data: bytes


class Chunker:
    """Turns frames into :class:`RawChunk` objects, numbered from ``first_sequence``.

    Not thread-safe: one producer feeds it. Frames must come in time order; the chunker
    keeps a reference to the last frame, so callers must not modify an array after
    passing it in.
    """

    def __init__(
        self,
        *,
        max_duration_us: int = DEFAULT_MAX_DURATION_US,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tile_size: int = DEFAULT_TILE_SIZE,
        first_sequence: int = 0,
    ) -> None:
        if max_duration_us <= 0:
            raise ValueError("max_duration_us must be positive")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_duration_us = max_duration_us
        self.max_bytes = max_bytes
        self.tile_size = tile_size
        self.next_sequence = first_sequence
        self._encoder: ChunkEncoder | None = None
        self._dims = (0, 0)
        self._dropped = 0

    def add(self, timestamp_us: int, pixels: Pixels) -> RawChunk | None:
        """Add a frame; returns the chunk this frame closed, if it closed one."""
        encoder = self._encoder
        closed: RawChunk | None = None
        record: bytes | None = None
        if encoder is not None and encoder.start_us is not None:
            if timestamp_us - encoder.start_us >= self.max_duration_us:
                closed = self._close()
            else:
                record = encoder.encode_delta(timestamp_us, pixels)
                added = len(record) if record is not None else keyframe_size(pixels)
                if encoder.size + added > self.max_bytes:
                    closed = self._close()
                    record = None
        if self._encoder is None:
            self._encoder = ChunkEncoder(tile_size=self.tile_size)
            self._dims = (int(pixels.shape[1]), int(pixels.shape[0]))
        self._encoder.append(timestamp_us, pixels, record)
        return closed

    def note_dropped(self, count: int = 1) -> None:
        """Count frames the capture could not deliver in time against the open chunk."""
        self._dropped += count

    def flush(self) -> RawChunk | None:
        """Close the open chunk, if it holds any frame."""
        if self._encoder is None or self._encoder.frame_count == 0:
            return None
        return self._close()

    @property
    def pending_frames(self) -> int:
        return 0 if self._encoder is None else self._encoder.frame_count

    def _close(self) -> RawChunk:
        encoder = self._encoder
        assert encoder is not None and encoder.start_us is not None and encoder.end_us is not None
        chunk = RawChunk(
            sequence=self.next_sequence,
            start_us=encoder.start_us,
            end_us=encoder.end_us,
            frame_count=encoder.frame_count,
            keyframe_count=encoder.keyframe_count,
            unchanged_count=encoder.unchanged_count,
            dropped_count=self._dropped,
            width=self._dims[0],
            height=self._dims[1],
            raw_bytes=encoder.raw_bytes,
            data=encoder.finish(),
        )
        self.next_sequence += 1
        self._encoder = None
        self._dropped = 0
        return chunk
