"""Rate-limit windows (with Retry-After), in memory and in Redis, and revocations in Redis.

Time is a fake clock, so windows are crossed without waiting; Redis comes from
``tests/redis_fixtures.py`` (the machine's own on 127.0.0.1:6379, else a private
redis-server) and every key lives under the test's own prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from tests.redis_fixtures import RedisServer, free_port

from lucid_sessions.api.errors import lucid_error_response
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import InvalidConfigError, RateLimitError
from lucid_sessions.security.ratelimit import (
    BULK,
    CHUNKS,
    CREATION,
    DEFAULT_LIMITS,
    STATUS,
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RateLimits,
    RedisRateLimiter,
    encode_subject,
    enforce,
    rate_check,
    rate_limiter_for,
)
from lucid_sessions.security.redis_conn import connect_redis, open_redis, ping, redact_url
from lucid_sessions.security.revocation import RedisRevocationList, RevocationList
from lucid_sessions.security.settings import SecurityConfig

T = TypeVar("T")

# 1_000_020 is a multiple of 60: a window starts there and ends at 1_000_080.
WINDOW_START = 1_000_020.0
PASSWORD = "s3cret-pa55"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self, now: float = WINDOW_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Iterator[MakeLimiter]:
    """Builds limiters of one kind; call it inside the test's event loop."""
    if request.param == "memory":

        def make(limits: RateLimits | None = None, clock: Any = None) -> RateLimiter:
            return MemoryRateLimiter(limits, clock=clock or FakeClock())

        yield make
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")

    def make_redis(limits: RateLimits | None = None, clock: Any = None) -> RateLimiter:
        return RedisRateLimiter(url, limits=limits, prefix=prefix, clock=clock or FakeClock())

    yield make_redis


async def hits(limiter: RateLimiter, klass: str, subject: str, count: int) -> list[Decision]:
    return [await limiter.hit(klass, subject) for _ in range(count)]


# windows


def test_the_request_after_the_limit_is_refused_with_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    clock = FakeClock(WINDOW_START + 23.2)  # 36.8 s left in the window

    async def body() -> None:
        limiter = make_limiter(RateLimits({CREATION: 3}), clock)
        try:
            allowed = await hits(limiter, CREATION, "alice", 3)
            assert [d.allowed for d in allowed] == [True, True, True]
            assert [d.remaining for d in allowed] == [2, 1, 0]
            assert all(d.retry_after_s == 0 and d.reset_s == 37 for d in allowed)
            refused = await limiter.hit(CREATION, "alice")
            assert not refused.allowed
            assert (refused.limit, refused.remaining, refused.retry_after_s) == (3, 0, 37)
            with pytest.raises(RateLimitError) as caught:
                enforce(refused)
            assert caught.value.message == (
                "rate limit of 3 requests per 60 s for creation exceeded; retry in 37 s"
            )
            assert caught.value.code == "LUCID_ERR_3010"
            assert caught.value.details == {
                "retry_after_s": 37,
                "limit": 3,
                "class": "creation",
                "window_s": 60,
            }
            clock.advance(30)  # still the same window: 6.8 s left
            again = await limiter.hit(CREATION, "alice")
            assert (again.allowed, again.retry_after_s) == (False, 7)
        finally:
            await limiter.close()

    run(body())


def test_retry_after_is_rounded_up_and_at_least_one_second(make_limiter: MakeLimiter) -> None:
    clock = FakeClock(WINDOW_START)

    async def body() -> None:
        limiter = make_limiter(RateLimits({BULK: 1}), clock)
        try:
            assert (await limiter.hit(BULK, "a")).reset_s == 60  # a window's first instant
            assert (await limiter.hit(BULK, "a")).retry_after_s == 60
            clock.advance(59.7)
            late = await limiter.hit(BULK, "a")
            assert (late.allowed, late.retry_after_s) == (False, 1)
            clock.advance(0.299)
            assert (await limiter.hit(BULK, "a")).retry_after_s == 1
        finally:
            await limiter.close()

    run(body())


