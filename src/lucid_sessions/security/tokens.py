"""JWT bearer tokens: verifying what an auth service issued, and minting tokens for operators.

Tokens are issued by an external auth service and verified here with one of:

- a shared secret (HS256),
- a PEM public key (RS256 for an RSA key, EdDSA for an Ed25519 key),
- a JWKS file (each key's algorithm comes from its ``alg``, else its key type).

With none of them configured, the cluster makes its own secret,
``<data dir>/keys/token-hs256.key`` (0600), and ``lucid-sessions token create`` mints
tokens with it, so a single machine needs no auth service.

Every key is bound to exactly one algorithm, and a token is only ever checked with the
algorithm of the key it selects, so ``alg: none`` and algorithm confusion (an RS256
public key used as an HS256 secret) cannot succeed: the token's header must name the
key's own algorithm, or it is refused before any signature is computed.

Required claims: ``exp``, ``iss`` and ``aud`` (equal to the configured issuer and
audience), ``sub`` (the subject the audit log names), ``role`` (one of
:data:`~lucid_sessions.security.roles.ROLES`) and ``jti`` (the id a revocation names).
``nbf`` and ``iat`` are checked when present. A clock leeway (default 30 s) absorbs skew.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from lucid_sessions.crypto.envelope import warn_if_exposed, write_new_secret_file
from lucid_sessions.errors import AlreadyExistsError, InvalidConfigError, StorageError
from lucid_sessions.security.roles import ROLES

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "LOCAL_SECRET_NAME",
    "MAX_TOKEN_BYTES",
    "Claims",
    "SigningKey",
    "TokenError",
    "TokenSettings",
    "TokenVerifier",
    "VerificationKey",
    "load_jwks",
    "load_public_key",
    "load_signing_key",
    "local_secret",
    "mint_token",
    "parse_duration",
    "read_secret_file",
    "secret_key",
]

DEFAULT_ISSUER = "lucid-sessions"
DEFAULT_AUDIENCE = "lucid-sessions"
LOCAL_SECRET_NAME = "token-hs256.key"
MAX_TOKEN_BYTES = 8192
"""Longer bearer tokens are refused unparsed (a real one is well under 2 KiB)."""
MIN_SECRET_BYTES = 32
"""RFC 7518 3.2: an HS256 key must be at least as long as the hash output."""
MAX_TTL_S = 366 * 24 * 3600

_ASYMMETRIC = ("RS256", "EdDSA")


class TokenError(Exception):
    """A token was refused. ``reason`` is a short word for logs and the audit log
    (``malformed``, ``algorithm``, ``signature``, ``expired``, ...); ``message`` is the
    sentence the client sees. Neither ever contains the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key tokens may be signed with, bound to its one algorithm."""

    algorithm: str
    key: Any = field(repr=False)
    kid: str | None = None
    origin: str = ""
    """Where the key came from, for messages: a file name, ``LUCID_JWT_SECRET``."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key ``token create`` signs with."""

    algorithm: str
    key: Any = field(repr=False)
    kid: str | None = None


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    role: str
    jti: str
    expires_at: int
    issued_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSettings:
    """How tokens are checked. Built by the cluster configuration."""

    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    leeway_s: int = 30


# keys


def secret_key(secret: bytes, *, origin: str, kid: str | None = None) -> VerificationKey:
    """An HS256 key; refuses secrets shorter than 32 bytes."""
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidConfigError(
            f"the JWT secret from {origin} is {len(secret)} bytes; HS256 needs at least "
            f"{MIN_SECRET_BYTES} (make one with: openssl rand -hex 32)"
        )
    return VerificationKey("HS256", secret, kid, origin)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_secret_file(path: Path) -> VerificationKey:
    """An HS256 secret from a file (surrounding white space ignored)."""
    warn_if_exposed(path, "JWT secret file")
    return secret_key(_read(path, "JWT secret file").strip(), origin=str(path))


