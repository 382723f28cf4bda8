"""The sampling clock, driven by an injected clock: steady ticks, drops, pause, death."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lucid_sessions.errors import CaptureConnectionError
from lucid_sessions.recorder.sampler import Sampler


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeSource:
    """A screen whose content changes on the frames listed; costs ``grab_s`` per grab."""

    def __init__(self, clock: FakeClock, *, grab_s: float = 0.0, die_at: float | None = None):
        self.clock = clock
        self.grab_s = grab_s
        self.die_at = die_at
        self.grabs = 0
        self.unchanged_every = 0

    def alive(self) -> bool:
        return self.die_at is None or self.clock.now < self.die_at

    async def grab(self):
        self.grabs += 1
        self.clock.now += self.grab_s
        if self.die_at is not None and self.clock.now >= self.die_at:
            raise CaptureConnectionError("server went away")
        if self.unchanged_every and self.grabs % self.unchanged_every == 0:
            return None
        return np.full((8, 8, 3), self.grabs % 256, np.uint8)


class Sink:
    def __init__(self, clock: FakeClock, cost_s: float = 0.0) -> None:
        self.frames: list[int] = []
        self.dropped = 0
        self.clock = clock
        self.cost_s = cost_s

    async def add_frame(self, timestamp_us: int, pixels) -> None:
        self.frames.append(timestamp_us)
        self.clock.now += self.cost_s

    def note_dropped(self, count: int = 1) -> None:
        self.dropped += count


def _sampler(clock, source, sink, **kwargs) -> Sampler:
    return Sampler(source, sink, clock=clock, sleep=clock.sleep, grab=source.grab, **kwargs)


def test_ticks_fall_at_the_configured_rate_and_stop_at_the_duration():
    clock = FakeClock()
    source, sink = FakeSource(clock), Sink(clock)
    stats = asyncio.run(_sampler(clock, source, sink, fps=10, duration_s=2.0).run())
    assert sink.frames == [i * 100_000 for i in range(20)]
    assert stats.dropped == 0 and stats.stop_reason == "duration"
    assert stats.effective_fps == pytest.approx(10.0)


def test_a_slow_pipeline_drops_the_ticks_it_missed_and_counts_them():
    clock = FakeClock()
    source, sink = FakeSource(clock), Sink(clock, cost_s=0.25)  # each frame costs 2.5 ticks
    stats = asyncio.run(_sampler(clock, source, sink, fps=10, duration_s=3.0).run())
    assert stats.captured == len(sink.frames) == 12
    assert stats.dropped == sink.dropped == 18
    assert stats.captured + stats.dropped == 30


def test_unchanged_grabs_repeat_the_previous_frame_and_are_counted():
    clock = FakeClock()
    source, sink = FakeSource(clock), Sink(clock)
    source.unchanged_every = 2
    stats = asyncio.run(_sampler(clock, source, sink, fps=5, duration_s=2.0).run())
    assert stats.captured == 10 and stats.unchanged == 5


def test_pause_leaves_a_gap_in_time_with_no_frames():
    clock = FakeClock()
    source, sink = FakeSource(clock), Sink(clock)
    sampler = _sampler(clock, source, sink, fps=10, duration_s=4.0)

    async def scenario() -> None:
        task = asyncio.create_task(sampler.run())
        while clock.now < 1.0:
            await asyncio.sleep(0)
        sampler.pause()
        await asyncio.sleep(0.01)
        clock.now += 2.0  # two seconds pass while paused
        sampler.resume()
        await task

    asyncio.run(scenario())
    gaps = [b - a for a, b in zip(sink.frames, sink.frames[1:], strict=False)]
    assert max(gaps) >= 2_000_000
    assert sum(1 for g in gaps if g > 100_000) == 1
    assert sampler.stats.paused_s == pytest.approx(2.0, abs=0.11)
    assert sampler.stats.dropped == 0


def test_the_source_dying_stops_sampling_with_its_reason():
    clock = FakeClock()
    source, sink = FakeSource(clock, die_at=1.05), Sink(clock)
    stats = asyncio.run(_sampler(clock, source, sink, fps=10).run())
    assert stats.stop_reason == "source lost"
    assert "went away" in (stats.lost_source or "")
    assert len(sink.frames) == 11


@pytest.mark.parametrize("fps", [0, 121])
def test_frame_rates_outside_1_to_120_are_refused(fps):
    clock = FakeClock()
    with pytest.raises(Exception, match="1 to 120"):
        _sampler(clock, FakeSource(clock), Sink(clock), fps=fps)
