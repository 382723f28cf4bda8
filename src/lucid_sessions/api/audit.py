"""Audit entries from the web layer: state changes, downloads, exports and refusals.

Three ways in, all appending through the app's Storage (``ctx.storage.append_audit``), so
the storage component chains and signs them (:mod:`lucid_sessions.audit`):

:class:`AuditMiddleware`
    A plain ASGI middleware (streamed bodies pass through untouched). For every route
    whose :func:`~lucid_sessions.api.auth.authorize` permission is in
    :data:`AUDITED_PERMISSIONS` it appends one entry once the response status is known,
    *before* the response head is passed on: a client never sees a success the log does
    not hold. ``POST /sessions/{id}/frames`` is left out on purpose: frame ingest runs at
    up to 120 requests a second per session and would bury everything else in the log
    (the session's start and stop are recorded, and its chunks are in the signed
    manifest). A streamed download or export is recorded when its head goes out; a
    stream cut short afterwards still counts as a success.
:func:`record_refusal`
    The auth layer's hook for 401 and 403 (``JwtAuthorizer(on_refusal=record_refusal)``):
    outcome ``refused``, action ``token.refused`` or ``permission.refused``. The
    middleware then leaves that response alone, so a refusal is one entry.
:func:`record`
    For anything else a route wants on the record.

A route may refine the middleware's entry: ``request.state.audit_target`` replaces the
target (for instance a token id, which is not in the path) and ``request.state.
audit_details`` (a small mapping) is added to the details.

Entries name the caller as :class:`~lucid_sessions.api.auth.Principal` left on
``request.state.principal`` (``anonymous`` / ``none`` when there is none) and carry the
request id. An append that fails is logged (never with a token or a body) and counted in
``lucid_audit_append_failures_total``; the client's answer is not changed by it.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from prometheus_client import Counter
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lucid_sessions.api.auth import Principal
from lucid_sessions.api.errors import request_id_of
from lucid_sessions.audit import MAX_TEXT, AuditEvent, DetailValue
from lucid_sessions.observability import Metrics

__all__ = [
    "AUDITED_PERMISSIONS",
    "UNAUDITED_ROUTES",
    "AuditMiddleware",
    "action_for",
    "record",
    "record_refusal",
]

log = logging.getLogger("lucid_sessions.api")

AUDITED_PERMISSIONS = frozenset(
    {
        "sessions:create",
        "sessions:update",
        "sessions:delete",
        "sessions:control",
        "chunks:download",
        "pipeline:control",
    }
)
"""Routes needing one of these are recorded by :class:`AuditMiddleware`."""
UNAUDITED_ROUTES = frozenset({"/api/v1/sessions/{session_id}/frames"})
"""Audited by permission, left out by design (see the module)."""

_API_PREFIX = "/api/v1/"
_VERBS = {"POST": "create", "PATCH": "update", "PUT": "update", "DELETE": "delete", "GET": "read"}
_ANONYMOUS = Principal(subject="anonymous", role="none")
_QUERY_DETAILS = ("from", "to")
_failure_counters: weakref.WeakKeyDictionary[Metrics, Counter] = weakref.WeakKeyDictionary()


def _count_failure(metrics: Metrics) -> None:
    """Count a failed append in ``metrics``' registry (the counter is made on first use;
    counting is best effort and never raises)."""
    with contextlib.suppress(ValueError):
        counter = _failure_counters.get(metrics)
        if counter is None:
            counter = Counter(
                "lucid_audit_append_failures",
                "Audit entries that could not be appended (the request was answered anyway).",
                registry=metrics.registry,
            )
            _failure_counters[metrics] = counter
        counter.inc()


def _detail(value: object) -> DetailValue:
    if value is None or isinstance(value, bool | int):
        return value
    return _text(value)


def _text(value: object) -> str:
    """A field value the log accepts: text, valid Unicode, at most MAX_TEXT characters."""
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "replace").decode("utf-8")[:MAX_TEXT]


def action_for(method: str, template: str) -> str:
    """``noun.verb`` for a route: ``POST /api/v1/sessions`` is ``session.create``,
    ``.../sessions/{session_id}/start`` is ``session.start``, ``.../chunks/{sequence}/
    download`` is ``chunk.download``, ``/api/v1/pipeline/pause`` is ``pipeline.pause``."""
    segments = template.removeprefix(_API_PREFIX).strip("/").split("/")
    static = [s for s in segments if s and not s.startswith("{")]
    if not static:
        return f"api.{method.lower()}"
    if len(static) >= 2 and segments[-1] == static[-1]:
        noun, verb = static[-2], static[-1]
    else:
        noun, verb = static[-1], _VERBS.get(method.upper(), method.lower())
    return f"{noun.removesuffix('s')}.{verb}"


def _target(scope: Scope, fallback: str) -> str:
    params = scope.get("path_params") or {}
    session = params.get("session_id")
    if session is None:
        return fallback
    sequence = params.get("sequence")
    return f"{session}/{sequence}" if sequence is not None else str(session)


def _template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "<unmatched>"


async def _append(
    app_state: Any,
    *,
    principal: Principal | None,
    request_id: str,
    action: str,
    target: str,
    outcome: str,
    details: Mapping[str, DetailValue] | None,
) -> None:
    """Append one entry through the app's Storage; failures are logged and counted."""
    context = getattr(app_state, "lucid", None)
    if context is None:
        return
    who = principal if isinstance(principal, Principal) else _ANONYMOUS
    try:
        event = AuditEvent(
            subject=_text(who.subject),
            role=_text(who.role),
            action=_text(action),
            target=_text(target),
            outcome=_text(outcome),
            request_id=_text(request_id),
            details={_text(k): _detail(v) for k, v in list((details or {}).items())[:32]},
        )
        await context.storage.append_audit(event)
    except Exception as exc:  # the answer must not depend on the log; see the module
        _count_failure(context.metrics)
        log.error(
            "audit append failed action=%s target=%s request_id=%s error=%s",
            action,
            target,
            request_id,
            type(exc).__name__,
        )


