"""The REST API gateway (port 8087).

app
    :func:`create_app` builds the FastAPI app over the component interfaces it is given
    (Pipeline, Storage, Recorder); it never constructs components itself.
routes
    One module per noun under ``/api/v1``: sessions, chunks, evidence (manifest, proof,
    verify, export), frames (ingest), pipeline, statistics, system (health, metrics).
models / views
    Request bodies validated at the edge (and the session spec the pipeline receives,
    documented in :mod:`.models`) / response bodies built from stored records.
errors
    The one error body and the table from error codes to HTTP statuses.
auth
    The single dependency per route where authentication and permissions plug in.
middleware
    Request ids, request metrics, access log, last-resort 500.
bridge
    Runs the blocking evidence code (bundle writer, verifier) over the async Storage.
stats
    Per-session and system statistics from the metadata store; the metrics refresh.

Metric objects live in :mod:`lucid_sessions.observability`, shared with the components.
"""

from __future__ import annotations

from lucid_sessions.api.app import create_app
from lucid_sessions.api.auth import (
    PERMISSIONS,
    Authorizer,
    Permission,
    Principal,
    allow_all,
    authorize,
    route_permissions,
)
from lucid_sessions.api.context import ApiSettings, HealthCheck, ServiceHealth

__all__ = [
    "PERMISSIONS",
    "ApiSettings",
    "Authorizer",
    "HealthCheck",
    "Permission",
    "Principal",
    "ServiceHealth",
    "allow_all",
    "authorize",
    "create_app",
    "route_permissions",
]
