"""The pipeline manager: the session state machine and the chunk flow.

States and the transitions allowed (anything else is refused with LUCID_ERR_3006, or
LUCID_ERR_3004 for an operation that needs a recording session)::

    created ──start──> starting ──> recording <──pause/resume──> paused
       │                  │            │                            │
       │                  └─> failed   └──stop / source lost──> stopped <──┘
       │                                                          │
       └──delete──> deleted               processing <────────────┘
                                          │     │      │
                                  completed  interrupted  failed

Chunks go recorder -> ``submit_chunk`` -> a bounded queue -> processor -> storage.
The queue bounds memory: when it is full, ``submit_chunk`` waits (backpressure reaches the
recorder, whose sampler then counts dropped frames). Transient failures
(:class:`~lucid_sessions.cluster.interfaces.Unavailable`) are retried with exponential
backoff; a chunk that still fails is counted and the session ends interrupted with what
was stored. Finalisation signs the manifest over the stored chunks; anchoring its root is
then a durable background job (:class:`~lucid_sessions.anchoring.job.AnchorJobs`: pending,
retried with backoff, confirmed or failed, state in the session's ``config["anchor"]``).

With a :class:`~lucid_sessions.cluster.coordination.ChunkCoordinator` (Redis configured,
processors in other processes), a worker does not call the processor: it seals the chunk
under the session key, stages it in storage and publishes it to a Redis stream that every
processor process consumes; the chunk counts as pending until a processor reports it
stored (or the coordinator finds it stored in storage). At most ``max_in_flight`` chunks
are staged and not yet stored at once, so backpressure still reaches the recorder.

Limits. A session's ``storage_config.max_size_gb``: once the bytes it has stored reach it,
its recording is stopped and the session finalised (interrupted, reason "stopped by its
size limit (max_size_gb=N)"). A free-space reserve (``storage_reserve_bytes``, the
cluster's ``LUCID_STORAGE_RESERVE_BYTES``): with less free space on the chunk store's disk
(``Storage.health``), a session does not start (StorageError caused by ENOSPC: HTTP 507),
and after each stored chunk every running recording is stopped the same way. A chunk
whose write fails with ENOSPC, EDQUOT or EIO is not stored (the chunk store leaves no
partial file, no record); its session's recording is stopped, later chunks of it are
dropped, and it is finalised with every chunk stored completely, the reason naming the
disk error (also logged, and counted through ``on_storage_error(errno name)``).

On start, :meth:`PipelineManager.recover` closes every session a previous process left
open (starting, recording, paused, stopped, processing): it is finalised as interrupted
with every chunk that reached storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lucid_sessions.anchoring import Anchor
from lucid_sessions.anchoring.job import AnchorJobs
from lucid_sessions.anchoring.session_log import manifest_sha256
from lucid_sessions.anchoring.trail import EvidenceTrail
from lucid_sessions.archive.finalize import finalize_session
from lucid_sessions.archive.quality import AdaptiveLevel
from lucid_sessions.archive.retention import check_not_held
from lucid_sessions.archive.writer import new_session_id
from lucid_sessions.chunkfile import zstd_level
from lucid_sessions.cluster.coordination import ChunkCoordinator, seal_staged
from lucid_sessions.cluster.interfaces import (
    CaptureSpec,
    Processor,
    Recorder,
    RecordingEnd,
    Storage,
    Unavailable,
)
from lucid_sessions.crypto import (
    ClusterKey,
    DataKey,
    MasterKey,
    XChaCha20Poly1305,
    unwrap_data_key,
    wrap_data_key,
)
from lucid_sessions.errors import (
    InvalidConfigError,
    LucidError,
    NotFoundError,
    NotRecordingError,
    PipelineError,
    StorageError,
)
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.storage.chunk_store import check_id
from lucid_sessions.storage.metadata import SessionRecord, WrappedKeyRecord, utc_now

__all__ = ["OPEN_STATES", "TRANSITIONS", "PipelineManager"]

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"starting", "deleted"}),
    "starting": frozenset({"recording", "failed", "stopped"}),
    "recording": frozenset({"paused", "stopped", "failed"}),
    "paused": frozenset({"recording", "stopped", "failed"}),
    "stopped": frozenset({"processing"}),
    "processing": frozenset({"completed", "interrupted", "failed"}),
    "completed": frozenset({"deleted"}),
    "interrupted": frozenset({"deleted"}),
    "failed": frozenset({"deleted"}),
}
OPEN_STATES = ("starting", "recording", "paused", "stopped", "processing")
_UPDATABLE = frozenset({"name", "project", "environment", "tags", "metadata"})


def _sources_from(states: str) -> list[str]:
    return [s for s, targets in TRANSITIONS.items() if states in targets]


@dataclass(slots=True)
class _Live:
    """What the pipeline keeps in memory for a session that is recording."""

    key: DataKey
    wrapped: bytes
    level: AdaptiveLevel
    hash_algorithm: str
    pending: int = 0
    failed: int = 0
    seen: set[int] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    max_bytes: int | None = None
    """``storage_config.max_size_gb`` in bytes (None: no limit)."""
    max_size_gb: float | None = None
    stored_bytes: int = 0
    stop_reason: str | None = None
    """Set when the pipeline stopped the recording itself (size limit, reserve, disk)."""
    disk_failed: bool = False
    """A chunk write failed on the disk: later chunks of the session are dropped."""


_DISK_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT", errno.EIO: "EIO"}


def _disk_errno(exc: BaseException) -> str | None:
    """``ENOSPC``/``EDQUOT``/``EIO`` when ``exc`` was caused by that OS error (its cause
    chain, or its message when it crossed a process boundary), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[current.errno]
        current = current.__cause__ or current.__context__
    text = str(exc)
    for number, name in _DISK_ERRNOS.items():
        if os.strerror(number) in text:
            return name
    return None


