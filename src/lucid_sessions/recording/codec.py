"""The frame codec: a chunk's plaintext, a self-contained run of frames.

A chunk decodes on its own: its first frame is a keyframe (every pixel), each later frame
is a delta that carries only the square tiles that differ from the frame before it. A
resolution change inside a chunk starts with a new keyframe. Decoding is lossless: every
decoded frame equals its input pixel for pixel.

Format (version 1, integers little-endian)::

    chunk    = header record*
    header   = "LSFC" u8 version u8 reserved u16 tile_size
    record   = u8 kind u64 timestamp_us u32 payload_size payload
    keyframe = (kind 1) u16 width u16 height  width*height*3 bytes of RGB, row-major
    delta    = (kind 2) u32 tile_count  u32 tile_index[tile_count] (strictly ascending)
               then each tile's RGB pixels, row-major, in index order

Tile ``i`` of a ``width``x``height`` frame covers rows ``(i // cols) * T`` and columns
``(i % cols) * T`` (``cols = ceil(width / T)``) and is clipped at the right and bottom
edges. A delta with no tiles is an unchanged frame: 17 bytes.

Every parser here raises :class:`~lucid_sessions.errors.FormatError` for bytes that do
not follow this format, and never reads past the buffer or allocates more than the
buffer's size implies.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lucid_sessions.errors import FormatError

__all__ = [
    "DEFAULT_TILE_SIZE",
    "KEYFRAME",
    "DELTA",
    "MAX_HEIGHT",
    "MAX_WIDTH",
    "ChunkDecoder",
    "ChunkEncoder",
    "DecodedFrame",
    "RecordInfo",
    "Pixels",
    "changed_tiles",
    "decode_frames",
    "frame_at",
    "keyframe_size",
    "scan_records",
    "validate_pixels",
]

Pixels = npt.NDArray[np.uint8]

MAGIC = b"LSFC"
VERSION = 1
KEYFRAME = 1
DELTA = 2
DEFAULT_TILE_SIZE = 64
MAX_WIDTH = 7680
MAX_HEIGHT = 4320

_HEADER = struct.Struct("<4sBBH")
_RECORD = struct.Struct("<BQI")
_DIMS = struct.Struct("<HH")
_COUNT = struct.Struct("<I")


def validate_pixels(pixels: Pixels) -> None:
    """Raise ``ValueError`` unless ``pixels`` is an RGB frame this codec accepts."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise ValueError("a frame must be a numpy uint8 array")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"a frame must have shape (height, width, 3), not {pixels.shape}")
    height, width = pixels.shape[0], pixels.shape[1]
    if not (1 <= width <= MAX_WIDTH and 1 <= height <= MAX_HEIGHT):
        raise ValueError(f"frame size {width}x{height} is outside 1x1..{MAX_WIDTH}x{MAX_HEIGHT}")


def keyframe_size(pixels: Pixels) -> int:
    """Bytes a keyframe record of this frame takes."""
    return _RECORD.size + _DIMS.size + int(pixels.size)


def _grid(width: int, height: int, tile: int) -> tuple[int, int]:
    return (width + tile - 1) // tile, (height + tile - 1) // tile


def changed_tiles(current: Pixels, previous: Pixels, tile: int) -> npt.NDArray[np.intp]:
    """Indices (ascending) of the tiles where ``current`` differs from ``previous``.

    Both frames must have the same shape. Compares 8 bytes at a time when the row length
    allows it; ``tile`` must be a multiple of 8 for that fast path to apply.
    """
    height, width = current.shape[0], current.shape[1]
    row_bytes = width * 3
    a = np.ascontiguousarray(current).reshape(height, row_bytes)
    b = np.ascontiguousarray(previous).reshape(height, row_bytes)
    unit = 8 if row_bytes % 8 == 0 and tile % 8 == 0 else 1
    differ = a.view(np.uint64) != b.view(np.uint64) if unit == 8 else a != b
    bands = np.logical_or.reduceat(differ, np.arange(0, height, tile), axis=0)
    starts = np.arange(0, width, tile) * 3 // unit
    grid = np.logical_or.reduceat(bands, starts, axis=1)
    return np.flatnonzero(grid)


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """Where one record sits in a chunk; produced by :func:`scan_records`."""

    kind: int
    timestamp_us: int
    offset: int
    """Offset of the record's payload in the chunk."""
    size: int


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    timestamp_us: int
    pixels: Pixels
    keyframe: bool


