"""Recorder benchmark: live frames through sampler, chunker and chunk pipeline, in real time.

A script that prints figures, never a pass/fail test. Progress goes to stderr, figures to
stdout (one JSON document instead with ``--json``). ``bench/README.md`` explains each figure.

Phases
------
ingest
    1920x1080 at 60 fps. A feeder thread pushes pre-generated
    :class:`~lucid_sessions.recording.synthetic.DesktopScene` frames in real time into an
    :class:`~lucid_sessions.capture.IngestSource`. First a baseline (the same sampler and
    source into a sink that keeps nothing: the capture side alone), then a
    :class:`~lucid_sessions.recorder.session_recorder.SessionRecorder` recording it.
x11
    1920x1080 at 60 fps from a private Xvfb showing ``scripts/rdp_test_app.py`` (a Tk window
    asked to redraw a counter, a clock and moving shapes 60 times a second), grabbed through
    :class:`~lucid_sessions.capture.X11Source`: baseline, then recording. Xvfb and the Tk
    app run on the same two cores and their CPU is shown.
concurrency
    K recorders at 1280x720 and 5 fps in one event loop, each with its own ingest source fed
    by one feeder thread (one scene seed per session), for K = 1, 2, 4, 8, 16, 24, 32, ...
    up to ``--max-sessions``; a ladder stops at the first K with a dropped tick. First all
    sessions start at once, so their chunks close at the same moments (the worst case); if
    that ladder stops, a second one goes on from there with starts spread over one chunk
    period, as independent sessions would be.

Frames are generated before any clock starts and replayed in a loop (one 5 s period of the
scene, which includes the document's 1 s scroll burst). Every phase records into its own
temporary data directory, removed afterwards; every child process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lucid_sessions
from benchlib import Report, version
from lucid_sessions.capture import IngestSource, PrivateDisplay, X11Source
from lucid_sessions.capture.base import CaptureSource, Frame
from lucid_sessions.chunkfile import QUALITY_LEVELS
from lucid_sessions.errors import CaptureError
from lucid_sessions.recorder.sampler import Sampler, SamplerStats
from lucid_sessions.recorder.session_recorder import RecordingResult, SessionRecorder
from lucid_sessions.recording.synthetic import DesktopScene
from lucid_sessions.storage.datadir import DataDir

MB = 1_000_000  # figures are in decimal megabytes
FULL_HD = (1920, 1080)
HD = (1280, 720)
FAST_FPS = 60.0
SLOW_FPS = 5.0
QUALITY = "medium"
SCENE_PERIOD_S = 5.0  # DesktopScene's document scrolls for 1 s every 5 s
SEED_FPS = 60  # what the seed asks: 60 fps per session ...
SEED_SESSIONS = 100  # ... and 100 concurrent sessions
PHASES = ("ingest", "x11", "concurrency")
APP = Path(__file__).resolve().parent.parent / "scripts" / "rdp_test_app.py"
APP_READY_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 10.0
LAG_PROBE_S = 0.05
SPREAD_S = 5.0  # at 1280x720, 5 fps the scene's frames fill a 16 MiB chunk in about 5 s


# -- machine facts ---------------------------------------------------------------------------


def _proc_line(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def machine_facts() -> dict[str, Any]:
    memory = _proc_line("/proc/meminfo", "MemTotal")
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_line("/proc/cpuinfo", "model name") or platform.processor(),
        "memory": memory or "unknown",
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "lucid_sessions": lucid_sessions.__version__,
        "numpy": version("numpy"),
        "zstandard": version("zstandard"),
        "mss": version("mss"),
        "Xvfb": shutil.which("Xvfb") or "not installed",
    }


# -- CPU accounting --------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
FEEDER = "feeder (the bench's agent)"
_ROLES = (
    ("MainThread", "event loop (main thread)"),
    ("asyncio_", "to_thread pool: grab, chunker, writes"),
    ("lucid-chunk", "writer pools: zstd, AEAD, hash"),
    ("bench-feeder", FEEDER),
    ("bench-cpu", "this CPU monitor"),
)
EXITED = "exited between samples"


def process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_s() -> float | None:
    """CPU seconds all processes have used so far (every CPU's non-idle time), if readable."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    # "cpu  user nice system idle iowait irq softirq steal ...": idle and iowait are not busy
    values = [int(v) for v in first.split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


def _stat_ticks(path: str) -> int | None:
    """utime + stime of a /proc stat file, in clock ticks."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def pid_cpu_s(pid: int | None) -> float | None:
    """CPU seconds used so far by another process (its threads included), if readable."""
    if pid is None:
        return None
    ticks = _stat_ticks(f"/proc/{pid}/stat")
    return None if ticks is None else ticks / _CLK_TCK


def _role(name: str) -> str:
    for prefix, role in _ROLES:
        if name.startswith(prefix):
            return role
    return "other threads"


class ThreadCpu:
    """CPU seconds of this process's threads by role, sampled from ``/proc/self/task``.

    A thread that exits between two samples loses up to one period of CPU; the process
    total minus the attributed seconds is shown as "exited between samples". Also keeps
    the peak number of live threads. Without ``/proc`` every figure is empty.
    """

    def __init__(self, period_s: float = 0.5) -> None:
        self._period_s = period_s
        self._first: dict[int, int] = {}
        self._last: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self.peak_threads = 0

    def _sample(self) -> dict[int, int]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        self.peak_threads = max(self.peak_threads, len(names))
        seen: dict[int, int] = {}
        with contextlib.suppress(OSError):
            for entry in os.listdir("/proc/self/task"):
                ticks = _stat_ticks(f"/proc/self/task/{entry}/stat")
                if ticks is None:
                    continue
                tid = int(entry)
                role = self._last[tid][0] if tid in self._last else _role(names.get(tid, ""))
                self._last[tid] = (role, ticks)
                seen[tid] = ticks
        return seen

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._sample()

    def start(self) -> None:
        self._first = self._sample()
        self._thread.start()

    def stop(self, process_cpu: float) -> dict[str, float]:
        """CPU seconds by role since :meth:`start`; ``process_cpu`` is the process's delta."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        self._sample()
        roles: dict[str, float] = {}
        for tid, (role, ticks) in self._last.items():
            seconds = (ticks - self._first.get(tid, 0)) / _CLK_TCK
            roles[role] = roles.get(role, 0.0) + seconds
        if self._last:
            roles[EXITED] = max(0.0, process_cpu - sum(roles.values()))
        return {role: round(seconds, 2) for role, seconds in roles.items() if seconds > 0}


async def _probe_loop_lag(lags: list[float]) -> None:
    """How late the event loop wakes a sleeper: a direct measure of a saturated loop."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_PROBE_S)
        lags.append(time.monotonic() - started - LAG_PROBE_S)


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- frames and feeding ----------------------------------------------------------------------


def frame_bank(width: int, height: int, fps: float, seed: int) -> list[Frame]:
    """One scene period of frames (``SCENE_PERIOD_S * fps``), generated up front."""
    scene = DesktopScene(width=width, height=height, fps=fps, seed=seed)
    return [scene.frame(i) for i in range(round(SCENE_PERIOD_S * fps))]


class Feeder:
    """Pushes frames into ingest sources at a steady rate from its own thread.

    Tick ``n`` pushes frame ``n`` (modulo its bank) to every target at ``start + n / fps``.
    Ticks the thread reaches more than one interval late are skipped and counted in
    ``late_ticks``, so the feed stays in real time. A source that refuses frames (its
    recorder stopped it) leaves the feed; the thread ends when none is left or on
    :meth:`stop`.
    """

    def __init__(self, targets: Sequence[tuple[IngestSource, Sequence[Frame]]], fps: float) -> None:
        self._targets = list(targets)
        self._interval = 1.0 / fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)
        self.fed = threading.Event()
        """Set once every target has its first frame."""
        self.pushed = 0
        self.late_ticks = 0
        self.max_lag_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)

    def _run(self) -> None:
        live = list(self._targets)
        start = time.monotonic()
        tick = 0
        while live and not self._stop.is_set():
            delay = start + tick * self._interval - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            self.max_lag_s = max(self.max_lag_s, -delay)
            behind = int(-delay / self._interval)
            self.late_ticks += behind
            tick += behind
            for target in list(live):
                source, bank = target
                try:
                    source.push(None, bank[tick % len(bank)])
                except CaptureError:
                    live.remove(target)
                    continue
                self.pushed += 1
            self.fed.set()
            tick += 1


class NullSink:
    """A frame sink that keeps nothing: what the capture side costs on its own."""

    async def add_frame(self, timestamp_us: int, pixels: Frame) -> None:
        return None

    def note_dropped(self, count: int = 1) -> None:
        return None


# -- one measured run ------------------------------------------------------------------------


@dataclass
class Run:
    """The figures of one recording (or baseline) run."""

    label: str
    seconds: float
    fps: float
    status: str
    captured: int
    dropped: int
    unchanged: int
    effective_fps: float
    wall_s: float
    cpu_s: float
    machine_cpu_s: float | None
    """CPU used by every process on the machine meanwhile, this one included."""
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    cpu_by_thread: dict[str, float]
    peak_threads: int
    chunks: int | None = None
    raw_bytes: int | None = None
    plain_bytes: int | None = None
    stored_bytes: int | None = None
    levels: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_pct(self) -> float:
        """Process CPU as a percentage of one core (200 % = both cores of a 2-core machine)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def others_pct(self) -> float | None:
        """CPU of other processes (not this one, nor its Xvfb and app) as % of one core."""
        if self.machine_cpu_s is None or self.wall_s <= 0:
            return None
        children = sum(self.extra.get(k) or 0.0 for k in ("xvfb_cpu_s", "app_cpu_s"))
        return max(0.0, 100.0 * (self.machine_cpu_s - self.cpu_s - children) / self.wall_s)

    def to_dict(self) -> dict[str, Any]:
        others = self.others_pct
        return {
            **asdict(self),
            "cpu_pct_of_one_core": round(self.cpu_pct, 1),
            "other_processes_cpu_pct": None if others is None else round(others, 1),
        }


class Measure:
    """Wall time, process CPU, CPU by thread and event-loop lag around a block of awaits."""

    def __init__(self) -> None:
        self._threads = ThreadCpu()
        self._lags: list[float] = []
        self._probe: asyncio.Task[None] | None = None
        self.wall_s = self.cpu_s = 0.0
        self.machine_cpu_s: float | None = None
        self._machine0: float | None = None
        self.by_thread: dict[str, float] = {}

    async def __aenter__(self) -> Measure:
        self._threads.start()
        self._probe = asyncio.create_task(_probe_loop_lag(self._lags))
        self._wall0, self._cpu0 = time.monotonic(), process_cpu_s()
        self._machine0 = machine_busy_s()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.wall_s = time.monotonic() - self._wall0
        self.cpu_s = process_cpu_s() - self._cpu0
        machine = machine_busy_s()
        if machine is not None and self._machine0 is not None:
            self.machine_cpu_s = machine - self._machine0
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        self.by_thread = self._threads.stop(self.cpu_s)

    def figures(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "machine_cpu_s": None if self.machine_cpu_s is None else round(self.machine_cpu_s, 2),
            "loop_lag_p99_ms": round(_pct(self._lags, 0.99) * 1e3, 1),
            "loop_lag_max_ms": round(max(self._lags, default=0.0) * 1e3, 1),
            "cpu_by_thread": self.by_thread,
            "peak_threads": self._threads.peak_threads,
        }


async def run_baseline(source: CaptureSource, *, label: str, fps: float, seconds: float) -> Run:
    """Sample ``source`` into a :class:`NullSink`: no chunker, no processing, no storage."""
    async with Measure() as measure:
        await asyncio.to_thread(source.start)
        try:
            stats = await Sampler(source, NullSink(), fps=fps, duration_s=seconds).run()
        finally:
            await asyncio.to_thread(source.stop)
    return _run(label, fps, seconds, "baseline", stats, measure)


async def run_recorder(
    datadir: DataDir, source: CaptureSource, *, label: str, fps: float, seconds: float
) -> Run:
    """Record ``source`` with a :class:`SessionRecorder`; wall and CPU include finalising."""
    recorder = SessionRecorder(
        datadir, source, name=label, fps=fps, quality=QUALITY, duration_s=seconds
    )
    async with Measure() as measure:
        result = await recorder.run()
    run = _run(label, fps, seconds, result.status, result.stats, measure)
    await _add_chunk_figures(datadir, [result.session_id], run)
    return run


def _run(
    label: str, fps: float, seconds: float, status: str, stats: SamplerStats, measure: Measure
) -> Run:
    return Run(
        label=label,
        seconds=seconds,
        fps=fps,
        status=status,
        captured=stats.captured,
        dropped=stats.dropped,
        unchanged=stats.unchanged,
        effective_fps=round(stats.effective_fps, 2),
        **measure.figures(),
    )


async def _add_chunk_figures(datadir: DataDir, session_ids: Sequence[str], run: Run) -> None:
    records = [r for sid in session_ids for r in await datadir.store.list_chunks(sid)]
    run.chunks = len(records)
    run.raw_bytes = sum(r.raw_bytes for r in records)
    run.plain_bytes = sum(r.plain_size for r in records)
    run.stored_bytes = sum(r.stored_size for r in records)
    run.levels = sorted({r.level for r in records})


@contextlib.contextmanager
def data_dir(root: Path, name: str) -> Iterator[Path]:
    """A fresh folder for one run's data directory, removed afterwards."""
    path = root / name
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _open_and_run(path: Path, record: Callable[[DataDir], Awaitable[Run]]) -> Run:
    datadir = DataDir.open(path, create=True)
    try:
        return await record(datadir)
    finally:
        await datadir.close()


# -- phase 1: ingest at 1080p60 --------------------------------------------------------------


async def ingest_run(
    bank: Sequence[Frame], seconds: float, workdir: Path | None, *, label: str
) -> Run:
    """One run on a fresh ingest source fed at 60 fps; a recording when ``workdir`` is set."""
    source = IngestSource(*FULL_HD)
    source.start()  # SessionRecorder.run() starts it again, which is a no-op
    feeder = Feeder([(source, bank)], FAST_FPS)
    feeder.start()
    try:
        await asyncio.to_thread(feeder.fed.wait, JOIN_TIMEOUT_S)
        if workdir is None:
            run = await run_baseline(source, label=label, fps=FAST_FPS, seconds=seconds)
        else:
            with data_dir(workdir, "ingest") as path:
                run = await _open_and_run(
                    path,
                    lambda d: run_recorder(d, source, label=label, fps=FAST_FPS, seconds=seconds),
                )
    finally:
        feeder.stop()
        source.stop()
    run.extra.update(
        pushed=feeder.pushed,
        superseded=source.superseded,
        queue_dropped=source.dropped,
        feeder_late_ticks=feeder.late_ticks,
    )
    return run


async def ingest_phase(report: Report, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    width, height = FULL_HD
    report.progress(f"generating {SCENE_PERIOD_S * FAST_FPS:.0f} frames at {width}x{height}")
    started = time.monotonic()
    bank = frame_bank(width, height, FAST_FPS, seed=0)
    generated = time.monotonic() - started
    report.progress(f"ingest baseline: {args.seconds:g} s")
    base = await ingest_run(bank, args.seconds, None, label="ingest baseline")
    report.progress(f"ingest recording: {args.seconds:g} s")
    rec = await ingest_run(bank, args.seconds, workdir, label="ingest 1080p60")
    report.line()
    report.line(
        f"1. ingest source, {width}x{height} at {FAST_FPS:g} fps, {args.seconds:g} s, "
        f"quality {QUALITY} (zstd {QUALITY_LEVELS[QUALITY]}, adaptive)"
    )
    report.line(
        f"   {len(bank)} DesktopScene frames generated in {generated:.1f} s (untimed), "
        "pushed in a loop by a feeder thread in real time"
    )
    print_runs(report, [base, rec], feeder=True)
    return {
        "frames_generated_s": round(generated, 1),
        "baseline": base.to_dict(),
        "record": rec.to_dict(),
    }


# -- phase 2: x11 at 1080p60 -----------------------------------------------------------------


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL after 3 s, reap the leader."""
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
            return


def _wait_ready(fd: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + APP_READY_TIMEOUT_S
    data = b""
    while b"ready" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"the animated Tk app did not come up: {' | '.join(tail)}")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                continue  # closed without "ready": proc.poll() tells on the next round
            data += chunk


@contextlib.contextmanager
def animated_display(
    width: int, height: int, fps: float, workdir: Path
) -> Iterator[tuple[PrivateDisplay, subprocess.Popen[bytes]]]:
    """A private Xvfb with scripts/rdp_test_app.py redrawing at ``fps``; both stopped after."""
    display = PrivateDisplay(width, height)
    display.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        log = workdir / "rdp_test_app.log"
        read_fd, write_fd = os.pipe()
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(APP), "--fps", f"{fps:g}", "--ready-fd", str(write_fd)],
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **display.env()},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            os.close(write_fd)
            write_fd = -1
            _wait_ready(read_fd, proc, log)
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
        yield display, proc
    finally:
        if proc is not None:
            _stop_group(proc)
        display.stop()


async def x11_run(
    display: PrivateDisplay,
    app: subprocess.Popen[bytes],
    seconds: float,
    workdir: Path | None,
    *,
    label: str,
) -> Run:
    """One run on a fresh X11 source; a recording when ``workdir`` is set."""
    source = X11Source(display.display)
    before = (pid_cpu_s(display.pid), pid_cpu_s(app.pid))
    if workdir is None:
        run = await run_baseline(source, label=label, fps=FAST_FPS, seconds=seconds)
    else:
        with data_dir(workdir, "x11") as path:
            run = await _open_and_run(
                path, lambda d: run_recorder(d, source, label=label, fps=FAST_FPS, seconds=seconds)
            )
    after = (pid_cpu_s(display.pid), pid_cpu_s(app.pid))
    for name, b, a in zip(("xvfb_cpu_s", "app_cpu_s"), before, after, strict=True):
        run.extra[name] = None if a is None or b is None else round(a - b, 2)
    return run


async def x11_phase(report: Report, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    width, height = FULL_HD
    report.progress(f"starting Xvfb {width}x{height} and the animated Tk app at {FAST_FPS:g} fps")
    with animated_display(width, height, FAST_FPS, workdir) as (display, app):
        await asyncio.sleep(1.0)  # let the app settle into its redraw rhythm
        report.progress(f"x11 baseline: {args.seconds:g} s")
        base = await x11_run(display, app, args.seconds, None, label="x11 baseline")
        report.progress(f"x11 recording: {args.seconds:g} s")
        rec = await x11_run(display, app, args.seconds, workdir, label="x11 1080p60")
    report.line()
    report.line(
        f"2. x11 source, {width}x{height} at {FAST_FPS:g} fps, {args.seconds:g} s, private Xvfb "
        f"running scripts/rdp_test_app.py --fps {FAST_FPS:g} (Tk: counter, clock, moving shapes)"
    )
    print_runs(report, [base, rec], feeder=False)
    return {"baseline": base.to_dict(), "record": rec.to_dict()}


# -- phase 3: concurrent sessions at 720p5 ---------------------------------------------------


def ladder(max_sessions: int) -> list[int]:
    """1, 2, 4, 8, 16, then steps of 8, up to and including ``max_sessions``."""
    steps = [1, 2, 4, 8, 16, *range(24, max_sessions + 1, 8)]
    levels = [k for k in steps if k <= max_sessions]
    if levels[-1] != max_sessions:
        levels.append(max_sessions)
    return levels


@dataclass
class Level:
    """K sessions recorded at once: totals and the worst session."""

    sessions: int
    dropped: int
    sessions_with_drops: int
    min_effective_fps: float
    mean_effective_fps: float
    unchanged: int
    not_completed: int
    run: Run


async def concurrency_level(
    datadir: DataDir,
    banks: Sequence[Sequence[Frame]],
    k: int,
    seconds: float,
    *,
    spread_s: float = 0.0,
) -> Level:
    """K recorders in this event loop; session ``i`` starts ``i * spread_s / k`` s late."""
    sources = [IngestSource(*HD) for _ in range(k)]
    for source in sources:
        source.start()
    feeder = Feeder(list(zip(sources, banks, strict=False)), SLOW_FPS)
    feeder.start()
    recorders = [
        SessionRecorder(
            datadir,
            source,
            name=f"bench k={k} #{i}",
            fps=SLOW_FPS,
            quality=QUALITY,
            duration_s=seconds,
        )
        for i, source in enumerate(sources)
    ]

    async def record(i: int, recorder: SessionRecorder) -> RecordingResult:
        if spread_s:
            await asyncio.sleep(i * spread_s / k)
        return await recorder.run()

    try:
        await asyncio.to_thread(feeder.fed.wait, JOIN_TIMEOUT_S)
        async with Measure() as measure, asyncio.TaskGroup() as group:
            tasks = [group.create_task(record(i, r)) for i, r in enumerate(recorders)]
        results = [task.result() for task in tasks]
    finally:
        feeder.stop()
        for source in sources:
            source.stop()
    stats = [r.stats for r in results]
    total = SamplerStats(
        captured=sum(s.captured for s in stats),
        dropped=sum(s.dropped for s in stats),
        unchanged=sum(s.unchanged for s in stats),
    )
    not_completed = sum(r.status != "completed" for r in results)
    run = _run(
        f"{k} sessions", SLOW_FPS, seconds, f"{k - not_completed}/{k} completed", total, measure
    )
    run.effective_fps = round(min(s.effective_fps for s in stats), 2)
    run.extra.update(
        start_spread_s=spread_s,
        pushed=feeder.pushed,
        superseded=sum(s.superseded for s in sources),
        queue_dropped=sum(s.dropped for s in sources),
        feeder_late_ticks=feeder.late_ticks,
        feeder_max_lag_ms=round(feeder.max_lag_s * 1e3, 1),
        statuses=sorted({f"{r.status}: {r.reason}" for r in results if r.status != "completed"}),
    )
    await _add_chunk_figures(datadir, [r.session_id for r in results], run)
    return Level(
        sessions=k,
        dropped=total.dropped,
        sessions_with_drops=sum(s.dropped > 0 for s in stats),
        min_effective_fps=round(min(s.effective_fps for s in stats), 2),
        mean_effective_fps=round(sum(s.effective_fps for s in stats) / k, 2),
        unchanged=total.unchanged,
        not_completed=not_completed,
        run=run,
    )


def _opt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


LEVEL_COLUMNS: tuple[tuple[str, Callable[[Level], str]], ...] = (
    # "top line|bottom line": both lines as wide as the top one
    ("    K|     ", lambda v: str(v.sessions)),
    ("dropped|  ticks", lambda v: str(v.dropped)),
    ("sessions|w/ drops", lambda v: str(v.sessions_with_drops)),
    ("min fps|       ", lambda v: f"{v.min_effective_fps:.2f}"),
    ("mean fps|        ", lambda v: f"{v.mean_effective_fps:.2f}"),
    ("unchanged|         ", lambda v: str(v.unchanged)),
    ("chunks|      ", lambda v: str(v.run.chunks or 0)),
    ("stored MB|         ", lambda v: f"{(v.run.stored_bytes or 0) / MB:.1f}"),
    ("CPU %|1core", lambda v: f"{v.run.cpu_pct:.0f}"),
    ("others|% core", lambda v: _opt(v.run.others_pct, ".0f")),
    ("lag p99|     ms", lambda v: f"{v.run.loop_lag_p99_ms:.1f}"),
    ("lag max|     ms", lambda v: f"{v.run.loop_lag_max_ms:.1f}"),
    ("threads|   peak", lambda v: str(v.run.peak_threads)),
)


@dataclass
class Ladder:
    """One climb of the concurrency ladder."""

    name: str
    spread_s: float
    levels: list[Level] = field(default_factory=list)
    sustained: int = 0
    """The largest K run without a dropped tick (0: drops from the first K)."""
    first_failing: int | None = None
    """The first K with a dropped tick or a session not completed; None if none."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start_spread_s": self.spread_s,
            "sustained_sessions": self.sustained,
            "first_failing_sessions": self.first_failing,
            "levels": [{**asdict(v), "run": v.run.to_dict()} for v in self.levels],
        }


async def climb(
    report: Report,
    ladder: Ladder,
    ks: Sequence[int],
    banks: list[list[Frame]],
    seconds: float,
    workdir: Path,
) -> None:
    """Run each K in turn until the first one with drops; prints one table row per K."""
    width, height = HD
    for row in zip(*(title.split("|") for title, _ in LEVEL_COLUMNS), strict=True):
        cells = (
            f"{c:>{len(t.split('|')[0])}s}" for c, (t, _) in zip(row, LEVEL_COLUMNS, strict=True)
        )
        report.line("   " + " ".join(cells))
    for k in ks:
        if len(banks) < k:
            mb = (k - len(banks)) * round(SCENE_PERIOD_S * SLOW_FPS) * width * height * 3 / MB
            report.progress(f"generating frames for sessions {len(banks) + 1}..{k} ({mb:.0f} MB)")
            while len(banks) < k:
                banks.append(frame_bank(width, height, SLOW_FPS, seed=len(banks) + 1))
        report.progress(f"{ladder.name}: {k} concurrent sessions, {seconds:g} s")
        with data_dir(workdir, f"k{k}") as path:
            datadir = DataDir.open(path, create=True)
            try:
                level = await concurrency_level(
                    datadir, banks, k, seconds, spread_s=ladder.spread_s
                )
            finally:
                await datadir.close()
        ladder.levels.append(level)
        report.line(
            "   " + " ".join(f"{cell(level):>{len(t.split('|')[0])}s}" for t, cell in LEVEL_COLUMNS)
        )
        if level.dropped > 0 or level.not_completed:
            ladder.first_failing = k
            break
        ladder.sustained = k
    last = ladder.levels[-1]
    run = last.run
    report.line(f"   CPU s by thread at K={last.sessions} ({run.wall_s:.1f} s wall):")
    for role, cpu in sorted(run.cpu_by_thread.items(), key=lambda kv: -kv[1]):
        report.line(f"     {role:40s} {cpu:7.2f}")
    report.line(
        f"   feeder at K={last.sessions}: {run.extra['pushed']} frames pushed, "
        f"{run.extra['feeder_late_ticks']} ticks late, max lag "
        f"{run.extra['feeder_max_lag_ms']:.0f} ms; sources: {run.extra['superseded']} "
        f"superseded, {run.extra['queue_dropped']} dropped from a full queue"
    )
    for status in run.extra["statuses"]:
        report.line(f"   not completed: {status}")
    report.line(f"   sustained: {_verdict(ladder)}")


def _verdict(ladder: Ladder) -> str:
    if ladder.first_failing is None:
        return f"{ladder.sustained} sessions with 0 drops (top of the ladder; --max-sessions)"
    if not ladder.sustained:
        return f"drops already at {ladder.first_failing} session(s)"
    return f"{ladder.sustained} sessions with 0 drops; first drops at {ladder.first_failing}"


async def concurrency_phase(
    report: Report, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    width, height = HD
    ks = ladder(args.max_sessions)
    per_session = round(SCENE_PERIOD_S * SLOW_FPS)
    report.line()
    report.line(
        f"3. concurrent sessions, {width}x{height} at {SLOW_FPS:g} fps, {args.seconds:g} s each, "
        f"one event loop, quality {QUALITY}; K = {', '.join(map(str, ks))}"
    )
    report.line(
        f"   each session: own IngestSource, own scene seed ({per_session} frames looped), "
        "own SessionWriter; one feeder thread pushes to all"
    )
    banks: list[list[Frame]] = []
    together = Ladder("together", 0.0)
    report.line()
    report.line(
        "   a) all sessions start at once: same content size, so their chunks close at the "
        "same moments (worst case)"
    )
    await climb(report, together, ks, banks, args.seconds, workdir)
    ladders = [together]
    if together.first_failing is not None:
        spread = Ladder("spread", SPREAD_S)
        rest = [k for k in ks if k >= together.first_failing]
        report.line()
        report.line(
            f"   b) starts spread evenly over {SPREAD_S:g} s (about one chunk period here), "
            f"from K={together.first_failing} up: chunk closes interleave as for independent "
            "sessions"
        )
        await climb(report, spread, rest, banks, args.seconds, workdir)
        ladders.append(spread)
    return {ladder.name: ladder.to_dict() for ladder in ladders}


# -- printing --------------------------------------------------------------------------------


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def print_runs(report: Report, runs: Sequence[Run], *, feeder: bool) -> None:
    """A table of figures, one column per run."""

    def ratio(run: Run) -> str:
        if not run.stored_bytes:
            return "-"
        plain = (run.plain_bytes or 0) / run.stored_bytes
        return f"{(run.raw_bytes or 0) / run.stored_bytes:.1f}x (plaintext {plain:.1f}x)"

    def without_feeder(run: Run) -> str:
        fed = run.cpu_by_thread.get(FEEDER, 0.0)
        return f"{100.0 * (run.cpu_s - fed) / run.wall_s:.0f} %" if run.wall_s else "-"

    rows: list[tuple[str, list[str]]] = [
        ("status", [r.status for r in runs]),
        ("effective fps", [f"{r.effective_fps:.2f} (asked {r.fps:g})" for r in runs]),
        ("frames captured", [str(r.captured) for r in runs]),
        ("ticks dropped", [str(r.dropped) for r in runs]),
        ("frames unchanged", [str(r.unchanged) for r in runs]),
        ("chunks", ["-" if r.chunks is None else str(r.chunks) for r in runs]),
        ("raw MB", [_mb(r.raw_bytes) for r in runs]),
        ("chunk plaintext MB", [_mb(r.plain_bytes) for r in runs]),
        ("stored MB", [_mb(r.stored_bytes) for r in runs]),
        ("compression raw:stored", [ratio(r) for r in runs]),
        ("zstd levels used", [",".join(map(str, r.levels)) if r.levels else "-" for r in runs]),
        ("wall s", [f"{r.wall_s:.2f}" for r in runs]),
        ("process CPU s", [f"{r.cpu_s:.2f}" for r in runs]),
        ("CPU % of one core", [f"{r.cpu_pct:.0f} %" for r in runs]),
        ("other processes, % of one core", [_opt(r.others_pct, ".0f", " %") for r in runs]),
    ]
    if feeder:
        rows += [
            ("  without the feeder", [without_feeder(r) for r in runs]),
            ("frames pushed", [str(r.extra["pushed"]) for r in runs]),
            ("  superseded before grab", [str(r.extra["superseded"]) for r in runs]),
            ("  feeder ticks late", [str(r.extra["feeder_late_ticks"]) for r in runs]),
        ]
    else:
        rows += [
            ("Xvfb CPU s", [str(r.extra.get("xvfb_cpu_s")) for r in runs]),
            ("Tk app CPU s", [str(r.extra.get("app_cpu_s")) for r in runs]),
        ]
    rows += [
        (
            "loop lag p99 / max ms",
            [f"{r.loop_lag_p99_ms:.1f} / {r.loop_lag_max_ms:.1f}" for r in runs],
        ),
    ]
    roles = sorted({role for r in runs for role in r.cpu_by_thread}, key=lambda s: s)
    rows.append(("CPU s by thread:", ["" for _ in runs]))
    rows += [
        (f"  {role}", [f"{r.cpu_by_thread.get(role, 0.0):.2f}" for r in runs]) for role in roles
    ]
    width = 40
    report.line(f"   {'':{width}s}" + "".join(f"{r.label:>28s}" for r in runs))
    for name, values in rows:
        if len(name) > width:
            report.line(f"   {name}")
            name = ""
        report.line(f"   {name:{width}s}" + "".join(f"{v:>28s}" for v in values))


def print_seed_comparison(report: Report, data: dict[str, Any]) -> None:
    """The seed's targets beside this run's figures."""
    rows: list[tuple[str, str]] = []
    for phase in ("ingest", "x11"):
        if phase in data:
            rec = data[phase]["record"]
            rows.append(
                (
                    f"{SEED_FPS} fps per session",
                    f"{phase} 1920x1080: {rec['effective_fps']:.2f} fps effective, "
                    f"{rec['dropped']} of {rec['captured'] + rec['dropped']} ticks dropped, "
                    f"{rec['cpu_pct_of_one_core']:.0f} % of one core",
                )
            )
    for name, ladder in data.get("concurrency", {}).items():
        top = "" if ladder["first_failing_sessions"] else " (no drops up to the top)"
        first = ladder["first_failing_sessions"]
        rows.append(
            (
                f"{SEED_SESSIONS} concurrent sessions",
                f"{ladder['sustained_sessions']} at 1280x720, {SLOW_FPS:g} fps with 0 drops, "
                f"starts {'at once' if name == 'together' else 'spread'}"
                + (f"; drops at {first}" if first else top),
            )
        )
    if not rows:
        return
    report.line()
    report.line(f"Beside what the seed asks ({os.cpu_count()} CPUs)")
    for asked, measured in rows:
        report.line(f"   {asked:26s} {measured}")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark live recording (ingest and x11 sources at 1920x1080, 60 fps; "
        "concurrent sessions at 1280x720, 5 fps); prints figures.",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="length of every run (15; at least 6)"
    )
    parser.add_argument(
        "--max-sessions", type=int, default=64, help="top of the concurrency ladder (64)"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {', '.join(PHASES)} (all)",
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where data directories go")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args(argv)
    errors = []
    if args.seconds < 6:
        errors.append("--seconds must be at least 6 (a chunk must close while recording)")
    if args.max_sessions < 1:
        errors.append("--max-sessions must be at least 1")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown or not phases:
        errors.append(f"--phases must name some of {', '.join(PHASES)}, not {unknown or '[]'}")
    if errors:
        parser.error("; ".join(errors))
    args.phases = [p for p in PHASES if p in phases]
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # clean up (Xvfb, temp dirs) on SIGTERM too
    report = Report(as_json=args.json)
    facts = machine_facts()
    report.data["machine"] = facts
    report.data["settings"] = {
        "seconds": args.seconds,
        "max_sessions": args.max_sessions,
        "phases": args.phases,
        "quality": QUALITY,
        "zstd_level": QUALITY_LEVELS[QUALITY],
    }
    report.line("Lucid Sessions recorder benchmark")
    for name, value in facts.items():
        report.line(f"  {name:16s} {value}")
    report.line(
        f"settings: {args.seconds:g} s per run, quality {QUALITY} "
        f"(zstd {QUALITY_LEVELS[QUALITY]}, adaptive), phases {', '.join(args.phases)}; "
        f"1 MB = {MB} bytes; CPU % is of one core ({os.cpu_count()} cores = "
        f"{100 * (os.cpu_count() or 1)} %)"
    )
    phases = {"ingest": ingest_phase, "x11": x11_phase, "concurrency": concurrency_phase}
    try:
        with tempfile.TemporaryDirectory(prefix="lucid-bench-recorder-", dir=args.tmp_dir) as tmp:
            for name in args.phases:
                report.data[name] = asyncio.run(phases[name](report, args, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print_seed_comparison(report, report.data)
    if args.json:
        print(json.dumps(report.data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
