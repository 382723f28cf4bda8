"""The REST routes, one module per noun, each with its full ``/api/v1/...`` prefix.

The prefix lives in each router (not in an ``include_router`` prefix) so that a matched
route's ``path`` is the whole template, which the request metrics label by.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from lucid_sessions.api.routes import (
    audit,
    chunks,
    evidence,
    frames,
    holds,
    pipeline,
    playback,
    render,
    sessions,
    statistics,
    system,
)

__all__ = ["ROUTERS", "api_routes"]

ROUTERS: tuple[APIRouter, ...] = (
    sessions.router,
    chunks.router,
    evidence.router,
    playback.router,
    render.router,
    frames.router,
    pipeline.router,
    statistics.router,
    system.router,
    audit.router,
    holds.router,
)


def api_routes() -> list[APIRoute]:
    """Every API route, with its full path."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