class ChunkEncoder:
    """Builds one chunk's plaintext from frames added in time order.

    The first frame, and any frame whose resolution differs from the one before it, is
    stored as a keyframe; every other frame as a delta against the frame before it.
    The encoder keeps a reference to the last frame it was given: callers must not
    modify a frame's array after adding it.
    """

    def __init__(self, *, tile_size: int = DEFAULT_TILE_SIZE) -> None:
        if not 8 <= tile_size <= 1024:
            raise ValueError("tile_size must be between 8 and 1024")
        self.tile_size = tile_size
        self._parts: list[bytes] = [_HEADER.pack(MAGIC, VERSION, 0, tile_size)]
        self._size = _HEADER.size
        self._previous: Pixels | None = None
        self.frame_count = 0
        self.keyframe_count = 0
        self.unchanged_count = 0
        self.raw_bytes = 0
        self.start_us: int | None = None
        self.end_us: int | None = None

    @property
    def size(self) -> int:
        """Bytes encoded so far."""
        return self._size

    def encode_delta(self, timestamp_us: int, pixels: Pixels) -> bytes | None:
        """The record this frame would append as a delta, or None if it needs a keyframe."""
        previous = self._previous
        if previous is None or previous.shape != pixels.shape:
            return None
        if pixels is previous:
            return _RECORD.pack(DELTA, timestamp_us, _COUNT.size) + _COUNT.pack(0)
        indices = changed_tiles(pixels, previous, self.tile_size)
        if indices.size == 0:
            return _RECORD.pack(DELTA, timestamp_us, _COUNT.size) + _COUNT.pack(0)
        tile = self.tile_size
        cols = (pixels.shape[1] + tile - 1) // tile
        parts = [_COUNT.pack(int(indices.size)), indices.astype("<u4").tobytes()]
        for index in indices.tolist():
            y, x = (index // cols) * tile, (index % cols) * tile
            parts.append(pixels[y : y + tile, x : x + tile].tobytes())
        payload = b"".join(parts)
        return _RECORD.pack(DELTA, timestamp_us, len(payload)) + payload

    def encode_keyframe(self, timestamp_us: int, pixels: Pixels) -> bytes:
        height, width = pixels.shape[0], pixels.shape[1]
        body = np.ascontiguousarray(pixels).tobytes()
        header = _RECORD.pack(KEYFRAME, timestamp_us, _DIMS.size + len(body))
        return header + _DIMS.pack(width, height) + body

    def append(self, timestamp_us: int, pixels: Pixels, record: bytes | None = None) -> int:
        """Add a frame; ``record`` may be one :meth:`encode_delta` already produced for it.

        Returns the number of bytes appended. Timestamps must not go backwards.
        """
        validate_pixels(pixels)
        if timestamp_us < 0 or timestamp_us >= 2**64:
            raise ValueError("timestamp_us must be a non-negative 64-bit integer")
        if self.end_us is not None and timestamp_us < self.end_us:
            raise ValueError(f"timestamp {timestamp_us} us goes back before {self.end_us} us")
        if record is None:
            record = self.encode_delta(timestamp_us, pixels)
        if record is None:
            record = self.encode_keyframe(timestamp_us, pixels)
        kind = record[0]
        if kind == KEYFRAME:
            self.keyframe_count += 1
        elif len(record) == _RECORD.size + _COUNT.size:
            self.unchanged_count += 1
        self._parts.append(record)
        self._size += len(record)
        self._previous = pixels
        self.frame_count += 1
        self.raw_bytes += pixels.size
        if self.start_us is None:
            self.start_us = timestamp_us
        self.end_us = timestamp_us
        return len(record)

    def finish(self) -> bytes:
        """The chunk's plaintext. The encoder must not be used afterwards."""
        data = b"".join(self._parts)
        self._parts = []
        self._previous = None
        return data


def _parse_header(data: bytes | memoryview) -> int:
    if len(data) < _HEADER.size:
        raise FormatError("frame chunk is shorter than its header")
    magic, version, _reserved, tile = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError("not a frame chunk (bad magic)")
    if version != VERSION:
        raise FormatError(f"frame chunk version {version} is not supported (reads {VERSION})")
    if not 8 <= tile <= 1024:
        raise FormatError(f"frame chunk has an invalid tile size {tile}")
    return int(tile)


def scan_records(data: bytes | memoryview) -> tuple[int, list[RecordInfo]]:
    """The tile size and the records of a chunk, without decoding any pixels.

    Checks the framing (every record fits, kinds are known, timestamps do not go back).
    """
    tile = _parse_header(data)
    records: list[RecordInfo] = []
    offset = _HEADER.size
    end = len(data)
    last_ts = 0
    while offset < end:
        if end - offset < _RECORD.size:
            raise FormatError(f"frame chunk truncated in a record header at byte {offset}")
        kind, ts, size = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        if kind not in (KEYFRAME, DELTA):
            raise FormatError(f"unknown record kind {kind} at byte {offset - _RECORD.size}")
        if size > end - offset:
            raise FormatError(f"frame chunk truncated: record at byte {offset} overruns")
        if ts < last_ts:
            raise FormatError(f"record timestamps go backwards at byte {offset}")
        if not records and kind != KEYFRAME:
            raise FormatError("frame chunk does not start with a keyframe")
        records.append(RecordInfo(kind, ts, offset, size))
        last_ts = ts
        offset += size
    return tile, records


class ChunkDecoder:
    """Decodes the frames of one chunk in order, keeping only the current frame in memory."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.tile_size, self.records = scan_records(self._data)
        self._frame: Pixels | None = None

    def _apply(self, record: RecordInfo) -> Pixels:
        data = self._data
        payload = data[record.offset : record.offset + record.size]
        if record.kind == KEYFRAME:
            if len(payload) < _DIMS.size:
                raise FormatError("keyframe record too short")
            width, height = _DIMS.unpack_from(payload, 0)
            if not (1 <= width <= MAX_WIDTH and 1 <= height <= MAX_HEIGHT):
                raise FormatError(f"keyframe has an invalid size {width}x{height}")
            if len(payload) != _DIMS.size + width * height * 3:
                raise FormatError("keyframe size does not match its resolution")
            body = np.frombuffer(payload, dtype=np.uint8, offset=_DIMS.size)
            self._frame = body.reshape(height, width, 3).copy()
            return self._frame
        frame = self._frame
        if frame is None:
            raise FormatError("delta record before any keyframe")
        self._apply_delta(frame, payload)
        return frame

    def _apply_delta(self, frame: Pixels, payload: memoryview) -> None:
        if len(payload) < _COUNT.size:
            raise FormatError("delta record too short")
        (count,) = _COUNT.unpack_from(payload, 0)
        height, width = frame.shape[0], frame.shape[1]
        tile = self.tile_size
        cols, rows = _grid(width, height, tile)
        if count > cols * rows or len(payload) < _COUNT.size + 4 * count:
            raise FormatError("delta record has an impossible tile count")
        indices = np.frombuffer(payload, dtype="<u4", count=count, offset=_COUNT.size)
        if count and (
            # int64: np.diff of uint32 wraps around, so a descending pair would look ascending
            int(indices[-1]) >= cols * rows
            or (count > 1 and bool(np.any(np.diff(indices.astype(np.int64)) <= 0)))
        ):
            raise FormatError("delta record has tile indices out of order or range")
        offset = _COUNT.size + 4 * count
        for index in indices.tolist():
            y, x = (index // cols) * tile, (index % cols) * tile
            h, w = min(tile, height - y), min(tile, width - x)
            n = h * w * 3
            if offset + n > len(payload):
                raise FormatError("delta record is shorter than its tiles")
            frame[y : y + h, x : x + w] = np.frombuffer(
                payload, dtype=np.uint8, count=n, offset=offset
            ).reshape(h, w, 3)
            offset += n
        if offset != len(payload):
            raise FormatError("delta record has trailing bytes")

    def frames(self, *, copy: bool = True) -> Iterator[DecodedFrame]:
        """Every frame in order. With ``copy=False`` the arrays are the decoder's own
        buffer, valid until the next frame is produced."""
        for record in self.records:
            pixels = self._apply(record)
            yield DecodedFrame(
                record.timestamp_us, pixels.copy() if copy else pixels, record.kind == KEYFRAME
            )

    def frame_at(self, timestamp_us: int) -> DecodedFrame:
        """The frame on screen at ``timestamp_us``: the last one at or before it.

        Starts from the last keyframe at or before the target, so it replays at most one
        keyframe's run. A time before the chunk's first frame gives the first frame.
        """
        if not self.records:
            raise FormatError("frame chunk holds no frames")
        target = 0
        for i, record in enumerate(self.records):
            if record.timestamp_us > timestamp_us:
                break
            target = i
        start = 0
        for i in range(target, -1, -1):
            if self.records[i].kind == KEYFRAME:
                start = i
                break
        pixels: Pixels | None = None
        for record in self.records[start : target + 1]:
            pixels = self._apply(record)
        if pixels is None:
            raise FormatError("frame chunk holds no frames")
        chosen = self.records[target]
        return DecodedFrame(chosen.timestamp_us, pixels.copy(), chosen.kind == KEYFRAME)


def decode_frames(data: bytes | memoryview) -> Iterator[DecodedFrame]:
    """Every frame of a chunk, as independent arrays."""
    return ChunkDecoder(data).frames()


def frame_at(data: bytes | memoryview, timestamp_us: int) -> DecodedFrame:
    return ChunkDecoder(data).frame_at(timestamp_us)
