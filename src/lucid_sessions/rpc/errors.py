"""Errors across the wire: a LucidError on the server is the same LucidError on the client.

Server side, :func:`abort_with` turns an exception into a gRPC status and, for a
:class:`~lucid_sessions.errors.LucidError` (or a ``ValueError``, which the metadata
store raises for a programming error), a trailing metadata entry ``lucid-error-bin``
holding JSON ``{"type", "bases", "message", "details"}``. Client side,
:func:`error_from_rpc` rebuilds the same class with the same message and details. The
class is looked up among the LucidError subclasses already imported on the client
(never imported by name from the wire); a class the client does not know comes back as
its nearest known base (``bases`` lists the server's class hierarchy).

Status codes (what a generic gRPC client, a proxy or a dashboard sees), by the nearest
class in the exception's hierarchy:

- NOT_FOUND: NotFoundError, ChunkNotFoundError
- ALREADY_EXISTS: AlreadyExistsError
- INVALID_ARGUMENT: InvalidConfigError, FormatError, ValueError
- FAILED_PRECONDITION: NotRecordingError, PipelineError (capture errors included),
  WrongKeyError (the loaded master key is not the one the data needs)
- UNAVAILABLE: Unavailable
- RESOURCE_EXHAUSTED: RateLimitError
- UNAUTHENTICATED: UnauthenticatedError; PERMISSION_DENIED: ForbiddenError
- DATA_LOSS: AuthenticationError (a ciphertext failed its MAC)
- INTERNAL: StorageError, CompressionError, EncryptionError, LucidError itself, and
  anything else

A very long message is cut and oversized details are replaced by
``{"truncated": true}`` so the entry fits gRPC's 8 KiB metadata limit.

Any other exception is logged on the server with its traceback and crosses only as
"internal error in <method>": no message, class or traceback leaks. A failure of the
wire itself (peer unreachable, deadline exceeded, call cancelled by the peer) becomes
:class:`~lucid_sessions.cluster.interfaces.Unavailable`, the one error callers may
retry; any other status without a lucid error entry becomes
:class:`~lucid_sessions.errors.PipelineError` naming the status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
import grpc.aio

from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ChunkNotFoundError,
    CompressionError,
    EncryptionError,
    ForbiddenError,
    FormatError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    NotRecordingError,
    PipelineError,
    RateLimitError,
    StorageError,
    UnauthenticatedError,
    WrongKeyError,
)

__all__ = ["ERROR_METADATA_KEY", "abort_with", "error_from_rpc", "status_for"]

log = logging.getLogger(__name__)

ERROR_METADATA_KEY = "lucid-error-bin"
"""Trailing metadata key carrying the error as JSON (``-bin``: any UTF-8 is allowed)."""

_MAX_PAYLOAD = 3000
"""Bytes of the JSON entry at most (base64 on the wire). gRPC refuses a response whose
metadata passes 8 KiB, and the error would then be lost: a longer message is cut and
oversized details are replaced by ``{"truncated": true}``."""
_MAX_STATUS_TEXT = 300
"""Characters of the message repeated as the gRPC status text (for generic tools)."""

_STATUS: dict[type[BaseException], grpc.StatusCode] = {
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    ChunkNotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    FormatError: grpc.StatusCode.INVALID_ARGUMENT,
    ValueError: grpc.StatusCode.INVALID_ARGUMENT,
    NotRecordingError: grpc.StatusCode.FAILED_PRECONDITION,
    PipelineError: grpc.StatusCode.FAILED_PRECONDITION,
    WrongKeyError: grpc.StatusCode.FAILED_PRECONDITION,
    RateLimitError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    ForbiddenError: grpc.StatusCode.PERMISSION_DENIED,
    AuthenticationError: grpc.StatusCode.DATA_LOSS,
    StorageError: grpc.StatusCode.INTERNAL,
    CompressionError: grpc.StatusCode.INTERNAL,
    EncryptionError: grpc.StatusCode.INTERNAL,
    LucidError: grpc.StatusCode.INTERNAL,
}

_WIRE_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
"""Statuses without a lucid error entry that mean the call did not get through."""

_BUILTINS: dict[str, type[Exception]] = {"builtins.ValueError": ValueError}
"""Non-Lucid exceptions allowed across: ValueError is the store's "programming error"."""


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status for ``exc``: its nearest class in the table, INTERNAL otherwise."""
    for cls in type(exc).__mro__:
        code = _STATUS.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _crosses(exc: BaseException) -> bool:
    return isinstance(exc, LucidError) or type(exc) is ValueError


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, LucidError) else str(exc)


def _payload(exc: Exception) -> bytes:
    details: dict[str, object] = exc.details if isinstance(exc, LucidError) else {}
    body: dict[str, Any] = {
        "type": _name(type(exc)),
        "bases": [_name(c) for c in type(exc).__mro__[1:] if issubclass(c, LucidError)],
        "message": _message(exc),
        "details": details,
    }

    def dump() -> bytes:
        return json.dumps(body, default=str, ensure_ascii=False).encode()

    data = dump()
    if len(data) > _MAX_PAYLOAD:
        body["details"] = {"truncated": True}
        data = dump()
    while len(data) > _MAX_PAYLOAD:
        body["message"] = body["message"][: len(body["message"]) // 2]
        data = dump()
    return data


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], exc: Exception, method: str
) -> NoReturn:
    """End the call with the status (and lucid error entry) that stands for ``exc``."""
    if _crosses(exc):
        await context.abort(
            status_for(exc),
            _message(exc)[:_MAX_STATUS_TEXT],
            trailing_metadata=((ERROR_METADATA_KEY, _payload(exc)),),
        )
    log.error(
        "unexpected error in gRPC method",
        exc_info=exc,
        extra={"component": "rpc", "method": method},
    )
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
    raise AssertionError("ServicerContext.abort returned")  # it always raises


def _known_classes() -> dict[str, type[Exception]]:
    found: dict[str, type[Exception]] = dict(_BUILTINS)
    pending: list[type[LucidError]] = [LucidError]
    while pending:
        cls = pending.pop()
        found[_name(cls)] = cls
        pending.extend(cls.__subclasses__())
    return found


def _build(cls: type[Exception], message: str, details: dict[str, object]) -> Exception:
    if not issubclass(cls, LucidError):
        return cls(message)
    try:
        error = cls(message, details=details)
    except TypeError:  # a subclass with its own constructor: set the base fields directly
        error = cls.__new__(cls)
        LucidError.__init__(error, message, details=details)
    return error


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, bytes) else value.encode()
    return None


def _from_payload(payload: bytes) -> Exception | None:
    try:
        body = json.loads(payload)
        names = [body["type"], *body.get("bases", [])]
        message = str(body["message"])
        details = body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(details, dict):
        details = {}
    known = _known_classes()
    for name in names:
        cls = known.get(name) if isinstance(name, str) else None
        if cls is not None:
            return _build(cls, message, details)
    return LucidError(message, details=details)


def error_from_rpc(exc: grpc.aio.AioRpcError, method: str) -> Exception:
    """The exception a client raises for a failed call to ``method``."""
    payload = _metadata_value(exc.trailing_metadata(), ERROR_METADATA_KEY)
    if payload is not None:
        rebuilt = _from_payload(payload)
        if rebuilt is not None:
            return rebuilt
    code = exc.code()
    details: dict[str, object] = {"method": method, "grpc_status": code.name}
    text = exc.details() or ""
    if code in _WIRE_FAILURES:
        return Unavailable(f"{method}: {code.name.lower()}: {text}", details=details)
    return PipelineError(f"{method} failed with gRPC status {code.name}: {text}", details=details)
