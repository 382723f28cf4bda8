"""The evidence bundle: one self-contained file that proves a recording.

A bundle is a POSIX tar (uncompressed: chunks are compressed already) written front to
back, so it can be streamed. Members, in this order::

    lucid-bundle.json        format, version, session id, excerpt range, chunk list
    manifest.json            the signed manifest, byte for byte as signed
    manifest.sig             64-byte Ed25519 signature over SIGNING_CONTEXT || manifest
    public_key.pem           the cluster key that signed it
    proofs.json              tree size, root and an inclusion proof for every included chunk
    anchor.json              (when the session has one) the anchor state and receipt
    checkpoints.json         (when the session has any) its signed live checkpoints and
                             consistency proofs from each to the next and to the root
    chunks/NNNNNNNN.chunk    stored chunks, as on disk

``anchor.json`` cannot be part of the signed manifest: the root is anchored after the
manifest is signed. It is named in the index (``"anchor": "anchor.json"``) and says where
the root was anchored; ``verify --chain-url`` reads the chain to prove it (see
:mod:`lucid_sessions.archive.anchor_check`). Version 2 added it; version 1 bundles, which
never hold it, are still read. ``checkpoints.json`` (version 2, named in the index as
``"checkpoints"``) holds the tree heads signed while the session recorded (see
:mod:`lucid_sessions.anchoring.checkpoints`); ``verify`` checks that the signed root
extends every one of them.

An excerpt (``--from``/``--to``) carries only the chunks that overlap the range, with
their inclusion proofs; the manifest is always whole, so an excerpt can be checked against
the same signed root as the full recording. Readers accept only these names and refuse
links, devices and oversized members.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from lucid_sessions.archive.anchor_check import (
    ANCHOR_MEMBER,
    anchor_document,
    parse_anchor_document,
)
from lucid_sessions.archive.reader import load_manifest
from lucid_sessions.crypto import load_public_key
from lucid_sessions.errors import FormatError, NotFoundError, StorageError
from lucid_sessions.manifest import Manifest, leaf_hashes, parse_manifest
from lucid_sessions.merkle import MerkleTree, get_hasher
from lucid_sessions.storage.datadir import DataDir

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Bundle",
    "ExportRange",
    "export_bundle",
    "export_to_file",
]

BUNDLE_FORMAT = "lucid-sessions-bundle"
BUNDLE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_CHUNK_NAME = re.compile(r"^chunks/([0-9]{8,})\.chunk\Z")
CHECKPOINTS_MEMBER = "checkpoints.json"
_FIXED = (
    "lucid-bundle.json",
    "manifest.json",
    "manifest.sig",
    "public_key.pem",
    "proofs.json",
    ANCHOR_MEMBER,
    CHECKPOINTS_MEMBER,
)
_MAX_META = 256 * 1024 * 1024
_MAX_CHUNK = (1 << 30) + 4096


@dataclass(frozen=True, slots=True)
class ExportRange:
    from_us: int | None = None
    to_us: int | None = None


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


async def export_bundle(
    datadir: DataDir,
    session_id: str,
    out: IO[bytes],
    *,
    excerpt: ExportRange | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Write a session's evidence bundle to ``out``; returns the included sequences.

    ``excerpt`` bounds are seconds-from-start converted to microseconds by the caller,
    relative to the first chunk's start. ``progress`` is called with each chunk's size.
    """
    loaded = await load_manifest(datadir, session_id)
    manifest = loaded.manifest
    chunks = list(manifest.chunks)
    if excerpt is not None and chunks:
        origin = chunks[0].start_us
        lo = origin + (excerpt.from_us or 0)
        hi = origin + excerpt.to_us if excerpt.to_us is not None else None
        ends = [c.start_us for c in chunks[1:]] + [None]
        chunks = [
            c
            for c, nxt in zip(chunks, ends, strict=True)
            if (nxt is None or nxt > lo) and (hi is None or c.start_us <= hi)
        ]
    sequences = [c.sequence for c in chunks]
    tree = MerkleTree(get_hasher(manifest.hash_algorithm), leaf_hashes(manifest.chunks))
    proofs = {str(s): [h.hex() for h in tree.inclusion_proof(s)] for s in sequences}
    now = _member_time(manifest)
    try:
        state = (await datadir.store.get_session(session_id)).config.get("anchor")
    except NotFoundError:
        state = None
    anchor = anchor_document(session_id, state) if isinstance(state, Mapping) else None
    index = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "session_id": session_id,
        "excerpt": None
        if excerpt is None
        else {"from_us": excerpt.from_us, "to_us": excerpt.to_us},
        "chunks": sequences,
        "anchor": ANCHOR_MEMBER if anchor is not None else None,
    }
    checkpoints = _checkpoints_body(datadir, manifest)
    if checkpoints is not None:
        index["checkpoints"] = CHECKPOINTS_MEMBER
    pem = _pem(loaded.public_key)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "lucid-bundle.json", json.dumps(index, indent=1).encode(), now)
        _add(tar, "manifest.json", loaded.data, now)
        _add(tar, "manifest.sig", loaded.signature, now)
        _add(tar, "public_key.pem", pem, now)
        body = {"tree_size": tree.size, "root": manifest.root, "inclusion": proofs}
        _add(tar, "proofs.json", json.dumps(body, indent=1).encode(), now)
        if anchor is not None:
            _add(tar, ANCHOR_MEMBER, json.dumps(anchor, indent=1).encode(), now)
        if checkpoints is not None:
            _add(tar, CHECKPOINTS_MEMBER, json.dumps(checkpoints, indent=1).encode(), now)
        for sequence in sequences:
            data = datadir.chunks.get(session_id, sequence)
            _add(tar, f"chunks/{sequence:08d}.chunk", data, now)
            if progress is not None:
                progress(len(data))
    return sequences


