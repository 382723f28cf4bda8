"""Path and query parameters shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from lucid_sessions.api.context import ApiContext, get_context
from lucid_sessions.api.errors import ErrorBody
from lucid_sessions.api.models import ID_PATTERN

__all__ = [
    "API_PREFIX",
    "ERRORS",
    "LIMIT_ERRORS",
    "Ctx",
    "Limit",
    "Offset",
    "SequenceNo",
    "SessionId",
]

API_PREFIX = "/api/v1"
Ctx = Annotated[ApiContext, Depends(get_context)]
SessionId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        min_length=1,
        max_length=128,
        description="A session id: 1-128 of A-Z a-z 0-9 _ -",
    ),
]
SequenceNo = Annotated[int, Path(ge=0, le=2**53, description="A chunk's sequence number")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip")]


def _responses(*table: tuple[int, str]) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in sorted(table)}


# Answers of RequestLimitsMiddleware and of any bug: every route can give them.
_LIMITS = (
    (408, "The request body stopped arriving (LUCID_ERR_3002)"),
    (413, "The request body is larger than the route accepts (LUCID_ERR_3002)"),
    (431, "Request header fields too large or too many (LUCID_ERR_3002)"),
    (500, "Internal error"),
    (504, "No answer in time; the request was abandoned (LUCID_ERR_3006)"),
)
LIMIT_ERRORS = _responses(*_LIMITS)
"""The error answers of a route without authentication or parameters (health)."""
ERRORS = _responses(
    (401, "missing, invalid, expired or revoked bearer token (LUCID_ERR_3011)"),
    (403, "the token's role lacks the permission (LUCID_ERR_3012)"),
    (404, "Not found (LUCID_ERR_3001, LUCID_ERR_3005)"),
    (409, "Conflict with the session's state (LUCID_ERR_3003, 3004, 3006)"),
    (422, "Invalid request (LUCID_ERR_3002)"),
    (429, "Rate limited (LUCID_ERR_3010)"),
    (502, "The remote desktop could not be used (LUCID_ERR_3006)"),
    (503, "A component is unavailable"),
    (507, "The storage is full (LUCID_ERR_3007)"),
    *_LIMITS,
)
"""The common error answers, for the OpenAPI document."""
