"""Health, metrics, statistics, pipeline control, OpenAPI, and where auth plugs in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import Request
from prometheus_client.parser import text_string_to_metric_families
from tests.test_api_support import INGEST, ApiCluster, TestClient, api_fixture, assert_error  # noqa: F401

from lucid_sessions.api import PERMISSIONS, Principal, ServiceHealth, create_app, route_permissions
from lucid_sessions.cluster.interfaces import StorageHealth
from lucid_sessions.errors import RateLimitError


def test_health_is_200_when_every_service_runs(api: ApiCluster) -> None:
    response = api.client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["services"]) == {"pipeline", "recorder", "processor"}
    assert all(s["state"] == "running" and s["healthy"] for s in body["services"].values())
    assert body["metadata_store"] == {"healthy": True, "kind": "sqlite"}
    assert body["storage"]["healthy"] and body["storage"]["free_bytes"] > 0
    assert body["storage"]["total_bytes"] >= body["storage"]["free_bytes"]


def test_health_is_503_when_a_service_is_not_running(api: ApiCluster) -> None:
    api.states["recorder"] = "stopping"
    response = api.client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["services"]["recorder"] == {"state": "stopping", "healthy": False, "detail": ""}
    assert body["services"]["pipeline"]["healthy"]


def test_health_is_503_when_storage_fails(api: ApiCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def sick() -> StorageHealth:
        return StorageHealth(False, 0, 0, "sqlite", "cannot stat /srv/data/lucid: gone")

    monkeypatch.setattr(api.storage, "health", sick)
    response = api.client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["storage"]["healthy"] is False
    assert "/srv/data" not in response.text


def test_failing_and_hanging_checks_count_as_failed(tmp_path: Path) -> None:
    async def hangs() -> ServiceHealth:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    def raises() -> ServiceHealth:
        raise RuntimeError("secret detail")

    def fine() -> ServiceHealth:
        return ServiceHealth("running")

    from lucid_sessions.api import ApiSettings

    with ApiCluster(tmp_path / "data", settings=ApiSettings(health_timeout_s=0.2)) as api:
        app = create_app(
            pipeline=api.pipeline,
            storage=api.storage,
            health_checks={
                "slow": hangs,
                "broken": raises,
                "fine": lambda: ServiceHealth("running"),
            },
            settings=ApiSettings(health_timeout_s=0.2),
        )
        with TestClient(app) as client:
            response = client.get("/api/v1/health")
    assert response.status_code == 503
    services = response.json()["services"]
    assert services["slow"]["state"] == services["broken"]["state"] == "failed"
    assert services["fine"]["healthy"]
    assert "secret detail" not in response.text


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_carry_the_named_series(api: ApiCluster) -> None:
    sid = api.import_session(50, fps=2).session_id
    api.create()
    api.metrics.chunk_processed("processed", 0.02)
    api.metrics.chunk_processed("failed", 0.5)
    api.client.get(f"/api/v1/sessions/{sid}")
    api.client.get("/api/v1/sessions/nosuch")
    api.client.get("/api/v1/no/such/route")
    response = api.client.get("/api/v1/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)
    sessions = {s.labels["status"]: s.value for s in families["lucid_sessions"]}
    assert sessions["completed"] == 1 and sessions["created"] == 1 and sessions["failed"] == 0
    outcomes = {
        s.labels["outcome"]: s.value
        for s in families["lucid_chunks_processed"]
        if s.name.endswith("_total")
    }
    assert outcomes["processed"] == 1 and outcomes["failed"] == 1
    histogram = {s.name: s.value for s in families["lucid_chunk_processing_seconds"]}
    assert histogram["lucid_chunk_processing_seconds_count"] == 2
    stored = {s.labels["kind"]: s.value for s in families["lucid_storage_bytes"]}
    assert stored["stored"] > 0 and stored["raw"] > stored["stored"]
    assert families["lucid_storage_chunks"][0].value == 3
    assert families["lucid_storage_free_bytes"][0].value > 0
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["lucid_api_requests"]
        if s.name.endswith("_total")
    }
    assert requests[("GET", "/api/v1/sessions/{session_id}", "200")] == 1
    assert requests[("GET", "/api/v1/sessions/{session_id}", "404")] == 1
    assert requests[("GET", "<unmatched>", "404")] == 1
    assert requests[("POST", "/api/v1/sessions", "201")] == 1
    assert "lucid_api_request_seconds" in families
    assert "lucid_recorder_fps" in families and "lucid_recorder_dropped_frames" in families


def test_metrics_show_recorder_figures_of_live_recordings(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    api.client.post(f"/api/v1/sessions/{sid}/start")
    try:
        families = _families(api.client.get("/api/v1/metrics").text)
        fps = {s.labels["session_id"] for s in families["lucid_recorder_fps"]}
        dropped = {s.labels["session_id"] for s in families["lucid_recorder_dropped_frames"]}
        assert fps == dropped == {sid}
    finally:
        api.client.post(f"/api/v1/sessions/{sid}/stop")
    api.wait_for(sid, ("completed", "interrupted", "failed"))
    families = _families(api.client.get("/api/v1/metrics").text)
    assert families["lucid_recorder_fps"] == []


def test_session_and_system_statistics(api: ApiCluster) -> None:
    sid = api.import_session(50, fps=2).session_id
    api.create()
    stats = api.client.get(f"/api/v1/sessions/{sid}/statistics").json()
    chunks = api.run(api.storage.list_chunks, sid)
    assert stats["chunk_count"] == 3
    assert stats["frame_count"] == 50
    assert stats["stored_bytes"] == sum(c.stored_size for c in chunks)
    assert stats["raw_bytes"] == sum(c.raw_bytes for c in chunks)
    assert stats["compression_ratio"] == pytest.approx(stats["raw_bytes"] / stats["stored_bytes"])
    assert stats["duration_s"] == pytest.approx((chunks[-1].end_us - chunks[0].start_us) / 1e6)
    assert stats["recorder"] is None
    system = api.client.get("/api/v1/statistics").json()
    assert system["sessions_total"] == 2
    assert system["sessions_by_status"]["completed"] == 1
    assert system["sessions_by_status"]["created"] == 1
    assert system["sessions_by_status"]["recording"] == 0
    assert system["chunks"] == 3
    assert system["stored_bytes"] == stats["stored_bytes"]
    assert system["storage"]["ok"] and system["storage"]["free_bytes"] > 0
    assert_error(api.client.get("/api/v1/sessions/nosuch/statistics"), 404, "LUCID_ERR_3001")


def test_the_pipeline_can_be_paused_and_resumed(api: ApiCluster) -> None:
    status = api.client.get("/api/v1/pipeline/status").json()
    assert status["state"] == "running"
    assert status["queue_capacity"] > 0
    paused = api.client.post("/api/v1/pipeline/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert api.client.get("/api/v1/pipeline/status").json()["state"] == "paused"
    assert api.client.post("/api/v1/pipeline/resume").json()["state"] == "running"


def test_the_openapi_document_and_docs_load(api: ApiCluster) -> None:
    document = api.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in (
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/chunks/{sequence}/download",
        "/api/v1/sessions/{session_id}/export",
        "/api/v1/sessions/{session_id}/frames",
        "/api/v1/pipeline/status",
        "/api/v1/health",
        "/api/v1/metrics",
    ):
        assert path in paths, path
    create = paths["/api/v1/sessions"]["post"]
    assert "201" in create["responses"] and "422" in create["responses"]
    schemas = document["components"]["schemas"]
    assert "ErrorBody" in schemas and "SessionCreate" in schemas
    assert set(schemas["RdpConfigIn"]["properties"]) >= {"host", "port", "password"}
    assert "password" not in schemas["SessionOut"]["properties"]
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_route_but_health_has_exactly_one_auth_dependency() -> None:
    table = route_permissions()
    playback = 3  # timeline, a chunk's frames, one frame image (routes/playback.py)
    render = 1  # GET .../render.mp4 (routes/render.py)
    holds = 4  # list, read, set, lift legal holds (routes/holds.py)
    assert len(table) == 25 + playback + render + holds
    for (method, path), permissions in table.items():
        if path == "/api/v1/health":
            assert permissions == []
        else:
            assert len(permissions) == 1, (method, path)
            assert permissions[0] in PERMISSIONS
    assert table[("POST", "/api/v1/sessions")] == ["sessions:create"]
    assert table[("GET", "/api/v1/sessions/{session_id}/export")] == ["chunks:download"]
    assert table[("GET", "/api/v1/sessions/{session_id}/render.mp4")] == ["chunks:download"]
    assert table[("POST", "/api/v1/pipeline/pause")] == ["pipeline:control"]
    assert table[("GET", "/api/v1/audit")] == ["audit:read"]
    assert table[("PUT", "/api/v1/sessions/{session_id}/hold")] == ["sessions:hold"]
    assert table[("GET", "/api/v1/sessions/{session_id}/timeline")] == ["chunks:read"]


def test_the_authorizer_is_asked_for_each_route_with_its_permission(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    async def authorizer(request: Request, permission: str) -> Principal:
        asked.append((request.url.path, permission))
        if permission == "sessions:delete":
            raise RateLimitError("no more deletes", details={"retry_after_s": 3})
        return Principal(subject="tester", role="session_viewer")

    with ApiCluster(tmp_path / "data") as api:
        app = create_app(pipeline=api.pipeline, storage=api.storage, authorizer=authorizer)
        with TestClient(app) as client:
            client.get("/api/v1/sessions")
            response = client.delete("/api/v1/sessions/ses_x")
            client.get("/api/v1/health")
    assert asked == [
        ("/api/v1/sessions", "sessions:read"),
        ("/api/v1/sessions/ses_x", "sessions:delete"),
    ]
    assert_error(response, 429, "LUCID_ERR_3010")
    assert response.headers["retry-after"] == "3"