def _member_time(manifest: Manifest) -> float:
    """Every member's mtime: the signed manifest's creation time, so that exporting the
    same session twice (or from a restored backup) gives byte-identical bundles."""
    try:
        when = datetime.fromisoformat(manifest.created_at)
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _checkpoints_body(datadir: DataDir, manifest: Manifest) -> dict[str, Any] | None:
    """The session's live checkpoints with their consistency proofs, from the data
    directory's ``checkpoints/`` (None when it has none, or the source has no directory)."""
    from lucid_sessions.anchoring.checkpoints import CheckpointStore, bundle_body

    path = getattr(datadir, "path", None)
    if not isinstance(path, Path):
        return None
    found = CheckpointStore(path).list(manifest.session_id)
    return bundle_body(manifest, found) if found else None


def _pem(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def export_to_file(
    datadir: DataDir,
    session_id: str,
    path: Path,
    *,
    excerpt: ExportRange | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Export to ``path`` atomically: a failed export leaves no partial file behind."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as out:
            sequences = await export_bundle(
                datadir, session_id, out, excerpt=excerpt, progress=progress
            )
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write bundle {path}: {exc.strerror}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sequences


class Bundle:
    """A bundle opened for reading. Chunks are read one at a time, on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        # tarfile raises ValueError for malformed PAX headers (bad numbers, sparse maps).
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise FormatError(f"{path} is not an evidence bundle ({exc})") from exc
        try:
            self._members = self._index_members()
            self.index = self._json("lucid-bundle.json")
            self._check_index()
            self.manifest_bytes = self._read("manifest.json", _MAX_META)
            self.signature = self._read("manifest.sig", 1024)
            self.public_key = load_public_key(self._read("public_key.pem", 4096))
            self.manifest = parse_manifest(self.manifest_bytes)
            self.proofs = self._parse_proofs(self._json("proofs.json"))
            self.anchor: dict[str, Any] | None = self._anchor()
            self.checkpoints, self.checkpoint_proofs = self._checkpoints()
        except BaseException:
            self._tar.close()
            raise

    def _index_members(self) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            infos = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise FormatError(f"{self.path} is a damaged bundle ({exc})") from exc
        for info in infos:
            if not info.isfile() or info.issparse():
                raise FormatError(f"bundle member {info.name!r} is not a regular file")
            if info.size < 0:
                raise FormatError(f"bundle member {info.name!r} has a negative size")
            if info.name not in _FIXED and not _CHUNK_NAME.match(info.name):
                raise FormatError(f"bundle has an unexpected member {info.name!r}")
            if info.name in members:
                raise FormatError(f"bundle has member {info.name!r} twice")
            members[info.name] = info
        if "lucid-bundle.json" not in members:
            raise FormatError(f"{self.path} is not an evidence bundle (no lucid-bundle.json)")
        return members

    def _read(self, name: str, limit: int) -> bytes:
        info = self._members.get(name)
        if info is None:
            raise FormatError(f"bundle has no {name}")
        if info.size > limit:
            raise FormatError(f"bundle member {name} is too large ({info.size} bytes)")
        try:
            handle = self._tar.extractfile(info)
            assert handle is not None
            data = handle.read()
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise FormatError(f"bundle member {name} is unreadable ({exc})") from exc
        if len(data) != info.size:
            raise FormatError(f"bundle member {name} is truncated")
        return data

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self._read(name, _MAX_META))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise FormatError(f"bundle member {name} is not valid JSON") from exc

    def _check_index(self) -> None:
        index = self.index
        if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
            raise FormatError(f"{self.path} is not an evidence bundle (unknown format)")
        version = index.get("version")
        if version not in _READABLE_VERSIONS:
            raise FormatError(
                f"bundle format version {version} is not supported (this program reads "
                f"versions {', '.join(map(str, _READABLE_VERSIONS))})"
            )
        chunks = index.get("chunks")
        if not isinstance(chunks, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in chunks
        ):
            raise FormatError("bundle index has a malformed chunk list")

    def _anchor(self) -> dict[str, Any] | None:
        """The anchor receipt, when the index names one (it must then be present)."""
        named = self.index.get("anchor")
        if named is None:
            if ANCHOR_MEMBER in self._members:
                raise FormatError(f"bundle holds {ANCHOR_MEMBER} but its index does not name it")
            return None
        if named != ANCHOR_MEMBER or self.index.get("version") == 1:
            raise FormatError("bundle index has a malformed anchor entry")
        if ANCHOR_MEMBER not in self._members:
            raise FormatError(f"bundle index names {ANCHOR_MEMBER} but the bundle has none")
        return parse_anchor_document(self._json(ANCHOR_MEMBER))

    def _checkpoints(self) -> tuple[list[object], object]:
        """(checkpoints, consistency proofs) when the index names checkpoints.json (it
        must then be present); each checkpoint is judged by the verifier."""
        from lucid_sessions.anchoring.checkpoints import parse_bundle_body

        named = self.index.get("checkpoints")
        if named is None:
            if CHECKPOINTS_MEMBER in self._members:
                raise FormatError(
                    f"bundle holds {CHECKPOINTS_MEMBER} but its index does not name it"
                )
            return [], None
        if named != CHECKPOINTS_MEMBER or self.index.get("version") == 1:
            raise FormatError("bundle index has a malformed checkpoints entry")
        if CHECKPOINTS_MEMBER not in self._members:
            raise FormatError(f"bundle index names {CHECKPOINTS_MEMBER} but the bundle has none")
        return parse_bundle_body(self._json(CHECKPOINTS_MEMBER))

    def _parse_proofs(self, body: Any) -> dict[int, list[bytes]]:
        if not isinstance(body, dict) or not isinstance(body.get("inclusion"), dict):
            raise FormatError("bundle proofs.json is malformed")
        proofs: dict[int, list[bytes]] = {}
        try:
            for key, path in body["inclusion"].items():
                proofs[int(key)] = [bytes.fromhex(h) for h in path]
        except (ValueError, TypeError) as exc:
            raise FormatError("bundle proofs.json is malformed") from exc
        return proofs

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    @property
    def excerpt(self) -> bool:
        return self.index.get("excerpt") is not None

    @property
    def listed_chunks(self) -> list[int]:
        return list(self.index["chunks"])

    def sequences(self) -> list[int]:
        """Sequences of the chunk members actually present."""
        found = (_CHUNK_NAME.match(name) for name in self._members)
        return sorted(int(m.group(1)) for m in found if m)

    def chunk(self, sequence: int) -> bytes | None:
        name = f"chunks/{sequence:08d}.chunk"
        if name not in self._members:
            return None
        return self._read(name, _MAX_CHUNK)

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
