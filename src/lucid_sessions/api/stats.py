"""Statistics computed from the metadata store, for the statistics routes and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lucid_sessions.audit import GENESIS
from lucid_sessions.cluster.interfaces import Pipeline, Recorder, Storage
from lucid_sessions.errors import LucidError
from lucid_sessions.observability import SESSION_STATUSES, Metrics

__all__ = [
    "SessionStatistics",
    "SystemStatistics",
    "check_audit_chain",
    "master_key_rotated_at",
    "refresh_metrics",
    "session_statistics",
    "system_statistics",
]

_PAGE = 1000
LIVE = ("starting", "recording", "paused")


class RecorderFigures(BaseModel):
    state: str
    captured: int
    dropped: int
    unchanged: int
    effective_fps: float
    chunks: int


class SessionStatistics(BaseModel):
    session_id: str
    status: str
    duration_s: float
    """From the first chunk's first frame to the last chunk's end."""
    chunk_count: int
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    dropped_count: int
    raw_bytes: int
    stored_bytes: int
    compression_ratio: float | None
    average_fps: float | None
    average_chunk_bytes: float | None
    recorder: RecorderFigures | None
    """Live figures while the recorder has the session, else None."""


class StorageFigures(BaseModel):
    ok: bool
    free_bytes: int
    total_bytes: int
    metadata: str


class SystemStatistics(BaseModel):
    sessions_total: int
    sessions_by_status: dict[str, int]
    chunks: int
    raw_bytes: int
    stored_bytes: int
    storage: StorageFigures


async def session_statistics(
    storage: Storage, recorder: Recorder | None, session_id: str
) -> SessionStatistics:
    record = await storage.get_session(session_id)
    chunks = await storage.list_chunks(session_id)
    duration_us = chunks[-1].end_us - chunks[0].start_us if chunks else 0
    frames = sum(c.frame_count for c in chunks)
    raw = sum(c.raw_bytes for c in chunks)
    stored = sum(c.stored_size for c in chunks)
    live: RecorderFigures | None = None
    if recorder is not None and record.status in LIVE:
        with contextlib.suppress(LucidError, asyncio.TimeoutError):
            status = await asyncio.wait_for(recorder.status(session_id), 2.0)
            live = RecorderFigures(
                state=status.state,
                captured=status.captured,
                dropped=status.dropped,
                unchanged=status.unchanged,
                effective_fps=status.effective_fps,
                chunks=status.chunks,
            )
    return SessionStatistics(
        session_id=session_id,
        status=record.status,
        duration_s=duration_us / 1e6,
        chunk_count=len(chunks),
        frame_count=frames,
        keyframe_count=sum(c.keyframe_count for c in chunks),
        unchanged_count=sum(c.unchanged_count for c in chunks),
        dropped_count=sum(c.dropped_count for c in chunks),
        raw_bytes=raw,
        stored_bytes=stored,
        compression_ratio=raw / stored if stored else None,
        average_fps=frames / (duration_us / 1e6) if duration_us > 0 else None,
        average_chunk_bytes=stored / len(chunks) if chunks else None,
        recorder=live,
    )


async def _store_totals(storage: Storage) -> tuple[Counter[str], int, int, int, list[str]]:
    """Sessions by status, chunks, raw and stored bytes, ids of live sessions.

    Pages through every session record: O(sessions), fine for the embedded store's scale.
    """
    by_status: Counter[str] = Counter()
    chunks = raw = stored = 0
    live: list[str] = []
    offset = 0
    while True:
        page = await storage.list_sessions(limit=_PAGE, offset=offset)
        for record in page.items:
            by_status[record.status] += 1
            chunks += record.chunk_count
            raw += record.raw_bytes
            stored += record.stored_bytes
            if record.status in LIVE:
                live.append(record.session_id)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return by_status, chunks, raw, stored, live


async def system_statistics(storage: Storage) -> SystemStatistics:
    by_status, chunks, raw, stored, _ = await _store_totals(storage)
    health = await storage.health()
    counts: dict[str, Any] = {status: by_status.get(status, 0) for status in SESSION_STATUSES}
    counts.update(by_status)
    return SystemStatistics(
        sessions_total=sum(by_status.values()),
        sessions_by_status=counts,
        chunks=chunks,
        raw_bytes=raw,
        stored_bytes=stored,
        storage=StorageFigures(
            ok=health.ok,
            free_bytes=health.free_bytes,
            total_bytes=health.total_bytes,
            metadata=health.metadata,
        ),
    )


async def check_audit_chain(metrics: Metrics, storage: Storage, *, max_pages: int = 20) -> None:
    """Check the audit entries appended since the last call: each must hash to its stored
    hash and link to the one before it, and the last entry checked must still be there
    unchanged. O(new entries), at most ``max_pages`` pages per call; a break stays
    reported until the process restarts (``audit verify`` names it)."""
    cursor = metrics.audit_cursor
    ok = metrics.audit_ok
    seq, prev = cursor if cursor is not None else (0, GENESIS)
    entries = metrics.audit_entries
    if ok and cursor is not None:
        page = await storage.list_audit(after_seq=seq - 1, limit=1)
        ok = bool(page.items) and page.items[0].seq == seq and page.items[0].hash == prev
    for _ in range(max_pages):
        if not ok:
            break
        page = await storage.list_audit(after_seq=seq, limit=_PAGE)
        for entry in page.items:
            if entry.prev != prev or entry.computed_hash() != entry.hash:
                ok = False
                break
            seq, prev = entry.seq, entry.hash
            entries += 1
        if page.next_after is None:
            break
    if ok:
        metrics.audit_cursor = (seq, prev) if entries else None
    metrics.observe_audit_chain(ok=ok, entries=entries)


def master_key_rotated_at(data_dir: Path | None) -> float:
    """Modification time of ``keys/master.key`` (written when created or rotated), else 0."""
    if data_dir is None:
        return 0.0
    try:
        return (data_dir / "keys" / "master.key").stat().st_mtime
    except OSError:
        return 0.0


async def refresh_metrics(
    metrics: Metrics,
    storage: Storage,
    recorder: Recorder | None,
    *,
    pipeline: Pipeline | None = None,
    data_dir: Path | None = None,
) -> None:
    """Set the snapshot gauges from the store, the disk, the audit log, the pipeline, the
    master key file and the recorder."""
    by_status, chunks, raw, stored, live = await _store_totals(storage)
    metrics.observe_store(
        sessions_by_status=by_status, chunks=chunks, raw_bytes=raw, stored_bytes=stored
    )
    health = await storage.health()
    metrics.observe_disk(free_bytes=health.free_bytes, total_bytes=health.total_bytes)
    metrics.observe_master_key(master_key_rotated_at(data_dir))
    await check_audit_chain(metrics, storage)
    if pipeline is not None:
        with contextlib.suppress(LucidError, asyncio.TimeoutError):
            metrics.observe_pipeline(await asyncio.wait_for(pipeline.pipeline_status(), 2.0))
    if recorder is None:
        return
    seen: set[str] = set()
    for session_id in live:
        with contextlib.suppress(LucidError, asyncio.TimeoutError):
            status = await asyncio.wait_for(recorder.status(session_id), 1.0)
            metrics.observe_recorder(session_id, fps=status.effective_fps, dropped=status.dropped)
            seen.add(session_id)
    for session_id in metrics.recorder_sessions() - seen:
        metrics.forget_recorder(session_id)
