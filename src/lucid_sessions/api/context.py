"""What every route reads: the component interfaces, settings, health checks, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from lucid_sessions.api.auth import Authorizer
from lucid_sessions.cluster.interfaces import Pipeline, Recorder, Storage
from lucid_sessions.crypto import MasterKey
from lucid_sessions.observability import Metrics

__all__ = [
    "ApiContext",
    "ApiSettings",
    "HealthCheck",
    "ServiceHealth",
    "get_context",
]


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service's lifecycle state as ``/api/v1/health`` shows it."""

    state: str
    """``starting``, ``running``, ``stopping`` or ``failed``; only ``running`` is healthy."""
    detail: str = ""


HealthCheck = Callable[[], "ServiceHealth | Awaitable[ServiceHealth]"]
"""Reports one service's state; may be sync or async, must not raise on purpose."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    """Settings of the REST layer. Every field has a working default."""

    title: str = "Lucid Sessions"
    max_frame_bytes: int = 128 * 1024 * 1024
    """Largest body ``POST .../frames`` accepts (413 beyond); 8K raw RGB is ~100 MB."""
    health_timeout_s: float = 2.0
    """A health check slower than this counts as failed."""
    export_buffer: int = 8
    """Pieces of 256 KiB an export may have queued before it waits for the client."""
    trusted_public_key: bytes | None = None
    """Raw Ed25519 cluster key that ``/verify`` requires manifests to be signed with."""
    stream_piece: int = 256 * 1024
    """Bytes per piece of a streamed download."""
    evidence_dir: Path | None = None
    """The data directory, when this process has it (every served process does): exports
    then carry the session's live checkpoints from its ``checkpoints/``."""
    max_body_bytes: int = 1024 * 1024
    """Largest body of every other route (413 beyond): JSON bodies are a few KiB at most."""
    max_header_count: int = 100
    """Most header fields a request may have (431 beyond)."""
    max_header_bytes: int = 8 * 1024
    """Longest single header field, name and value (431 beyond); a bearer token fits."""
    max_headers_total_bytes: int = 16 * 1024
    """Most bytes all header fields may take together (431 beyond). uvicorn refuses a
    header block larger than this plus 8 KiB of request line before the app sees it."""
    body_timeout_s: float = 30.0
    """A client that sends no body bytes for this long gets 408 (slow-body attacks)."""
    request_timeout_s: float = 60.0
    """A route that has not started its answer this long after the body arrived is
    abandoned with 504; a streamed answer, once started, is never cut."""
    keep_alive_timeout_s: int = 5
    """uvicorn closes an idle keep-alive connection after this many seconds."""
    max_concurrency: int | None = 256
    """Connections and tasks uvicorn serves at once (503 beyond); None for no limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    pipeline: Pipeline
    storage: Storage
    recorder: Recorder | None
    health_checks: Mapping[str, HealthCheck]
    metrics: Metrics
    settings: ApiSettings
    authorizer: Authorizer
    master_key: MasterKey | None = field(default=None, repr=False)
    """Unwraps data keys for server-side decoding (player, render); never sent anywhere."""


async def get_context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext` (a FastAPI dependency; async so that FastAPI does not
    send it to a worker thread on every request)."""
    context: ApiContext = request.app.state.lucid
    return context
