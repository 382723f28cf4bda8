"""Sessions: create, read, list, update, delete, and the recording controls.

Reads go to Storage; every change goes through the Pipeline, which owns the state machine
and refuses what makes no sense in the session's state (409, LUCID_ERR_3006).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.models import LABEL_PATTERN, SessionCreate, SessionUpdate
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, Limit, Offset, SessionId
from lucid_sessions.api.views import SessionOut, SessionPageOut, session_out

__all__ = ["router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(prefix=f"{API_PREFIX}/sessions", tags=["sessions"], responses=ERRORS)

StatusFilter = Literal[
    "created",
    "starting",
    "recording",
    "paused",
    "stopped",
    "processing",
    "completed",
    "interrupted",
    "failed",
    "deleted",
]
LabelFilter = Annotated[str | None, Query(pattern=LABEL_PATTERN)]


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(authorize("sessions:create"))],
    summary="Create a session",
)
async def create_session(body: SessionCreate, ctx: Ctx, response: Response) -> SessionOut:
    record = await ctx.pipeline.create_session(body.spec(), password=body.password)
    log.info("api session created session_id=%s source=%s", record.session_id, body.source)
    response.headers["Location"] = f"/api/v1/sessions/{record.session_id}"
    return session_out(record)


@router.get(
    "",
    dependencies=[Depends(authorize("sessions:read"))],
    summary="List sessions",
)
async def list_sessions(
    ctx: Ctx,
    status: StatusFilter | None = None,
    project: LabelFilter = None,
    environment: LabelFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> SessionPageOut:
    page = await ctx.storage.list_sessions(
        status=status, project=project, environment=environment, limit=limit, offset=offset
    )
    return SessionPageOut(
        items=[session_out(r) for r in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_next=offset + len(page.items) < page.total,
    )


@router.get(
    "/{session_id}",
    dependencies=[Depends(authorize("sessions:read"))],
    summary="Get a session",
)
async def get_session(session_id: SessionId, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.storage.get_session(session_id))


@router.patch(
    "/{session_id}",
    dependencies=[Depends(authorize("sessions:update"))],
    summary="Change a session's name, labels or metadata",
)
async def update_session(session_id: SessionId, body: SessionUpdate, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.pipeline.update_session(session_id, body.changes()))


@router.delete(
    "/{session_id}",
    status_code=204,
    dependencies=[Depends(authorize("sessions:delete"))],
    summary="Delete a session with its chunks",
)
async def delete_session(session_id: SessionId, ctx: Ctx) -> Response:
    await ctx.pipeline.delete_session(session_id)
    log.info("api session deleted session_id=%s", session_id)
    return Response(status_code=204)


_control = [Depends(authorize("sessions:control"))]


@router.post("/{session_id}/start", dependencies=_control, summary="Start recording")
async def start_session(session_id: SessionId, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.pipeline.start_session(session_id))


@router.post("/{session_id}/stop", dependencies=_control, summary="Stop and finalise")
async def stop_session(session_id: SessionId, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.pipeline.stop_session(session_id))


@router.post("/{session_id}/pause", dependencies=_control, summary="Pause recording")
async def pause_session(session_id: SessionId, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.pipeline.pause_session(session_id))


@router.post("/{session_id}/resume", dependencies=_control, summary="Resume recording")
async def resume_session(session_id: SessionId, ctx: Ctx) -> SessionOut:
    return session_out(await ctx.pipeline.resume_session(session_id))
