"""The player's data routes (api/routes/playback.py) and the web UI's static shell.

Over :class:`ApiCluster`: the timeline, one chunk's frames after verification against the
signed Merkle root, frame images equal to what the reader decodes at the same time,
tampered chunks reported (not shown) with their sequence and reason, live sessions, and
the static shell served without a token but with a strict Content-Security-Policy.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.test_api_support import INGEST, ApiCluster
from tests.test_auth_api import KEY, SETTINGS, bearer

from lucid_sessions.api import ApiSettings
from lucid_sessions.api.auth import JwtAuthorizer
from lucid_sessions.api.routes import playback
from lucid_sessions.archive.reader import SessionReader
from lucid_sessions.security.tokens import TokenVerifier


@pytest.fixture(name="api", scope="module")
def api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiCluster]:
    path = tmp_path_factory.mktemp("playback") / "data"
    authorizer = JwtAuthorizer(TokenVerifier([KEY], SETTINGS))
    with ApiCluster(path, authorizer=authorizer) as cluster:
        yield cluster


@pytest.fixture(name="sid", scope="module")
def session_fixture(api: ApiCluster) -> str:
    # 60 frames at 2 fps: 30 s, chunks of 10 s.
    return api.import_session(frames=60, fps=2, name="playback").session_id


VIEWER = bearer("session_viewer")


def get(api: ApiCluster, path: str, role: str = "session_viewer") -> object:
    return api.client.get(f"/api/v1/sessions/{path}", headers=bearer(role))


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def reader_frame(api: ApiCluster, sid: str, seconds: float) -> np.ndarray:
    async def read() -> np.ndarray:
        reader = await SessionReader.open(api.datadir, sid)
        return (await reader.frame_at(seconds)).pixels

    return api.run(read)


def test_the_timeline_lists_every_chunk_with_times_and_the_signed_root(
    api: ApiCluster, sid: str
) -> None:
    response = get(api, f"{sid}/timeline")
    assert response.status_code == 200, response.text
    body = response.json()
    manifest = api.client.get(f"/api/v1/sessions/{sid}/manifest", headers=bearer("admin")).json()
    assert body["root"] == manifest["manifest"]["root"]
    assert body["tree_size"] == len(body["chunks"]) == 3
    assert body["live"] is False and body["status"] == "completed"
    assert body["started_at"]
    starts = [c["start_s"] for c in body["chunks"]]
    assert starts[0] == 0 and starts == sorted(starts)
    assert body["duration_s"] == pytest.approx(body["chunks"][-1]["end_s"])
    assert all(c["frame_count"] == 20 for c in body["chunks"])


def test_a_chunk_is_verified_then_its_frames_are_listed(api: ApiCluster, sid: str) -> None:
    body = get(api, f"{sid}/playback/1").json()
    assert body["verified"] is True and body["signed"] is True and body["reason"] is None
    assert body["sequence"] == 1 and body["tree_size"] == 3
    times = [f["time_s"] for f in body["frames"]]
    assert len(times) == 20 and times == sorted(times)
    assert times[0] == pytest.approx(10.0) and body["frames"][0]["keyframe"] is True
    assert body["root"] == get(api, f"{sid}/timeline").json()["root"]


@pytest.mark.parametrize("seconds", [0.0, 7.5, 15.0, 22.3, 29.5])
def test_a_frame_image_is_the_frame_the_reader_decodes_at_that_time(
    api: ApiCluster, sid: str, seconds: float
) -> None:
    timeline = get(api, f"{sid}/timeline").json()
    chunk = [c for c in timeline["chunks"] if c["start_s"] <= seconds][-1]
    meta = get(api, f"{sid}/playback/{chunk['sequence']}").json()
    index = max(i for i, f in enumerate(meta["frames"]) if f["time_s"] <= seconds)
    image = get(api, f"{sid}/playback/{chunk['sequence']}/{index}")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert "no-store" in image.headers["cache-control"]
    assert np.array_equal(png_pixels(image.content), reader_frame(api, sid, seconds))


def test_frames_are_decoded_forward_and_backward_alike(api: ApiCluster, sid: str) -> None:
    get(api, f"{sid}/playback/0")
    forward = [get(api, f"{sid}/playback/0/{i}").content for i in range(0, 20, 3)]
    backward = [get(api, f"{sid}/playback/0/{i}").content for i in range(18, -1, -3)]
    assert forward == backward[::-1]
    jpeg = api.client.get(
        f"/api/v1/sessions/{sid}/playback/0/3", params={"format": "jpeg"}, headers=VIEWER
    )
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert get(api, f"{sid}/playback/0/20").status_code == 404
    assert get(api, f"{sid}/playback/9").status_code == 404


def test_memory_is_bounded_to_a_few_decoded_chunks(api: ApiCluster, sid: str) -> None:
    for seq in (0, 1, 2, 0, 1, 2):
        get(api, f"{sid}/playback/{seq}/5")
    assert len(playback._cursors) <= playback._CACHED_CHUNKS


def tampered_session(api: ApiCluster) -> str:
    return api.import_session(frames=40, fps=2, name="to tamper").session_id


def test_an_altered_chunk_is_reported_with_its_sequence_and_never_shown(
    api: ApiCluster,
) -> None:
    sid = tampered_session(api)
    assert get(api, f"{sid}/playback/1/0").status_code == 200  # cached before
    path = api.datadir.chunks.path(sid, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    body = get(api, f"{sid}/playback/1").json()
    assert body["verified"] is False and body["sequence"] == 1
    assert body["reason"].startswith("altered:")
    assert body["frames"] == []
    refused = get(api, f"{sid}/playback/1/0")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["details"]["sequence"] == 1 and "altered" in error["details"]["reason"]
    # the other chunk still plays
    assert get(api, f"{sid}/playback/0").json()["verified"] is True


def test_truncated_and_missing_chunks_name_their_kind(api: ApiCluster) -> None:
    sid = tampered_session(api)
    path = api.datadir.chunks.path(sid, 0)
    path.write_bytes(path.read_bytes()[:-100])
    assert get(api, f"{sid}/playback/0").json()["reason"].startswith("truncated:")
    api.datadir.chunks.path(sid, 1).unlink()
    body = get(api, f"{sid}/playback/1").json()
    assert (body["verified"], body["reason"]) == (False, "missing: the chunk is not stored")


def test_a_chunk_swapped_with_another_fails_as_altered(api: ApiCluster) -> None:
    sid = tampered_session(api)
    one, two = api.datadir.chunks.path(sid, 0), api.datadir.chunks.path(sid, 1)
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)
    for seq in (0, 1):
        body = get(api, f"{sid}/playback/{seq}").json()
        assert body["verified"] is False and body["sequence"] == seq
        assert body["reason"].split(":")[0] in ("altered", "truncated")


def test_playback_needs_chunks_read_and_a_token(api: ApiCluster, sid: str) -> None:
    for path in ("timeline", "playback/0", "playback/0/0"):
        assert api.client.get(f"/api/v1/sessions/{sid}/{path}").status_code == 401
        for role in ("admin", "session_viewer", "auditor", "session_operator"):
            assert get(api, f"{sid}/{path}", role).status_code == 200
    assert get(api, f"{sid}/export", "session_viewer").status_code == 403
    assert get(api, "nosuch/timeline").status_code == 404


def test_a_recording_session_is_followed_live(tmp_path: Path) -> None:
    settings = ApiSettings(evidence_dir=tmp_path / "data")
    with ApiCluster(tmp_path / "data", settings=settings) as api:
        sid = api.create(INGEST)["session_id"]
        base = f"/api/v1/sessions/{sid}"
        assert api.client.post(f"{base}/start").status_code == 200
        rng = np.random.default_rng(3)
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        sizes = []
        for _ in range(3):
            end = time.monotonic() + 0.8
            i = 0
            while time.monotonic() < end:
                frame[(i * 5) % 200 : (i * 5) % 200 + 20, 10:60] = i % 256
                response = api.client.post(
                    f"{base}/frames",
                    content=frame.tobytes(),
                    params={"width": 320, "height": 240},
                    headers={"content-type": "application/octet-stream"},
                )
                assert response.status_code == 202
                i += 1
                time.sleep(0.03)
            timeline = api.client.get(f"{base}/timeline").json()
            assert timeline["live"] is True and timeline["root"] is None
            sizes.append(len(timeline["chunks"]))
        assert sizes[-1] > sizes[0] >= 0
        body = api.client.get(f"{base}/playback/0").json()
        assert body["verified"] is True and body["frames"]
        image = api.client.get(f"{base}/playback/0/0")
        assert image.status_code == 200 and png_pixels(image.content).shape == (240, 320, 3)
        assert api.client.post(f"{base}/stop").status_code == 200
        final = api.wait_for(sid, ("completed", "interrupted", "failed"))
        assert final["status"] == "completed"
        after = api.client.get(f"{base}/timeline").json()
        assert after["live"] is False and after["root"] == final["root"]
        assert api.client.get(f"{base}/playback/0").json()["signed"] is True


def test_the_ui_shell_is_served_without_a_token_with_a_strict_policy(api: ApiCluster) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<canvas id="screen"' in page.text
    for name, kind in (
        ("app.js", "text/javascript"),
        ("player.js", "text/javascript"),
        ("style.css", "text/css"),
    ):
        response = api.client.get(f"/ui/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    for bad in ("/ui/nosuch.js", "/ui/..%2fauth.py", "/ui/%2e%2e/routes/ui.py"):
        assert api.client.get(bad).status_code == 404, bad
    # the shell is not part of the API: not in the OpenAPI document, no token asked
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)
    app_js = api.client.get("/ui/app.js").text
    assert "sessionStorage" in app_js and "localStorage" not in app_js
