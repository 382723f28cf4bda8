"""The pipeline as a whole: its status, and pausing or resuming chunk processing."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.encoders import jsonable_encoder

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx
from lucid_sessions.api.views import public_config

__all__ = ["router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(prefix=f"{API_PREFIX}/pipeline", tags=["pipeline"], responses=ERRORS)


async def _status(ctx: Ctx) -> dict[str, Any]:
    status = await ctx.pipeline.pipeline_status()
    encoded: dict[str, Any] = jsonable_encoder(public_config(dict(status)))
    return encoded


@router.get(
    "/status",
    dependencies=[Depends(authorize("statistics:read"))],
    summary="Pipeline state, queues and counters",
)
async def pipeline_status(ctx: Ctx) -> dict[str, Any]:
    return await _status(ctx)


@router.post(
    "/pause",
    dependencies=[Depends(authorize("pipeline:control"))],
    summary="Pause chunk processing (recordings keep queueing, with backpressure)",
)
async def pause_pipeline(ctx: Ctx) -> dict[str, Any]:
    await ctx.pipeline.pause_pipeline()
    log.info("api pipeline paused")
    return await _status(ctx)


@router.post(
    "/resume",
    dependencies=[Depends(authorize("pipeline:control"))],
    summary="Resume chunk processing",
)
async def resume_pipeline(ctx: Ctx) -> dict[str, Any]:
    await ctx.pipeline.resume_pipeline()
    log.info("api pipeline resumed")
    return await _status(ctx)
