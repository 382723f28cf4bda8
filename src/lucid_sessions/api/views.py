"""Response bodies, built from the stored records.

A session answer never holds a secret: :func:`public_config` drops every key that names
a password, a sealed value or a secret, at any depth, from what the system stores about
a session before anything is returned. The user's own ``metadata`` comes back as given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from lucid_sessions.storage.metadata import ChunkRecord, SessionRecord

__all__ = [
    "ChunkOut",
    "ChunkPage",
    "SessionOut",
    "SessionPageOut",
    "chunk_out",
    "public_config",
    "session_out",
]

_SECRET = re.compile(r"password|sealed|secret|token|private", re.IGNORECASE)


def _is_secret(key: str) -> bool:
    return _SECRET.search(key) is not None


def public_config(value: Any) -> Any:
    """``value`` with every secret-named key removed, recursively."""
    if isinstance(value, Mapping):
        return {str(k): public_config(v) for k, v in value.items() if not _is_secret(str(k))}
    if isinstance(value, list | tuple):
        return [public_config(v) if isinstance(v, Mapping | list | tuple) else v for v in value]
    return value


class SessionOut(BaseModel):
    session_id: str
    name: str
    status: str
    status_reason: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    ended_at: str | None
    project: str | None
    environment: str | None
    tags: list[str]
    source: str | None
    rdp_config: dict[str, Any] | None
    x11_config: dict[str, Any] | None
    recording_config: dict[str, Any] | None
    storage_config: dict[str, Any] | None
    metadata: dict[str, Any]
    hash_algorithm: str
    key_id: str | None
    chunk_count: int
    raw_bytes: int
    stored_bytes: int
    root: str | None
    stats: dict[str, Any]
    anchor: dict[str, Any] | None = None
    """Anchoring state: pending, confirmed (chain, location, transaction, block) or
    failed (last_error); None until the session is finalised."""


def _section(config: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = config.get(key)
    return dict(value) if isinstance(value, Mapping) else None


def session_out(record: SessionRecord) -> SessionOut:
    # The user's own metadata is returned as given; everything the system stores is
    # filtered, so a sealed password or a connection secret can never come back.
    metadata = record.config.get("metadata")
    config = public_config({k: v for k, v in record.config.items() if k != "metadata"})
    if isinstance(metadata, Mapping):
        config["metadata"] = dict(metadata)
    source = config.get("source")
    return SessionOut(
        session_id=record.session_id,
        name=record.name,
        status=record.status,
        status_reason=record.status_reason,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        ended_at=record.ended_at,
        project=record.project,
        environment=record.environment,
        tags=list(record.tags),
        source=source if isinstance(source, str) else None,
        rdp_config=_section(config, "rdp_config"),
        x11_config=_section(config, "x11_config"),
        recording_config=_section(config, "recording_config"),
        storage_config=_section(config, "storage_config"),
        metadata=_section(config, "metadata") or {},
        hash_algorithm=record.hash_algorithm,
        key_id=record.key_id,
        chunk_count=record.chunk_count,
        raw_bytes=record.raw_bytes,
        stored_bytes=record.stored_bytes,
        root=record.root,
        stats=public_config(dict(record.stats)),
        anchor=_section(config, "anchor"),
    )


class SessionPageOut(BaseModel):
    items: list[SessionOut]
    total: int
    limit: int
    offset: int
    has_next: bool


class ChunkOut(BaseModel):
    session_id: str
    sequence: int
    status: str
    start_us: int
    end_us: int
    start_s: float
    """Seconds from the session's first frame."""
    end_s: float
    duration_s: float
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    dropped_count: int
    width: int
    height: int
    raw_bytes: int
    plain_size: int
    stored_size: int
    leaf_hash: str
    level: int
    created_at: str


def chunk_out(record: ChunkRecord, origin_us: int) -> ChunkOut:
    """``origin_us`` is the start of the session's first chunk."""
    return ChunkOut(
        session_id=record.session_id,
        sequence=record.sequence,
        status=record.status,
        start_us=record.start_us,
        end_us=record.end_us,
        start_s=(record.start_us - origin_us) / 1e6,
        end_s=(record.end_us - origin_us) / 1e6,
        duration_s=(record.end_us - record.start_us) / 1e6,
        frame_count=record.frame_count,
        keyframe_count=record.keyframe_count,
        unchanged_count=record.unchanged_count,
        dropped_count=record.dropped_count,
        width=record.width,
        height=record.height,
        raw_bytes=record.raw_bytes,
        plain_size=record.plain_size,
        stored_size=record.stored_size,
        leaf_hash=record.leaf_hash,
        level=record.level,
        created_at=record.created_at,
    )


class ChunkPage(BaseModel):
    items: list[ChunkOut]
    total: int
    limit: int
    offset: int
    has_next: bool