def test_default_limits_refuse_the_n_plus_first_request(make_limiter: MakeLimiter) -> None:
    async def body() -> None:
        limiter = make_limiter(None, FakeClock(WINDOW_START + 1))
        try:
            for klass in (CREATION, BULK, STATUS):
                limit = DEFAULT_LIMITS[klass]
                decisions = await hits(limiter, klass, "bob", limit + 1)
                assert all(d.allowed for d in decisions[:limit]), klass
                assert not decisions[limit].allowed, klass
                assert decisions[limit].retry_after_s == 59
        finally:
            await limiter.close()

    assert DEFAULT_LIMITS[CREATION] == 10 and DEFAULT_LIMITS[STATUS] == 100
    assert DEFAULT_LIMITS[CHUNKS] == 1000 and DEFAULT_LIMITS[BULK] == 5
    run(body())


def test_a_new_window_resets_the_budget(make_limiter: MakeLimiter) -> None:
    clock = FakeClock(WINDOW_START + 50)

    async def body() -> None:
        limiter = make_limiter(RateLimits({CREATION: 2}, window_s=10), clock)
        try:
            await hits(limiter, CREATION, "alice", 2)
            refused = await limiter.hit(CREATION, "alice")
            assert (refused.allowed, refused.retry_after_s) == (False, 10)
            clock.advance(9.5)
            assert (await limiter.hit(CREATION, "alice")).retry_after_s == 1
            clock.advance(0.5)  # the next window starts exactly here
            fresh = await limiter.hit(CREATION, "alice")
            assert (fresh.allowed, fresh.remaining, fresh.reset_s) == (True, 1, 10)
            clock.advance(3600)
            assert (await limiter.hit(CREATION, "alice")).remaining == 1
        finally:
            await limiter.close()

    run(body())


def test_classes_and_subjects_have_separate_budgets(make_limiter: MakeLimiter) -> None:
    async def body() -> None:
        limiter = make_limiter(RateLimits({CREATION: 1, STATUS: 1, CHUNKS: 1}), FakeClock())
        try:
            assert (await limiter.hit(CREATION, "alice")).allowed
            assert not (await limiter.hit(CREATION, "alice")).allowed
            assert (await limiter.hit(STATUS, "alice")).allowed
            assert (await limiter.hit(CHUNKS, "alice")).allowed
            assert (await limiter.hit(CREATION, "bob")).allowed
            assert not (await limiter.hit(STATUS, "alice")).allowed
            assert not (await limiter.hit(CREATION, "bob")).allowed
        finally:
            await limiter.close()

    run(body())


ODD_SUBJECTS = [
    "a",
    "b",
    "a:b",
    "a:b:1",
    ":",
    "::",
    "",
    "*",
    "a*",
    "?",
    "[ab]",
    "\\",
    "alice\r\nDEL *",
    "é",
    "e\u0301",  # e + combining accent: not the same string as "é"
    "日本語",
    "🔑",
    "x" * 1000,
    "x" * 999,
    "x" * 999 + "y",
    "rl:creation:YQ:16667",
]


def test_subjects_with_odd_characters_do_not_collide(make_limiter: MakeLimiter) -> None:
    async def body() -> None:
        limiter = make_limiter(RateLimits({STATUS: 1}), FakeClock())
        try:
            first = [await limiter.hit(STATUS, s) for s in ODD_SUBJECTS]
            assert all(d.allowed for d in first)
            second = [await limiter.hit(STATUS, s) for s in ODD_SUBJECTS]
            assert not any(d.allowed for d in second)
        finally:
            await limiter.close()

    run(body())


def test_encoded_subjects_are_distinct_and_safe_in_keys() -> None:
    encoded = [encode_subject(s) for s in ODD_SUBJECTS]
    assert len(set(encoded)) == len(ODD_SUBJECTS)
    for text in encoded:
        assert text.isascii() and len(text) <= 130
        assert not set(text) & set(":*?[]\\ \r\n")
    assert encode_subject("x" * 1000).startswith("~")


def test_a_limit_class_that_does_not_exist_is_refused(make_limiter: MakeLimiter) -> None:
    async def body() -> None:
        limiter = make_limiter(None, FakeClock())
        try:
            with pytest.raises(InvalidConfigError, match="unknown rate limit class 'uploads'"):
                await limiter.hit("uploads", "alice")
        finally:
            await limiter.close()

    run(body())


def test_rate_check_hook_raises_when_over_budget() -> None:
    async def body() -> None:
        check = rate_check(MemoryRateLimiter(RateLimits({BULK: 1}), clock=FakeClock()))
        await check(BULK, "alice")
        with pytest.raises(RateLimitError, match="for bulk exceeded"):
            await check(BULK, "alice")

    run(body())


