"""Prometheus metrics shared by the cluster's components.

One :class:`Metrics` object owns one :class:`~prometheus_client.CollectorRegistry`; the
assembly module makes one and hands it to every component that records something and
to the API, which serves it at ``/api/v1/metrics``. Nothing here is a process global, so
tests (and several clusters in one process) never share counters.

Who records what:

``lucid_chunks_processed_total{outcome}`` and ``lucid_chunk_processing_seconds``
    The pipeline, once per chunk, with :meth:`Metrics.chunk_processed` (its signature
    fits ``PipelineManager(on_chunk=...)``). ``outcome`` is one of :data:`CHUNK_OUTCOMES`:
    ``processed`` (processed and stored), ``failed`` (given up), ``retried`` (a transient
    failure, tried again), ``duplicate`` (a sequence submitted twice, ignored).
``lucid_recorder_fps{session_id}`` and ``lucid_recorder_dropped_frames{session_id}``
    Recorder figures per live recording, set with :meth:`Metrics.observe_recorder` and
    removed with :meth:`Metrics.forget_recorder` when the recording ends. The API also
    refreshes them from ``Recorder.status`` when it is scraped.
``lucid_sessions{status}``, ``lucid_storage_bytes{kind}``, ``lucid_storage_chunks``,
``lucid_storage_free_bytes``, ``lucid_storage_capacity_bytes``
    Snapshots of the metadata store and the disk, set with :meth:`Metrics.observe_store`
    and :meth:`Metrics.observe_disk` (the API does so on every scrape).
``lucid_api_requests_total{method,route,status}`` and ``lucid_api_request_seconds``
    The API middleware (:mod:`lucid_sessions.api.middleware`) through
    :meth:`Metrics.api_request`; ``route`` is the route template, never the raw path.

For the alert rules (``alerts/lucid-sessions.rules.yml``), refreshed by the API on scrape
unless said otherwise:

``lucid_service_up{service}``
    1 when the service's health check says ``running``, else 0.
``lucid_storage_reserve_bytes``
    Free space the chunk store must keep: the cluster's ``storage_reserve_bytes``
    (``LUCID_STORAGE_RESERVE_BYTES``), else :data:`DEFAULT_STORAGE_RESERVE_BYTES` (set
    once). Below it the pipeline refuses new recordings and stops running ones.
``lucid_storage_write_errors_total{errno}``
    Chunk writes that failed on the disk (``ENOSPC``, ``EDQUOT``, ``EIO``), counted by
    the pipeline (:meth:`Metrics.storage_write_error`); the chunk is not stored and its
    session is stopped and finalised with what was stored.
``lucid_audit_chain_ok`` and ``lucid_audit_chain_entries``
    1 while every audit entry checked so far hashes to its stored hash and links to the
    one before it (checked incrementally; the full check is ``audit verify``).
``lucid_auth_refusals_total{kind,reason}``
    Requests the auth layer refused (``kind`` ``token`` or ``permission``), counted by
    :func:`lucid_sessions.api.auth.authorize` as it refuses.
``lucid_anchor_jobs_total{outcome}`` and ``lucid_anchor_jobs_running``
    Anchoring attempts ``confirmed``, ``failed`` (given up) or ``retried``, mirrored from
    the pipeline's anchor job counters; jobs in progress.
``lucid_pipeline_queue_depth`` and ``lucid_pipeline_queue_capacity``
    Chunks waiting in the pipeline's bounded queue, and its size.
``lucid_config_loaded_timestamp_seconds``
    When this process loaded its configuration (it is read once, at start).
``lucid_master_key_rotated_timestamp_seconds``
    Modification time of the data directory's ``keys/master.key`` (written only when the
    key is created or rotated); 0 when the key is configured elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "ANCHOR_OUTCOMES",
    "CHUNK_OUTCOMES",
    "CONTENT_TYPE",
    "DEFAULT_STORAGE_RESERVE_BYTES",
    "SESSION_STATUSES",
    "Metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
CHUNK_OUTCOMES = ("processed", "failed", "retried", "duplicate")
ANCHOR_OUTCOMES = ("confirmed", "failed", "retried")
DEFAULT_STORAGE_RESERVE_BYTES = 5 * 1024**3
"""Free space the chunk store keeps by default (``LUCID_STORAGE_RESERVE_BYTES`` overrides)."""
STORAGE_ERRNOS = ("ENOSPC", "EDQUOT", "EIO")
SESSION_STATUSES = (
    "created",
    "starting",
    "recording",
    "paused",
    "stopped",
    "processing",
    "completed",
    "interrupted",
    "failed",
    "deleted",
)
"""Every status a session can have; ``interrupted`` is a recording that ended early."""

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The cluster's metric objects in one registry. Methods are thread-safe."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, reserve_bytes: int | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("lucid_sessions", "Sessions by status.", ["status"], registry=r)
        self.chunks_processed = Counter(
            "lucid_chunks_processed",
            "Chunks handled by the pipeline, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.chunk_seconds = Histogram(
            "lucid_chunk_processing_seconds",
            "Time from a chunk closing to its outcome (compress, encrypt, hash, store).",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.recorder_fps = Gauge(
            "lucid_recorder_fps",
            "Effective frames per second of a live recording.",
            ["session_id"],
            registry=r,
        )
        self.recorder_dropped = Gauge(
            "lucid_recorder_dropped_frames",
            "Sampling ticks missed so far by a live recording.",
            ["session_id"],
            registry=r,
        )
        self.storage_bytes = Gauge(
            "lucid_storage_bytes",
            "Bytes of recorded chunks: raw (frames uncompressed) and stored (on disk).",
            ["kind"],
            registry=r,
        )
        self.storage_chunks = Gauge("lucid_storage_chunks", "Stored chunks.", registry=r)
        self.storage_free = Gauge(
            "lucid_storage_free_bytes", "Free bytes on the chunk store's disk.", registry=r
        )
        self.storage_capacity = Gauge(
            "lucid_storage_capacity_bytes", "Size of the chunk store's disk.", registry=r
        )
        self.api_requests = Counter(
            "lucid_api_requests",
            "API requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.api_seconds = Histogram(
            "lucid_api_request_seconds",
            "API request duration until the response head is sent.",
            ["method", "route"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self.service_up = Gauge(
            "lucid_service_up",
            "1 when the service's health check says running, else 0.",
            ["service"],
            registry=r,
        )
        self.storage_reserve = Gauge(
            "lucid_storage_reserve_bytes",
            "Free bytes the chunk store's disk must keep (LUCID_STORAGE_RESERVE_BYTES).",
            registry=r,
        )
        self.audit_chain_ok = Gauge(
            "lucid_audit_chain_ok",
            "1 while every audit entry checked hashes and links to the one before it.",
            registry=r,
        )
        self.audit_chain_entries = Gauge(
            "lucid_audit_chain_entries", "Audit entries checked so far.", registry=r
        )
        self.auth_refusals = Counter(
            "lucid_auth_refusals",
            "Requests refused by the auth layer, by kind (token, permission) and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.anchor_jobs = Counter(
            "lucid_anchor_jobs",
            "Anchoring attempts by outcome: confirmed, failed (given up), retried.",
            ["outcome"],
            registry=r,
        )
        self.anchor_running = Gauge(
            "lucid_anchor_jobs_running", "Anchoring jobs in progress.", registry=r
        )
        self.queue_depth = Gauge(
            "lucid_pipeline_queue_depth", "Chunks waiting in the pipeline's queue.", registry=r
        )
        self.queue_capacity = Gauge(
            "lucid_pipeline_queue_capacity", "Size of the pipeline's queue.", registry=r
        )
        self.config_loaded = Gauge(
            "lucid_config_loaded_timestamp_seconds",
            "When this process loaded its configuration (Unix time).",
            registry=r,
        )
        self.master_key_rotated = Gauge(
            "lucid_master_key_rotated_timestamp_seconds",
            "When the data directory's master key was created or last rotated (Unix time).",
            registry=r,
        )
        self.storage_write_errors = Counter(
            "lucid_storage_write_errors",
            "Chunk writes that failed on the disk, by errno (ENOSPC, EDQUOT, EIO).",
            ["errno"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._anchor_seen: dict[str, int] = {}
        self.audit_cursor: tuple[int, str] | None = None
        """(seq, hash) of the last audit entry checked; owned by the API's refresh."""
        self.audit_ok = True
        self.audit_entries = 0
        for outcome in CHUNK_OUTCOMES:
            self.chunks_processed.labels(outcome=outcome)
        for outcome in ANCHOR_OUTCOMES:
            self.anchor_jobs.labels(outcome=outcome)
        self.storage_reserve.set(_reserve_bytes() if reserve_bytes is None else reserve_bytes)
        for name in STORAGE_ERRNOS:
            self.storage_write_errors.labels(errno=name)
        self.audit_chain_ok.set(1)
        self.config_loaded.set(time.time())
        for status in SESSION_STATUSES:
            self.sessions.labels(status=status).set(0)

    # recorded by the pipeline

    def chunk_processed(self, outcome: str, duration_s: float | None = None) -> None:
        """Count one chunk's outcome and, when given, how long it took (seconds)."""
        if outcome not in CHUNK_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(CHUNK_OUTCOMES)}")
        self.chunks_processed.labels(outcome=outcome).inc()
        if duration_s is not None:
            self.chunk_seconds.observe(max(0.0, duration_s))

    def storage_write_error(self, errno_name: str) -> None:
        """Count a chunk write the disk refused (fits ``PipelineManager(on_storage_error=)``)."""
        self.storage_write_errors.labels(errno=errno_name[:16]).inc()

    # recorded by the recorder (or refreshed by the API)

    def observe_recorder(self, session_id: str, *, fps: float, dropped: int) -> None:
        self.recorder_fps.labels(session_id=session_id).set(fps)
        self.recorder_dropped.labels(session_id=session_id).set(dropped)

    def forget_recorder(self, session_id: str) -> None:
        """Drop a finished recording's series (keeps the label set bounded)."""
        for gauge in (self.recorder_fps, self.recorder_dropped):
            with contextlib.suppress(KeyError):
                gauge.remove(session_id)

    def recorder_sessions(self) -> set[str]:
        """Session ids that currently have recorder series."""
        found: set[str] = set()
        for metric in self.recorder_fps.collect():
            found.update(s.labels["session_id"] for s in metric.samples)
        return found

    # snapshots

    def observe_store(
        self,
        *,
        sessions_by_status: Mapping[str, int],
        chunks: int,
        raw_bytes: int,
        stored_bytes: int,
    ) -> None:
        for status in {*SESSION_STATUSES, *sessions_by_status}:
            self.sessions.labels(status=status).set(sessions_by_status.get(status, 0))
        self.storage_chunks.set(chunks)
        self.storage_bytes.labels(kind="raw").set(raw_bytes)
        self.storage_bytes.labels(kind="stored").set(stored_bytes)

    def observe_disk(self, *, free_bytes: int, total_bytes: int) -> None:
        self.storage_free.set(free_bytes)
        self.storage_capacity.set(total_bytes)

    # recorded by the API middleware

    def api_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.api_requests.labels(method=method, route=route, status=str(status)).inc()
        self.api_seconds.labels(method=method, route=route).observe(duration_s)

    def auth_refused(self, kind: str, reason: str) -> None:
        """Count one refused request (``reason`` must be a short fixed word)."""
        self.auth_refusals.labels(kind=kind, reason=reason[:32]).inc()

    # for the alert rules (set on scrape)

    def observe_services(self, up: Mapping[str, bool]) -> None:
        for service, ok in up.items():
            self.service_up.labels(service=service).set(1 if ok else 0)

    def observe_pipeline(self, status: Mapping[str, object]) -> None:
        """Queue figures and anchoring counters from ``Pipeline.pipeline_status``; the
        anchoring counts are cumulative there and mirrored here (a smaller count means the
        pipeline restarted and counts from zero again)."""
        depth, capacity = status.get("queue_depth"), status.get("queue_capacity")
        if isinstance(depth, int | float):
            self.queue_depth.set(depth)
        if isinstance(capacity, int | float):
            self.queue_capacity.set(capacity)
        anchoring = status.get("anchoring")
        if not isinstance(anchoring, Mapping):
            return
        running = anchoring.get("running")
        if isinstance(running, int | float):
            self.anchor_running.set(running)
        with self._lock:
            for outcome in ANCHOR_OUTCOMES:
                count = anchoring.get(outcome)
                if not isinstance(count, int):
                    continue
                seen = self._anchor_seen.get(outcome, 0)
                new = count - seen if count >= seen else count
                if new > 0:
                    self.anchor_jobs.labels(outcome=outcome).inc(new)
                self._anchor_seen[outcome] = count

    def observe_audit_chain(self, *, ok: bool, entries: int) -> None:
        self.audit_ok, self.audit_entries = ok, entries
        self.audit_chain_ok.set(1 if ok else 0)
        self.audit_chain_entries.set(entries)

    def observe_master_key(self, rotated_at: float) -> None:
        self.master_key_rotated.set(rotated_at)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _reserve_bytes() -> int:
    text = os.environ.get("LUCID_STORAGE_RESERVE_BYTES", "").strip()
    try:
        value = int(text)
    except ValueError:
        return DEFAULT_STORAGE_RESERVE_BYTES
    return max(0, value)
