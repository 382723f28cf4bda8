"""One error body for every failure; error codes to statuses; request ids; no leaks."""

from __future__ import annotations

import errno

import pytest
from tests.test_api_support import INGEST, ApiCluster, api_fixture, assert_error  # noqa: F401

from lucid_sessions.api.errors import scrub, status_for
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    CaptureAuthError,
    CaptureConnectionError,
    ChunkNotFoundError,
    CompressionError,
    EncryptionError,
    FormatError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    NotRecordingError,
    PipelineError,
    RateLimitError,
    StorageError,
)


def _full_disk() -> StorageError:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        try:
            raise StorageError("cannot write chunk") from exc
        except StorageError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFoundError("x"), 404),
        (InvalidConfigError("x"), 422),
        (AlreadyExistsError("x"), 409),
        (NotRecordingError("x"), 409),
        (ChunkNotFoundError("x"), 404),
        (PipelineError("x"), 409),
        (Unavailable("x"), 503),
        (CaptureAuthError("x"), 502),
        (CaptureConnectionError("x"), 502),
        (StorageError("x"), 500),
        (FormatError("x"), 500),
        (_full_disk(), 507),
        (CompressionError("x"), 500),
        (EncryptionError("x"), 500),
        (AuthenticationError("x"), 500),
        (RateLimitError("x"), 429),
        (LucidError("x"), 409),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_class_has_its_status(error: LucidError, status: int) -> None:
    assert status_for(error) == status


def test_unknown_routes_are_404_in_the_common_body(api: ApiCluster) -> None:
    error = assert_error(api.client.get("/api/v1/nothing/here"), 404, "LUCID_ERR_3001")
    assert "/api/v1/nothing/here" in error["message"]
    assert_error(api.client.get("/elsewhere"), 404, "LUCID_ERR_3001")


def test_a_wrong_method_is_405_with_allow(api: ApiCluster) -> None:
    response = api.client.put("/api/v1/sessions")
    assert_error(response, 405, "LUCID_ERR_3002")
    assert response.headers["allow"]


def test_validation_is_422_naming_the_field(api: ApiCluster) -> None:
    response = api.client.post("/api/v1/sessions", json={"source": "ingest"})
    error = assert_error(response, 422, "LUCID_ERR_3002")
    assert error["message"] == "name: Field required"
    assert error["details"]["errors"] == [
        {"field": "name", "location": "body", "message": "Field required", "type": "missing"}
    ]


def test_a_refused_transition_is_409(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    error = assert_error(api.client.post(f"/api/v1/sessions/{sid}/pause"), 409, "LUCID_ERR_3004")
    assert error["details"]["status"] == "created"


def test_an_unexpected_exception_is_a_plain_500(
    api: ApiCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(session_id: str) -> None:
        raise RuntimeError("boom in /srv/lucid/secret/place.db")

    monkeypatch.setattr(api.storage, "get_session", broken)
    response = api.client.get("/api/v1/sessions/ses_1")
    error = assert_error(response, 500, "LUCID_ERR_3006")
    assert error["message"] == "an internal error occurred"
    assert "boom" not in response.text and "/srv" not in response.text
    assert "RuntimeError" not in response.text


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (StorageError("cannot read /var/lib/lucid/chunks/ses_1/00000001.chunk"), 500, "3007"),
        (_full_disk(), 507, "3007"),
        (EncryptionError("key /etc/lucid/master.key is wrong"), 500, "3009"),
        (Unavailable("storage at 10.0.0.5:8086 unreachable"), 503, "3006"),
        (RateLimitError("slow down", details={"retry_after_s": 7}), 429, "3010"),
        (CaptureAuthError("the server refused the credentials"), 502, "3006"),
    ],
)
def test_component_errors_keep_internals_out_of_the_answer(
    api: ApiCluster,
    monkeypatch: pytest.MonkeyPatch,
    error: LucidError,
    status: int,
    code: str,
) -> None:
    async def failing(session_id: str) -> None:
        raise error

    monkeypatch.setattr(api.storage, "get_session", failing)
    response = api.client.get("/api/v1/sessions/ses_1")
    body = assert_error(response, status, f"LUCID_ERR_{code}")
    for secret in ("/var/lib", "master.key", "10.0.0.5"):
        assert secret not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"
    if status == 502:
        assert body["message"] == "the server refused the credentials"


def test_paths_are_cut_out_of_client_error_messages() -> None:
    assert scrub("cannot open /data/lucid/chunks/x.chunk: gone") == "cannot open <path>: gone"
    assert scrub("session ses_1 does not exist") == "session ses_1 does not exist"
    assert scrub("use image/png or a/b") == "use image/png or a/b"


def test_a_sane_request_id_is_echoed_and_others_are_replaced(api: ApiCluster) -> None:
    ok = api.client.get("/api/v1/sessions", headers={"X-Request-ID": "trace-42.a:b"})
    assert ok.headers["x-request-id"] == "trace-42.a:b"
    missing = api.client.get("/api/v1/sessions/nosuch", headers={"X-Request-ID": "abc-1"})
    assert assert_error(missing, 404, "LUCID_ERR_3001")["request_id"] == "abc-1"
    for bad in ("has space", "x" * 200, "<script>", ""):
        response = api.client.get("/api/v1/sessions", headers={"X-Request-ID": bad})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 32
    generated = {api.client.get("/api/v1/sessions").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
