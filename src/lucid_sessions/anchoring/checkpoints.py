"""Live checkpoints: signed tree heads of a session while it records.

While a session records, every ``every_chunks`` stored chunks or ``every_seconds``
seconds (whichever comes first) the pipeline takes the chunk records stored so far **in
sequence order up to the first gap** (chunks may complete out of order), builds their
Merkle tree, signs a tree head with the cluster key and anchors it (anchor id
``<session>@<size>``). A checkpoint is::

    {"session_id", "size", "root", "time", "hash_algorithm", "signature"}

``signature`` is Ed25519 over :data:`CHECKPOINT_CONTEXT` followed by the canonical JSON of
the other five fields. Checkpoints are kept one JSON object per line in
``checkpoints/<session>.jsonl`` in the data directory (fsynced appends).

The final manifest must extend every checkpoint: for each checkpoint there is an RFC 9162
consistency proof to the next checkpoint and one to the manifest's tree
(:func:`consistency_proofs`); :func:`check_checkpoints` verifies the signatures and the
proofs and names the checkpoint that fails. So a chunk replaced before a checkpoint (a
manifest rebuilt and re-signed over other bytes) or a stretch cut off after one cannot
pass, and a crash loses at most what came after the last checkpoint.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from lucid_sessions.anchoring.heads import SignedHead
from lucid_sessions.anchoring.local import Anchor
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import FormatError, LucidError, StorageError
from lucid_sessions.manifest import Manifest, canonical_json, leaf_hashes
from lucid_sessions.merkle import MerkleTree, get_hasher, verify_consistency
from lucid_sessions.storage.chunk_store import check_id
from lucid_sessions.storage.metadata import ChunkRecord, SessionRecord, utc_now

__all__ = [
    "CHECKPOINT_CONTEXT",
    "CHECKPOINT_DIR",
    "Checkpoint",
    "CheckpointStore",
    "Checkpointer",
    "check_checkpoints",
    "consistency_proofs",
    "parse_checkpoint",
    "sign_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_CONTEXT = b"lucid-sessions checkpoint v1\n"
CHECKPOINT_DIR = "checkpoints"
_BODY = ("session_id", "size", "root", "time", "hash_algorithm")


@dataclass(frozen=True, slots=True)
class Checkpoint(SignedHead):
    BODY: ClassVar[tuple[str, ...]] = _BODY
    CONTEXT: ClassVar[bytes] = CHECKPOINT_CONTEXT
    session_id: str
    size: int
    root: str
    time: str
    hash_algorithm: str
    signature: str
    """Hex Ed25519 signature over CHECKPOINT_CONTEXT || canonical JSON of the body."""

    @property
    def anchor_id(self) -> str:
        """The id the checkpoint is anchored under: unique per (session, size)."""
        return f"{self.session_id}@{self.size}"


def sign_checkpoint(
    key: ClusterKey,
    session_id: str,
    size: int,
    root: str,
    hash_algorithm: str,
    *,
    when: str | None = None,
) -> Checkpoint:
    unsigned = Checkpoint(session_id, size, root, when or utc_now(), hash_algorithm, "")
    signature = unsigned.sign_with(key)
    return dataclasses.replace(unsigned, signature=signature)


def parse_checkpoint(value: object, where: str = "checkpoint") -> Checkpoint:
    """A :class:`Checkpoint` from its JSON object; FormatError naming what is wrong."""
    if not isinstance(value, dict):
        raise FormatError(f"{where} is not an object")
    fields: dict[str, Any] = {}
    for name in (*_BODY, "signature"):
        item = value.get(name)
        wanted: type = int if name == "size" else str
        if isinstance(item, bool) or not isinstance(item, wanted):
            raise FormatError(f"{where}: {name} is missing or has the wrong type")
        fields[name] = item
    if fields["size"] < 1:
        raise FormatError(f"{where}: size must be at least 1")
    return Checkpoint(**fields)


class CheckpointStore:
    """``checkpoints/<session>.jsonl`` under a data directory. Appends are fsynced."""

    def __init__(self, data_path: Path) -> None:
        self.root = data_path / CHECKPOINT_DIR

    def path(self, session_id: str) -> Path:
        return self.root / f"{check_id(session_id)}.jsonl"

    def append(self, checkpoint: Checkpoint) -> None:
        path = self.path(checkpoint.session_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, canonical_json(checkpoint.to_dict()) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(
                f"cannot write checkpoint of {checkpoint.session_id}: {exc}"
            ) from exc

    def list(self, session_id: str) -> list[Checkpoint]:
        """The session's checkpoints in the order written (empty when it has none)."""
        try:
            text = self.path(session_id).read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the checkpoints of {session_id}: {exc}") from exc
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                raise FormatError(f"checkpoint line {number} of {session_id} is not JSON") from None
            found.append(parse_checkpoint(value, f"checkpoint line {number} of {session_id}"))
        return found

    def raw(self, session_id: str) -> builtins.list[object]:
        """The stored lines as JSON values (a line that is not JSON as its text), for a
        verifier that names each malformed one instead of stopping at it."""
        try:
            text = self.path(session_id).read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the checkpoints of {session_id}: {exc}") from exc
        values: builtins.list[object] = []
        for line in text.splitlines():
            if line.strip():
                try:
                    values.append(json.loads(line))
                except ValueError:
                    values.append(line)
        return values

    def delete(self, session_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(session_id).unlink()


def stored_run(records: Sequence[ChunkRecord]) -> list[ChunkRecord]:
    """The records from sequence 0 up to the first gap (records come by sequence)."""
    run = []
    for expected, record in enumerate(records):
        if record.sequence != expected:
            break
        run.append(record)
    return run


# proofs and their check


def consistency_proofs(
    manifest: Manifest, checkpoints: Sequence[Checkpoint]
) -> list[dict[str, Any]]:
    """For every checkpoint (in order), a consistency proof to the next checkpoint and one
    to the manifest's tree: ``{"from_size", "to_size", "proof": [hex, ...]}``. Checkpoints
    larger than the manifest's tree get no proof (there is none)."""
    tree = MerkleTree(get_hasher(manifest.hash_algorithm), leaf_hashes(manifest.chunks))
    proofs: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    sizes = [c.size for c in checkpoints]
    for i, size in enumerate(sizes):
        targets = [sizes[i + 1]] if i + 1 < len(sizes) else []
        targets.append(tree.size)
        for target in targets:
            if not 0 < size <= target <= tree.size or (size, target) in seen:
                continue
            seen.add((size, target))
            proof = [h.hex() for h in tree.consistency_proof(size, target)]
            proofs.append({"from_size": size, "to_size": target, "proof": proof})
    return proofs


def _proof_table(proofs: object) -> dict[tuple[int, int], list[bytes]]:
    table: dict[tuple[int, int], list[bytes]] = {}
    if not isinstance(proofs, list):
        return table
    for item in proofs:
        if not isinstance(item, dict):
            continue
        try:
            key = (int(item["from_size"]), int(item["to_size"]))
            table[key] = [bytes.fromhex(h) for h in item["proof"]]
        except (KeyError, TypeError, ValueError):
            continue
    return table


def _label(index: int, checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return f"checkpoint {index}"
    return f"checkpoint {index} (size {checkpoint.size}, {checkpoint.time})"


def check_checkpoints(
    manifest: Manifest,
    checkpoints: Sequence[object],
    proofs: object,
    public_key: bytes,
) -> list[str]:
    """Problems with ``checkpoints`` against the signed ``manifest``, each naming the
    checkpoint; empty if every checkpoint is signed by ``public_key``, belongs to this
    session and its tree, and is consistent with the next checkpoint and the manifest.

    ``proofs`` is the list :func:`consistency_proofs` makes (from a bundle); a proof that
    is missing or does not verify is computed again from the manifest's leaf hashes: any
    valid proof settles consistency, so the verdict never rests on the carried proofs.
    """
    hasher = get_hasher(manifest.hash_algorithm)
    tree = MerkleTree(hasher, leaf_hashes(manifest.chunks))
    table = _proof_table(proofs)
    final_root = bytes.fromhex(manifest.root)
    problems: list[str] = []
    parsed: list[Checkpoint | None] = []
    for index, raw in enumerate(checkpoints):
        try:
            parsed.append(raw if isinstance(raw, Checkpoint) else parse_checkpoint(raw))
        except FormatError as exc:
            problems.append(f"{_label(index, None)}: malformed: {exc.message}")
            parsed.append(None)

    def consistent(old: int, new: int, old_root: bytes, new_root: bytes) -> bool:
        # Any valid proof settles it (RFC 9162 proofs are sound), so a carried proof that
        # fails is tried again with one computed from the manifest's own leaf hashes.
        given = table.get((old, new))
        if given is not None and verify_consistency(hasher, old, new, old_root, new_root, given):
            return True
        computed = tree.consistency_proof(old, new) if 0 < old <= new <= tree.size else []
        return verify_consistency(hasher, old, new, old_root, new_root, computed)

    previous: Checkpoint | None = None
    for index, checkpoint in enumerate(parsed):
        if checkpoint is None:
            continue
        label = _label(index, checkpoint)
        if checkpoint.session_id != manifest.session_id:
            problems.append(f"{label}: belongs to session {checkpoint.session_id}")
            continue
        if checkpoint.hash_algorithm != manifest.hash_algorithm:
            problems.append(
                f"{label}: uses {checkpoint.hash_algorithm}, the manifest {manifest.hash_algorithm}"
            )
            continue
        if not checkpoint.signature_ok(public_key):
            problems.append(f"{label}: its signature does not verify")
            continue
        try:
            root = bytes.fromhex(checkpoint.root)
        except ValueError:
            problems.append(f"{label}: malformed: root is not hex")
            continue
        if previous is not None:
            if checkpoint.size <= previous.size:
                problems.append(
                    f"{label}: not larger than the checkpoint before it (size {previous.size})"
                )
            elif not consistent(previous.size, checkpoint.size, bytes.fromhex(previous.root), root):
                problems.append(
                    f"{label}: not consistent with the checkpoint before it (size {previous.size})"
                )
        if checkpoint.size > manifest.tree_size:
            problems.append(
                f"{label}: the manifest has {manifest.tree_size} chunks, fewer than this "
                "checkpoint covered: chunks were cut off after it"
            )
        elif not consistent(checkpoint.size, manifest.tree_size, root, final_root):
            problems.append(
                f"{label}: the signed root is not consistent with it: a chunk before "
                f"chunk {checkpoint.size} was replaced after the checkpoint"
            )
        previous = checkpoint
    return problems


# the pipeline's side


class ChunkLister(Protocol):
    async def get_session(self, session_id: str) -> SessionRecord: ...

    async def list_chunks(self, session_id: str) -> list[ChunkRecord]: ...


@dataclass(slots=True)
class _State:
    hash_algorithm: str | None = None
    size: int = 0
    """Size of the last checkpoint."""
    since: int = 0
    """Chunks stored since the last checkpoint."""
    last: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    again: bool = False


class Checkpointer:
    """Makes the checkpoints of the sessions recording in one pipeline.

    :meth:`stored` is called (from the event loop) whenever a chunk of a session is known
    stored; when ``every_chunks`` chunks were stored or ``every_seconds`` passed since the
    last checkpoint it starts one in the background (one at a time per session).
    :meth:`finish` waits for it and forgets the session. ``every_chunks`` or
    ``every_seconds`` <= 0 turns that trigger off. A checkpoint that cannot be made or
    anchored is logged; it never fails the recording.
    """

    def __init__(
        self,
        storage: ChunkLister,
        signer: ClusterKey,
        anchor: Anchor | None,
        store: CheckpointStore,
        *,
        every_chunks: int = 10,
        every_seconds: float = 60.0,
    ) -> None:
        self.storage = storage
        self.signer = signer
        self.anchor = anchor
        self.store = store
        self.every_chunks = every_chunks
        self.every_seconds = every_seconds
        self._states: dict[str, _State] = {}
        self.made = 0

    @property
    def enabled(self) -> bool:
        return self.every_chunks > 0 or self.every_seconds > 0

    def _due(self, state: _State) -> bool:
        return (0 < self.every_chunks <= state.since) or (
            self.every_seconds > 0 and time.monotonic() - state.last >= self.every_seconds
        )

    def stored(self, session_id: str) -> None:
        if not self.enabled:
            return
        state = self._states.setdefault(session_id, _State())
        state.since += 1
        if not self._due(state):
            return
        if state.task is not None and not state.task.done():
            state.again = True
            return
        state.task = asyncio.get_running_loop().create_task(self._run(session_id, state))

    async def _run(self, session_id: str, state: _State) -> None:
        while True:
            state.again = False
            try:
                await self.checkpoint(session_id, state)
            except (LucidError, OSError) as exc:
                log.error("checkpoint of %s failed: %s", session_id, exc)
            if not (state.again and self._due(state)):
                return

    async def checkpoint(self, session_id: str, state: _State | None = None) -> Checkpoint | None:
        """Sign, store and anchor a checkpoint over the stored run now; None when the run
        has not grown since the last one."""
        state = state or self._states.setdefault(session_id, _State())
        if state.hash_algorithm is None:
            state.hash_algorithm = (await self.storage.get_session(session_id)).hash_algorithm
        run = stored_run(await self.storage.list_chunks(session_id))
        if len(run) <= state.size:
            return None
        tree = MerkleTree(
            get_hasher(state.hash_algorithm), (bytes.fromhex(r.leaf_hash) for r in run)
        )
        made = sign_checkpoint(
            self.signer, session_id, tree.size, tree.root().hex(), state.hash_algorithm
        )
        await asyncio.to_thread(self.store.append, made)
        state.size, state.since, state.last = made.size, 0, time.monotonic()
        self.made += 1
        log.info("checkpoint %s size %d", session_id, made.size)
        if self.anchor is not None:
            try:
                await self.anchor.anchor(made.anchor_id, made.root)
            except Exception as exc:  # whatever the backend raised: the checkpoint stands
                log.warning("anchoring checkpoint %s failed: %s", made.anchor_id, exc)
        return made

    async def finish(self, session_id: str) -> None:
        """Wait for the session's checkpoint in progress, then forget the session."""
        state = self._states.pop(session_id, None)
        if state is not None and state.task is not None:
            state.again = False
            with contextlib.suppress(asyncio.CancelledError):
                await state.task

    async def close(self) -> None:
        for session_id in list(self._states):
            await self.finish(session_id)


def check_stored(
    store: CheckpointStore, manifest: Manifest, public_key: bytes
) -> tuple[list[Checkpoint], list[str]]:
    """The session's stored checkpoints and the problems :func:`check_checkpoints` finds."""
    found = store.list(manifest.session_id)
    return found, check_checkpoints(manifest, found, None, public_key)


def bundle_body(manifest: Manifest, checkpoints: Sequence[Checkpoint]) -> dict[str, Any]:
    """What a bundle's ``checkpoints.json`` holds."""
    return {
        "checkpoints": [c.to_dict() for c in checkpoints],
        "consistency": consistency_proofs(manifest, checkpoints),
    }


def parse_bundle_body(body: object) -> tuple[list[object], object]:
    """(checkpoints, proofs) from ``checkpoints.json``; FormatError if it is no object with
    a list of checkpoints (each checkpoint is judged on its own by the verifier)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("checkpoints"), list):
        raise FormatError("bundle checkpoints.json is malformed")
    return list(body["checkpoints"]), body.get("consistency")
