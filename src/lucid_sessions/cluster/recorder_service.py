"""The recorder component: live captures cut into chunks and handed to the pipeline.

One recording per session: a capture source, a :class:`~lucid_sessions.recorder.sampler.
Sampler` at the session's frame rate, and a :class:`~lucid_sessions.recording.chunker.
Chunker`. Closed chunks go to the pipeline's ``submit_chunk`` (which may wait: that is the
backpressure that makes the sampler count dropped frames). However a recording ends, the
last chunk is flushed and the pipeline is told with ``recording_ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lucid_sessions.capture import (
    CaptureSource,
    IngestSource,
    RdpConfig,
    RdpSource,
    X11Source,
)
from lucid_sessions.cluster.interfaces import (
    CaptureSpec,
    Pipeline,
    RecorderStatus,
    RecordingEnd,
    Unavailable,
)
from lucid_sessions.errors import (
    AlreadyExistsError,
    InvalidConfigError,
    LucidError,
    NotRecordingError,
)
from lucid_sessions.recorder.sampler import Sampler
from lucid_sessions.recording.chunker import Chunker, RawChunk
from lucid_sessions.recording.codec import Pixels

__all__ = ["RecorderService", "open_source"]

log = logging.getLogger(__name__)

SUBMIT_RETRIES = 8
"""Attempts to hand a chunk to an unreachable pipeline (backoff up to 5 s, ~25 s in all)."""


def open_source(spec: CaptureSpec) -> CaptureSource:
    """The capture source a spec asks for (not started)."""
    settings = spec.settings
    if spec.source == "rdp":
        return RdpSource(
            RdpConfig(
                host=str(settings.get("host", "")),
                port=int(settings.get("port", 3389)),
                username=str(settings.get("username", "")),
                password=spec.password,
                domain=str(settings.get("domain", "")),
                security=settings.get("security", "nla"),
                ignore_cert=bool(settings.get("ignore_cert", True)),
                width=spec.width,
                height=spec.height,
            )
        )
    if spec.source == "x11":
        return X11Source(str(settings.get("display", "")))
    if spec.source == "ingest":
        return IngestSource(spec.width, spec.height)
    raise InvalidConfigError(f"unknown capture source {spec.source!r}")


class _ChunkSink:
    """Sampler sink: frames into the chunker, closed chunks to the pipeline."""

    def __init__(self, session_id: str, chunker: Chunker, pipeline: Pipeline) -> None:
        self.session_id = session_id
        self.chunker = chunker
        self.pipeline = pipeline
        self.chunks = 0
        self.last_sequence = -1

    async def add_frame(self, timestamp_us: int, pixels: Pixels) -> None:
        closed = await asyncio.to_thread(self.chunker.add, timestamp_us, pixels)
        if closed is not None:
            await self._submit(closed)

    async def _submit(self, raw: RawChunk) -> None:
        """Hand a chunk on, retrying while the pipeline is unreachable (submit_chunk is
        idempotent per sequence); the sampler counts the frames missed meanwhile."""
        delay = 0.2
        for attempt in range(SUBMIT_RETRIES + 1):
            try:
                await self.pipeline.submit_chunk(self.session_id, raw)
                break
            except Unavailable:
                if attempt == SUBMIT_RETRIES:
                    raise
                log.warning("pipeline unreachable, retrying chunk %d", raw.sequence)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.chunks += 1
        self.last_sequence = raw.sequence

    def note_dropped(self, count: int = 1) -> None:
        self.chunker.note_dropped(count)

    async def flush(self) -> None:
        last = self.chunker.flush()
        if last is not None:
            await self._submit(last)


@dataclass(slots=True)
class _Recording:
    source: CaptureSource
    sampler: Sampler
    sink: _ChunkSink
    task: asyncio.Task[None] | None = None
    ended: bool = False


class RecorderService:
    """Implements :class:`~lucid_sessions.cluster.interfaces.Recorder`."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        source_factory: Callable[[CaptureSpec], CaptureSource] = open_source,
    ) -> None:
        self.pipeline = pipeline
        self._factory = source_factory
        self._recordings: dict[str, _Recording] = {}

    async def start(self, session_id: str, spec: CaptureSpec) -> None:
        if session_id in self._recordings and not self._recordings[session_id].ended:
            raise AlreadyExistsError(f"session {session_id} is already recording")
        source = self._factory(spec)
        await asyncio.to_thread(source.start)
        bounds: dict[str, int] = {}
        if spec.max_duration_us:
            bounds["max_duration_us"] = spec.max_duration_us
        if spec.max_bytes:
            bounds["max_bytes"] = spec.max_bytes
        sink = _ChunkSink(session_id, Chunker(**bounds), self.pipeline)
        sampler = Sampler(source, sink, fps=spec.fps)
        recording = _Recording(source, sampler, sink)
        self._recordings[session_id] = recording
        recording.task = asyncio.create_task(self._run(session_id, recording))

    async def _run(self, session_id: str, recording: _Recording) -> None:
        failure: str | None = None
        try:
            await recording.sampler.run()
            await recording.sink.flush()
        except asyncio.CancelledError:
            failure = "the recorder was shut down"
        except LucidError as exc:
            failure = exc.message
        except Exception as exc:  # never lose the end of a recording
            log.exception("recording of %s failed", session_id)
            failure = f"recording failed: {exc}"
        finally:
            await asyncio.to_thread(recording.source.stop)
        stats = recording.sampler.stats
        reason = failure or stats.lost_source
        end = RecordingEnd(
            session_id=session_id,
            interrupted=reason is not None,
            reason=reason,
            last_sequence=recording.sink.last_sequence,
            stats=stats.summary(),
        )
        recording.ended = True
        try:
            await asyncio.shield(self.pipeline.recording_ended(end))
        except LucidError as exc:
            log.error("could not report the end of %s: %s", session_id, exc.message)

    def _get(self, session_id: str) -> _Recording:
        recording = self._recordings.get(session_id)
        if recording is None:
            raise NotRecordingError(f"session {session_id} is not recording here")
        return recording

    async def stop(self, session_id: str) -> None:
        """Stop sampling and wait until the pipeline has been told the recording ended."""
        recording = self._recordings.get(session_id)
        if recording is None:
            return
        recording.sampler.stop("stopped")
        if recording.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await recording.task
        self._recordings.pop(session_id, None)

    async def pause(self, session_id: str) -> None:
        self._get(session_id).sampler.pause()

    async def resume(self, session_id: str) -> None:
        self._get(session_id).sampler.resume()

    async def status(self, session_id: str) -> RecorderStatus:
        recording = self._get(session_id)
        stats = recording.sampler.stats
        state = (
            "ended" if recording.ended else "paused" if recording.sampler.paused else "recording"
        )
        return RecorderStatus(
            session_id=session_id,
            state=state,
            captured=stats.captured,
            dropped=stats.dropped,
            unchanged=stats.unchanged,
            effective_fps=stats.effective_fps,
            chunks=recording.sink.chunks,
        )

    async def push_frame(self, session_id: str, timestamp_us: int | None, pixels: Pixels) -> None:
        source = self._get(session_id).source
        if not isinstance(source, IngestSource):
            raise InvalidConfigError(f"session {session_id} does not record an ingest source")
        source.push(timestamp_us, pixels)

    async def close(self) -> None:
        """Stop every recording; each is reported to the pipeline as it ends."""
        for session_id in list(self._recordings):
            await self.stop(session_id)
