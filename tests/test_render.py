"""Video export: `lucid-sessions render`, GET .../render.mp4 and archive/render.py.

Every video is decoded again with PyAV: frame count, duration, timestamps and pixels
(H.264 is lossy: pixels are compared by mean absolute error).
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from tests.conftest import Cli
from tests.test_api_support import ApiCluster, api_fixture  # noqa: F401

from lucid_sessions.archive.render import (
    RenderCancelled,
    RenderOptions,
    plan_render,
    render_mp4,
)
from lucid_sessions.archive.service import import_frames
from lucid_sessions.errors import InvalidConfigError, NotFoundError
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import ChunkRecord

FPS = 10
MAE_LIMIT = 6.0
"""Mean absolute error (0..255) allowed between a decoded frame and the recorded one."""


def smooth_frames(
    count: int, width: int = 320, height: int = 240, *, fps: int = FPS
) -> Iterator[tuple[int, np.ndarray]]:
    """Desktop-like frames H.264 can keep close: gradients, a moving box, a counter bar."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), np.full_like(x, 96)],
        axis=-1,
    ).astype(np.uint8)
    for i in range(count):
        frame = base.copy()
        left = (i * 9) % max(1, width - 40)
        frame[40:80, left : left + 40] = (250, 250, 250)
        frame[height - 12 :, : min(width, 4 * (i + 1))] = (20, 20, 20)
        yield round(i * 1_000_000 / fps), frame


def import_session(data_dir: Path, frames: Iterator[tuple[int, np.ndarray]]) -> str:
    async def run() -> str:
        datadir = DataDir.open(data_dir, create=True)
        try:
            manifest = await import_frames(datadir, frames, name="render test")
        finally:
            await datadir.close()
        return manifest.session_id

    return asyncio.run(run())


def decode(source: Path | bytes) -> tuple[list[np.ndarray], list[float], float, av.VideoStream]:
    """(RGB frames, their times in s, the video's duration in s, the stream)."""
    container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    with container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        pictures, times = [], []
        for frame in container.decode(stream):
            pictures.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
        duration = (
            float(stream.duration * stream.time_base)
            if stream.duration
            else (container.duration or 0) / 1e6
        )
    return pictures, times, duration, stream


def mae(a: np.ndarray, b: np.ndarray) -> float:
    height, width = b.shape[0], b.shape[1]
    return float(np.abs(a[:height, :width].astype(np.int16) - b.astype(np.int16)).mean())


