"""The chunk processor component: unwraps the session key, seals and hashes chunks."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from lucid_sessions.archive.processor import ChunkProcessor, ProcessedChunk
from lucid_sessions.cluster.coordination import open_staged
from lucid_sessions.crypto import DataKey, MasterKey, unwrap_data_key
from lucid_sessions.merkle import get_hasher
from lucid_sessions.recording.chunker import RawChunk

__all__ = ["ProcessorService"]


class ProcessorService:
    """Processes chunks on a thread pool (``workers`` threads; zstd and the AEAD release
    the GIL). Unwrapped data keys are cached by key id for the life of the service."""

    def __init__(self, master: MasterKey, *, workers: int = 2) -> None:
        self._master = master
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lucid-proc")
        self._keys: dict[str, DataKey] = {}
        self._processors: dict[str, ChunkProcessor] = {}

    def _key(self, wrapped: bytes) -> DataKey:
        key = unwrap_data_key(wrapped, self._master)
        return self._keys.setdefault(key.key_id, key)

    async def process(
        self,
        raw: RawChunk,
        *,
        session_id: str,
        wrapped_key: bytes,
        level: int,
        hash_algorithm: str,
    ) -> ProcessedChunk:
        key = self._key(wrapped_key)
        processor = self._processors.get(hash_algorithm)
        if processor is None:
            processor = self._processors[hash_algorithm] = ChunkProcessor(
                get_hasher(hash_algorithm)
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool,
            lambda: processor.process(raw, session_id=session_id, data_key=key, level=level),
        )

    async def process_staged(
        self,
        blob: bytes,
        *,
        session_id: str,
        sequence: int,
        wrapped_key: bytes,
        level: int,
        hash_algorithm: str,
    ) -> ProcessedChunk:
        """Process a chunk as the pipeline staged it (:func:`.coordination.seal_staged`):
        open it with the session key, then :meth:`process` it."""
        key = self._key(wrapped_key)
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(
            self._pool, lambda: open_staged(blob, key, session_id, sequence)
        )
        return await self.process(
            raw,
            session_id=session_id,
            wrapped_key=wrapped_key,
            level=level,
            hash_algorithm=hash_algorithm,
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._keys.clear()
