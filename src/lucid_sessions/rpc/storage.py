"""The storage component over gRPC (``lucid.v1.Storage``, port 8086).

:func:`add_storage_servicer` serves a local :class:`~lucid_sessions.cluster.interfaces.Storage`;
:class:`StorageClient` implements the same Protocol against a remote one. Chunk bytes
cross as a stream of pieces of at most :data:`PIECE_BYTES` both ways, so no message is
as large as the chunk (gRPC moves one 64 MiB message several times slower than 64 pieces
of 1 MiB); :meth:`StorageClient.stream_chunk` hands the pieces of a read on as they
arrive (for streamed downloads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import grpc.aio
from google.protobuf.empty_pb2 import Empty

from lucid_sessions.audit import AuditEntry, AuditEvent, AuditHead
from lucid_sessions.cluster.interfaces import Storage, StorageHealth
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.rpc import messages as m
from lucid_sessions.rpc.channel import ComponentClient
from lucid_sessions.rpc.protos import records_pb2, storage_pb2, storage_pb2_grpc
from lucid_sessions.rpc.servicer import Context, server_stream, unary
from lucid_sessions.storage.metadata import (
    AuditPage,
    ChunkRecord,
    ManifestRecord,
    RevokedToken,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
    check_revocation,
)

__all__ = ["PIECE_BYTES", "SERVICE", "StorageClient", "add_storage_servicer"]

SERVICE = "lucid.v1.Storage"
PIECE_BYTES = 1024 * 1024
"""Size of the pieces ReadChunk streams (the last one may be shorter)."""

_EMPTY = Empty()


class _StorageServicer(storage_pb2_grpc.StorageServicer):
    service = SERVICE

    def __init__(self, local: Storage) -> None:
        self._local = local

    @unary
    async def CreateSession(
        self, request: storage_pb2.CreateSessionRequest, context: Context
    ) -> Empty:
        await self._local.create_session(m.from_session(request.record))
        return _EMPTY

    @unary
    async def GetSession(
        self, request: storage_pb2.GetSessionRequest, context: Context
    ) -> records_pb2.SessionRecord:
        return m.to_session(await self._local.get_session(request.session_id))

    @unary
    async def ListSessions(
        self, request: storage_pb2.ListSessionsRequest, context: Context
    ) -> storage_pb2.SessionPage:
        page = await self._local.list_sessions(
            status=m.optional(request, "status"),
            project=m.optional(request, "project"),
            environment=m.optional(request, "environment"),
            limit=request.limit,
            offset=request.offset,
        )
        return m.to_session_page(page)

    @unary
    async def UpdateSession(
        self, request: storage_pb2.UpdateSessionRequest, context: Context
    ) -> records_pb2.SessionRecord:
        if_status = list(request.if_status.statuses) if request.HasField("if_status") else None
        record = await self._local.update_session(
            request.session_id, m.load_json(request.changes_json), if_status=if_status
        )
        return m.to_session(record)

    @unary
    async def DeleteSession(
        self, request: storage_pb2.DeleteSessionRequest, context: Context
    ) -> Empty:
        await self._local.delete_session(request.session_id)
        return _EMPTY

    @unary
    async def PutChunk(self, request: storage_pb2.PutChunkRequest, context: Context) -> Empty:
        await self._local.put_chunk(m.from_chunk_record(request.record))
        return _EMPTY

    @unary
    async def GetChunk(
        self, request: storage_pb2.GetChunkRequest, context: Context
    ) -> records_pb2.ChunkRecord:
        return m.to_chunk_record(await self._local.get_chunk(request.session_id, request.sequence))

    @unary
    async def ListChunks(
        self, request: storage_pb2.ListChunksRequest, context: Context
    ) -> storage_pb2.ChunkRecordList:
        records = await self._local.list_chunks(
            request.session_id,
            start_us=m.optional(request, "start_us"),
            end_us=m.optional(request, "end_us"),
            limit=m.optional(request, "limit"),
            offset=request.offset,
        )
        return storage_pb2.ChunkRecordList(items=[m.to_chunk_record(r) for r in records])

    @unary
    async def PutWrappedKey(
        self, request: storage_pb2.PutWrappedKeyRequest, context: Context
    ) -> Empty:
        await self._local.put_wrapped_key(m.from_wrapped_key(request.record))
        return _EMPTY

    @unary
    async def GetWrappedKey(
        self, request: storage_pb2.GetWrappedKeyRequest, context: Context
    ) -> storage_pb2.WrappedKeyRecord:
        return m.to_wrapped_key(await self._local.get_wrapped_key(request.key_id))

    @unary
    async def ListWrappedKeys(
        self, request: storage_pb2.ListWrappedKeysRequest, context: Context
    ) -> storage_pb2.WrappedKeyRecordList:
        records = await self._local.list_wrapped_keys()
        return storage_pb2.WrappedKeyRecordList(items=[m.to_wrapped_key(r) for r in records])

    @unary
    async def ReplaceWrappedKeys(
        self, request: storage_pb2.ReplaceWrappedKeysRequest, context: Context
    ) -> Empty:
        await self._local.replace_wrapped_keys([m.from_wrapped_key(r) for r in request.records])
        return _EMPTY

    @unary
    async def PutManifest(self, request: storage_pb2.PutManifestRequest, context: Context) -> Empty:
        await self._local.put_manifest(m.from_manifest(request.record))
        return _EMPTY

    @unary
    async def GetManifest(
        self, request: storage_pb2.GetManifestRequest, context: Context
    ) -> storage_pb2.ManifestRecord:
        return m.to_manifest(await self._local.get_manifest(request.session_id))

    @unary
    async def StoreChunk(
        self,
        requests: AsyncIterator[storage_pb2.StoreChunkRequest],
        context: Context,
    ) -> Empty:
        record: ChunkRecord | None = None
        pieces: list[bytes] = []
        async for piece in requests:
            if record is None:
                if not piece.HasField("record"):
                    raise InvalidConfigError("StoreChunk: the first piece must carry the record")
                record = m.from_chunk_record(piece.record)
            pieces.append(piece.data)
        if record is None:
            raise InvalidConfigError("StoreChunk: no record was sent")
        await self._local.store_chunk(record, b"".join(pieces))
        return _EMPTY

    @server_stream
    async def ReadChunk(
        self, request: storage_pb2.ReadChunkRequest, context: Context
    ) -> AsyncIterator[storage_pb2.ChunkPiece]:
        data = await self._local.read_chunk(request.session_id, request.sequence)
        view = memoryview(data)
        for start in range(0, max(len(view), 1), PIECE_BYTES):
            yield storage_pb2.ChunkPiece(data=bytes(view[start : start + PIECE_BYTES]))

    @unary
    async def ChunkSequences(
        self, request: storage_pb2.ChunkSequencesRequest, context: Context
    ) -> storage_pb2.ChunkSequenceList:
        sequences = await self._local.chunk_sequences(request.session_id)
        return storage_pb2.ChunkSequenceList(sequences=sequences)

    @unary
    async def StageChunk(
        self,
        requests: AsyncIterator[storage_pb2.StageChunkRequest],
        context: Context,
    ) -> Empty:
        first: storage_pb2.StageChunkRequest | None = None
        pieces: list[bytes] = []
        async for piece in requests:
            if first is None:
                first = piece
            pieces.append(piece.data)
        if first is None:
            raise InvalidConfigError("StageChunk: nothing was sent")
        await self._local.stage_chunk(first.session_id, first.sequence, b"".join(pieces))
        return _EMPTY

    @server_stream
    async def ReadStagedChunk(
        self, request: storage_pb2.ReadChunkRequest, context: Context
    ) -> AsyncIterator[storage_pb2.ChunkPiece]:
        data = await self._local.read_staged_chunk(request.session_id, request.sequence)
        view = memoryview(data)
        for start in range(0, max(len(view), 1), PIECE_BYTES):
            yield storage_pb2.ChunkPiece(data=bytes(view[start : start + PIECE_BYTES]))

    @unary
    async def DropStagedChunk(
        self, request: storage_pb2.ReadChunkRequest, context: Context
    ) -> Empty:
        await self._local.drop_staged_chunk(request.session_id, request.sequence)
        return _EMPTY

    @unary
    async def StagedSequences(
        self, request: storage_pb2.ChunkSequencesRequest, context: Context
    ) -> storage_pb2.ChunkSequenceList:
        sequences = await self._local.staged_sequences(request.session_id)
        return storage_pb2.ChunkSequenceList(sequences=sequences)

    @unary
    async def Health(
        self, request: storage_pb2.HealthRequest, context: Context
    ) -> storage_pb2.StorageHealth:
        return m.to_storage_health(await self._local.health())

    @unary
    async def AppendAudit(
        self, request: storage_pb2.AuditEvent, context: Context
    ) -> storage_pb2.AuditEntry:
        return m.to_audit_entry(await self._local.append_audit(m.from_audit_event(request)))

    @unary
    async def ListAudit(
        self, request: storage_pb2.ListAuditRequest, context: Context
    ) -> storage_pb2.AuditPage:
        page = await self._local.list_audit(
            subject=m.optional(request, "subject"),
            action=m.optional(request, "action"),
            target=m.optional(request, "target"),
            outcome=m.optional(request, "outcome"),
            since=m.optional(request, "since"),
            until=m.optional(request, "until"),
            after_seq=request.after_seq,
            limit=request.limit,
        )
        return m.to_audit_page(page)

    @unary
    async def PutAuditHead(self, request: storage_pb2.AuditHead, context: Context) -> Empty:
        await self._local.put_audit_head(m.from_audit_head(request))
        return _EMPTY

    @unary
    async def ListAuditHeads(
        self, request: storage_pb2.ListAuditHeadsRequest, context: Context
    ) -> storage_pb2.AuditHeadList:
        heads = await self._local.list_audit_heads()
        return storage_pb2.AuditHeadList(items=[m.to_audit_head(h) for h in heads])

    @unary
    async def LatestAuditHead(
        self, request: storage_pb2.LatestAuditHeadRequest, context: Context
    ) -> storage_pb2.LatestAuditHeadReply:
        head = await self._local.latest_audit_head()
        if head is None:
            return storage_pb2.LatestAuditHeadReply()
        return storage_pb2.LatestAuditHeadReply(head=m.to_audit_head(head))

    @unary
    async def RevokeToken(self, request: storage_pb2.RevokeTokenRequest, context: Context) -> Empty:
        await self._local.revoke_token(
            request.jti,
            expires_at=request.expires_at,
            subject=request.subject,
            reason=request.reason,
        )
        return _EMPTY

    @unary
    async def IsTokenRevoked(
        self, request: storage_pb2.IsTokenRevokedRequest, context: Context
    ) -> storage_pb2.IsTokenRevokedReply:
        revoked = await self._local.is_token_revoked(request.jti)
        return storage_pb2.IsTokenRevokedReply(revoked=revoked)

    @unary
    async def ListRevokedTokens(
        self, request: storage_pb2.ListRevokedTokensRequest, context: Context
    ) -> storage_pb2.RevokedTokenList:
        records = await self._local.list_revoked_tokens()
        return storage_pb2.RevokedTokenList(items=[m.to_revoked_token(r) for r in records])

    @unary
    async def PurgeRevoked(
        self, request: storage_pb2.PurgeRevokedRequest, context: Context
    ) -> storage_pb2.PurgeRevokedReply:
        removed = await self._local.purge_revoked(request.before)
        return storage_pb2.PurgeRevokedReply(removed=removed)


def add_storage_servicer(server: grpc.aio.Server, local: Storage) -> str:
    """Serve ``local`` as ``lucid.v1.Storage`` on ``server``; returns the service name."""
    storage_pb2_grpc.add_StorageServicer_to_server(_StorageServicer(local), server)
    return SERVICE


class StorageClient(ComponentClient):
    """A remote storage component, as a :class:`~lucid_sessions.cluster.interfaces.Storage`.

    ``close()`` closes the channel (if this client opened it), never the remote store.
    """

    service = SERVICE
    stub_class = storage_pb2_grpc.StorageStub

    async def create_session(self, record: SessionRecord) -> None:
        request = storage_pb2.CreateSessionRequest(record=m.to_session(record))
        await self._call("CreateSession", request)

    async def get_session(self, session_id: str) -> SessionRecord:
        request = storage_pb2.GetSessionRequest(session_id=session_id)
        return m.from_session(await self._call("GetSession", request))

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage:
        request = storage_pb2.ListSessionsRequest(
            status=status, project=project, environment=environment, limit=limit, offset=offset
        )
        return m.from_session_page(await self._call("ListSessions", request))

    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        request = storage_pb2.UpdateSessionRequest(
            session_id=session_id, changes_json=m.dump_json(changes)
        )
        if if_status is not None:
            request.if_status.statuses.extend(if_status)
            request.if_status.SetInParent()  # present even when empty: "no status allows it"
        return m.from_session(await self._call("UpdateSession", request))

    async def delete_session(self, session_id: str) -> None:
        await self._call("DeleteSession", storage_pb2.DeleteSessionRequest(session_id=session_id))

    async def put_chunk(self, record: ChunkRecord) -> None:
        request = storage_pb2.PutChunkRequest(record=m.to_chunk_record(record))
        await self._call("PutChunk", request)

    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord:
        request = storage_pb2.GetChunkRequest(session_id=session_id, sequence=sequence)
        return m.from_chunk_record(await self._call("GetChunk", request))

    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        request = storage_pb2.ListChunksRequest(
            session_id=session_id, start_us=start_us, end_us=end_us, limit=limit, offset=offset
        )
        reply = await self._call("ListChunks", request)
        return [m.from_chunk_record(item) for item in reply.items]

    async def put_wrapped_key(self, record: WrappedKeyRecord) -> None:
        request = storage_pb2.PutWrappedKeyRequest(record=m.to_wrapped_key(record))
        await self._call("PutWrappedKey", request)

    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord:
        request = storage_pb2.GetWrappedKeyRequest(key_id=key_id)
        return m.from_wrapped_key(await self._call("GetWrappedKey", request))

    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]:
        reply = await self._call("ListWrappedKeys", storage_pb2.ListWrappedKeysRequest())
        return [m.from_wrapped_key(item) for item in reply.items]

    async def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None:
        request = storage_pb2.ReplaceWrappedKeysRequest(
            records=[m.to_wrapped_key(r) for r in records]
        )
        await self._call("ReplaceWrappedKeys", request)

    async def put_manifest(self, record: ManifestRecord) -> None:
        request = storage_pb2.PutManifestRequest(record=m.to_manifest(record))
        await self._call("PutManifest", request)

    async def get_manifest(self, session_id: str) -> ManifestRecord:
        request = storage_pb2.GetManifestRequest(session_id=session_id)
        return m.from_manifest(await self._call("GetManifest", request))

    async def store_chunk(self, record: ChunkRecord, data: bytes) -> None:
        def pieces() -> Iterator[storage_pb2.StoreChunkRequest]:
            view = memoryview(data)
            yield storage_pb2.StoreChunkRequest(
                record=m.to_chunk_record(record), data=bytes(view[:PIECE_BYTES])
            )
            for start in range(PIECE_BYTES, len(view), PIECE_BYTES):
                yield storage_pb2.StoreChunkRequest(data=bytes(view[start : start + PIECE_BYTES]))

        await self._call("StoreChunk", pieces(), long=True)

    async def read_chunk(self, session_id: str, sequence: int) -> bytes:
        return b"".join([piece async for piece in self.stream_chunk(session_id, sequence)])

    async def stream_chunk(self, session_id: str, sequence: int) -> AsyncIterator[bytes]:
        """The stored bytes of a chunk in pieces of at most :data:`PIECE_BYTES`, as they
        arrive. Errors (ChunkNotFoundError...) are raised before the first piece."""
        request = storage_pb2.ReadChunkRequest(session_id=session_id, sequence=sequence)
        async for piece in self._stream("ReadChunk", request, long=True):
            yield piece.data

    async def chunk_sequences(self, session_id: str) -> list[int]:
        request = storage_pb2.ChunkSequencesRequest(session_id=session_id)
        return list((await self._call("ChunkSequences", request)).sequences)

    async def stage_chunk(self, session_id: str, sequence: int, data: bytes) -> None:
        def pieces() -> Iterator[storage_pb2.StageChunkRequest]:
            view = memoryview(data)
            yield storage_pb2.StageChunkRequest(
                session_id=session_id, sequence=sequence, data=bytes(view[:PIECE_BYTES])
            )
            for start in range(PIECE_BYTES, len(view), PIECE_BYTES):
                yield storage_pb2.StageChunkRequest(data=bytes(view[start : start + PIECE_BYTES]))

        await self._call("StageChunk", pieces(), long=True)

    async def read_staged_chunk(self, session_id: str, sequence: int) -> bytes:
        request = storage_pb2.ReadChunkRequest(session_id=session_id, sequence=sequence)
        return b"".join(
            [piece.data async for piece in self._stream("ReadStagedChunk", request, long=True)]
        )

    async def drop_staged_chunk(self, session_id: str, sequence: int) -> None:
        request = storage_pb2.ReadChunkRequest(session_id=session_id, sequence=sequence)
        await self._call("DropStagedChunk", request)

    async def staged_sequences(self, session_id: str) -> list[int]:
        request = storage_pb2.ChunkSequencesRequest(session_id=session_id)
        return list((await self._call("StagedSequences", request)).sequences)

    async def health(self) -> StorageHealth:
        return m.from_storage_health(await self._call("Health", storage_pb2.HealthRequest()))

    async def append_audit(self, event: AuditEvent) -> AuditEntry:
        return m.from_audit_entry(await self._call("AppendAudit", m.to_audit_event(event)))

    async def list_audit(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        request = storage_pb2.ListAuditRequest(
            subject=subject,
            action=action,
            target=target,
            outcome=outcome,
            since=since,
            until=until,
            after_seq=after_seq,
            limit=limit,
        )
        return m.from_audit_page(await self._call("ListAudit", request))

    async def put_audit_head(self, head: AuditHead) -> None:
        await self._call("PutAuditHead", m.to_audit_head(head))

    async def list_audit_heads(self) -> list[AuditHead]:
        reply = await self._call("ListAuditHeads", storage_pb2.ListAuditHeadsRequest())
        return [m.from_audit_head(item) for item in reply.items]

    async def latest_audit_head(self) -> AuditHead | None:
        reply = await self._call("LatestAuditHead", storage_pb2.LatestAuditHeadRequest())
        return m.from_audit_head(reply.head) if reply.HasField("head") else None

    async def revoke_token(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        check_revocation(jti, expires_at)  # what protobuf cannot carry, refused as the store would
        request = storage_pb2.RevokeTokenRequest(
            jti=jti, expires_at=expires_at, subject=subject, reason=reason
        )
        await self._call("RevokeToken", request)

    async def is_token_revoked(self, jti: str) -> bool:
        request = storage_pb2.IsTokenRevokedRequest(jti=jti)
        return bool((await self._call("IsTokenRevoked", request)).revoked)

    async def list_revoked_tokens(self) -> list[RevokedToken]:
        reply = await self._call("ListRevokedTokens", storage_pb2.ListRevokedTokensRequest())
        return [m.from_revoked_token(item) for item in reply.items]

    async def purge_revoked(self, before: int) -> int:
        request = storage_pb2.PurgeRevokedRequest(before=before)
        return int((await self._call("PurgeRevoked", request)).removed)
