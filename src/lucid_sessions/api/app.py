"""The app factory: the REST API over the component interfaces it is given."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from lucid_sessions.api.audit import AuditMiddleware
from lucid_sessions.api.auth import Authorizer, allow_all
from lucid_sessions.api.context import ApiContext, ApiSettings, HealthCheck
from lucid_sessions.api.errors import install_error_handlers
from lucid_sessions.api.limits import RequestLimitsMiddleware
from lucid_sessions.api.middleware import RequestContextMiddleware
from lucid_sessions.api.routes import ROUTERS
from lucid_sessions.api.routes.ui import install_ui
from lucid_sessions.cluster.interfaces import Pipeline, Recorder, Storage
from lucid_sessions.crypto import MasterKey
from lucid_sessions.observability import Metrics

__all__ = ["create_app"]

API_VERSION = "1"


def create_app(
    *,
    pipeline: Pipeline,
    storage: Storage,
    recorder: Recorder | None = None,
    health_checks: Mapping[str, HealthCheck] | None = None,
    metrics: Metrics | None = None,
    settings: ApiSettings | None = None,
    authorizer: Authorizer | None = None,
    master_key: MasterKey | None = None,
) -> FastAPI:
    """The REST API (``/api/v1``, ``/openapi.json``, ``/docs``) over the given components.

    Builds nothing but the web layer: the caller owns the components and their
    lifecycles. ``recorder`` may be None (``POST .../frames`` then answers 503);
    ``health_checks`` maps a service name to its state check; ``metrics`` is the
    registry shared with the components (a fresh one when None); ``authorizer`` checks
    each route's permission (everyone is allowed when None, until auth is configured).
    """
    settings = settings or ApiSettings()
    app = FastAPI(
        title=settings.title,
        version=API_VERSION,
        description="Lucid Sessions: record remote desktop sessions as verifiable evidence.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # No 307 to the path without its trailing slash: it would echo a decoded,
        # attacker-chosen path ("/sessions/..%2f") back as a Location.
        redirect_slashes=False,
    )
    app.state.lucid = ApiContext(
        pipeline=pipeline,
        storage=storage,
        recorder=recorder,
        health_checks=dict(health_checks or {}),
        metrics=metrics or Metrics(),
        settings=settings,
        authorizer=authorizer or allow_all,
        master_key=master_key,
    )
    install_error_handlers(app)
    # Added first, so it runs inside RequestContextMiddleware: its refusals get request ids.
    app.add_middleware(RequestLimitsMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.lucid.metrics)
    app.add_middleware(AuditMiddleware)  # outermost: sees every answer, 500s included
    for router in ROUTERS:
        app.include_router(router)
    install_ui(app)  # the web UI at / (static files; its data comes from the API above)
    return app
