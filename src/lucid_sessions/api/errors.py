"""One error body for every failure, and the map from error codes to HTTP statuses.

Every non-2xx answer, whether raised by a component, by validation, by routing or by a
bug, has the body::

    {"error": {"code": "LUCID_ERR_3001", "message": "...", "details": {...},
               "request_id": "...", "timestamp": "2024-01-01T00:00:00.000000Z"}}

=================  ===============================================  ======
code               raised as                                        status
=================  ===============================================  ======
LUCID_ERR_3001     NotFoundError; an unknown route                  404
LUCID_ERR_3002     InvalidConfigError; request validation; a         422
                   malformed request (405, 408, 413, 415, 431
                   keep theirs: see :mod:`.limits`)
LUCID_ERR_3003     AlreadyExistsError                               409
LUCID_ERR_3004     NotRecordingError                                409
LUCID_ERR_3005     ChunkNotFoundError                               404
LUCID_ERR_3006     PipelineError (an invalid state transition)      409
                   Unavailable (a component cannot be reached)      503
                   CaptureError (the remote desktop failed)         502
                   any unexpected exception                         500
                   no answer within the request timeout             504
LUCID_ERR_3007     StorageError                                     500
                   StorageError caused by a full disk or quota      507
LUCID_ERR_3008     CompressionError                                 500
LUCID_ERR_3009     EncryptionError                                  500
LUCID_ERR_3010     RateLimitError (with Retry-After)                429
LUCID_ERR_3011     UnauthenticatedError (with WWW-Authenticate)     401
LUCID_ERR_3012     ForbiddenError                                   403
=================  ===============================================  ======

3002 is answered 422 everywhere, so a body that fails validation at the edge and a value
a component refuses look the same to a client. For 5xx answers the message is a fixed
sentence and ``details`` is empty: the real cause goes to the log under the request id.
No answer carries a stack trace, and file system paths are cut out of every message.
"""

from __future__ import annotations

import errno
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import (
    AlreadyExistsError,
    CaptureError,
    ChunkNotFoundError,
    CompressionError,
    EncryptionError,
    ForbiddenError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    NotRecordingError,
    PipelineError,
    RateLimitError,
    StorageError,
    UnauthenticatedError,
)
from lucid_sessions.storage.metadata import utc_now

__all__ = [
    "ErrorBody",
    "ErrorInfo",
    "error_response",
    "install_error_handlers",
    "request_id_of",
    "status_for",
]

log = logging.getLogger("lucid_sessions.api")

INTERNAL_CODE = "LUCID_ERR_3006"
_BY_CLASS: tuple[tuple[type[LucidError], int], ...] = (
    (NotFoundError, 404),
    (InvalidConfigError, 422),
    (AlreadyExistsError, 409),
    (NotRecordingError, 409),
    (ChunkNotFoundError, 404),
    (Unavailable, 503),
    (CaptureError, 502),
    (PipelineError, 409),
    (StorageError, 500),
    (CompressionError, 500),
    (EncryptionError, 500),
    (RateLimitError, 429),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
)
_BY_CODE = {
    "LUCID_ERR_3001": 404,
    "LUCID_ERR_3002": 422,
    "LUCID_ERR_3003": 409,
    "LUCID_ERR_3004": 409,
    "LUCID_ERR_3005": 404,
    "LUCID_ERR_3006": 409,
    "LUCID_ERR_3007": 500,
    "LUCID_ERR_3008": 500,
    "LUCID_ERR_3009": 500,
    "LUCID_ERR_3010": 429,
    "LUCID_ERR_3011": 401,
    "LUCID_ERR_3012": 403,
}
_GENERIC = {
    500: "an internal error occurred",
    502: "the remote desktop could not be used",
    503: "a component is unavailable; try again",
    507: "the storage is full",
}
_GENERIC_BY_CODE = {
    "LUCID_ERR_3007": "a storage operation failed",
    "LUCID_ERR_3008": "compressing or decompressing a chunk failed",
    "LUCID_ERR_3009": "an encryption operation failed",
}
_FULL = {errno.ENOSPC, errno.EDQUOT}
# An absolute path with at least two components: /var/lib/x, /tmp/a/b.chunk.
_PATH = re.compile(r"(?<![\w.:/-])/(?:[^\s/'\"]+/)+[^\s'\":,;)]*")
# Also: any quoted absolute path (an OSError's "'/data'", spaces and all); a path after
# "file:" (SQLite URIs); "~/..."; Windows paths.
_QUOTED_PATH = re.compile(r"""(['"])(?:file:)?/[^'"\n]*\1""")
_OTHER_PATH = re.compile(r"""(?:(?<=file:)/|(?<![\w/])~/|(?<![\w])[A-Za-z]:\\)[^\s'":,;)]*""")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str
    timestamp: str