def test_a_refusal_becomes_429_with_retry_after() -> None:
    refused = Decision(
        klass=CREATION,
        allowed=False,
        limit=10,
        remaining=0,
        retry_after_s=37,
        reset_s=37,
        window_s=60,
    )
    with pytest.raises(RateLimitError) as caught:
        enforce(refused)
    response = lucid_error_response(caught.value, "req-1", "/api/v1/sessions")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "37"
    error = json.loads(bytes(response.body))["error"]
    assert error["code"] == "LUCID_ERR_3010"
    assert error["message"].endswith("retry in 37 s")
    assert error["details"]["retry_after_s"] == 37


# memory specifics


def test_memory_limiter_forgets_finished_windows_and_stays_bounded() -> None:
    clock = FakeClock()

    async def body() -> None:
        limiter = MemoryRateLimiter(clock=clock, max_entries=500)
        for i in range(300):
            await limiter.hit(STATUS, f"user-{i}")
        assert len(limiter) == 300
        clock.advance(60)
        await limiter.hit(STATUS, "late")
        assert len(limiter) == 1  # the finished window's 300 entries are gone
        for i in range(2000):
            await limiter.hit(CHUNKS, f"user-{i}")
        assert len(limiter) == 500
        await limiter.close()
        assert len(limiter) == 0

    run(body())


# settings


def test_limits_parse_from_a_string_and_a_table() -> None:
    parsed = RateLimits.parse("creation=20, bulk=2,")
    assert parsed.limits == {**DEFAULT_LIMITS, CREATION: 20, BULK: 2}
    assert parsed.window_s == 60
    table = RateLimits.parse({"status": 500, "chunks": "2000", "window_s": 30})
    assert table.limit_for(STATUS) == 500 and table.limit_for(CHUNKS) == 2000
    assert table.window_s == 30
    assert RateLimits.parse(None, window_s="15").window_s == 15
    assert RateLimits.parse("").limits == dict(DEFAULT_LIMITS)


@pytest.mark.parametrize(
    ("value", "window", "expected"),
    [
        ("uploads=5", None, "unknown rate limit class 'uploads': choose from creation"),
        ("creation=lots", None, "rate limit for creation must be an integer, not 'lots'"),
        ("creation=0", None, "rate limit for creation must be between 1 and 10000000, not 0"),
        ("bulk=-1", None, "rate limit for bulk must be between 1 and 10000000, not -1"),
        ("creation", None, "rate limit 'creation' must be CLASS=LIMIT"),
        ({"status": True}, None, "rate limit for status must be an integer, not True"),
        ({"status": 1.5}, None, "rate limit for status must be an integer, not 1.5"),
        (None, "0", "rate window must be between 1 and 86400 s, not 0"),
        (None, "soon", "rate window must be an integer number of seconds, not 'soon'"),
        ({"window_s": 100_000}, None, "rate window must be between 1 and 86400 s, not 100000"),
    ],
)
def test_bad_limits_are_named(value: Any, window: Any, expected: str) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        RateLimits.parse(value, window_s=window)
    assert expected in caught.value.message
    assert caught.value.code == "LUCID_ERR_3002"


def test_every_bad_limit_is_reported_at_once() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        RateLimits.parse("uploads=1,creation=x,bulk=0", window_s=-5)
    errors = caught.value.details["errors"]
    assert isinstance(errors, list) and len(errors) == 4
    with pytest.raises(InvalidConfigError, match="unknown rate limit class 'nope'"):
        RateLimits({"nope": 1})
    with pytest.raises(InvalidConfigError, match="rate limit for bulk must be between"):
        RateLimits({BULK: 0})


def test_the_limiter_follows_the_security_settings() -> None:
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"  # never contacted here

    async def body() -> None:
        limits = RateLimits.parse({"creation": 3}, window_s=30)
        memory = rate_limiter_for(SecurityConfig(rate_limits=limits))
        assert isinstance(memory, MemoryRateLimiter)
        assert memory.limits.limit_for(CREATION) == 3 and memory.limits.window_s == 30
        shared = rate_limiter_for(SecurityConfig(redis_url=redis_url, redis_prefix="p:"))
        assert isinstance(shared, RedisRateLimiter) and shared.prefix == "p:"
        assert "p:" in repr(shared) and PASSWORD not in repr(shared)
        await shared.close()

    run(body())


# Redis specifics


