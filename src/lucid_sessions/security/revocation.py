"""Revoked tokens, by token id (``jti``).

A token is refused from the moment its id is revoked until it would have expired
anyway; after that the entry is useless and is forgotten. With Redis configured the
list lives there (every API instance sees a revocation at once): one hash per token at
``{prefix}revoked:{jti}`` holding who it belonged to, why and when, with ``EXPIREAT`` at
the token's expiry plus a grace period. The grace covers the clock leeway the verifier
allows (``[auth] leeway_s``, at most 600 s): a token a few seconds past ``exp`` is still
accepted, so its revocation must outlive ``exp`` by as much. Without Redis the list is
kept in the metadata store (another implementation of :class:`RevocationList`).

An unreachable Redis raises :class:`~lucid_sessions.cluster.interfaces.Unavailable`
(503): the check fails closed, since answering "not revoked" when unsure would let a
revoked token back in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.security.redis_conn import (
    describe_client,
    open_redis,
    redact_url,
    redis_unavailable,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from lucid_sessions.cluster.config import ClusterConfig

__all__ = [
    "DEFAULT_GRACE_S",
    "MAX_JTI_LENGTH",
    "RedisRevocationList",
    "RevocationList",
    "RevocationStore",
    "StoreRevocationList",
    "check_jti",
    "open_revocations",
]

DEFAULT_GRACE_S = 600
MAX_JTI_LENGTH = 128
MAX_NOTE_LENGTH = 1000


class RevocationList(Protocol):
    """Where revoked token ids are kept (Redis, or the metadata store)."""

    async def revoke(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        """Refuse the token ``jti`` from now on, until ``expires_at`` (unix seconds, the
        token's ``exp``) has passed. Revoking twice is not an error."""
        ...

    async def is_revoked(self, jti: str) -> bool: ...

    async def close(self) -> None: ...


def check_jti(jti: object) -> str:
    """``jti`` if it is a token id (a string of 1-128 characters), else InvalidConfigError."""
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidConfigError(
            f"a token id (jti) must be a string of 1-{MAX_JTI_LENGTH} characters",
            details={"field": "jti"},
        )
    return jti


class RedisRevocationList:
    """Revocations in Redis, shared by every API instance using the same prefix.

    ``client_or_url`` is a ``redis.asyncio`` client (the caller keeps owning it) or a URL
    (the list opens and closes its own client). ``grace_s`` is how long past the token's
    expiry the entry is kept (see the module). ``clock`` decides whether a token is
    already dead; Redis's own clock does the forgetting.
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | str,
        *,
        prefix: str = "lucid:",
        grace_s: int = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grace_s < 0:
            raise InvalidConfigError(f"revocation grace must be >= 0 s, not {grace_s}")
        self.prefix = prefix
        self.grace_s = grace_s
        self.clock = clock
        if isinstance(client_or_url, str):
            self._client = open_redis(client_or_url)
            self._owned = True
            self._where = redact_url(client_or_url)
        else:
            self._client = client_or_url
            self._owned = False
            self._where = describe_client(client_or_url)

    def key(self, jti: str) -> str:
        """The entry's key; ``jti`` is its last segment, so distinct ids never share one."""
        return f"{self.prefix}revoked:{jti}"

    async def revoke(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        check_jti(jti)
        if isinstance(expires_at, bool) or not isinstance(expires_at, int):
            raise InvalidConfigError(
                f"expires_at must be unix seconds (an integer), not {expires_at!r}",
                details={"field": "expires_at"},
            )
        now = self.clock()
        forget_at = expires_at + self.grace_s
        if forget_at <= now:
            return  # the token is refused as expired anyway; nothing to keep
        key = self.key(jti)
        mapping: dict[FieldT, EncodableT] = {
            "subject": subject[:MAX_NOTE_LENGTH],
            "reason": reason[:MAX_NOTE_LENGTH],
            "revoked_at": str(int(now)),
            "expires_at": str(expires_at),
        }
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expireat(key, forget_at)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise redis_unavailable(self._where, "storing a token revocation", exc) from exc

    async def is_revoked(self, jti: str) -> bool:
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            return False  # no valid token carries such an id; the verifier refuses it
        try:
            return bool(await self._client.exists(self.key(jti)))
        except (RedisError, OSError) as exc:
            raise redis_unavailable(self._where, "checking a token revocation", exc) from exc

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisRevocationList({self._where}, prefix={self.prefix!r})"


class RevocationStore(Protocol):
    """The part of the metadata store (or the Storage component) revocations use."""

    def revoke_token(
        self, jti: str, *, expires_at: int, subject: str, reason: str
    ) -> Awaitable[None]: ...

    def is_token_revoked(self, jti: str) -> Awaitable[bool]: ...


class StoreRevocationList:
    """Revocations in the metadata store: SQLite on one machine, MongoDB in production,
    reached through the Storage component (in-process or over gRPC)."""

    def __init__(self, store: RevocationStore, *, grace_s: int = DEFAULT_GRACE_S) -> None:
        self.store = store
        self.grace_s = grace_s

    async def revoke(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        jti = check_jti(jti)
        await self.store.revoke_token(
            jti,
            expires_at=int(expires_at) + self.grace_s,
            subject=subject[:MAX_NOTE_LENGTH],
            reason=reason[:MAX_NOTE_LENGTH],
        )

    async def is_revoked(self, jti: str) -> bool:
        return await self.store.is_token_revoked(check_jti(jti))

    async def close(self) -> None:
        """Nothing to close: the store belongs to its owner."""


@contextlib.asynccontextmanager
async def open_revocations(config: ClusterConfig) -> AsyncIterator[RevocationList]:
    """The revocation list a cluster's configuration names, for the command line: Redis
    when ``LUCID_REDIS_URL`` is set, else the data directory's metadata store."""
    security = config.security
    if security.redis_url:
        redis_list = RedisRevocationList(security.redis_url, prefix=security.redis_prefix)
        try:
            yield redis_list
        finally:
            await redis_list.close()
        return
    from lucid_sessions.storage.datadir import open_data_dir

    datadir = await open_data_dir(
        config.data_dir, mongodb_uri=config.mongodb_uri, mongodb_database=config.mongodb_database
    )
    try:
        yield StoreRevocationList(datadir.store)
    finally:
        await datadir.close()
