"""Authentication and authorisation over HTTP: the whole permission matrix, every route.

The expected matrix is written out below as in the security issue, independently of
:mod:`lucid_sessions.security.roles`, so a change to the code's table that does not match
the specification fails here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from tests.conftest import Cli
from tests.test_api_support import INGEST, ApiCluster

from lucid_sessions.api.auth import JwtAuthorizer, route_permissions
from lucid_sessions.api.security import jwt_authorizer
from lucid_sessions.security.ratelimit import RateLimits
from lucid_sessions.security.settings import SecurityConfig
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
    "sessions:hold",
)
# The matrix of the security issue: create read update delete start/stop/pause
# read-chunks download-chunks control-pipeline statistics audit-log, and legal hold
# (the end-of-life issue: admin only).
MATRIX = {
    "admin": "y y y y y y y y y y y",
    "session_manager": "y y y y y y y y y n n",
    "session_operator": "n y n n y y n y y n n",
    "session_viewer": "n y n n n y n n y n n",
    "auditor": "n y n n n y n n y y n",
}
EXPECTED = {
    role: {perm for perm, yes in zip(COLUMNS, row.split(), strict=True) if yes == "y"}
    for role, row in MATRIX.items()
}


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
            allowed = permission in perms
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


def test_an_oversized_authorization_header_is_431_before_auth(secured: ApiCluster) -> None:
    response = secured.client.get(
        "/api/v1/sessions", headers={"Authorization": "Bearer " + "a" * 9000}
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "LUCID_ERR_3002"


# the served authorizer: revocation, rate limits and the audit log together


def served(cluster: ApiCluster, **settings: Any) -> Callable[[], Awaitable[None]]:
    """Swap in the authorizer `serve` builds, over this cluster's storage; returns what
    closes its Redis connections (run it on the cluster's loop)."""
    config = SecurityConfig(jwt_secret=SECRET, **settings)
    authorizer, close = jwt_authorizer(config, data_dir=cluster.path, store=cluster.storage)
    cluster.app.state.lucid = replace(cluster.app.state.lucid, authorizer=authorizer)
    return close


def audit_entries(cluster: ApiCluster, action: str) -> list[Any]:
    page = cluster.run(cluster.storage.list_audit, action=action)
    return list(page.items)


def test_a_token_revoked_with_the_cli_is_refused_and_audited(secured: ApiCluster, cli: Cli) -> None:
    served(secured)
    text, claims = mint_token(
        KEY, subject="dave", role="session_viewer", ttl_s=600, settings=SETTINGS
    )
    headers = {"Authorization": f"Bearer {text}"}
    assert secured.client.get("/api/v1/sessions", headers=headers).status_code == 200
    cli.data_dir = secured.path
    cli("token", "revoke", claims.jti, "--expires-at", str(claims.expires_at), "--reason", "lost")
    response = secured.client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]
    (entry,) = audit_entries(secured, "token.refused")
    assert (entry.subject, entry.role, entry.outcome) == ("dave", "session_viewer", "refused")
    assert entry.details["reason"] == "revoked"
    assert entry.request_id == response.headers["X-Request-ID"]
    assert text not in str(entry)
    # Another token of the same person is not affected.
    assert (
        secured.client.get("/api/v1/sessions", headers=bearer("session_viewer")).status_code == 200
    )


def test_refusals_of_every_kind_are_in_the_audit_log(secured: ApiCluster) -> None:
    served(secured)
    secured.client.get("/api/v1/sessions")
    secured.client.get("/api/v1/sessions", headers={"Authorization": "Bearer x.y.z"})
    forbidden = secured.client.post("/api/v1/sessions", headers=bearer("auditor"), json=INGEST)
    assert forbidden.status_code == 403
    reasons = [e.details["reason"] for e in audit_entries(secured, "token.refused")]
    assert reasons == ["missing", "malformed"]
    (entry,) = audit_entries(secured, "permission.refused")
    assert (entry.subject, entry.role) == ("auditor-user", "auditor")
    assert "sessions:create" in entry.details["reason"]


