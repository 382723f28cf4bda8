"""The storage component: a data directory behind the :class:`Storage` interface.

It also signs the audit log's head (:mod:`lucid_sessions.audit`), because it is the one
component that both holds the log and can read the cluster key: after every
``audit_sign_every`` appended entries (inline, in the append that reaches the count), at
most ``audit_sign_interval_s`` seconds after an entry that no head covers yet (a timer on
the event loop, armed by that append), and at :meth:`StorageService.shutdown`. A failed
signing is logged and retried at the next occasion; it never fails the append.

It also collects garbage (:mod:`lucid_sessions.archive.retention`): expired sessions are
tombstoned in the session log, their data keys destroyed and their chunks deleted, and
orphaned files removed; on demand (:meth:`StorageService.collect_garbage`, ``lucid-sessions
gc``) and every ``gc_interval_s`` seconds once :meth:`StorageService.start_gc` was called
(the cluster does). A session under legal hold is never deleted, by gc or by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lucid_sessions.archive import retention
from lucid_sessions.audit import AuditEntry, AuditEvent, AuditHead, sign_head
from lucid_sessions.cluster.interfaces import StorageHealth
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import (
    AlreadyExistsError,
    ChunkNotFoundError,
    LucidError,
    StorageError,
)
from lucid_sessions.storage.chunk_store import check_id, check_sequence, write_atomic
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import (
    AuditPage,
    ChunkRecord,
    ManifestRecord,
    MetadataStore,
    RevokedToken,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
)

__all__ = ["StorageService"]

log = logging.getLogger(__name__)

DEFAULT_SIGN_EVERY = 100
DEFAULT_SIGN_INTERVAL_S = 60.0
DEFAULT_GC_INTERVAL_S = 3600
_TAIL_PAGE = 500
STAGING_DIR = "staging"
"""Raw chunks waiting for a processor (Redis coordination): ``staging/<session>/<seq>.raw``,
sealed by the pipeline under the session's data key."""
_STAGED_SUFFIX = ".raw"
_STAGED_NAME = re.compile(r"^([0-9]{8,})\.raw\Z")


