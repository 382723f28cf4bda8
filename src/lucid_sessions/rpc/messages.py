"""Dataclass <-> protobuf message conversions, one pair per record.

``to_*`` builds a message from a dataclass, ``from_*`` the dataclass from a message.
A round trip gives an equal dataclass: None-able fields use proto3 ``optional`` so None
and "" (or 0) stay apart, tuples come back as tuples, and free-form maps travel as JSON
text (:func:`dump_json` / :func:`load_json`) so ints stay ints and None stays None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lucid_sessions.archive.processor import ProcessedChunk
from lucid_sessions.audit import AuditEntry, AuditEvent, AuditHead
from lucid_sessions.cluster.interfaces import (
    CaptureSpec,
    RecorderStatus,
    RecordingEnd,
    StorageHealth,
)
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.rpc.protos import (
    pipeline_pb2,
    processor_pb2,
    recorder_pb2,
    records_pb2,
    storage_pb2,
)
from lucid_sessions.storage.metadata import (
    AuditPage,
    ChunkRecord,
    ManifestRecord,
    RevokedToken,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
)

__all__ = [
    "dump_json",
    "from_audit_entry",
    "from_audit_event",
    "from_audit_head",
    "from_audit_page",
    "from_revoked_token",
    "from_capture_spec",
    "from_chunk_record",
    "from_manifest",
    "from_processed",
    "from_raw_chunk",
    "from_recorder_status",
    "from_recording_end",
    "from_session",
    "from_session_page",
    "from_storage_health",
    "from_wrapped_key",
    "load_json",
    "optional",
    "to_audit_entry",
    "to_audit_event",
    "to_audit_head",
    "to_audit_page",
    "to_capture_spec",
    "to_chunk_record",
    "to_manifest",
    "to_processed",
    "to_raw_chunk",
    "to_recorder_status",
    "to_recording_end",
    "to_revoked_token",
    "to_session",
    "to_session_page",
    "to_storage_health",
    "to_wrapped_key",
]


def _plain(value: object) -> object:
    """JSON fallback: a mapping that is not a dict (a MappingProxyType) becomes one;
    anything else JSON cannot hold is a programming error (TypeError)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} cannot cross the wire as JSON")


def dump_json(value: Mapping[str, Any]) -> str:
    """A free-form map as JSON text; ints, floats, None, nested lists and maps survive."""
    return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":"))


def load_json(text: str) -> dict[str, Any]:
    """The map :func:`dump_json` wrote; "" (an unset field) is an empty map."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a JSON map was expected")
    return value


def optional(message: Any, name: str) -> Any:
    """The value of a proto3 ``optional`` field, or None when it is not set."""
    return getattr(message, name) if message.HasField(name) else None


# Sessions and their pages


_SESSION_OPTIONAL = (
    "started_at",
    "ended_at",
    "project",
    "environment",
    "key_id",
    "root",
    "status_reason",
)


def to_session(record: SessionRecord) -> records_pb2.SessionRecord:
    message = records_pb2.SessionRecord(
        session_id=record.session_id,
        name=record.name,
        status=record.status,
        created_at=record.created_at,
        updated_at=record.updated_at,
        tags=list(record.tags),
        config_json=dump_json(record.config),
        hash_algorithm=record.hash_algorithm,
        chunk_count=record.chunk_count,
        raw_bytes=record.raw_bytes,
        stored_bytes=record.stored_bytes,
        stats_json=dump_json(record.stats),
    )
    for name in _SESSION_OPTIONAL:
        value = getattr(record, name)
        if value is not None:
            setattr(message, name, value)
    return message


def from_session(message: records_pb2.SessionRecord) -> SessionRecord:
    return SessionRecord(
        session_id=message.session_id,
        name=message.name,
        status=message.status,
        created_at=message.created_at,
        updated_at=message.updated_at,
        tags=tuple(message.tags),
        config=load_json(message.config_json),
        hash_algorithm=message.hash_algorithm,
        chunk_count=message.chunk_count,
        raw_bytes=message.raw_bytes,
        stored_bytes=message.stored_bytes,
        stats=load_json(message.stats_json),
        **{name: optional(message, name) for name in _SESSION_OPTIONAL},
    )


def to_session_page(page: SessionPage) -> storage_pb2.SessionPage:
    return storage_pb2.SessionPage(
        items=[to_session(item) for item in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


def from_session_page(message: storage_pb2.SessionPage) -> SessionPage:
    return SessionPage(
        items=tuple(from_session(item) for item in message.items),
        total=message.total,
        limit=message.limit,
        offset=message.offset,
    )


# Chunks


_CHUNK_FIELDS = tuple(ChunkRecord.__dataclass_fields__)
_RAW_FIELDS = tuple(RawChunk.__dataclass_fields__)


def to_chunk_record(record: ChunkRecord) -> records_pb2.ChunkRecord:
    return records_pb2.ChunkRecord(**{name: getattr(record, name) for name in _CHUNK_FIELDS})


def from_chunk_record(message: records_pb2.ChunkRecord) -> ChunkRecord:
    return ChunkRecord(**{name: getattr(message, name) for name in _CHUNK_FIELDS})


def to_raw_chunk(raw: RawChunk) -> records_pb2.RawChunk:
    return records_pb2.RawChunk(**{name: getattr(raw, name) for name in _RAW_FIELDS})


def from_raw_chunk(message: records_pb2.RawChunk) -> RawChunk:
    return RawChunk(**{name: getattr(message, name) for name in _RAW_FIELDS})


def to_processed(chunk: ProcessedChunk) -> processor_pb2.ProcessResponse:
    return processor_pb2.ProcessResponse(
        stored=chunk.stored, leaf_hash=chunk.leaf_hash, level=chunk.level, seconds=chunk.seconds
    )


def from_processed(
    message: processor_pb2.ProcessResponse, *, session_id: str, raw: RawChunk
) -> ProcessedChunk:
    """The processed chunk, with the caller's own ``raw`` (the response omits it)."""
    return ProcessedChunk(
        session_id=session_id,
        raw=raw,
        stored=message.stored,
        leaf_hash=message.leaf_hash,
        level=message.level,
        seconds=message.seconds,
    )


