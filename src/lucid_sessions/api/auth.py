"""Where authentication and authorisation plug in.

Every route except ``/api/v1/health`` carries exactly one dependency made by
:func:`authorize`, naming the permission the route needs (the columns of the permission
matrix in the security issue). The dependency asks the app's :data:`Authorizer`, which
returns the caller's :class:`Principal` or raises; until JWT auth lands the default,
:func:`allow_all`, lets everyone through as an anonymous admin. The principal is left on
``request.state.principal`` for the audit log.

Permissions:

====================  =====================================================
``sessions:create``   POST /sessions
``sessions:read``     GET /sessions, /sessions/{id}, /sessions/{id}/manifest
``sessions:update``   PATCH /sessions/{id}
``sessions:delete``   DELETE /sessions/{id}
``sessions:control``  start, stop, pause, resume; POST /sessions/{id}/frames
``chunks:read``       chunk list and records, /proof, /verify
``chunks:download``   chunk download, /export (an export counts as a download)
``pipeline:control``  POST /pipeline/pause, /pipeline/resume
``statistics:read``   statistics, GET /pipeline/status, /metrics
====================  =====================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args

from fastapi import Request

__all__ = [
    "PERMISSIONS",
    "Authorizer",
    "Permission",
    "Principal",
    "allow_all",
    "authorize",
    "route_permissions",
]

Permission = Literal[
    "sessions:create",
    "sessions:read",
    "sessions:update",
    "sessions:delete",
    "sessions:control",
    "chunks:read",
    "chunks:download",
    "pipeline:control",
    "statistics:read",
    "audit:read",
]
PERMISSIONS: tuple[str, ...] = get_args(Permission)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's subject and role."""

    subject: str
    role: str


Authorizer = Callable[[Request, str], Awaitable[Principal]]
"""Checks that the request may use a permission; returns the caller or raises a
LucidError (the auth layer will add its 401/403 errors)."""

_ANONYMOUS = Principal(subject="anonymous", role="admin")


async def allow_all(request: Request, permission: str) -> Principal:
    """The authorizer until auth is configured: everyone is an anonymous admin."""
    return _ANONYMOUS


class _Authorize:
    """The dependency :func:`authorize` returns; ``permission`` is readable for tests."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        authorizer: Authorizer = request.app.state.lucid.authorizer
        principal = await authorizer(request, self.permission)
        request.state.principal = principal
        return principal

    def __repr__(self) -> str:
        return f"authorize({self.permission!r})"


def authorize(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that requires ``permission``: ``Depends(authorize("sessions:read"))``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return _Authorize(permission)


def route_permissions() -> dict[tuple[str, str], list[str]]:
    """``(method, path template) -> permissions`` of every API route, for table tests."""
    from lucid_sessions.api.routes import api_routes

    table: dict[tuple[str, str], list[str]] = {}
    for route in api_routes():
        found: list[str] = [
            dep.call.permission
            for dep in route.dependant.dependencies
            if isinstance(dep.call, _Authorize)
        ]
        for method in route.methods or ():
            table[(method, route.path)] = found
    return table
