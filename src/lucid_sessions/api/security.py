"""The authorizer a served cluster uses, built from its security settings.

Tokens are verified with the configured keys (or the data directory's own secret);
revocations are looked up in Redis when configured, else in the metadata store through
the Storage component; rate budgets are kept in Redis when configured, else in memory;
every 401 and 403 is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from lucid_sessions.api.audit import record_refusal
from lucid_sessions.api.auth import JwtAuthorizer
from lucid_sessions.security.ratelimit import rate_check, rate_limiter_for
from lucid_sessions.security.revocation import (
    RedisRevocationList,
    RevocationList,
    RevocationStore,
    StoreRevocationList,
)
from lucid_sessions.security.settings import SecurityConfig, token_verifier

__all__ = ["METRICS_PATH", "jwt_authorizer"]

METRICS_PATH = "/api/v1/metrics"


def jwt_authorizer(
    config: SecurityConfig, *, data_dir: Path, store: RevocationStore
) -> tuple[JwtAuthorizer, Callable[[], Awaitable[None]]]:
    """The authorizer, and the coroutine function that closes what it opened."""
    limiter = rate_limiter_for(config)
    revocations: RevocationList
    if config.redis_url:
        revocations = RedisRevocationList(config.redis_url, prefix=config.redis_prefix)
    else:
        revocations = StoreRevocationList(store)
    authorizer = JwtAuthorizer(
        token_verifier(config, data_dir),
        revocations=revocations,
        rate_check=rate_check(limiter),
        on_refusal=record_refusal,
        public=frozenset({METRICS_PATH}) if config.metrics_public else frozenset(),
    )

    async def close() -> None:
        try:
            await limiter.close()
        finally:
            await revocations.close()

    return authorizer, close
