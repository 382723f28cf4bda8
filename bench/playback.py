"""Playback benchmark: a script that prints figures, never a pass/fail test.

Sections (``--sections``, default all):

render
    ``lucid-sessions render`` on a stored 1920x1080 desktop session (``--minutes`` of it
    at ``--fps``): chunk read, XChaCha20-Poly1305, zstd, tile decode, YUV conversion of
    the changed rows, libx264, MP4 muxing, written to a file. The figure is render speed
    as a multiple of real time: recorded seconds / wall seconds (target >= 10x).
    Baselines in the same run, on the same pictures and encoder settings, alternating
    with the render so drift on a shared machine hits all of them:

    - **x264 only**: PyAV encoding the same number of yuv420p frames held in memory:
      what the encoder alone costs, the floor for any render;
    - **naive**: the same frames as RGB in memory, each converted whole by swscale and
      encoded on one thread: a render without our canvas and encoder thread.

The session is built before any clock starts from one period (``--period`` s) of
:class:`~lucid_sessions.recording.synthetic.DesktopScene` repeated, so the baselines can
hold exactly the session's pictures in memory. New sections (seeking, for one) add a
function to ``SECTIONS`` taking (args, corpus, report).

Run ``python bench/playback.py --help``; ``bench/README.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

import lucid_sessions
from benchlib import Report, cpu_model, load_average, version
from lucid_sessions.archive.render import TIME_BASE, RenderOptions, render_session
from lucid_sessions.archive.service import import_frames
from lucid_sessions.recording.synthetic import DesktopScene
from lucid_sessions.storage.datadir import DataDir

MB = 1_000_000
TARGET_X_REALTIME = 10.0


@dataclass
class Corpus:
    """The stored session and the pictures it was made of (one period, repeated)."""

    datadir_path: Path
    session_id: str
    pictures: list[np.ndarray]
    frames: int
    fps: float
    width: int
    height: int
    chunks: int
    stored_bytes: int
    build_seconds: float

    @property
    def seconds(self) -> float:
        """The recording's length as rendered: frames / fps (last frame shown 1/fps)."""
        return self.frames / self.fps


def machine_facts() -> dict[str, Any]:
    libs = av.library_versions
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "lucid_sessions": lucid_sessions.__version__,
        "av": f"{version('av')} (libavcodec {'.'.join(map(str, libs['libavcodec']))}, "
        f"libswscale {'.'.join(map(str, libs['libswscale']))})",
        "numpy": version("numpy"),
        "load_average": load_average(),
    }


def build_corpus(args: argparse.Namespace, root: Path, report: Report) -> Corpus:
    started = time.perf_counter()
    scene = DesktopScene(width=args.width, height=args.height, fps=args.fps, seed=args.seed)
    period = max(1, round(args.period * args.fps))
    report.progress(f"generating {period} frames of {args.width}x{args.height}")
    pictures = [scene.frame(i) for i in range(period)]
    frames = max(1, round(args.minutes * 60 * args.fps))

    def frame_source() -> Any:
        for i in range(frames):
            yield round(i * 1e6 / args.fps), pictures[i % period]

    async def build() -> tuple[str, int, int]:
        datadir = DataDir.open(root / "data", create=True)
        try:
            manifest = await import_frames(datadir, frame_source(), name="playback bench")
            chunks = await datadir.store.list_chunks(manifest.session_id)
            return manifest.session_id, len(chunks), sum(c.stored_size for c in chunks)
        finally:
            await datadir.close()

    report.progress(f"recording a {args.minutes:g} min session ({frames} frames)")
    session_id, chunks, stored = asyncio.run(build())
    return Corpus(
        root / "data",
        session_id,
        pictures,
        frames,
        args.fps,
        args.width,
        args.height,
        chunks,
        stored,
        time.perf_counter() - started,
    )


# -- render ----------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(preset=args.preset, crf=args.crf, threads=args.threads)


def _encoder(path: Path, corpus: Corpus, options: RenderOptions) -> tuple[Any, Any]:
    """A container and stream set up as archive/render.py sets up its own."""
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264")
    stream.width, stream.height, stream.pix_fmt = corpus.width, corpus.height, "yuv420p"
    stream.time_base = TIME_BASE
    context = stream.codec_context
    context.time_base = TIME_BASE
    context.framerate = Fraction(round(corpus.fps * 1000), 1000)
    context.gop_size = round(corpus.fps * 10)
    context.thread_count = options.threads
    stream.options = {"preset": options.preset, "crf": str(options.crf), "bf": "0"}
    return container, stream


