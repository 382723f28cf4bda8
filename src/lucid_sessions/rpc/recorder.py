"""The recorder over gRPC (``lucid.v1.Recorder``, port 8084).

A frame crosses as raw RGB bytes with its width and height (never pickled); the server
rebuilds a read-only ``(height, width, 3)`` uint8 array over the received bytes without
copying (the ingest source copies on push). Malformed pixels are refused with
InvalidConfigError on either side, as the ingest source itself does.
"""

from __future__ import annotations

import grpc.aio
import numpy as np
from google.protobuf.empty_pb2 import Empty

from lucid_sessions.cluster.interfaces import CaptureSpec, Recorder, RecorderStatus
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.recording.codec import Pixels
from lucid_sessions.rpc import messages as m
from lucid_sessions.rpc.channel import ComponentClient
from lucid_sessions.rpc.protos import recorder_pb2, recorder_pb2_grpc
from lucid_sessions.rpc.servicer import Context, unary

__all__ = ["SERVICE", "RecorderClient", "add_recorder_servicer", "frame_bytes", "frame_pixels"]

SERVICE = "lucid.v1.Recorder"

_EMPTY = Empty()


def frame_bytes(pixels: Pixels) -> tuple[int, int, bytes]:
    """``(width, height, rgb bytes)`` of an RGB frame; InvalidConfigError if it is not one."""
    if not isinstance(pixels, np.ndarray):
        raise InvalidConfigError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise InvalidConfigError(f"pixels must have dtype uint8, got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InvalidConfigError(f"pixels must have shape (height, width, 3), got {pixels.shape}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    return width, height, np.ascontiguousarray(pixels).tobytes()


def frame_pixels(width: int, height: int, data: bytes) -> Pixels:
    """The frame :func:`frame_bytes` described, as a read-only array over ``data``."""
    if width < 1 or height < 1 or len(data) != width * height * 3:
        raise InvalidConfigError(
            f"a {width}x{height} RGB frame takes {width * height * 3} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


class _RecorderServicer(recorder_pb2_grpc.RecorderServicer):
    service = SERVICE

    def __init__(self, local: Recorder) -> None:
        self._local = local

    @unary
    async def Start(self, request: recorder_pb2.StartRequest, context: Context) -> Empty:
        await self._local.start(request.session_id, m.from_capture_spec(request.spec))
        return _EMPTY

    @unary
    async def Stop(self, request: recorder_pb2.StopRequest, context: Context) -> Empty:
        await self._local.stop(request.session_id)
        return _EMPTY

    @unary
    async def Pause(self, request: recorder_pb2.PauseRequest, context: Context) -> Empty:
        await self._local.pause(request.session_id)
        return _EMPTY

    @unary
    async def Resume(self, request: recorder_pb2.ResumeRequest, context: Context) -> Empty:
        await self._local.resume(request.session_id)
        return _EMPTY

    @unary
    async def Status(
        self, request: recorder_pb2.StatusRequest, context: Context
    ) -> recorder_pb2.RecorderStatus:
        return m.to_recorder_status(await self._local.status(request.session_id))

    @unary
    async def PushFrame(self, request: recorder_pb2.PushFrameRequest, context: Context) -> Empty:
        pixels = frame_pixels(request.width, request.height, request.pixels)
        await self._local.push_frame(
            request.session_id, m.optional(request, "timestamp_us"), pixels
        )
        return _EMPTY


def add_recorder_servicer(server: grpc.aio.Server, local: Recorder) -> str:
    """Serve ``local`` as ``lucid.v1.Recorder`` on ``server``; returns the service name."""
    recorder_pb2_grpc.add_RecorderServicer_to_server(_RecorderServicer(local), server)
    return SERVICE


class RecorderClient(ComponentClient):
    """A remote recorder, as a :class:`~lucid_sessions.cluster.interfaces.Recorder`.

    ``start`` and ``stop`` wait up to ``long_timeout`` (connecting a remote desktop takes
    a while; stopping hands on the last chunk, which may wait on the pipeline's queue).
    The capture password in the spec crosses the wire: use TLS between hosts.
    """

    service = SERVICE
    stub_class = recorder_pb2_grpc.RecorderStub

    async def start(self, session_id: str, spec: CaptureSpec) -> None:
        request = recorder_pb2.StartRequest(session_id=session_id, spec=m.to_capture_spec(spec))
        await self._call("Start", request, long=True)

    async def stop(self, session_id: str) -> None:
        # waits until the last chunk is handed on, which may wait on backpressure
        await self._call("Stop", recorder_pb2.StopRequest(session_id=session_id), long=True)

    async def pause(self, session_id: str) -> None:
        await self._call("Pause", recorder_pb2.PauseRequest(session_id=session_id))

    async def resume(self, session_id: str) -> None:
        await self._call("Resume", recorder_pb2.ResumeRequest(session_id=session_id))

    async def status(self, session_id: str) -> RecorderStatus:
        reply = await self._call("Status", recorder_pb2.StatusRequest(session_id=session_id))
        return m.from_recorder_status(reply)

    async def push_frame(self, session_id: str, timestamp_us: int | None, pixels: Pixels) -> None:
        width, height, data = frame_bytes(pixels)
        request = recorder_pb2.PushFrameRequest(
            session_id=session_id,
            timestamp_us=timestamp_us,
            width=width,
            height=height,
            pixels=data,
        )
        await self._call("PushFrame", request)
