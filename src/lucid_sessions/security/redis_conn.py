"""Opening Redis, the shared store of rate budgets and revocations, and naming it safely.

A Redis URL may carry a password (``redis://:secret@host:6379/0``, or
``?password=secret``), so every message and log line that names the server goes through
:func:`redact_url` first; nothing here ever prints a URL as given.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` for TLS, and
``unix://[[user]:password@]/path/to/redis.sock[?db=N]``.

Timeouts are short on purpose: the API consults Redis on every request, and a Redis that
does not answer must turn into a quick 503 (:class:`~lucid_sessions.cluster.interfaces.
Unavailable`), not into requests that hang for the operating system's TCP timeout. A
command that meets a dropped connection (Redis restarted) is retried a couple of times
on a fresh connection before it fails, so a restart costs no request that comes after
the server is back.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.redact import redact_url as _redact

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SOCKET_TIMEOUT_S",
    "SCHEMES",
    "connect_redis",
    "describe_client",
    "open_redis",
    "ping",
    "redact_url",
    "redis_unavailable",
]

SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_SOCKET_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2


# A query option whose value is a credential (password=, ssl_password=, ...).
def redact_url(url: str) -> str:
    """``url`` with its credentials hidden (see :mod:`lucid_sessions.redact`)."""
    return _redact(url, what="redis URL")


def describe_client(client: aioredis.Redis) -> str:
    """Where a client connects, as a URL without credentials (for clients given ready-made)."""
    kwargs = client.connection_pool.connection_kwargs
    path = kwargs.get("path")
    db = kwargs.get("db", 0)
    if path:
        return f"unix://{path}?db={db}"
    tls = client.connection_pool.connection_class.__name__.startswith("SSL")
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def open_redis(
    url: str,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
) -> aioredis.Redis:
    """A ``redis.asyncio`` client for ``url``; nothing is connected until the first command.

    Raises :class:`InvalidConfigError` naming the redacted URL when the scheme is not
    one of :data:`SCHEMES` or the URL does not parse. The parser's own message is not
    repeated, since it may quote part of a password that was not percent-encoded.
    """
    if not url.startswith(SCHEMES):
        raise InvalidConfigError(
            f"Redis URL {redact_url(url)} must start with redis://, rediss:// or unix://",
            details={"url": redact_url(url)},
        )
    retry = Retry(ExponentialBackoff(cap=0.25, base=0.05), retries)
    try:
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            retry=retry,
        )
    except (ValueError, TypeError, RedisError):
        raise InvalidConfigError(
            f"Redis URL {redact_url(url)} is not valid: check the host, port, database and "
            "options, and percent-encode special characters in the password",
            details={"url": redact_url(url)},
        ) from None


def redis_unavailable(where: str, doing: str, exc: BaseException) -> Unavailable:
    """The error for a Redis that failed ``doing`` something (the API answers 503).

    ``where`` must already be redacted. The exception's text is kept: redis-py names
    host and port in it, never the password.
    """
    return Unavailable(
        f"Redis at {where} failed while {doing}: {type(exc).__name__}: {exc}",
        details={"redis": where},
    )


async def ping(client: aioredis.Redis, *, where: str | None = None) -> None:
    """Check that Redis answers; raise :class:`Unavailable` naming it (redacted) if not."""
    where = where or describe_client(client)
    try:
        answer = await client.ping()
    except (RedisError, OSError) as exc:
        raise redis_unavailable(where, "answering PING", exc) from exc
    if answer is not True:
        raise Unavailable(
            f"Redis at {where} answered PING with {answer!r}", details={"redis": where}
        )


async def connect_redis(
    url: str,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
) -> aioredis.Redis:
    """:func:`open_redis` and :func:`ping`; the client is closed again if the ping fails."""
    client = open_redis(
        url,
        connect_timeout_s=connect_timeout_s,
        socket_timeout_s=socket_timeout_s,
        retries=retries,
    )
    try:
        await ping(client, where=redact_url(url))
    except BaseException:
        await client.aclose()
        raise
    return client
