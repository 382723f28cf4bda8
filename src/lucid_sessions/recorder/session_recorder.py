"""Recording one live session: capture source -> sampler -> session writer -> manifest.

The source is connected before the session exists, so refused credentials or an
unreachable host leave no session behind. Once recording, every way of ending (stop,
duration, Ctrl-C, SIGTERM, the remote side dying, a storage failure) finalises the
session with every chunk that reached storage: ``completed`` when it was asked to stop,
``interrupted`` (with the reason) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lucid_sessions.archive.writer import SessionWriter
from lucid_sessions.capture.base import CaptureSource
from lucid_sessions.manifest import Manifest
from lucid_sessions.recorder.sampler import Sampler, SamplerStats
from lucid_sessions.storage.datadir import DataDir

__all__ = ["RecordingResult", "SessionRecorder", "Status"]


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot for the live status line."""

    session_id: str
    elapsed_s: float
    fps: float
    captured: int
    dropped: int
    unchanged: int
    chunks: int
    raw_bytes: int
    stored_bytes: int
    level: int
    paused: bool


@dataclass(frozen=True, slots=True)
class RecordingResult:
    session_id: str
    status: str
    reason: str | None
    manifest: Manifest
    stats: SamplerStats


class SessionRecorder:
    """Records ``source`` into a new session. Call :meth:`run`; control it with
    :meth:`pause`, :meth:`resume` and :meth:`stop` from the same event loop."""

    def __init__(
        self,
        datadir: DataDir,
        source: CaptureSource,
        *,
        name: str,
        fps: float = 10,
        quality: str = "medium",
        duration_s: float | None = None,
        config: Mapping[str, Any] | None = None,
        project: str | None = None,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        max_duration_us: int | None = None,
        on_status: Callable[[Status], None] | None = None,
        status_interval_s: float = 1.0,
    ) -> None:
        self.datadir = datadir
        self.source = source
        self.name = name
        self.fps = fps
        self.quality = quality
        self.duration_s = duration_s
        self.config = dict(config or {})
        self.labels = {"project": project, "environment": environment, "tags": tags}
        self.max_duration_us = max_duration_us
        self.on_status = on_status
        self.status_interval_s = status_interval_s
        self.sampler: Sampler | None = None
        self.writer: SessionWriter | None = None
        self._stop_requested: str | None = None
        self._started = 0.0

    def pause(self) -> None:
        if self.sampler is not None:
            self.sampler.pause()

    def resume(self) -> None:
        if self.sampler is not None:
            self.sampler.resume()

    def stop(self, reason: str = "stopped") -> None:
        self._stop_requested = self._stop_requested or reason
        if self.sampler is not None:
            self.sampler.stop(reason)

    def status(self) -> Status | None:
        writer, sampler = self.writer, self.sampler
        if writer is None or sampler is None:
            return None
        stats = sampler.stats
        return Status(
            session_id=writer.session_id,
            elapsed_s=time.monotonic() - self._started,
            fps=stats.effective_fps,
            captured=stats.captured,
            dropped=stats.dropped,
            unchanged=stats.unchanged,
            chunks=writer.chunks_stored,
            raw_bytes=writer.raw_bytes,
            stored_bytes=writer.stored_bytes,
            level=writer.level,
            paused=sampler.paused,
        )

    async def run(self) -> RecordingResult:
        """Connect, record until told to stop or the source dies, finalise."""
        await asyncio.to_thread(self.source.start)
        try:
            return await self._record()
        finally:
            await asyncio.to_thread(self.source.stop)

    async def _record(self) -> RecordingResult:
        bounds = {} if self.max_duration_us is None else {"max_duration_us": self.max_duration_us}
        writer = await SessionWriter.create(
            self.datadir,
            name=self.name,
            quality=self.quality,
            fps=self.fps,
            config=self.config,
            adaptive=True,
            project=self.labels["project"],  # type: ignore[arg-type]
            environment=self.labels["environment"],  # type: ignore[arg-type]
            tags=self.labels["tags"],  # type: ignore[arg-type]
            **bounds,
        )
        self.writer = writer
        sampler = Sampler(self.source, writer, fps=self.fps, duration_s=self.duration_s)
        self.sampler = sampler
        if self._stop_requested:
            sampler.stop(self._stop_requested)
        self._started = time.monotonic()
        reporter = asyncio.create_task(self._report()) if self.on_status else None
        failure: str | None = None
        try:
            await sampler.run()
        except asyncio.CancelledError:
            sampler.stop("cancelled")
            failure = "recording cancelled"
        except Exception as exc:  # storage or pipeline failure: keep what was stored
            failure = f"recording failed: {getattr(exc, 'message', None) or exc}"
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
        stats = sampler.stats
        reason = failure or stats.lost_source
        status = "interrupted" if reason else "completed"
        manifest = await asyncio.shield(self._finalise(writer, stats, status, reason))
        return RecordingResult(writer.session_id, status, reason, manifest, stats)

    async def _finalise(
        self, writer: SessionWriter, stats: SamplerStats, status: str, reason: str | None
    ) -> Manifest:
        await writer.datadir.store.update_session(
            writer.session_id,
            {"stats": stats.summary()},
        )
        return await writer.finish(status=status, reason=reason)

    async def _report(self) -> None:
        assert self.on_status is not None
        while True:
            await asyncio.sleep(self.status_interval_s)
            snapshot = self.status()
            if snapshot is not None:
                self.on_status(snapshot)
