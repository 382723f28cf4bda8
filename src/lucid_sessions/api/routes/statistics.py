"""Statistics of one session and of the whole system."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, SessionId
from lucid_sessions.api.stats import (
    SessionStatistics,
    SystemStatistics,
    session_statistics,
    system_statistics,
)

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["statistics"], responses=ERRORS)


@router.get(
    "/sessions/{session_id}/statistics",
    dependencies=[Depends(authorize("statistics:read"))],
    summary="Duration, frames, drops, bytes and compression of one session",
)
async def get_session_statistics(session_id: SessionId, ctx: Ctx) -> SessionStatistics:
    return await session_statistics(ctx.storage, ctx.recorder, session_id)


@router.get(
    "/statistics",
    dependencies=[Depends(authorize("statistics:read"))],
    summary="Sessions by status, chunks and bytes stored, disk space",
)
async def get_system_statistics(ctx: Ctx) -> SystemStatistics:
    return await system_statistics(ctx.storage)