# Keys and manifests


def to_wrapped_key(record: WrappedKeyRecord) -> storage_pb2.WrappedKeyRecord:
    return storage_pb2.WrappedKeyRecord(
        key_id=record.key_id,
        session_id=record.session_id,
        master_key_id=record.master_key_id,
        wrapped=record.wrapped,
        created_at=record.created_at,
    )


def from_wrapped_key(message: storage_pb2.WrappedKeyRecord) -> WrappedKeyRecord:
    return WrappedKeyRecord(
        key_id=message.key_id,
        session_id=message.session_id,
        master_key_id=message.master_key_id,
        wrapped=message.wrapped,
        created_at=message.created_at,
    )


def to_manifest(record: ManifestRecord) -> storage_pb2.ManifestRecord:
    return storage_pb2.ManifestRecord(
        session_id=record.session_id,
        manifest=record.manifest,
        signature=record.signature,
        public_key=record.public_key,
        created_at=record.created_at,
    )


def from_manifest(message: storage_pb2.ManifestRecord) -> ManifestRecord:
    return ManifestRecord(
        session_id=message.session_id,
        manifest=message.manifest,
        signature=message.signature,
        public_key=message.public_key,
        created_at=message.created_at,
    )


def to_storage_health(health: StorageHealth) -> storage_pb2.StorageHealth:
    return storage_pb2.StorageHealth(
        ok=health.ok,
        free_bytes=health.free_bytes,
        total_bytes=health.total_bytes,
        metadata=health.metadata,
        detail=health.detail,
    )


def from_storage_health(message: storage_pb2.StorageHealth) -> StorageHealth:
    return StorageHealth(
        ok=message.ok,
        free_bytes=message.free_bytes,
        total_bytes=message.total_bytes,
        metadata=message.metadata,
        detail=message.detail,
    )


# The audit log and revoked tokens

_EVENT_FIELDS = ("time", "subject", "role", "action", "target", "outcome", "request_id")


def to_audit_event(event: AuditEvent) -> storage_pb2.AuditEvent:
    return storage_pb2.AuditEvent(
        details_json=dump_json(event.details),
        **{name: getattr(event, name) for name in _EVENT_FIELDS},
    )


def from_audit_event(message: storage_pb2.AuditEvent) -> AuditEvent:
    """The event, validated (InvalidConfigError for a malformed one)."""
    return AuditEvent(
        details=load_json(message.details_json),
        **{name: getattr(message, name) for name in _EVENT_FIELDS},
    )


