"""The pipeline manager over gRPC (``lucid.v1.Pipeline``, port 8083).

Session specs, changes and the pipeline status are free-form maps and cross as JSON
text; records and chunks are typed messages. ``submit_chunk`` waits up to
``long_timeout``: the pipeline holds it while its queue is full (backpressure), and a
call that runs out of time raises Unavailable, which the caller may retry
(``submit_chunk`` is idempotent per session and sequence).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc.aio
from google.protobuf.empty_pb2 import Empty

from lucid_sessions.cluster.interfaces import Pipeline, RecordingEnd
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.rpc import messages as m
from lucid_sessions.rpc.channel import ComponentClient
from lucid_sessions.rpc.protos import pipeline_pb2, pipeline_pb2_grpc, records_pb2
from lucid_sessions.rpc.servicer import Context, unary
from lucid_sessions.storage.metadata import SessionRecord

__all__ = ["SERVICE", "PipelineClient", "add_pipeline_servicer"]

SERVICE = "lucid.v1.Pipeline"

_EMPTY = Empty()
Session = records_pb2.SessionRecord


class _PipelineServicer(pipeline_pb2_grpc.PipelineServicer):
    service = SERVICE

    def __init__(self, local: Pipeline) -> None:
        self._local = local

    @unary
    async def CreateSession(
        self, request: pipeline_pb2.PipelineCreateSessionRequest, context: Context
    ) -> Session:
        spec = m.load_json(request.spec_json)
        return m.to_session(await self._local.create_session(spec, password=request.password))

    @unary
    async def StartSession(
        self, request: pipeline_pb2.StartSessionRequest, context: Context
    ) -> Session:
        return m.to_session(await self._local.start_session(request.session_id))

    @unary
    async def StopSession(
        self, request: pipeline_pb2.StopSessionRequest, context: Context
    ) -> Session:
        return m.to_session(await self._local.stop_session(request.session_id))

    @unary
    async def PauseSession(
        self, request: pipeline_pb2.PauseSessionRequest, context: Context
    ) -> Session:
        return m.to_session(await self._local.pause_session(request.session_id))

    @unary
    async def ResumeSession(
        self, request: pipeline_pb2.ResumeSessionRequest, context: Context
    ) -> Session:
        return m.to_session(await self._local.resume_session(request.session_id))

    @unary
    async def UpdateSession(
        self, request: pipeline_pb2.PipelineUpdateSessionRequest, context: Context
    ) -> Session:
        changes = m.load_json(request.changes_json)
        return m.to_session(await self._local.update_session(request.session_id, changes))

    @unary
    async def DeleteSession(
        self, request: pipeline_pb2.PipelineDeleteSessionRequest, context: Context
    ) -> Empty:
        await self._local.delete_session(request.session_id)
        return _EMPTY

    @unary
    async def SubmitChunk(
        self, request: pipeline_pb2.SubmitChunkRequest, context: Context
    ) -> Empty:
        await self._local.submit_chunk(request.session_id, m.from_raw_chunk(request.raw))
        return _EMPTY

    @unary
    async def RecordingEnded(
        self, request: pipeline_pb2.RecordingEndedRequest, context: Context
    ) -> Empty:
        await self._local.recording_ended(m.from_recording_end(request.end))
        return _EMPTY

    @unary
    async def PipelineStatus(
        self, request: pipeline_pb2.PipelineStatusRequest, context: Context
    ) -> pipeline_pb2.PipelineStatusResponse:
        status = await self._local.pipeline_status()
        return pipeline_pb2.PipelineStatusResponse(status_json=m.dump_json(status))

    @unary
    async def PausePipeline(
        self, request: pipeline_pb2.PausePipelineRequest, context: Context
    ) -> Empty:
        await self._local.pause_pipeline()
        return _EMPTY

    @unary
    async def ResumePipeline(
        self, request: pipeline_pb2.ResumePipelineRequest, context: Context
    ) -> Empty:
        await self._local.resume_pipeline()
        return _EMPTY


def add_pipeline_servicer(server: grpc.aio.Server, local: Pipeline) -> str:
    """Serve ``local`` as ``lucid.v1.Pipeline`` on ``server``; returns the service name."""
    pipeline_pb2_grpc.add_PipelineServicer_to_server(_PipelineServicer(local), server)
    return SERVICE


class PipelineClient(ComponentClient):
    """A remote pipeline manager, as a :class:`~lucid_sessions.cluster.interfaces.Pipeline`.

    The RDP password given to ``create_session`` crosses the wire: use TLS between hosts.
    """

    service = SERVICE
    stub_class = pipeline_pb2_grpc.PipelineStub

    async def create_session(self, spec: Mapping[str, Any], *, password: str = "") -> SessionRecord:
        request = pipeline_pb2.PipelineCreateSessionRequest(
            spec_json=m.dump_json(spec), password=password
        )
        return m.from_session(await self._call("CreateSession", request))

    async def start_session(self, session_id: str) -> SessionRecord:
        request = pipeline_pb2.StartSessionRequest(session_id=session_id)
        return m.from_session(await self._call("StartSession", request, long=True))

    async def stop_session(self, session_id: str) -> SessionRecord:
        request = pipeline_pb2.StopSessionRequest(session_id=session_id)
        return m.from_session(await self._call("StopSession", request, long=True))

    async def pause_session(self, session_id: str) -> SessionRecord:
        request = pipeline_pb2.PauseSessionRequest(session_id=session_id)
        return m.from_session(await self._call("PauseSession", request))

    async def resume_session(self, session_id: str) -> SessionRecord:
        request = pipeline_pb2.ResumeSessionRequest(session_id=session_id)
        return m.from_session(await self._call("ResumeSession", request))

    async def update_session(self, session_id: str, changes: Mapping[str, Any]) -> SessionRecord:
        request = pipeline_pb2.PipelineUpdateSessionRequest(
            session_id=session_id, changes_json=m.dump_json(changes)
        )
        return m.from_session(await self._call("UpdateSession", request))

    async def delete_session(self, session_id: str) -> None:
        request = pipeline_pb2.PipelineDeleteSessionRequest(session_id=session_id)
        await self._call("DeleteSession", request)

    async def submit_chunk(self, session_id: str, raw: RawChunk) -> None:
        request = pipeline_pb2.SubmitChunkRequest(session_id=session_id, raw=m.to_raw_chunk(raw))
        await self._call("SubmitChunk", request, long=True)

    async def recording_ended(self, end: RecordingEnd) -> None:
        request = pipeline_pb2.RecordingEndedRequest(end=m.to_recording_end(end))
        await self._call("RecordingEnded", request)

    async def pipeline_status(self) -> Mapping[str, Any]:
        reply = await self._call("PipelineStatus", pipeline_pb2.PipelineStatusRequest())
        return m.load_json(reply.status_json)

    async def pause_pipeline(self) -> None:
        await self._call("PausePipeline", pipeline_pb2.PausePipelineRequest())

    async def resume_pipeline(self) -> None:
        await self._call("ResumePipeline", pipeline_pb2.ResumePipelineRequest())
