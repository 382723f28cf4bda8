"""Where authentication and authorisation plug in.

Every route except ``/api/v1/health`` carries exactly one dependency made by
:func:`authorize`, naming the permission the route needs (the columns of the permission
matrix, :mod:`lucid_sessions.security.roles`). The dependency asks the app's
:data:`Authorizer`, which returns the caller's :class:`Principal` or raises. A served
cluster always uses :class:`JwtAuthorizer`: a bearer token, its role's permissions, then
the caller's rate budget for the route's class. :func:`allow_all` (everyone is an
anonymous admin) is only for tests that exercise other layers. The principal is left on
``request.state.principal`` for the audit log.

Permissions:

====================  =====================================================
``sessions:create``   POST /sessions
``sessions:read``     GET /sessions, /sessions/{id}, /sessions/{id}/manifest
``sessions:update``   PATCH /sessions/{id}
``sessions:delete``   DELETE /sessions/{id}
``sessions:control``  start, stop, pause, resume; POST /sessions/{id}/frames
``chunks:read``       chunk list and records, /proof, /verify
``chunks:download``   chunk download, /export, /render.mp4 (they count as downloads)
``pipeline:control``  POST /pipeline/pause, /pipeline/resume
``statistics:read``   statistics, GET /pipeline/status, /metrics
``audit:read``        GET /audit
====================  =====================================================

Rate-limit classes (:func:`rate_class`): ``creation`` for POST /sessions, ``bulk`` for
whole-session work (export, render, server-side verify), ``frames`` for frame ingest,
``playback`` for the player's timeline and frames, ``chunks`` for the other chunk routes,
``status`` for everything else. Refusals (401, 403) spend
the ``refused`` budget of the client's address, so guessing tokens ends in 429.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lucid_sessions.errors import ForbiddenError, UnauthenticatedError
from lucid_sessions.security.roles import PERMISSIONS, Permission, allowed
from lucid_sessions.security.tokens import Claims, TokenError, TokenVerifier

__all__ = [
    "PERMISSIONS",
    "Authorizer",
    "JwtAuthorizer",
    "Permission",
    "Principal",
    "allow_all",
    "authorize",
    "rate_class",
    "route_permissions",
]

log = logging.getLogger("lucid_sessions.api")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's subject and role."""

    subject: str
    role: str
    jti: str | None = None


Authorizer = Callable[[Request, str], Awaitable[Principal]]
"""Checks that the request may use a permission; returns the caller or raises a
LucidError (the auth layer will add its 401/403 errors)."""

_ANONYMOUS = Principal(subject="anonymous", role="admin")


async def allow_all(request: Request, permission: str) -> Principal:
    """The authorizer until auth is configured: everyone is an anonymous admin."""
    return _ANONYMOUS


class RevocationCheck(Protocol):
    async def is_revoked(self, jti: str) -> bool: ...


RateCheck = Callable[[str, str], Awaitable[None]]
"""Spends one unit of (class, subject)'s budget; raises
:class:`~lucid_sessions.errors.RateLimitError` when over budget."""


RefusalHook = Callable[[Request, str, str, "Principal | None"], Awaitable[None]]
"""Called with (request, kind ``token`` or ``permission``, reason, principal) before a
401 or 403 is raised: the audit log's entry point."""


_BULK_ROUTES = frozenset(
    {
        "/api/v1/sessions/{session_id}/export",
        "/api/v1/sessions/{session_id}/verify",
        "/api/v1/sessions/{session_id}/render.mp4",
    }
)
_FRAMES_ROUTE = "/api/v1/sessions/{session_id}/frames"
_PLAYBACK_ROUTES = frozenset(
    {
        "/api/v1/sessions/{session_id}/timeline",
        "/api/v1/sessions/{session_id}/playback/{sequence}",
        "/api/v1/sessions/{session_id}/playback/{sequence}/{index}",
    }
)


def rate_class(path: str, permission: str) -> str:
    """The rate-limit class of a route (its path template and permission)."""
    if permission == "sessions:create":
        return "creation"
    if path in _BULK_ROUTES:
        return "bulk"
    if path == _FRAMES_ROUTE:
        return "frames"
    if path in _PLAYBACK_ROUTES:
        return "playback"
    if permission in ("chunks:read", "chunks:download"):
        return "chunks"
    return "status"


