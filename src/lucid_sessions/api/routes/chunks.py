"""Chunks of a session: list, get, download the stored bytes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.routes.params import (
    API_PREFIX,
    ERRORS,
    Ctx,
    Limit,
    Offset,
    SequenceNo,
    SessionId,
)
from lucid_sessions.api.views import ChunkOut, ChunkPage, chunk_out
from lucid_sessions.errors import InvalidConfigError

__all__ = ["router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}/chunks", tags=["chunks"], responses=ERRORS
)

Seconds = Annotated[
    float | None,
    Query(ge=0, le=10**9, allow_inf_nan=False, description="Seconds from the session start"),
]


@router.get("", dependencies=[Depends(authorize("chunks:read"))], summary="List chunks")
async def list_chunks(
    session_id: SessionId,
    ctx: Ctx,
    status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    start_time: Seconds = None,
    end_time: Seconds = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ChunkPage:
    if start_time is not None and end_time is not None and end_time < start_time:
        raise InvalidConfigError(
            "end_time: must not be before start_time",
            details={"errors": [{"field": "end_time", "message": "before start_time"}]},
        )
    await ctx.storage.get_session(session_id)
    first = await ctx.storage.list_chunks(session_id, limit=1)
    origin = first[0].start_us if first else 0
    start_us = None if start_time is None else origin + round(start_time * 1e6)
    end_us = None if end_time is None else origin + round(end_time * 1e6)
    # The store has no count: read the matching records (small, one per chunk) and slice.
    matching = await ctx.storage.list_chunks(session_id, start_us=start_us, end_us=end_us)
    if status is not None:
        matching = [r for r in matching if r.status == status]
    total = len(matching)
    records = matching[offset : offset + limit]
    return ChunkPage(
        items=[chunk_out(r, origin) for r in records],
        total=total,
        limit=limit,
        offset=offset,
        has_next=offset + len(records) < total,
    )


@router.get("/{sequence}", dependencies=[Depends(authorize("chunks:read"))], summary="Get a chunk")
async def get_chunk(session_id: SessionId, sequence: SequenceNo, ctx: Ctx) -> ChunkOut:
    record = await ctx.storage.get_chunk(session_id, sequence)
    first = await ctx.storage.list_chunks(session_id, limit=1)
    return chunk_out(record, first[0].start_us if first else record.start_us)


@router.get(
    "/{sequence}/download",
    dependencies=[Depends(authorize("chunks:download"))],
    summary="Download a stored chunk (encrypted, as on disk)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_chunk(
    session_id: SessionId, sequence: SequenceNo, ctx: Ctx
) -> StreamingResponse:
    await ctx.storage.get_chunk(session_id, sequence)
    data = await ctx.storage.read_chunk(session_id, sequence)
    piece = ctx.settings.stream_piece
    log.info("api chunk download session_id=%s sequence=%d", session_id, sequence)

    async def pieces() -> AsyncIterator[bytes]:
        view = memoryview(data)
        for at in range(0, len(data), piece):
            yield bytes(view[at : at + piece])

    filename = f"{session_id}-{sequence:08d}.chunk"
    return StreamingResponse(
        pieces(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(len(data)),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
