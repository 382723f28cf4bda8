"""Security settings: where they come from, what is refused, and which keys verify tokens."""

from __future__ import annotations

import secrets
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from lucid_sessions.cluster.config import load_config
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.security.settings import signing_key, token_verifier
from lucid_sessions.security.tokens import TokenError, mint_token


def test_defaults_verify_with_the_data_directory_secret(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=tmp_path)
    security = config.security
    assert (security.issuer, security.audience, security.leeway_s) == (
        "lucid-sessions",
        "lucid-sessions",
        30,
    )
    assert not security.metrics_public and security.redis_url is None
    assert security.rate_limits.limit_for("creation") == 10
    key = signing_key(security, tmp_path)
    token, _ = mint_token(
        key, subject="a", role="admin", ttl_s=60, settings=security.token_settings
    )
    assert token_verifier(security, tmp_path).verify(token).subject == "a"


def test_toml_then_environment(tmp_path: Path) -> None:
    file = tmp_path / "lucid.toml"
    file.write_text(
        '[auth]\nissuer = "https://idp.example.test"\naudience = "lucid"\nleeway_s = 5\n'
        "metrics_public = true\n"
        "[rate_limits]\ncreation = 20\nwindow_s = 30\n"
        '[redis]\nurl = "redis://127.0.0.1:6379/2"\nprefix = "lucid-a:"\n'
    )
    security = load_config(file=file, env={"LUCID_JWT_AUDIENCE": "lucid-env"}).security
    assert security.issuer == "https://idp.example.test"
    assert security.audience == "lucid-env"
    assert security.leeway_s == 5 and security.metrics_public
    assert security.rate_limits.limit_for("creation") == 20
    assert security.rate_limits.window_s == 30
    assert security.redis_url == "redis://127.0.0.1:6379/2"
    assert security.redis_prefix == "lucid-a:"


def test_every_security_error_is_reported_at_once() -> None:
    env = {
        "LUCID_JWT_LEEWAY_S": "lots",
        "LUCID_METRICS_PUBLIC": "perhaps",
        "LUCID_RATE_LIMITS": "creation=0,teleport=5",
        "LUCID_REDIS_URL": "http://127.0.0.1:6379",
        "LUCID_JWT_ISSUER": " ",
    }
    with pytest.raises(InvalidConfigError) as info:
        load_config(env=env)
    message = info.value.message
    for part in (
        "leeway must be an integer",
        "metrics_public must be true or false",
        "rate limit for creation must be between 1",
        "unknown rate limit class 'teleport'",
        "Redis URL must start with redis://",
        "JWT issuer must be 1-256 characters",
    ):
        assert part in message


def test_secrets_stay_out_of_reprs() -> None:
    secret = secrets.token_hex(32)
    password = "red1s-Pa55"
    config = load_config(
        env={
            "LUCID_JWT_SECRET": secret,
            "LUCID_REDIS_URL": f"redis://:{password}@127.0.0.1:6379/0",
        }
    )
    assert config.security.jwt_secret == secret.encode()
    for text in (repr(config), repr(config.security), str(config)):
        assert secret not in text and password not in text


def test_an_external_public_key_replaces_the_local_secret(tmp_path: Path) -> None:
    """With an auth service's key configured, tokens signed with the data directory's
    own secret are no longer accepted, and `token create` needs the private key."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    data = tmp_path / "data"
    local = load_config(env={}, data_dir=data).security
    old, _ = mint_token(
        signing_key(local, data),
        subject="a",
        role="admin",
        ttl_s=60,
        settings=local.token_settings,
    )
    security = load_config(env={"LUCID_JWT_PUBLIC_KEY_FILE": str(pem)}, data_dir=data).security
    verifier = token_verifier(security, data)
    with pytest.raises(TokenError) as info:
        verifier.verify(old)
    assert info.value.reason == "algorithm"
    claims = {
        "iss": "lucid-sessions",
        "aud": "lucid-sessions",
        "sub": "idp-user",
        "role": "auditor",
        "jti": "j1",
        "exp": 2**31,
    }
    assert verifier.verify(jwt.encode(claims, private, algorithm="EdDSA")).role == "auditor"
    with pytest.raises(InvalidConfigError, match="pass --private-key"):
        signing_key(security, data)


def test_a_configured_key_file_that_is_missing_is_named(tmp_path: Path) -> None:
    security = load_config(
        env={"LUCID_JWT_JWKS_FILE": str(tmp_path / "nope.json")}, data_dir=tmp_path
    ).security
    with pytest.raises(InvalidConfigError, match=r"cannot read JWKS file .*nope\.json"):
        token_verifier(security, tmp_path)