def _algorithm_of(key: object, origin: str) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise InvalidConfigError(f"the RSA key in {origin} has {key.key_size} bits; use 2048+")
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise InvalidConfigError(
        f"{origin} holds a {type(key).__name__.lstrip('_')}; only RSA (RS256) and Ed25519 "
        "(EdDSA) keys are supported"
    )


def load_public_key(path: Path) -> VerificationKey:
    """A PEM public key (or certificate's key) and the algorithm its type implies."""
    data = _read(path, "JWT public key file")
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InvalidConfigError(f"{path} is not a PEM public key") from exc
    return VerificationKey(_algorithm_of(key, str(path)), key, None, str(path))


def load_signing_key(path: Path, kid: str | None = None) -> SigningKey:
    """A PEM private key for ``token create --private-key``."""
    data = _read(path, "private key file")
    try:
        key: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidConfigError(f"{path} is not an unencrypted PEM private key") from exc
    return SigningKey(_algorithm_of(key, str(path)), key, kid)


_JWK_ALGORITHMS = {"RSA": "RS256", "OKP": "EdDSA"}


def load_jwks(path: Path) -> list[VerificationKey]:
    """The signature keys of a JWKS file. Symmetric (``oct``) keys are refused: a key set
    is public by nature, and a secret in it would be everyone's."""
    data = _read(path, "JWKS file")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidConfigError(f"JWKS file {path} is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidConfigError(f'JWKS file {path} has no "keys" list')
    keys: list[VerificationKey] = []
    for index, entry in enumerate(entries):
        where = f"key {index} of JWKS file {path}"
        if not isinstance(entry, dict):
            raise InvalidConfigError(f"{where} is not an object")
        if entry.get("use") not in (None, "sig"):
            continue
        kty = entry.get("kty")
        if kty not in _JWK_ALGORITHMS:
            raise InvalidConfigError(f"{where} has key type {kty!r}; only RSA and OKP are allowed")
        algorithm = entry.get("alg") or _JWK_ALGORITHMS[kty]
        if algorithm not in _ASYMMETRIC or algorithm != _JWK_ALGORITHMS[kty]:
            raise InvalidConfigError(
                f"{where}: algorithm {algorithm!r} does not fit key type {kty}"
            )
        try:
            jwk = jwt.PyJWK(entry, algorithm)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise InvalidConfigError(f"{where} is not a valid {kty} key") from exc
        _algorithm_of(jwk.key, where)
        kid = entry.get("kid")
        kid = kid if isinstance(kid, str) else None
        keys.append(VerificationKey(algorithm, jwk.key, kid, where))
    if not keys:
        raise InvalidConfigError(f"JWKS file {path} has no signature keys")
    return keys


def local_secret(data_dir: Path, *, create: bool) -> VerificationKey | None:
    """The data directory's own HS256 secret; made (0600, atomically) when ``create``."""
    path = data_dir / "keys" / LOCAL_SECRET_NAME
    if not path.exists():
        if not create:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new_secret_file(path, (secrets.token_hex(32) + "\n").encode(), "JWT secret")
        except AlreadyExistsError:
            pass  # another process made it first; read theirs
        except OSError as exc:
            raise StorageError(f"cannot create the JWT secret in {path.parent}") from exc
    return read_secret_file(path)


# verifying

_B64URL_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")


class TokenVerifier:
    """Checks bearer tokens against the configured keys, issuer and audience."""

    def __init__(self, keys: Sequence[VerificationKey], settings: TokenSettings) -> None:
        if not keys:
            raise InvalidConfigError("no key to verify tokens with")
        self.keys = tuple(keys)
        self.settings = settings
        self.algorithms = frozenset(k.algorithm for k in self.keys)

    def verify(self, token: str) -> Claims:
        """The token's claims, or :class:`TokenError` naming why it was refused."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("malformed", f"bearer token longer than {MAX_TOKEN_BYTES} bytes")
        if not _B64URL_TOKEN.match(token):
            raise TokenError("malformed", "bearer token is not a JWS compact token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed", "bearer token header does not decode") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise TokenError("algorithm", "unsigned tokens (alg none) are refused")
        if algorithm not in self.algorithms:
            raise TokenError(
                "algorithm",
                f"token algorithm {algorithm!r} is not accepted here "
                f"(accepted: {', '.join(sorted(self.algorithms))})",
            )
        if "crit" in header:
            raise TokenError("malformed", "token header has critical extensions")
        kid = header.get("kid")
        candidates = [k for k in self.keys if k.algorithm == algorithm]
        if kid is not None:
            named = [k for k in candidates if k.kid == kid]
            candidates = named or [k for k in candidates if k.kid is None]
        if not candidates:
            raise TokenError("key", "no key matches the token's key id")
        last: TokenError | None = None
        for key in candidates:
            try:
                return self._decode(token, key)
            except TokenError as exc:
                if exc.reason != "signature":
                    raise
                last = exc
        assert last is not None
        raise last

    def _decode(self, token: str, key: VerificationKey) -> Claims:
        settings = self.settings
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub", "jti"]},
            )
        except jwt.InvalidSignatureError:
            raise TokenError("signature", "token signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("not_yet_valid", "token is not valid yet (nbf or iat)") from None
        except jwt.InvalidAudienceError:
            raise TokenError("audience", "token audience is not this service") from None
        except jwt.InvalidIssuerError:
            raise TokenError("issuer", "token issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("claims", f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise TokenError("malformed", "token does not decode") from None
        return _claims(payload)


def _claims(payload: Mapping[str, Any]) -> Claims:
    subject, role, jti = payload.get("sub"), payload.get("role"), payload.get("jti")
    if not isinstance(subject, str) or not 0 < len(subject) <= 256:
        raise TokenError("claims", "token subject must be a string of 1-256 characters")
    if not isinstance(jti, str) or not 0 < len(jti) <= 128:
        raise TokenError("claims", "token id (jti) must be a string of 1-128 characters")
    if role not in ROLES:
        raise TokenError("role", f"token role must be one of {', '.join(ROLES)}")
    exp = payload["exp"]
    if not isinstance(exp, int | float):
        raise TokenError("claims", "token exp must be a number")
    iat = payload.get("iat")
    return Claims(
        subject=subject,
        role=str(role),
        jti=jti,
        expires_at=int(exp),
        issued_at=int(iat) if isinstance(iat, int | float) else None,
    )


# minting

_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``8h``, ``7d``, ``2w`` as seconds (1 s to 366 days)."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidConfigError(
            f"duration {text!r} is not a number with an optional unit s, m, h, d or w"
        )
    seconds = int(match[1]) * _UNITS[match[2]]
    if not 1 <= seconds <= MAX_TTL_S:
        raise InvalidConfigError(f"duration {text!r} must be between 1 s and 366 days")
    return seconds


def mint_token(
    key: SigningKey | VerificationKey,
    *,
    subject: str,
    role: str,
    ttl_s: int,
    settings: TokenSettings,
    now: float | None = None,
    jti: str | None = None,
) -> tuple[str, Claims]:
    """A signed token and its claims."""
    if role not in ROLES:
        raise InvalidConfigError(f"unknown role {role!r}: choose from {', '.join(ROLES)}")
    if not subject or len(subject) > 256:
        raise InvalidConfigError("the subject must be 1-256 characters")
    issued = int(time.time() if now is None else now)
    claims = Claims(
        subject=subject,
        role=role,
        jti=jti or uuid.uuid4().hex,
        expires_at=issued + ttl_s,
        issued_at=issued,
    )
    payload = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": claims.subject,
        "role": claims.role,
        "jti": claims.jti,
        "iat": issued,
        "nbf": issued,
        "exp": claims.expires_at,
    }
    headers = {"kid": key.kid} if key.kid else None
    token = jwt.encode(payload, key.key, algorithm=key.algorithm, headers=headers)
    return token, claims
