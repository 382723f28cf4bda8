"""Pipeline coordination through Redis Streams, and a Redis cache of session records.

Used only when Redis is configured (``LUCID_REDIS_URL``) and the chunk processor runs in
another process than the pipeline; all-in-one, or over gRPC without Redis, the pipeline
calls its processor directly (:mod:`.pipeline_manager`).

The chunk flow::

    pipeline  seal raw chunk under the session key ──> Storage.stage_chunk
              XADD {p}chunks {session_id, sequence, level, hash_algorithm, wrapped_key}
    processor XREADGROUP processors (several processes share the stream)
              Storage.read_staged_chunk -> open, process -> Storage.store_chunk
              -> Storage.drop_staged_chunk -> XADD {p}chunks:done, XACK, XDEL
    pipeline  XREAD {p}chunks:done -> the chunk is stored (its session's pending count
              drops; a session is finalised once none is pending)

Chunk bytes never go into Redis: they travel to storage over gRPC, sealed (XChaCha20-
Poly1305 under the session's data key, the sequence bound in), so the staging area holds
no plaintext. The wrapped data key in an entry is sealed by the master key.

Failures:

- A processor that dies leaves its entries pending; every consumer XAUTOCLAIMs entries
  idle longer than the claim timeout (``LUCID_CLAIM_TIMEOUT_S``, 15 s) and processes them.
  Processing is idempotent: ``Storage.store_chunk`` keeps the first copy of a chunk, and a
  claimed entry whose staged chunk is gone but whose chunk is stored is simply done.
- Redis unreachable: the pipeline and every consumer log, back off (up to 5 s) and retry;
  nothing is dropped, chunks wait in staging.
- Redis restarted without persistence (stream, group and done stream gone): consumers
  recreate the group on NOGROUP (MKSTREAM, from the start of the stream); the pipeline
  notices its epoch key is missing and reconciles every chunk it still waits for against
  storage: stored means done, still staged means published again, neither means lost
  (the chunk fails). Entries published twice are harmless, as above.

Session cache: :class:`CachingStorage` wraps a Storage and reads ``get_session`` through
Redis (``{p}session:{id}``, a few seconds' TTL); every write through it bumps the
session's generation (``{p}session-gen:{id}``), and a cached record counts only under the
generation it was read at, so a reader racing a writer never caches a stale record for
longer than the write. With Redis unreachable, reads go to storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from lucid_sessions.cluster.interfaces import Storage, Unavailable
from lucid_sessions.crypto import DataKey, XChaCha20Poly1305
from lucid_sessions.errors import (
    ChunkNotFoundError,
    FormatError,
    LucidError,
    NotFoundError,
)
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.storage.metadata import SessionRecord

__all__ = [
    "DEFAULT_CLAIM_TIMEOUT_S",
    "GROUP",
    "CachingStorage",
    "ChunkConsumer",
    "ChunkCoordinator",
    "SessionCache",
    "StreamKeys",
    "open_staged",
    "seal_staged",
]

log = logging.getLogger(__name__)

DEFAULT_CLAIM_TIMEOUT_S = 15.0
GROUP = "processors"
BLOCK_MS = 300
MAX_BACKOFF_S = 5.0
DONE_MAXLEN = 10_000
_REDIS_ERRORS = (RedisError, OSError)


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis keys under one prefix."""

    prefix: str = "lucid:"

    @property
    def chunks(self) -> str:
        return f"{self.prefix}chunks"

    @property
    def done(self) -> str:
        return f"{self.prefix}chunks:done"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}chunks:epoch"

    @property
    def stats(self) -> str:
        return f"{self.prefix}chunks:stats"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def session_gen(self, session_id: str) -> str:
        return f"{self.prefix}session-gen:{session_id}"


# staged chunks: b"LSTG1" | u32 header length | header JSON | nonce (24) | ciphertext

_MAGIC = b"LSTG1"
_RAW_META = tuple(f.name for f in fields(RawChunk) if f.name != "data")