def test_two_api_instances_share_one_budget(redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock(WINDOW_START + 3)

    async def body() -> None:
        limits = RateLimits({CREATION: 4})
        one = RedisRateLimiter(redis_url, limits=limits, prefix=redis_prefix, clock=clock)
        two = RedisRateLimiter(redis_url, limits=limits, prefix=redis_prefix, clock=clock)
        try:
            results = []
            for i in range(6):
                limiter = one if i % 2 == 0 else two
                results.append(await limiter.hit(CREATION, "alice"))
            assert [d.allowed for d in results] == [True] * 4 + [False] * 2
            assert [d.remaining for d in results[:4]] == [3, 2, 1, 0]
            other = RedisRateLimiter(
                redis_url, limits=limits, prefix=redis_prefix + "x:", clock=clock
            )
            assert (await other.hit(CREATION, "alice")).allowed  # another prefix, another budget
            await other.close()
        finally:
            await one.close()
            await two.close()

    run(body())


def test_redis_keys_are_named_by_window_and_expire(redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock(WINDOW_START + 20)

    async def body() -> None:
        client = open_redis(redis_url)
        limiter = RedisRateLimiter(client, prefix=redis_prefix, clock=clock)
        try:
            await limiter.hit(STATUS, "alice")
            index = int(WINDOW_START // 60)
            key = f"{redis_prefix}rl:status:{encode_subject('alice')}:{index}"
            assert key == limiter.key(STATUS, "alice", index)
            assert await client.get(key) == b"1"
            ttl = await client.ttl(key)
            assert 0 < ttl <= 41  # 40 s left in the window, plus 1 s of slack
            await limiter.close()  # a client it was given stays open
            assert await client.ping()
        finally:
            await client.aclose()

    run(body())


def test_concurrent_hits_in_redis_allow_exactly_the_limit(
    redis_url: str, redis_prefix: str
) -> None:
    clock = FakeClock(WINDOW_START + 5)

    async def body() -> None:
        limiters = [
            RedisRateLimiter(
                redis_url, limits=RateLimits({STATUS: 100}), prefix=redis_prefix, clock=clock
            )
            for _ in range(4)
        ]
        try:
            decisions = await asyncio.wait_for(
                asyncio.gather(*(limiters[i % 4].hit(STATUS, "burst") for i in range(200))),
                timeout=30,
            )
        finally:
            for limiter in limiters:
                await limiter.close()
        allowed = [d for d in decisions if d.allowed]
        assert len(allowed) == 100
        assert sorted(d.remaining for d in allowed) == list(range(100))
        assert all(d.retry_after_s == 55 for d in decisions if not d.allowed)

    run(body())


def _dead_url() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


def test_unreachable_redis_fails_closed_with_a_clear_error() -> None:
    url = _dead_url()

    async def body() -> None:
        limiter = RedisRateLimiter(url, clock=FakeClock())
        started = time.monotonic()
        try:
            with pytest.raises(Unavailable) as caught:
                await limiter.hit(CREATION, "alice")
        finally:
            await limiter.close()
        assert time.monotonic() - started < 5
        message = caught.value.message
        assert message.startswith(f"Redis at {redact_url(url)} failed while counting")
        assert PASSWORD not in message and PASSWORD not in repr(limiter)
        assert caught.value.details == {"redis": redact_url(url)}
        with pytest.raises(Unavailable, match=r"redis://:\*\*\*@127\.0\.0\.1:\d+/0"):
            await connect_redis(url)

    run(body())


def test_a_restarted_redis_is_used_again(private_redis: RedisServer) -> None:
    clock = FakeClock()

    async def body() -> None:
        limiter = RedisRateLimiter(
            private_redis.url, limits=RateLimits({STATUS: 5}), prefix="t:", clock=clock
        )
        try:
            assert (await limiter.hit(STATUS, "alice")).remaining == 4
            private_redis.stop()
            with pytest.raises(Unavailable):
                await limiter.hit(STATUS, "alice")
            private_redis.start()
            # a fresh server without persistence: the budget starts again
            assert (await limiter.hit(STATUS, "alice")).remaining == 4
        finally:
            await limiter.close()

    run(body())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://user:{PASSWORD}@h/1", "redis://user:***@h/1"),
        (f"rediss://user:{PASSWORD}@h:6380", "rediss://user:***@h:6380"),
        (f"redis://{PASSWORD}@h", "redis://***@h"),
        ("redis://:pa/ss@wd@h:6379", "redis://:***@h:6379"),
        (f"redis://h:6379/0?password={PASSWORD}&db=2", "redis://h:6379/0?password=***&db=2"),
        (f"unix://:{PASSWORD}@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        (
            f"unix:///run/redis.sock?ssl_password={PASSWORD}",
            "unix:///run/redis.sock?ssl_password=***",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (PASSWORD, "<redis URL>"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_bad_redis_urls_are_named_without_their_password() -> None:
    with pytest.raises(InvalidConfigError, match="must start with redis://") as caught:
        open_redis(f"http://:{PASSWORD}@h")
    assert PASSWORD not in caught.value.message
    with pytest.raises(InvalidConfigError, match="is not valid") as caught:
        open_redis(f"redis://:{PASSWORD}@h:notaport/0")
    assert PASSWORD not in caught.value.message


def test_ping_names_the_server(redis_url: str) -> None:
    async def body() -> None:
        client = await connect_redis(redis_url)
        try:
            await ping(client)
        finally:
            await client.aclose()

    run(body())


# revocation


def test_revoked_tokens_are_refused_and_others_not(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        revocations: RevocationList = RedisRevocationList(redis_url, prefix=redis_prefix)
        other_instance = RedisRevocationList(redis_url, prefix=redis_prefix)
        expires_at = int(time.time()) + 3600
        try:
            assert not await revocations.is_revoked("tok-1")
            await revocations.revoke(
                "tok-1", expires_at=expires_at, subject="alice", reason="laptop lost"
            )
            await revocations.revoke(
                "tok-1", expires_at=expires_at, subject="alice", reason="laptop lost"
            )
            assert await revocations.is_revoked("tok-1")
            assert await other_instance.is_revoked("tok-1")
            assert not await revocations.is_revoked("tok-2")
            assert not await revocations.is_revoked("tok-1:")
            assert not await revocations.is_revoked("")
        finally:
            await revocations.close()
            await other_instance.close()
        client = redis.Redis.from_url(redis_url)
        try:
            key = f"{redis_prefix}revoked:tok-1"
            assert client.hgetall(key) == {
                b"subject": b"alice",
                b"reason": b"laptop lost",
                b"revoked_at": client.hget(key, "revoked_at"),
                b"expires_at": str(expires_at).encode(),
            }
            assert client.expiretime(key) == expires_at + 600  # exp plus the leeway grace
        finally:
            client.close()

    run(body())


def test_a_revocation_is_forgotten_once_the_token_is_dead(
    redis_url: str, redis_prefix: str
) -> None:
    async def body() -> None:
        revocations = RedisRevocationList(redis_url, prefix=redis_prefix, grace_s=0)
        try:
            await revocations.revoke(
                "old", expires_at=int(time.time()) - 5, subject="bob", reason="gone"
            )
            assert not await revocations.is_revoked("old")  # dead already: nothing kept
            await revocations.revoke(
                "short", expires_at=int(time.time()) + 1, subject="bob", reason="test"
            )
            assert await revocations.is_revoked("short")
            deadline = time.monotonic() + 5
            while await revocations.is_revoked("short") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert not await revocations.is_revoked("short")
        finally:
            await revocations.close()

    run(body())


def test_bad_revocations_are_refused(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        revocations = RedisRevocationList(redis_url, prefix=redis_prefix)
        try:
            with pytest.raises(InvalidConfigError, match="token id"):
                await revocations.revoke("", expires_at=2**31, subject="", reason="")
            with pytest.raises(InvalidConfigError, match="token id"):
                await revocations.revoke("x" * 129, expires_at=2**31, subject="", reason="")
            with pytest.raises(InvalidConfigError, match="expires_at"):
                await revocations.revoke("t", expires_at="soon", subject="", reason="")  # type: ignore[arg-type]
        finally:
            await revocations.close()

    run(body())


def test_unreachable_redis_revocations_fail_closed() -> None:
    url = _dead_url()

    async def body() -> None:
        revocations = RedisRevocationList(url)
        try:
            with pytest.raises(Unavailable, match="checking a token revocation") as caught:
                await revocations.is_revoked("tok-1")
            assert PASSWORD not in caught.value.message
            with pytest.raises(Unavailable, match="storing a token revocation"):
                await revocations.revoke(
                    "tok-1", expires_at=int(time.time()) + 60, subject="a", reason="b"
                )
        finally:
            await revocations.close()

    run(body())
