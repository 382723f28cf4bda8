"""Verification of a session or an evidence bundle, with nothing but this package.

What is checked, in order:

1. the manifest parses and its Ed25519 signature holds; when a trusted public key is
   given (or the data directory has the cluster key), the signing key must be that key;
2. the Merkle root recomputed from the manifest's leaf hashes equals the signed root,
   and the tree size equals the number of chunks listed;
3. every chunk: present, its stored bytes hash to the manifest's leaf hash, its header
   names its own sequence number; a chunk holding another chunk's bytes is reported as
   reordered, a short one as truncated; chunks not in the manifest are reported too;
4. for an excerpt bundle, every included chunk's inclusion proof leads to the root;
5. with the data key, every chunk decrypts (which also checks it belongs to this session
   at this position) and decodes;
6. the live checkpoints the source carries (a bundle's ``checkpoints.json``, a data
   directory's ``checkpoints/``): each is signed by the manifest's key (the trusted key
   when given) and is consistent (RFC 9162) with the next one and with the signed root;
   a failure names the checkpoint (:mod:`lucid_sessions.anchoring.checkpoints`).

The anchor is not checked here: that needs the chain (``verify --chain-url``, see
:mod:`lucid_sessions.archive.anchor_check`). The report carries the source's anchor
receipt, if any, and a line saying it was not checked.

Failures are collected, not raised: :class:`Report` lists all of them in chunk order and
names the first. Nothing is modified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lucid_sessions.archive.anchor_check import offline_line
from lucid_sessions.chunkfile import open_chunk, parse_header
from lucid_sessions.crypto import DataKey, public_key_fingerprint, verify_signature
from lucid_sessions.errors import LucidError
from lucid_sessions.manifest import Manifest, leaf_hashes, parse_manifest, signed_message
from lucid_sessions.merkle import MerkleTree, get_hasher, verify_inclusion
from lucid_sessions.recording.codec import ChunkDecoder

__all__ = ["EvidenceSource", "Failure", "Report", "summary_lines", "verify_evidence"]


class EvidenceSource(Protocol):
    """What verification reads: a session in a data directory or a bundle."""

    manifest_bytes: bytes
    signature: bytes
    public_key: bytes

    @property
    def excerpt(self) -> bool: ...

    @property
    def listed_chunks(self) -> list[int] | None:
        """The chunks the source claims to include, or None for all of the manifest's."""
        ...

    @property
    def proofs(self) -> dict[int, list[bytes]]: ...

    def sequences(self) -> list[int]: ...

    def chunk(self, sequence: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    kind: str
    """signature, manifest, root, missing, altered, truncated, reordered, unexpected,
    proof, key, decrypt, decode, checkpoint, anchor."""
    message: str
    sequence: int | None = None

    def __str__(self) -> str:
        if self.kind == "anchor":
            return f"anchor: {self.message}"
        where = "manifest" if self.sequence is None else f"chunk {self.sequence}"
        return f"{where}: {self.kind}: {self.message}"


@dataclass(slots=True)
class Report:
    session_id: str | None = None
    failures: list[Failure] = field(default_factory=list)
    chunks_expected: int = 0
    chunks_checked: int = 0
    chunks_decoded: int = 0
    frames_decoded: int = 0
    signer_fingerprint: str | None = None
    trusted_key_checked: bool = False
    decrypted: bool = False
    excerpt: bool = False
    root: str | None = None
    anchor_receipt: dict[str, Any] | None = None
    """The source's anchor state and receipt (a bundle's ``anchor.json``), if any."""
    anchor_line: str | None = None
    """What was found about the anchor: not checked, confirmed on chain, or why not."""
    checkpoints: int = 0
    """Live checkpoints checked against the signed root."""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def first_failure(self) -> Failure | None:
        manifest_level = [f for f in self.failures if f.sequence is None]
        if manifest_level:
            return manifest_level[0]
        return min(self.failures, key=lambda f: f.sequence or 0, default=None)


def _check_manifest(
    source: EvidenceSource, report: Report, trusted_key: bytes | None
) -> Manifest | None:
    report.signer_fingerprint = public_key_fingerprint(source.public_key)
    if not verify_signature(
        source.public_key, source.signature, signed_message(source.manifest_bytes)
    ):
        report.failures.append(
            Failure("signature", "the manifest signature does not match its contents")
        )
    if trusted_key is not None:
        report.trusted_key_checked = True
        if trusted_key != source.public_key:
            report.failures.append(
                Failure(
                    "signature",
                    f"signed by key {report.signer_fingerprint}, not the trusted key "
                    f"{public_key_fingerprint(trusted_key)}",
                )
            )
    try:
        manifest = parse_manifest(source.manifest_bytes)
    except LucidError as exc:
        report.failures.append(Failure("manifest", exc.message))
        return None
    report.session_id = manifest.session_id
    report.root = manifest.root
    tree = MerkleTree(get_hasher(manifest.hash_algorithm), leaf_hashes(manifest.chunks))
    if tree.root().hex() != manifest.root:
        report.failures.append(
            Failure("root", "the Merkle root of the listed chunks is not the signed root")
        )
    return manifest


def _check_chunk(
    source: EvidenceSource,
    manifest: Manifest,
    sequence: int,
    by_leaf: dict[str, int],
    report: Report,
) -> bytes | None:
    hasher = get_hasher(manifest.hash_algorithm)
    expected = manifest.chunks[sequence]
    try:
        stored = source.chunk(sequence)
    except LucidError as exc:
        report.failures.append(
            Failure("missing", f"the chunk is unreadable: {exc.message}", sequence)
        )
        return None
    if stored is None:
        report.failures.append(Failure("missing", "the chunk is not present", sequence))
        return None
    report.chunks_checked += 1
    leaf = hasher.leaf_hash(stored).hex()
    if leaf != expected.leaf_hash:
        other = by_leaf.get(leaf)
        if other is not None:
            failure = Failure("reordered", f"holds the bytes of chunk {other}", sequence)
        elif len(stored) < expected.stored_size:
            failure = Failure(
                "truncated", f"{len(stored)} of {expected.stored_size} bytes", sequence
            )
        else:
            failure = Failure("altered", "its hash differs from the manifest's", sequence)
        report.failures.append(failure)
        return None
    try:
        header = parse_header(stored)
    except LucidError as exc:
        report.failures.append(Failure("altered", exc.message, sequence))
        return None
    if header.sequence != sequence:
        report.failures.append(
            Failure("reordered", f"its header says chunk {header.sequence}", sequence)
        )
        return None
    if source.excerpt:
        proof = source.proofs.get(sequence)
        if proof is None or not verify_inclusion(
            hasher,
            sequence,
            manifest.tree_size,
            bytes.fromhex(leaf),
            proof,
            bytes.fromhex(manifest.root),
        ):
            report.failures.append(
                Failure("proof", "its inclusion proof does not lead to the root", sequence)
            )
            return None
    return stored


def _check_checkpoints(
    source: EvidenceSource, manifest: Manifest, report: Report, trusted_key: bytes | None
) -> None:
    """The source's live checkpoints (``checkpoints``, ``checkpoint_proofs``; none when it
    has no such attributes): each signed by the manifest's (or the trusted) key and
    consistent with the next one and with the signed root."""
    from lucid_sessions.anchoring.checkpoints import check_checkpoints

    checkpoints = getattr(source, "checkpoints", None)
    if not checkpoints:
        return
    report.checkpoints = len(checkpoints)
    key = trusted_key if trusted_key is not None else source.public_key
    proofs = getattr(source, "checkpoint_proofs", None)
    for problem in check_checkpoints(manifest, checkpoints, proofs, key):
        report.failures.append(Failure("checkpoint", problem))


def _decode(stored: bytes, manifest: Manifest, sequence: int, key: DataKey, report: Report) -> None:
    try:
        plain = open_chunk(stored, session_id=manifest.session_id, sequence=sequence, key=key.key)
    except LucidError as exc:
        report.failures.append(Failure("decrypt", exc.message, sequence))
        return
    try:
        frames = sum(1 for _ in ChunkDecoder(plain).frames(copy=False))
    except LucidError as exc:
        report.failures.append(Failure("decode", exc.message, sequence))
        return
    expected = manifest.chunks[sequence].frame_count
    if frames != expected:
        report.failures.append(
            Failure("decode", f"{frames} frames decoded, manifest says {expected}", sequence)
        )
        return
    report.chunks_decoded += 1
    report.frames_decoded += frames


def verify_evidence(
    source: EvidenceSource,
    *,
    trusted_key: bytes | None = None,
    data_key: DataKey | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check ``source``; see the module docstring for what is checked."""
    report = Report(excerpt=source.excerpt)
    receipt = getattr(source, "anchor", None)
    report.anchor_receipt = dict(receipt) if isinstance(receipt, Mapping) else None
    report.anchor_line = offline_line(report.anchor_receipt)
    manifest = _check_manifest(source, report, trusted_key)
    if manifest is None:
        return report
    _check_checkpoints(source, manifest, report, trusted_key)
    if data_key is not None:
        report.decrypted = True
        if data_key.key_id != manifest.key_id:
            report.failures.append(
                Failure("key", f"data key {data_key.key_id} is not the session's key")
            )
            data_key = None
    listed = source.listed_chunks
    wanted = list(range(manifest.tree_size)) if listed is None else sorted(set(listed))
    report.chunks_expected = len(wanted)
    for sequence in wanted:
        if sequence >= manifest.tree_size:
            report.failures.append(
                Failure("unexpected", "listed but not in the manifest", sequence)
            )
    by_leaf = {c.leaf_hash: c.sequence for c in manifest.chunks}
    for sequence in (s for s in wanted if s < manifest.tree_size):
        stored = _check_chunk(source, manifest, sequence, by_leaf, report)
        if stored is not None and data_key is not None:
            _decode(stored, manifest, sequence, data_key, report)
        if progress is not None:
            progress(1)
    for sequence in sorted(set(source.sequences()) - set(wanted)):
        report.failures.append(
            Failure("unexpected", "present but not listed in the manifest", sequence)
        )
    return report


def summary_lines(report: Report) -> list[str]:
    """What ``verify`` prints: a verdict naming the first failure, then every failure."""
    lines: list[str] = []
    what = "excerpt of session" if report.excerpt else "session"
    first = report.first_failure
    if first is None:
        lines.append(
            f"OK: {what} {report.session_id}: {report.chunks_checked} of "
            f"{report.chunks_expected} chunks match root {report.root}"
        )
    else:
        lines.append(f"FAILED: {what} {report.session_id or '?'}: {first}")
    trust = "trusted" if report.trusted_key_checked else "enclosed, not checked against a trusted"
    lines.append(f"signed by key {report.signer_fingerprint} ({trust} key)")
    if report.decrypted:
        lines.append(
            f"decrypted and decoded {report.chunks_decoded} chunks, {report.frames_decoded} frames"
        )
    else:
        lines.append("chunks not decrypted (no data key given)")
    if report.checkpoints:
        bad = sum(1 for f in report.failures if f.kind == "checkpoint")
        state = "consistent with the signed root" if not bad else f"{bad} problems"
        lines.append(f"{report.checkpoints} live checkpoints: {state}")
    if report.anchor_line is not None:
        lines.append(report.anchor_line)
    lines.extend(f"  {failure}" for failure in report.failures if failure is not first)
    if first is not None and len(report.failures) > 1:
        lines.append(f"{len(report.failures)} failures in all")
    return lines
