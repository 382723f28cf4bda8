"""The interfaces between the cluster's components.

Each component is used only through one of these Protocols. The assembly module
(:mod:`lucid_sessions.cluster.assembly`) hands every component either the local object or
a gRPC client implementing the same Protocol; no component knows which it got. A shared
contract suite (``tests/test_component_contracts.py``) runs each interface against both.

Rules for every implementation:

- Errors are :class:`~lucid_sessions.errors.LucidError` subclasses and keep their class
  across gRPC (the client re-raises the same class with the same message).
- Transient failures (a peer restarting, a network blip) surface as
  :class:`~lucid_sessions.errors.PipelineError` subclass :class:`Unavailable`, which callers
  may retry; nothing else is retried.
- Methods are idempotent where the docstring says so; retries rely on it.

::

    API gateway ──> Pipeline ──> Recorder
         │             │  ▲          │ (raw chunks)
         │             │  └──────────┘
         │             ├──> Processor
         └──> Storage <┘
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lucid_sessions.archive.processor import ProcessedChunk
from lucid_sessions.errors import PipelineError
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.recording.codec import Pixels
from lucid_sessions.storage.metadata import ChunkRecord, MetadataStore, SessionRecord

__all__ = [
    "CaptureSpec",
    "Pipeline",
    "Processor",
    "Recorder",
    "RecorderStatus",
    "RecordingEnd",
    "Storage",
    "StorageHealth",
    "Unavailable",
]


class Unavailable(PipelineError):
    """A component could not be reached; the call may be retried."""


@dataclass(frozen=True, slots=True)
class StorageHealth:
    ok: bool
    free_bytes: int
    total_bytes: int
    metadata: str
    """Which metadata store answers (``sqlite``, ``mongodb``)."""
    detail: str = ""


class Storage(MetadataStore, Protocol):
    """Session metadata plus stored chunk bytes (the storage component, port 8086).

    ``store_chunk`` writes the chunk file, then its record, and is idempotent for the same
    bytes; first writer wins for a chunk processed twice (a record with another leaf
    hash for a sequence already recorded: the first copy is kept and the call returns
    normally); ``delete_session`` removes the files too.

    Staged chunks (pipeline coordination through Redis): opaque bytes, sealed by the
    pipeline, that wait in storage for whichever processor takes them; ``stage_chunk``
    is atomic and idempotent, ``drop_staged_chunk`` is idempotent.
    """

    async def store_chunk(self, record: ChunkRecord, data: bytes) -> None: ...

    async def stage_chunk(self, session_id: str, sequence: int, data: bytes) -> None: ...

    async def read_staged_chunk(self, session_id: str, sequence: int) -> bytes:
        """ChunkNotFoundError when nothing is staged (anymore) for that sequence."""
        ...

    async def drop_staged_chunk(self, session_id: str, sequence: int) -> None: ...

    async def staged_sequences(self, session_id: str) -> list[int]: ...

    async def read_chunk(self, session_id: str, sequence: int) -> bytes: ...

    async def chunk_sequences(self, session_id: str) -> list[int]:
        """Sequences of the chunk files present on disk (not only those with records)."""
        ...

    async def health(self) -> StorageHealth: ...


class Processor(Protocol):
    """Compression, encryption and hashing of chunks (the chunk processor, port 8085).

    ``process`` is pure: the same input gives a chunk that decrypts to the same plaintext
    (nonces are random, so the bytes differ); calling it twice is harmless.
    """

    async def process(
        self,
        raw: RawChunk,
        *,
        session_id: str,
        wrapped_key: bytes,
        level: int,
        hash_algorithm: str,
    ) -> ProcessedChunk:
        """The sealed chunk; its ``raw`` is the caller's own ``raw`` object."""
        ...


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What to record: the source and its settings (the password only in transit)."""

    source: str
    """``rdp``, ``x11`` or ``ingest``."""
    fps: float
    width: int
    height: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Source settings: host, port, username, domain, security, display..."""
    password: str = field(default="", repr=False)
    max_duration_us: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    session_id: str
    state: str
    """``connecting``, ``recording``, ``paused`` or ``ended``."""
    captured: int = 0
    dropped: int = 0
    unchanged: int = 0
    effective_fps: float = 0.0
    chunks: int = 0


@dataclass(frozen=True, slots=True)
class RecordingEnd:
    """How a recording ended, as the recorder reports it to the pipeline."""

    session_id: str
    interrupted: bool
    reason: str | None
    last_sequence: int
    """Sequence of the last chunk handed on (-1 if none)."""
    stats: Mapping[str, Any] = field(default_factory=dict)


class Recorder(Protocol):
    """Live capture and chunking (the recorder, port 8084).

    ``start`` returns once the source is connected (raising CaptureAuthError or
    CaptureConnectionError otherwise); chunks then flow to the pipeline's ``submit_chunk``
    and the end of the recording to its ``recording_ended``. ``stop``, ``pause`` and
    ``resume`` are idempotent.
    """

    async def start(self, session_id: str, spec: CaptureSpec) -> None: ...

    async def stop(self, session_id: str) -> None: ...

    async def pause(self, session_id: str) -> None: ...

    async def resume(self, session_id: str) -> None: ...

    async def status(self, session_id: str) -> RecorderStatus: ...

    async def push_frame(self, session_id: str, timestamp_us: int | None, pixels: Pixels) -> None:
        """Hand a frame to an ``ingest`` recording."""
        ...


class Pipeline(Protocol):
    """Session lifecycle and chunk flow (the pipeline manager, port 8083)."""

    async def create_session(
        self, spec: Mapping[str, Any], *, password: str = ""
    ) -> SessionRecord: ...

    async def start_session(self, session_id: str) -> SessionRecord: ...

    async def stop_session(self, session_id: str) -> SessionRecord: ...

    async def pause_session(self, session_id: str) -> SessionRecord: ...

    async def resume_session(self, session_id: str) -> SessionRecord: ...

    async def update_session(
        self, session_id: str, changes: Mapping[str, Any]
    ) -> SessionRecord: ...

    async def delete_session(self, session_id: str) -> None: ...

    async def submit_chunk(self, session_id: str, raw: RawChunk) -> None:
        """Queue a closed chunk; waits while the queue is full (backpressure). Idempotent
        per (session, sequence)."""
        ...

    async def recording_ended(self, end: RecordingEnd) -> None:
        """The recorder's report that a recording ended; idempotent per session."""
        ...

    async def pipeline_status(self) -> Mapping[str, Any]: ...

    async def pause_pipeline(self) -> None: ...

    async def resume_pipeline(self) -> None: ...