def test_rate_limits_answer_429_with_retry_after_per_class_and_subject(
    secured: ApiCluster,
) -> None:
    served(secured, rate_limits=RateLimits.parse("creation=2,status=5"))
    manager = bearer("session_manager")
    for _ in range(2):
        assert (
            secured.client.post("/api/v1/sessions", headers=manager, json=INGEST).status_code == 201
        )
    refused = secured.client.post("/api/v1/sessions", headers=manager, json=INGEST)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "LUCID_ERR_3010"
    assert "creation" in error["message"] and error["details"]["limit"] == 2
    # Another class has its own budget; another subject has its own budget.
    assert secured.client.get("/api/v1/sessions", headers=manager).status_code == 200
    assert (
        secured.client.post("/api/v1/sessions", headers=bearer("admin"), json=INGEST).status_code
        == 201
    )
    statuses = [
        secured.client.get("/api/v1/statistics", headers=manager).status_code for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    # A refused token spends no one's budget; health needs none.
    assert secured.client.get("/api/v1/health").status_code in (200, 503)


def test_token_create_mints_what_the_cluster_accepts(secured: ApiCluster, cli: Cli) -> None:
    config = SecurityConfig()
    authorizer, _ = jwt_authorizer(config, data_dir=secured.path, store=secured.storage)
    secured.app.state.lucid = replace(secured.app.state.lucid, authorizer=authorizer)
    cli.data_dir = secured.path
    _, out, err = cli("token", "create", "--role", "auditor", "--subject", "erin", "--ttl", "5m")
    token = out.strip()
    assert token.count(".") == 2 and token not in err
    assert "erin (auditor)" in err
    headers = {"Authorization": f"Bearer {token}"}
    assert secured.client.get("/api/v1/audit", headers=headers).status_code == 200
    assert secured.client.delete("/api/v1/sessions/x", headers=headers).status_code == 403
    secret = (secured.path / "keys" / "token-hs256.key").stat()
    assert secret.st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "root", "--subject", "x"), "Invalid value for '--role'"),
        (("--role", "admin", "--subject", "x", "--ttl", "5y"), "duration '5y'"),
        (("--role", "admin", "--subject", "x", "--ttl", "400d"), "between 1 s and 366 days"),
        (("--role", "admin", "--subject", ""), "subject must be 1-256"),
        (("--role", "admin", "--subject", "x", "--private-key", "/nonexistent.pem"), "cannot read"),
    ],
)
def test_token_create_names_bad_input(cli: Cli, args: tuple[str, ...], message: str) -> None:
    code, out, err = cli("token", "create", *args, expect=None)
    assert code in (1, 2) and out == ""
    assert message in err


def test_api_instances_share_budgets_and_revocations_through_redis(
    tmp_path: Path,
    cli: Cli,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = {
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "rate_limits": RateLimits.parse("creation=3"),
    }
    text, claims = mint_token(
        KEY, subject="frank", role="session_manager", ttl_s=600, settings=SETTINGS
    )
    headers = {"Authorization": f"Bearer {text}"}
    with (
        ApiCluster(tmp_path / "a") as one,
        ApiCluster(tmp_path / "b") as two,
    ):
        closers = [(one, served(one, **shared)), (two, served(two, **shared))]
        answers = [
            api.client.post("/api/v1/sessions", headers=headers, json=INGEST).status_code
            for api in (one, two, one, two)
        ]
        assert answers == [201, 201, 201, 429]
        # Revoked once, through Redis: refused by both instances.
        monkeypatch.setenv("LUCID_REDIS_URL", redis_url)
        monkeypatch.setenv("LUCID_REDIS_PREFIX", redis_prefix)
        cli("token", "revoke", claims.jti, "--expires-at", str(claims.expires_at))
        for api in (one, two):
            refused = api.client.get("/api/v1/sessions", headers=headers)
            assert refused.status_code == 401
            assert "revoked" in refused.json()["error"]["message"]
        for api, close in closers:
            api.run(close)


def test_guessing_tokens_ends_in_429_and_stops_filling_the_audit_log(
    secured: ApiCluster,
) -> None:
    served(secured, rate_limits=RateLimits.parse("refused=3"))
    bad = {"Authorization": "Bearer x.y.z"}
    codes = [secured.client.get("/api/v1/sessions", headers=bad).status_code for _ in range(6)]
    assert codes == [401, 401, 401, 429, 429, 429]
    assert len(audit_entries(secured, "token.refused")) == 3
    # A valid token from the same address is still served.
    assert secured.client.get("/api/v1/sessions", headers=bearer("admin")).status_code == 200
