"""The audit log, for auditors and admins: ``GET /api/v1/audit``.

Entries come oldest first, filtered by exact subject, action, target and outcome and by
time (``since`` inclusive, ``until`` exclusive), and page by ``seq``: pass the
``next_after`` of one page as ``after`` to get the next (keyset paging, so entries
appended meanwhile never shift a page). Each entry carries its ``prev`` and ``hash``, so a
client can check the chain itself; ``lucid-sessions audit verify`` checks it in full,
with the signed heads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx
from lucid_sessions.audit import MAX_TEXT, AuditEntry, audit_time
from lucid_sessions.errors import InvalidConfigError

__all__ = ["AuditEntryOut", "AuditPageOut", "router"]

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"], responses=ERRORS)


class AuditEntryOut(BaseModel):
    seq: int
    """Where the entry is stored; the chain (``prev``) is what orders the log."""
    time: str
    """RFC 3339 UTC with microseconds."""
    subject: str
    role: str
    action: str
    """``noun.verb``: ``session.create``, ``chunk.download``, ``token.refused``..."""
    target: str
    """A session id, ``session/sequence``, ``pipeline``..."""
    outcome: str
    """``success``, ``failure:<status>`` or ``refused``."""
    request_id: str
    details: dict[str, Any]
    prev: str
    """Hex SHA-256 of the entry before (64 zeros for the first)."""
    hash: str
    """Hex SHA-256 of this entry's content and ``prev``."""


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    limit: int
    next_after: int | None
    """Pass as ``after`` for the next page; null on the last one."""
    has_next: bool


def _out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=entry.seq,
        time=entry.time,
        subject=entry.subject,
        role=entry.role,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        request_id=entry.request_id,
        details=dict(entry.details),
        prev=entry.prev,
        hash=entry.hash,
    )


Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)]
Moment = Annotated[
    datetime | None,
    Query(description="RFC 3339; without an offset it is taken as UTC"),
]


@router.get(
    "",
    dependencies=[Depends(authorize("audit:read"))],
    summary="Audit log entries, oldest first, with filters and a cursor",
)
async def list_audit(
    ctx: Ctx,
    subject: Text = None,
    action: Text = None,
    target: Text = None,
    outcome: Text = None,
    since: Moment = None,
    until: Moment = None,
    after: Annotated[
        int, Query(ge=0, le=2**62, description="Entries after this seq (a page's next_after)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page")] = 100,
) -> AuditPageOut:
    since_text = None if since is None else audit_time(since)
    until_text = None if until is None else audit_time(until)
    if since_text is not None and until_text is not None and until_text < since_text:
        raise InvalidConfigError(
            "until: must not be before since",
            details={"errors": [{"field": "until", "message": "before since"}]},
        )
    page = await ctx.storage.list_audit(
        subject=subject,
        action=action,
        target=target,
        outcome=outcome,
        since=since_text,
        until=until_text,
        after_seq=after,
        limit=limit,
    )
    return AuditPageOut(
        items=[_out(entry) for entry in page.items],
        limit=limit,
        next_after=page.next_after,
        has_next=page.next_after is not None,
    )
