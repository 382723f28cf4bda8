"""Every validation rule at the edge: 422, LUCID_ERR_3002, a message naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.test_api_support import INGEST, RDP, ApiCluster, assert_error, module_api_fixture  # noqa: F401

_DELETE = object()


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target.setdefault(part, {})
    if value is _DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return body


X11 = {"name": "x11", "source": "x11", "x11_config": {"display": ":10"}}

# (what, base body, field path to change, new value, field named in the message)
CREATE_RULES = [
    ("host with a space", RDP, "rdp_config.host", "bad host", "rdp_config.host"),
    ("host with a slash", RDP, "rdp_config.host", "a/b", "rdp_config.host"),
    ("host label too long", RDP, "rdp_config.host", "a" * 64 + ".com", "rdp_config.host"),
    ("host with an underscore", RDP, "rdp_config.host", "my_host", "rdp_config.host"),
    ("bad IPv4 literal", RDP, "rdp_config.host", "300.1.2.3", "rdp_config.host"),
    ("bad IPv6 literal", RDP, "rdp_config.host", "fe80::zz", "rdp_config.host"),
    ("empty host", RDP, "rdp_config.host", "", "rdp_config.host"),
    ("port 0", RDP, "rdp_config.port", 0, "rdp_config.port"),
    ("port 65536", RDP, "rdp_config.port", 65536, "rdp_config.port"),
    ("port not a number", RDP, "rdp_config.port", "rdp", "rdp_config.port"),
    ("empty username", RDP, "rdp_config.username", "", "rdp_config.username"),
    ("username with a newline", RDP, "rdp_config.username", "a\nb", "rdp_config.username"),
    ("password with a newline", RDP, "rdp_config.password", "pw\nx", "rdp_config.password"),
    ("password too long", RDP, "rdp_config.password", "p" * 501, "rdp_config.password"),
    ("unknown security", RDP, "rdp_config.security", "rdp", "rdp_config.security"),
    ("width below 320", INGEST, "recording_config.width", 319, "recording_config.width"),
    ("width above 7680", INGEST, "recording_config.width", 7681, "recording_config.width"),
    ("height below 240", INGEST, "recording_config.height", 239, "recording_config.height"),
    ("height above 4320", INGEST, "recording_config.height", 4321, "recording_config.height"),
    ("frame rate 0", INGEST, "recording_config.fps", 0, "recording_config.fps"),
    ("frame rate 121", INGEST, "recording_config.fps", 121, "recording_config.fps"),
    ("unknown quality", INGEST, "recording_config.quality", "best", "recording_config.quality"),
    (
        "unknown compression",
        INGEST,
        "recording_config.compression",
        "gzip",
        "recording_config.compression",
    ),
    (
        "chunk duration too short",
        INGEST,
        "recording_config.chunk_duration_s",
        0.1,
        "recording_config.chunk_duration_s",
    ),
    (
        "chunk size too large",
        INGEST,
        "recording_config.chunk_size_mb",
        4096,
        "recording_config.chunk_size_mb",
    ),
    (
        "retention 0 days",
        INGEST,
        "storage_config.retention_days",
        0,
        "storage_config.retention_days",
    ),
    ("eleven tags", INGEST, "tags", [f"t{i}" for i in range(11)], "tags"),
    ("a tag of 51 characters", INGEST, "tags", ["x" * 51], "tags.0"),
    ("an empty tag", INGEST, "tags", [""], "tags.0"),
    ("project not an id", INGEST, "project", "my project", "project"),
    ("environment not an id", INGEST, "environment", "prod/eu", "environment"),
    ("environment too long", INGEST, "environment", "e" * 65, "environment"),
    ("empty name", INGEST, "name", "", "name"),
    ("blank name", INGEST, "name", "   ", "name"),
    ("missing name", INGEST, "name", _DELETE, "name"),
    ("name with a control character", INGEST, "name", "a\x07b", "name"),
    ("unknown source", INGEST, "source", "vnc", "source"),
    ("rdp without rdp_config", RDP, "rdp_config", _DELETE, "rdp_config"),
    ("x11 without x11_config", X11, "x11_config", _DELETE, "x11_config"),
    ("ingest with rdp_config", INGEST, "rdp_config", RDP["rdp_config"], "rdp_config"),
    ("bad X display", X11, "x11_config.display", "display10", "x11_config.display"),
    ("an unknown field", INGEST, "colour", "blue", "colour"),
    ("an unknown nested field", INGEST, "recording_config.bitrate", 5, "recording_config.bitrate"),
    ("metadata too large", INGEST, "metadata", {"k": "v" * 20000}, "metadata"),
]


@pytest.mark.parametrize(
    ("base", "path", "value", "field"),
    [
        pytest.param(base, path, value, field, id=what)
        for what, base, path, value, field in CREATE_RULES
    ],
)
def test_create_refuses_the_value_naming_the_field(
    module_api: ApiCluster, base: dict[str, Any], path: str, value: Any, field: str
) -> None:
    before = module_api.client.get("/api/v1/sessions").json()["total"]
    response = module_api.client.post("/api/v1/sessions", json=_with(base, path, value))
    error = assert_error(response, 422, "LUCID_ERR_3002")
    assert field in error["message"], error["message"]
    assert all(
        set(e) == {"field", "location", "message", "type"} for e in error["details"]["errors"]
    )
    assert module_api.client.get("/api/v1/sessions").json()["total"] == before


@pytest.mark.parametrize(
    ("host"),
    ["rdp.example.com", "host-1", "10.0.0.1", "::1", "[fe80::1]", "2001:db8::7", "a.b.c.d.e."],
)
def test_host_names_and_ip_literals_are_accepted(module_api: ApiCluster, host: str) -> None:
    response = module_api.client.post("/api/v1/sessions", json=_with(RDP, "rdp_config.host", host))
    assert response.status_code == 201, response.text


def test_the_resolution_and_rate_bounds_themselves_are_accepted(module_api: ApiCluster) -> None:
    for width, height, fps in ((320, 240, 1), (7680, 4320, 120)):
        body = copy.deepcopy(INGEST)
        body["recording_config"].update(width=width, height=height, fps=fps)
        assert module_api.client.post("/api/v1/sessions", json=body).status_code == 201
    body = _with(INGEST, "tags", [f"{i:0>50}" for i in range(10)])
    assert module_api.client.post("/api/v1/sessions", json=body).status_code == 201


UPDATE_RULES = [
    ("name null", {"name": None}, "name"),
    ("name empty", {"name": ""}, "name"),
    ("eleven tags", {"tags": [str(i) for i in range(11)]}, "tags"),
    ("long tag", {"tags": ["y" * 51]}, "tags.0"),
    ("project not an id", {"project": "a b"}, "project"),
    ("status is not updatable", {"status": "completed"}, "status"),
    ("config is not updatable", {"recording_config": {"fps": 5}}, "recording_config"),
    ("nothing to change", {}, "name, tags, project, environment, metadata"),
]


@pytest.mark.parametrize(
    ("body", "field"), [pytest.param(b, f, id=what) for what, b, f in UPDATE_RULES]
)
def test_update_refuses_the_value_naming_the_field(
    module_api: ApiCluster, body: dict[str, Any], field: str
) -> None:
    sid = module_api.create()["session_id"]
    error = assert_error(
        module_api.client.patch(f"/api/v1/sessions/{sid}", json=body), 422, "LUCID_ERR_3002"
    )
    assert field in error["message"]


QUERY_RULES = [
    ("/api/v1/sessions", {"limit": 0}, "limit"),
    ("/api/v1/sessions", {"limit": 1001}, "limit"),
    ("/api/v1/sessions", {"offset": -1}, "offset"),
    ("/api/v1/sessions", {"limit": "many"}, "limit"),
    ("/api/v1/sessions", {"status": "sleeping"}, "status"),
    ("/api/v1/sessions", {"project": "a b"}, "project"),
    ("/api/v1/sessions", {"environment": "../x"}, "environment"),
    ("/api/v1/sessions/{sid}/chunks", {"start_time": -1}, "start_time"),
    ("/api/v1/sessions/{sid}/chunks", {"end_time": "nan"}, "end_time"),
    ("/api/v1/sessions/{sid}/chunks", {"start_time": 5, "end_time": 1}, "end_time"),
    ("/api/v1/sessions/{sid}/chunks", {"limit": 5000}, "limit"),
    ("/api/v1/sessions/{sid}/export", {"from": -2}, "from"),
    ("/api/v1/sessions/{sid}/export", {"from": 9, "to": 3}, "to"),
    ("/api/v1/sessions/{sid}/chunks/-1", {}, "sequence"),
    ("/api/v1/sessions/{sid}/proof/x", {}, "sequence"),
]


@pytest.mark.parametrize(
    ("url", "params", "field"), [pytest.param(u, p, f, id=f"{u} {p}") for u, p, f in QUERY_RULES]
)
def test_query_and_path_parameters_are_checked_naming_them(
    module_api: ApiCluster, url: str, params: dict[str, Any], field: str
) -> None:
    sid = module_api.create()["session_id"]
    response = module_api.client.get(url.format(sid=sid), params=params)
    error = assert_error(response, 422, "LUCID_ERR_3002")
    assert field in error["message"]


@pytest.mark.parametrize(
    "bad_id",
    ["has space", "semi;colon", "dot.dot", "%2E%2E", "x" * 129, "caf%C3%A9", "new%0Aline"],
)
def test_session_ids_in_paths_must_be_ids(module_api: ApiCluster, bad_id: str) -> None:
    for suffix in ("", "/chunks", "/manifest", "/verify", "/statistics"):
        error = assert_error(
            module_api.client.get(f"/api/v1/sessions/{bad_id}{suffix}"), 422, "LUCID_ERR_3002"
        )
        assert "session_id" in error["message"]
    assert_error(module_api.client.post(f"/api/v1/sessions/{bad_id}/start"), 422, "LUCID_ERR_3002")


def test_path_traversal_does_not_reach_a_route(module_api: ApiCluster) -> None:
    for path in ("/api/v1/sessions/../../etc/passwd", "/api/v1/sessions/%2F..%2Fetc"):
        response = module_api.client.get(path)
        assert response.status_code in (404, 422)
        assert "root:" not in response.text


def test_a_body_that_is_not_json_is_422(module_api: ApiCluster) -> None:
    response = module_api.client.post(
        "/api/v1/sessions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "LUCID_ERR_3002")