def _max_bytes(config: Mapping[str, Any]) -> tuple[float | None, int | None]:
    storage = config.get("storage_config") or {}
    limit = storage.get("max_size_gb") if isinstance(storage, Mapping) else None
    if limit is None:
        return None, None
    gb = float(limit)
    return gb, max(1, int(gb * 1024**3))


class PipelineManager:
    """Implements :class:`~lucid_sessions.cluster.interfaces.Pipeline`.

    ``PipelineManager(storage, processor, master=..., signer=..., anchor=...)``, then
    :meth:`attach_recorder` (the recorder and the pipeline call each other, so one of them
    is wired after both exist). Call :meth:`start` before use and :meth:`close` after.
    """

    def __init__(
        self,
        storage: Storage,
        processor: Processor | None,
        *,
        master: MasterKey,
        signer: ClusterKey,
        anchor: Anchor,
        queue_size: int = 8,
        workers: int = 2,
        retries: int = 5,
        backoff_s: float = 0.2,
        on_chunk: Callable[[str, float], None] | None = None,
        coordinator: ChunkCoordinator | None = None,
        max_in_flight: int | None = None,
        anchor_attempts: int = 8,
        anchor_backoff_s: float = 2.0,
        anchor_max_backoff_s: float = 300.0,
        evidence_dir: Path | None = None,
        checkpoint_chunks: int = 10,
        checkpoint_seconds: float = 60.0,
        storage_reserve_bytes: int = 0,
        on_storage_error: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = storage
        self.storage_reserve_bytes = max(0, int(storage_reserve_bytes))
        """Free bytes the chunk store's disk must keep (0: no check)."""
        self._on_storage_error = on_storage_error
        # Live checkpoints and the session log (data directory files), when given one.
        self.trail = (
            None
            if evidence_dir is None
            else EvidenceTrail(
                storage,
                signer,
                anchor,
                evidence_dir,
                checkpoint_chunks=checkpoint_chunks,
                checkpoint_seconds=checkpoint_seconds,
            )
        )
        self.processor = processor
        self._recorder: Recorder | None = None
        self._master = master
        self._signer = signer
        self._anchor = anchor
        self.anchor_jobs = AnchorJobs(
            storage,
            anchor,
            max_attempts=anchor_attempts,
            backoff_s=anchor_backoff_s,
            max_backoff_s=anchor_max_backoff_s,
        )
        self._queue: asyncio.Queue[tuple[str, RawChunk]] = asyncio.Queue(maxsize=queue_size)
        self._workers_n = workers
        self._workers: list[asyncio.Task[None]] = []
        self._retries = retries
        self._backoff_s = backoff_s
        self._live: dict[str, _Live] = {}
        self._running = asyncio.Event()
        self._running.set()
        self._finalising: set[asyncio.Task[None]] = set()
        self._ended: set[str] = set()
        self._on_chunk = on_chunk
        self.counters = {
            "processed": 0,
            "failed": 0,
            "retried": 0,
            "duplicate": 0,
            "write_errors": 0,
        }
        self._coordinator = coordinator
        self._in_flight = asyncio.Semaphore(max_in_flight or max(16, 4 * queue_size))
        self._published_at: dict[tuple[str, int], float] = {}
        if coordinator is not None:
            coordinator.on_done = self._chunk_done

    def attach_recorder(self, recorder: Recorder) -> None:
        self._recorder = recorder

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            raise PipelineError("the pipeline has no recorder attached")
        return self._recorder

    # lifecycle

    async def start(self) -> None:
        """Recover sessions left open, resume pending anchors (in the background), then
        start the chunk workers."""
        await self.recover()
        self.anchor_jobs.start_recovery()
        if self._coordinator is not None:
            await self._coordinator.start()
        self._workers = [
            asyncio.create_task(self._work(), name=f"pipeline-worker-{i}")
            for i in range(self._workers_n)
        ]

    async def close(self) -> None:
        """Stop the workers; chunks still queued are not lost for good: their sessions
        are recovered as interrupted on next start."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._coordinator is not None:
            await self._coordinator.close()
        if self._finalising:
            await asyncio.gather(*self._finalising, return_exceptions=True)
        await self.anchor_jobs.close()
        if self.trail is not None:
            await self.trail.close()

    async def recover(self) -> list[str]:
        """Finalise every session a previous process left open; returns their ids."""
        recovered = []
        for status in OPEN_STATES:
            offset = 0
            while True:
                page = await self.storage.list_sessions(status=status, limit=200, offset=offset)
                for session in page.items:
                    if session.session_id in self._live:
                        continue
                    await self._close(
                        session.session_id, "interrupted", "the cluster stopped while recording"
                    )
                    recovered.append(session.session_id)
                if not page.has_next:
                    break
                offset += len(page.items)
        return recovered

    # state machine

    async def _transition(
        self, session_id: str, target: str, changes: Mapping[str, Any] | None = None
    ) -> SessionRecord:
        allowed = _sources_from(target)
        try:
            return await self.storage.update_session(
                session_id, {"status": target, **(changes or {})}, if_status=allowed
            )
        except PipelineError as exc:
            if type(exc) is not PipelineError:
                raise
            current = (await self.storage.get_session(session_id)).status
            error = NotRecordingError if target in ("paused", "stopped") else PipelineError
            raise error(
                f"session {session_id} is {current}: cannot go to {target}",
                details={"status": current, "target": target},
            ) from None

    # Pipeline interface

    async def create_session(self, spec: Mapping[str, Any], *, password: str = "") -> SessionRecord:
        name = str(spec.get("name") or "").strip()
        if not name:
            raise InvalidConfigError("name must not be empty", details={"field": "name"})
        recording = dict(spec.get("recording_config") or {})
        quality = str(recording.get("quality", "medium"))
        zstd_level(quality)
        session_id = check_id(str(spec.get("session_id") or new_session_id()))
        key = DataKey.generate()
        config: dict[str, Any] = {
            k: v
            for k, v in spec.items()
            if k not in ("name", "project", "environment", "tags", "session_id")
        }
        config.setdefault("recording_config", recording)
        if password:
            nonce = os.urandom(24)
            sealed = XChaCha20Poly1305(key.key).encrypt(
                nonce, password.encode(), f"rdp-password:{session_id}".encode()
            )
            config["rdp_password_sealed"] = (nonce + sealed).hex()
        now = utc_now()
        record = SessionRecord(
            session_id=session_id,
            name=name,
            status="created",
            created_at=now,
            updated_at=now,
            project=spec.get("project"),
            environment=spec.get("environment"),
            tags=tuple(spec.get("tags") or ()),
            config=config,
            key_id=key.key_id,
            hash_algorithm=str(spec.get("hash_algorithm", "blake3")),
        )
        # The key first: a crash in between leaves an unused key, never a session whose
        # data key is missing.
        await self.storage.put_wrapped_key(
            WrappedKeyRecord(
                key.key_id, session_id, self._master.key_id, wrap_data_key(key, self._master), now
            )
        )
        await self.storage.create_session(record)
        return record

    async def _data_key(self, session: SessionRecord) -> tuple[DataKey, bytes]:
        if session.key_id is None:
            raise PipelineError(f"session {session.session_id} has no data key")
        wrapped = (await self.storage.get_wrapped_key(session.key_id)).wrapped
        return unwrap_data_key(wrapped, self._master), wrapped

    def _capture_spec(self, session: SessionRecord, key: DataKey) -> CaptureSpec:
        config = session.config
        recording = dict(config.get("recording_config") or {})
        source = str(config.get("source", "ingest"))
        settings: dict[str, Any] = dict(config.get(f"{source}_config") or {})
        password = ""
        sealed = config.get("rdp_password_sealed")
        if sealed:
            blob = bytes.fromhex(str(sealed))
            password = (
                XChaCha20Poly1305(key.key)
                .decrypt(blob[:24], blob[24:], f"rdp-password:{session.session_id}".encode())
                .decode()
            )
        duration = recording.get("chunk_duration_s")
        size_mb = recording.get("chunk_size_mb")
        return CaptureSpec(
            source=source,
            fps=float(recording.get("fps", 10)),
            width=int(recording.get("width", 1920)),
            height=int(recording.get("height", 1080)),
            settings=settings,
            password=password,
            max_duration_us=None if duration is None else round(float(duration) * 1e6),
            max_bytes=None if size_mb is None else int(float(size_mb) * 1024 * 1024),
        )

    async def _free_bytes(self) -> int | None:
        """Free bytes on the chunk store's disk (None when storage cannot tell)."""
        try:
            health = await self.storage.health()
        except LucidError as exc:
            log.warning("cannot check the free space of the chunk store: %s", exc.message)
            return None
        return health.free_bytes if health.ok else None

    async def _check_reserve(self, session_id: str) -> None:
        """Refuse to start a recording when the disk is below its free-space reserve."""
        if self.storage_reserve_bytes <= 0:
            return
        free = await self._free_bytes()
        if free is not None and free < self.storage_reserve_bytes:
            raise StorageError(
                f"cannot start session {session_id}: the chunk store has {free} bytes free, "
                f"less than its reserve of {self.storage_reserve_bytes} bytes "
                "(LUCID_STORAGE_RESERVE_BYTES); free space or grow the volume",
                details={"free_bytes": free, "reserve_bytes": self.storage_reserve_bytes},
            ) from OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def start_session(self, session_id: str) -> SessionRecord:
        await self._check_reserve(session_id)
        session = await self._transition(session_id, "starting")
        key, wrapped = await self._data_key(session)
        quality = str((session.config.get("recording_config") or {}).get("quality", "medium"))
        live = _Live(key, wrapped, AdaptiveLevel(zstd_level(quality)), session.hash_algorithm)
        live.max_size_gb, live.max_bytes = _max_bytes(session.config)
        live.idle.set()
        self._live[session_id] = live
        try:
            await self.recorder.start(session_id, self._capture_spec(session, key))
        except LucidError as exc:
            self._live.pop(session_id, None)
            await self.storage.update_session(
                session_id,
                {"status": "failed", "status_reason": exc.message, "ended_at": utc_now()},
            )
            raise
        return await self._transition(session_id, "recording", {"started_at": utc_now()})

    async def stop_session(self, session_id: str) -> SessionRecord:
        session = await self.storage.get_session(session_id)
        if session.status not in ("recording", "paused", "starting"):
            raise NotRecordingError(
                f"session {session_id} is {session.status}: cannot stop it",
                details={"status": session.status},
            )
        await self.recorder.stop(session_id)
        return await self.storage.get_session(session_id)

    async def pause_session(self, session_id: str) -> SessionRecord:
        record = await self._transition(session_id, "paused")
        await self.recorder.pause(session_id)
        return record

    async def resume_session(self, session_id: str) -> SessionRecord:
        session = await self.storage.get_session(session_id)
        if session.status != "paused":
            raise NotRecordingError(f"session {session_id} is {session.status}: not paused")
        await self.recorder.resume(session_id)
        return await self._transition(session_id, "recording")

    async def update_session(self, session_id: str, changes: Mapping[str, Any]) -> SessionRecord:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidConfigError(
                f"cannot change {', '.join(sorted(unknown))}", details={"fields": sorted(unknown)}
            )
        session = await self.storage.get_session(session_id)
        if session.status in ("completed", "interrupted", "failed"):
            raise PipelineError(
                f"session {session_id} is {session.status}: its manifest is final, "
                "so its name, labels and metadata no longer change",
                details={"status": session.status},
            )
        values = dict(changes)
        if "metadata" in values:
            values = {k: v for k, v in values.items() if k != "metadata"}
            values["config"] = {**session.config, "metadata": changes["metadata"]}
        return await self.storage.update_session(session_id, values)

    async def delete_session(self, session_id: str) -> None:
        session = await self.storage.get_session(session_id)
        if session.status in OPEN_STATES:
            raise PipelineError(
                f"session {session_id} is {session.status}: stop it before deleting it"
            )
        check_not_held(session)  # legal hold: never deleted until lifted (storage checks too)
        if self.trail is not None:
            await self._tombstone(session)
        await self.storage.delete_session(session_id)

    async def _tombstone(self, session: SessionRecord) -> None:
        """A finalised session deleted by hand (API, CLI) gets a signed tombstone in the
        session log first, as gc gives an expired one, so the deletion is provable; the
        audit log names who deleted it. A session never finalised has no leaf to explain."""
        assert self.trail is not None
        try:
            record = await self.storage.get_manifest(session.session_id)
        except NotFoundError:
            return
        await asyncio.to_thread(
            self.trail.session_log.append_tombstone,
            session.session_id,
            manifest_sha256(record.manifest),
            session.root or "",
            reason="deleted by hand",
            policy="manual deletion (the audit log names who)",
        )

    async def submit_chunk(self, session_id: str, raw: RawChunk) -> None:
        live = self._live.get(session_id)
        if live is None:
            raise NotRecordingError(f"session {session_id} is not recording here")
        if raw.sequence in live.seen:
            self.counters["duplicate"] += 1
            return
        live.seen.add(raw.sequence)
        live.pending += 1
        live.idle.clear()
        await self._queue.put((session_id, raw))

    async def recording_ended(self, end: RecordingEnd) -> None:
        if end.session_id in self._ended:
            return
        self._ended.add(end.session_id)
        session = await self.storage.get_session(end.session_id)
        if session.status in ("recording", "paused", "starting"):
            await self._transition(end.session_id, "stopped", {"stats": dict(end.stats)})
        task = asyncio.create_task(self._finish(end))
        self._finalising.add(task)
        task.add_done_callback(self._finalising.discard)

    async def pipeline_status(self) -> Mapping[str, Any]:
        status: dict[str, Any] = {
            "state": "running" if self._running.is_set() else "paused",
            "queue_depth": self._queue.qsize(),
            "queue_capacity": self._queue.maxsize,
            "workers": len(self._workers),
            "active_sessions": sorted(self._live),
            "chunks": dict(self.counters),
            "anchoring": {
                "backend": self.anchor_jobs.chain,
                "running": len(self.anchor_jobs.running),
                **self.anchor_jobs.counters,
            },
        }
        if self._coordinator is not None:
            status["coordination"] = {
                "backend": "redis",
                "outstanding": self._coordinator.outstanding,
                **self._coordinator.counters,
                "processors": await self._coordinator.stats(),
            }
        return status

    async def pause_pipeline(self) -> None:
        self._running.clear()

    async def resume_pipeline(self) -> None:
        self._running.set()

    # chunk flow

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self._backoff_s
        for attempt in range(self._retries + 1):
            try:
                return await call()
            except Unavailable:
                if attempt == self._retries:
                    raise
                self.counters["retried"] += 1
                log.warning("retrying %s in %.1f s (attempt %d)", what, delay, attempt + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def _work(self) -> None:
        while True:
            session_id, raw = await self._queue.get()
            try:
                await self._running.wait()
                await self._handle(session_id, raw)
            finally:
                self._queue.task_done()

    async def _handle(self, session_id: str, raw: RawChunk) -> None:
        if self._coordinator is not None:
            await self._stage(session_id, raw)
            return
        live = self._live.get(session_id)
        if live is None:
            return
        if live.disk_failed:
            log.warning(
                "chunk dropped after a disk error",
                extra={"session_id": session_id, "sequence": raw.sequence},
            )
            self._chunk_settled(live)
            return
        started = time.monotonic()
        try:
            level = live.level.level
            processor = self.processor
            if processor is None:
                raise PipelineError("the pipeline has no processor (and no coordinator)")
            processed = await self._retry(
                f"processing chunk {raw.sequence} of {session_id}",
                lambda: processor.process(
                    raw,
                    session_id=session_id,
                    wrapped_key=live.wrapped,
                    level=level,
                    hash_algorithm=live.hash_algorithm,
                ),
            )
            await self._retry(
                f"storing chunk {raw.sequence} of {session_id}",
                lambda: self.storage.store_chunk(processed.record(), processed.stored),
            )
            elapsed = time.monotonic() - started
            live.level.observe(
                elapsed,
                (raw.end_us - raw.start_us) / 1e6,
                backlog_full=self._queue.full(),
            )
            self.counters["processed"] += 1
            if self.trail is not None:
                self.trail.stored(session_id)
            if self._on_chunk is not None:
                self._on_chunk("processed", elapsed)
            live.stored_bytes += len(processed.stored)
            await self._check_limits(session_id, live)
        except LucidError as exc:
            disk = _disk_errno(exc)
            if disk is not None:
                self._disk_failed(session_id, live, raw.sequence, disk, exc.message)
            live.failed += 1
            self.counters["failed"] += 1
            if self._on_chunk is not None:
                self._on_chunk("failed", time.monotonic() - started)
            log.error(
                "chunk failed",
                extra={"session_id": session_id, "sequence": raw.sequence, "error": exc.message},
            )
        finally:
            live.pending -= 1
            if live.pending == 0:
                live.idle.set()

    def _halt(self, session_id: str, live: _Live, reason: str) -> None:
        """Stop a live recording from inside the pipeline (in a task: the recorder's stop
        waits for its last chunk, which may need this worker's queue)."""
        if live.stop_reason is not None:
            return
        live.stop_reason = reason
        log.warning("stopping the recording of %s: %s", session_id, reason)

        async def stop() -> None:
            try:
                await self.recorder.stop(session_id)
            except LucidError as exc:
                log.warning("could not stop the recording of %s: %s", session_id, exc.message)

        task = asyncio.create_task(stop(), name=f"pipeline-halt-{session_id}")
        self._finalising.add(task)
        task.add_done_callback(self._finalising.discard)

    async def _check_limits(self, session_id: str, live: _Live) -> None:
        """After a stored chunk: the session's size limit, then the free-space reserve."""
        if live.max_bytes is not None and live.stored_bytes >= live.max_bytes:
            self._halt(
                session_id,
                live,
                f"stopped by its size limit (max_size_gb={live.max_size_gb:g}): "
                f"{live.stored_bytes} bytes stored",
            )
        if self.storage_reserve_bytes <= 0:
            return
        free = await self._free_bytes()
        if free is None or free >= self.storage_reserve_bytes:
            return
        reason = (
            f"storage below its free-space reserve ({free} bytes free, "
            f"reserve {self.storage_reserve_bytes} bytes)"
        )
        for other, other_live in list(self._live.items()):
            self._halt(other, other_live, reason)

    def _disk_failed(
        self, session_id: str, live: _Live, sequence: int, name: str, message: str
    ) -> None:
        self.counters["write_errors"] += 1
        if self._on_storage_error is not None:
            self._on_storage_error(name)
        log.error(
            "chunk %d of %s not stored: disk error %s: %s",
            sequence,
            session_id,
            name,
            message,
            extra={"session_id": session_id, "sequence": sequence, "errno": name},
        )
        live.disk_failed = True
        self._halt(
            session_id,
            live,
            f"disk error {name} while writing chunk {sequence} ({message}); "
            "the session holds every chunk stored before it",
        )

    def _chunk_failed(self, session_id: str, live: _Live, sequence: int, message: str) -> None:
        live.failed += 1
        self.counters["failed"] += 1
        log.error(
            "chunk failed",
            extra={"session_id": session_id, "sequence": sequence, "error": message},
        )

    def _chunk_settled(self, live: _Live) -> None:
        live.pending -= 1
        if live.pending == 0:
            live.idle.set()

    async def _stage(self, session_id: str, raw: RawChunk) -> None:
        """Coordinated flow: seal, stage in storage, publish; done in :meth:`_chunk_done`."""
        live = self._live.get(session_id)
        if live is None:
            return
        await self._in_flight.acquire()
        started = time.monotonic()
        try:
            blob = await asyncio.to_thread(seal_staged, raw, live.key, session_id)
            await self._retry(
                f"staging chunk {raw.sequence} of {session_id}",
                lambda: self.storage.stage_chunk(session_id, raw.sequence, blob),
            )
        except LucidError as exc:
            self._in_flight.release()
            self._chunk_failed(session_id, live, raw.sequence, exc.message)
            if self._on_chunk is not None:
                self._on_chunk("failed", time.monotonic() - started)
            self._chunk_settled(live)
            return
        except BaseException:
            self._in_flight.release()
            raise
        assert self._coordinator is not None
        self._published_at[(session_id, raw.sequence)] = started
        await self._coordinator.publish(
            session_id,
            raw.sequence,
            level=live.level.level,
            hash_algorithm=live.hash_algorithm,
            wrapped_key=live.wrapped,
        )

    def _chunk_done(self, session_id: str, sequence: int, ok: bool, error: str | None) -> None:
        """The coordinator's report that a published chunk is stored (or given up)."""
        self._in_flight.release()
        started = self._published_at.pop((session_id, sequence), None)
        elapsed = 0.0 if started is None else time.monotonic() - started
        live = self._live.get(session_id)
        if live is None:
            return
        if ok:
            self.counters["processed"] += 1
            if self.trail is not None:
                self.trail.stored(session_id)
        else:
            self._chunk_failed(session_id, live, sequence, error or "processing failed")
        if self._on_chunk is not None:
            self._on_chunk("processed" if ok else "failed", elapsed)
        self._chunk_settled(live)

    async def _finish(self, end: RecordingEnd) -> None:
        live = self._live.get(end.session_id)
        if live is not None:
            await live.idle.wait()
        reason = end.reason
        if live is not None and live.stop_reason is not None:
            reason = live.stop_reason
        elif live is not None and live.failed:
            reason = reason or f"{live.failed} chunks could not be stored"
        status = "interrupted" if end.interrupted or reason else "completed"
        try:
            await self._close(end.session_id, status, reason)
        except LucidError as exc:
            log.error("finalising %s failed: %s", end.session_id, exc.message)
            with contextlib.suppress(LucidError):
                await self.storage.update_session(
                    end.session_id, {"status": "failed", "status_reason": exc.message}
                )
        finally:
            self._live.pop(end.session_id, None)
            self._ended.discard(end.session_id)
            if self._coordinator is not None:
                for sequence in self._coordinator.forget(end.session_id):
                    self._in_flight.release()
                    self._published_at.pop((end.session_id, sequence), None)

    async def _close(self, session_id: str, status: str, reason: str | None) -> None:
        session = await self.storage.get_session(session_id)
        if session.status in ("starting", "recording", "paused"):
            await self.storage.update_session(session_id, {"status": "stopped"})
        if session.status != "processing":
            await self.storage.update_session(session_id, {"status": "processing"})
        manifest = await finalize_session(
            self.storage, self._signer, session_id, status=status, reason=reason
        )
        if self._coordinator is not None:
            await self._drop_staged(session_id)
        if self.trail is not None:  # checkpoints checked, the session log appended
            await self.trail.finalised(session_id, manifest)
        await self.anchor_jobs.submit(session_id, manifest.root)

    async def _drop_staged(self, session_id: str) -> None:
        """Remove what is still staged for a finalised session (chunks that failed, or
        that a previous process staged and never saw stored)."""
        try:
            for sequence in await self.storage.staged_sequences(session_id):
                await self.storage.drop_staged_chunk(session_id, sequence)
        except LucidError as exc:
            log.warning("could not clear the staged chunks of %s: %s", session_id, exc.message)

    async def wait_idle(self, session_id: str, timeout: float = 30.0) -> None:
        """Wait until the session's finalisation is done and its anchoring job recorded
        (pending or further; :meth:`AnchorJobs.wait` waits for the anchor itself)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            session = await self.storage.get_session(session_id)
            if session.status == "failed" or (
                session.status in ("completed", "interrupted") and "anchor" in session.config
            ):
                return
            await asyncio.sleep(0.05)
        raise PipelineError(f"session {session_id} did not finish within {timeout} s")
