"""Rate budgets per endpoint class and per subject, in fixed windows.

Every authenticated request spends one unit of its subject's budget for the route's
class (:func:`lucid_sessions.api.auth.rate_class`). Defaults, per 60-second window:

==========  =====  =================================================
class       limit  routes
==========  =====  =================================================
creation       10  POST /sessions
status        100  everything not listed below
chunks       1000  chunk lists, records, proofs, downloads
bulk            5  whole-session work: export, server-side verify
frames       7200  frame ingest (120 fps, the highest rate a session
                   records at, for a whole window)
playback     3000  the player's timeline, chunk checks and frames (a
                   frame a request: 50 fps of playback)
refused        60  401s and 403s, counted per client address, not per
                   subject: past it, a client guessing tokens gets 429
                   and its refusals stop filling the audit log
==========  =====  =================================================

All are configurable (``LUCID_RATE_LIMITS="creation=20,bulk=2"`` or the ``[rate_limits]``
table, see :mod:`lucid_sessions.security.settings`), and so is the window.

Windows are fixed and aligned to multiples of the window length since the epoch, so
every API instance agrees on where a window starts without talking to the others; the
price is that a client may spend two budgets around a window boundary, which is
accepted for the simplicity and the single Redis round trip. A refused request still
counts, so hammering does not buy an earlier reset. ``Retry-After`` is the number of
seconds until the current window ends, rounded up, at least 1.

Two stores:

- :class:`MemoryRateLimiter`, for the all-in-one process: a dict, swept of finished
  windows, with a hard cap on its size.
- :class:`RedisRateLimiter`, when Redis is configured, so that several API instances
  share one budget: ``INCR`` and ``EXPIRE`` in one ``MULTI`` on
  ``{prefix}rl:{class}:{subject}:{window index}``.

When Redis cannot be reached the limiter fails *closed*: it raises
:class:`~lucid_sessions.cluster.interfaces.Unavailable` (503), because a limiter that
waved requests through while its store is down would let exactly the flood it exists to
stop pass whenever Redis is overloaded. The failure is loud and quick (short timeouts,
see :mod:`lucid_sessions.security.redis_conn`), and a request after Redis is back works.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from lucid_sessions.errors import InvalidConfigError, RateLimitError
from lucid_sessions.security.redis_conn import (
    describe_client,
    open_redis,
    redact_url,
    redis_unavailable,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from lucid_sessions.security.settings import SecurityConfig

__all__ = [
    "BULK",
    "CHUNKS",
    "CLASSES",
    "CREATION",
    "DEFAULT_LIMITS",
    "DEFAULT_WINDOW_S",
    "FRAMES",
    "PLAYBACK",
    "REFUSED",
    "STATUS",
    "Decision",
    "MemoryRateLimiter",
    "RateLimiter",
    "RateLimits",
    "RedisRateLimiter",
    "enforce",
    "encode_subject",
    "rate_check",
    "rate_limiter_for",
]

CREATION = "creation"
STATUS = "status"
CHUNKS = "chunks"
BULK = "bulk"
FRAMES = "frames"
PLAYBACK = "playback"
REFUSED = "refused"

DEFAULT_LIMITS: Mapping[str, int] = {
    CREATION: 10,
    STATUS: 100,
    CHUNKS: 1000,
    BULK: 5,
    FRAMES: 7200,
    PLAYBACK: 3000,
    REFUSED: 60,
}
CLASSES: tuple[str, ...] = tuple(DEFAULT_LIMITS)
DEFAULT_WINDOW_S = 60
MAX_LIMIT = 10_000_000
MAX_WINDOW_S = 86_400

Clock = Callable[[], float]


# settings


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limit of every class per window of ``window_s`` seconds."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    window_s: int = DEFAULT_WINDOW_S

    def __post_init__(self) -> None:
        errors = [
            f"unknown rate limit class {name!r}: choose from {', '.join(CLASSES)}"
            for name in self.limits
            if name not in DEFAULT_LIMITS
        ]
        errors += [
            f"rate limit for {name} must be between 1 and {MAX_LIMIT}, not {limit!r}"
            for name, limit in self.limits.items()
            if name in DEFAULT_LIMITS and not _valid_int(limit, 1, MAX_LIMIT)
        ]
        if not _valid_int(self.window_s, 1, MAX_WINDOW_S):
            errors.append(
                f"rate window must be between 1 and {MAX_WINDOW_S} s, not {self.window_s!r}"
            )
        if errors:
            raise InvalidConfigError("; ".join(errors), details={"errors": errors})
        object.__setattr__(self, "limits", {**DEFAULT_LIMITS, **self.limits})

    def limit_for(self, klass: str) -> int:
        """The limit of ``klass``; :class:`InvalidConfigError` for a class that does not exist."""
        try:
            return self.limits[klass]
        except KeyError:
            raise InvalidConfigError(
                f"unknown rate limit class {klass!r}: choose from {', '.join(CLASSES)}",
                details={"class": klass},
            ) from None

    @classmethod
    def parse(
        cls, value: str | Mapping[str, object] | None, *, window_s: object = None
    ) -> RateLimits:
        """Limits from ``"creation=20,bulk=2"`` or a TOML table (``{"creation": 20}``,
        which may also hold ``window_s``); classes not named keep their defaults.

        Every problem is collected and reported at once in one :class:`InvalidConfigError`
        naming each bad class or value.
        """
        errors: list[str] = []
        pairs: list[tuple[str, object]] = []
        if isinstance(value, Mapping):
            for name, number in value.items():
                if name == "window_s":
                    window_s = number if window_s is None else window_s
                else:
                    pairs.append((str(name), number))
        elif value is not None:
            for part in str(value).split(","):
                if not part.strip():
                    continue
                name, sep, number = part.partition("=")
                if not sep:
                    errors.append(f"rate limit {part.strip()!r} must be CLASS=LIMIT")
                    continue
                pairs.append((name.strip(), number.strip()))
        limits: dict[str, int] = {}
        for name, number in pairs:
            if name not in DEFAULT_LIMITS:
                errors.append(
                    f"unknown rate limit class {name!r}: choose from {', '.join(CLASSES)}"
                )
                continue
            limit = _as_int(number)
            if limit is None:
                errors.append(f"rate limit for {name} must be an integer, not {number!r}")
            elif not 1 <= limit <= MAX_LIMIT:
                errors.append(
                    f"rate limit for {name} must be between 1 and {MAX_LIMIT}, not {limit}"
                )
            else:
                limits[name] = limit
        window = DEFAULT_WINDOW_S
        if window_s is not None:
            parsed = _as_int(window_s)
            if parsed is None:
                errors.append(f"rate window must be an integer number of seconds, not {window_s!r}")
            elif not 1 <= parsed <= MAX_WINDOW_S:
                errors.append(f"rate window must be between 1 and {MAX_WINDOW_S} s, not {parsed}")
            else:
                window = parsed
        if errors:
            raise InvalidConfigError("; ".join(errors), details={"errors": errors})
        return cls(limits, window)


def _as_int(value: object) -> int | None:
    """An integer from an int or a decimal string; None for anything else (True included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _valid_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one hit.

    ``remaining`` is what is left of the budget after this hit (0 when refused);
    ``reset_s`` the whole seconds until the window ends (at least 1); ``retry_after_s``
    equals ``reset_s`` when refused and is 0 when allowed.
    """

    klass: str
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int
    window_s: int


def _window(now: float, window_s: int) -> tuple[int, int]:
    """(index of the window holding ``now``, whole seconds until it ends, at least 1)."""
    index = math.floor(now / window_s)
    return index, max(1, math.ceil((index + 1) * window_s - now))


def _decide(klass: str, count: int, limit: int, reset_s: int, window_s: int) -> Decision:
    allowed = count <= limit
    return Decision(
        klass=klass,
        allowed=allowed,
        limit=limit,
        remaining=max(0, limit - count),
        retry_after_s=0 if allowed else reset_s,
        reset_s=reset_s,
        window_s=window_s,
    )


def enforce(decision: Decision) -> Decision:
    """``decision`` if allowed; else raise :class:`RateLimitError` (429 with Retry-After)."""
    if decision.allowed:
        return decision
    raise RateLimitError(
        f"rate limit of {decision.limit} requests per {decision.window_s} s for "
        f"{decision.klass} exceeded; retry in {decision.retry_after_s} s",
        details={
            "retry_after_s": decision.retry_after_s,
            "limit": decision.limit,
            "class": decision.klass,
            "window_s": decision.window_s,
        },
    )


class RateLimiter(Protocol):
    """Counts hits per (class, subject) and window."""

    async def hit(self, klass: str, subject: str) -> Decision:
        """Spend one unit of ``subject``'s budget for ``klass``; say whether it was there."""
        ...

    async def close(self) -> None: ...


def rate_check(limiter: RateLimiter) -> Callable[[str, str], Awaitable[None]]:
    """The ``rate_check`` hook of :class:`~lucid_sessions.api.auth.JwtAuthorizer`: a hit,
    raising :class:`RateLimitError` when refused."""

    async def check(klass: str, subject: str) -> None:
        enforce(await limiter.hit(klass, subject))

    return check


# in memory


class MemoryRateLimiter:
    """Budgets in a dict, for one process.

    Entries of finished windows are swept once per window, so memory follows the
    subjects active in the current window. ``max_entries`` caps even that: past it the
    oldest entries are dropped, which at worst gives their subjects a fresh budget early
    (a process serving that many distinct subjects at once should use Redis anyway).
    Safe within one event loop: :meth:`hit` does not await between reading and writing.
    """

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Clock = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self.limits = limits or RateLimits()
        self.clock = clock
        self.max_entries = max_entries
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._swept = -1

    async def hit(self, klass: str, subject: str) -> Decision:
        limit = self.limits.limit_for(klass)
        window_s = self.limits.window_s
        index, reset_s = _window(self.clock(), window_s)
        if index != self._swept:
            self._sweep(index)
        key = (klass, subject)
        held = self._counts.pop(key, None)
        count = held[1] + 1 if held is not None and held[0] == index else 1
        self._counts[key] = (index, count)  # re-inserted: dict order is least recent first
        if len(self._counts) > self.max_entries:
            oldest = next(iter(self._counts))
            del self._counts[oldest]
        return _decide(klass, count, limit, reset_s, window_s)

    def _sweep(self, index: int) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
        self._swept = index

    def __len__(self) -> int:
        """How many (class, subject) entries are held (for tests and metrics)."""
        return len(self._counts)

    async def close(self) -> None:
        self._counts.clear()


# in Redis

_MAX_PLAIN_SUBJECT = 96


def encode_subject(subject: str) -> str:
    """``subject`` as a key segment that cannot contain ``:``, glob characters or spaces.

    URL-safe base64 (no padding) of its UTF-8 bytes, which is one-to-one, so two
    subjects never share a budget; subjects longer than 96 bytes become ``~`` and their
    SHA-256 in hex, which keeps keys short. ``~`` is not in the base64 alphabet, so the
    two forms cannot meet.
    """
    raw = subject.encode("utf-8", "surrogatepass")
    if len(raw) > _MAX_PLAIN_SUBJECT:
        return "~" + hashlib.sha256(raw).hexdigest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class RedisRateLimiter:
    """Budgets in Redis, shared by every API instance that uses the same prefix.

    ``client_or_url`` is a ``redis.asyncio`` client (the caller keeps owning it) or a URL
    (the limiter opens and closes its own client). Keys expire one second after their
    window ends (a little slack for clocks that differ between instances), so Redis holds
    only the current windows. Unreachable Redis: :class:`Unavailable` (fail closed).
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | str,
        *,
        limits: RateLimits | None = None,
        prefix: str = "lucid:",
        clock: Clock = time.time,
    ) -> None:
        self.limits = limits or RateLimits()
        self.prefix = prefix
        self.clock = clock
        if isinstance(client_or_url, str):
            self._client = open_redis(client_or_url)
            self._owned = True
            self._where = redact_url(client_or_url)
        else:
            self._client = client_or_url
            self._owned = False
            self._where = describe_client(client_or_url)

    def key(self, klass: str, subject: str, index: int) -> str:
        return f"{self.prefix}rl:{klass}:{encode_subject(subject)}:{index}"

    async def hit(self, klass: str, subject: str) -> Decision:
        limit = self.limits.limit_for(klass)
        window_s = self.limits.window_s
        index, reset_s = _window(self.clock(), window_s)
        key = self.key(klass, subject, index)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, reset_s + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise redis_unavailable(self._where, "counting a rate limit", exc) from exc
        return _decide(klass, int(count), limit, reset_s, window_s)

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self._where}, prefix={self.prefix!r})"


def rate_limiter_for(security: SecurityConfig, *, clock: Clock = time.time) -> RateLimiter:
    """The limiter a cluster's settings ask for: Redis when a URL is set, else memory."""
    limits = security.rate_limits
    if security.redis_url:
        return RedisRateLimiter(
            security.redis_url, limits=limits, prefix=security.redis_prefix, clock=clock
        )
    return MemoryRateLimiter(limits, clock=clock)
