"""The metadata store interface and the records it keeps.

Rules every implementation follows (the contract suite in ``tests/test_metadata_store.py``
checks them against each one):

- Records are plain frozen dataclasses; a store never hands out objects it still mutates.
- ``create_session`` refuses an id that exists (AlreadyExistsError); ``get_session``,
  ``update_session`` and ``delete_session`` raise NotFoundError for an unknown id.
- ``update_session`` raises ValueError for a field that does not exist or cannot change
  (``session_id``): that is a programming error, not bad input.
- ``put_wrapped_key`` is idempotent for the same bytes and refuses other bytes under an
  existing key id (AlreadyExistsError).
- ``put_chunk`` is idempotent: storing the same chunk record again is a no-op; a record
  for the same (session, sequence) with another leaf hash is refused (AlreadyExistsError).
- ``update_session`` with ``if_status`` changes nothing unless the current status is one
  of those given (PipelineError otherwise), so state transitions cannot race.
- ``put_manifest`` stores a session's signed manifest once; storing the same bytes again
  is a no-op, other bytes are refused.
- ``replace_wrapped_keys`` applies all of its updates or none.
- Timestamps are ISO 8601 strings in UTC; lists come back in a stable order (sessions by
  creation time then id, chunks by sequence).
- Any failure of the underlying database surfaces as StorageError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = [
    "SESSION_FIELDS",
    "ChunkRecord",
    "ManifestRecord",
    "MetadataStore",
    "SessionPage",
    "SessionRecord",
    "WrappedKeyRecord",
    "utc_now",
]


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    name: str
    status: str
    created_at: str
    updated_at: str
    started_at: str | None = None
    ended_at: str | None = None
    project: str | None = None
    environment: str | None = None
    tags: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    """Recording, storage and connection settings (never a password in clear)."""
    key_id: str | None = None
    hash_algorithm: str = "blake3"
    chunk_count: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    root: str | None = None
    status_reason: str | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    """Recording quality figures: frames captured, dropped, unchanged, effective fps."""


SESSION_FIELDS = frozenset(SessionRecord.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    session_id: str
    sequence: int
    start_us: int
    end_us: int
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    width: int
    height: int
    raw_bytes: int
    """Bytes of the frames uncompressed."""
    plain_size: int
    """Bytes of the encoded chunk before compression."""
    stored_size: int
    leaf_hash: str
    level: int
    """zstd level used."""
    created_at: str
    status: str = "stored"
    dropped_count: int = 0
    """Sampling ticks missed while this chunk was recorded."""


@dataclass(frozen=True, slots=True)
class WrappedKeyRecord:
    key_id: str
    session_id: str
    master_key_id: str
    wrapped: bytes
    created_at: str


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    session_id: str
    manifest: bytes
    signature: bytes
    public_key: bytes
    created_at: str


@dataclass(frozen=True, slots=True)
class SessionPage:
    items: tuple[SessionRecord, ...]
    total: int
    limit: int
    offset: int

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.items) < self.total


class MetadataStore(Protocol):
    """Sessions, chunk records, wrapped keys and manifests. See the module rules."""

    async def create_session(self, record: SessionRecord) -> None: ...

    async def get_session(self, session_id: str) -> SessionRecord: ...

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage: ...

    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord: ...

    async def delete_session(self, session_id: str) -> None:
        """Remove the session with its chunk records, wrapped key and manifest."""
        ...

    async def put_chunk(self, record: ChunkRecord) -> None: ...

    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord: ...

    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        """Chunks by sequence; with a time range, those overlapping [start_us, end_us]."""
        ...

    async def put_wrapped_key(self, record: WrappedKeyRecord) -> None: ...

    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord: ...

    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]: ...

    async def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None: ...

    async def put_manifest(self, record: ManifestRecord) -> None: ...

    async def get_manifest(self, session_id: str) -> ManifestRecord: ...

    async def close(self) -> None: ...
