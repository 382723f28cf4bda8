"""The audit log over HTTP: what the web layer records, and ``GET /api/v1/audit``.

The app runs over the real local components (:class:`ApiCluster`); without an
authorizer everyone is ``Principal("anonymous", "admin")``. The refusal tests plug
:func:`record_refusal` into a :class:`JwtAuthorizer`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.test_api_support import INGEST, ApiCluster, api_fixture, assert_error  # noqa: F401

from lucid_sessions.api.audit import action_for, record, record_refusal
from lucid_sessions.api.auth import JwtAuthorizer, route_permissions
from lucid_sessions.audit import AuditEntry, verify_chain
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.security.tokens import TokenSettings, TokenVerifier, mint_token, secret_key


def entries(api: ApiCluster) -> list[AuditEntry]:
    return list(api.run(api.storage.list_audit, limit=1000).items)


def last(api: ApiCluster) -> AuditEntry:
    return entries(api)[-1]


def _check(entry: AuditEntry, response: Any, action: str, target: str, outcome: str) -> None:
    assert (entry.action, entry.target, entry.outcome) == (action, target, outcome)
    assert (entry.subject, entry.role) == ("anonymous", "admin")
    assert entry.request_id == response.headers["x-request-id"]
    assert entry.details["status"] == response.status_code
    assert entry.details["method"] == response.request.method


# What is recorded ------------------------------------------------------------------------


def test_session_state_changes_are_recorded_with_who_what_and_the_request_id(api):
    response = api.client.post("/api/v1/sessions", json=INGEST)
    sid = response.json()["session_id"]
    _check(last(api), response, "session.create", sid, "success")
    assert last(api).details["route"] == "/api/v1/sessions"
    response = api.client.patch(f"/api/v1/sessions/{sid}", json={"name": "renamed"})
    _check(last(api), response, "session.update", sid, "success")
    for verb in ("start", "pause", "resume", "stop"):
        response = api.client.post(f"/api/v1/sessions/{sid}/{verb}")
        assert response.status_code == 200, response.text
        _check(last(api), response, f"session.{verb}", sid, "success")
    other = api.create()["session_id"]
    response = api.client.delete(f"/api/v1/sessions/{other}")
    assert response.status_code == 204
    _check(last(api), response, "session.delete", other, "success")
    assert [e.action for e in entries(api)] == [
        "session.create",
        "session.update",
        "session.start",
        "session.pause",
        "session.resume",
        "session.stop",
        "session.create",
        "session.delete",
    ]
    assert verify_chain(entries(api), []).ok


def test_a_refused_change_is_recorded_as_a_failure_with_its_status(api):
    response = api.client.post("/api/v1/sessions/ses_missing/start")
    assert response.status_code == 404
    _check(last(api), response, "session.start", "ses_missing", "failure:404")
    sid = api.create()["session_id"]
    response = api.client.post(f"/api/v1/sessions/{sid}/resume")
    assert response.status_code == 409
    _check(last(api), response, "session.resume", sid, "failure:409")
    response = api.client.post("/api/v1/sessions", json={"name": "no source"})
    assert response.status_code == 422
    _check(last(api), response, "session.create", "session", "failure:422")


def test_chunk_downloads_and_exports_are_recorded(api):
    sid = api.import_session(30).session_id
    response = api.client.get(f"/api/v1/sessions/{sid}/chunks/1/download")
    assert response.status_code == 200
    _check(last(api), response, "chunk.download", f"{sid}/1", "success")
    response = api.client.get(f"/api/v1/sessions/{sid}/export")
    assert response.status_code == 200
    _check(last(api), response, "session.export", sid, "success")
    response = api.client.get(f"/api/v1/sessions/{sid}/export", params={"from": 2, "to": 9})
    _check(last(api), response, "session.export", sid, "success")
    assert (last(api).details["from"], last(api).details["to"]) == ("2", "9")
    response = api.client.get(f"/api/v1/sessions/{sid}/chunks/99/download")
    _check(last(api), response, "chunk.download", f"{sid}/99", "failure:404")


def test_pipeline_pause_and_resume_are_recorded(api):
    for verb in ("pause", "resume"):
        response = api.client.post(f"/api/v1/pipeline/{verb}")
        assert response.status_code == 200
        _check(last(api), response, f"pipeline.{verb}", "pipeline", "success")


def test_reads_and_frame_ingest_are_not_recorded(api):
    sid = api.create()["session_id"]
    api.client.post(f"/api/v1/sessions/{sid}/start")
    before = len(entries(api))
    api.client.get("/api/v1/sessions")
    api.client.get(f"/api/v1/sessions/{sid}")
    api.client.get(f"/api/v1/sessions/{sid}/chunks")
    api.client.get("/api/v1/pipeline/status")
    api.client.get("/api/v1/audit")
    api.client.get("/api/v1/nowhere")
    pixels = bytes(320 * 240 * 3)
    for _ in range(3):
        response = api.client.post(
            f"/api/v1/sessions/{sid}/frames",
            params={"width": 320, "height": 240},
            content=pixels,
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 202, response.text
    assert len(entries(api)) == before


def test_the_caller_s_request_id_is_the_one_recorded(api):
    response = api.client.post("/api/v1/pipeline/pause", headers={"X-Request-ID": "ticket-4711"})
    assert last(api).request_id == "ticket-4711" == response.headers["x-request-id"]


def test_a_failed_append_is_logged_and_counted_but_the_answer_stands(api, monkeypatch, caplog):
    async def unavailable(event: Any) -> AuditEntry:
        raise Unavailable("storage is restarting")

    monkeypatch.setattr(api.storage, "append_audit", unavailable)
    response = api.client.post("/api/v1/sessions", json=INGEST)
    assert response.status_code == 201
    assert "audit append failed action=session.create" in caplog.text
    assert "lucid_audit_append_failures_total 1.0" in api.metrics.exposition().decode()


def test_a_route_can_record_its_own_entry(api):
    async def body() -> None:
        from starlette.requests import Request

        request = Request({"type": "http", "app": api.app, "method": "POST", "headers": []})
        request.state.request_id = "req-own"
        await record(
            request, action="token.revoke", target="jti-1", outcome="success", details={"n": 1}
        )

    api.run(body)
    entry = last(api)
    assert (entry.subject, entry.role, entry.action, entry.target) == (
        "anonymous",
        "none",
        "token.revoke",
        "jti-1",
    )
    assert (entry.request_id, dict(entry.details)) == ("req-own", {"n": 1})


@pytest.mark.parametrize(
    ("method", "template", "action"),
    [
        ("POST", "/api/v1/sessions", "session.create"),
        ("PATCH", "/api/v1/sessions/{session_id}", "session.update"),
        ("DELETE", "/api/v1/sessions/{session_id}", "session.delete"),
        ("POST", "/api/v1/sessions/{session_id}/stop", "session.stop"),
        ("GET", "/api/v1/sessions/{session_id}/chunks/{sequence}/download", "chunk.download"),
        ("GET", "/api/v1/sessions/{session_id}/export", "session.export"),
        ("POST", "/api/v1/pipeline/pause", "pipeline.pause"),
        ("POST", "/api/v1/tokens/revoke", "token.revoke"),
    ],
)
def test_actions_are_named_after_the_route(method, template, action):
    assert action_for(method, template) == action


# Refusals ---------------------------------------------------------------------------------

SECRET = secrets.token_bytes(32)
KEY = secret_key(SECRET, origin="test")
SETTINGS = TokenSettings()


def bearer(role: str) -> dict[str, str]:
    token, _ = mint_token(KEY, subject=f"{role}-user", role=role, ttl_s=600, settings=SETTINGS)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(name="secured")
def secured_fixture(tmp_path: Path) -> Iterator[ApiCluster]:
    authorizer = JwtAuthorizer(TokenVerifier([KEY], SETTINGS), on_refusal=record_refusal)
    with ApiCluster(tmp_path / "data", authorizer=authorizer) as cluster:
        yield cluster


def test_a_missing_or_bad_token_is_recorded_once_as_refused(secured):
    response = secured.client.post("/api/v1/sessions", json=INGEST)
    assert response.status_code == 401
    (entry,) = entries(secured)
    assert (entry.subject, entry.role, entry.action, entry.outcome) == (
        "anonymous",
        "none",
        "token.refused",
        "refused",
    )
    assert entry.target == "/api/v1/sessions"
    assert entry.details["reason"] == "missing"
    assert entry.request_id == response.headers["x-request-id"]
    response = secured.client.get(
        "/api/v1/sessions/ses_a", headers={"Authorization": "Bearer not.a.token"}
    )
    assert response.status_code == 401
    entry = last(secured)
    assert (entry.action, entry.target, entry.outcome) == ("token.refused", "ses_a", "refused")
    assert "not.a.token" not in repr(entries(secured))


def test_a_role_without_the_permission_is_recorded_once_as_refused(secured):
    response = secured.client.post(
        "/api/v1/sessions", json=INGEST, headers=bearer("session_viewer")
    )
    assert response.status_code == 403
    (entry,) = entries(secured)
    assert (entry.subject, entry.role, entry.action, entry.outcome) == (
        "session_viewer-user",
        "session_viewer",
        "permission.refused",
        "refused",
    )
    assert "sessions:create" in str(entry.details["reason"])


def test_an_authorised_change_names_the_token_s_subject_and_role(secured):
    response = secured.client.post("/api/v1/pipeline/pause", headers=bearer("session_operator"))
    assert response.status_code == 200
    entry = last(secured)
    assert (entry.subject, entry.role, entry.action) == (
        "session_operator-user",
        "session_operator",
        "pipeline.pause",
    )


# GET /api/v1/audit ------------------------------------------------------------------------


@pytest.fixture
def busy(api: ApiCluster) -> ApiCluster:
    """Seven entries: 3 creates (seq 1, 3, 5), 2 starts (2, 4), a failed stop, a pause."""
    for _ in range(2):
        sid = api.create()["session_id"]
        api.client.post(f"/api/v1/sessions/{sid}/start")
    api.create()
    api.client.post("/api/v1/sessions/ses_missing/stop")
    api.client.post("/api/v1/pipeline/pause")
    return api


def _seqs(api: ApiCluster, **params: Any) -> list[int]:
    response = api.client.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return [item["seq"] for item in response.json()["items"]]


def test_the_audit_route_needs_the_audit_read_permission():
    assert route_permissions()[("GET", "/api/v1/audit")] == ["audit:read"]


def test_the_log_lists_oldest_first_with_every_field(busy):
    body = busy.client.get("/api/v1/audit").json()
    assert [item["seq"] for item in body["items"]] == list(range(1, 8))
    assert (body["limit"], body["next_after"], body["has_next"]) == (100, None, False)
    first = body["items"][0]
    assert set(first) == {
        "seq",
        "time",
        "subject",
        "role",
        "action",
        "target",
        "outcome",
        "request_id",
        "details",
        "prev",
        "hash",
    }
    assert first["prev"] == "0" * 64
    assert body["items"][1]["prev"] == first["hash"]


def test_each_filter_selects_its_entries(busy):
    items = busy.client.get("/api/v1/audit").json()["items"]
    sid = items[0]["target"]
    assert _seqs(busy, action="session.create") == [1, 3, 5]
    assert _seqs(busy, action="session.start", target=sid) == [2]
    assert _seqs(busy, target=sid) == [1, 2]
    assert _seqs(busy, outcome="failure:404") == [6]
    assert _seqs(busy, subject="anonymous") == list(range(1, 8))
    assert _seqs(busy, subject="somebody") == []
    assert _seqs(busy, since=items[3]["time"]) == [4, 5, 6, 7]
    assert _seqs(busy, until=items[3]["time"]) == [1, 2, 3]
    assert _seqs(busy, since=items[2]["time"], until=items[4]["time"]) == [3, 4]


def test_the_log_pages_with_the_after_cursor(busy):
    body = busy.client.get("/api/v1/audit", params={"limit": 3}).json()
    assert [i["seq"] for i in body["items"]] == [1, 2, 3]
    assert (body["next_after"], body["has_next"]) == (3, True)
    body = busy.client.get("/api/v1/audit", params={"limit": 3, "after": 3}).json()
    assert [i["seq"] for i in body["items"]] == [4, 5, 6]
    body = busy.client.get("/api/v1/audit", params={"limit": 3, "after": 6}).json()
    assert [i["seq"] for i in body["items"]] == [7]
    assert (body["next_after"], body["has_next"]) == (None, False)
    assert _seqs(busy, action="session.create", limit=2, after=1) == [3, 5]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": -1}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"subject": ""}, "subject"),
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "until"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(api, params, field):
    error = assert_error(api.client.get("/api/v1/audit", params=params), 422, "LUCID_ERR_3002")
    assert error["message"].startswith(field)


def test_the_audit_route_is_documented_with_its_errors(api):
    operation = api.client.get("/openapi.json").json()["paths"]["/api/v1/audit"]["get"]
    assert {"401", "403", "422", "200"} <= set(operation["responses"])
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"subject", "action", "target", "outcome", "since", "until", "after", "limit"}
