"""Finalisation: whatever chunks reached storage become a signed manifest.

The Merkle tree is built over the leaf hashes of the unbroken run of chunk records from
sequence 0, the manifest is signed with the cluster key and stored, and the session is
closed as ``completed`` or ``interrupted``. It is also how a crashed recording is closed.
"""

from __future__ import annotations

from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import InvalidConfigError, NotFoundError
from lucid_sessions.manifest import Manifest, ManifestChunk, parse_manifest, signed_message
from lucid_sessions.merkle import MerkleTree, get_hasher
from lucid_sessions.storage.metadata import ManifestRecord, MetadataStore, utc_now

__all__ = ["finalize_session"]


async def finalize_session(
    store: MetadataStore,
    signer: ClusterKey,
    session_id: str,
    *,
    status: str = "completed",
    reason: str | None = None,
) -> Manifest:
    """Sign a manifest over the session's stored chunks and close the session.

    Only chunks whose records form an unbroken run from sequence 0 are included, so a
    manifest never has a gap. Idempotent: a session that already has a manifest returns it.
    """
    session = await store.get_session(session_id)
    try:
        existing = await store.get_manifest(session_id)
    except NotFoundError:
        existing = None
    if existing is not None:
        manifest = parse_manifest(existing.manifest)
        if session.status != manifest.status:
            await _close_session(store, manifest, reason)
        return manifest
    records = await store.list_chunks(session_id)
    run = []
    for expected, record in enumerate(records):
        if record.sequence != expected:
            break
        run.append(record)
    hasher = get_hasher(session.hash_algorithm)
    tree = MerkleTree(hasher, (bytes.fromhex(r.leaf_hash) for r in run))
    ended = utc_now()
    if session.key_id is None:
        raise InvalidConfigError(f"session {session_id} has no data key")
    manifest = Manifest(
        session_id=session_id,
        name=session.name,
        status=status,
        created_at=session.created_at,
        started_at=session.started_at,
        ended_at=ended,
        hash_algorithm=hasher.name,
        key_id=session.key_id,
        tree_size=tree.size,
        root=tree.root().hex(),
        chunks=tuple(
            ManifestChunk(
                sequence=r.sequence,
                start_us=r.start_us,
                end_us=r.end_us,
                frame_count=r.frame_count,
                raw_size=r.plain_size,
                stored_size=r.stored_size,
                leaf_hash=r.leaf_hash,
            )
            for r in run
        ),
        metadata={
            "project": session.project,
            "environment": session.environment,
            "tags": list(session.tags),
            "config": dict(session.config),
            "status_reason": reason,
            "stats": dict(session.stats),
        },
    )
    data = manifest.to_bytes()
    key = signer
    await store.put_manifest(
        ManifestRecord(
            session_id=session_id,
            manifest=data,
            signature=key.sign(signed_message(data)),
            public_key=key.public_key_bytes(),
            created_at=ended,
        )
    )
    await _close_session(store, manifest, reason)
    return manifest


async def _close_session(store: MetadataStore, manifest: Manifest, reason: str | None) -> None:
    records = await store.list_chunks(manifest.session_id, limit=manifest.tree_size)
    await store.update_session(
        manifest.session_id,
        {
            "status": manifest.status,
            "status_reason": reason,
            "ended_at": manifest.ended_at,
            "chunk_count": manifest.tree_size,
            "raw_bytes": sum(r.raw_bytes for r in records),
            "stored_bytes": sum(r.stored_size for r in records),
            "root": manifest.root,
        },
    )