async def record(
    request: Request,
    *,
    action: str,
    target: str,
    outcome: str,
    details: Mapping[str, DetailValue] | None = None,
) -> None:
    """Append an entry for ``request``'s caller (see the module). Never raises."""
    await _append(
        request.app.state,
        principal=getattr(request.state, "principal", None),
        request_id=request_id_of(request),
        action=action,
        target=target,
        outcome=outcome,
        details=details,
    )


async def record_refusal(
    request: Request, kind: str, reason: str, principal: Principal | None = None
) -> None:
    """The auth layer's refusal hook (fits ``JwtAuthorizer(on_refusal=...)``): one entry,
    outcome ``refused``, action ``token.refused`` (401) or ``permission.refused`` (403).
    ``reason`` is a short code or sentence, never the token. Never raises."""
    request.state.audit_refusal = True
    scope = request.scope
    template = _template(scope)
    await _append(
        request.app.state,
        principal=principal or getattr(request.state, "principal", None),
        request_id=request_id_of(request),
        action=f"{kind}.refused",
        target=_target(scope, template),
        outcome="refused",
        details={"reason": reason, "method": request.method, "route": template},
    )


class AuditMiddleware:
    """Records the routes of :data:`AUDITED_PERMISSIONS` (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._permissions: dict[int, str | None] = {}

    def _permission(self, route: object) -> str | None:
        key = id(route)
        if key not in self._permissions:
            found = None
            dependant = getattr(route, "dependant", None)
            for dep in getattr(dependant, "dependencies", ()):
                permission = getattr(dep.call, "permission", None)
                if isinstance(permission, str):
                    found = permission
            self._permissions[key] = found
        return self._permissions[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._record(scope, state, message)
            await send(message)

        await self.app(scope, receive, send_recorded)

    async def _record(self, scope: Scope, state: dict[str, Any], message: Message) -> None:
        route = scope.get("route")
        template = _template(scope)
        if route is None or template in UNAUDITED_ROUTES:
            return
        if self._permission(route) not in AUDITED_PERMISSIONS:
            return
        status = int(message["status"])
        if status in (401, 403) and state.get("audit_refusal"):
            return  # record_refusal has it
        method = scope["method"]
        action = action_for(method, template)
        target = state.get("audit_target")
        if not isinstance(target, str):
            target = _target(scope, "")
            if not target and status < 400:
                # a created session is named by its Location
                location = Headers(raw=message.get("headers", [])).get("location", "")
                target = location.rstrip("/").rsplit("/", 1)[-1]
            target = target or action.split(".", 1)[0]
        details: dict[str, DetailValue] = {"method": method, "route": template, "status": status}
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        for name in _QUERY_DETAILS:  # an export's excerpt; never the whole query string
            if name in query:
                details[name] = query[name]
        extra = state.get("audit_details")
        if isinstance(extra, Mapping):
            details.update({str(k): _detail(v) for k, v in extra.items()})
        rid = state.get("request_id")
        await _append(
            scope["app"].state,
            principal=state.get("principal"),
            request_id=rid if isinstance(rid, str) else "",
            action=action,
            target=target,
            outcome="success" if status < 400 else f"failure:{status}",
            details=details,
        )
