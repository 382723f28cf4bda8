"""Running the synchronous evidence code (bundle writer, verifier) over the async Storage.

:func:`export_bundle` and :func:`verify_evidence` read chunks with plain blocking calls.
Here they run on a thread of their own, and each chunk read is sent back to the event
loop that owns the :class:`Storage` (a SQLite store or a gRPC channel is bound to that
loop), so the same code serves a local data directory and a remote storage component.

An export streams: the tar writer's output goes through a bounded queue to the HTTP
response, so at most ``buffer`` pieces (plus the chunk being written) are in memory,
and a client that stops reading stops the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from lucid_sessions.archive.bundle import ExportRange, export_bundle
from lucid_sessions.cluster.interfaces import Storage
from lucid_sessions.errors import ChunkNotFoundError, NotFoundError
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import ManifestRecord, SessionRecord

__all__ = ["ExportStream", "StorageEvidence", "ThreadedStream", "call_on_loop", "run_in_thread"]

T = TypeVar("T")
log = logging.getLogger("lucid_sessions.api")
_POLL_S = 0.25


class _Aborted(Exception):
    """The client went away; the export stops."""


async def run_in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a new thread (not the default executor, which bridged calls need)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def body() -> None:
        try:
            result: T | None = fn()
            error: BaseException | None = None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=body, name="lucid-api-evidence", daemon=True).start()
    return await future


def call_on_loop(
    loop: asyncio.AbstractEventLoop,
    make: Callable[[], Coroutine[Any, Any, T]],
    aborted: threading.Event | None = None,
) -> T:
    """Run ``make()`` on ``loop`` from another thread and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(make(), loop)
    while True:
        try:
            return future.result(timeout=_POLL_S)
        except concurrent.futures.TimeoutError:
            if (aborted is not None and aborted.is_set()) or loop.is_closed():
                future.cancel()
                raise _Aborted() from None


