"""Sessions through the REST API, on the real pipeline, recorder and storage."""

from __future__ import annotations

import copy
import io
import logging
import time

import numpy as np
import pytest
from PIL import Image
from tests.test_api_support import INGEST, RDP, ApiCluster, api_fixture, assert_error  # noqa: F401

PASSWORD = RDP["rdp_config"]["password"]


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _keys_named_password(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [k for k in value if "password" in k]
        return found + [k for v in value.values() for k in _keys_named_password(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys_named_password(v)]
    return []


def test_create_answers_201_with_location_and_the_stored_session(api: ApiCluster) -> None:
    response = api.client.post("/api/v1/sessions", json=INGEST)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/sessions/{body['session_id']}"
    assert body["status"] == "created"
    assert body["name"] == INGEST["name"]
    assert (body["project"], body["environment"], body["tags"]) == ("alpha", "test", ["api"])
    assert body["source"] == "ingest"
    assert body["recording_config"]["fps"] == 20
    assert body["recording_config"]["compression"] == "zstd"
    assert body["rdp_config"] is None
    stored = api.run(api.storage.get_session, body["session_id"])
    assert stored.config["recording_config"]["width"] == 320


def test_get_returns_the_session_and_unknown_ids_are_404(api: ApiCluster) -> None:
    created = api.create()
    response = api.client.get(f"/api/v1/sessions/{created['session_id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert_error(api.client.get("/api/v1/sessions/ses_missing"), 404, "LUCID_ERR_3001")


def test_list_paginates_with_total_and_has_next(api: ApiCluster) -> None:
    ids = [api.create({**INGEST, "name": f"s{i}"})["session_id"] for i in range(5)]
    first = api.client.get("/api/v1/sessions", params={"limit": 2}).json()
    assert (first["total"], first["limit"], first["offset"], first["has_next"]) == (5, 2, 0, True)
    assert [s["session_id"] for s in first["items"]] == ids[:2]
    last = api.client.get("/api/v1/sessions", params={"limit": 2, "offset": 4}).json()
    assert [s["session_id"] for s in last["items"]] == ids[4:]
    assert last["has_next"] is False
    default = api.client.get("/api/v1/sessions").json()
    assert default["limit"] == 50 and len(default["items"]) == 5
    beyond = api.client.get("/api/v1/sessions", params={"offset": 10}).json()
    assert beyond["items"] == [] and beyond["total"] == 5 and not beyond["has_next"]


def test_list_filters_by_status_project_and_environment(api: ApiCluster) -> None:
    a = api.create({**INGEST, "project": "p1", "environment": "prod"})
    api.create({**INGEST, "project": "p2", "environment": "prod"})
    api.create({**INGEST, "project": "p1", "environment": "dev"})
    api.client.post(f"/api/v1/sessions/{a['session_id']}/start")

    def ids(**params: str) -> int:
        return int(api.client.get("/api/v1/sessions", params=params).json()["total"])

    assert ids(project="p1") == 2
    assert ids(environment="prod") == 2
    assert ids(project="p1", environment="prod") == 1
    assert ids(status="recording") == 1
    assert ids(status="created") == 2
    api.client.post(f"/api/v1/sessions/{a['session_id']}/stop")


def test_update_changes_only_the_fields_sent(api: ApiCluster) -> None:
    created = api.create()
    sid = created["session_id"]
    response = api.client.patch(
        f"/api/v1/sessions/{sid}",
        json={"name": "renamed", "tags": ["x", "y"], "metadata": {"ticket": "T-1"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "renamed"
    assert body["tags"] == ["x", "y"]
    assert body["metadata"] == {"ticket": "T-1"}
    assert body["project"] == "alpha"
    cleared = api.client.patch(f"/api/v1/sessions/{sid}", json={"project": None}).json()
    assert cleared["project"] is None and cleared["name"] == "renamed"
    assert cleared["recording_config"] == created["recording_config"]


def test_delete_answers_204_and_the_session_is_gone(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    response = api.client.delete(f"/api/v1/sessions/{sid}")
    assert response.status_code == 204 and response.content == b""
    assert_error(api.client.get(f"/api/v1/sessions/{sid}"), 404, "LUCID_ERR_3001")
    assert_error(api.client.delete(f"/api/v1/sessions/{sid}"), 404, "LUCID_ERR_3001")


def test_invalid_transitions_are_409_with_their_codes(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    assert_error(api.client.post(f"{base}/pause"), 409, "LUCID_ERR_3004")
    assert_error(api.client.post(f"{base}/stop"), 409, "LUCID_ERR_3004")
    assert_error(api.client.post(f"{base}/resume"), 409, "LUCID_ERR_3004")
    assert api.client.post(f"{base}/start").json()["status"] == "recording"
    error = assert_error(api.client.post(f"{base}/start"), 409, "LUCID_ERR_3006")
    assert "recording" in error["message"]
    assert_error(api.client.delete(base), 409, "LUCID_ERR_3006")
    api.client.post(f"{base}/stop")


def test_an_ingest_session_is_recorded_through_the_api_and_completes(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    base = f"/api/v1/sessions/{sid}"
    assert api.client.post(f"{base}/start").json()["status"] == "recording"
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)

    def push_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            frame[(i * 5) % 200 : (i * 5) % 200 + 20, 10:60] = i % 256
            if i % 2:
                response = api.client.post(
                    f"{base}/frames",
                    content=frame.tobytes(),
                    params={"width": 320, "height": 240},
                    headers={"content-type": "application/octet-stream"},
                )
            else:
                response = api.client.post(
                    f"{base}/frames", content=_png(frame), headers={"content-type": "image/png"}
                )
            assert response.status_code == 202, response.text
            i += 1
            time.sleep(0.04)

    push_for(1.2)
    assert api.client.post(f"{base}/pause").json()["status"] == "paused"
    assert api.client.post(f"{base}/resume").json()["status"] == "recording"
    push_for(0.6)
    stats = api.client.get(f"{base}/statistics").json()
    assert stats["recorder"]["state"] == "recording"
    assert stats["recorder"]["captured"] > 0
    assert api.client.post(f"{base}/stop").status_code == 200
    final = api.wait_for(sid, ("completed", "interrupted", "failed"))
    assert final["status"] == "completed", final["status_reason"]
    chunks = api.client.get(f"{base}/chunks").json()
    assert chunks["total"] >= 2
    verified = api.client.get(f"{base}/verify").json()
    assert verified["ok"], verified["failures"]
    assert verified["chunks_checked"] == chunks["total"]


def test_frames_are_refused_for_sessions_that_do_not_take_them(api: ApiCluster) -> None:
    rdp = api.create(RDP)["session_id"]
    ingest = api.create()["session_id"]
    png = _png(np.zeros((240, 320, 3), dtype=np.uint8))
    headers = {"content-type": "image/png"}
    assert_error(
        api.client.post(f"/api/v1/sessions/{rdp}/frames", content=png, headers=headers),
        422,
        "LUCID_ERR_3002",
    )
    assert_error(
        api.client.post(f"/api/v1/sessions/{ingest}/frames", content=png, headers=headers),
        409,
        "LUCID_ERR_3004",
    )
    assert_error(
        api.client.post("/api/v1/sessions/nosuch/frames", content=png, headers=headers),
        404,
        "LUCID_ERR_3001",
    )


@pytest.mark.parametrize(
    ("content_type", "body", "params", "status"),
    [
        ("text/plain", b"hello", {}, 415),
        ("image/png", b"not a png", {}, 422),
        ("image/jpeg", b"\xff\xd8 broken", {}, 422),
        ("application/octet-stream", b"\0" * 10, {"width": 320, "height": 240}, 422),
        ("application/octet-stream", b"\0" * 10, {}, 422),
    ],
)
def test_bad_frames_are_refused_before_the_recorder(
    api: ApiCluster, content_type: str, body: bytes, params: dict[str, int], status: int
) -> None:
    sid = api.create()["session_id"]
    api.client.post(f"/api/v1/sessions/{sid}/start")
    try:
        response = api.client.post(
            f"/api/v1/sessions/{sid}/frames",
            content=body,
            params=params,
            headers={"content-type": content_type},
        )
        assert_error(response, status, "LUCID_ERR_3002")
    finally:
        api.client.post(f"/api/v1/sessions/{sid}/stop")


def test_a_frame_larger_than_the_cap_is_413(tmp_path) -> None:
    from lucid_sessions.api import ApiSettings

    with ApiCluster(tmp_path / "data", settings=ApiSettings(max_frame_bytes=1000)) as small:
        sid = small.create()["session_id"]
        small.client.post(f"/api/v1/sessions/{sid}/start")
        response = small.client.post(
            f"/api/v1/sessions/{sid}/frames",
            content=b"\0" * 320 * 240 * 3,
            params={"width": 320, "height": 240},
            headers={"content-type": "application/octet-stream"},
        )
        assert_error(response, 413, "LUCID_ERR_3002")
        small.client.post(f"/api/v1/sessions/{sid}/stop")


def test_a_jpeg_frame_is_accepted(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    api.client.post(f"/api/v1/sessions/{sid}/start")
    out = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 99, dtype=np.uint8)).save(out, format="JPEG")
    response = api.client.post(
        f"/api/v1/sessions/{sid}/frames",
        content=out.getvalue(),
        params={"timestamp_us": 5},
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {
        "session_id": sid,
        "width": 320,
        "height": 240,
        "timestamp_us": 5,
    }
    api.client.post(f"/api/v1/sessions/{sid}/stop")


def test_the_rdp_password_is_never_returned_nor_logged(
    api: ApiCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = api.client.post("/api/v1/sessions", json=RDP)
    sid = created.json()["session_id"]
    stored = api.run(api.storage.get_session, sid)
    assert "rdp_password_sealed" in stored.config  # the pipeline got it, sealed
    bad = copy.deepcopy(RDP)
    bad["rdp_config"]["port"] = 0
    bad["rdp_config"]["password"] = PASSWORD + "\n"
    wrong_type = copy.deepcopy(RDP)
    wrong_type["rdp_config"]["password"] = [PASSWORD]
    extra = copy.deepcopy(RDP)
    extra["rdp_config"]["pass"] = PASSWORD
    responses = [
        created,
        api.client.get(f"/api/v1/sessions/{sid}"),
        api.client.get("/api/v1/sessions"),
        api.client.patch(f"/api/v1/sessions/{sid}", json={"name": "n2"}),
        api.client.post("/api/v1/sessions", json=bad),
        api.client.post("/api/v1/sessions", json=wrong_type),
        api.client.post("/api/v1/sessions", json=extra),
        api.client.get(f"/api/v1/sessions/{sid}/statistics"),
        api.client.get("/api/v1/statistics"),
        api.client.get("/api/v1/pipeline/status"),
    ]
    for response in responses:
        assert PASSWORD not in response.text, response.request.url
        assert "rdp_password_sealed" not in response.text
        if response.status_code < 400:
            assert not _keys_named_password(response.json()), response.request.url
    assert [r.status_code for r in responses[4:7]] == [422, 422, 422]
    assert "rdp_config.password" in responses[4].json()["error"]["message"]
    assert PASSWORD not in caplog.text
    assert stored.config["rdp_password_sealed"] not in caplog.text


def test_the_pipeline_gets_the_documented_spec_and_the_password_apart(
    api: ApiCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[dict, str]] = []
    create = api.pipeline.create_session

    async def spy(spec: dict, *, password: str = "") -> object:
        seen.append((spec, password))
        return await create(spec, password=password)

    monkeypatch.setattr(api.pipeline, "create_session", spy)
    assert api.client.post("/api/v1/sessions", json=RDP).status_code == 201
    ((spec, password),) = seen
    assert password == PASSWORD
    assert set(spec) == {
        "name",
        "project",
        "environment",
        "tags",
        "source",
        "rdp_config",
        "x11_config",
        "recording_config",
        "storage_config",
        "metadata",
    }
    assert spec["rdp_config"] == {
        "host": "rdp.example.test",
        "port": 3389,
        "username": "alice",
        "domain": "CORP",
        "security": "nla",
        "ignore_cert": True,
    }
    assert set(spec["recording_config"]) == {
        "fps",
        "width",
        "height",
        "quality",
        "compression",
        "chunk_duration_s",
        "chunk_size_mb",
    }
    assert spec["storage_config"] == {"retention_days": None, "max_size_gb": None}
    assert spec["x11_config"] is None and spec["tags"] == [] and spec["metadata"] == {}


def test_the_status_filter_knows_every_state_of_the_pipeline() -> None:
    from typing import get_args

    from lucid_sessions.api.routes.sessions import StatusFilter
    from lucid_sessions.cluster.pipeline_manager import TRANSITIONS
    from lucid_sessions.observability import SESSION_STATUSES

    states = set(TRANSITIONS) | {s for targets in TRANSITIONS.values() for s in targets}
    assert states <= set(SESSION_STATUSES)
    assert set(get_args(StatusFilter)) == set(SESSION_STATUSES)


def test_user_metadata_comes_back_as_given_even_with_secret_sounding_keys(
    api: ApiCluster,
) -> None:
    metadata = {"private_ip": "10.0.0.5", "token_count": 3, "ticket": "OPS-1"}
    created = api.client.post("/api/v1/sessions", json={**INGEST, "metadata": metadata})
    assert created.status_code == 201
    assert created.json()["metadata"] == metadata
    fetched = api.client.get(f"/api/v1/sessions/{created.json()['session_id']}")
    assert fetched.json()["metadata"] == metadata