class ErrorBody(BaseModel):
    """The body of every non-2xx answer."""

    error: ErrorInfo


def scrub(text: str) -> str:
    """``text`` with absolute file system paths replaced by ``<path>``."""
    text = _QUOTED_PATH.sub(r"\1<path>\1", text)
    return _PATH.sub("<path>", _OTHER_PATH.sub("<path>", text))


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """An incoming X-Request-ID if it is short and plain, else None."""
    return value if value is not None and _SANE_REQUEST_ID.match(value) else None


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if not isinstance(rid, str):
        rid = new_request_id()
        request.state.request_id = rid
    return rid


def status_for(exc: LucidError) -> int:
    """The HTTP status of a component error (see the module table)."""
    for cls, status in _BY_CLASS:
        if isinstance(exc, cls):
            if status == 500 and isinstance(exc, StorageError) and _disk_full(exc):
                return 507
            return status
    return _BY_CODE.get(exc.code, 500)


def _disk_full(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    trusted_message: bool = False,
) -> JSONResponse:
    """The error body; messages not marked trusted have file system paths cut out."""
    body = {
        "error": {
            "code": code,
            "message": message if trusted_message else scrub(message),
            "details": _scrub_value(jsonable_encoder(dict(details or {}))),
            "request_id": request_id,
            "timestamp": utc_now(),
        }
    }
    all_headers = {"X-Request-ID": request_id, **(headers or {})}
    return JSONResponse(body, status_code=status, headers=all_headers)


def internal_error_response(request_id: str) -> JSONResponse:
    return error_response(500, INTERNAL_CODE, _GENERIC[500], request_id)


def lucid_error_response(exc: LucidError, request_id: str, route: str) -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status >= 500:
        log.error(
            "api error status=%d code=%s route=%s request_id=%s error=%s",
            status,
            exc.code,
            route,
            request_id,
            exc.message,
        )
        if status == 502:
            message = exc.message
        elif status in _GENERIC and status != 500:
            message = _GENERIC[status]
        else:
            message = _GENERIC_BY_CODE.get(exc.code, _GENERIC[500])
        return error_response(status, exc.code, message, request_id)
    if status == 429:
        retry = exc.details.get("retry_after_s", 60)
        seconds = int(retry) if isinstance(retry, int | float) else 60
        headers["Retry-After"] = str(max(1, seconds))
    elif status == 401:
        # RFC 6750: name the scheme; say why only for a token that was sent.
        challenge = 'Bearer realm="lucid-sessions"'
        if exc.details.get("reason") != "missing":
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    details = _safe_details(exc.details)
    return error_response(
        status, exc.code, exc.message, request_id, details=details, headers=headers
    )


def _safe_details(details: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(jsonable_encoder(dict(details)))
    except (TypeError, ValueError):
        return {}


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "<unmatched>")


def validation_details(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """A message naming every bad field, and one entry per error, never echoing input."""
    items: list[dict[str, Any]] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc else "body"
        path = loc[1:] if where in ("body", "query", "path", "header", "cookie") else loc
        kind = str(error.get("type", "value_error"))
        if kind == "json_invalid":
            path = []
        field = ".".join(path) or where
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        items.append({"field": field, "location": where, "message": message, "type": kind})
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in items)
    return summary or "the request is not valid", items


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, items = validation_details(exc.errors())
    return error_response(
        422, "LUCID_ERR_3002", message, request_id_of(request), details={"errors": items}
    )


async def _on_lucid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LucidError)
    return lucid_error_response(exc, request_id_of(request), _route_of(request))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        path = request.url.path
        shown = path if len(path) <= 200 else f"{path[:200]}..."  # do not mirror huge input
        code, message = "LUCID_ERR_3001", f"nothing at {request.method} {shown}"
    elif status == 400:
        # FastAPI's "There was an error parsing the body" (JSON that is not UTF-8, say):
        # a malformed request is 3002, answered 422 like every other.
        status, code = 422, "LUCID_ERR_3002"
        message = "body: the request body could not be parsed"
    elif status == 405:
        code, message = "LUCID_ERR_3002", f"method {request.method} is not allowed here"
    elif status == 429:
        code, message = "LUCID_ERR_3010", "too many requests"
    elif status >= 500:
        code, message = INTERNAL_CODE, _GENERIC.get(status, _GENERIC[500])
    else:
        code = "LUCID_ERR_3002"
        message = exc.detail if isinstance(exc.detail, str) else "the request is not valid"
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "x-request-id"}
    return error_response(
        status, code, message, request_id_of(request), headers=headers, trusted_message=True
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    log.error("api unexpected error route=%s request_id=%s", _route_of(request), rid, exc_info=exc)
    return internal_error_response(rid)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(LucidError, _on_lucid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
