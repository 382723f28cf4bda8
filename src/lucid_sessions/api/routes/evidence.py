"""Evidence of a finalised session: signed manifest, inclusion proofs, verification, export.

All of it needs the session's manifest, which exists once the session is finalised;
before that these routes answer 404 (LUCID_ERR_3001).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.bridge import ExportStream, StorageEvidence, run_in_thread
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, Ctx, SequenceNo, SessionId
from lucid_sessions.archive.bundle import ExportRange
from lucid_sessions.archive.verify import Failure, verify_evidence
from lucid_sessions.crypto import public_key_fingerprint
from lucid_sessions.errors import ChunkNotFoundError, InvalidConfigError
from lucid_sessions.manifest import SIGNING_CONTEXT, Manifest, leaf_hashes, parse_manifest
from lucid_sessions.merkle import MerkleTree, get_hasher
from lucid_sessions.storage.metadata import ManifestRecord

__all__ = ["router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}", tags=["evidence"], responses=ERRORS
)


class ClosingStreamingResponse(StreamingResponse):
    """A streamed response that calls ``on_close`` when it ends, however it ends."""

    def __init__(self, content: ExportStream, *, on_close: Callable[[], None], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class ManifestOut(BaseModel):
    session_id: str
    manifest: dict[str, Any]
    """The manifest, parsed."""
    manifest_base64: str
    """The exact signed bytes (canonical JSON)."""
    signature: str
    """Hex of the 64-byte Ed25519 signature over ``signing_context || manifest bytes``."""
    signature_base64: str
    public_key: str
    """Hex of the 32-byte raw Ed25519 public key of the cluster."""
    public_key_base64: str
    public_key_fingerprint: str
    signing_context: str
    algorithm: str
    created_at: str


class ProofOut(BaseModel):
    session_id: str
    sequence: int
    hash_algorithm: str
    leaf_hash: str
    """Hex of the RFC 9162 leaf hash of the stored chunk."""
    tree_size: int
    root: str
    path: list[str]
    """Hex of the audit path, leaf to root (RFC 9162 2.1.3)."""


class FailureOut(BaseModel):
    kind: str
    message: str
    sequence: int | None


class VerificationOut(BaseModel):
    ok: bool
    session_id: str | None
    root: str | None
    first_failure: FailureOut | None
    failures: list[FailureOut]
    chunks_expected: int
    chunks_checked: int
    signer_fingerprint: str | None
    trusted_key_checked: bool
    decrypted: bool
    """Always false here: the API checks integrity without data keys."""


async def _manifest(ctx: Ctx, session_id: str) -> ManifestRecord:
    await ctx.storage.get_session(session_id)
    return await ctx.storage.get_manifest(session_id)


@router.get(
    "/manifest",
    dependencies=[Depends(authorize("sessions:read"))],
    summary="The signed manifest, its signature and the cluster's public key",
)
async def get_manifest(session_id: SessionId, ctx: Ctx) -> ManifestOut:
    record = await _manifest(ctx, session_id)
    manifest = parse_manifest(record.manifest)
    return ManifestOut(
        session_id=session_id,
        manifest=manifest.to_dict(),
        manifest_base64=base64.b64encode(record.manifest).decode(),
        signature=record.signature.hex(),
        signature_base64=base64.b64encode(record.signature).decode(),
        public_key=record.public_key.hex(),
        public_key_base64=base64.b64encode(record.public_key).decode(),
        public_key_fingerprint=public_key_fingerprint(record.public_key),
        signing_context=SIGNING_CONTEXT.decode(),
        algorithm="ed25519",
        created_at=record.created_at,
    )


@router.get(
    "/proof/{sequence}",
    dependencies=[Depends(authorize("chunks:read"))],
    summary="Inclusion proof of one chunk in the session's signed Merkle root",
)
async def get_proof(session_id: SessionId, sequence: SequenceNo, ctx: Ctx) -> ProofOut:
    record = await _manifest(ctx, session_id)
    manifest = parse_manifest(record.manifest)
    if sequence >= manifest.tree_size:
        raise ChunkNotFoundError(
            f"chunk {sequence} is not in the manifest of session {session_id} "
            f"({manifest.tree_size} chunks)"
        )
    hasher = get_hasher(manifest.hash_algorithm)
    tree = await asyncio.to_thread(MerkleTree, hasher, leaf_hashes(manifest.chunks))
    path = tree.inclusion_proof(sequence)
    return ProofOut(
        session_id=session_id,
        sequence=sequence,
        hash_algorithm=manifest.hash_algorithm,
        leaf_hash=manifest.chunks[sequence].leaf_hash,
        tree_size=manifest.tree_size,
        root=manifest.root,
        path=[p.hex() for p in path],
    )


def _failure(failure: Failure) -> FailureOut:
    return FailureOut(kind=failure.kind, message=failure.message, sequence=failure.sequence)


@router.get(
    "/verify",
    dependencies=[Depends(authorize("chunks:read"))],
    summary="Verify the stored session against its signed manifest, on the server",
)
async def verify_session(session_id: SessionId, ctx: Ctx) -> VerificationOut:
    record = await _manifest(ctx, session_id)
    source = StorageEvidence(ctx.storage, record, asyncio.get_running_loop())
    trusted = ctx.settings.trusted_public_key
    report = await run_in_thread(lambda: verify_evidence(source, trusted_key=trusted))
    first = report.first_failure
    log.info(
        "api session verified session_id=%s ok=%s failures=%d",
        session_id,
        report.ok,
        len(report.failures),
    )
    return VerificationOut(
        ok=report.ok,
        session_id=report.session_id,
        root=report.root,
        first_failure=None if first is None else _failure(first),
        failures=[_failure(f) for f in report.failures],
        chunks_expected=report.chunks_expected,
        chunks_checked=report.chunks_checked,
        signer_fingerprint=report.signer_fingerprint,
        trusted_key_checked=report.trusted_key_checked,
        decrypted=report.decrypted,
    )


From = Annotated[
    float | None,
    Query(alias="from", ge=0, le=10**9, allow_inf_nan=False, description="Seconds from start"),
]
To = Annotated[
    float | None,
    Query(alias="to", ge=0, le=10**9, allow_inf_nan=False, description="Seconds from start"),
]


def _included(manifest: Manifest, excerpt: ExportRange | None) -> set[int]:
    """The sequences ``export_bundle`` will write (its excerpt rule: overlapping chunks)."""
    chunks = manifest.chunks
    if excerpt is None or not chunks:
        return {c.sequence for c in chunks}
    origin = chunks[0].start_us
    lo = origin + (excerpt.from_us or 0)
    hi = None if excerpt.to_us is None else origin + excerpt.to_us
    ends = [c.start_us for c in chunks[1:]] + [None]
    return {
        c.sequence
        for c, nxt in zip(chunks, ends, strict=True)
        if (nxt is None or nxt > lo) and (hi is None or c.start_us <= hi)
    }


async def _require_chunks(ctx: Ctx, record: ManifestRecord, excerpt: ExportRange | None) -> None:
    """Refuse before the first byte when a chunk the bundle needs is not stored: a bundle
    cut off mid-stream would be worse than a clear answer."""
    wanted = _included(parse_manifest(record.manifest), excerpt)
    missing = sorted(wanted - set(await ctx.storage.chunk_sequences(record.session_id)))
    if missing:
        raise ChunkNotFoundError(
            f"session {record.session_id} cannot be exported: chunk {missing[0]} is not "
            f"stored ({len(missing)} missing); GET .../verify reports the damage",
            details={"missing": missing[:100]},
        )


@router.get(
    "/export",
    dependencies=[Depends(authorize("chunks:download"))],
    summary="The evidence bundle (tar), streamed; from/to (seconds) for an excerpt",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
async def export_session(
    session_id: SessionId,
    ctx: Ctx,
    from_s: From = None,
    to_s: To = None,
) -> StreamingResponse:
    if from_s is not None and to_s is not None and to_s < from_s:
        raise InvalidConfigError("to: must not be before from")
    session = await ctx.storage.get_session(session_id)
    record = await ctx.storage.get_manifest(session_id)
    excerpt = None
    if from_s is not None or to_s is not None:
        excerpt = ExportRange(
            None if from_s is None else round(from_s * 1e6),
            None if to_s is None else round(to_s * 1e6),
        )
    await _require_chunks(ctx, record, excerpt)
    log.info("api export session_id=%s excerpt=%s", session_id, excerpt is not None)
    body = ExportStream(
        ctx.storage,
        record,
        excerpt=excerpt,
        buffer=ctx.settings.export_buffer,
        piece=ctx.settings.stream_piece,
        session=session,
        evidence_dir=ctx.settings.evidence_dir,
    )
    name = f"{session_id}-excerpt.tar" if excerpt is not None else f"{session_id}.tar"
    return ClosingStreamingResponse(
        body,
        on_close=body.close,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
