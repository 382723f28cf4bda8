"""Security settings of the cluster: how tokens are verified, rate limits, Redis.

Each setting, its variable and its TOML key::

    HS256 secret        LUCID_JWT_SECRET (the secret itself) or
                        LUCID_JWT_SECRET_FILE       [auth] jwt_secret_file
    RS256/EdDSA key     LUCID_JWT_PUBLIC_KEY_FILE   [auth] jwt_public_key_file
    JWKS                LUCID_JWT_JWKS_FILE         [auth] jwks_file
    issuer              LUCID_JWT_ISSUER            [auth] issuer = "lucid-sessions"
    audience            LUCID_JWT_AUDIENCE          [auth] audience = "lucid-sessions"
    clock leeway        LUCID_JWT_LEEWAY_S          [auth] leeway_s = 30
    public metrics      LUCID_METRICS_PUBLIC        [auth] metrics_public = false
    rate limits         LUCID_RATE_LIMITS           [rate_limits] creation = 10, ...
                        ("creation=10,status=100")  (per minute, per subject)
    rate window         LUCID_RATE_WINDOW_S         [rate_limits] window_s = 60
    Redis               LUCID_REDIS_URL             [redis] url = "redis://127.0.0.1:6379/0"
    Redis key prefix    LUCID_REDIS_PREFIX          [redis] prefix = "lucid:"

With no key configured, tokens are verified with the data directory's own secret
(``keys/token-hs256.key``), which ``lucid-sessions token create`` also signs with. Any
number of keys may be configured together; each verifies only its own algorithm.
With Redis configured, rate budgets and revocations live there (shared by every API
instance); otherwise budgets are kept in memory and revocations in the metadata store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lucid_sessions.config_values import parse_bool
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.security.ratelimit import RateLimits
from lucid_sessions.security.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    SigningKey,
    TokenSettings,
    TokenVerifier,
    VerificationKey,
    load_jwks,
    load_public_key,
    local_secret,
    read_secret_file,
    secret_key,
)

__all__ = ["SecurityConfig", "load_security", "signing_key", "token_verifier"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    jwt_secret: bytes | None = field(default=None, repr=False)
    jwt_secret_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwks_file: Path | None = None
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    leeway_s: int = 30
    metrics_public: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "lucid:"

    @property
    def token_settings(self) -> TokenSettings:
        return TokenSettings(issuer=self.issuer, audience=self.audience, leeway_s=self.leeway_s)

    @property
    def external_keys(self) -> bool:
        """Whether any verification key is configured (else the data dir's secret)."""
        return any(
            (self.jwt_secret, self.jwt_secret_file, self.jwt_public_key_file, self.jwks_file)
        )


def load_security(
    raw: Mapping[str, Any],
    setting: Callable[[Any, str], Any],
    errors: list[str],
) -> SecurityConfig:
    """The security settings from the TOML document and the environment (``setting``
    picks the variable over the TOML value); problems are appended to ``errors``."""

    def section(name: str) -> Mapping[str, Any]:
        value = raw.get(name)
        return value if isinstance(value, Mapping) else {}

    auth, limits, redis = section("auth"), section("rate_limits"), section("redis")
    values: dict[str, Any] = {}
    secret = setting(None, "LUCID_JWT_SECRET")
    if secret:
        values["jwt_secret"] = str(secret).strip().encode()
    for name, var in (
        ("jwt_secret_file", "LUCID_JWT_SECRET_FILE"),
        ("jwt_public_key_file", "LUCID_JWT_PUBLIC_KEY_FILE"),
        ("jwks_file", "LUCID_JWT_JWKS_FILE"),
    ):
        path = setting(auth.get(name), var)
        if path:
            values[name] = Path(str(path))
    for name, var in (("issuer", "LUCID_JWT_ISSUER"), ("audience", "LUCID_JWT_AUDIENCE")):
        text = setting(auth.get(name), var)
        if text is not None:
            if not str(text).strip() or len(str(text)) > 256:
                errors.append(f"JWT {name} must be 1-256 characters")
            else:
                values[name] = str(text).strip()
    leeway = setting(auth.get("leeway_s"), "LUCID_JWT_LEEWAY_S")
    if leeway is not None:
        try:
            values["leeway_s"] = int(str(leeway))
            if not 0 <= values["leeway_s"] <= 600:
                errors.append(f"JWT leeway must be between 0 and 600 s, not {leeway}")
        except ValueError:
            errors.append(f"JWT leeway must be an integer number of seconds, not {leeway!r}")
    public = setting(auth.get("metrics_public"), "LUCID_METRICS_PUBLIC")
    if public is not None:
        values["metrics_public"] = parse_bool(public, "metrics_public", errors)
    rates = setting(dict(limits) or None, "LUCID_RATE_LIMITS")
    window = setting(limits.get("window_s"), "LUCID_RATE_WINDOW_S")
    if rates is not None or window is not None:
        try:
            values["rate_limits"] = RateLimits.parse(rates, window_s=window)
        except InvalidConfigError as exc:
            found = exc.details.get("errors")
            errors.extend(found if isinstance(found, list) else [exc.message])
    url = setting(redis.get("url"), "LUCID_REDIS_URL")
    if url:
        text = str(url).strip()
        if not text.startswith(("redis://", "rediss://", "unix://")):
            errors.append("Redis URL must start with redis://, rediss:// or unix://")
        values["redis_url"] = text
    prefix = setting(redis.get("prefix"), "LUCID_REDIS_PREFIX")
    if prefix is not None:
        values["redis_prefix"] = str(prefix)
    return SecurityConfig(**values)


def verification_keys(config: SecurityConfig, data_dir: Path) -> list[VerificationKey]:
    """Every configured key, or the data directory's own secret (made when missing)."""
    keys: list[VerificationKey] = []
    if config.jwt_secret:
        keys.append(secret_key(config.jwt_secret, origin="LUCID_JWT_SECRET"))
    if config.jwt_secret_file:
        keys.append(read_secret_file(config.jwt_secret_file))
    if config.jwt_public_key_file:
        keys.append(load_public_key(config.jwt_public_key_file))
    if config.jwks_file:
        keys.extend(load_jwks(config.jwks_file))
    if not keys:
        local = local_secret(data_dir, create=True)
        assert local is not None
        keys.append(local)
    return keys


def token_verifier(config: SecurityConfig, data_dir: Path) -> TokenVerifier:
    return TokenVerifier(verification_keys(config, data_dir), config.token_settings)


def signing_key(config: SecurityConfig, data_dir: Path) -> SigningKey:
    """The key ``token create`` signs with when no private key is given: the configured
    HS256 secret, else the data directory's own (made when missing)."""
    if config.jwt_secret:
        key = secret_key(config.jwt_secret, origin="LUCID_JWT_SECRET")
    elif config.jwt_secret_file:
        key = read_secret_file(config.jwt_secret_file)
    elif config.external_keys:
        raise InvalidConfigError(
            "this cluster verifies tokens with a public key or JWKS only; "
            "pass --private-key with the matching private key to mint a token"
        )
    else:
        local = local_secret(data_dir, create=True)
        assert local is not None
        key = local
    return SigningKey(key.algorithm, key.key, key.kid)
