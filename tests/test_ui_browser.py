"""The web UI in a real browser (headless Chromium through Playwright) over `serve`.

Sign in, list sessions, open a recorded session, play, seek to the middle and compare the
canvas with the frame `lucid-sessions frame` extracts at the same time; tamper with one
chunk on disk and see the red span at its place; a viewer sees no download and gets 403;
watch a session live while it records.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.browser_fixtures import UiServer, browser_context_fixture, ui_server_fixture  # noqa: F401
from tests.test_api_support import INGEST

pytestmark = pytest.mark.slow

SETTLED = (
    "() => { const p = window.lucidPlayer; "
    "return p && p.timeline && !p.busy && !p.want && p.seekStarted === null && p.shown; }"
)
"""The player has drawn what the last seek asked for and has nothing queued."""


def sign_in(context: Any, server: UiServer, role: str = "admin") -> Any:
    page = context.new_page()
    page.goto(server.base_url + "/")
    page.locator("#signin").wait_for(state="visible")
    page.fill("#token", server.token(role))
    page.click("#signin-form button[type=submit]")
    page.locator("#sessions").wait_for(state="visible")
    return page


def open_session(page: Any, name: str) -> None:
    page.locator("#session-rows a", has_text=name).click()
    page.locator("#session").wait_for(state="visible")
    page.wait_for_function(SETTLED)


def canvas_pixels(page: Any) -> np.ndarray:
    url = page.evaluate("() => document.getElementById('screen').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def player(page: Any, expression: str) -> Any:
    return page.evaluate(f"() => {{ const p = window.lucidPlayer; return {expression}; }}")


def test_sign_in_list_play_and_seek_to_the_middle(
    browser_context: Any, ui_server: UiServer, tmp_path: Path
) -> None:
    page = sign_in(browser_context, ui_server)
    rows = page.locator("#session-rows tr")
    assert rows.count() == 2
    assert "completed" in rows.first.inner_text()
    assert page.locator("#whoami").inner_text() == "e2e-admin (admin)"
    # the token stays out of URLs and out of persistent storage
    token = ui_server.token()
    assert token not in page.url
    assert page.evaluate("() => localStorage.length") == 0
    page.select_option("#filter-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#session-rows tr').length === 0")
    page.select_option("#filter-status", "")
    page.wait_for_function("() => document.querySelectorAll('#session-rows tr').length === 2")

    open_session(page, "playback")
    sid = ui_server.sessions["playback"]
    assert page.locator("#session-id").inner_text() == sid
    assert "completed" in page.locator("#stages").inner_text()
    assert page.locator("#chunk-rows tr").count() >= 2
    assert "password" not in page.locator("#config").inner_text()
    assert page.locator("#downloads").is_visible()
    duration = player(page, "p.duration()")
    assert duration >= 20

    # play a little, at 2x
    page.select_option("#speed", "2")
    page.click("#play")
    page.wait_for_function(
        "() => window.lucidPlayer.t > 1.5 && window.lucidPlayer.stats.frames > 1"
    )
    page.click("#play")
    assert player(page, "p.playing") is False and player(page, "p.speed") == 2

    # seek to the middle by a click on the seek bar
    bar = page.locator("#seekbar").bounding_box()
    page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
    page.wait_for_function(SETTLED)
    t = player(page, "p.t")
    assert abs(t - duration / 2) < duration / 50
    shown = canvas_pixels(page)
    out = tmp_path / "frame.png"
    ui_server.cli("frame", sid, "--at", repr(t), "-o", str(out))
    expected = np.asarray(Image.open(out).convert("RGB"))
    assert shown.shape == expected.shape
    assert np.array_equal(shown, expected)
    assert page.locator("#time-wall").inner_text() not in ("", "-")
    # every chunk played or seeked is verified: green spans only
    assert page.locator(".span.verified").count() >= 1
    assert page.locator(".span.failed").count() == 0

    # keyboard: five seconds on
    page.locator("#seekbar").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(SETTLED)
    assert player(page, "p.t") == pytest.approx(t + 5, abs=0.01)
    later = player(page, "p.t")
    ui_server.cli("frame", sid, "--at", repr(later), "-o", str(out))
    assert np.array_equal(canvas_pixels(page), np.asarray(Image.open(out).convert("RGB")))
    # seeks are timed in the page
    assert player(page, "p.stats.seeks.length") >= 2

    # the evidence bundle downloads as a blob (the token in a header, not in a URL)
    with page.expect_download() as download:
        page.click("#download-bundle")
    assert download.value.suggested_filename == f"{sid}.tar"
    page.close()


def test_a_tampered_chunk_shows_as_a_red_span_at_its_place(
    browser_context: Any, ui_server: UiServer
) -> None:
    sid = ui_server.sessions["tamper"]
    chunk = ui_server.data_dir / "chunks" / sid / f"{1:08d}.chunk"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))

    page = sign_in(browser_context, ui_server)
    open_session(page, "tamper")
    timeline = player(page, "p.timeline")
    target = timeline["chunks"][1]
    total = timeline["duration_s"]
    middle = (target["start_s"] + target["end_s"]) / 2
    bar = page.locator("#seekbar").bounding_box()
    page.mouse.click(bar["x"] + bar["width"] * middle / total, bar["y"] + bar["height"] / 2)
    red = page.locator('.span.failed[data-seq="1"]')
    red.wait_for(state="attached")
    assert page.locator(".span.failed").count() == 1
    box = red.bounding_box()
    assert box["x"] == pytest.approx(bar["x"] + bar["width"] * target["start_s"] / total, abs=2)
    nxt = timeline["chunks"][2]["start_s"]
    assert box["width"] == pytest.approx(bar["width"] * (nxt - target["start_s"]) / total, abs=2)
    failure = page.locator('#failures li[data-seq="1"]').inner_text()
    assert failure.startswith("chunk 1") and "altered" in failure
    assert "chunk 1 failed verification" in page.locator("#screen-message").inner_text()
    # the chunk before it still plays, verified
    page.mouse.click(bar["x"] + 2, bar["y"] + bar["height"] / 2)
    page.wait_for_function(SETTLED)
    assert page.locator('.span.verified[data-first="0"]').count() == 1
    page.close()


def test_a_viewer_sees_no_download_and_the_server_refuses_it(
    browser_context: Any, ui_server: UiServer
) -> None:
    page = sign_in(browser_context, ui_server, "session_viewer")
    assert page.locator("#whoami").inner_text().endswith("(session_viewer)")
    open_session(page, "playback")
    assert page.locator("#downloads").is_hidden()
    sid = ui_server.sessions["playback"]
    statuses = page.evaluate(
        """async (sid) => {
            const auth = {Authorization: `Bearer ${sessionStorage.getItem("lucid.token")}`};
            const get = (path) => fetch(`/api/v1/sessions/${sid}/${path}`, {headers: auth});
            return [(await get("export")).status, (await get("chunks/0/download")).status,
                    (await get("timeline")).status];
        }""",
        sid,
    )
    assert statuses == [403, 403, 200]
    # signing out forgets the token
    page.click("#signout")
    page.locator("#signin").wait_for(state="visible")
    assert page.evaluate("() => sessionStorage.getItem('lucid.token')") is None
    page.close()


def test_a_recording_session_is_watched_live_following_the_newest_chunks(
    browser_context: Any, ui_server: UiServer
) -> None:
    headers = {"Authorization": f"Bearer {ui_server.token('admin')}"}
    api = httpx.Client(base_url=ui_server.base_url + "/api/v1", headers=headers, timeout=10)
    sid = api.post("/sessions", json=INGEST).json()["session_id"]
    assert api.post(f"/sessions/{sid}/start").status_code == 200
    stop = threading.Event()

    def push() -> None:
        rng = np.random.default_rng(5)
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        i = 0
        with httpx.Client(base_url=ui_server.base_url + "/api/v1", headers=headers) as client:
            while not stop.is_set():
                frame[(i * 5) % 200 : (i * 5) % 200 + 20, 10:60] = i % 256
                client.post(
                    f"/sessions/{sid}/frames",
                    content=frame.tobytes(),
                    params={"width": 320, "height": 240},
                    headers={"content-type": "application/octet-stream"},
                )
                i += 1
                time.sleep(0.05)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        time.sleep(1.5)  # a few chunks before the page opens
        page = sign_in(browser_context, ui_server)
        page.goto(f"{ui_server.base_url}/#/sessions/{sid}")
        page.wait_for_function(SETTLED)
        assert player(page, "p.timeline.live") is True and player(page, "p.follow") is True
        assert page.locator("#live").is_visible()
        first = player(page, "p.timeline.chunks.length")
        page.click("#play")
        # the player polls the timeline every 2 s and follows, a few seconds behind
        page.wait_for_function(
            f"() => window.lucidPlayer.timeline.chunks.length > {first} + 2"
            " && window.lucidPlayer.shown.seq > 0",
            timeout=20_000,
        )
        behind = player(page, "p.duration() - p.t")
        assert 0 <= behind <= 8
        assert page.locator(".span.failed").count() == 0
        page.close()
    finally:
        stop.set()
        pusher.join(5)
        api.post(f"/sessions/{sid}/stop")
        api.close()
