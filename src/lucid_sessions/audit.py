"""The audit log's hash chain: events, chained entries, signed heads, and the check that
names every kind of tampering.

Pure: no I/O. The metadata store appends (it alone assigns ``seq`` and ``prev``, one at a
time, which is what serialises the chain), the storage component signs heads, and
:func:`verify_chain` reads both back.

The chain
---------
Every entry carries ``prev``, the hash of the entry before it (:data:`GENESIS` for the
first), and ``hash``: SHA-256 over the canonical JSON (sorted keys, compact, UTF-8) of
``{prev, time, subject, role, action, target, outcome, request_id, details}``.

``seq`` is deliberately *not* hashed. The order of the log is the chain of ``prev`` links;
``seq`` is only where the store keeps an entry. So swapping two rows' ``seq`` leaves both
hashes valid and shows up for what it is, entries stored out of chain order (reordered),
instead of as two edits.

Heads
-----
A head is ``(seq, hash, time)`` of the last entry at some moment, signed with the
cluster's Ed25519 key over :data:`HEAD_CONTEXT` followed by the canonical JSON of those
three fields. Entries can be recomputed by anyone who can write the database; heads
cannot. A head therefore catches what the chain alone cannot: a rewritten suffix with
recomputed hashes (the signed hash is no longer in the log) and deleted tail entries
(the signed hash and everything up to it are gone). Entries after the latest head are
covered by nothing yet; :class:`AuditReport` says how many (``unsigned_tail``).

What :func:`verify_chain` reports, each problem named by ``seq``:

=============  =================================================================
``edited``     the entry's stored hash does not match its content
``deleted``    entries are missing: one chains to a hash no stored entry has, or a
               signed head covers entries that are gone
``inserted``   an entry nothing chains to, whose neighbours chain around it; or a
               second branch off an entry another one already follows; or a copy
``reordered``  the entry is stored at another place than its place in the chain
``signature``  a head's signature does not verify, or it is signed by another key
``rewritten``  a valid head covers an entry whose hash the log no longer holds
=============  =================================================================
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from lucid_sessions.crypto.signing import ClusterKey, public_key_fingerprint, verify_signature
from lucid_sessions.errors import InvalidConfigError

__all__ = [
    "DELETED",
    "EDITED",
    "GENESIS",
    "HEAD_CONTEXT",
    "INSERTED",
    "PROBLEM_KINDS",
    "REORDERED",
    "REWRITTEN",
    "SIGNATURE",
    "AuditEntry",
    "AuditEvent",
    "AuditHead",
    "AuditProblem",
    "AuditReport",
    "DetailValue",
    "audit_time",
    "chain_entry",
    "entry_hash",
    "head_message",
    "head_signature_ok",
    "sign_head",
    "summary_lines",
    "verify_chain",
]

GENESIS = "0" * 64
"""``prev`` of the first entry."""
HEAD_CONTEXT = b"lucid-audit-head-v1\n"
"""Prefix of every signed head message, so a head signature can never pass for a
manifest signature (or anything else the cluster key signs), nor the reverse."""

EDITED = "edited"
DELETED = "deleted"
INSERTED = "inserted"
REORDERED = "reordered"
SIGNATURE = "signature"
REWRITTEN = "rewritten"
PROBLEM_KINDS = (EDITED, DELETED, INSERTED, REORDERED, SIGNATURE, REWRITTEN)

MAX_DETAILS = 32
"""Most keys an event's ``details`` may have: they describe, they do not carry payloads."""
MAX_TEXT = 1024
"""Longest string an event field or detail value may be (characters)."""
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_INT64 = 2**63

DetailValue = str | int | bool | None
"""What a detail may hold. No floats: their text form differs between languages and
databases, and the hash must come out the same wherever the entry is read back."""


