"""The cluster-wide session log: an append-only Merkle log of finalised sessions.

Every finalised session's manifest hash becomes one leaf; after every append the log's
tree head is signed with the cluster key (and, in the cluster, anchored under the id
``log@<size>``). Files, in the data directory::

    log/leaves.jsonl   {"index", "kind", "session_id", "manifest_sha256", "time"}
                       (a tombstone also has "root", "reason", "policy")
    log/heads.jsonl    {"size", "root", "time", "hash_algorithm", "signature"}

The tree is RFC 9162 with SHA-256 (exactly a Certificate Transparency tree); a leaf is
the canonical JSON of ``{kind, session_id, manifest_sha256, time}`` (its position is the
tree's, ``index`` is only a reading aid). ``kind`` is ``session`` or ``tombstone``: a
session lawfully deleted (retention, :mod:`lucid_sessions.archive.retention`), whose
leaf body also holds the session's Merkle ``root``, the ``reason`` and the ``policy``
that applied. A head's signature is Ed25519 over :data:`HEAD_CONTEXT` followed by the
canonical JSON of ``{size, root, time, hash_algorithm}``. Appends are serialised across
processes by a lock file and fsynced; appending a session again with the same manifest
is a no-op, with another manifest an error.

:func:`verify_log` checks every head's signature, that the leaves reproduce every head's
root, RFC 9162 consistency between consecutive heads (or two chosen sizes), and compares
the log with the store. What it reports (:class:`LogProblem` kinds):

=============  ===================================================================
``malformed``  a line is not a well-formed leaf or head
``signature``  a head's signature does not verify (its size, root or time was changed)
``removed``    a leaf is missing: the next one says it has the missing index
``reordered``  a leaf is stored at another position than its index
``edited``     a leaf's content changed: the signed heads no longer hold from it on
``truncated``  a signed head covers more leaves than the log holds
``inconsistent`` two heads are not consistent (or the leaves do not give a head's root)
``withheld``   a finalised session in the store has no leaf
``deleted``    a session in the log is gone from the store without a tombstone
``altered``    a session's stored manifest is not the one its leaf names (or a
               tombstone names another manifest than the session's leaf)
=============  ===================================================================

A tombstone explains a session missing from the store: it is not ``deleted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lucid_sessions.anchoring.heads import SignedHead
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import FormatError, LucidError, StorageError
from lucid_sessions.manifest import canonical_json
from lucid_sessions.merkle import MerkleTree, get_hasher, verify_consistency
from lucid_sessions.storage.metadata import utc_now

if TYPE_CHECKING:
    from lucid_sessions.storage.datadir import DataDir

log = logging.getLogger(__name__)

__all__ = [
    "HEAD_CONTEXT",
    "LOG_DIR",
    "TOMBSTONE",
    "LogHead",
    "LogLeaf",
    "LogProblem",
    "LogReport",
    "SessionLog",
    "manifest_sha256",
    "verify_log",
]

LOG_DIR = "log"
HEAD_CONTEXT = b"lucid-sessions session log head v1\n"
HASH_ALGORITHM = "sha256"
_LEAF_BODY = ("kind", "session_id", "manifest_sha256", "time")
_TOMBSTONE_BODY = ("root", "reason", "policy")
TOMBSTONE = "tombstone"
_HEAD_BODY = ("size", "root", "time", "hash_algorithm")


def manifest_sha256(manifest: bytes) -> str:
    """The hash a leaf names: SHA-256 of the manifest's bytes as signed."""
    return hashlib.sha256(manifest).hexdigest()


@dataclass(frozen=True, slots=True)
class LogLeaf:
    index: int
    kind: str
    session_id: str
    manifest_sha256: str
    time: str
    root: str | None = None
    """Tombstones only: the deleted session's Merkle root ("" when it had none)."""
    reason: str | None = None
    """Tombstones only: why the session was deleted (``retention``)."""
    policy: str | None = None
    """Tombstones only: the policy that applied (``retention_days=30``)."""

    def body(self) -> dict[str, Any]:
        names = _LEAF_BODY + (_TOMBSTONE_BODY if self.kind == TOMBSTONE else ())
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, **self.body()}

    def leaf_bytes(self) -> bytes:
        return canonical_json(self.body())


