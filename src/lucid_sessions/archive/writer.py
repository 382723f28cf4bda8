"""Writing a session: frames in, stored chunks and a signed manifest out.

:class:`SessionWriter` cuts frames into chunks (in a worker thread), processes chunks on
a small thread pool (at most ``2 * workers`` in flight, so memory stays bounded) and
stores each one as soon as it is processed: the chunk file first, then its metadata
record, so a chunk whose record exists is always complete on disk. The manifest covers
the unbroken run of stored chunks from sequence 0.

Finishing a writer finalises the session (:mod:`.finalize`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lucid_sessions.archive.finalize import finalize_session
from lucid_sessions.archive.keys import create_data_key
from lucid_sessions.archive.processor import ChunkProcessor, ProcessedChunk
from lucid_sessions.archive.quality import AdaptiveLevel
from lucid_sessions.chunkfile import zstd_level
from lucid_sessions.crypto import DataKey
from lucid_sessions.errors import InvalidConfigError, NotFoundError
from lucid_sessions.manifest import Manifest
from lucid_sessions.merkle import get_hasher
from lucid_sessions.recording.chunker import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DURATION_US,
    Chunker,
    RawChunk,
)
from lucid_sessions.recording.codec import Pixels
from lucid_sessions.storage.chunk_store import check_id
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import SessionRecord, utc_now

__all__ = ["SessionWriter", "new_session_id", "store_processed"]


def new_session_id() -> str:
    return "ses_" + secrets.token_hex(8)


class SessionWriter:
    """Records one session into a data directory. Create with :meth:`create`."""

    def __init__(
        self,
        datadir: DataDir,
        record: SessionRecord,
        data_key: DataKey,
        *,
        chunker: Chunker,
        level: int,
        workers: int,
        adaptive: bool = False,
    ) -> None:
        self.datadir = datadir
        self.session = record
        self.session_id = record.session_id
        self._key = data_key
        self._chunker = chunker
        self._processor = ChunkProcessor(get_hasher(record.hash_algorithm))
        self.level = level
        self._adaptive = AdaptiveLevel(level) if adaptive else None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lucid-chunk")
        self._slots = asyncio.Semaphore(2 * workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.chunks_stored = 0
        self.frames = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.dropped = 0

    @classmethod
    async def create(
        cls,
        datadir: DataDir,
        *,
        name: str,
        quality: str = "medium",
        fps: float | None = None,
        hash_algorithm: str = "blake3",
        max_duration_us: int = DEFAULT_MAX_DURATION_US,
        max_bytes: int = DEFAULT_MAX_BYTES,
        project: str | None = None,
        environment: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        workers: int = 2,
        adaptive: bool = False,
    ) -> SessionWriter:
        """A new session in status ``recording``, with its data key.

        With ``adaptive`` the zstd level follows the pipeline's headroom (see
        :mod:`.quality`) instead of staying at the quality's level.
        """
        level = zstd_level(quality)
        get_hasher(hash_algorithm)
        if not name.strip():
            raise InvalidConfigError("a session name must not be empty")
        session_id = check_id(session_id or new_session_id())
        now = utc_now()
        settings = {"quality": quality, "zstd_level": level, **(config or {})}
        if fps is not None:
            settings["fps"] = fps
        record = SessionRecord(
            session_id=session_id,
            name=name,
            status="recording",
            created_at=now,
            updated_at=now,
            started_at=now,
            project=project,
            environment=environment,
            tags=tuple(tags),
            config=settings,
            hash_algorithm=hash_algorithm,
        )
        datadir.master_key()  # fail on a wrong master key before anything is written
        await datadir.store.create_session(record)
        key = await create_data_key(datadir, session_id)
        record = await datadir.store.update_session(session_id, {"key_id": key.key_id})
        chunker = Chunker(max_duration_us=max_duration_us, max_bytes=max_bytes)
        return cls(
            datadir, record, key, chunker=chunker, level=level, workers=workers, adaptive=adaptive
        )

    async def add_frame(self, timestamp_us: int, pixels: Pixels) -> None:
        """Add one frame; may wait while earlier chunks are processed and stored."""
        closed = await asyncio.to_thread(self._chunker.add, timestamp_us, pixels)
        self.frames += 1
        if closed is not None:
            await self._submit(closed)

    def note_dropped(self, count: int = 1) -> None:
        """Count sampling ticks the capture missed, against the open chunk."""
        self._chunker.note_dropped(count)
        self.dropped += count

    async def _submit(self, raw: RawChunk) -> None:
        """Start processing a closed chunk; waits only while ``2 * workers`` chunks are
        already in flight (backpressure). Each chunk is stored as soon as it is processed."""
        self._raise_failure()
        waited = self._slots.locked()
        await self._slots.acquire()
        task = asyncio.create_task(self._process_and_store(raw, time.monotonic(), waited))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process_and_store(self, raw: RawChunk, submitted: float, waited: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
            level = self.level
            processed = await loop.run_in_executor(
                self._pool,
                lambda: self._processor.process(
                    raw, session_id=self.session_id, data_key=self._key, level=level
                ),
            )
            await store_processed(self.datadir, processed)
            if self._adaptive is not None:
                self.level = self._adaptive.observe(
                    time.monotonic() - submitted,
                    (raw.end_us - raw.start_us) / 1e6,
                    backlog_full=waited,
                )
            self.chunks_stored += 1
            self.raw_bytes += raw.raw_bytes
            self.stored_bytes += len(processed.stored)
        except BaseException as exc:
            self._failure = self._failure or exc
            raise
        finally:
            self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def flush(self) -> None:
        """Close the open chunk and wait until every chunk is stored; re-raises the first
        processing or storage failure."""
        last = await asyncio.to_thread(self._chunker.flush)
        if last is not None:
            await self._submit(last)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._raise_failure()

    async def finish(self, *, status: str = "completed", reason: str | None = None) -> Manifest:
        """Flush, then finalise the session; returns its manifest."""
        try:
            await self.flush()
        finally:
            await asyncio.to_thread(self._pool.shutdown, wait=True)
        manifest = await finalize_session(
            self.datadir.store,
            self.datadir.cluster_key(),
            self.session_id,
            status=status,
            reason=reason,
        )
        from lucid_sessions.anchoring.session_log import log_finalised

        await log_finalised(self.datadir, self.session_id)
        return manifest

    async def discard(self) -> None:
        """Stop and remove everything this session wrote: chunk files and metadata."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.datadir.chunks.delete_session, self.session_id)
        with contextlib.suppress(NotFoundError):
            await self.datadir.store.delete_session(self.session_id)


async def store_processed(datadir: DataDir, processed: ProcessedChunk) -> None:
    """Write the chunk file, then its record: a record implies a complete file."""
    await asyncio.to_thread(
        datadir.chunks.put, processed.session_id, processed.raw.sequence, processed.stored
    )
    await datadir.store.put_chunk(processed.record())
