"""Web player benchmark: time from a seek to its frame, anywhere in a long 1080p session.

A script that prints figures, never a pass/fail test. Progress goes to stderr, figures to
stdout (one JSON document instead with ``--json``). Target: seek p99 < 300 ms.

What it does
------------
1. Builds (untimed) a finished session of ``--minutes`` (60) of 1920x1080 synthetic
   desktop (``DesktopScene``: windows, text, a moving cursor, a ticking clock, scrolling)
   at ``--fps`` (1) in a fresh data directory, with the import path every recording
   takes (chunks of at most 10 s / 16 MiB, zstd, XChaCha20-Poly1305, BLAKE3, signed
   manifest). ``--data-dir`` reuses a directory built before (its first session).
2. Starts ``python -m lucid_sessions serve`` (all in one process) on a free loopback port
   and mints an admin token for it.
3. **HTTP seeks**: for ``--seeks`` targets spread over the whole session (seeded random,
   plus fixed probes at minute 1 and in the last minute), what the player does on a
   seek once it has the timeline: ``GET .../playback/{seq}`` (the server reads the chunk,
   checks its leaf hash against the signed Merkle root through the inclusion proof,
   decrypts, scans its frames) then ``GET .../playback/{seq}/{index}`` (decodes to the
   frame, PNG), then decodes the PNG (Pillow, standing in for the browser's decode). Every
   target lands in a chunk other than the last few, so the server's small cache of
   decoded chunks never helps: these are cold seeks.
4. **Browser seeks** (when Playwright and ``/usr/bin/chromium`` are there, unless
   ``--no-browser``): the web UI in headless Chromium, ``lucidPlayer.seek(t)`` for each
   target, timed in the page from the seek to the ``drawImage`` of its frame on the
   canvas: the time from seek to first frame on screen.
5. Prints p50, p90, p99 and max of both, minute 1 against the last minute, and the
   server's resident memory before and after (bounded: it must not grow with the
   session's length). Stops the server and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Report, cpu_model, load_average

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TARGET_P99_MS = 300.0


def build(data_dir: Path, minutes: float, fps: float, report: Report) -> str:
    from lucid_sessions.archive.service import import_frames
    from lucid_sessions.recording.synthetic import DesktopScene
    from lucid_sessions.storage.datadir import DataDir

    count = round(minutes * 60 * fps)
    scene = DesktopScene(width=1920, height=1080, fps=fps, seed=7)
    datadir = DataDir.open(data_dir, create=True)
    started = time.monotonic()

    def progress(done: int) -> None:
        if done % 300 == 0:
            report.progress(f"built {done}/{count} frames ({time.monotonic() - started:.0f} s)")

    async def run() -> str:
        try:
            manifest = await import_frames(
                datadir, scene.frames(count), name="seek bench", fps=fps, progress=progress
            )
            return manifest.session_id
        finally:
            await datadir.close()

    return asyncio.run(run())


def existing_session(data_dir: Path) -> str:
    from lucid_sessions.storage.datadir import DataDir

    async def run() -> str:
        datadir = DataDir.open(data_dir)
        try:
            page = await datadir.store.list_sessions(status="completed", limit=1)
            if not page.items:
                raise SystemExit(f"error: no completed session in {data_dir}")
            return page.items[0].session_id
        finally:
            await datadir.close()

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.50), 1),
        "p90_ms": round(at(0.90), 1),
        "p99_ms": round(at(0.99), 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def targets(chunks: list[dict[str, Any]], count: int, seed: int) -> list[float]:
    """Seek targets over the whole session, consecutive ones at least 5 chunks apart
    (cold: never in the server's cache of 4 decoded chunks)."""
    rng = random.Random(seed)
    duration = chunks[-1]["end_s"]
    starts = [c["start_s"] for c in chunks]

    def chunk_index(t: float) -> int:
        return max(i for i, s in enumerate(starts) if s <= t)

    out = [min(60.0, duration / 2), max(0.0, duration - 30.0)]
    while len(out) < count:
        t = rng.uniform(0, duration)
        if len(chunks) < 10 or abs(chunk_index(t) - chunk_index(out[-1])) >= 5:
            out.append(round(t, 3))
    return out


def http_seeks(
    base: str, headers: dict[str, str], sid: str, points: list[float], server_pid: int
) -> dict:
    from PIL import Image

    timeline = httpx.get(f"{base}/api/v1/sessions/{sid}/timeline", headers=headers).json()
    chunks = timeline["chunks"]
    starts = [c["start_s"] for c in chunks]
    totals, metas, images = [], [], []
    sizes = []
    rss: list[int | None] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for t in points:
            began = time.perf_counter()
            seq = chunks[max(i for i, s in enumerate(starts) if s <= t)]["sequence"]
            meta = client.get(f"/api/v1/sessions/{sid}/playback/{seq}").json()
            assert meta["verified"], meta
            got_meta = time.perf_counter()
            times = [f["time_s"] for f in meta["frames"]]
            index = max([i for i, x in enumerate(times) if x <= t], default=0)
            image = client.get(f"/api/v1/sessions/{sid}/playback/{seq}/{index}")
            image.raise_for_status()
            Image.open(io.BytesIO(image.content)).load()
            done = time.perf_counter()
            totals.append((done - began) * 1000)
            metas.append((got_meta - began) * 1000)
            images.append((done - got_meta) * 1000)
            sizes.append(len(image.content))
            if len(totals) % 50 == 0:
                rss.append(rss_kib(server_pid))
    return {
        "server_rss_mib_every_50": [None if r is None else round(r / 1024) for r in rss],
        "seek": percentiles(totals),
        "verify_and_scan": percentiles(metas),
        "frame_png": percentiles(images),
        "minute_1_ms": round(totals[0], 1),
        "last_minute_ms": round(totals[1], 1),
        "png_kib_mean": round(statistics.fmean(sizes) / 1024, 1),
        "chunks": len(chunks),
        "duration_s": timeline["duration_s"],
    }


def browser_seeks(base: str, token: str, sid: str, points: list[float]) -> dict | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.exists():
        return None
    settled = (
        "() => { const p = window.lucidPlayer; "
        "return p && p.timeline && !p.busy && !p.want && p.seekStarted === null && p.shown; }"
    )
    profile = tempfile.mkdtemp(prefix="lucid-seek-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1600, "height": 1000},
            )
            page = context.new_page()
            page.goto(f"{base}/")
            page.fill("#token", token)
            page.click("#signin-form button[type=submit]")
            page.locator("#sessions").wait_for(state="visible")
            page.goto(f"{base}/#/sessions/{sid}")
            page.wait_for_function(settled, timeout=60_000)
            page.evaluate("() => { window.lucidPlayer.stats.seeks = []; }")
            for t in points:
                page.evaluate(f"() => window.lucidPlayer.seek({t})")
                page.wait_for_function(settled, timeout=60_000)
            seeks = page.evaluate("() => window.lucidPlayer.stats.seeks")
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return {
        "seek_to_screen": percentiles(seeks),
        "minute_1_ms": round(seeks[0], 1),
        "last_minute_ms": round(seeks[1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--fps", type=float, default=1)
    parser.add_argument("--seeks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="reuse (or build once into) this folder")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = Report(as_json=args.json)
    tmp = Path(tempfile.mkdtemp(prefix="lucid-seek-"))
    data_dir = args.data_dir or tmp / "data"
    server: subprocess.Popen[bytes] | None = None
    try:
        report.line(f"cpu: {cpu_model()}; load: {load_average()}")
        if data_dir.exists() and any(data_dir.iterdir()):
            sid = existing_session(data_dir)
            build_s = None
            report.progress(f"reusing session {sid} in {data_dir}")
        else:
            report.progress(f"building {args.minutes:g} min of 1080p at {args.fps:g} fps")
            began = time.monotonic()
            sid = build(data_dir, args.minutes, args.fps, report)
            build_s = round(time.monotonic() - began, 1)
        port = free_port()
        env = {
            **os.environ,
            "LUCID_API_PORT": str(port),
            "LUCID_RATE_LIMITS": "status=100000,chunks=100000,bulk=1000",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "lucid_sessions", "serve", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "serve.log").open("wb"),
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(
                    "error: the server did not start:\n" + (tmp / "serve.log").read_text()
                )
            time.sleep(0.2)
        from lucid_sessions.security.tokens import TokenSettings, local_secret, mint_token

        key = local_secret(data_dir, create=True)
        assert key is not None
        token, _ = mint_token(
            key, subject="bench", role="admin", ttl_s=3600, settings=TokenSettings()
        )
        headers = {"Authorization": f"Bearer {token}"}
        timeline = httpx.get(f"{base}/api/v1/sessions/{sid}/timeline", headers=headers).json()
        points = targets(timeline["chunks"], args.seeks, args.seed)
        rss_before = rss_kib(server.pid)
        report.progress(f"{len(points)} HTTP seeks over {timeline['duration_s']:.0f} s")
        http = http_seeks(base, headers, sid, points, server.pid)
        browser = None
        if not args.no_browser:
            report.progress(f"{len(points)} browser seeks (headless Chromium)")
            browser = browser_seeks(base, token, sid, points)
        rss_after = rss_kib(server.pid)
        result = {
            "session": {
                "minutes": round(timeline["duration_s"] / 60, 1),
                "resolution": "1920x1080",
                "fps": args.fps,
                "chunks": http["chunks"],
                "build_s": build_s,
            },
            "http": http,
            "browser": browser,
            "server_rss_mib": {
                "before": None if rss_before is None else round(rss_before / 1024, 1),
                "after": None if rss_after is None else round(rss_after / 1024, 1),
            },
            "target_p99_ms": TARGET_P99_MS,
        }
        if args.json:
            print(json.dumps(result, indent=2))
            return
        s = result["session"]
        report.line(
            f"session: {s['minutes']} min, 1920x1080 at {s['fps']:g} fps, {s['chunks']} chunks"
            + (f" (built in {s['build_s']} s)" if s["build_s"] is not None else "")
        )
        for name, figures in (
            ("HTTP seek (verify + scan + frame PNG + decode)", http["seek"]),
            ("  of which verify + scan (GET playback/{seq})", http["verify_and_scan"]),
            ("  of which frame PNG (GET playback/{seq}/{i})", http["frame_png"]),
        ):
            report.line(
                f"{name}: p50 {figures['p50_ms']} ms, p90 {figures['p90_ms']} ms, "
                f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms (n={figures['n']})"
            )
        report.line(
            f"HTTP minute 1: {http['minute_1_ms']} ms; last minute: {http['last_minute_ms']} ms; "
            f"PNG {http['png_kib_mean']} KiB on average"
        )
        if browser is not None:
            b = browser["seek_to_screen"]
            report.line(
                f"browser seek to frame on screen: p50 {b['p50_ms']} ms, p90 {b['p90_ms']} ms, "
                f"p99 {b['p99_ms']} ms, max {b['max_ms']} ms (n={b['n']}); minute 1 "
                f"{browser['minute_1_ms']} ms, last minute {browser['last_minute_ms']} ms"
            )
        elif args.no_browser:
            report.line("browser seeks: not run (--no-browser)")
        else:
            report.line("browser seeks: skipped (no Playwright or no /usr/bin/chromium)")
        r = result["server_rss_mib"]
        report.line(f"server RSS: {r['before']} MiB before the seeks, {r['after']} MiB after")
        report.line(f"server RSS every 50 HTTP seeks (MiB): {http['server_rss_mib_every_50']}")
        worst = (browser or {}).get("seek_to_screen", http["seek"])["p99_ms"]
        verdict = "meets" if worst < TARGET_P99_MS else "MISSES"
        report.line(f"target seek p99 < {TARGET_P99_MS:g} ms: {verdict} ({worst} ms)")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