def _aad(session_id: str, sequence: int) -> bytes:
    return f"lucid-staged:{session_id}:{sequence}".encode()


def seal_staged(raw: RawChunk, key: DataKey, session_id: str) -> bytes:
    """A raw chunk as staged: its fields in clear, its data sealed under the session key."""
    header = json.dumps(
        {"key_id": key.key_id, **{name: getattr(raw, name) for name in _RAW_META}},
        separators=(",", ":"),
    ).encode()
    nonce = os.urandom(24)
    sealed = XChaCha20Poly1305(key.key).encrypt(nonce, raw.data, _aad(session_id, raw.sequence))
    return b"".join((_MAGIC, struct.pack(">I", len(header)), header, nonce, sealed))


def open_staged(blob: bytes, key: DataKey, session_id: str, sequence: int) -> RawChunk:
    """The raw chunk back from :func:`seal_staged`; FormatError or AuthenticationError if
    the blob is not one, or not this session's chunk ``sequence``."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 4:
        raise FormatError(f"staged chunk {sequence} of {session_id} is not a staged chunk")
    (length,) = struct.unpack_from(">I", blob, len(_MAGIC))
    start = len(_MAGIC) + 4
    try:
        header = json.loads(blob[start : start + length])
        meta = {name: header[name] for name in _RAW_META}
    except (ValueError, KeyError, TypeError):
        raise FormatError(f"staged chunk {sequence} of {session_id} has a bad header") from None
    if meta["sequence"] != sequence:
        raise FormatError(
            f"staged chunk {sequence} of {session_id} holds sequence {meta['sequence']}"
        )
    body = blob[start + length :]
    data = XChaCha20Poly1305(key.key).decrypt(body[:24], body[24:], _aad(session_id, sequence))
    return RawChunk(**meta, data=data)


async def ensure_group(client: aioredis.Redis, stream: str) -> None:
    """Create the consumer group (and the stream), reading from its start; fine if it exists."""
    try:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _text(fields_: Mapping[bytes | str, bytes | str], name: str) -> str:
    value = fields_.get(name.encode(), fields_.get(name))
    if value is None:
        raise KeyError(name)
    return value.decode() if isinstance(value, bytes) else str(value)


class _Backoff:
    """Exponential delay with one log line per outage (and one when it ends)."""

    def __init__(self, what: str, initial: float = 0.2) -> None:
        self.what = what
        self.initial = initial
        self.delay = initial
        self.failing = False
        self.errors = 0

    async def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.failing:
            log.warning("%s: %s: %s; retrying", self.what, type(exc).__name__, exc)
        else:
            log.debug("%s still failing: %s", self.what, exc)
        self.failing = True
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF_S)

    def ok(self) -> None:
        if self.failing:
            log.warning("%s: working again", self.what)
        self.failing = False
        self.delay = self.initial


async def _retry_unavailable(
    call: Callable[[], Awaitable[Any]], *, retries: int = 5, backoff_s: float = 0.2
) -> Any:
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return await call()
        except Unavailable:
            if attempt == retries:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
    raise AssertionError("unreachable")


# the pipeline's side


@dataclass(slots=True)
class _Entry:
    fields: dict[str, str]
    published: bool = False
    at: float = 0.0


DoneCallback = Callable[[str, int, bool, str | None], None]


class ChunkCoordinator:
    """The pipeline's end: publishes staged chunks and learns when they are stored.

    :meth:`publish` never fails: an entry Redis did not take is published again by the
    background task once Redis answers. ``on_done(session_id, sequence, ok, error)`` is
    called once per published chunk, when it is stored (``ok``) or given up.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        storage: Storage,
        *,
        prefix: str = "lucid:",
        claim_timeout_s: float = DEFAULT_CLAIM_TIMEOUT_S,
        on_done: DoneCallback | None = None,
    ) -> None:
        self.redis = client
        self.storage = storage
        self.keys = StreamKeys(prefix)
        self.claim_timeout_s = claim_timeout_s
        self.stale_after_s = max(4 * claim_timeout_s, 10.0)
        """A chunk not done this long after it was published is checked against storage."""
        self.on_done = on_done
        self._outstanding: dict[tuple[str, int], _Entry] = {}
        self._ready = False
        self._reconcile_all = False
        self._epoch: str | None = None
        self._last_done = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._backoff = _Backoff("pipeline coordination through Redis")
        self.counters = {
            "published": 0,
            "republished": 0,
            "done": 0,
            "failed": 0,
            "reconciled": 0,
            "redis_errors": 0,
        }

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chunk-coordinator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(
        self, session_id: str, sequence: int, *, level: int, hash_algorithm: str, wrapped_key: bytes
    ) -> None:
        entry = _Entry(
            {
                "session_id": session_id,
                "sequence": str(sequence),
                "level": str(level),
                "hash_algorithm": hash_algorithm,
                "wrapped_key": wrapped_key.hex(),
            }
        )
        self._outstanding[(session_id, sequence)] = entry
        if self._ready:
            try:
                await self._xadd(entry)
                return
            except _REDIS_ERRORS as exc:
                self._ready = False
                log.warning("publishing chunk %d of %s failed: %s", sequence, session_id, exc)
        self._wake.set()

    def forget(self, session_id: str) -> list[int]:
        """Stop waiting for a session's chunks; returns the sequences dropped."""
        dropped = [seq for sid, seq in self._outstanding if sid == session_id]
        for seq in dropped:
            del self._outstanding[(session_id, seq)]
        return dropped

    async def stats(self) -> dict[str, int]:
        """The processors' shared counters: ``processed``, ``claimed``, ``duplicate``,
        ``failed``, and the same per processor process (``processed:<host>-<pid>``)."""
        try:
            raw: Any = await self.redis.hgetall(self.keys.stats)
        except _REDIS_ERRORS:
            return {}
        return {k.decode(): int(v) for k, v in raw.items()}

    async def _xadd(self, entry: _Entry) -> None:
        await self.redis.xadd(self.keys.chunks, entry.fields)  # type: ignore[arg-type]
        if entry.published:
            self.counters["republished"] += 1
        else:
            self.counters["published"] += 1
        entry.published = True
        entry.at = time.monotonic()

    async def _setup(self) -> None:
        if self._epoch is None:  # first contact: done entries from before are not ours
            last: Any = await self.redis.xrevrange(self.keys.done, count=1)
            if last:
                entry_id: Any = last[0][0]
                self._last_done = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        epoch: Any = await self.redis.get(self.keys.epoch)
        if epoch is None:
            token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
            await self.redis.set(self.keys.epoch, token, nx=True)
            epoch = await self.redis.get(self.keys.epoch)
        text = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if self._epoch is not None and text != self._epoch:
            log.warning(
                "Redis lost the coordination state (restarted?): checking %d waiting chunks "
                "against storage",
                len(self._outstanding),
            )
            self._reconcile_all = True
            self._last_done = "0-0"
        self._epoch = text
        await ensure_group(self.redis, self.keys.chunks)
        self._ready = True

    async def _run(self) -> None:
        next_stale_check = time.monotonic() + self.claim_timeout_s
        while True:
            try:
                if not self._ready:
                    await self._setup()
                else:
                    epoch: Any = await self.redis.get(self.keys.epoch)
                    if epoch is None or epoch.decode() != self._epoch:
                        self._ready = False
                        continue
                if self._reconcile_all:
                    await self._reconcile(list(self._outstanding))
                    self._reconcile_all = False
                for entry in [e for e in self._outstanding.values() if not e.published]:
                    await self._xadd(entry)
                self._wake.clear()
                reply: Any = await self.redis.xread(
                    {self.keys.done: self._last_done}, count=500, block=BLOCK_MS
                )
                for _stream, entries in reply or []:
                    for entry_id, values in entries:
                        self._last_done = (
                            entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                        )
                        self._done(values)
                if time.monotonic() >= next_stale_check:
                    next_stale_check = time.monotonic() + self.claim_timeout_s
                    limit = time.monotonic() - self.stale_after_s
                    stale = [
                        k for k, e in self._outstanding.items() if e.published and e.at < limit
                    ]
                    if stale:
                        await self._reconcile(stale)
                self._backoff.ok()
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as exc:
                self._ready = False
                self.counters["redis_errors"] += 1
                await self._backoff.failed(exc)
            except LucidError as exc:  # storage unreachable while reconciling
                await self._backoff.failed(exc)

    def _done(self, values: Mapping[Any, Any]) -> None:
        try:
            key = (_text(values, "session_id"), int(_text(values, "sequence")))
            ok = _text(values, "ok") == "1"
            error = _text(values, "error") or None
        except (KeyError, ValueError):
            log.warning("ignoring a malformed done entry: %r", values)
            return
        self._complete(key, ok, error)

    def _complete(self, key: tuple[str, int], ok: bool, error: str | None) -> None:
        if self._outstanding.pop(key, None) is None:
            return  # a duplicate, or a session this pipeline no longer waits for
        self.counters["done" if ok else "failed"] += 1
        if self.on_done is not None:
            self.on_done(key[0], key[1], ok, error)

    async def _reconcile(self, keys: Sequence[tuple[str, int]]) -> None:
        """Check chunks against storage: stored is done, staged is published again,
        neither is lost. Staged is read before stored: a processor stores, then drops
        the staged copy, so a chunk missing from both reads is truly gone."""
        by_session: dict[str, list[int]] = {}
        for sid, seq in keys:
            by_session.setdefault(sid, []).append(seq)
        for sid, sequences in by_session.items():
            staged = set(await self.storage.staged_sequences(sid))
            stored = {r.sequence for r in await self.storage.list_chunks(sid)}
            for seq in sequences:
                entry = self._outstanding.get((sid, seq))
                if entry is None:
                    continue
                self.counters["reconciled"] += 1
                if seq in stored:
                    self._complete((sid, seq), True, None)
                elif seq in staged:
                    await self._xadd(entry)
                else:
                    log.error("chunk %d of %s is neither staged nor stored", seq, sid)
                    self._complete((sid, seq), False, "the staged chunk was lost")


