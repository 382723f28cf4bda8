"""The frame codec and chunker: lossless, self-contained chunks, bounded by time and size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import moving_frames

from lucid_sessions.recording.chunker import Chunker
from lucid_sessions.recording.codec import (
    DELTA,
    KEYFRAME,
    ChunkDecoder,
    ChunkEncoder,
    changed_tiles,
    decode_frames,
    frame_at,
    scan_records,
)


def _chunks(frames, **bounds):
    chunker = Chunker(**bounds)
    out = [c for ts, px in frames if (c := chunker.add(ts, px)) is not None]
    last = chunker.flush()
    return out + ([last] if last else [])


def test_every_decoded_frame_equals_its_input_pixel_for_pixel():
    frames = list(moving_frames(40))
    chunks = _chunks(frames, max_duration_us=1_500_000)
    decoded = [f for c in chunks for f in decode_frames(c.data)]
    assert len(decoded) == len(frames)
    for (ts, pixels), got in zip(frames, decoded, strict=True):
        assert got.timestamp_us == ts
        assert np.array_equal(got.pixels, pixels)


def test_each_chunk_starts_with_a_keyframe_and_decodes_alone():
    chunks = _chunks(moving_frames(30), max_duration_us=1_000_000)
    assert len(chunks) == 3
    for chunk in chunks:
        _, records = scan_records(chunk.data)
        assert records[0].kind == KEYFRAME
        assert all(r.kind == DELTA for r in records[1:])
        assert len(list(decode_frames(chunk.data))) == chunk.frame_count


def test_chunk_closes_at_the_duration_bound_measured_from_its_first_frame():
    chunks = _chunks(moving_frames(25, fps=10), max_duration_us=1_000_000)
    assert [c.frame_count for c in chunks] == [10, 10, 5]
    assert [c.start_us for c in chunks] == [0, 1_000_000, 2_000_000]
    assert [c.sequence for c in chunks] == [0, 1, 2]


def test_chunk_closes_before_the_size_bound_is_passed():
    bound = 160 * 96 * 3 + 4000
    chunks = _chunks(moving_frames(30), max_bytes=bound)
    assert len(chunks) > 1
    assert all(len(c.data) <= bound for c in chunks)
    assert sum(c.frame_count for c in chunks) == 30


def test_a_frame_larger_than_the_size_bound_gets_a_chunk_of_its_own():
    chunks = _chunks(moving_frames(3), max_bytes=1000)
    assert [c.frame_count for c in chunks] == [1, 1, 1]


def test_an_unchanged_frame_costs_a_few_bytes_and_is_counted():
    encoder = ChunkEncoder()
    frame = next(moving_frames(1))[1]
    encoder.append(0, frame)
    added = encoder.append(100_000, frame.copy())
    assert added == 17
    assert encoder.unchanged_count == 1


def test_only_changed_tiles_are_stored():
    base = np.zeros((256, 256, 3), np.uint8)
    changed = base.copy()
    changed[70, 130] = 1  # tile row 1, column 2 of a 4x4 grid
    changed[255, 255] = 9  # last tile
    assert changed_tiles(changed, base, 64).tolist() == [6, 15]


def test_a_resolution_change_starts_a_new_keyframe_inside_the_chunk():
    small = np.full((100, 120, 3), 7, np.uint8)
    large = np.full((200, 300, 3), 9, np.uint8)
    chunks = _chunks([(0, small), (1, small), (2, large), (3, large)])
    assert len(chunks) == 1
    _, records = scan_records(chunks[0].data)
    assert [r.kind for r in records] == [KEYFRAME, DELTA, KEYFRAME, DELTA]
    frames = list(decode_frames(chunks[0].data))
    assert frames[2].pixels.shape == (200, 300, 3)
    assert np.array_equal(frames[3].pixels, large)


def test_frame_at_returns_the_frame_on_screen_at_that_time():
    frames = list(moving_frames(20, fps=10))
    (chunk,) = _chunks(frames)
    assert np.array_equal(frame_at(chunk.data, 1_049_999).pixels, frames[10][1])
    assert np.array_equal(frame_at(chunk.data, 0).pixels, frames[0][1])
    assert np.array_equal(frame_at(chunk.data, 10**9).pixels, frames[-1][1])


def test_frame_at_replays_only_from_the_last_keyframe():
    frames = [(i, np.full((64, 64, 3), i, np.uint8)) for i in range(4)]
    frames += [(10 + i, np.full((32, 32, 3), 50 + i, np.uint8)) for i in range(4)]
    (chunk,) = _chunks(frames)
    decoder = ChunkDecoder(chunk.data)
    applied = []
    original = decoder._apply
    decoder._apply = lambda record: applied.append(record.timestamp_us) or original(record)
    got = decoder.frame_at(12)
    assert got.pixels[0, 0, 0] == 52
    assert applied == [10, 11, 12]


def test_timestamps_must_not_go_backwards():
    chunker = Chunker()
    frame = next(moving_frames(1))[1]
    chunker.add(1000, frame)
    with pytest.raises(ValueError, match="goes back"):
        chunker.add(999, frame)


@pytest.mark.parametrize("shape", [(4321, 10, 3), (10, 7681, 3), (10, 10, 4), (10, 10)])
def test_frames_outside_the_supported_sizes_are_refused(shape):
    with pytest.raises(ValueError):
        ChunkEncoder().append(0, np.zeros(shape, np.uint8))


def test_largest_supported_resolution_round_trips():
    frame = np.zeros((4320, 7680, 3), np.uint8)
    frame[4000:4320:7, 7000:7680:3] = 200
    second = frame.copy()
    second[-1, -1] = 1
    (chunk,) = _chunks([(0, frame), (1, second)], max_bytes=200 * 2**20)
    decoded = list(decode_frames(chunk.data))
    assert np.array_equal(decoded[1].pixels, second)


@st.composite
def frame_streams(draw):
    width = draw(st.integers(1, 150))
    height = draw(st.integers(1, 100))
    count = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames, ts = [], 0
    for _ in range(count):
        frame = frame.copy()
        for _ in range(draw(st.integers(0, 3))):
            y, x = rng.integers(0, height), rng.integers(0, width)
            frame[y : y + rng.integers(1, 40), x : x + rng.integers(1, 40)] = rng.integers(
                0, 256, 3
            )
        if draw(st.booleans()) and count > 1 and rng.random() < 0.1:
            frame = rng.integers(0, 256, (max(1, height // 2), width, 3), dtype=np.uint8)
        ts += draw(st.integers(0, 400_000))
        frames.append((ts, frame))
    tile = draw(st.sampled_from([8, 16, 24, 64, 100]))
    duration = draw(st.integers(1, 2_000_000))
    max_bytes = draw(st.integers(1, 60_000))
    return frames, tile, duration, max_bytes


@settings(max_examples=150, deadline=None)
@given(frame_streams())
def test_any_frame_stream_round_trips_losslessly(stream):
    frames, tile, duration, max_bytes = stream
    chunks = _chunks(frames, tile_size=tile, max_duration_us=duration, max_bytes=max_bytes)
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    decoded = [f for c in chunks for f in decode_frames(c.data)]
    assert len(decoded) == len(frames)
    for (ts, pixels), got in zip(frames, decoded, strict=True):
        assert got.timestamp_us == ts
        assert np.array_equal(got.pixels, pixels)
    for chunk in chunks:
        assert chunk.end_us - chunk.start_us < duration
        assert len(chunk.data) <= max_bytes or chunk.frame_count == 1