def _encode_all(path: Path, corpus: Corpus, options: RenderOptions, convert: bool) -> None:
    container, stream = _encoder(path, corpus, options)
    step = round(90_000 / corpus.fps)
    if convert:
        sources = corpus.pictures
    else:
        sources = [
            av.VideoFrame.from_ndarray(p, format="rgb24")
            .reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            .to_ndarray()
            for p in corpus.pictures
        ]
    for i in range(corpus.frames):
        source = sources[i % len(sources)]
        if convert:
            frame = av.VideoFrame.from_ndarray(source, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
            )
        else:
            frame = av.VideoFrame.from_ndarray(source, format="yuv420p")
        frame.pts = i * step
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall s, CPU s of this process)."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def section_render(args: argparse.Namespace, corpus: Corpus, report: Report) -> dict[str, Any]:
    options = _options(args)
    out = corpus.datadir_path.parent / "out"
    out.mkdir(exist_ok=True)
    sizes: dict[str, int] = {}

    def render() -> None:
        async def run() -> None:
            datadir = DataDir.open(corpus.datadir_path)
            try:
                path = out / "render.mp4"
                path.unlink(missing_ok=True)
                result = await render_session(datadir, corpus.session_id, path, options)
                assert result.frames == corpus.frames, (result.frames, corpus.frames)
                sizes["render"] = path.stat().st_size
            finally:
                await datadir.close()

        asyncio.run(run())

    def x264_only() -> None:
        _encode_all(out / "x264.mp4", corpus, options, convert=False)
        sizes["x264 only"] = (out / "x264.mp4").stat().st_size

    def naive() -> None:
        _encode_all(out / "naive.mp4", corpus, options, convert=True)
        sizes["naive"] = (out / "naive.mp4").stat().st_size

    passes: dict[str, Callable[[], None]] = {"render": render, "x264 only": x264_only}
    if not args.no_naive:
        passes["naive"] = naive
    walls: dict[str, list[float]] = {name: [] for name in passes}
    cpus: dict[str, list[float]] = {name: [] for name in passes}
    for round_no in range(args.repeats):
        for name, fn in passes.items():
            report.progress(f"round {round_no + 1}/{args.repeats}: {name}")
            wall, cpu = _timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)

    seconds = corpus.seconds
    figures: dict[str, Any] = {}
    report.line()
    report.line(
        f"render: {corpus.width}x{corpus.height}, {corpus.frames} frames = {seconds:g} s at "
        f"{corpus.fps:g} fps, {corpus.chunks} chunks ({corpus.stored_bytes / MB:.1f} MB stored); "
        f"libx264 preset {options.preset}, crf {options.crf}, threads {options.threads}; "
        f"best of {args.repeats}"
    )
    report.line(
        f"{'pass':12} {'wall s':>7} {'x real time':>12} {'fps':>6} {'CPU %':>6} "
        f"{'MB out':>7}  rounds (x real time)"
    )
    for name in passes:
        best = min(walls[name])
        index = walls[name].index(best)
        cpu_pct = 100 * cpus[name][index] / best
        rounds = ", ".join(f"{seconds / w:.1f}" for w in walls[name])
        figures[name] = {
            "best_wall_s": best,
            "x_real_time": seconds / best,
            "fps": corpus.frames / best,
            "cpu_percent_of_one_core": cpu_pct,
            "mb_out": sizes.get(name, 0) / MB,
            "walls_s": walls[name],
        }
        report.line(
            f"{name:12} {best:7.2f} {seconds / best:11.1f}x {corpus.frames / best:6.0f} "
            f"{cpu_pct:6.0f} {sizes.get(name, 0) / MB:7.1f}  {rounds}"
        )
    base = min(walls["x264 only"])
    ratios = [b / r for r, b in zip(walls["render"], walls["x264 only"], strict=True)]
    figures["render_vs_x264_only"] = base / min(walls["render"])
    figures["render_vs_x264_only_median_round"] = statistics.median(ratios)
    report.line(
        f"render / x264-only speed: {figures['render_vs_x264_only']:.2f} "
        f"(median of rounds {figures['render_vs_x264_only_median_round']:.2f})"
    )
    x = figures["render"]["x_real_time"]
    verdict = "met" if x >= TARGET_X_REALTIME else "MISSED"
    report.line(f"target: render >= {TARGET_X_REALTIME:g}x real time: {x:.1f}x, {verdict}")
    return figures