def png(cli: Cli, session: str, at: float, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"at-{at}.png"
    cli("frame", session, "--at", str(at), "-o", str(path))
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture
def session(data_dir: Path) -> str:
    """5 s at 10 fps, 320x240, one chunk."""
    return import_session(data_dir, smooth_frames(50))


# -- the CLI ---------------------------------------------------------------------------------


def test_render_whole_session_matches_the_recording(cli: Cli, session: str, tmp_path: Path) -> None:
    out = tmp_path / "all.mp4"
    _, stdout, stderr = cli("render", session, "-o", str(out))
    assert stdout == ""
    assert "wrote" in stderr and "50 frames" in stderr
    pictures, times, duration, stream = decode(out)
    assert len(pictures) == 50  # every recorded frame
    assert (stream.width, stream.height) == (320, 240)
    # recorded 0 .. 4.9 s; the last frame stays one interval: 5.0 s, within one frame
    assert abs(duration - 4.9) <= 1 / FPS + 1e-6
    assert duration == pytest.approx(5.0, abs=1e-3)
    assert times == pytest.approx([i / FPS for i in range(50)], abs=1e-4)
    assert mae(pictures[0], png(cli, session, 0, tmp_path)) < MAE_LIMIT
    assert mae(pictures[37], png(cli, session, 3.7, tmp_path)) < MAE_LIMIT


def test_render_range_and_speed(cli: Cli, session: str, tmp_path: Path) -> None:
    out = tmp_path / "part.mp4"
    cli("render", session, "-o", str(out), "--from", "1.05", "--to", "3")
    pictures, times, duration, _ = decode(out)
    # the frame on screen at 1.05 (recorded at 1.0), then 1.1 .. 2.9
    assert len(pictures) == 20
    assert duration == pytest.approx(1.95, abs=1e-3)
    assert times[:3] == pytest.approx([0, 0.05, 0.15], abs=1e-4)
    assert mae(pictures[0], png(cli, session, 1.05, tmp_path)) < MAE_LIMIT
    assert mae(pictures[-1], png(cli, session, 2.95, tmp_path)) < MAE_LIMIT

    fast = tmp_path / "fast.mp4"
    cli("render", session, "-o", str(fast), "--speed", "2.5")
    pictures, times, duration, _ = decode(fast)
    assert len(pictures) == 50
    assert duration == pytest.approx(5.0 / 2.5, abs=1e-3)
    assert times[1] == pytest.approx(0.1 / 2.5, abs=1e-4)


def test_render_fragmented_and_faststart(cli: Cli, session: str, tmp_path: Path) -> None:
    for flag in ("--fragmented", "--faststart"):
        out = tmp_path / f"{flag.strip('-')}.mp4"
        cli("render", session, "-o", str(out), flag, "--to", "2")
        pictures, _, duration, _ = decode(out)
        assert len(pictures) == 20
        assert duration == pytest.approx(2.0, abs=1e-3)
    head = (tmp_path / "fragmented.mp4").read_bytes()[:4096]
    assert b"moof" in head and b"mvex" in head  # fragments, index up front
    start = (tmp_path / "faststart.mp4").read_bytes()
    assert start.index(b"moov") < start.index(b"mdat")


def test_odd_size_is_padded_not_cropped(cli: Cli, data_dir: Path, tmp_path: Path) -> None:
    session = import_session(data_dir, smooth_frames(12, 161, 97))
    out = tmp_path / "odd.mp4"
    cli("render", session, "-o", str(out))
    pictures, _, _, stream = decode(out)
    assert (stream.width, stream.height) == (162, 98)
    recorded = png(cli, session, 0.5, tmp_path)
    assert mae(pictures[5], recorded) < MAE_LIMIT
    # the padding repeats the last column and row
    assert np.abs(pictures[5][:97, 161].astype(int) - recorded[:, 160]).mean() < MAE_LIMIT * 2


def test_variable_frame_rate_and_resolution_change(
    cli: Cli, data_dir: Path, tmp_path: Path
) -> None:
    times_us = [0, 100_000, 500_000, 2_000_000, 2_050_000, 3_000_000]
    pictures = [frame for _, frame in smooth_frames(len(times_us))]
    pictures[4] = next(iter(smooth_frames(1, 480, 360)))[1]  # a resolution change
    session = import_session(data_dir, iter(list(zip(times_us, pictures, strict=True))))
    out = tmp_path / "vfr.mp4"
    cli("render", session, "-o", str(out))
    decoded, times, duration, stream = decode(out)
    assert times == pytest.approx([t / 1e6 for t in times_us], abs=1e-4)
    assert (stream.width, stream.height) == (320, 240)  # the first frame's size
    assert mae(decoded[3], pictures[3]) < MAE_LIMIT
    assert decoded[4].shape == (240, 320, 3)  # scaled to the video's size
    assert mae(decoded[5], pictures[5]) < MAE_LIMIT
    # the last frame stays the last chunk's average interval (3 s / 5)
    assert duration == pytest.approx(3.6, abs=1e-3)


def test_multi_chunk_range_reads_only_the_chunks_it_needs(
    cli: Cli, data_dir: Path, tmp_path: Path
) -> None:
    session = import_session(data_dir, smooth_frames(50, fps=2))  # 25 s: chunks of 10 s

    async def chunks() -> list[ChunkRecord]:
        datadir = DataDir.open(data_dir)
        try:
            return await datadir.store.list_chunks(session)
        finally:
            await datadir.close()

    records = asyncio.run(chunks())
    assert len(records) >= 3
    plan = plan_render(session, records, RenderOptions(from_s=12, to_s=14))
    assert [c.sequence for c in plan.chunks] == [1]
    plan = plan_render(session, records, RenderOptions(from_s=8, to_s=21))
    assert [c.sequence for c in plan.chunks] == [0, 1, 2]
    out = tmp_path / "span.mp4"
    cli("render", session, "-o", str(out), "--from", "8", "--to", "21")
    pictures, times, duration, _ = decode(out)
    assert len(pictures) == 26  # 8.0, 8.5 .. 20.5
    assert duration == pytest.approx(13.0, abs=1e-3)
    assert times[-1] == pytest.approx(12.5, abs=1e-4)
    assert mae(pictures[5], png(cli, session, 10.5, tmp_path)) < MAE_LIMIT


def test_render_refuses_bad_requests(cli: Cli, session: str, tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    out.write_bytes(b"keep me")
    _, _, err = cli("render", session, "-o", str(out), expect=2)
    assert "already exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    cli("render", session, "-o", str(out), "--force", "--to", "1")
    assert len(decode(out)[0]) == 10
    fresh = tmp_path / "y.mp4"
    _, _, err = cli("render", session, "-o", str(fresh), "--from", "9", expect=1)
    assert err.startswith("error: from: 9 s is at or after the end") and "5.000 s" in err
    _, _, err = cli("render", session, "-o", str(fresh), "--from", "2", "--to", "1", expect=2)
    assert "--to must be after --from" in err
    cli("render", session, "-o", str(fresh), "--speed", "0", expect=2)
    cli("render", session, "-o", str(fresh), "--fragmented", "--faststart", expect=2)
    _, _, err = cli("render", "no-such-session", "-o", str(fresh), expect=1)
    assert err.startswith("error:")
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# -- archive/render.py -----------------------------------------------------------------------


def test_a_chunk_altered_on_disk_is_never_rendered(
    cli: Cli, session: str, data_dir: Path, tmp_path: Path
) -> None:
    chunk = sorted((data_dir / "chunks" / session).glob("*.chunk"))[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x01
    chunk.write_bytes(bytes(data))
    out = tmp_path / "altered.mp4"
    _, _, err = cli("render", session, "-o", str(out), expect=1)
    assert "chunk 0 of session" in err and "altered or replaced" in err
    assert not out.exists()


def test_plan_checks_options() -> None:
    with pytest.raises(NotFoundError):
        plan_render("s", [], RenderOptions())
    for bad in (
        RenderOptions(speed=0),
        RenderOptions(speed=float("nan")),
        RenderOptions(from_s=2, to_s=2),
        RenderOptions(from_s=-1),
        RenderOptions(preset="placebo"),
    ):
        with pytest.raises(InvalidConfigError):
            bad.check()


def test_cancelling_stops_the_encoder(data_dir: Path, tmp_path: Path) -> None:
    session = import_session(data_dir, smooth_frames(60))

    async def run() -> None:
        from lucid_sessions.archive.keys import load_data_key
        from lucid_sessions.chunkfile import open_chunk

        datadir = DataDir.open(data_dir)
        try:
            record = await datadir.store.get_session(session)
            assert record.key_id is not None
            key = await load_data_key(datadir, record.key_id)
            chunks = await datadir.store.list_chunks(session)
        finally:
            await datadir.close()
        stop = threading.Event()
        done: list[int] = []

        def fetch(chunk: ChunkRecord) -> bytes:
            data = DataDir.open(data_dir).chunks.get(session, chunk.sequence)
            return open_chunk(data, session_id=session, sequence=chunk.sequence, key=key.key)

        def progress(ms: int) -> None:
            done.append(ms)
            if sum(done) >= 1000:
                stop.set()

        plan = plan_render(session, chunks, RenderOptions())
        with pytest.raises(RenderCancelled):
            await asyncio.to_thread(
                render_mp4,
                plan,
                fetch,
                tmp_path / "cancelled.mp4",
                RenderOptions(),
                progress=progress,
                cancelled=stop,
            )
        assert 1000 <= sum(done) < 6000

    asyncio.run(run())
    assert not any(t.name.startswith("lucid-render") for t in threading.enumerate())


# -- the API ---------------------------------------------------------------------------------


def _imported(api: ApiCluster, count: int = 30, fps: int = FPS) -> str:
    manifest = api.run(import_frames, api.datadir, smooth_frames(count, fps=fps), name="api")
    return manifest.session_id


def test_api_streams_a_fragmented_mp4(api: ApiCluster) -> None:
    session = _imported(api)
    url = f"/api/v1/sessions/{session}/render.mp4"
    response = api.client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert f'filename="{session}.mp4"' in response.headers["content-disposition"]
    assert "content-length" not in response.headers  # streamed
    assert b"moof" in response.content[:8192]
    pictures, times, duration, _ = decode(response.content)
    assert len(pictures) == 30
    assert duration == pytest.approx(3.0, abs=1e-3)
    assert times[:2] == pytest.approx([0, 0.1], abs=1e-4)
    recorded = next(iter(smooth_frames(1)))[1]
    assert mae(pictures[0], recorded) < MAE_LIMIT

    response = api.client.get(url, params={"from": 1, "to": 2.5, "speed": 2})
    assert response.status_code == 200, response.text
    assert "excerpt" in response.headers["content-disposition"]
    pictures, _, duration, _ = decode(response.content)
    assert len(pictures) == 15
    assert duration == pytest.approx(0.75, abs=1e-3)


def test_api_refuses_what_it_cannot_render(api: ApiCluster) -> None:
    from tests.test_api_support import assert_error

    session = _imported(api, 10)
    base = f"/api/v1/sessions/{session}/render.mp4"
    assert_error(api.client.get(base, params={"from": 5}), 422, "LUCID_ERR_3002")
    assert_error(api.client.get(base, params={"from": 2, "to": 1}), 422, "LUCID_ERR_3002")
    assert_error(api.client.get(base, params={"speed": 0}), 422, "LUCID_ERR_3002")
    assert_error(api.client.get(base, params={"speed": "inf"}), 422, "LUCID_ERR_3002")
    missing = "/api/v1/sessions/no-such-session/render.mp4"
    assert_error(api.client.get(missing), 404, "LUCID_ERR_3001")
    empty = api.create()["session_id"]  # created, never recorded: no chunks
    error = assert_error(
        api.client.get(f"/api/v1/sessions/{empty}/render.mp4"), 404, "LUCID_ERR_3001"
    )
    assert "no chunks" in error["message"]


def test_api_render_is_documented(api: ApiCluster) -> None:
    schema = api.client.get("/openapi.json").json()
    operation = schema["paths"]["/api/v1/sessions/{session_id}/render.mp4"]["get"]
    assert "video/mp4" in operation["responses"]["200"]["content"]
    for status in ("401", "403", "404", "422", "429"):
        assert status in operation["responses"]
    assert {p["name"] for p in operation["parameters"]} >= {"session_id", "from", "to", "speed"}


def test_api_client_gone_stops_the_encoder(api: ApiCluster) -> None:
    from lucid_sessions.api.keys import data_key
    from lucid_sessions.api.routes.render import RenderStream

    session = _imported(api, 120)
    options = RenderOptions(fragmented=True)

    async def scenario() -> int:
        ctx = api.app.state.lucid
        record = await ctx.storage.get_session(session)
        key = await data_key(ctx, record)
        plan = plan_render(session, await ctx.storage.list_chunks(session), options)
        stream = RenderStream(
            ctx.storage,
            session,
            key,
            plan,
            options,
            buffer=1,
            piece=1024,
            hash_algorithm=record.hash_algorithm,
        )
        pieces = stream.__aiter__()
        first = await pieces.__anext__()
        stream.close()  # what the response does when the client goes away
        assert stream.stopped
        task = stream._task
        assert task is not None
        await asyncio.wait([task], timeout=10)
        assert task.done()
        await pieces.aclose()
        return len(first)

    assert api.run(scenario) > 0
    deadline = 50
    while deadline and any(t.name.startswith("lucid-render") for t in threading.enumerate()):
        threading.Event().wait(0.1)
        deadline -= 1
    assert not any(t.name.startswith("lucid-render") for t in threading.enumerate())
