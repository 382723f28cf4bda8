"""Recording real RDP sessions from the FreeRDP test server, end to end.

Picture tolerance (same as the capture tests): a decoded frame matches a screenshot of
the server's own display taken at the same moment when the mean absolute difference is
below 8 (of 255) and more than 90 % of pixels are within 32 levels in every channel.
Timing blurs the parts of the animation that moved between the two grabs, and 16-bit
colour over TLS blurs colours a little; neither changes the picture.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import Cli
from tests.rdp_fixtures import NLA_PASSWORD, NLA_USER, SIZE, same_picture
from tests.rdp_server import RdpTestServer

from lucid_sessions.archive.reader import SessionReader
from lucid_sessions.capture import RdpConfig, RdpSource
from lucid_sessions.recorder.session_recorder import SessionRecorder
from lucid_sessions.storage.datadir import DataDir

RECORD_SECONDS = 5.0


def _config(server: RdpTestServer, security: str) -> RdpConfig:
    if security == "tls":
        return RdpConfig(
            host="127.0.0.1",
            port=server.port,
            username="viewer",
            password="",
            security="tls",
            width=SIZE[0],
            height=SIZE[1],
        )
    return RdpConfig(
        host="127.0.0.1",
        port=server.port,
        username=NLA_USER,
        password=NLA_PASSWORD,
        security="nla",
        width=SIZE[0],
        height=SIZE[1],
    )


async def _record_with_screenshots(data_dir: Path, server: RdpTestServer, security: str):
    """Record for RECORD_SECONDS while screenshotting the server's display every 0.5 s."""
    datadir = DataDir.open(data_dir, create=True)
    recorder = SessionRecorder(
        datadir,
        RdpSource(_config(server, security)),
        name=f"rdp {security}",
        fps=8,
        duration_s=RECORD_SECONDS,
    )
    task = asyncio.create_task(recorder.run())
    shots = []
    while not task.done():
        await asyncio.sleep(0.5)
        sampler = recorder.sampler
        if sampler is None or sampler.started is None or task.done():
            continue
        taken = time.monotonic()
        picture = await asyncio.to_thread(server.screenshot)
        shots.append((taken - sampler.started, picture))
    result = await task
    reader = await SessionReader.open(datadir, result.session_id)
    pairs = [((await reader.frame_at(at)).pixels, picture) for at, picture in shots[1:-1]]
    await datadir.close()
    return result, pairs


@pytest.mark.parametrize("security", ["tls", "nla"])
def test_recording_an_rdp_session_captures_the_servers_screen(
    security, tls_server, nla_server, data_dir, cli: Cli
):
    server = tls_server if security == "tls" else nla_server
    result, pairs = asyncio.run(_record_with_screenshots(data_dir, server, security))
    assert result.status == "completed"
    stats = result.stats
    assert stats.captured >= 0.6 * 8 * RECORD_SECONDS, stats
    decoded = [frame for frame, _ in pairs]
    assert all(len(np.unique(f.reshape(-1, 3), axis=0)) > 4 for f in decoded), "blank frames"
    assert any(not np.array_equal(decoded[0], f) for f in decoded[1:]), "frames never change"
    matches = sum(same_picture(frame, shot) for frame, shot in pairs)
    assert len(pairs) >= 5 and matches >= 0.8 * len(pairs), f"{matches} of {len(pairs)}"
    _, out, _ = cli("verify", result.session_id)
    assert out.startswith("OK")


def test_record_cli_over_nla_finalises_and_verifies(nla_server, cli: Cli, tmp_path):
    password = tmp_path / "pw"
    password.write_text(NLA_PASSWORD + "\n")
    _, out, err = cli(
        "record",
        f"rdp://{NLA_USER}@127.0.0.1:{nla_server.port}",
        "--password-file",
        str(password),
        "--security",
        "nla",
        "--fps",
        "5",
        "--resolution",
        "1280x720",
        "--duration",
        "3",
    )
    session = out.strip()
    assert session.startswith("ses_") and "completed:" in err
    assert NLA_PASSWORD not in out + err
    _, shown, _ = cli("show", session)
    assert "status       completed" in shown
    cli("verify", session)
    cli("frame", session, "--at", "1.5", "-o", str(tmp_path / "f.png"))


def test_a_wrong_password_fails_clearly_and_leaves_no_recording_session(
    nla_server, cli: Cli, tmp_path
):
    password = tmp_path / "pw"
    password.write_text("wrong password\n")
    _, _out, err = cli(
        "record",
        f"rdp://{NLA_USER}@127.0.0.1:{nla_server.port}",
        "--password-file",
        str(password),
        "--duration",
        "3",
        "--resolution",
        "1280x720",
        expect=1,
    )
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "wrong password" not in err
    _, listing, _ = cli("ls")
    assert "recording" not in listing and "ses_" not in listing


def test_the_server_dying_mid_recording_finalises_an_interrupted_session_that_verifies(
    capture_deps, data_dir, cli: Cli
):
    async def scenario(server: RdpTestServer):
        datadir = DataDir.open(data_dir, create=True)
        recorder = SessionRecorder(
            datadir,
            RdpSource(_config(server, "tls")),
            name="dies",
            fps=8,
            duration_s=30,
            max_duration_us=1_000_000,
        )
        task = asyncio.create_task(recorder.run())
        deadline = time.monotonic() + 30
        while (recorder.writer is None or recorder.writer.chunks_stored < 2) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
        server.kill()
        result = await asyncio.wait_for(task, 20)
        await datadir.close()
        return result

    with RdpTestServer(auth="none", size=SIZE) as server:
        result = asyncio.run(scenario(server))
    assert result.status == "interrupted" and result.reason
    assert result.manifest.tree_size >= 2
    _, shown, _ = cli("show", result.session_id)
    assert "status       interrupted" in shown
    _, out, _ = cli("verify", result.session_id)
    assert out.startswith("OK")


def test_pause_and_resume_leave_a_gap_in_time_with_no_frames(tls_server, data_dir):
    async def scenario():
        datadir = DataDir.open(data_dir, create=True)
        recorder = SessionRecorder(
            datadir,
            RdpSource(_config(tls_server, "tls")),
            name="paused",
            fps=8,
        )
        task = asyncio.create_task(recorder.run())
        deadline = time.monotonic() + 30
        while (recorder.sampler is None or recorder.sampler.stats.captured < 8) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        recorder.pause()
        await asyncio.sleep(2.0)
        recorder.resume()
        await asyncio.sleep(1.5)
        recorder.stop()
        result = await asyncio.wait_for(task, 20)
        reader = await SessionReader.open(datadir, result.session_id)
        stamps = []
        for chunk in reader.chunks:
            from lucid_sessions.recording.codec import ChunkDecoder

            plain = await reader.plaintext(chunk.sequence)
            stamps += [r.timestamp_us for r in ChunkDecoder(plain).records]
        await datadir.close()
        return result, stamps

    result, stamps = asyncio.run(scenario())
    assert result.status == "completed"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) >= 1_900_000, "no gap while paused"
    assert sum(1 for g in gaps if g > 1_000_000) == 1, "frames inside the pause"
    assert result.stats.paused_s == pytest.approx(2.0, abs=0.3)