def section_seek(args: argparse.Namespace, corpus: Corpus, report: Report) -> dict[str, Any]:
    """Seek to frame on screen in the real player (bench/seek.py, run as its own process
    on its own session: by default one hour of 1920x1080)."""
    command = [
        sys.executable,
        str(Path(__file__).with_name("seek.py")),
        "--json",
        "--minutes",
        str(args.seek_minutes),
        "--fps",
        str(args.seek_fps),
        "--seeks",
        str(args.seeks),
    ]
    if args.no_browser:
        command.append("--no-browser")
    report.progress(f"seek: {args.seek_minutes:g} min session, {args.seeks} seeks (bench/seek.py)")
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        report.line(f"seek: bench/seek.py failed: {done.stderr.strip()[-500:]}")
        return {"error": done.stderr.strip()[-2000:]}
    figures: dict[str, Any] = json.loads(done.stdout)
    http = figures["http"]["seek"]
    report.line(
        f"seek (HTTP: checked chunk metadata + one PNG frame), {figures['session']['minutes']} "
        f"min session: p50 {http['p50_ms']} ms, p99 {http['p99_ms']} ms"
    )
    browser = figures.get("browser")
    if browser:
        shown = browser["seek_to_screen"]
        p99 = shown.get("p99_ms")
        report.line(
            f"seek to frame on screen (Chromium): p50 {shown.get('p50_ms')} ms, p99 {p99} ms"
        )
        if isinstance(p99, int | float):
            verdict = "met" if p99 < figures["target_p99_ms"] else "MISSED"
            report.line(f"target: seek p99 < {figures['target_p99_ms']} ms: {p99} ms, {verdict}")
    return figures


SECTIONS: dict[str, Callable[[argparse.Namespace, Corpus, Report], dict[str, Any]]] = {
    "render": section_render,
    "seek": section_seek,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="session length (1)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second (10)")
    parser.add_argument("--width", type=int, default=1920, help="frame width (1920)")
    parser.add_argument("--height", type=int, default=1080, help="frame height (1080)")
    parser.add_argument(
        "--period", type=float, default=5.0, help="scene seconds repeated in the session (5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scene seed (0)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each pass (3)")
    parser.add_argument("--preset", default="ultrafast", help="x264 preset (ultrafast)")
    parser.add_argument("--crf", type=int, default=23, help="x264 crf (23)")
    parser.add_argument("--threads", type=int, default=2, help="x264 threads, 0 auto (2)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run ({','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--seek-minutes", type=float, default=60.0, help="seek section: session length (60)"
    )
    parser.add_argument("--seek-fps", type=float, default=1.0, help="seek section: fps (1)")
    parser.add_argument("--seeks", type=int, default=200, help="seek section: seeks (200)")
    parser.add_argument(
        "--no-browser", action="store_true", help="seek section: HTTP only, no Chromium"
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the session goes")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.repeats < 1 or args.minutes <= 0 or args.fps <= 0:
        parser.error("--repeats, --minutes and --fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(as_json=args.json)
    facts = machine_facts()
    report.data["machine"] = facts
    report.line("machine")
    for key, value in facts.items():
        report.line(f"  {key}: {value}")
    report.data["settings"] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    }
    with tempfile.TemporaryDirectory(prefix="lucid-bench-playback-", dir=args.tmp_dir) as tmp:
        corpus = build_corpus(args, Path(tmp), report)
        report.data["corpus"] = {
            "frames": corpus.frames,
            "seconds": corpus.seconds,
            "chunks": corpus.chunks,
            "stored_mb": corpus.stored_bytes / MB,
            "build_s": corpus.build_seconds,
        }
        report.line(
            f"session: {corpus.frames} frames, {corpus.chunks} chunks, "
            f"{corpus.stored_bytes / MB:.1f} MB stored, built in {corpus.build_seconds:.1f} s "
            "(untimed)"
        )
        for name in args.sections.split(","):
            report.data[name] = SECTIONS[name](args, corpus, report)
    report.data["load_average_at_end"] = load_average()
    report.line(f"load average at the end: {report.data['load_average_at_end']}")
    if args.json:
        print(json.dumps(report.data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
