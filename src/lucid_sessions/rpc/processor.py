"""The chunk processor over gRPC (``lucid.v1.Processor``, port 8085).

The reply leaves out the :class:`~lucid_sessions.recording.chunker.RawChunk`: the caller
already holds it, so the plaintext crosses the wire once, not twice, and the client puts
its own ``raw`` into the :class:`~lucid_sessions.archive.processor.ProcessedChunk`.
"""

from __future__ import annotations

import grpc.aio

from lucid_sessions.archive.processor import ProcessedChunk
from lucid_sessions.cluster.interfaces import Processor
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.rpc import messages as m
from lucid_sessions.rpc.channel import ComponentClient
from lucid_sessions.rpc.protos import processor_pb2, processor_pb2_grpc
from lucid_sessions.rpc.servicer import Context, unary

__all__ = ["SERVICE", "ProcessorClient", "add_processor_servicer"]

SERVICE = "lucid.v1.Processor"


class _ProcessorServicer(processor_pb2_grpc.ProcessorServicer):
    service = SERVICE

    def __init__(self, local: Processor) -> None:
        self._local = local

    @unary
    async def Process(
        self, request: processor_pb2.ProcessRequest, context: Context
    ) -> processor_pb2.ProcessResponse:
        processed = await self._local.process(
            m.from_raw_chunk(request.raw),
            session_id=request.session_id,
            wrapped_key=request.wrapped_key,
            level=request.level,
            hash_algorithm=request.hash_algorithm,
        )
        return m.to_processed(processed)


def add_processor_servicer(server: grpc.aio.Server, local: Processor) -> str:
    """Serve ``local`` as ``lucid.v1.Processor`` on ``server``; returns the service name."""
    processor_pb2_grpc.add_ProcessorServicer_to_server(_ProcessorServicer(local), server)
    return SERVICE


class ProcessorClient(ComponentClient):
    """A remote chunk processor, as a :class:`~lucid_sessions.cluster.interfaces.Processor`."""

    service = SERVICE
    stub_class = processor_pb2_grpc.ProcessorStub

    async def process(
        self,
        raw: RawChunk,
        *,
        session_id: str,
        wrapped_key: bytes,
        level: int,
        hash_algorithm: str,
    ) -> ProcessedChunk:
        request = processor_pb2.ProcessRequest(
            raw=m.to_raw_chunk(raw),
            session_id=session_id,
            wrapped_key=wrapped_key,
            level=level,
            hash_algorithm=hash_algorithm,
        )
        reply = await self._call("Process", request, long=True)
        return m.from_processed(reply, session_id=session_id, raw=raw)