# the processors' side


class _Processor(Protocol):
    """What the consumer needs of the chunk processor (``ProcessorService``)."""

    async def process_staged(
        self,
        blob: bytes,
        *,
        session_id: str,
        sequence: int,
        wrapped_key: bytes,
        level: int,
        hash_algorithm: str,
    ) -> Any: ...


class ChunkConsumer:
    """A processor process's end: ``workers`` consumers of the group ``processors``.

    Each reads one entry at a time (blocking a few hundred ms), processes it and stores
    it; every ``claim_timeout_s / 2`` it claims entries idle longer than
    ``claim_timeout_s`` (a consumer that died) and processes those too.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        storage: Storage,
        processor: _Processor,
        *,
        prefix: str = "lucid:",
        claim_timeout_s: float = DEFAULT_CLAIM_TIMEOUT_S,
        workers: int = 2,
        name: str | None = None,
    ) -> None:
        self.redis = client
        self.storage = storage
        self.processor = processor
        self.keys = StreamKeys(prefix)
        self.claim_timeout_s = claim_timeout_s
        self.workers = workers
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []
        self.counters = {
            "processed": 0,
            "claimed": 0,
            "duplicate": 0,
            "failed": 0,
            "redis_errors": 0,
        }

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(f"{self.name}-{i}"), name=f"chunk-consumer-{i}")
            for i in range(self.workers)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _run(self, consumer: str) -> None:
        backoff = _Backoff(f"chunk consumer {consumer}")
        group_ready = False
        claim_every = max(self.claim_timeout_s / 2, 0.1)
        next_claim = time.monotonic() + claim_every
        while True:
            try:
                if not group_ready:
                    await ensure_group(self.redis, self.keys.chunks)
                    group_ready = True
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + claim_every
                    await self._claim(consumer)
                reply: Any = await self.redis.xreadgroup(
                    GROUP, consumer, {self.keys.chunks: ">"}, count=1, block=BLOCK_MS
                )
                for _stream, entries in reply or []:
                    for entry_id, values in entries:
                        await self._handle(entry_id, values)
                backoff.ok()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("consumer group gone (Redis restarted?): creating it again")
                    group_ready = False
                    continue
                self.counters["redis_errors"] += 1
                await backoff.failed(exc)
            except _REDIS_ERRORS as exc:
                self.counters["redis_errors"] += 1
                group_ready = False
                await backoff.failed(exc)

    async def _claim(self, consumer: str) -> None:
        start = "0-0"
        for _ in range(100):  # bounded: at most 100 pages of 10 per round
            reply = await self.redis.xautoclaim(
                self.keys.chunks,
                GROUP,
                consumer,
                min_idle_time=int(self.claim_timeout_s * 1000),
                start_id=start,
                count=10,
            )
            start, claimed = reply[0], reply[1]
            for entry_id, values in claimed:
                if not values:  # deleted meanwhile
                    await self.redis.xack(self.keys.chunks, GROUP, entry_id)
                    continue
                self.counters["claimed"] += 1
                await self.redis.hincrby(self.keys.stats, "claimed", 1)
                log.warning(
                    "claimed chunk %s of %s, idle over %.1f s (a processor died?)",
                    _text(values, "sequence"),
                    _text(values, "session_id"),
                    self.claim_timeout_s,
                )
                await self._handle(entry_id, values)
            if start in (b"0-0", "0-0"):
                return

    async def _handle(self, entry_id: Any, values: Mapping[Any, Any]) -> None:
        """Process one entry. Unavailable storage leaves it pending (claimed later); any
        other failure is final and reported as such."""
        try:
            session_id = _text(values, "session_id")
            sequence = int(_text(values, "sequence"))
            level = int(_text(values, "level"))
            hash_algorithm = _text(values, "hash_algorithm")
            wrapped = bytes.fromhex(_text(values, "wrapped_key"))
        except (KeyError, ValueError):
            log.error("dropping a malformed chunk entry %r", values)
            await self.redis.xack(self.keys.chunks, GROUP, entry_id)
            await self.redis.xdel(self.keys.chunks, entry_id)
            return
        started = time.monotonic()
        ok, error, outcome = True, "", "processed"
        try:
            try:
                blob = await _retry_unavailable(
                    lambda: self.storage.read_staged_chunk(session_id, sequence)
                )
            except ChunkNotFoundError:
                blob = None
            if blob is None:
                # Already processed by another consumer (which dropped the staged copy).
                try:
                    await self.storage.get_chunk(session_id, sequence)
                    outcome = "duplicate"
                except (ChunkNotFoundError, NotFoundError):
                    ok, error, outcome = False, "the staged chunk is gone", "failed"
            else:
                processed = await self.processor.process_staged(
                    blob,
                    session_id=session_id,
                    sequence=sequence,
                    wrapped_key=wrapped,
                    level=level,
                    hash_algorithm=hash_algorithm,
                )
                await _retry_unavailable(
                    lambda: self.storage.store_chunk(processed.record(), processed.stored)
                )
                await _retry_unavailable(
                    lambda: self.storage.drop_staged_chunk(session_id, sequence)
                )
        except Unavailable as exc:
            log.warning("chunk %d of %s left for later: %s", sequence, session_id, exc.message)
            return
        except LucidError as exc:
            ok, error, outcome = False, exc.message, "failed"
            log.error("chunk %d of %s failed: %s", sequence, session_id, exc.message)
            with contextlib.suppress(LucidError):
                await self.storage.drop_staged_chunk(session_id, sequence)
        self.counters[outcome] += 1
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.done,
                {
                    "session_id": session_id,
                    "sequence": str(sequence),
                    "ok": "1" if ok else "0",
                    "error": error,
                    "seconds": f"{time.monotonic() - started:.4f}",
                },
                maxlen=DONE_MAXLEN,
                approximate=True,
            )
            pipe.hincrby(self.keys.stats, outcome, 1)
            pipe.hincrby(self.keys.stats, f"{outcome}:{self.name}", 1)
            pipe.xack(self.keys.chunks, GROUP, entry_id)
            pipe.xdel(self.keys.chunks, entry_id)
            await pipe.execute()


# the session cache


class SessionCache:
    """``get_session`` read through Redis; see the module docstring."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "lucid:", ttl_s: float = 5.0):
        self.redis = client
        self.keys = StreamKeys(prefix)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.gen_ttl_s = 3600
        self._dirty: set[str] = set()
        self._skip_until = 0.0
        self.counters = {"hit": 0, "miss": 0, "bypass": 0, "invalidated": 0}

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _down(self, exc: BaseException) -> None:
        if self._usable():
            log.warning("session cache: Redis failed (%s); reading storage directly", exc)
        self._skip_until = time.monotonic() + 1.0

    async def _flush_dirty(self) -> bool:
        """Bump the generations a failed invalidation left; False if Redis still fails."""
        while self._dirty:
            session_id = next(iter(self._dirty))
            await self._bump(session_id)
            self._dirty.discard(session_id)
        return True

    async def _bump(self, session_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(self.keys.session_gen(session_id))
            pipe.expire(self.keys.session_gen(session_id), self.gen_ttl_s)
            pipe.delete(self.keys.session(session_id))
            await pipe.execute()

    async def get(
        self, session_id: str, load: Callable[[], Awaitable[SessionRecord]]
    ) -> SessionRecord:
        if not self._usable():
            self.counters["bypass"] += 1
            return await load()
        try:
            await self._flush_dirty()
            gen, cached = await self.redis.mget(
                self.keys.session_gen(session_id), self.keys.session(session_id)
            )
        except _REDIS_ERRORS as exc:
            self._down(exc)
            self.counters["bypass"] += 1
            return await load()
        generation = int(gen or 0)
        if cached is not None:
            try:
                value = json.loads(cached)
                if value["gen"] == generation:
                    self.counters["hit"] += 1
                    return _session_from(value["record"])
            except (ValueError, KeyError, TypeError):
                pass
        self.counters["miss"] += 1
        record = await load()
        try:
            await self.redis.set(
                self.keys.session(session_id),
                json.dumps({"gen": generation, "record": asdict(record)}),
                px=self.ttl_ms,
            )
        except _REDIS_ERRORS as exc:
            self._down(exc)
        return record

    async def invalidate(self, session_id: str) -> None:
        self.counters["invalidated"] += 1
        self._dirty.add(session_id)
        try:
            await self._flush_dirty()
        except _REDIS_ERRORS as exc:
            self._down(exc)


def _session_from(data: Mapping[str, Any]) -> SessionRecord:
    return SessionRecord(**{**data, "tags": tuple(data.get("tags") or ())})


class CachingStorage:
    """A :class:`Storage` whose ``get_session`` goes through a :class:`SessionCache` and
    whose session writes invalidate it; everything else is the wrapped storage's."""

    def __init__(self, storage: Storage, cache: SessionCache) -> None:
        self._storage = storage
        self.cache = cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.cache.get(session_id, lambda: self._storage.get_session(session_id))

    async def create_session(self, record: SessionRecord) -> None:
        try:
            await self._storage.create_session(record)
        finally:
            await self.cache.invalidate(record.session_id)

    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        try:
            return await self._storage.update_session(session_id, changes, if_status=if_status)
        finally:
            await self.cache.invalidate(session_id)

    async def delete_session(self, session_id: str) -> None:
        try:
            await self._storage.delete_session(session_id)
        finally:
            await self.cache.invalidate(session_id)
