"""Bearer token verification: what an attacker can send, and what must be refused.

Forged tokens are built by hand (:func:`forge`) so that the tests do not depend on a JWT
library agreeing to produce a bad token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.security.roles import ROLES
from lucid_sessions.security.tokens import (
    SigningKey,
    TokenError,
    TokenSettings,
    TokenVerifier,
    VerificationKey,
    load_jwks,
    load_public_key,
    load_signing_key,
    local_secret,
    mint_token,
    parse_duration,
    secret_key,
)

SETTINGS = TokenSettings(issuer="https://auth.example.test", audience="lucid-api", leeway_s=30)
SECRET = b"s" * 16 + secrets.token_bytes(32)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A compact JWS; HMAC-SHA256 signed with ``hmac_key``, else with an empty signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": SETTINGS.issuer,
        "aud": SETTINGS.audience,
        "sub": "alice",
        "role": "session_viewer",
        "jti": "token-1",
        "iat": now,
        "exp": now + 600,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_public_pem(rsa_private: rsa.RSAPrivateKey) -> bytes:
    return rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs_verifier() -> TokenVerifier:
    return TokenVerifier([secret_key(SECRET, origin="test")], SETTINGS)


def rs_verifier(rsa_private: rsa.RSAPrivateKey) -> TokenVerifier:
    return TokenVerifier(
        [VerificationKey("RS256", rsa_private.public_key(), origin="test")], SETTINGS
    )


def refused(verifier: TokenVerifier, token: str) -> TokenError:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    assert len(token) < 8 or token not in info.value.message
    return info.value


# the good path


@pytest.mark.parametrize("role", ROLES)
def test_a_minted_token_verifies_with_its_claims(role: str) -> None:
    key = secret_key(SECRET, origin="test")
    token, minted = mint_token(key, subject="bob", role=role, ttl_s=300, settings=SETTINGS)
    got = TokenVerifier([key], SETTINGS).verify(token)
    assert got == minted
    assert got.role == role and got.subject == "bob"
    assert got.expires_at - int(time.time()) in range(295, 301)


def test_rs256_and_eddsa_tokens_verify(rsa_private: rsa.RSAPrivateKey) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    verifier = TokenVerifier(
        [
            VerificationKey("RS256", rsa_private.public_key()),
            VerificationKey("EdDSA", ed.public_key()),
        ],
        SETTINGS,
    )
    for signing in (SigningKey("RS256", rsa_private), SigningKey("EdDSA", ed)):
        token, _ = mint_token(signing, subject="carol", role="auditor", ttl_s=60, settings=SETTINGS)
        assert verifier.verify(token).subject == "carol"


def test_clock_skew_within_the_leeway_is_accepted() -> None:
    now = int(time.time())
    token = jwt.encode(claims(exp=now - 10, iat=now - 100), SECRET, algorithm="HS256")
    assert hs_verifier().verify(token).subject == "alice"


# attacks


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_tokens_are_refused(alg: str) -> None:
    error = refused(hs_verifier(), forge({"alg": alg, "typ": "JWT"}, claims(role="admin")))
    assert error.reason == "algorithm"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = jwt.encode(claims(), secrets.token_bytes(32), algorithm="HS256")
    assert refused(hs_verifier(), token).reason == "signature"


def test_an_edited_payload_is_refused() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, _, signature = token.split(".")
    tampered = f"{header}.{b64(json.dumps(claims(role='admin')).encode())}.{signature}"
    assert refused(hs_verifier(), tampered).reason == "signature"


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    rsa_private: rsa.RSAPrivateKey, rsa_public_pem: bytes
) -> None:
    """Algorithm confusion: the public key used as an HMAC secret."""
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(role="admin"), hmac_key=rsa_public_pem)
    assert refused(rs_verifier(rsa_private), token).reason == "algorithm"
    # Even where HS256 is accepted too, the public key is not the secret.
    both = TokenVerifier(
        [secret_key(SECRET, origin="test"), VerificationKey("RS256", rsa_private.public_key())],
        SETTINGS,
    )
    assert refused(both, token).reason == "signature"


def test_rs256_claimed_on_an_hs256_only_cluster_is_refused(
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    token = jwt.encode(claims(), rsa_private, algorithm="RS256")
    assert refused(hs_verifier(), token).reason == "algorithm"


def test_rs256_signed_by_another_key_is_refused(rsa_private: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other, algorithm="RS256")
    assert refused(rs_verifier(rsa_private), token).reason == "signature"


def test_an_algorithm_not_configured_is_refused(rsa_private: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_private, algorithm="PS256")
    assert refused(rs_verifier(rsa_private), token).reason == "algorithm"
    token = jwt.encode(claims(), SECRET + SECRET, algorithm="HS512")
    assert refused(hs_verifier(), token).reason == "algorithm"


def test_an_expired_token_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(claims(exp=now - 31, iat=now - 3600), SECRET, algorithm="HS256")
    error = refused(hs_verifier(), token)
    assert error.reason == "expired"
    assert "expired" in error.message


@pytest.mark.parametrize("field", ["nbf", "iat"])
def test_a_token_not_yet_valid_is_refused(field: str) -> None:
    token = jwt.encode(claims(**{field: int(time.time()) + 120}), SECRET, algorithm="HS256")
    assert refused(hs_verifier(), token).reason == "not_yet_valid"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("aud", "another-api", "audience"),
        ("aud", ["another-api", "third"], "audience"),
        ("iss", "https://evil.example.test", "issuer"),
        ("role", "root", "role"),
        ("role", ["admin"], "role"),
        ("sub", "", "claims"),
        ("sub", "x" * 257, "claims"),
        ("jti", "j" * 129, "claims"),
    ],
)
def test_wrong_claims_are_refused(field: str, value: Any, reason: str) -> None:
    token = jwt.encode(claims(**{field: value}), SECRET, algorithm="HS256")
    assert refused(hs_verifier(), token).reason == reason


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub", "jti", "role"])
def test_a_token_missing_a_required_claim_is_refused(missing: str) -> None:
    body = claims()
    del body[missing]
    token = jwt.encode(body, SECRET, algorithm="HS256")
    error = refused(hs_verifier(), token)
    assert error.reason in ("claims", "role", "audience", "issuer")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "ü.ü.ü",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        forge({"alg": "HS256"}, {}).replace(".", "..", 1),
        b64(b"not json") + "." + b64(b"{}") + ".",
        b64(b"[1,2]") + "." + b64(b"{}") + "." + b64(b"sig"),
        "x" * 9000,
        "a" * 100 + "." + "b" * 100 + "." + "c" * 100,
    ],
)
def test_garbage_is_refused_as_malformed(garbage: str) -> None:
    error = refused(hs_verifier(), garbage)
    assert error.reason in ("malformed", "algorithm")


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    signing_input = f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(b'[1]')}"
    signature = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    assert refused(hs_verifier(), f"{signing_input}.{b64(signature)}").reason == "malformed"


def test_critical_header_extensions_are_refused() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"crit": ["exp"]})
    assert refused(hs_verifier(), token).reason == "malformed"


# keys and their sources


def test_short_secrets_are_refused_at_configuration() -> None:
    with pytest.raises(InvalidConfigError, match="at least 32"):
        secret_key(b"short", origin="LUCID_JWT_SECRET")


def test_jwks_selects_the_key_by_kid(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {
        "keys": [
            {
                **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private.public_key())),
                "kid": "a",
            },
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key())), "kid": "b"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    verifier = TokenVerifier(load_jwks(path), SETTINGS)
    for kid, key in (("a", rsa_private), ("b", other)):
        token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid})
        assert verifier.verify(token).subject == "alice"
    swapped = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": "b"})
    assert refused(verifier, swapped).reason == "signature"
    unknown = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": "zzz"})
    assert refused(verifier, unknown).reason == "key"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        ("{}", 'no "keys"'),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "only RSA and OKP"),
        ('{"keys": [{"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"}]}', "does not fit"),
        ('{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}', "not a valid RSA key"),
        ('{"keys": [7]}', "not an object"),
    ],
)
def test_bad_jwks_files_name_the_problem(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(InvalidConfigError, match=message):
        load_jwks(path)


def test_public_key_files_set_the_algorithm(tmp_path: Path, rsa_public_pem: bytes) -> None:
    path = tmp_path / "rsa.pem"
    path.write_bytes(rsa_public_pem)
    assert load_public_key(path).algorithm == "RS256"
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(
        ed.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert load_public_key(path).algorithm == "EdDSA"
    ecdsa = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(
        ecdsa.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(InvalidConfigError, match="only RSA"):
        load_public_key(path)
    path.write_text("not a key")
    with pytest.raises(InvalidConfigError, match="not a PEM public key"):
        load_public_key(path)
    with pytest.raises(InvalidConfigError, match="cannot read"):
        load_public_key(tmp_path / "missing.pem")


def test_signing_key_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidConfigError, match="not an unencrypted PEM private key"):
        load_signing_key(path)


def test_the_local_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    assert local_secret(tmp_path, create=False) is None
    first = local_secret(tmp_path, create=True)
    second = local_secret(tmp_path, create=True)
    assert first is not None and second is not None
    assert first.key == second.key and len(first.key) == 64
    mode = (tmp_path / "keys" / "token-hs256.key").stat().st_mode & 0o777
    assert mode == 0o600
    assert first.key.decode() not in repr(first)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("8h", 28800), ("7d", 604800), ("2w", 1209600)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1y", "-5m", "5.5h", "367d", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidConfigError, match="duration"):
        parse_duration(text)
