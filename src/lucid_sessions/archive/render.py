"""Rendering a stored session (or a time range of it) as H.264 video in MP4, through PyAV.

Timing follows the recording: each frame's timestamp (microseconds) becomes its
presentation time, on a 1/90000 s time base, divided by ``speed``. Variable frame rates,
pauses and unchanged frames play when they were recorded. Which frames go in, for a range
``[from, to)`` of the session's timeline (seconds from its first frame):

- the frame on screen at ``from`` (the last one at or before it), shown from ``from``;
- every later frame recorded before ``to``; a frame with the same timestamp as the next
  one is never on screen and is left out;
- the session's last frame is shown for the average frame interval of its chunk (the
  recording does not say how long it stayed), so a whole session of N frames at F fps
  gives N frames and N / F seconds. ``to`` beyond that end is the end.

Unchanged frames are kept (as frames: their pictures cost next to nothing in H.264), so the
frame count is the number of recorded frames in the range.

Memory stays bounded whatever the length: chunks are decrypted and decoded one at a time
(the next chunk's plaintext is fetched while the current one is encoded), only the chunks
overlapping the range are read, and the converted picture is kept as one YUV canvas that
only the changed tiles' rows update. The MP4 itself has no size limit: FFmpeg's muxer
switches to 64-bit chunk offsets (``co64``) and a 64-bit ``mdat`` size past 4 GiB. A plain
MP4 needs a seekable output (its index goes at the end, or at the start with
``faststart``, which rewrites the file once); a fragmented MP4 (``frag_keyframe+
empty_moov+default_base_moof``) is written strictly forwards, for pipes and HTTP.

Pictures are converted to yuv420p (BT.709, limited range), which H.264 players expect.
yuv420p needs even dimensions: an odd width or height is padded by one pixel that repeats
the last column or row, so no recorded pixel is cut. A resolution change inside the range
is scaled to the size of the range's first frame.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lucid_sessions.chunkfile import open_chunk
from lucid_sessions.errors import (
    ChunkNotFoundError,
    FormatError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
)
from lucid_sessions.merkle import get_hasher
from lucid_sessions.recording.codec import DELTA, KEYFRAME, ChunkDecoder, Pixels, RecordInfo
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import ChunkRecord

__all__ = [
    "MAX_SPEED",
    "MIN_SPEED",
    "PRESETS",
    "TIME_BASE",
    "RenderCancelled",
    "RenderOptions",
    "RenderPlan",
    "RenderResult",
    "plan_render",
    "render_mp4",
    "render_session",
]

TIME_BASE = Fraction(1, 90_000)
"""Presentation times are in 1/90000 s: fine enough for any frame rate, and a frame may
stay on screen for 13 hours before a 32-bit MP4 sample duration overflows."""
MIN_SPEED = 0.01
MAX_SPEED = 1000.0
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
FRAGMENTED_FLAGS = "frag_keyframe+empty_moov+default_base_moof"
_FRAGMENT_US = 2_000_000
"""A fragment is flushed at every keyframe and at least every 2 s of video."""
_GOP_SECONDS = 10
_DEFAULT_INTERVAL_US = 100_000
_BAND = 64
"""Rows converted to YUV at a time; even, so chroma rows never straddle two bands."""
_COUNT = struct.Struct("<I")
_COLOURS: dict[str, Any] = {
    # RGB as recorded (full range) to BT.709 limited range, as the stream is tagged
    "src_colorspace": 1,  # av.video.reformatter.Colorspace.ITU709
    "dst_colorspace": 1,
    "src_color_range": 2,  # ColorRange.JPEG
    "dst_color_range": 1,  # ColorRange.MPEG
}


class RenderCancelled(LucidError):
    """The render was stopped from outside (the client went away, Ctrl-C)."""


@dataclass(frozen=True, slots=True)
class RenderOptions:
    from_s: float | None = None
    """Start, seconds from the session's first frame (default: the start)."""
    to_s: float | None = None
    """End, seconds from the session's first frame (default: the end)."""
    speed: float = 1.0
    """Playback speed: every time is divided by it."""
    crf: int = 23
    """x264 constant rate factor: 0 lossless-ish .. 51 worst; 23 is x264's default."""
    preset: str = "ultrafast"
    threads: int = 2
    """x264 threads; 0 lets x264 choose (1.5 per core). 2 measured fastest on 2 cores: the
    decoding thread needs some of the CPU too."""
    fragmented: bool = False
    """Fragmented MP4, written strictly forwards (for pipes and streamed answers)."""
    faststart: bool = False
    """Plain MP4 with its index first (rewrites the file once at the end)."""

    def check(self) -> None:
        """Raise :class:`InvalidConfigError` for options that cannot be rendered."""
        problems = []
        if not (MIN_SPEED <= self.speed <= MAX_SPEED):  # also refuses NaN
            problems.append(f"speed must be between {MIN_SPEED} and {MAX_SPEED:g}")
        if self.from_s is not None and not (self.from_s >= 0):
            problems.append("from must be a number of seconds >= 0")
        if self.to_s is not None and not (self.to_s >= 0):
            problems.append("to must be a number of seconds >= 0")
        if self.from_s is not None and self.to_s is not None and self.to_s <= self.from_s:
            problems.append("to must be after from")
        if not 0 <= self.crf <= 51:
            problems.append("crf must be between 0 and 51")
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}")
        if self.threads < 0:
            problems.append("threads must be >= 0")
        if self.fragmented and self.faststart:
            problems.append("faststart applies to a plain MP4, not a fragmented one")
        if problems:
            raise InvalidConfigError("; ".join(problems), details={"problems": problems})


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """What a render reads: the chunks overlapping the range, and the range in session
    time (microseconds, the recording's own clock)."""

    chunks: tuple[ChunkRecord, ...]
    origin_us: int
    """The session's first frame."""
    start_us: int
    end_us: int
    last_interval_us: int
    """How long the session's last frame is shown."""
    session_end_us: int
    """The session's last frame plus ``last_interval_us``."""

    @property
    def duration_us(self) -> int:
        """Length of the range in recording time (before ``speed``)."""
        return self.end_us - self.start_us


