"""The storage component: a data directory behind the :class:`Storage` interface."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from lucid_sessions.cluster.interfaces import StorageHealth
from lucid_sessions.errors import LucidError
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import (
    ChunkRecord,
    ManifestRecord,
    MetadataStore,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
)

__all__ = ["StorageService"]


class StorageService:
    """Chunk files in a data directory and metadata in a :class:`MetadataStore`.

    The metadata store is the data directory's SQLite store unless another one (MongoDB)
    is given.
    """

    def __init__(self, datadir: DataDir, metadata: MetadataStore | None = None) -> None:
        self.datadir = datadir
        self.metadata: MetadataStore = metadata or datadir.store
        self.metadata_kind = "sqlite" if metadata is None else type(metadata).__name__

    # metadata, delegated

    async def create_session(self, record: SessionRecord) -> None:
        await self.metadata.create_session(record)

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self.metadata.get_session(session_id)

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage:
        return await self.metadata.list_sessions(
            status=status, project=project, environment=environment, limit=limit, offset=offset
        )

    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        return await self.metadata.update_session(session_id, changes, if_status=if_status)

    async def delete_session(self, session_id: str) -> None:
        await self.metadata.get_session(session_id)
        await asyncio.to_thread(self.datadir.chunks.delete_session, session_id)
        await self.metadata.delete_session(session_id)

    async def put_chunk(self, record: ChunkRecord) -> None:
        await self.metadata.put_chunk(record)

    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord:
        return await self.metadata.get_chunk(session_id, sequence)

    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        return await self.metadata.list_chunks(
            session_id, start_us=start_us, end_us=end_us, limit=limit, offset=offset
        )

    async def put_wrapped_key(self, record: WrappedKeyRecord) -> None:
        await self.metadata.put_wrapped_key(record)

    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord:
        return await self.metadata.get_wrapped_key(key_id)

    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]:
        return await self.metadata.list_wrapped_keys()

    async def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None:
        await self.metadata.replace_wrapped_keys(records)

    async def put_manifest(self, record: ManifestRecord) -> None:
        await self.metadata.put_manifest(record)

    async def get_manifest(self, session_id: str) -> ManifestRecord:
        return await self.metadata.get_manifest(session_id)

    async def close(self) -> None:
        await self.metadata.close()

    # chunk bytes

    async def store_chunk(self, record: ChunkRecord, data: bytes) -> None:
        await self.metadata.get_session(record.session_id)
        await asyncio.to_thread(self.datadir.chunks.put, record.session_id, record.sequence, data)
        await self.metadata.put_chunk(record)

    async def read_chunk(self, session_id: str, sequence: int) -> bytes:
        return await asyncio.to_thread(self.datadir.chunks.get, session_id, sequence)

    async def chunk_sequences(self, session_id: str) -> list[int]:
        return await asyncio.to_thread(self.datadir.chunks.sequences, session_id)

    async def health(self) -> StorageHealth:
        try:
            usage = shutil.disk_usage(self.datadir.path)
            await self.metadata.list_sessions(limit=1)
        except (OSError, LucidError) as exc:
            return StorageHealth(False, 0, 0, self.metadata_kind, str(exc))
        return StorageHealth(True, usage.free, usage.total, self.metadata_kind)