@dataclass(frozen=True, slots=True)
class LogHead(SignedHead):
    BODY: ClassVar[tuple[str, ...]] = _HEAD_BODY
    CONTEXT: ClassVar[bytes] = HEAD_CONTEXT
    size: int
    root: str
    time: str
    hash_algorithm: str
    signature: str

    @property
    def anchor_id(self) -> str:
        return f"log@{self.size}"


def _typed(value: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in names:
        item = value.get(name)
        wanted: type = int if name in ("index", "size") else str
        if isinstance(item, bool) or not isinstance(item, wanted):
            raise FormatError(f"{where}: {name} is missing or has the wrong type")
        fields[name] = item
    return fields


def parse_leaf(value: object, where: str) -> LogLeaf:
    if not isinstance(value, dict):
        raise FormatError(f"{where} is not an object")
    names: tuple[str, ...] = ("index", *_LEAF_BODY)
    if value.get("kind") == TOMBSTONE:
        names += _TOMBSTONE_BODY
    return LogLeaf(**_typed(value, names, where))


def parse_head(value: object, where: str) -> LogHead:
    if not isinstance(value, dict):
        raise FormatError(f"{where} is not an object")
    return LogHead(**_typed(value, (*_HEAD_BODY, "signature"), where))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc


def _append_line(path: Path, value: Mapping[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, canonical_json(value) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def tree_of(leaves: Sequence[LogLeaf]) -> MerkleTree:
    hasher = get_hasher(HASH_ALGORITHM)
    return MerkleTree(hasher, (hasher.leaf_hash(leaf.leaf_bytes()) for leaf in leaves))


class SessionLog:
    """The log under ``<data dir>/log``. Safe across threads and processes (a lock file)."""

    def __init__(self, data_path: Path, key: ClusterKey | None = None) -> None:
        self.path = data_path / LOG_DIR
        self.leaves_path = self.path / "leaves.jsonl"
        self.heads_path = self.path / "heads.jsonl"
        self._key = key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def raw(self) -> tuple[list[str], list[str]]:
        """The lines of leaves.jsonl and heads.jsonl, as stored."""
        return _lines(self.leaves_path), _lines(self.heads_path)

    def leaves(self) -> list[LogLeaf]:
        return [
            parse_leaf(_json(line, f"log leaf line {n}"), f"log leaf line {n}")
            for n, line in enumerate(_lines(self.leaves_path), 1)
            if line.strip()
        ]

    def heads(self) -> list[LogHead]:
        return [
            parse_head(_json(line, f"log head line {n}"), f"log head line {n}")
            for n, line in enumerate(_lines(self.heads_path), 1)
            if line.strip()
        ]

    def append_session(self, session_id: str, manifest: bytes) -> tuple[LogLeaf, LogHead]:
        """Append a finalised session and sign the new head; returns both. Idempotent for
        the same manifest (returns its leaf and the latest head covering it); another
        manifest for a session already in the log is refused (StorageError)."""
        if self._key is None:
            raise StorageError("the session log was opened without the cluster key")
        digest = manifest_sha256(manifest)
        try:
            with self._locked():
                leaves = self.leaves()
                for leaf in leaves:
                    if leaf.kind == "session" and leaf.session_id == session_id:
                        if leaf.manifest_sha256 != digest:
                            raise StorageError(
                                f"session {session_id} is already in the log with another manifest"
                            )
                        return leaf, self._head_covering(leaves, leaf.index + 1)
                leaf = LogLeaf(len(leaves), "session", session_id, digest, utc_now())
                _append_line(self.leaves_path, leaf.to_dict())
                leaves.append(leaf)
                return leaf, self._sign(leaves)
        except OSError as exc:
            raise StorageError(f"cannot append to the session log: {exc}") from exc

    def append_tombstone(
        self, session_id: str, manifest_digest: str, root: str, *, reason: str, policy: str
    ) -> tuple[LogLeaf, LogHead]:
        """Append a tombstone for a deleted session and sign the new head; returns both.
        Idempotent: a session already tombstoned gets its first tombstone back."""
        if self._key is None:
            raise StorageError("the session log was opened without the cluster key")
        try:
            with self._locked():
                leaves = self.leaves()
                for leaf in leaves:
                    if leaf.kind == TOMBSTONE and leaf.session_id == session_id:
                        return leaf, self._head_covering(leaves, leaf.index + 1)
                leaf = LogLeaf(
                    len(leaves),
                    TOMBSTONE,
                    session_id,
                    manifest_digest,
                    utc_now(),
                    root=root,
                    reason=reason,
                    policy=policy,
                )
                _append_line(self.leaves_path, leaf.to_dict())
                leaves.append(leaf)
                return leaf, self._sign(leaves)
        except OSError as exc:
            raise StorageError(f"cannot append to the session log: {exc}") from exc

    def tombstones(self) -> dict[str, LogLeaf]:
        """The tombstone of every deleted session, by session id."""
        found: dict[str, LogLeaf] = {}
        for leaf in self.leaves():
            if leaf.kind == TOMBSTONE:
                found.setdefault(leaf.session_id, leaf)
        return found

    def _head_covering(self, leaves: list[LogLeaf], size: int) -> LogHead:
        heads = self.heads()
        if heads and heads[-1].size >= size:
            return heads[-1]
        return self._sign(leaves)  # the head after this leaf was never written (a crash)

    def _sign(self, leaves: Sequence[LogLeaf]) -> LogHead:
        assert self._key is not None
        tree = tree_of(leaves)
        unsigned = LogHead(tree.size, tree.root().hex(), utc_now(), HASH_ALGORITHM, "")
        signature = unsigned.sign_with(self._key)
        head = dataclasses.replace(unsigned, signature=signature)
        _append_line(self.heads_path, head.to_dict())
        return head

    async def append(self, session_id: str, manifest: bytes) -> tuple[LogLeaf, LogHead]:
        return await asyncio.to_thread(self.append_session, session_id, manifest)


async def log_finalised(datadir: DataDir, session_id: str) -> LogHead | None:
    """Append a session finalised outside the cluster (import, ``record``) to the data
    directory's log; its head is not anchored (no anchor is configured there). A failure
    is logged, not raised: the session stays finalised and ``log verify`` names it."""
    try:
        record = await datadir.store.get_manifest(session_id)
        log_ = SessionLog(datadir.path, datadir.cluster_key())
        return (await log_.append(session_id, record.manifest))[1]
    except (LucidError, OSError) as exc:
        log.error("adding session %s to the session log failed: %s", session_id, exc)
        return None


def _json(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        raise FormatError(f"{where} is not JSON") from None


# verification


@dataclass(frozen=True, slots=True)
class LogProblem:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(slots=True)
class LogReport:
    problems: list[LogProblem] = field(default_factory=list)
    leaves: int = 0
    heads: int = 0
    latest: LogHead | None = None
    unsigned_tail: int = 0
    """Leaves after the latest valid head (covered by no signature yet)."""
    sessions_checked: int = 0
    tombstones: int = 0
    """Sessions deleted lawfully (by policy or by hand), each with its tombstone leaf."""
    checked_range: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems.append(LogProblem(kind, message))


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What the store says about one finalised session, for the comparison."""

    session_id: str
    status: str
    manifest: bytes | None


def _parse_all(lines: Sequence[str], parse: Any, what: str, report: LogReport) -> list[Any]:
    parsed = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed.append(parse(_json(line, f"{what} line {number}"), f"{what} line {number}"))
        except FormatError as exc:
            report.add("malformed", exc.message)
    return parsed


def _check_positions(leaves: Sequence[LogLeaf], report: LogReport) -> None:
    """Name removed and reordered leaves from the index each leaf carries."""
    indices = [leaf.index for leaf in leaves]
    if indices == list(range(len(leaves))):
        return
    expected = set(range(max([*indices, len(leaves) - 1]) + 1))
    present = set(indices)
    for missing in sorted(expected - present):
        after = next((leaf for leaf in leaves if leaf.index > missing), None)
        where = f" (before the leaf of {after.session_id})" if after else ""
        report.add("removed", f"leaf {missing} is missing{where}")
    if not expected - present:
        for position, leaf in enumerate(leaves):
            if leaf.index != position:
                report.add(
                    "reordered",
                    f"leaf {leaf.index} (session {leaf.session_id}) is stored at position "
                    f"{position}",
                )
    elif indices != sorted(indices):
        report.add("reordered", "leaves are stored out of index order")


def verify_log(
    leaf_lines: Sequence[str],
    head_lines: Sequence[str],
    public_key: bytes,
    *,
    store: Sequence[StoredSession] | None = None,
    from_size: int | None = None,
    to_size: int | None = None,
) -> LogReport:
    """Check the log (see the module docstring); ``store`` is every session the store
    holds with a manifest (None skips the comparison)."""
    report = LogReport()
    leaves: list[LogLeaf] = _parse_all(leaf_lines, parse_leaf, "log leaf", report)
    heads: list[LogHead] = _parse_all(head_lines, parse_head, "log head", report)
    report.leaves, report.heads = len(leaves), len(heads)
    _check_positions(leaves, report)
    tree = tree_of(leaves)
    hasher = tree.hasher
    valid: list[LogHead] = []
    first_bad: LogHead | None = None
    unreproduced: set[int] = set()
    """Sizes of signed heads whose root the leaves no longer give (reported once)."""
    for number, head in enumerate(heads):
        label = f"head {number} (size {head.size}, {head.time})"
        if head.hash_algorithm != HASH_ALGORITHM or not head.signature_ok(public_key):
            report.add(
                "signature",
                f"{label}: its signature does not verify (size, root "
                "or time changed, or signed by another key)",
            )
            continue
        if valid and head.size < valid[-1].size:
            report.add("reordered", f"{label}: smaller than the head before it")
        valid.append(head)
        if head.size > tree.size:
            report.add(
                "truncated",
                f"{label} covers {head.size} leaves, the log holds "
                f"{tree.size}: leaves {tree.size}..{head.size - 1} were cut off",
            )
            unreproduced.add(head.size)
            continue
        if tree.root(head.size).hex() != head.root:
            unreproduced.add(head.size)
            first_bad = first_bad or head
    if first_bad is not None:
        _name_rewrite(valid, first_bad, tree, leaves, report)
    # consistency between consecutive valid heads, or the two sizes asked for
    pairs = [
        (old, new)
        for old, new in itertools.pairwise(valid)
        if old.size not in unreproduced and new.size not in unreproduced
    ]
    if from_size is not None or to_size is not None:
        by_size = {h.size: h for h in valid}
        old = by_size.get(from_size if from_size is not None else (valid[0].size if valid else 0))
        new = by_size.get(to_size if to_size is not None else (valid[-1].size if valid else 0))
        if old is None or new is None:
            missing = from_size if old is None else to_size
            report.add("inconsistent", f"no valid signed head of size {missing}")
            pairs = []
        else:
            pairs = [(old, new)]
            report.checked_range = (old.size, new.size)
    for old, new in pairs:
        if old.size > new.size or new.size > tree.size:
            continue
        proof = tree.consistency_proof(old.size, new.size)
        if not verify_consistency(
            hasher, old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof
        ):
            report.add(
                "inconsistent",
                f"heads of size {old.size} and {new.size} are not "
                "consistent over the stored leaves",
            )
    if valid:
        report.latest = max(valid, key=lambda h: h.size)
        report.unsigned_tail = max(0, tree.size - report.latest.size)
    else:
        report.unsigned_tail = tree.size
    if store is not None:
        _compare_store(leaves, store, report)
    return report


def _name_rewrite(
    heads: Sequence[LogHead],
    first_bad: LogHead,
    tree: MerkleTree,
    leaves: Sequence[LogLeaf],
    report: LogReport,
) -> None:
    """The leaves no longer give ``first_bad``'s root: say where the change is, unless a
    removal or reordering already named it."""
    if any(p.kind in ("removed", "reordered") for p in report.problems):
        report.add(
            "inconsistent", f"the leaves no longer give the signed root of size {first_bad.size}"
        )
        return
    good = [
        h.size
        for h in heads
        if h.size < first_bad.size and h.size <= tree.size and tree.root(h.size).hex() == h.root
    ]
    low = max(good, default=0)
    if first_bad.size - low == 1:
        leaf = leaves[low]
        report.add(
            "edited",
            f"leaf {low} (session {leaf.session_id}) changed after head "
            f"size {first_bad.size} was signed",
        )
    else:
        report.add(
            "edited",
            f"a leaf in {low}..{first_bad.size - 1} changed after head size "
            f"{first_bad.size} was signed",
        )


def _compare_store(
    leaves: Sequence[LogLeaf], store: Sequence[StoredSession], report: LogReport
) -> None:
    in_log: dict[str, LogLeaf] = {}
    tombstoned: dict[str, LogLeaf] = {}
    for leaf in leaves:
        if leaf.kind == "session":
            in_log.setdefault(leaf.session_id, leaf)
        elif leaf.kind == TOMBSTONE:
            tombstoned.setdefault(leaf.session_id, leaf)
    report.tombstones = len(tombstoned)
    for session_id, tomb in tombstoned.items():
        logged = in_log.get(session_id)
        if logged is not None and logged.manifest_sha256 != tomb.manifest_sha256:
            report.add(
                "altered",
                f"session {session_id}: tombstone leaf {tomb.index} names another manifest "
                f"than leaf {logged.index}",
            )
    stored = {s.session_id: s for s in store}
    report.sessions_checked = len(stored)
    for session in store:
        if session.manifest is None:
            continue
        logged = in_log.get(session.session_id)
        if logged is None:
            report.add(
                "withheld",
                f"session {session.session_id} ({session.status}) is "
                "finalised in the store but not in the log",
            )
        elif logged.manifest_sha256 != manifest_sha256(session.manifest):
            report.add(
                "altered",
                f"session {session.session_id}: the stored manifest is "
                f"not the one leaf {logged.index} names",
            )
    for session_id, leaf in in_log.items():
        if session_id not in stored and session_id in tombstoned:
            continue  # deleted lawfully, and the log says so
        if session_id not in stored:
            report.add(
                "deleted",
                f"session {session_id} (leaf {leaf.index}) is in the log but not in the store",
            )
        elif stored[session_id].manifest is None:
            report.add(
                "altered", f"session {session_id} (leaf {leaf.index}) has no manifest in the store"
            )


def summary_lines(report: LogReport) -> list[str]:
    """What ``log verify`` prints: a verdict, then one line per problem."""
    latest = report.latest
    head = "no signed head" if latest is None else f"head size {latest.size} root {latest.root}"
    lines = []
    if report.ok:
        lines.append(f"OK: session log: {report.leaves} leaves, {head}")
    else:
        lines.append(f"FAILED: session log: {report.problems[0]}")
    if report.checked_range is not None:
        old, new = report.checked_range
        state = "consistent" if report.ok else "checked"
        lines.append(f"heads of size {old} and {new}: {state}")
    lines.append(
        f"{report.heads} signed heads; {report.sessions_checked} sessions in the store compared"
        + (f"; {report.tombstones} deleted lawfully (tombstones)" if report.tombstones else "")
    )
    if report.unsigned_tail:
        lines.append(f"{report.unsigned_tail} leaves after the latest head (not signed yet)")
    lines.extend(f"  {p}" for p in report.problems)
    if len(report.problems) > 1:
        lines.append(f"{len(report.problems)} problems in all")
    return lines