@dataclass(frozen=True, slots=True)
class RenderResult:
    frames: int
    """Frames encoded."""
    duration_s: float
    """Length of the video (after ``speed``)."""
    width: int
    height: int
    chunks: int
    """Chunks read."""


def _last_interval(chunks: Sequence[ChunkRecord]) -> int:
    """The average frame interval of the last chunk with two frames or more."""
    for record in reversed(chunks):
        if record.frame_count > 1 and record.end_us > record.start_us:
            return max(1, (record.end_us - record.start_us) // (record.frame_count - 1))
    return _DEFAULT_INTERVAL_US


def open_checked(
    stored: bytes, record: ChunkRecord, *, session_id: str, key: bytes, hash_algorithm: str
) -> bytes:
    """A stored chunk's plaintext, after checking it is the chunk that was recorded: its
    leaf hash must equal the record's (the hash the signed manifest lists), so a video is
    never made from a chunk that was altered or swapped, even one sealed with the right
    key."""
    if get_hasher(hash_algorithm).leaf_hash(stored).hex() != record.leaf_hash:
        raise FormatError(
            f"chunk {record.sequence} of session {session_id} does not match its recorded "
            "hash: it was altered or replaced (verify names the damage); nothing is rendered "
            "from it"
        )
    return open_chunk(stored, session_id=session_id, sequence=record.sequence, key=key)


def plan_render(
    session_id: str, chunks: Sequence[ChunkRecord], options: RenderOptions
) -> RenderPlan:
    """Check the range against the session and pick the chunks it needs.

    Raises :class:`NotFoundError` for a session without chunks and
    :class:`InvalidConfigError` for options or a range that cannot be rendered.
    """
    options.check()
    ordered = sorted(chunks, key=lambda c: c.sequence)
    if not ordered:
        raise NotFoundError(f"session {session_id} has no chunks to render")
    origin = ordered[0].start_us
    interval = _last_interval(ordered)
    session_end = ordered[-1].end_us + interval
    length_s = (session_end - origin) / 1e6
    start = origin + round((options.from_s or 0.0) * 1e6)
    if start >= session_end:
        raise InvalidConfigError(
            f"from: {options.from_s:g} s is at or after the end of session {session_id} "
            f"({length_s:.3f} s)",
            details={"duration_s": length_s},
        )
    end = (
        session_end
        if options.to_s is None
        else min(session_end, origin + round(options.to_s * 1e6))
    )
    nexts = [c.start_us for c in ordered[1:]] + [None]
    chosen = tuple(
        c
        for c, nxt in zip(ordered, nexts, strict=True)
        if (nxt is None or nxt > start) and c.start_us < end
    )
    return RenderPlan(chosen, origin, start, end, interval, session_end)


def _pixels(plane: Any) -> Pixels:
    """A PyAV picture plane as a (height, width) array (its line padding left out)."""
    view = np.frombuffer(memoryview(plane), dtype=np.uint8)
    return view.reshape(plane.height, plane.line_size)[:, : plane.width]


class _Canvas:
    """The current picture as yuv420p, updated band by band from RGB frames.

    A band is converted by swscale (one cached context per band height); only the bands
    that changed since the last picture are converted again.
    """

    def __init__(self, width: int, height: int) -> None:
        import av

        self._av = av
        self.width = width + (width & 1)
        self.height = height + (height & 1)
        w, h = self.width, self.height
        self.buffer = np.zeros(w * h * 3 // 2, dtype=np.uint8)
        self._y = self.buffer[: w * h].reshape(h, w)
        self._u = self.buffer[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        self._v = self.buffer[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        self.bands = (h + _BAND - 1) // _BAND
        self.dirty = np.ones(self.bands, dtype=bool)
        self._pad: Pixels | None = None
        self._reformatters: dict[int, Any] = {}

    def mark_rows(self, first: int, stop: int) -> None:
        """Rows ``first`` to ``stop - 1`` of the source frame changed."""
        self.dirty[first // _BAND : (stop - 1) // _BAND + 1] = True

    def mark_all(self) -> None:
        self.dirty[:] = True

    def _convert(self, rgb: Pixels, top: int) -> None:
        """swscale one band (C-contiguous rows of the canvas's width) into the planes."""
        rows = rgb.shape[0]
        reformatter = self._reformatters.get(rows)
        if reformatter is None:
            from av.video.reformatter import VideoReformatter

            reformatter = self._reformatters[rows] = VideoReformatter()
        source = self._av.VideoFrame.from_numpy_buffer(rgb, format="rgb24")
        out = reformatter.reformat(
            source,
            format="yuv420p",
            **_COLOURS,
            threads=1,
        )
        for plane, target, y in zip(
            out.planes, (self._y, self._u, self._v), (top, top // 2, top // 2), strict=True
        ):
            target[y : y + plane.height] = _pixels(plane)

    def update(self, pixels: Pixels) -> None:
        """Bring the canvas to ``pixels`` (converting only the dirty bands)."""
        height, width = pixels.shape[0], pixels.shape[1]
        if (width + (width & 1), height + (height & 1)) != (self.width, self.height):
            self._scaled(pixels)
            return
        padded = (width, height) != (self.width, self.height)
        if padded and self._pad is None:
            self._pad = np.empty((self.height, self.width, 3), dtype=np.uint8)
        for band in np.flatnonzero(self.dirty).tolist():
            top = band * _BAND
            bottom = min(top + _BAND, self.height)
            if not padded:
                self._convert(pixels[top:bottom], top)
                continue
            pad = self._pad
            assert pad is not None
            rows = min(bottom, height) - top
            pad[top : top + rows, :width] = pixels[top : top + rows]
            if self.width != width:
                pad[top : top + rows, width] = pixels[top : top + rows, width - 1]
            if bottom > height:  # the padding row repeats the last recorded row
                pad[height] = pad[height - 1]
            self._convert(pad[top:bottom], top)
        self.dirty[:] = False

    def _scaled(self, pixels: Pixels) -> None:
        """A frame of another size (a resolution change): scaled to the canvas."""
        source = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        out = source.reformat(
            width=self.width,
            height=self.height,
            format="yuv420p",
            **_COLOURS,
        )
        for plane, target in zip(out.planes, (self._y, self._u, self._v), strict=True):
            target[:] = _pixels(plane)
        self.dirty[:] = True  # the next frame of the canvas's own size converts in full

    def frame(self) -> Any:
        return self._av.VideoFrame.from_ndarray(
            self.buffer.reshape(self.height * 3 // 2, self.width), format="yuv420p"
        )


def _changed_rows(data: memoryview, record: RecordInfo, width: int, tile: int) -> list[int]:
    """The tile rows a delta record changes (empty for an unchanged frame)."""
    (count,) = _COUNT.unpack_from(data, record.offset)
    if count == 0:
        return []
    indices = np.frombuffer(data, dtype="<u4", count=count, offset=record.offset + _COUNT.size)
    cols = (width + tile - 1) // tile
    return np.unique(indices // cols).tolist()


class _Encoder:
    """libx264 into an MP4 container; frames arrive with their times in 1/90000 s."""

    def __init__(
        self,
        output: str | Path | BinaryIO,
        width: int,
        height: int,
        options: RenderOptions,
        nominal_fps: float,
    ) -> None:
        import av

        flags = []
        if options.fragmented:
            flags.append(FRAGMENTED_FLAGS)
        elif options.faststart:
            flags.append("+faststart")
        container_options = {"movflags": "+".join(flags)} if flags else {}
        if options.fragmented:
            container_options["frag_duration"] = str(_FRAGMENT_US)
        target = str(output) if isinstance(output, (str, Path)) else output
        self.container = av.open(target, mode="w", format="mp4", options=container_options)
        try:
            stream = self.container.add_stream("libx264")
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = TIME_BASE
            context = stream.codec_context
            context.time_base = TIME_BASE
            context.framerate = Fraction(round(max(1.0, nominal_fps) * 1000), 1000)
            context.gop_size = max(1, round(nominal_fps * _GOP_SECONDS))
            context.thread_count = options.threads
            context.color_range = 1  # MPEG (limited)
            context.colorspace = 1  # BT.709
            context.color_primaries = 1
            context.color_trc = 1
            # No B-frames: presentation order is decode order, the video starts at 0.
            stream.options = {"preset": options.preset, "crf": str(options.crf), "bf": "0"}
        except BaseException:
            self.container.close()
            raise
        self.stream = stream
        self._durations: dict[int, int] = {}
        self.frames = 0
        self._queue: queue.Queue[tuple[Any, int, int] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lucid-render-x264", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The encoder thread: x264 and the muxer (PyAV releases the GIL while x264 works,
        so the next picture is decoded and converted meanwhile)."""
        try:
            while not self._stop.is_set():
                item = self._queue.get()
                if item is None:
                    self._mux(self.stream.encode(None))
                    return
                frame, pts, duration = item
                frame.pts = pts
                frame.time_base = TIME_BASE
                self._durations[pts] = duration
                self._mux(self.stream.encode(frame))
        except BaseException as exc:  # raised again on the caller's thread
            self._error = exc

    def _put(self, item: tuple[Any, int, int] | None, cancelled: threading.Event) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if cancelled.is_set():
                raise RenderCancelled("the render was cancelled")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def encode(self, frame: Any, pts: int, duration: int, cancelled: threading.Event) -> None:
        self.frames += 1
        self._put((frame, pts, duration), cancelled)

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
            self.container.mux(packet)

    def finish(self, cancelled: threading.Event) -> None:
        self._put(None, cancelled)
        while self._thread.is_alive():
            self._thread.join(timeout=0.2)
            if cancelled.is_set():
                raise RenderCancelled("the render was cancelled")
        if self._error is not None:
            raise self._error
        self.container.close()

    def abandon(self) -> None:
        """Stop the encoder thread and close after an error; the output is incomplete.

        A thread blocked in a write (a client that stopped reading) is left to the
        writer's own abort; it exits at its next write."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            with contextlib.suppress(Exception):  # best effort: the first error matters
                self.container.close()


class _Prefetch:
    """Fetches the plaintext of each chunk in order on one thread, one chunk ahead."""

    def __init__(
        self,
        fetch: Callable[[ChunkRecord], bytes],
        chunks: Sequence[ChunkRecord],
        cancelled: threading.Event,
    ) -> None:
        self._queue: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(1)
        self._fetch = fetch
        self._chunks = chunks
        self._cancelled = cancelled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lucid-render-fetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for record in self._chunks:
            if self._stop.is_set():
                return
            try:
                item: tuple[bytes | None, BaseException | None] = (self._fetch(record), None)
            except BaseException as exc:  # handed to the consumer
                item = (None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return

    def next(self) -> bytes:
        while True:
            if self._cancelled.is_set():
                raise RenderCancelled("the render was cancelled")
            try:
                data, error = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if error is not None:
                raise error
            assert data is not None
            return data

    def close(self) -> None:
        self._stop.set()


def render_mp4(
    plan: RenderPlan,
    fetch: Callable[[ChunkRecord], bytes],
    output: str | Path | BinaryIO,
    options: RenderOptions,
    *,
    progress: Callable[[int], None] | None = None,
    cancelled: threading.Event | None = None,
) -> RenderResult:
    """Encode the planned range to ``output`` (a path, or a writable binary file object).

    ``fetch(chunk)`` returns a chunk's plaintext (decrypted, decompressed); it is called on
    another thread, in chunk order, one chunk ahead of the encoder. ``progress(n)`` is told
    the milliseconds of recording time done since its last call (they add up to the
    range's length). Setting ``cancelled`` stops the render with :class:`RenderCancelled`
    at the next frame. Blocking: run it on a worker thread from async code.
    """
    options.check()
    stop = cancelled or threading.Event()
    speed = options.speed
    start, end = plan.start_us, plan.end_us

    def pts(t_us: int) -> int:
        return round((t_us - start) * 90_000 / (1_000_000 * speed))

    encoder: _Encoder | None = None
    canvas: _Canvas | None = None
    last_pts = -1
    reported_ms = 0
    fetcher = _Prefetch(fetch, plan.chunks, stop)
    try:
        for index in range(len(plan.chunks)):
            data = fetcher.next()
            decoder = ChunkDecoder(data)
            view = memoryview(data)
            records = decoder.records
            following = (  # when the chunk's last frame leaves the screen
                plan.chunks[index + 1].start_us
                if index + 1 < len(plan.chunks)
                else plan.session_end_us  # or the next chunk's start, which is >= end
            )
            for i, (info, decoded) in enumerate(
                zip(records, decoder.frames(copy=False), strict=True)
            ):
                if stop.is_set():
                    raise RenderCancelled("the render was cancelled")
                if info.timestamp_us >= end:
                    break  # the rest of the chunk is after the range
                pixels = decoded.pixels
                height, width = pixels.shape[0], pixels.shape[1]
                if canvas is not None:
                    if info.kind == KEYFRAME:
                        canvas.mark_all()
                    elif info.kind == DELTA:
                        for row in _changed_rows(view, info, width, decoder.tile_size):
                            top = row * decoder.tile_size
                            canvas.mark_rows(top, min(top + decoder.tile_size, height))
                ts = info.timestamp_us
                nxt = records[i + 1].timestamp_us if i + 1 < len(records) else following
                shown_from, shown_to = max(ts, start), min(nxt, end)
                if shown_to <= shown_from:
                    continue  # before the range, or never on screen
                if canvas is None:
                    canvas = _Canvas(width, height)
                    fps = 1e6 * speed / max(1, plan.last_interval_us)
                    encoder = _Encoder(output, canvas.width, canvas.height, options, fps)
                assert encoder is not None
                canvas.update(pixels)
                frame_pts = max(pts(shown_from), last_pts + 1)
                duration = max(1, pts(shown_to) - frame_pts)
                encoder.encode(canvas.frame(), frame_pts, duration, stop)
                last_pts = frame_pts
                done_ms = (shown_to - start) // 1000
                if progress is not None and done_ms > reported_ms:
                    progress(done_ms - reported_ms)
                    reported_ms = done_ms
            del decoder, view, data
        if encoder is None or canvas is None:
            raise NotFoundError("the range holds no frame to render")
        encoder.finish(stop)
    except BaseException:
        if encoder is not None:
            encoder.abandon()
        raise
    finally:
        fetcher.close()
    total_ms = (end - start) // 1000
    if progress is not None and total_ms > reported_ms:
        progress(total_ms - reported_ms)
    return RenderResult(
        frames=encoder.frames,
        duration_s=(end - start) / 1e6 / speed,
        width=canvas.width,
        height=canvas.height,
        chunks=len(plan.chunks),
    )


async def render_session(
    datadir: DataDir,
    session_id: str,
    output: str | Path | BinaryIO,
    options: RenderOptions,
    *,
    progress: Callable[[int], None] | None = None,
    cancelled: threading.Event | None = None,
    on_plan: Callable[[RenderPlan], None] | None = None,
) -> RenderResult:
    """Render a session of a data directory (see :func:`render_mp4`) on a worker thread.

    ``on_plan`` sees the plan before the first frame (the CLI sizes its progress bar).
    """
    import asyncio

    from lucid_sessions.archive.keys import load_data_key

    session = await datadir.store.get_session(session_id)
    chunks = await datadir.store.list_chunks(session_id)
    plan = plan_render(session_id, chunks, options)
    if session.key_id is None:
        raise NotFoundError(f"session {session_id} has no data key")
    key = await load_data_key(datadir, session.key_id)
    stored = set(datadir.chunks.sequences(session_id))
    missing = [c.sequence for c in plan.chunks if c.sequence not in stored]
    if missing:
        raise ChunkNotFoundError(
            f"session {session_id} cannot be rendered: chunk {missing[0]} is not stored "
            f"({len(missing)} missing)"
        )
    if on_plan is not None:
        on_plan(plan)

    def fetch(record: ChunkRecord) -> bytes:
        data = datadir.chunks.get(session_id, record.sequence)
        return open_checked(
            data,
            record,
            session_id=session_id,
            key=key.key,
            hash_algorithm=session.hash_algorithm,
        )

    stop = cancelled or threading.Event()
    try:
        return await asyncio.to_thread(
            render_mp4, plan, fetch, output, options, progress=progress, cancelled=stop
        )
    except BaseException:
        stop.set()  # a cancelled await (Ctrl-C) stops the thread at its next frame
        raise
