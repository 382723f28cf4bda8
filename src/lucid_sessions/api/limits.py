"""Hostile input: caps on request bodies and header fields, and request timeouts.

:class:`RequestLimitsMiddleware` stands in front of every route, inside
:class:`~lucid_sessions.api.middleware.RequestContextMiddleware` (so its answers carry the
request id and are counted), and answers in the common error body:

======  ==============  ==========================================================
status  code            when
======  ==============  ==========================================================
431     LUCID_ERR_3002  too many header fields, one too long, or all too long together
413     LUCID_ERR_3002  a body larger than the route's cap, whether Content-Length says
                        so up front or a chunked body grows past it
408     LUCID_ERR_3002  the client stops sending the body for ``body_timeout_s``
504     LUCID_ERR_3006  no answer has started ``request_timeout_s`` after the body arrived
======  ==============  ==========================================================

The body cap is ``ApiSettings.max_body_bytes`` for every route except the frame ingest
route (``POST /api/v1/sessions/{id}/frames``), which takes ``max_frame_bytes``: a raw 8K
frame is ~100 MB, a JSON body has no business being more than a few KiB.

It is a plain ASGI middleware, not ``BaseHTTPMiddleware``: a streamed download or export
passes through untouched, and the handler timeout stops counting as soon as an answer's
head is sent, so a long export is never cut. Oversized request lines and headers are
refused even earlier, by uvicorn, with the options :func:`uvicorn_limits` derives from the
same settings.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lucid_sessions.api.context import ApiSettings
from lucid_sessions.api.errors import INTERNAL_CODE, error_response, new_request_id

__all__ = ["FRAMES_ROUTE", "RequestLimitsMiddleware", "uvicorn_limits"]

log = logging.getLogger("lucid_sessions.api")

FRAMES_ROUTE = re.compile(r"^/api/v1/sessions/[^/]+/frames\Z")
"""The one route whose body may exceed ``max_body_bytes`` (decoded path, method POST)."""
_CLIENT_CODE = "LUCID_ERR_3002"
_REQUEST_LINE_ROOM = 8 * 1024
"""Bytes uvicorn allows for the request line on top of the header fields."""


class LimitExceeded(HTTPException):
    """A request broke one of the limits; raised from ``receive`` inside a route, so the
    app's HTTPException handler answers it in the common body (and, should a route
    swallow it, the middleware answers it anyway)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, headers={"Connection": "close"})


def _mib(size: int) -> str:
    return f"{size} bytes" if size < 1024 * 1024 else f"{size} bytes ({size / 2**20:g} MiB)"


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    def body_cap(self, method: str, path: str) -> int:
        """The largest body this request may carry."""
        if method == "POST" and FRAMES_ROUTE.match(path):
            return self.settings.max_frame_bytes
        return self.settings.max_body_bytes

    def header_problem(self, scope: Scope) -> str | None:
        """Why the request's header fields are refused (431), or None."""
        settings = self.settings
        fields: list[tuple[bytes, bytes]] = scope.get("headers") or []
        if len(fields) > settings.max_header_count:
            return (
                f"the request has {len(fields)} header fields; at most "
                f"{settings.max_header_count} are accepted"
            )
        total = 0
        for name, value in fields:
            size = len(name) + len(value)
            if size > settings.max_header_bytes:
                shown = name[:64].decode("latin-1")
                return (
                    f"header field {shown!r} is {size} bytes; at most "
                    f"{settings.max_header_bytes} are accepted per field"
                )
            total += size + 4  # ": " and CRLF, as on the wire
        if total > settings.max_headers_total_bytes:
            return (
                f"the request header fields total {total} bytes; at most "
                f"{settings.max_headers_total_bytes} are accepted"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        rid = _request_id(scope)
        problem = self.header_problem(scope)
        if problem is not None:
            await _answer(scope, receive, send, rid, LimitExceeded(431, problem))
            return
        cap = self.body_cap(scope["method"], scope["path"])
        too_large = LimitExceeded(413, f"the request body must be at most {_mib(cap)}")
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await _answer(scope, receive, send, rid, too_large)
            return

        refusal: LimitExceeded | None = None
        head_sent = False
        replaced = False
        body_done = False
        received = 0
        deadline = anyio.CancelScope(deadline=anyio.current_time() + settings.request_timeout_s)

        async def limited_receive() -> Message:
            """``receive`` with the body cap and the idle timeout while a body arrives;
            afterwards (the disconnect a streamed answer waits for) it is left alone."""
            nonlocal refusal, body_done, received
            if body_done:
                return await receive()
            if refusal is not None:
                raise refusal
            with anyio.move_on_after(settings.body_timeout_s) as idle:
                message = await receive()
            if idle.cancelled_caught:
                refusal = LimitExceeded(
                    408, f"the request body stopped arriving for {settings.body_timeout_s:g} s"
                )
                raise refusal
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refusal = too_large
                    raise refusal
                body_done = not message.get("more_body", False)
                if not head_sent:
                    # The handler's time counts from the last piece of body.
                    deadline.deadline = anyio.current_time() + settings.request_timeout_s
            else:
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal head_sent, replaced
            if message["type"] == "http.response.start":
                if refusal is not None and not head_sent:
                    # A route turned the refusal into some other answer: answer the limit.
                    head_sent = replaced = True
                    await _answer(scope, receive, send, rid, refusal)
                    return
                head_sent = True
                deadline.deadline = math.inf  # never cut a streamed answer once it started
            elif replaced and message["type"] == "http.response.body":
                return  # the body of the answer replaced above
            await send(message)

        try:
            with deadline:
                await self.app(scope, limited_receive, guarded_send)
        except LimitExceeded as exc:
            if replaced:
                return  # already answered
            if head_sent:
                raise
            await _answer(scope, receive, send, rid, exc)
            return
        if deadline.cancelled_caught and not head_sent:
            log.warning(
                "api request timed out method=%s path=%s timeout_s=%g request_id=%s",
                scope["method"],
                scope["path"],
                settings.request_timeout_s,
                rid,
            )
            response = error_response(
                504,
                INTERNAL_CODE,
                f"no answer within {settings.request_timeout_s:g} s; the request was abandoned",
                rid,
                trusted_message=True,
            )
            await response(scope, receive, send)


def _request_id(scope: Scope) -> str:
    rid = scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


async def _answer(scope: Scope, receive: Receive, send: Send, rid: str, exc: LimitExceeded) -> None:
    response = error_response(
        exc.status_code,
        _CLIENT_CODE,
        exc.detail,
        rid,
        headers=exc.headers,
        trusted_message=True,
    )
    await response(scope, receive, send)


def uvicorn_limits(settings: ApiSettings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments that refuse hostile connections before the app.

    h11 is named explicitly because only it honours ``h11_max_incomplete_event_size``
    (httptools would be picked when installed): a request line and header block that is
    still incomplete past the app's own header cap plus room for the URL is refused with
    400 and never buffered further (a complete head that arrived at once reaches the app,
    which answers 431). Idle keep-alive connections close after ``keep_alive_timeout_s``;
    beyond ``max_concurrency`` connections and tasks uvicorn answers 503.
    """
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_headers_total_bytes + _REQUEST_LINE_ROOM,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_concurrency,
    }