class JwtAuthorizer:
    """Bearer token -> principal -> permission -> rate budget, in that order.

    A refusal is 401 (:class:`UnauthenticatedError`: no token, or one that is malformed,
    badly signed, expired, not yet valid, for another audience or issuer, or revoked) or
    403 (:class:`ForbiddenError`: a valid token whose role lacks the permission); both
    go to ``on_refusal`` first. ``public`` lists route paths that answer without a token
    (the metrics endpoint when configured public); a token sent there is still checked.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        revocations: RevocationCheck | None = None,
        rate_check: RateCheck | None = None,
        on_refusal: RefusalHook | None = None,
        public: frozenset[str] = frozenset(),
    ) -> None:
        self.verifier = verifier
        self.revocations = revocations
        self.rate_check = rate_check
        self.on_refusal = on_refusal
        self.public = public

    async def __call__(self, request: Request, permission: str) -> Principal:
        path = getattr(request.scope.get("route"), "path", "")
        header = request.headers.get("authorization")
        if header is None and path in self.public:
            return Principal(subject="anonymous", role="public")
        claims = await self._authenticate(request, header)
        principal = Principal(claims.subject, claims.role, claims.jti)
        if not allowed(claims.role, permission):
            reason = f"role {claims.role} lacks the permission {permission}"
            await self._refused(request, "permission", reason, principal)
            raise ForbiddenError(
                f"forbidden: {reason}",
                details={"role": claims.role, "permission": permission},
            )
        if self.rate_check is not None:
            await self.rate_check(rate_class(path, permission), claims.subject)
        return principal

    async def _authenticate(self, request: Request, header: str | None) -> Claims:
        if header is None:
            await self._refused(request, "token", "missing", None)
            raise UnauthenticatedError(
                "authentication required: send Authorization: Bearer <token>",
                details={"reason": "missing"},
            )
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await self._refused(request, "token", "scheme", None)
            raise UnauthenticatedError(
                "the Authorization header must be: Bearer <token>", details={"reason": "scheme"}
            )
        try:
            claims = self.verifier.verify(token.strip())
        except TokenError as exc:
            await self._refused(request, "token", exc.reason, None)
            raise UnauthenticatedError(
                f"invalid bearer token: {exc.message}", details={"reason": exc.reason}
            ) from None
        if self.revocations is not None and await self.revocations.is_revoked(claims.jti):
            principal = Principal(claims.subject, claims.role, claims.jti)
            await self._refused(request, "token", "revoked", principal)
            raise UnauthenticatedError(
                "invalid bearer token: the token has been revoked",
                details={"reason": "revoked"},
            )
        return claims

    async def _refused(
        self, request: Request, kind: str, reason: str, principal: Principal | None
    ) -> None:
        if principal is not None:
            request.state.principal = principal
        if self.rate_check is not None:
            # Refusals are budgeted per client address: past the budget a client guessing
            # tokens gets 429 (RateLimitError propagates) and writes no more audit entries.
            client = request.client.host if request.client else "unknown"
            await self.rate_check("refused", f"address:{client}")
        log.info(
            "api auth refused kind=%s reason=%s subject=%s route=%s",
            kind,
            reason,
            principal.subject if principal else "-",
            getattr(request.scope.get("route"), "path", "-"),
        )
        if self.on_refusal is not None:
            await self.on_refusal(request, kind, reason, principal)


_BEARER = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT from your auth service or `lucid-sessions token create`.",
)


class _Authorize:
    """The dependency :func:`authorize` returns; ``permission`` is readable for tests."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(_BEARER),  # noqa: B008
    ) -> Principal:
        # ``_credentials`` only declares the bearer scheme in the OpenAPI document; the
        # authorizer reads the header itself, so that it can name what is wrong with it.
        context = request.app.state.lucid
        authorizer: Authorizer = context.authorizer
        try:
            principal = await authorizer(request, self.permission)
        except UnauthenticatedError as exc:
            context.metrics.auth_refused("token", str(exc.details.get("reason", "other")))
            raise
        except ForbiddenError:
            context.metrics.auth_refused("permission", "role")
            raise
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
