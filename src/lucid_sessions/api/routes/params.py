"""Path and query parameters shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from lucid_sessions.api.context import ApiContext, get_context
from lucid_sessions.api.errors import ErrorBody
from lucid_sessions.api.models import ID_PATTERN

__all__ = ["API_PREFIX", "ERRORS", "Ctx", "Limit", "Offset", "SequenceNo", "SessionId"]

API_PREFIX = "/api/v1"
Ctx = Annotated[ApiContext, Depends(get_context)]
SessionId = Annotated[
    str,
    Path(pattern=ID_PATTERN, description="A session id: 1-128 of A-Z a-z 0-9 _ -"),
]
SequenceNo = Annotated[int, Path(ge=0, le=2**53, description="A chunk's sequence number")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip")]

ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (404, "Not found (LUCID_ERR_3001, LUCID_ERR_3005)"),
        (409, "Conflict with the session's state (LUCID_ERR_3003, 3004, 3006)"),
        (422, "Invalid request (LUCID_ERR_3002)"),
        (429, "Rate limited (LUCID_ERR_3010)"),
        (500, "Internal error"),
        (503, "A component is unavailable"),
    )
}
"""The common error answers, for the OpenAPI document."""
