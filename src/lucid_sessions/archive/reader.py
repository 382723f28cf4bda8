"""Reading a stored session: its manifest, its chunks decrypted, the frame at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lucid_sessions.archive.keys import load_data_key
from lucid_sessions.chunkfile import open_chunk
from lucid_sessions.crypto import DataKey
from lucid_sessions.errors import (
    ChunkNotFoundError,
    EncryptionError,
    FormatError,
    NotFoundError,
)
from lucid_sessions.manifest import Manifest, parse_manifest
from lucid_sessions.recording.codec import ChunkDecoder, DecodedFrame
from lucid_sessions.storage.chunk_store import write_atomic
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import ChunkRecord

__all__ = [
    "KEY_FILE_FORMAT",
    "LoadedManifest",
    "SessionReader",
    "StoredEvidence",
    "load_manifest",
    "read_data_key_file",
    "write_data_key_file",
]

KEY_FILE_FORMAT = "lucid-sessions-data-key"


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    manifest: Manifest
    data: bytes
    signature: bytes
    public_key: bytes


async def load_manifest(datadir: DataDir, session_id: str) -> LoadedManifest:
    record = await datadir.store.get_manifest(session_id)
    return LoadedManifest(
        parse_manifest(record.manifest), record.manifest, record.signature, record.public_key
    )


class SessionReader:
    """Decrypts and decodes one session's chunks. Create with :meth:`open`."""

    def __init__(
        self, datadir: DataDir, session_id: str, key: DataKey, chunks: list[ChunkRecord]
    ) -> None:
        self.datadir = datadir
        self.session_id = session_id
        self.key = key
        self.chunks = chunks

    @classmethod
    async def open(cls, datadir: DataDir, session_id: str) -> SessionReader:
        session = await datadir.store.get_session(session_id)
        if session.key_id is None:
            raise NotFoundError(f"session {session_id} has no data key")
        key = await load_data_key(datadir, session.key_id)
        chunks = await datadir.store.list_chunks(session_id)
        return cls(datadir, session_id, key, chunks)

    @property
    def duration_us(self) -> int:
        return self.chunks[-1].end_us - self.chunks[0].start_us if self.chunks else 0

    def chunk_for_time(self, timestamp_us: int) -> ChunkRecord:
        if not self.chunks:
            raise NotFoundError(f"session {self.session_id} has no chunks")
        chosen = self.chunks[0]
        for record in self.chunks:
            if record.start_us > timestamp_us:
                break
            chosen = record
        return chosen

    async def plaintext(self, sequence: int) -> bytes:
        stored = await asyncio.to_thread(self.datadir.chunks.get, self.session_id, sequence)
        return await asyncio.to_thread(
            open_chunk, stored, session_id=self.session_id, sequence=sequence, key=self.key.key
        )

    async def frame_at(self, seconds: float) -> DecodedFrame:
        """The frame on screen ``seconds`` after the session's first frame."""
        if seconds < 0:
            raise ValueError("the time must not be negative")
        if not self.chunks:
            raise NotFoundError(f"session {self.session_id} has no chunks")
        target = self.chunks[0].start_us + round(seconds * 1_000_000)
        record = self.chunk_for_time(target)
        data = await self.plaintext(record.sequence)
        return await asyncio.to_thread(ChunkDecoder(data).frame_at, target)


def write_data_key_file(path: Path, session_id: str, key: DataKey) -> None:
    """Write a session's data key for an auditor (mode 0600, refuses to overwrite)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    body = {
        "format": KEY_FILE_FORMAT,
        "version": 1,
        "session_id": session_id,
        "key_id": key.key_id,
        "key": key.key.hex(),
    }
    write_atomic(path, json.dumps(body, indent=2).encode(), mode=0o600)


def read_data_key_file(path: Path) -> tuple[str, DataKey]:
    """(session id, data key) from a file written by :func:`write_data_key_file`."""
    try:
        body = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise FormatError(f"cannot read data key file {path}") from exc
    if not isinstance(body, dict) or body.get("format") != KEY_FILE_FORMAT:
        raise FormatError(f"{path} is not a Lucid Sessions data key file")
    if body.get("version") != 1:
        raise FormatError(f"data key file version {body.get('version')} is not supported")
    try:
        return str(body["session_id"]), DataKey(str(body["key_id"]), bytes.fromhex(body["key"]))
    except (KeyError, ValueError, TypeError, EncryptionError) as exc:
        raise FormatError(f"data key file {path} is malformed") from exc


class StoredEvidence:
    """A finalised session in a data directory, as :mod:`.verify` reads it."""

    excerpt = False
    listed_chunks: list[int] | None = None

    def __init__(
        self,
        datadir: DataDir,
        loaded: LoadedManifest,
        anchor: Mapping[str, Any] | None = None,
    ) -> None:
        self._datadir = datadir
        self.session_id = loaded.manifest.session_id
        self.anchor: dict[str, Any] | None = None
        """The session's anchor state and receipt (``config["anchor"]``), as in a bundle."""
        if anchor is not None:
            from lucid_sessions.archive.anchor_check import anchor_document

            self.anchor = anchor_document(self.session_id, anchor)
        self.manifest_bytes = loaded.data
        self.signature = loaded.signature
        self.public_key = loaded.public_key
        self.proofs: dict[int, list[bytes]] = {}
        from lucid_sessions.anchoring.checkpoints import CheckpointStore

        self.checkpoints: list[object] = CheckpointStore(datadir.path).raw(self.session_id)
        """The live checkpoints in ``checkpoints/`` (proofs come from the manifest)."""
        self.checkpoint_proofs = None

    def sequences(self) -> list[int]:
        return self._datadir.chunks.sequences(self.session_id)

    def chunk(self, sequence: int) -> bytes | None:
        try:
            return self._datadir.chunks.get(self.session_id, sequence)
        except ChunkNotFoundError:
            return None
