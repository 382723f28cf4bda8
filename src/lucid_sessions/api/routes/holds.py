"""Legal hold, for admins only (permission ``sessions:hold``).

``PUT /api/v1/sessions/{id}/hold`` with ``{"reason": ...}`` puts a session under legal
hold; ``DELETE /api/v1/sessions/{id}/hold?reason=...`` lifts it; ``GET`` on the same path
reads it and ``GET /api/v1/holds`` lists every held session. A held session is never
deleted, by retention or by hand (``DELETE /sessions/{id}`` answers 409) until the hold is
lifted. Every set and lift (and every failed attempt) is in the audit log, with its
reason (see :mod:`lucid_sessions.archive.retention`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from lucid_sessions.api.audit import record
from lucid_sessions.api.auth import Principal, authorize
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, SessionId
from lucid_sessions.archive.retention import hold_of, lift_hold, list_holds, set_hold
from lucid_sessions.audit import MAX_TEXT
from lucid_sessions.errors import LucidError
from lucid_sessions.storage.metadata import SessionRecord

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["legal hold"], responses=ERRORS)
_hold = [Depends(authorize("sessions:hold"))]


class HoldIn(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


class HoldOut(BaseModel):
    session_id: str
    held: bool
    reason: str | None = None
    by: str | None = None
    at: str | None = None


class HoldListOut(BaseModel):
    items: list[HoldOut]


def _out(session: SessionRecord) -> HoldOut:
    hold = hold_of(session)
    if hold is None:
        return HoldOut(session_id=session.session_id, held=False)
    return HoldOut(
        session_id=session.session_id,
        held=True,
        reason=str(hold.get("reason", "")),
        by=str(hold.get("by", "")),
        at=str(hold.get("at", "")),
    )


def _who(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    return principal.subject if isinstance(principal, Principal) else "anonymous"


async def _audited(request: Request, action: str, session_id: str, reason: str, work: Any) -> Any:
    details: dict[str, str | int | bool | None] = {"reason": reason}
    try:
        result = await work
    except LucidError as exc:
        await record(
            request,
            action=action,
            target=session_id,
            outcome=f"failure:{exc.code}",
            details={**details, "error": str(exc)[:MAX_TEXT]},
        )
        raise
    await record(request, action=action, target=session_id, outcome="success", details=details)
    return result


@router.get("/holds", dependencies=_hold, summary="List the sessions under legal hold")
async def list_held(ctx: Ctx) -> HoldListOut:
    return HoldListOut(items=[_out(s) for s in await list_holds(ctx.storage)])


@router.get("/sessions/{session_id}/hold", dependencies=_hold, summary="A session's legal hold")
async def get_hold(session_id: SessionId, ctx: Ctx) -> HoldOut:
    return _out(await ctx.storage.get_session(session_id))


@router.put(
    "/sessions/{session_id}/hold",
    dependencies=_hold,
    summary="Put a session under legal hold (with a reason)",
)
async def put_hold(session_id: SessionId, body: HoldIn, request: Request, ctx: Ctx) -> HoldOut:
    session = await _audited(
        request,
        "session.hold",
        session_id,
        body.reason,
        set_hold(ctx.storage, session_id, reason=body.reason, by=_who(request)),
    )
    return _out(session)


@router.delete(
    "/sessions/{session_id}/hold",
    dependencies=_hold,
    summary="Lift a session's legal hold (with a reason)",
)
async def delete_hold(
    session_id: SessionId,
    request: Request,
    ctx: Ctx,
    reason: Annotated[str, Query(min_length=1, max_length=MAX_TEXT)],
) -> HoldOut:
    session, _ = await _audited(
        request,
        "session.hold_lift",
        session_id,
        reason,
        lift_hold(ctx.storage, session_id, reason=reason),
    )
    return _out(session)