def to_audit_entry(entry: AuditEntry) -> storage_pb2.AuditEntry:
    return storage_pb2.AuditEntry(
        seq=entry.seq,
        details_json=dump_json(entry.details),
        prev=entry.prev,
        hash=entry.hash,
        **{name: getattr(entry, name) for name in _EVENT_FIELDS},
    )


def from_audit_entry(message: storage_pb2.AuditEntry) -> AuditEntry:
    return AuditEntry(
        seq=message.seq,
        details=load_json(message.details_json),
        prev=message.prev,
        hash=message.hash,
        **{name: getattr(message, name) for name in _EVENT_FIELDS},
    )


def to_audit_page(page: AuditPage) -> storage_pb2.AuditPage:
    message = storage_pb2.AuditPage(items=[to_audit_entry(e) for e in page.items])
    if page.next_after is not None:
        message.next_after = page.next_after
    return message


def from_audit_page(message: storage_pb2.AuditPage) -> AuditPage:
    return AuditPage(
        items=tuple(from_audit_entry(e) for e in message.items),
        next_after=optional(message, "next_after"),
    )


def to_audit_head(head: AuditHead) -> storage_pb2.AuditHead:
    return storage_pb2.AuditHead(
        seq=head.seq,
        hash=head.hash,
        time=head.time,
        signature=head.signature,
        public_key=head.public_key,
    )


def from_audit_head(message: storage_pb2.AuditHead) -> AuditHead:
    return AuditHead(
        seq=message.seq,
        hash=message.hash,
        time=message.time,
        signature=message.signature,
        public_key=message.public_key,
    )


def to_revoked_token(record: RevokedToken) -> storage_pb2.RevokedToken:
    return storage_pb2.RevokedToken(
        jti=record.jti,
        subject=record.subject,
        reason=record.reason,
        revoked_at=record.revoked_at,
        expires_at=record.expires_at,
    )


def from_revoked_token(message: storage_pb2.RevokedToken) -> RevokedToken:
    return RevokedToken(
        jti=message.jti,
        subject=message.subject,
        reason=message.reason,
        revoked_at=message.revoked_at,
        expires_at=message.expires_at,
    )


# Recorder


def to_capture_spec(spec: CaptureSpec) -> recorder_pb2.CaptureSpec:
    message = recorder_pb2.CaptureSpec(
        source=spec.source,
        fps=spec.fps,
        width=spec.width,
        height=spec.height,
        settings_json=dump_json(spec.settings),
        password=spec.password,
    )
    if spec.max_duration_us is not None:
        message.max_duration_us = spec.max_duration_us
    if spec.max_bytes is not None:
        message.max_bytes = spec.max_bytes
    return message


def from_capture_spec(message: recorder_pb2.CaptureSpec) -> CaptureSpec:
    return CaptureSpec(
        source=message.source,
        fps=message.fps,
        width=message.width,
        height=message.height,
        settings=load_json(message.settings_json),
        password=message.password,
        max_duration_us=optional(message, "max_duration_us"),
        max_bytes=optional(message, "max_bytes"),
    )


def to_recorder_status(status: RecorderStatus) -> recorder_pb2.RecorderStatus:
    return recorder_pb2.RecorderStatus(
        session_id=status.session_id,
        state=status.state,
        captured=status.captured,
        dropped=status.dropped,
        unchanged=status.unchanged,
        effective_fps=status.effective_fps,
        chunks=status.chunks,
    )


def from_recorder_status(message: recorder_pb2.RecorderStatus) -> RecorderStatus:
    return RecorderStatus(
        session_id=message.session_id,
        state=message.state,
        captured=message.captured,
        dropped=message.dropped,
        unchanged=message.unchanged,
        effective_fps=message.effective_fps,
        chunks=message.chunks,
    )


# Pipeline


def to_recording_end(end: RecordingEnd) -> pipeline_pb2.RecordingEnd:
    message = pipeline_pb2.RecordingEnd(
        session_id=end.session_id,
        interrupted=end.interrupted,
        last_sequence=end.last_sequence,
        stats_json=dump_json(end.stats),
    )
    if end.reason is not None:
        message.reason = end.reason
    return message


def from_recording_end(message: pipeline_pb2.RecordingEnd) -> RecordingEnd:
    return RecordingEnd(
        session_id=message.session_id,
        interrupted=message.interrupted,
        reason=optional(message, "reason"),
        last_sequence=message.last_sequence,
        stats=load_json(message.stats_json),
    )
