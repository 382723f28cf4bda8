"""The sampling clock: grabs a capture source at a steady frame rate.

Ticks fall every ``1 / fps`` seconds from the start. A tick whose frame could not be
grabbed and handed on before the next tick was due is lost: the sampler skips to the next
tick in the future and counts every skipped tick as dropped. A grab that reports "known
unchanged" repeats the previous frame, which the codec stores in a few bytes. While
paused, nothing is grabbed; after resume, timestamps continue from the wall-clock time
elapsed since the start, so a pause is a gap in time with no frames in it.

The clock and the sleep are injectable, so tests can drive the sampler deterministically.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from lucid_sessions.capture.base import CaptureSource, Frame
from lucid_sessions.errors import CaptureError, InvalidConfigError

__all__ = ["FrameSink", "Sampler", "SamplerStats"]


class FrameSink(Protocol):
    """Where sampled frames go (a :class:`~lucid_sessions.archive.writer.SessionWriter`)."""

    async def add_frame(self, timestamp_us: int, pixels: Frame) -> None: ...

    def note_dropped(self, count: int = 1) -> None: ...


@dataclass(slots=True)
class SamplerStats:
    captured: int = 0
    """Frames handed to the sink (unchanged ones included)."""
    dropped: int = 0
    unchanged: int = 0
    """Grabs the source reported as unchanged."""
    first_us: int | None = None
    last_us: int | None = None
    paused_s: float = 0.0
    stop_reason: str | None = None
    lost_source: str | None = None
    """Why the capture source went away, if it did."""
    resolutions: set[tuple[int, int]] = field(default_factory=set)

    def summary(self) -> dict[str, object]:
        """The figures a session keeps about its recording (JSON-safe)."""
        return {
            "frames_captured": self.captured,
            "frames_dropped": self.dropped,
            "frames_unchanged": self.unchanged,
            "effective_fps": round(self.effective_fps, 3),
            "paused_s": round(self.paused_s, 3),
            "stop_reason": self.stop_reason,
            "resolutions": sorted(f"{w}x{h}" for w, h in self.resolutions),
        }

    @property
    def effective_fps(self) -> float:
        if self.first_us is None or self.last_us is None or self.last_us == self.first_us:
            return 0.0
        recorded = (self.last_us - self.first_us) / 1e6 - self.paused_s
        return (self.captured - 1) / recorded if recorded > 0 else 0.0


class Sampler:
    """Samples ``source`` into ``sink`` at ``fps`` until stopped, timed out or the source dies."""

    def __init__(
        self,
        source: CaptureSource,
        sink: FrameSink,
        *,
        fps: float,
        duration_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        grab: Callable[[], Awaitable[Frame | None]] | None = None,
    ) -> None:
        if not 1 <= fps <= 120:
            raise InvalidConfigError(f"frame rate must be 1 to 120 fps, not {fps}")
        self.source = source
        self.sink = sink
        self.interval = 1.0 / fps
        self.duration_s = duration_s
        self._clock = clock
        self._sleep = sleep
        self._grab = grab or (lambda: asyncio.to_thread(source.grab))
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self.stats = SamplerStats()
        self.started: float | None = None
        """Clock reading at timestamp 0, once running."""
        self._last: Frame | None = None

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self, reason: str = "stopped") -> None:
        if self.stats.stop_reason is None:
            self.stats.stop_reason = reason
        self._stop.set()
        self._running.set()

    async def run(self) -> SamplerStats:
        """Sample until :meth:`stop`, the duration, or the source's death."""
        start = self.started = self._clock()
        base, tick = start, 0  # tick n is due at base + n * interval
        stats = self.stats
        while not self._stop.is_set():
            if not self._running.is_set():
                paused_at = self._clock()
                await self._running.wait()
                resumed = self._clock()
                stats.paused_s += resumed - paused_at
                base, tick = resumed, 0
                continue
            now = self._clock()
            if self.duration_s is not None and now - start >= self.duration_s:
                self._count_missed(base + tick * self.interval, start + self.duration_s)
                self.stop("duration")
                break
            due = base + tick * self.interval
            if now < due:
                await self._sleep(due - now)
                continue
            late = int((now - due) / self.interval)
            if late:
                stats.dropped += late
                self.sink.note_dropped(late)
            tick += late + 1
            if not self.source.alive():
                stats.lost_source = "the capture source went away"
                self.stop("source lost")
                break
            captured_at = self._clock()
            try:
                pixels = await self._grab()
            except CaptureError as exc:
                stats.lost_source = exc.message
                self.stop("source lost")
                break
            if pixels is None:
                if self._last is None:
                    continue
                stats.unchanged += 1
                pixels = self._last
            self._last = pixels
            timestamp_us = round((captured_at - start) * 1e6)
            if stats.last_us is not None and timestamp_us < stats.last_us:
                timestamp_us = stats.last_us
            await self.sink.add_frame(timestamp_us, pixels)
            stats.captured += 1
            stats.resolutions.add((int(pixels.shape[1]), int(pixels.shape[0])))
            if stats.first_us is None:
                stats.first_us = timestamp_us
            stats.last_us = timestamp_us
        if self.stats.stop_reason not in ("duration", "source lost") and self._running.is_set():
            self._count_missed(base + tick * self.interval, self._clock())
        return stats

    def _count_missed(self, due: float, end: float) -> None:
        """Count the ticks due in [due, end) that were never taken as dropped."""
        if end <= due:
            return
        missed = int((end - due) / self.interval - 1e-9) + 1
        self.stats.dropped += missed
        self.sink.note_dropped(missed)