def audit_time(moment: datetime | None = None) -> str:
    """``moment`` (default now) as the log stores time: RFC 3339 UTC with microseconds,
    ``2024-05-01T12:00:00.000000Z``. One fixed width, so times compare as strings."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidConfigError(f"audit event {name} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise InvalidConfigError(f"audit event {name} is longer than {MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConfigError(f"audit event {name} is not valid Unicode text") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """Something that happened, as the web layer (or a component) reports it.

    Validated on construction (InvalidConfigError naming the field): every field is text
    of at most :data:`MAX_TEXT` characters, ``time`` is in :func:`audit_time` form and
    ``details`` maps at most :data:`MAX_DETAILS` string keys to :data:`DetailValue`.
    """

    subject: str
    """Who: the token's subject (``anonymous`` when there was none)."""
    role: str
    """The subject's role (``none`` when unknown)."""
    action: str
    """What, as ``noun.verb``: ``session.create``, ``chunk.download``, ``token.refused``."""
    target: str
    """What it was done to: a session id, ``session/sequence``, ``pipeline``..."""
    outcome: str
    """``success``, ``failure:<status>`` or ``refused``."""
    request_id: str = ""
    time: str = field(default_factory=audit_time)
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("subject", "role", "action", "target", "outcome", "request_id", "time"):
            _check_text(name, getattr(self, name))
        if not _TIME.match(self.time):
            raise InvalidConfigError(
                "audit event time must be RFC 3339 UTC with microseconds "
                "(2024-05-01T12:00:00.000000Z)"
            )
        if not isinstance(self.details, Mapping):
            raise InvalidConfigError("audit event details must be a mapping")
        if len(self.details) > MAX_DETAILS:
            raise InvalidConfigError(f"audit event details has more than {MAX_DETAILS} keys")
        for key, value in self.details.items():
            _check_text("details key", key)
            if isinstance(value, str):
                _check_text(f"details[{key!r}]", value)
            elif isinstance(value, int) and not isinstance(value, bool):
                if not -_INT64 <= value < _INT64:
                    raise InvalidConfigError(f"audit event details[{key!r}] is out of range")
            elif value is not None and not isinstance(value, bool):
                raise InvalidConfigError(
                    f"audit event details[{key!r}] must be text, an integer, a boolean or "
                    f"null, not {type(value).__name__}"
                )


