"""The one middleware: request id, request metrics, access log, last-resort 500.

A plain ASGI middleware (not ``BaseHTTPMiddleware``), so streamed bodies pass through
untouched. It guarantees that every answer carries ``X-Request-ID`` (the caller's when
it is sane, else a fresh one), that every request is counted under its route template
(``<unmatched>`` for unknown paths, so label values stay bounded), and that an
exception escaping a route becomes the common 500 body instead of a stack trace.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lucid_sessions.api.errors import internal_error_response, new_request_id, sane_request_id
from lucid_sessions.observability import Metrics

__all__ = ["RequestContextMiddleware"]

log = logging.getLogger("lucid_sessions.api")
UNMATCHED = "<unmatched>"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = sane_request_id(Headers(scope=scope).get("x-request-id")) or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        head_sent = False
        method = scope["method"]

        async def send_with_id(message: Message) -> None:
            nonlocal head_sent
            if message["type"] == "http.response.start":
                head_sent = True
                MutableHeaders(scope=message)["X-Request-ID"] = rid
                status = int(message["status"])
                route = route_template(scope)
                elapsed = time.perf_counter() - started
                self.metrics.api_request(method, route, status, elapsed)
                log.debug(
                    "api request method=%s route=%s status=%d duration_ms=%.1f request_id=%s",
                    method,
                    route,
                    status,
                    elapsed * 1000,
                    rid,
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("api unexpected error route=%s request_id=%s", route_template(scope), rid)
            if head_sent:
                raise
            await internal_error_response(rid)(scope, receive, send_with_id)
