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

The audit log and the token revocation list (the security issue):

- ``append_audit`` assigns ``seq`` (one more than the highest ``seq`` of any entry or
  head so far; the first is 1) and ``prev`` (the hash of the last entry; ``GENESIS`` for
  the first) atomically, one append at a time: the store is what serialises the chain
  (:mod:`lucid_sessions.audit`; ``seq`` is not hashed, the ``prev`` links order the log).
  Entries are never changed or removed through the store. Details keep their types
  (integers stay integers), or the entry's hash would no longer match.
- ``list_audit`` filters by exact ``subject``, ``action``, ``target`` and ``outcome`` and
  by time (``since`` inclusive, ``until`` exclusive, compared as
  :func:`~lucid_sessions.audit.audit_time` strings), and pages by ``seq``: the items have
  ``seq > after_seq``, ascending, at most ``limit``; ``next_after`` is the ``after_seq``
  of the next page, or None on the last one. An entry
  reads back exactly as stored (a ``details`` that no longer parses comes back as
  ``{"malformed": <text>}``), so verification can name a tampered entry instead of failing.
- ``put_audit_head`` stores a head once per ``seq``: the same head again is a no-op,
  another one at that ``seq`` is refused (AlreadyExistsError). Heads list by ``seq``.
- ``revoke_token`` is idempotent: revoking again keeps the first subject and reason and
  the later expiry. A jti must be 1-128 characters and ``expires_at`` integer unix
  seconds (InvalidConfigError). ``is_token_revoked`` answers from what is stored until
  ``purge_revoked(before)`` removes entries that expired before ``before``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from lucid_sessions.audit import AuditEntry, AuditEvent, AuditHead
from lucid_sessions.errors import InvalidConfigError

__all__ = [
    "MAX_JTI_LENGTH",
    "SESSION_FIELDS",
    "AuditPage",
    "ChunkRecord",
    "ManifestRecord",
    "MetadataStore",
    "RevokedToken",
    "SessionPage",
    "SessionRecord",
    "WrappedKeyRecord",
    "check_revocation",
    "utc_now",
]

MAX_JTI_LENGTH = 128
MAX_REVOCATION_NOTE = 1000
"""Longest subject or reason a revocation keeps (characters; longer ones are cut)."""


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


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: tuple[AuditEntry, ...]
    next_after: int | None
    """``after_seq`` for the next page; None when this is the last one."""


@dataclass(frozen=True, slots=True)
class RevokedToken:
    jti: str
    subject: str
    reason: str
    revoked_at: str
    expires_at: int
    """Unix seconds: the token's own expiry, after which the entry may be purged."""


def check_revocation(jti: object, expires_at: object) -> None:
    """Raise InvalidConfigError unless ``jti`` is 1-128 characters and ``expires_at``
    integer unix seconds (shared by every store, so they refuse the same input)."""
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidConfigError(
            f"a token id (jti) must be a string of 1-{MAX_JTI_LENGTH} characters",
            details={"field": "jti"},
        )
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise InvalidConfigError(
            f"expires_at must be unix seconds (an integer), not {expires_at!r}",
            details={"field": "expires_at"},
        )


class MetadataStore(Protocol):
    """Sessions, chunk records, wrapped keys, manifests, the audit log and revoked tokens.
    See the module rules."""

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

    async def append_audit(self, event: AuditEvent) -> AuditEntry:
        """Chain ``event`` after the last entry; returns the stored entry."""
        ...

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
    ) -> AuditPage: ...

    async def put_audit_head(self, head: AuditHead) -> None: ...

    async def list_audit_heads(self) -> list[AuditHead]: ...

    async def latest_audit_head(self) -> AuditHead | None: ...

    async def revoke_token(
        self, jti: str, *, expires_at: int, subject: str, reason: str
    ) -> None: ...

    async def is_token_revoked(self, jti: str) -> bool: ...

    async def list_revoked_tokens(self) -> list[RevokedToken]:
        """Revocations by time of revocation, then jti."""
        ...

    async def purge_revoked(self, before: int) -> int:
        """Forget revocations whose token expired before ``before`` (unix seconds);
        returns how many were removed."""
        ...

    async def close(self) -> None: ...
