"""Pipeline coordination through Redis Streams, against a real Redis (tests/redis_fixtures.py).

In-process components: storage, a pipeline with a :class:`ChunkCoordinator`, and chunk
consumers each with its own processor, as separate processor processes would have. Also:
first-writer-wins ``store_chunk``, the staging area (locally and over gRPC), and the
session cache's invalidation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from tests.test_metadata_store import chunk, session

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.archive.reader import StoredEvidence, load_manifest
from lucid_sessions.archive.verify import verify_evidence
from lucid_sessions.cluster.coordination import (
    GROUP,
    CachingStorage,
    ChunkConsumer,
    ChunkCoordinator,
    SessionCache,
    StreamKeys,
    open_staged,
    seal_staged,
)
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import DataKey, wrap_data_key
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ChunkNotFoundError,
    FormatError,
)
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.security.redis_conn import open_redis
from lucid_sessions.storage.datadir import DataDir

INGEST = {
    "name": "coordinated",
    "source": "ingest",
    "recording_config": {
        "fps": 20,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.25,
    },
}


def _raw(sequence: int, data: bytes = b"frames " * 100) -> RawChunk:
    return RawChunk(
        sequence=sequence,
        start_us=sequence * 1000,
        end_us=sequence * 1000 + 999,
        frame_count=3,
        keyframe_count=1,
        unchanged_count=0,
        dropped_count=0,
        width=320,
        height=240,
        raw_bytes=3 * 320 * 240 * 3,
        data=data,
    )


async def _wait(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# store_chunk: first writer wins ----------------------------------------------------------


def test_a_chunk_stored_twice_with_another_hash_keeps_the_first_copy(tmp_path):
    async def scenario():
        datadir = DataDir.open(tmp_path / "data", create=True)
        storage = StorageService(datadir)
        try:
            await storage.create_session(session("ses_a"))
            first = chunk("ses_a", 0)
            again = replace(first, leaf_hash="ee" * 32, stored_size=11)
            await storage.store_chunk(first, b"first bytes")
            await storage.store_chunk(again, b"other bytes")  # returns normally
            assert await storage.read_chunk("ses_a", 0) == b"first bytes"
            assert await storage.list_chunks("ses_a") == [first]
            assert storage.duplicates == 1
            # The same record with other bytes still does not match: refused.
            with pytest.raises(AlreadyExistsError):
                await storage.store_chunk(first, b"not the bytes of that hash")
            # Concurrent stores of one sequence: one wins, file and record agree.
            copies = [replace(first, sequence=1, leaf_hash=f"{i:02x}" * 32) for i in range(8)]
            await asyncio.gather(
                *(storage.store_chunk(c, f"copy {i}".encode()) for i, c in enumerate(copies))
            )
            kept = await storage.get_chunk("ses_a", 1)
            index = copies.index(kept)
            assert await storage.read_chunk("ses_a", 1) == f"copy {index}".encode()
            # A file without a record (a crash between the writes) is replaced.
            datadir.chunks.put("ses_a", 2, b"orphan")
            record = replace(first, sequence=2)
            await storage.store_chunk(record, b"fresh")
            assert await storage.read_chunk("ses_a", 2) == b"fresh"
            assert await storage.get_chunk("ses_a", 2) == record
            assert storage._chunk_locks == {}
        finally:
            await datadir.close()

    asyncio.run(scenario())


# the staging area ------------------------------------------------------------------------


def test_staged_chunks_round_trip_locally_and_over_grpc_and_go_with_the_session(tmp_path):
    from lucid_sessions.rpc import StorageClient, serve

    async def scenario():
        datadir = DataDir.open(tmp_path / "data", create=True)
        local = StorageService(datadir)
        server, port = await serve({"storage": local}, host="127.0.0.1", port=0)
        remote = StorageClient(f"127.0.0.1:{port}")
        try:
            await local.create_session(session("ses_a"))
            big = np.random.default_rng(1).integers(0, 256, 3 * 1024 * 1024 + 5, np.uint8)
            for storage, sequence, data in (
                (local, 3, b"three"),
                (remote, 1, big.tobytes()),
                (remote, 0, b""),
            ):
                await storage.stage_chunk("ses_a", sequence, data)
                assert await storage.read_staged_chunk("ses_a", sequence) == data
            assert await remote.staged_sequences("ses_a") == [0, 1, 3]
            await remote.drop_staged_chunk("ses_a", 1)
            await remote.drop_staged_chunk("ses_a", 1)  # idempotent
            assert await local.staged_sequences("ses_a") == [0, 3]
            with pytest.raises(ChunkNotFoundError):
                await remote.read_staged_chunk("ses_a", 1)
            staged = datadir.path / "staging" / "ses_a" / "00000003.raw"
            assert staged.stat().st_mode & 0o077 == 0
            await remote.delete_session("ses_a")
            assert not staged.parent.exists()
            assert await local.staged_sequences("ses_a") == []
        finally:
            await remote.close()
            await server.stop(0)
            await datadir.close()

    asyncio.run(scenario())


def test_a_staged_chunk_is_sealed_and_bound_to_its_session_and_sequence():
    key = DataKey.generate()
    raw = _raw(4, b"secret pixels" * 50)
    blob = seal_staged(raw, key, "ses_a")
    assert b"secret pixels" not in blob
    assert open_staged(blob, key, "ses_a", 4) == raw
    with pytest.raises(FormatError):
        open_staged(blob, key, "ses_a", 5)
    with pytest.raises(AuthenticationError):
        open_staged(blob, key, "ses_b", 4)
    with pytest.raises(FormatError):
        open_staged(b"garbage", key, "ses_a", 4)


# the chunk flow through Redis ------------------------------------------------------------


class Rig:
    """Storage, a coordinated pipeline and a recorder over one data directory; consumers
    (each with its own processor) are added with :meth:`consumer`."""

    def __init__(self, path: Path, url: str, prefix: str, claim_timeout_s: float = 2.0) -> None:
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.master = self.datadir.master_key()
        self.url = url
        self.prefix = prefix
        self.claim_timeout_s = claim_timeout_s
        self.redis = open_redis(url)
        self.coordinator = ChunkCoordinator(
            self.redis, self.storage, prefix=prefix, claim_timeout_s=claim_timeout_s
        )
        key = self.datadir.cluster_key()
        self.pipeline = PipelineManager(
            self.storage,
            None,
            master=self.master,
            signer=key,
            anchor=LocalAnchorLog(path / "anchors.jsonl", key),
            coordinator=self.coordinator,
        )
        self.recorder = RecorderService(self.pipeline)
        self.pipeline.attach_recorder(self.recorder)
        self.consumers: list[tuple[ChunkConsumer, ProcessorService, aioredis.Redis]] = []

    async def consumer(self, name: str, workers: int = 1) -> ChunkConsumer:
        client = open_redis(self.url)
        processor = ProcessorService(self.master)
        consumer = ChunkConsumer(
            client,
            self.storage,
            processor,
            prefix=self.prefix,
            claim_timeout_s=self.claim_timeout_s,
            workers=workers,
            name=name,
        )
        await consumer.start()
        self.consumers.append((consumer, processor, client))
        return consumer

    async def stop_consumer(self, consumer: ChunkConsumer) -> None:
        for entry in list(self.consumers):
            if entry[0] is consumer:
                self.consumers.remove(entry)
                await consumer.close()
                await entry[1].close()
                await entry[2].aclose()

    async def __aenter__(self) -> Rig:
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for consumer, _, _ in list(self.consumers):
            await self.stop_consumer(consumer)
        await self.recorder.close()
        await self.pipeline.close()
        await self.redis.aclose()
        await self.datadir.close()

    async def push_for(self, session_id: str, seconds: float, start: int = 0) -> int:
        frames = start
        base = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            frame = base.copy()
            frame[frames % 200 : frames % 200 + 20, 10:60] = frames % 256
            await self.recorder.push_frame(session_id, None, frame)
            frames += 1
            await asyncio.sleep(0.05)
        return frames

    async def finish(self, session_id: str, timeout: float = 60.0):
        await self.pipeline.stop_session(session_id)
        await self.pipeline.wait_idle(session_id, timeout=timeout)
        final = await self.storage.get_session(session_id)
        records = await self.storage.list_chunks(session_id)
        loaded = await load_manifest(self.datadir, session_id)
        report = verify_evidence(StoredEvidence(self.datadir, loaded))
        return final, records, report


def _exactly_once(final, records) -> None:
    sequences = [r.sequence for r in records]
    assert sequences == list(range(len(sequences))), sequences
    assert final.chunk_count == len(sequences)
    assert len(sequences) >= 3


def test_two_consumers_share_one_sessions_chunks_and_each_is_stored_once(
    tmp_path, redis_url, redis_prefix
):
    async def scenario():
        async with Rig(tmp_path / "data", redis_url, redis_prefix) as rig:
            a = await rig.consumer("proc-a")
            b = await rig.consumer("proc-b")
            sid = (await rig.pipeline.create_session(INGEST)).session_id
            await rig.pipeline.start_session(sid)
            await rig.push_for(sid, 3.0)
            final, records, report = await rig.finish(sid)
            status = await rig.pipeline.pipeline_status()
            staged = await rig.storage.staged_sequences(sid)
            length = await rig.redis.xlen(StreamKeys(redis_prefix).chunks)
            return final, records, report, a.counters, b.counters, status, staged, length

    final, records, report, a, b, status, staged, length = asyncio.run(scenario())
    assert final.status == "completed", final.status_reason
    _exactly_once(final, records)
    assert report.ok, report.failures
    assert a["processed"] > 0 and b["processed"] > 0, (a, b)
    assert a["processed"] + b["processed"] >= len(records)
    coordination = status["coordination"]
    assert coordination["outstanding"] == 0
    assert coordination["processors"]["processed"] == a["processed"] + b["processed"]
    assert staged == [] and length == 0


def test_an_entry_a_dead_consumer_never_acknowledged_is_claimed_after_the_timeout(
    tmp_path, redis_url, redis_prefix
):
    async def scenario():
        async with Rig(tmp_path / "data", redis_url, redis_prefix, claim_timeout_s=1.0) as rig:
            keys = StreamKeys(redis_prefix)
            record = await rig.pipeline.create_session(INGEST)
            sid = record.session_id
            key = DataKey.generate()
            wrapped = wrap_data_key(key, rig.master)
            done: list[tuple[str, int, bool]] = []
            rig.coordinator.on_done = lambda s, q, ok, err: done.append((s, q, ok))
            await _wait(lambda: rig.coordinator._ready, 10, "the coordinator connecting")
            await rig.storage.stage_chunk(sid, 0, seal_staged(_raw(0), key, sid))
            await rig.coordinator.publish(
                sid, 0, level=3, hash_algorithm="blake3", wrapped_key=wrapped
            )
            # A processor reads the entry, then dies before acknowledging it.
            taken = await rig.redis.xreadgroup(GROUP, "dead-1", {keys.chunks: ">"}, count=1)
            assert len(taken[0][1]) == 1
            started = time.monotonic()
            survivor = await rig.consumer("survivor")
            await _wait(lambda: done, 20, "the claimed chunk being stored")
            waited = time.monotonic() - started
            # Processing the same entry again (a redelivery) stores nothing new.
            await rig.coordinator.publish(
                sid, 0, level=3, hash_algorithm="blake3", wrapped_key=wrapped
            )
            await _wait(lambda: len(done) == 2, 20, "the duplicate being reported")
            pending = await rig.redis.xpending(keys.chunks, GROUP)
            return (
                done,
                waited,
                survivor.counters,
                await rig.storage.list_chunks(sid),
                pending,
                await rig.storage.staged_sequences(sid),
            )

    done, waited, counters, records, pending, staged = asyncio.run(scenario())
    assert [d[2] for d in done] == [True, True]
    assert waited >= 0.9
    assert counters["claimed"] == 1 and counters["duplicate"] == 1, counters
    assert [r.sequence for r in records] == [0]
    assert pending["pending"] == 0 and staged == []


def test_redis_restarted_mid_session_loses_nothing(tmp_path, private_redis):
    async def scenario():
        prefix = "lucid-restart:"
        async with Rig(tmp_path / "data", private_redis.url, prefix, claim_timeout_s=1.0) as rig:
            first = await rig.consumer("proc-a")
            sid = (await rig.pipeline.create_session(INGEST)).session_id
            await rig.pipeline.start_session(sid)
            frames = await rig.push_for(sid, 1.0)
            # The processors go away: entries wait in the stream, chunks in staging...
            await rig.stop_consumer(first)
            frames = await rig.push_for(sid, 1.0, frames)
            await _wait(lambda: rig.coordinator.outstanding > 0, 10, "chunks waiting")
            waiting = rig.coordinator.outstanding
            # ...and Redis restarts without persistence: stream, group and done are gone.
            await asyncio.to_thread(private_redis.restart)
            await rig.consumer("proc-b")
            await rig.push_for(sid, 1.0, frames)
            final, records, report = await rig.finish(sid)
            return final, records, report, waiting, dict(rig.coordinator.counters)

    final, records, report, waiting, counters = asyncio.run(scenario())
    assert waiting >= 1
    assert final.status == "completed", final.status_reason
    _exactly_once(final, records)
    assert report.ok, report.failures
    assert counters["republished"] >= 1, counters
    assert counters["failed"] == 0, counters


# the session cache -----------------------------------------------------------------------


def test_the_session_cache_serves_hits_and_every_write_invalidates_it(
    tmp_path, redis_url, redis_prefix
):
    async def scenario():
        datadir = DataDir.open(tmp_path / "data", create=True)
        storage = StorageService(datadir)
        client = open_redis(redis_url)
        writer = CachingStorage(storage, SessionCache(client, prefix=redis_prefix))
        reader = CachingStorage(storage, SessionCache(client, prefix=redis_prefix))
        try:
            await writer.create_session(session("ses_a"))
            assert (await reader.get_session("ses_a")).name == session("ses_a").name
            assert (await reader.get_session("ses_a")).tags == session("ses_a").tags
            assert reader.cache.counters["miss"] == 1 and reader.cache.counters["hit"] == 1
            await writer.update_session("ses_a", {"name": "renamed"})
            assert (await reader.get_session("ses_a")).name == "renamed"
            # A reader that loaded before a write finished never caches the old record.

            async def load_then_write():
                old = await storage.get_session("ses_a")
                await writer.update_session("ses_a", {"name": "newest"})
                return old

            await writer.cache.invalidate("ses_a")  # so the next read loads
            stale = await reader.cache.get("ses_a", load_then_write)
            assert stale.name == "renamed"
            assert (await reader.get_session("ses_a")).name == "newest"
            # Writes the cache does not see still expire with the TTL.
            short = CachingStorage(storage, SessionCache(client, prefix=redis_prefix, ttl_s=0.3))
            await short.cache.invalidate("ses_a")
            await short.get_session("ses_a")
            await storage.update_session("ses_a", {"name": "behind its back"})
            assert (await short.get_session("ses_a")).name == "newest"
            await asyncio.sleep(0.5)
            assert (await short.get_session("ses_a")).name == "behind its back"
            await writer.delete_session("ses_a")
            with pytest.raises(Exception, match="ses_a"):
                await reader.get_session("ses_a")
        finally:
            await client.aclose()
            await datadir.close()

    asyncio.run(scenario())


def test_the_session_cache_reads_storage_when_redis_is_down(tmp_path, private_redis):
    async def scenario():
        datadir = DataDir.open(tmp_path / "data", create=True)
        storage = StorageService(datadir)
        client = open_redis(private_redis.url, connect_timeout_s=0.5, socket_timeout_s=0.5)
        cached = CachingStorage(storage, SessionCache(client, prefix="lucid-down:"))
        try:
            await cached.create_session(session("ses_a"))
            await cached.get_session("ses_a")
            await asyncio.to_thread(private_redis.stop)
            await cached.update_session("ses_a", {"name": "while down"})
            assert (await cached.get_session("ses_a")).name == "while down"
            assert cached.cache.counters["bypass"] >= 1
            await asyncio.to_thread(private_redis.start)
            cached.cache._skip_until = 0.0
            assert (await cached.get_session("ses_a")).name == "while down"
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            await datadir.close()

    asyncio.run(scenario())