class StorageService:
    """Chunk files in a data directory and metadata in a :class:`MetadataStore`.

    The metadata store is the data directory's SQLite store unless another one (MongoDB)
    is given. ``audit_signer`` signs audit heads (default: the data directory's cluster
    key, loaded when first needed); ``audit_sign_every`` <= 0 or
    ``audit_sign_interval_s`` <= 0 turns that trigger off.
    """

    def __init__(
        self,
        datadir: DataDir,
        metadata: MetadataStore | None = None,
        *,
        audit_signer: ClusterKey | None = None,
        audit_sign_every: int = DEFAULT_SIGN_EVERY,
        audit_sign_interval_s: float = DEFAULT_SIGN_INTERVAL_S,
        retention_days: int = 0,
        gc_interval_s: float = DEFAULT_GC_INTERVAL_S,
    ) -> None:
        self.datadir = datadir
        self.metadata: MetadataStore = metadata or datadir.store
        self.metadata_kind: str = getattr(self.metadata, "kind", "sqlite")
        self._signer = audit_signer
        self.audit_sign_every = audit_sign_every
        self.audit_sign_interval_s = audit_sign_interval_s
        self._unsigned = 0
        self._sign_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tasks: set[asyncio.Task[Any]] = set()
        self._chunk_locks: dict[tuple[str, int], tuple[asyncio.Lock, int]] = {}
        self.duplicates = 0
        self.retention_days = retention_days
        """Default retention of finished sessions without their own (0: keep forever)."""
        self.gc_interval_s = gc_interval_s
        self._gc_lock = asyncio.Lock()
        self._gc_task: asyncio.Task[None] | None = None
        """Stores of a chunk that was already stored (kept as first written)."""

    # metadata, delegated

    async def create_session(self, record: SessionRecord) -> None:
        await self.metadata.create_session(record)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.metadata.get_session(session_id)

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage:
        return await self.metadata.list_sessions(
            status=status, project=project, environment=environment, limit=limit, offset=offset
        )

    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        return await self.metadata.update_session(session_id, changes, if_status=if_status)

    async def delete_session(self, session_id: str) -> None:
        """Delete a session by hand; refused (LegalHoldError, 409) while it is held."""
        retention.check_not_held(await self.metadata.get_session(session_id))
        await asyncio.to_thread(self.datadir.chunks.delete_session, session_id)
        await asyncio.to_thread(self._drop_staging, session_id)
        await self.metadata.delete_session(session_id)

    async def put_chunk(self, record: ChunkRecord) -> None:
        await self.metadata.put_chunk(record)

    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord:
        return await self.metadata.get_chunk(session_id, sequence)

    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        return await self.metadata.list_chunks(
            session_id, start_us=start_us, end_us=end_us, limit=limit, offset=offset
        )

    async def put_wrapped_key(self, record: WrappedKeyRecord) -> None:
        await self.metadata.put_wrapped_key(record)

    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord:
        return await self.metadata.get_wrapped_key(key_id)

    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]:
        return await self.metadata.list_wrapped_keys()

    async def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None:
        await self.metadata.replace_wrapped_keys(records)

    async def put_manifest(self, record: ManifestRecord) -> None:
        await self.metadata.put_manifest(record)

    async def get_manifest(self, session_id: str) -> ManifestRecord:
        return await self.metadata.get_manifest(session_id)

    async def append_audit(self, event: AuditEvent) -> AuditEntry:
        entry = await self.metadata.append_audit(event)
        self._unsigned += 1
        if 0 < self.audit_sign_every <= self._unsigned:
            await self._sign_quietly()
        else:
            self._arm_timer()
        return entry

    async def list_audit(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        return await self.metadata.list_audit(
            subject=subject,
            action=action,
            target=target,
            outcome=outcome,
            since=since,
            until=until,
            after_seq=after_seq,
            limit=limit,
        )

    async def put_audit_head(self, head: AuditHead) -> None:
        await self.metadata.put_audit_head(head)

    async def list_audit_heads(self) -> list[AuditHead]:
        return await self.metadata.list_audit_heads()

    async def latest_audit_head(self) -> AuditHead | None:
        return await self.metadata.latest_audit_head()

    async def revoke_token(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        await self.metadata.revoke_token(jti, expires_at=expires_at, subject=subject, reason=reason)

    async def is_token_revoked(self, jti: str) -> bool:
        return await self.metadata.is_token_revoked(jti)

    async def list_revoked_tokens(self) -> list[RevokedToken]:
        return await self.metadata.list_revoked_tokens()

    async def purge_revoked(self, before: int) -> int:
        return await self.metadata.purge_revoked(before)

    async def close(self) -> None:
        """Sign the audit head (see :meth:`shutdown`), then close the metadata store."""
        await self.shutdown()
        await self.metadata.close()

    # audit heads

    async def sign_audit_head(self) -> AuditHead | None:
        """Sign and store a head over the log's last entry, unless the latest head already
        covers it; returns the new head (None when there was nothing to sign)."""
        async with self._sign_lock:
            self._disarm_timer()
            latest = await self.metadata.latest_audit_head()
            last = await self._last_entry(0 if latest is None else latest.seq)
            if last is None or (latest is not None and latest.hash == last.hash):
                self._unsigned = 0
                return None
            if self._signer is None:
                self._signer = await asyncio.to_thread(self.datadir.cluster_key)
            head = sign_head(self._signer, last)
            await self.metadata.put_audit_head(head)
            self._unsigned = 0
            log.info("audit head signed seq=%d", head.seq)
            return head

    async def shutdown(self) -> None:
        """Stop the gc schedule and the signing timer and sign the head over the last
        entry. Leaves the metadata store open (the data directory owns the SQLite one)."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
        self._disarm_timer()
        for task in list(self._timer_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sign_quietly()

    async def _last_entry(self, after_seq: int) -> AuditEntry | None:
        """The entry with the highest seq (scanning from ``after_seq``: the latest head's,
        so normally fewer than ``audit_sign_every`` entries)."""
        last: AuditEntry | None = None
        while True:
            page = await self.metadata.list_audit(after_seq=after_seq, limit=_TAIL_PAGE)
            if page.items:
                last = page.items[-1]
            if page.next_after is None:
                return last
            after_seq = page.next_after

    async def _sign_quietly(self) -> None:
        try:
            await self.sign_audit_head()
        except (LucidError, OSError) as exc:
            self._unsigned = 0  # try again after the next batch, not on every append
            log.error("audit head signing failed: %s", exc)

    def _arm_timer(self) -> None:
        if self._timer is not None or self.audit_sign_interval_s <= 0:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.audit_sign_interval_s, self._on_timer)

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._sign_quietly())
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)

    # retention and garbage collection

    async def signer(self) -> ClusterKey:
        """The cluster key (audit heads, session log heads), loaded when first needed."""
        if self._signer is None:
            self._signer = await asyncio.to_thread(self.datadir.cluster_key)
        return self._signer

    async def collect_garbage(
        self,
        *,
        dry_run: bool = False,
        now: retention.Clock | None = None,
        orphan_grace_s: float = retention.DEFAULT_ORPHAN_GRACE_S,
    ) -> retention.GcReport:
        """One garbage collection (see :mod:`lucid_sessions.archive.retention`); runs are
        serialised in this process."""
        async with self._gc_lock:
            return await retention.collect_garbage(
                self,
                default_days=self.retention_days,
                dry_run=dry_run,
                now=now,
                orphan_grace_s=orphan_grace_s,
            )

    def start_gc(self) -> None:
        """Collect garbage every ``gc_interval_s`` seconds (first after one interval) until
        :meth:`shutdown`; nothing when the interval is 0."""
        if self.gc_interval_s > 0 and self._gc_task is None:
            self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop())

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.gc_interval_s)
            try:
                await self.collect_garbage()
            except (LucidError, OSError) as exc:
                log.error("scheduled garbage collection failed: %s", exc)

    # chunk bytes

    async def store_chunk(self, record: ChunkRecord, data: bytes) -> None:
        """Store a chunk's file, then its record; first writer wins.

        - The same record and bytes again: a no-op. The same record (same leaf hash) with
          other bytes: refused (:class:`AlreadyExistsError`), the bytes do not match it.
        - A record with another leaf hash for a (session, sequence) already recorded:
          a chunk processed twice (a processor that died after storing, a redelivered
          stream entry; nonces are random, so the bytes and hash differ). The first copy
          is kept, file and record untouched, and the call returns normally, so the
          chunk appears once in the tree.
        - A file without a record (a crash between the two writes) is referenced by
          nothing yet: it is replaced by the new bytes and the record written.

        Stores of one chunk are serialised in this process, so file and record match.
        """
        await self.metadata.get_session(record.session_id)
        key = (record.session_id, record.sequence)
        lock, users = self._chunk_locks.get(key, (asyncio.Lock(), 0))
        self._chunk_locks[key] = (lock, users + 1)
        try:
            async with lock:
                try:
                    first = await self.metadata.get_chunk(record.session_id, record.sequence)
                except ChunkNotFoundError:
                    first = None
                if first is None:
                    await asyncio.to_thread(
                        self._put_file, record.session_id, record.sequence, data
                    )
                    try:
                        await self.metadata.put_chunk(record)
                    except BaseException as exc:
                        if isinstance(exc, AlreadyExistsError):
                            raise
                        # No record, so no file either (a full disk may fail the record
                        # after the file): the chunk is simply not stored.
                        with contextlib.suppress(OSError, LucidError):
                            path = self.datadir.chunks.path(record.session_id, record.sequence)
                            await asyncio.to_thread(path.unlink, missing_ok=True)
                        raise
                elif first.leaf_hash == record.leaf_hash:
                    await asyncio.to_thread(
                        self.datadir.chunks.put, record.session_id, record.sequence, data
                    )
                else:
                    self.duplicates += 1
                    log.info(
                        "chunk %d of %s is already stored: keeping the first copy",
                        record.sequence,
                        record.session_id,
                    )
        finally:
            lock, users = self._chunk_locks[key]
            if users <= 1:
                del self._chunk_locks[key]
            else:
                self._chunk_locks[key] = (lock, users - 1)

    def _put_file(self, session_id: str, sequence: int, data: bytes) -> None:
        chunks = self.datadir.chunks
        try:
            chunks.put(session_id, sequence, data)
        except AlreadyExistsError:
            # A file no record refers to (see store_chunk): replace it atomically.
            try:
                write_atomic(chunks.path(session_id, sequence), data)
            except OSError as exc:
                raise StorageError(
                    f"cannot write chunk {sequence} of session {session_id}: {exc.strerror}"
                ) from exc

    # staged raw chunks (pipeline coordination through Redis)

    def _staged_path(self, session_id: str, sequence: int) -> Path:
        return (
            self.datadir.path
            / STAGING_DIR
            / check_id(session_id)
            / f"{check_sequence(sequence):08d}{_STAGED_SUFFIX}"
        )

    async def stage_chunk(self, session_id: str, sequence: int, data: bytes) -> None:
        await self.metadata.get_session(session_id)
        path = self._staged_path(session_id, sequence)

        def write() -> None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data, mode=0o600)
            except OSError as exc:
                raise StorageError(
                    f"cannot stage chunk {sequence} of session {session_id}: {exc.strerror}"
                ) from exc

        await asyncio.to_thread(write)

    async def read_staged_chunk(self, session_id: str, sequence: int) -> bytes:
        path = self._staged_path(session_id, sequence)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ChunkNotFoundError(
                    f"chunk {sequence} of session {session_id} is not staged"
                ) from None
            except OSError as exc:
                raise StorageError(f"cannot read staged chunk {sequence}: {exc.strerror}") from exc

        return await asyncio.to_thread(read)

    async def drop_staged_chunk(self, session_id: str, sequence: int) -> None:
        path = self._staged_path(session_id, sequence)

        def drop() -> None:
            try:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # only when it is empty
            except OSError as exc:
                raise StorageError(f"cannot drop staged chunk {sequence}: {exc.strerror}") from exc

        await asyncio.to_thread(drop)

    async def staged_sequences(self, session_id: str) -> list[int]:
        folder = self.datadir.path / STAGING_DIR / check_id(session_id)

        def scan() -> list[int]:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                return []
            found = (_STAGED_NAME.match(name) for name in names)
            return sorted(int(m.group(1)) for m in found if m)

        return await asyncio.to_thread(scan)

    def _drop_staging(self, session_id: str) -> None:
        shutil.rmtree(self.datadir.path / STAGING_DIR / check_id(session_id), ignore_errors=True)

    async def read_chunk(self, session_id: str, sequence: int) -> bytes:
        return await asyncio.to_thread(self.datadir.chunks.get, session_id, sequence)

    async def chunk_sequences(self, session_id: str) -> list[int]:
        return await asyncio.to_thread(self.datadir.chunks.sequences, session_id)

    async def health(self) -> StorageHealth:
        try:
            # The chunk store's disk (its folder may be a mount of its own).
            root = self.datadir.chunks.root
            usage = shutil.disk_usage(root if root.is_dir() else self.datadir.path)
            await self.metadata.list_sessions(limit=1)
        except (OSError, LucidError) as exc:
            return StorageHealth(False, 0, 0, self.metadata_kind, str(exc))
        return StorageHealth(True, usage.free, usage.total, self.metadata_kind)
