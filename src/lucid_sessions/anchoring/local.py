"""The local anchor log: an append-only, hash-chained, signed log of session roots.

One JSON object per line::

    {"index", "session_id", "root", "time", "prev", "hash", "signature"}

``hash`` is SHA-256 over the canonical JSON of the entry without ``hash`` and
``signature``; ``prev`` is the previous entry's ``hash`` (64 zeros for the first);
``signature`` is the cluster key's Ed25519 signature over ``hash``. Appends are
serialised by a lock and fsynced. :meth:`LocalAnchorLog.verify` walks the chain and names
the first entry that was edited, removed, inserted or reordered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lucid_sessions.anchoring.contract import AnchorConflict
from lucid_sessions.crypto import ClusterKey, verify_signature
from lucid_sessions.errors import FormatError, StorageError
from lucid_sessions.manifest import canonical_json
from lucid_sessions.storage.metadata import utc_now

__all__ = ["Anchor", "AnchorReceipt", "LocalAnchorConflict", "LocalAnchorLog"]

_GENESIS = "0" * 64
_CONTEXT = b"lucid-sessions anchor v1\n"


@dataclass(frozen=True, slots=True)
class AnchorReceipt:
    chain: str
    """``local``, ``tron`` or ``evm``."""
    location: str
    """Log file, or contract address."""
    transaction: str
    """Entry hash, or transaction id."""
    block: int
    """Entry index, or block number."""


class LocalAnchorConflict(StorageError, AnchorConflict):
    """The log already holds another root for the session."""


class Anchor(Protocol):
    """Puts a session root beyond rewriting. Idempotent per session id."""

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt: ...


class LocalAnchorLog:
    """The embedded anchor backend. Safe for concurrent use within one process."""

    def __init__(self, path: Path, key: ClusterKey) -> None:
        self.path = path
        self._key = key
        self._lock = threading.Lock()

    def _entries(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise FormatError(f"anchor log line {number} is not JSON") from None
            if not isinstance(entry, dict):
                raise FormatError(f"anchor log line {number} is not an object")
            entries.append(entry)
        return entries

    def _append(self, session_id: str, root: str) -> AnchorReceipt:
        with self._lock:
            entries = self._entries()
            for entry in entries:
                if entry.get("session_id") == session_id:
                    if entry.get("root") != root:
                        raise LocalAnchorConflict(
                            f"session {session_id} is already anchored with another root"
                        )
                    return self._receipt(entry)
            body: dict[str, object] = {
                "index": len(entries),
                "session_id": session_id,
                "root": root,
                "time": utc_now(),
                "prev": entries[-1]["hash"] if entries else _GENESIS,
            }
            digest = hashlib.sha256(canonical_json(body)).hexdigest()
            entry = {
                **body,
                "hash": digest,
                "signature": self._key.sign(_CONTEXT + digest.encode()).hex(),
            }
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, canonical_json(entry) + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(f"cannot append to anchor log: {exc.strerror}") from exc
            return self._receipt(entry)

    def _receipt(self, entry: dict[str, object]) -> AnchorReceipt:
        return AnchorReceipt("local", str(self.path), str(entry["hash"]), int(str(entry["index"])))

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt:
        return await asyncio.to_thread(self._append, session_id, root)

    def find(self, session_id: str) -> dict[str, object] | None:
        """The entry for ``session_id``, or None (reading needs no key)."""
        return next((e for e in self._entries() if e.get("session_id") == session_id), None)

    def verify(self, public_key: bytes) -> list[str]:
        """Problems found in the log, first one first; empty if the chain holds."""
        problems: list[str] = []
        prev = _GENESIS
        for index, entry in enumerate(self._entries()):
            body = {k: entry.get(k) for k in ("index", "session_id", "root", "time", "prev")}
            digest = hashlib.sha256(canonical_json(body)).hexdigest()
            signature = entry.get("signature")
            if entry.get("index") != index:
                problems.append(f"entry {index}: out of order (says {entry.get('index')})")
            elif entry.get("prev") != prev:
                problems.append(f"entry {index}: does not follow the entry before it")
            elif entry.get("hash") != digest:
                problems.append(f"entry {index}: edited (hash does not match)")
            elif not _signature_holds(public_key, signature, digest):
                problems.append(f"entry {index}: signature does not verify")
            prev = str(entry.get("hash"))
        return problems


def _signature_holds(public_key: bytes, signature: object, digest: str) -> bool:
    if not isinstance(signature, str):
        return False
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        return False
    return verify_signature(public_key, raw, _CONTEXT + digest.encode())
