"""What the pipeline adds to a recording's evidence besides the manifest: live checkpoints
(:mod:`.checkpoints`) while it records and, once finalised, its leaf in the cluster-wide
session log (:mod:`.session_log`), each tree head anchored through the configured
:class:`~lucid_sessions.anchoring.local.Anchor` (ids ``<session>@<size>`` and
``log@<size>``).

Both live in the data directory (``checkpoints/``, ``log/``), written by the pipeline
process as it writes the local anchor log. Nothing here fails a recording or a
finalisation: a checkpoint, log append or anchor that fails is logged (``log verify``
then reports the session as withheld from the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from lucid_sessions.anchoring.checkpoints import Checkpointer, CheckpointStore, check_stored
from lucid_sessions.anchoring.local import Anchor
from lucid_sessions.anchoring.session_log import SessionLog
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import LucidError
from lucid_sessions.manifest import Manifest
from lucid_sessions.storage.metadata import MetadataStore

__all__ = ["EvidenceTrail"]

log = logging.getLogger(__name__)


class EvidenceTrail:
    """Checkpoints and the session log for one pipeline. Use from its event loop."""

    def __init__(
        self,
        storage: MetadataStore,
        signer: ClusterKey,
        anchor: Anchor | None,
        data_path: Path,
        *,
        checkpoint_chunks: int = 10,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.storage = storage
        self.signer = signer
        self.anchor = anchor
        self.checkpoint_store = CheckpointStore(data_path)
        self.checkpoints = Checkpointer(
            storage,
            signer,
            anchor,
            self.checkpoint_store,
            every_chunks=checkpoint_chunks,
            every_seconds=checkpoint_seconds,
        )
        self.session_log = SessionLog(data_path, signer)
        self._tasks: set[asyncio.Task[None]] = set()

    def stored(self, session_id: str) -> None:
        """A chunk of ``session_id`` is stored (may start a checkpoint)."""
        self.checkpoints.stored(session_id)

    async def finalised(self, session_id: str, manifest: Manifest) -> None:
        """The session has its signed manifest: wait for its last checkpoint, check the
        manifest extends every checkpoint, append it to the session log, anchor the head."""
        await self.checkpoints.finish(session_id)
        try:
            _, problems = await asyncio.to_thread(
                check_stored, self.checkpoint_store, manifest, self.signer.public_key_bytes()
            )
            for problem in problems:
                log.error("session %s: %s", session_id, problem)
            record = await self.storage.get_manifest(session_id)
            _, head = await self.session_log.append(session_id, record.manifest)
        except (LucidError, OSError) as exc:
            log.error("adding session %s to the session log failed: %s", session_id, exc)
            return
        if self.anchor is not None:
            task = asyncio.create_task(self._anchor(head.anchor_id, head.root))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _anchor(self, anchor_id: str, root: str) -> None:
        assert self.anchor is not None
        try:
            await self.anchor.anchor(anchor_id, root)
        except Exception as exc:  # a background task: log whatever the backend raised
            log.warning("anchoring %s failed: %s", anchor_id, exc)

    async def close(self) -> None:
        await self.checkpoints.close()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
