"""A session rendered as H.264 video: ``GET /sessions/{id}/render.mp4``, streamed.

The answer is a fragmented MP4 (``frag_keyframe+empty_moov+default_base_moof``): it is
written strictly forwards, so it streams while it is encoded, has no length or size limit
and plays as it arrives. The encoder runs on threads of its own; what it writes goes
through a bounded queue (``ApiSettings.export_buffer`` pieces of ``stream_piece`` bytes)
to the response, and a client that goes away stops the encoder at its next frame.

Decoding needs the session's data key, unwrapped with the master key of the data
directory this API serves (found as the player's routes find it, :mod:`.playback`). A
render is a download of the recording: permission ``chunks:download``, rate class ``bulk``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.bridge import ThreadedStream, call_on_loop
from lucid_sessions.api.keys import data_key
from lucid_sessions.api.routes.evidence import ClosingStreamingResponse, From, To
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, SessionId
from lucid_sessions.archive.render import (
    MAX_SPEED,
    MIN_SPEED,
    RenderCancelled,
    RenderOptions,
    RenderPlan,
    open_checked,
    plan_render,
    render_mp4,
)
from lucid_sessions.cluster.interfaces import Storage
from lucid_sessions.crypto import DataKey
from lucid_sessions.errors import ChunkNotFoundError, InvalidConfigError
from lucid_sessions.storage.metadata import ChunkRecord

__all__ = ["RenderStream", "router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}", tags=["playback"], responses=ERRORS
)

Speed = Annotated[
    float,
    Query(
        ge=MIN_SPEED,
        le=MAX_SPEED,
        allow_inf_nan=False,
        description="Playback speed: every time is divided by it (2 plays twice as fast)",
    ),
]


class RenderStream(ThreadedStream):
    """A render as an async iterable of fragmented-MP4 pieces (see :class:`ThreadedStream`;
    closing it stops the encoder at its next frame)."""

    what = "render"
    expected = (*ThreadedStream.expected, RenderCancelled)

    def __init__(
        self,
        storage: Storage,
        session_id: str,
        key: DataKey,
        plan: RenderPlan,
        options: RenderOptions,
        *,
        buffer: int,
        piece: int,
        hash_algorithm: str,
    ) -> None:
        super().__init__(session_id, buffer=buffer, piece=piece)
        self._storage = storage
        self._key = key
        self._plan = plan
        self._options = options
        self._hash_algorithm = hash_algorithm

    def produce(self, out: Any, loop: asyncio.AbstractEventLoop) -> None:
        session_id, key = self.session_id, self._key.key

        def fetch(record: ChunkRecord) -> bytes:
            stored = call_on_loop(
                loop, lambda: self._storage.read_chunk(session_id, record.sequence), self._aborted
            )
            return open_checked(
                stored,
                record,
                session_id=session_id,
                key=key,
                hash_algorithm=self._hash_algorithm,
            )

        render_mp4(self._plan, fetch, out, self._options, cancelled=self._aborted)


@router.get(
    "/render.mp4",
    dependencies=[Depends(authorize("chunks:download"))],
    summary="The session as H.264 video (fragmented MP4), streamed; from/to in seconds",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
            "description": "A fragmented MP4; frames at their recorded times divided by speed",
        }
    },
)
async def render_video(
    session_id: SessionId,
    ctx: Ctx,
    from_s: From = None,
    to_s: To = None,
    speed: Speed = 1.0,
) -> StreamingResponse:
    if from_s is not None and to_s is not None and to_s <= from_s:
        raise InvalidConfigError("to: must be after from")
    options = RenderOptions(from_s=from_s, to_s=to_s, speed=speed, fragmented=True)
    session = await ctx.storage.get_session(session_id)
    plan = plan_render(session_id, await ctx.storage.list_chunks(session_id), options)
    key = await data_key(ctx, session)
    stored = set(await ctx.storage.chunk_sequences(session_id))
    missing = [c.sequence for c in plan.chunks if c.sequence not in stored]
    if missing:
        raise ChunkNotFoundError(
            f"session {session_id} cannot be rendered: chunk {missing[0]} is not stored "
            f"({len(missing)} missing); GET .../verify reports the damage",
            details={"missing": missing[:100]},
        )
    log.info(
        "api render session_id=%s from_us=%d to_us=%d speed=%g",
        session_id,
        plan.start_us - plan.origin_us,
        plan.end_us - plan.origin_us,
        speed,
    )
    body = RenderStream(
        ctx.storage,
        session_id,
        key,
        plan,
        options,
        buffer=ctx.settings.export_buffer,
        piece=ctx.settings.stream_piece,
        hash_algorithm=session.hash_algorithm,
    )
    ranged = from_s is not None or to_s is not None
    name = f"{session_id}-excerpt.mp4" if ranged else f"{session_id}.mp4"
    return ClosingStreamingResponse(
        cast(Any, body),
        on_close=body.close,
        media_type="video/mp4",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