class StorageEvidence:
    """A finalised session read through :class:`Storage`, as ``verify_evidence`` wants it.

    Build it on the event loop; call its methods only from another thread.
    """

    excerpt = False
    listed_chunks: list[int] | None = None

    def __init__(
        self, storage: Storage, record: ManifestRecord, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._storage = storage
        self._loop = loop
        self.session_id = record.session_id
        self.manifest_bytes = record.manifest
        self.signature = record.signature
        self.public_key = record.public_key
        self.proofs: dict[int, list[bytes]] = {}

    def sequences(self) -> list[int]:
        return call_on_loop(self._loop, lambda: self._storage.chunk_sequences(self.session_id))

    def chunk(self, sequence: int) -> bytes | None:
        try:
            return call_on_loop(
                self._loop, lambda: self._storage.read_chunk(self.session_id, sequence)
            )
        except ChunkNotFoundError:
            return None


class _ManifestOnly:
    def __init__(self, record: ManifestRecord, session: SessionRecord | None = None) -> None:
        self._record = record
        self._session = session

    async def get_manifest(self, session_id: str) -> ManifestRecord:
        return self._record

    async def get_session(self, session_id: str) -> SessionRecord:
        """The session as read before the export (its anchor receipt goes in the bundle)."""
        if self._session is None:
            raise NotFoundError(f"session {session_id} was not read before the export")
        return self._session


class _BridgedChunks:
    def __init__(
        self, storage: Storage, loop: asyncio.AbstractEventLoop, aborted: threading.Event
    ) -> None:
        self._storage = storage
        self._loop = loop
        self._aborted = aborted

    def get(self, session_id: str, sequence: int) -> bytes:
        return call_on_loop(
            self._loop, lambda: self._storage.read_chunk(session_id, sequence), self._aborted
        )


class _StorageAsDataDir:
    """The two parts of a :class:`DataDir` that ``export_bundle`` reads."""

    def __init__(
        self, store: _ManifestOnly, chunks: _BridgedChunks, path: Path | None = None
    ) -> None:
        self.store = store
        self.chunks = chunks
        if path is not None:
            self.path = path  # where export_bundle finds the session's checkpoints


class _QueueWriter:
    """A write-only file whose bytes go, in pieces, to an asyncio queue on ``loop``."""

    def __init__(
        self,
        queue: asyncio.Queue[bytes | None],
        loop: asyncio.AbstractEventLoop,
        aborted: threading.Event,
        piece: int,
    ) -> None:
        self._queue = queue
        self._loop = loop
        self._aborted = aborted
        self._piece = piece
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        if self._aborted.is_set():
            raise _Aborted()
        self._buffer += data
        if len(self._buffer) >= self._piece:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        """Keeps the buffer: pieces are sent when full or at :meth:`close_stream`."""

    def close_stream(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()

    def _send(self, piece: bytes) -> None:
        call_on_loop(self._loop, lambda: self._queue.put(piece), self._aborted)


class ThreadedStream:
    """Bytes a producer writes on a worker thread, as an async iterable of pieces.

    The queue between them is bounded, so a slow client slows the producer down instead
    of filling memory. Iterate once; call :meth:`close` when the response ends however it
    ends (the client may have left): the producer then stops at its next write.
    Subclasses implement :meth:`produce`.
    """

    what = "stream"
    """Names the stream in log lines (``export``, ``render``)."""
    expected: tuple[type[BaseException], ...] = (_Aborted,)
    """Errors that only mean the stream was stopped: not logged."""

    def __init__(self, session_id: str, *, buffer: int, piece: int) -> None:
        self.session_id = session_id
        self._piece = piece
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=max(1, buffer))
        self._aborted = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def produce(self, out: _QueueWriter, loop: asyncio.AbstractEventLoop) -> None:
        """Write everything into ``out`` (runs on the worker thread)."""
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    def _produce(self, loop: asyncio.AbstractEventLoop) -> None:
        writer = _QueueWriter(self._queue, loop, self._aborted, self._piece)
        try:
            self.produce(writer, loop)
            writer.close_stream()
        finally:
            with contextlib.suppress(_Aborted, RuntimeError):
                call_on_loop(loop, lambda: self._queue.put(None), self._aborted)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await run_in_thread(lambda: self._produce(loop))
        except asyncio.CancelledError:
            self._aborted.set()
            raise

    async def _pieces(self) -> AsyncIterator[bytes]:
        if self._task is not None:
            raise RuntimeError(f"an {self.what} stream can be iterated once")
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(self._log_failure)
        while True:
            piece = await self._queue.get()
            if piece is None:
                break
            yield piece
        await self._task

    @property
    def stopped(self) -> bool:
        """True once the producer was told to stop."""
        return self._aborted.is_set()

    def close(self) -> None:
        """Stop the producer if it is still running (idempotent)."""
        if self._task is None or self._task.done():
            return
        self._aborted.set()
        while not self._queue.empty():  # free a writer waiting for room
            self._queue.get_nowait()

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, self.expected):
            log.warning("api %s failed session_id=%s error=%s", self.what, self.session_id, error)


class ExportStream(ThreadedStream):
    """A session's evidence bundle as ``export_bundle`` writes it, as an async iterable.

    The manifest is read before, so a session without one fails before the first byte.
    """

    what = "export"

    def __init__(
        self,
        storage: Storage,
        record: ManifestRecord,
        *,
        excerpt: ExportRange | None,
        buffer: int,
        piece: int,
        session: SessionRecord | None = None,
        evidence_dir: Path | None = None,
    ) -> None:
        super().__init__(record.session_id, buffer=buffer, piece=piece)
        self._storage = storage
        self._record = record
        self._session = session
        self._evidence_dir = evidence_dir
        self._excerpt = excerpt

    def produce(self, out: _QueueWriter, loop: asyncio.AbstractEventLoop) -> None:
        chunks = _BridgedChunks(self._storage, loop, self._aborted)
        source = _StorageAsDataDir(
            _ManifestOnly(self._record, self._session), chunks, self._evidence_dir
        )

        async def write() -> None:
            await export_bundle(
                cast(DataDir, source), self.session_id, cast(Any, out), excerpt=self._excerpt
            )

        asyncio.run(write())