_HASHED = ("time", "subject", "role", "action", "target", "outcome", "request_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One stored entry: an event, its place (``seq``) and its links in the chain.

    Not validated: an entry is what a store read back, and verification must be able to
    look at one that was tampered with.
    """

    seq: int
    time: str
    subject: str
    role: str
    action: str
    target: str
    outcome: str
    request_id: str
    details: Mapping[str, object]
    prev: str
    """Hex SHA-256 of the entry before (:data:`GENESIS` for the first)."""
    hash: str
    """Hex SHA-256 of this entry's content and ``prev`` (see the module)."""

    def computed_hash(self) -> str:
        """The hash this entry's content and ``prev`` give (``hash`` unless edited)."""
        return entry_hash(self.prev, {name: getattr(self, name) for name in _HASHED}, self.details)


def entry_hash(prev: str, fields: Mapping[str, object], details: Mapping[str, object]) -> str:
    """SHA-256 (hex) over the canonical JSON of ``prev``, the event ``fields`` (time,
    subject, role, action, target, outcome, request_id) and ``details``."""
    body = {name: fields[name] for name in _HASHED}
    body["prev"] = prev
    body["details"] = dict(details)
    return hashlib.sha256(_canonical(body)).hexdigest()


def chain_entry(event: AuditEvent, *, seq: int, prev: str) -> AuditEntry:
    """The entry ``event`` becomes at ``seq`` after the entry whose hash is ``prev``."""
    fields = {name: getattr(event, name) for name in _HASHED}
    details = dict(event.details)
    return AuditEntry(
        seq=seq,
        details=details,
        prev=prev,
        hash=entry_hash(prev, fields, details),
        **fields,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditHead:
    """A signed statement that the log's entry ``seq`` had hash ``hash`` at ``time``."""

    seq: int
    hash: str
    time: str
    signature: bytes
    """Ed25519 over :func:`head_message`."""
    public_key: bytes
    """Raw 32-byte public key of the signer (check it against a trusted one)."""


def head_message(seq: int, hash: str, time: str) -> bytes:
    """The bytes a head's signature covers."""
    return HEAD_CONTEXT + _canonical({"seq": seq, "hash": hash, "time": time})


def sign_head(key: ClusterKey, entry: AuditEntry, *, time: str | None = None) -> AuditHead:
    """A head over ``entry`` (the log's last entry), signed with ``key``."""
    at = time or audit_time()
    return AuditHead(
        seq=entry.seq,
        hash=entry.hash,
        time=at,
        signature=key.sign(head_message(entry.seq, entry.hash, at)),
        public_key=key.public_key_bytes(),
    )


def head_signature_ok(head: AuditHead, public_key: bytes | None = None) -> bool:
    """Whether ``head`` is signed by ``public_key`` (default: the key it names)."""
    key = head.public_key if public_key is None else public_key
    return verify_signature(key, head.signature, head_message(head.seq, head.hash, head.time))


class AuditProblem(NamedTuple):
    kind: str
    """One of :data:`PROBLEM_KINDS`."""
    seq: int
    """The entry (or head) it is about."""
    message: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    problems: tuple[AuditProblem, ...]
    """By ``seq``, then kind."""
    entries: int
    heads_checked: int
    unsigned_tail: int
    """Entries after the latest valid head: covered by no signature yet."""
    signed_seq: int | None
    """``seq`` of the latest valid head, None when there is none."""
    trusted_key_checked: bool
    """Whether heads were checked against a trusted key (else against their own)."""
    signer_fingerprint: str | None


def _span(lo: int, hi: int) -> str:
    return f"entry {lo} is" if lo == hi else f"entries {lo}-{hi} are"


class _Problems:
    """Problems found so far, once per (kind, seq)."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, int], str] = {}

    def add(self, kind: str, seq: int, message: str) -> None:
        self.found.setdefault((kind, seq), message)

    def has(self, kind: str, seq: int) -> bool:
        return (kind, seq) in self.found

    def sorted(self) -> tuple[AuditProblem, ...]:
        order = {kind: i for i, kind in enumerate(PROBLEM_KINDS)}
        items = sorted(self.found.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 99)))
        return tuple(AuditProblem(kind, seq, message) for (kind, seq), message in items)


def _find_copies(ordered: list[AuditEntry], problems: _Problems) -> list[AuditEntry]:
    """Entries whose stored hash an earlier entry already has are inserted copies."""
    seen: dict[str, int] = {}
    kept = []
    for entry in ordered:
        first = seen.get(entry.hash)
        if first is not None:
            problems.add(INSERTED, entry.seq, f"entry {entry.seq} is a copy of entry {first}")
            continue
        seen[entry.hash] = entry.seq
        kept.append(entry)
    return kept


def _find_insertions(kept: list[AuditEntry], problems: _Problems) -> list[AuditEntry]:
    """Runs of entries that sit between two entries chaining to each other, that nothing
    outside the run chains to, and that chain to nothing stored after them: inserted.

    When the entry chaining around a run continues for fewer entries than the run has
    (a short branch appended after the run's predecessor), the branch is the likelier
    insertion: :func:`_prune_forks` names it instead.
    """
    position = {entry.hash: i for i, entry in enumerate(kept)}
    referrers: dict[str, list[int]] = {}
    for i, entry in enumerate(kept):
        referrers.setdefault(entry.prev, []).append(i)
    inserted: set[int] = set()
    for i in range(len(kept)):
        if i in inserted:
            continue
        before = kept[i - 1].hash if i else GENESIS
        later = [j for j in referrers.get(before, ()) if j > i]
        if not later:
            continue  # nothing further on chains around entry i
        j = min(later)
        run = range(i, j)
        if _continues(kept, j, referrers, len(run)) and _dead_branch(
            kept, run, j, position, referrers
        ):
            inserted.update(run)
            for k in run:
                problems.add(
                    INSERTED,
                    kept[k].seq,
                    f"entry {kept[k].seq} was inserted: nothing chains to it, and entry "
                    f"{kept[j].seq} chains to the entry stored before it",
                )
    return [entry for i, entry in enumerate(kept) if i not in inserted]


def _continues(
    kept: list[AuditEntry], start: int, referrers: Mapping[str, list[int]], length: int
) -> bool:
    """Whether the chain from ``start`` on is at least ``length`` entries long."""
    seen: set[int] = set()
    k: int | None = start
    while k is not None and k not in seen and len(seen) < length:
        seen.add(k)
        following = referrers.get(kept[k].hash)
        k = following[0] if following else None
    return len(seen) >= length


def _dead_branch(
    kept: list[AuditEntry],
    run: range,
    end: int,
    position: Mapping[str, int],
    referrers: Mapping[str, list[int]],
) -> bool:
    for k in run:
        if any(r not in run for r in referrers.get(kept[k].hash, ())):
            return False  # something outside the run chains to it: it belongs
        at = position.get(kept[k].prev)
        if at is not None and at >= end:
            return False  # it chains to an entry stored after the run: moved, not added
    return True


def _prune_forks(entries: list[AuditEntry], problems: _Problems) -> list[AuditEntry]:
    """Where two entries chain to the same one, keep the one stored right after it (else
    the first that others chain to, else the first stored); the other branches, and all
    that chains to them, were inserted."""
    position = {entry.hash: i for i, entry in enumerate(entries)}
    referrers: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        referrers.setdefault(entry.prev, []).append(i)
    dropped: set[int] = set()
    for prev, children in referrers.items():
        if len(children) < 2:
            continue
        if prev == GENESIS:
            parent = -1
        elif prev in position:
            parent = position[prev]
        else:
            continue  # they chain to a missing entry: reported as deletions
        adjacent = [c for c in children if c == parent + 1]
        continuing = [c for c in children if entries[c].hash in referrers]
        keep = (adjacent or continuing or children)[0]
        for child in children:
            if child == keep:
                continue
            stack = [child]
            while stack:
                k = stack.pop()
                if k in dropped:
                    continue
                dropped.add(k)
                stack.extend(referrers.get(entries[k].hash, ()))
            where = "the genesis" if prev == GENESIS else f"entry {entries[parent].seq}"
            problems.add(
                INSERTED,
                entries[child].seq,
                f"entry {entries[child].seq} was inserted: it chains to {where}, which "
                f"entry {entries[keep].seq} already follows",
            )
    return [entry for i, entry in enumerate(entries) if i not in dropped]


def verify_chain(
    entries: Iterable[AuditEntry],
    heads: Iterable[AuditHead],
    trusted_public_key: bytes | None = None,
) -> AuditReport:
    """Check the whole log (every entry, from the first) and its signed heads.

    ``trusted_public_key`` (raw 32 bytes) is the cluster key heads must be signed with;
    without it each head is checked against the key it carries, and heads signed by
    another key than most are reported. Never raises on tampered input.
    """
    problems = _Problems()
    ordered = sorted(entries, key=lambda e: e.seq)
    kept = _find_copies(ordered, problems)
    kept = _find_insertions(kept, problems)
    for entry in kept:
        if entry.computed_hash() != entry.hash:
            problems.add(
                EDITED,
                entry.seq,
                f"entry {entry.seq} was edited: its content does not give its stored hash",
            )
    chain = _prune_forks(kept, problems)
    deleted_ranges = _check_links(chain, problems)
    _check_order(chain, problems)
    head_list = sorted(heads, key=lambda h: h.seq)
    signed, trusted_checked, fingerprint = _check_heads(
        head_list, chain, ordered, deleted_ranges, problems, trusted_public_key
    )
    found = problems.sorted()
    return AuditReport(
        ok=not found,
        problems=found,
        entries=len(ordered),
        heads_checked=len(head_list),
        unsigned_tail=_unsigned_tail(signed, chain),
        signed_seq=None if signed is None else signed.seq,
        trusted_key_checked=trusted_checked,
        signer_fingerprint=fingerprint,
    )


def _check_links(chain: list[AuditEntry], problems: _Problems) -> list[tuple[int, int]]:
    """Report entries chaining to a hash no stored entry has; return the missing ranges."""
    known = {entry.hash for entry in chain}
    ranges: list[tuple[int, int]] = []
    for i, entry in enumerate(chain):
        if entry.prev == GENESIS or entry.prev in known:
            continue
        before = chain[i - 1] if i else None
        lo = before.seq + 1 if before is not None else 1
        hi = entry.seq - 1
        if hi >= lo:
            ranges.append((lo, hi))
            problems.add(
                DELETED,
                lo,
                f"{_span(lo, hi)} missing: entry {entry.seq} chains to a hash no stored entry has",
            )
            continue
        if problems.has(EDITED, entry.seq) or (
            before is not None and problems.has(EDITED, before.seq)
        ):
            continue  # the edit (of prev, or of the hash chained to) explains the break
        problems.add(
            DELETED,
            entry.seq,
            f"an entry before entry {entry.seq} is missing (deleted, or the entry before "
            "it was rewritten): it chains to a hash no stored entry has",
        )
    return ranges


def _check_order(chain: list[AuditEntry], problems: _Problems) -> None:
    """Report entries stored elsewhere than their place in the chain."""
    if not chain:
        return
    position = {entry.hash: i for i, entry in enumerate(chain)}
    successor: dict[str, int] = {}
    for i, entry in enumerate(chain):
        successor.setdefault(entry.prev, i)
    starts = [i for i, e in enumerate(chain) if e.prev == GENESIS or e.prev not in position]
    visited: set[int] = set()
    segments: list[list[int]] = []

    def follow(start: int) -> list[int]:
        segment = []
        k: int | None = start
        while k is not None and k not in visited:
            visited.add(k)
            segment.append(k)
            k = successor.get(chain[k].hash)
        return segment

    for start in starts:
        segments.append(follow(start))
    for i in range(len(chain)):  # loops of edited entries reach no start
        if i not in visited:
            segments.append(follow(i))
    rooted = [s for s in segments if chain[s[0]].prev == GENESIS]
    others = sorted(
        (s for s in segments if chain[s[0]].prev != GENESIS), key=lambda s: statistics.median(s)
    )
    rank = 0
    for segment in [*rooted, *others]:
        for k in segment:
            if k != rank:
                entry = chain[k]
                problems.add(
                    REORDERED,
                    entry.seq,
                    f"entry {entry.seq} is out of order: in the chain it is number {rank + 1} "
                    f"of {len(chain)}, stored as number {k + 1}",
                )
            rank += 1


def _check_heads(
    heads: Sequence[AuditHead],
    chain: list[AuditEntry],
    stored: list[AuditEntry],
    deleted_ranges: list[tuple[int, int]],
    problems: _Problems,
    trusted: bytes | None,
) -> tuple[AuditHead | None, bool, str | None]:
    """Check signatures and what valid heads cover; return the latest valid head."""
    if trusted is not None:
        expected: bytes | None = trusted
    else:
        keys = Counter(h.public_key for h in heads)
        expected = keys.most_common(1)[0][0] if keys else None
    valid: list[AuditHead] = []
    for head in heads:
        if expected is not None and head.public_key != expected:
            whose = "the trusted key" if trusted is not None else "the other heads' key"
            problems.add(
                SIGNATURE,
                head.seq,
                f"the head at entry {head.seq} is signed by key "
                f"{public_key_fingerprint(head.public_key)}, not {whose}",
            )
        elif not head_signature_ok(head, expected):
            problems.add(
                SIGNATURE,
                head.seq,
                f"the head at entry {head.seq} does not verify: it was edited or forged",
            )
        else:
            valid.append(head)
    hashes = {entry.hash: entry for entry in chain}
    seqs = [entry.seq for entry in stored]  # ascending
    by_seq = {entry.seq: entry for entry in stored}
    for head in reversed(valid):  # the latest first: it names the widest missing range
        if head.hash in hashes:
            continue
        if head.seq in by_seq:
            if not problems.has(EDITED, head.seq):
                problems.add(
                    REWRITTEN,
                    head.seq,
                    f"entry {head.seq} does not have the hash its signed head gives: the "
                    "log was rewritten at or before it",
                )
            continue
        if any(lo <= head.seq <= hi for lo, hi in deleted_ranges):
            continue
        at = bisect.bisect_left(seqs, head.seq)  # head.seq itself is not stored
        lo = seqs[at - 1] + 1 if at else 1
        hi = seqs[at] - 1 if at < len(seqs) else head.seq
        deleted_ranges.append((lo, hi))
        problems.add(
            DELETED,
            lo,
            f"{_span(lo, hi)} missing: a signed head covers entry {head.seq}",
        )
    latest = valid[-1] if valid else None
    fingerprint = public_key_fingerprint(expected) if expected is not None else None
    return latest, trusted is not None, fingerprint


def _unsigned_tail(head: AuditHead | None, chain: list[AuditEntry]) -> int:
    if head is None:
        return len(chain)
    for i, entry in enumerate(chain):
        if entry.hash == head.hash:
            return len(chain) - i - 1
    return sum(1 for entry in chain if entry.seq > head.seq)


def summary_lines(report: AuditReport) -> list[str]:
    """One line per problem (``seq N: kind: message``), then one summary line."""
    lines = [f"seq {p.seq}: {p.kind}: {p.message}" for p in report.problems]
    heads = _count(report.heads_checked, "signed head", "signed heads")
    if report.signed_seq is not None:
        heads += f", latest at entry {report.signed_seq}"
    if report.unsigned_tail:
        heads += f"; {_count(report.unsigned_tail, 'entry', 'entries')} not yet signed"
    if not report.trusted_key_checked:
        heads += " (heads not checked against a trusted key)"
    entries = _count(report.entries, "entry", "entries")
    if report.ok:
        lines.append(f"audit log intact: {entries}, {heads}")
    else:
        problems = _count(len(report.problems), "problem", "problems")
        lines.append(f"audit log TAMPERED: {problems} in {entries}, {heads}")
    return lines


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
