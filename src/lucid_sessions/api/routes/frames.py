"""Frames pushed by an external agent into an ``ingest`` recording.

The body is one picture: ``image/png``, ``image/jpeg``, or ``application/octet-stream``
holding raw RGB (``width * height * 3`` bytes, row by row, with ``width`` and ``height``
in the query). ``timestamp_us`` (the agent's clock) is optional. Bodies above
``ApiSettings.max_frame_bytes`` are refused with 413 before they are read in full (by
:mod:`lucid_sessions.api.limits`, which gives this route that cap instead of the default
``max_body_bytes``), and pictures larger than 7680x4320 before they are decoded.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.errors import ErrorBody
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, SessionId
from lucid_sessions.api.stats import LIVE
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import InvalidConfigError, NotRecordingError
from lucid_sessions.recording.codec import Pixels

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX + "/sessions/{session_id}", tags=["ingest"], responses=ERRORS)

MAX_WIDTH, MAX_HEIGHT = 7680, 4320
_IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}
_RAW_TYPE = "application/octet-stream"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


class FrameAccepted(BaseModel):
    session_id: str
    width: int
    height: int
    timestamp_us: int | None


def _decode_image(data: bytes, kind: str) -> Pixels:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
            if width > MAX_WIDTH or height > MAX_HEIGHT:
                raise InvalidConfigError(
                    f"body: the picture is {width}x{height}, larger than {MAX_WIDTH}x{MAX_HEIGHT}"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidConfigError(f"body: not a valid {kind} picture") from None


def _raw_pixels(data: bytes, width: int | None, height: int | None) -> Pixels:
    if width is None or height is None:
        raise InvalidConfigError("width, height: required for raw RGB frames")
    expected = width * height * 3
    if len(data) != expected:
        raise InvalidConfigError(
            f"body: raw RGB of {width}x{height} is {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


@router.post(
    "/frames",
    status_code=202,
    dependencies=[Depends(authorize("sessions:control"))],
    summary="Push one frame into an ingest recording",
    responses={
        415: {"model": ErrorBody, "description": "Not a PNG, JPEG or raw RGB body (LUCID_ERR_3002)"}
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"image/png": _BINARY, "image/jpeg": _BINARY, _RAW_TYPE: _BINARY},
        }
    },
)
async def push_frame(
    session_id: SessionId,
    request: Request,
    ctx: Ctx,
    width: Annotated[int | None, Query(ge=1, le=MAX_WIDTH)] = None,
    height: Annotated[int | None, Query(ge=1, le=MAX_HEIGHT)] = None,
    timestamp_us: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> FrameAccepted:
    if ctx.recorder is None:
        raise Unavailable("no recorder is available to take frames")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _IMAGE_TYPES and media != _RAW_TYPE:
        raise HTTPException(415, "send image/png, image/jpeg or application/octet-stream")
    record = await ctx.storage.get_session(session_id)
    if record.config.get("source") != "ingest":
        raise InvalidConfigError(f"session {session_id} does not take frames (not ingest)")
    if record.status not in LIVE:
        raise NotRecordingError(f"session {session_id} is {record.status}, not recording")
    data = await request.body()  # at most max_frame_bytes: RequestLimitsMiddleware
    if media == _RAW_TYPE:
        pixels = _raw_pixels(data, width, height)
    else:
        pixels = await asyncio.to_thread(_decode_image, data, _IMAGE_TYPES[media])
        found = (pixels.shape[1], pixels.shape[0])
        if (width is not None and width != found[0]) or (height is not None and height != found[1]):
            raise InvalidConfigError(f"width, height: the picture is {found[0]}x{found[1]}")
    await ctx.recorder.push_frame(session_id, timestamp_us, pixels)
    return FrameAccepted(
        session_id=session_id,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        timestamp_us=timestamp_us,
    )
