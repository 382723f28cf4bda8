"""Authentication and authorisation over HTTP: the whole permission matrix, every route.

The expected matrix is written out below as in the security issue, independently of
:mod:`lucid_sessions.security.roles`, so a change to the code's table that does not match
the specification fails here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from tests.test_api_support import ApiCluster

from lucid_sessions.api.auth import JwtAuthorizer, route_permissions
from lucid_sessions.security.tokens import (
    TokenSettings,
    TokenVerifier,
    mint_token,
    secret_key,
)

SETTINGS = TokenSettings()
SECRET = secrets.token_bytes(32)
KEY = secret_key(SECRET, origin="test")

COLUMNS = (
    "sessions:create",
    "sessions:read",
    "sessions:update",
    "sessions:delete",
    "sessions:control",
    "chunks:read",
    "chunks:download",
    "pipeline:control",
    "statistics:read",
    "audit:read",
)
# The matrix of the security issue: create read update delete start/stop/pause
# read-chunks download-chunks control-pipeline statistics audit-log.
MATRIX = {
    "admin": "y y y y y y y y y y",
    "session_manager": "y y y y y y y y y n",
    "session_operator": "n y n n y y n y y n",
    "session_viewer": "n y n n n y n n y n",
    "auditor": "n y n n n y n n y y",
}
EXPECTED = {
    role: {perm for perm, yes in zip(COLUMNS, row.split(), strict=True) if yes == "y"}
    for role, row in MATRIX.items()
}
ADMIN_ONLY = {"tokens:revoke"}


def token_for(role: str, /, **claims: Any) -> str:
    """A valid token for ``role``, with ``claims`` then overriding its payload."""
    text, _ = mint_token(KEY, subject=f"{role}-user", role=role, ttl_s=600, settings=SETTINGS)
    if claims:
        payload = jwt.decode(text, SECRET, algorithms=["HS256"], audience=SETTINGS.audience)
        payload.update(claims)
        text = jwt.encode(payload, SECRET, algorithm="HS256")
    return text


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(role)}"}


@pytest.fixture(name="secured")
def secured_fixture(tmp_path: Path) -> Iterator[ApiCluster]:
    authorizer = JwtAuthorizer(TokenVerifier([KEY], SETTINGS))
    with ApiCluster(tmp_path / "data", authorizer=authorizer) as cluster:
        yield cluster


def concrete(path: str, session_id: str) -> str:
    return re.sub(r"\{[a-z_]+\}", lambda m: session_id if "session" in m[0] else "0", path)


def test_every_route_but_health_requires_a_permission() -> None:
    table = route_permissions()
    unguarded = [route for route, perms in table.items() if not perms]
    assert unguarded == [("GET", "/api/v1/health")]
    assert all(len(perms) == 1 for route, perms in table.items() if perms)


def test_the_permission_matrix_over_every_route_and_role(secured: ApiCluster) -> None:
    manifest = secured.import_session(frames=6)
    sid = manifest.session_id
    routes = {k: v for k, v in route_permissions().items() if v}
    assert len(routes) >= 20
    checked = 0
    # Destructive routes last, so the session is there for every other check.
    order = sorted(routes.items(), key=lambda item: item[0][0] == "DELETE")
    for (method, path), (permission,) in order:
        for role, perms in EXPECTED.items():
            allowed = permission in perms or (role == "admin" and permission in ADMIN_ONLY)
            response = secured.client.request(
                method, concrete(path, sid), headers=bearer(role), json={}
            )
            where = f"{role} {method} {path} ({permission})"
            if allowed:
                assert response.status_code not in (401, 403), f"{where}: {response.text}"
            else:
                assert response.status_code == 403, f"{where}: {response.status_code}"
                error = response.json()["error"]
                assert error["code"] == "LUCID_ERR_3012"
                assert role in error["message"] and permission in error["message"]
            checked += 1
    assert checked == len(routes) * len(EXPECTED)


def test_no_token_is_401_with_a_bearer_challenge_on_every_route(secured: ApiCluster) -> None:
    for (method, path), perms in route_permissions().items():
        response = secured.client.request(method, concrete(path, "s1"), json={})
        if not perms:
            assert response.status_code in (200, 503)
            continue
        assert response.status_code == 401, f"{method} {path}"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="lucid-sessions"'
        assert response.json()["error"]["code"] == "LUCID_ERR_3011"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Basic YWxpY2U6c2VjcmV0", "must be: Bearer"),
        ("Bearer", "must be: Bearer"),
        ("Bearer    ", "must be: Bearer"),
        ("Bearer not-a-token", "not a JWS"),
        ("bearer " + "a" * 9000, "longer than"),
    ],
)
def test_malformed_authorization_headers_are_401(
    secured: ApiCluster, header: str, reason: str
) -> None:
    response = secured.client.get("/api/v1/sessions", headers={"Authorization": header})
    assert response.status_code == 401
    assert reason in response.json()["error"]["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example.test"}, "issuer"),
        ({"role": "superuser"}, "role must be one of"),
    ],
)
def test_invalid_tokens_are_401_naming_why(
    secured: ApiCluster, claims: dict[str, Any], reason: str
) -> None:
    token = token_for("admin", **claims)
    response = secured.client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    body = response.json()["error"]
    assert reason in body["message"]
    assert token not in response.text


def test_a_token_signed_with_another_key_is_401(secured: ApiCluster) -> None:
    other = secret_key(secrets.token_bytes(32), origin="attacker")
    token, _ = mint_token(other, subject="mallory", role="admin", ttl_s=60, settings=SETTINGS)
    response = secured.client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "signature" in response.json()["error"]["message"]


def test_metrics_can_be_made_public(tmp_path: Path) -> None:
    authorizer = JwtAuthorizer(
        TokenVerifier([KEY], SETTINGS), public=frozenset({"/api/v1/metrics"})
    )
    with ApiCluster(tmp_path / "data", authorizer=authorizer) as cluster:
        assert cluster.client.get("/api/v1/metrics").status_code == 200
        assert cluster.client.get("/api/v1/sessions").status_code == 401
        # A token sent to a public route is still checked.
        bad = {"Authorization": "Bearer nonsense"}
        assert cluster.client.get("/api/v1/metrics", headers=bad).status_code == 401
