"""The audit log's hash chain (:mod:`lucid_sessions.audit`): hashing, signed heads, and
the classifier that names each kind of tampering at the right entry.

The property tests build random chains with signed heads, apply one kind of tampering
the way someone with write access to the database could, and require
:func:`verify_chain` to report exactly the expected problems: that kind, at that seq, and
nothing else. The same edits done in a real SQLite file, through the CLI, are in
``tests/test_cli_audit.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lucid_sessions.audit import (
    GENESIS,
    HEAD_CONTEXT,
    AuditEntry,
    AuditEvent,
    AuditHead,
    audit_time,
    chain_entry,
    head_message,
    head_signature_ok,
    sign_head,
    summary_lines,
    verify_chain,
)
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import InvalidConfigError, StorageError
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.sqlite_store import SCHEMA_VERSION, SQLiteStore

KEY = ClusterKey.generate()
OTHER = ClusterKey.generate()
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return audit_time(T0 + timedelta(seconds=seconds))


def event(n: int, **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "time": at(n),
        "subject": f"user-{n % 3}",
        "role": "admin",
        "action": "session.create",
        "target": f"ses_{n}",
        "outcome": "success",
        "request_id": f"req-{n}",
        "details": {"n": n},
    }
    values.update(fields)
    return AuditEvent(**values)


def chain(events: list[AuditEvent]) -> list[AuditEntry]:
    entries, prev = [], GENESIS
    for seq, ev in enumerate(events, 1):
        entry = chain_entry(ev, seq=seq, prev=prev)
        entries.append(entry)
        prev = entry.hash
    return entries


def problems(report: Any) -> set[tuple[str, int]]:
    return {(p.kind, p.seq) for p in report.problems}


# Events, hashes and heads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"time": "2024-05-01 12:00:00"}, "time"),
        ({"time": "2024-05-01T12:00:00Z"}, "time"),
        ({"subject": 5}, "subject"),
        ({"target": "x" * 1025}, "target"),
        ({"details": {"ratio": 0.5}}, "details['ratio']"),
        ({"details": {"nested": {"a": 1}}}, "details['nested']"),
        ({"details": {"big": 2**63}}, "details['big']"),
        ({"details": {f"k{i}": i for i in range(33)}}, "details"),
        ({"details": [("a", 1)]}, "details"),
        ({"outcome": "\ud800"}, "outcome"),
    ],
)
def test_a_malformed_event_is_refused_naming_the_field(fields, named):
    with pytest.raises(InvalidConfigError) as caught:
        event(1, **fields)
    assert named in caught.value.message


def test_an_event_is_stamped_now_in_the_fixed_width_utc_form():
    stamped = AuditEvent(subject="s", role="r", action="a.b", target="t", outcome="success")
    assert len(stamped.time) == len("2024-05-01T12:00:00.000000Z")
    assert stamped.time.endswith("Z")
    assert audit_time(datetime(2024, 5, 1, 14, 0, tzinfo=UTC) + timedelta(microseconds=7)) == (
        "2024-05-01T14:00:00.000007Z"
    )


def test_the_hash_covers_every_field_and_prev_but_not_seq():
    entry = chain_entry(event(1, details={"a": 1, "b": "two"}), seq=1, prev=GENESIS)
    assert entry.computed_hash() == entry.hash
    assert replace(entry, seq=99).computed_hash() == entry.hash
    for name, value in [
        ("time", at(2)),
        ("subject", "mallory"),
        ("role", "auditor"),
        ("action", "session.delete"),
        ("target", "ses_other"),
        ("outcome", "failure:500"),
        ("request_id", "req-x"),
        ("details", {"a": 1, "b": "TWO"}),
        ("prev", "11" * 32),
    ]:
        assert replace(entry, **{name: value}).computed_hash() != entry.hash, name
    reordered_keys = replace(entry, details={"b": "two", "a": 1})
    assert reordered_keys.computed_hash() == entry.hash


def test_a_head_verifies_with_its_key_only_and_only_unchanged():
    entry = chain([event(1), event(2)])[-1]
    head = sign_head(KEY, entry, time=at(10))
    assert (head.seq, head.hash, head.public_key) == (2, entry.hash, KEY.public_key_bytes())
    assert head_signature_ok(head)
    assert head_signature_ok(head, KEY.public_key_bytes())
    assert not head_signature_ok(head, OTHER.public_key_bytes())
    for changed in (
        replace(head, seq=3),
        replace(head, hash="00" * 32),
        replace(head, time=at(11)),
    ):
        assert not head_signature_ok(changed)


def test_a_head_signature_is_domain_separated():
    entry = chain([event(1)])[0]
    head = sign_head(KEY, entry, time=at(1))
    message = head_message(head.seq, head.hash, head.time)
    assert message.startswith(HEAD_CONTEXT)
    bare = replace(head, signature=KEY.sign(message.removeprefix(HEAD_CONTEXT)))
    assert not head_signature_ok(bare)


def test_an_intact_chain_with_heads_verifies_and_counts_its_unsigned_tail():
    entries = chain([event(n) for n in range(10)])
    heads = [sign_head(KEY, entries[3]), sign_head(KEY, entries[6])]
    report = verify_chain(entries, heads, KEY.public_key_bytes())
    assert report.ok and report.problems == ()
    assert (report.entries, report.heads_checked) == (10, 2)
    assert (report.signed_seq, report.unsigned_tail) == (7, 3)
    assert report.trusted_key_checked
    assert report.signer_fingerprint == KEY.fingerprint()
    (line,) = summary_lines(report)
    assert line.startswith("audit log intact: 10 entries, 2 signed heads, latest at entry 7")
    assert "3 entries not yet signed" in line


def test_an_empty_log_verifies():
    report = verify_chain([], [])
    assert report.ok
    assert (report.entries, report.unsigned_tail, report.signed_seq) == (0, 0, None)
    assert "not checked against a trusted key" in summary_lines(report)[-1]


def test_an_entry_appended_after_the_last_head_is_only_counted_as_unsigned():
    """The limit of what a chain can prove: an entry forged after the last head chains
    like a real one. It shows as not yet signed, and the next head would cover it."""
    entries = chain([event(n) for n in range(5)])
    heads = [sign_head(KEY, entries[-1])]
    forged = chain_entry(event(99, subject="mallory"), seq=6, prev=entries[-1].hash)
    report = verify_chain([*entries, forged], heads, KEY.public_key_bytes())
    assert report.ok
    assert report.unsigned_tail == 1


def test_a_suffix_rewritten_with_recomputed_hashes_is_caught_by_the_heads():
    events = [event(n) for n in range(8)]
    entries = chain(events)
    heads = [sign_head(KEY, entries[2]), sign_head(KEY, entries[5]), sign_head(KEY, entries[7])]
    events[4] = event(4, subject="mallory")
    rewritten = chain(events)
    report = verify_chain(rewritten, heads, KEY.public_key_bytes())
    assert problems(report) == {("rewritten", 6), ("rewritten", 8)}
    assert "seq 6: rewritten" in summary_lines(report)[0]


def test_heads_signed_by_another_key_are_named_with_or_without_a_trusted_key():
    entries = chain([event(n) for n in range(6)])
    heads = [sign_head(KEY, entries[1]), sign_head(OTHER, entries[3]), sign_head(KEY, entries[5])]
    trusted = verify_chain(entries, heads, KEY.public_key_bytes())
    assert problems(trusted) == {("signature", 4)}
    untrusted = verify_chain(entries, heads)
    assert problems(untrusted) == {("signature", 4)}
    assert not untrusted.trusted_key_checked
    lone = verify_chain(entries, [sign_head(OTHER, entries[5])], KEY.public_key_bytes())
    assert problems(lone) == {("signature", 6)}
    assert lone.unsigned_tail == 6, "an invalid head covers nothing"


def test_a_copied_entry_is_named_as_inserted():
    entries = chain([event(n) for n in range(4)])
    copy = replace(entries[1], seq=5)
    assert problems(verify_chain([*entries, copy], [])) == {("inserted", 5)}


def test_a_second_branch_appended_after_a_real_entry_is_named_as_inserted():
    entries = chain([event(n) for n in range(5)])
    branch = chain_entry(event(50, subject="mallory"), seq=6, prev=entries[1].hash)
    assert problems(verify_chain([*entries, branch], [])) == {("inserted", 6)}


# Every kind of tampering, on random chains -----------------------------------------------

_text = st.text(max_size=12)
_events = st.builds(
    AuditEvent,
    subject=_text,
    role=st.sampled_from(["admin", "auditor", "none"]),
    action=st.sampled_from(["session.create", "chunk.download", "token.refused"]),
    target=_text,
    outcome=st.sampled_from(["success", "failure:409", "refused"]),
    request_id=st.text(alphabet="0123456789abcdef", max_size=32),
    time=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(audit_time),
    details=st.dictionaries(
        _text,
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _text),
        max_size=3,
    ),
)


@st.composite
def signed_logs(draw: st.DrawFn) -> tuple[list[AuditEntry], list[AuditHead]]:
    """A chain of 2-20 entries with signed heads at random entries and at the last."""
    entries = chain(draw(st.lists(_events, min_size=2, max_size=20)))
    seqs = draw(st.sets(st.integers(1, len(entries)))) | {len(entries)}
    heads = [sign_head(KEY, entries[s - 1], time=at(s)) for s in sorted(seqs)]
    return entries, heads


_hex = st.binary(min_size=32, max_size=32).map(bytes.hex).filter(lambda h: h != GENESIS)
_FIELDS = ["time", "subject", "role", "action", "target", "outcome", "request_id", "details"]
_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(entries: list[AuditEntry], heads: list[AuditHead], expected: set[tuple[str, int]]):
    report = verify_chain(entries, heads, KEY.public_key_bytes())
    assert problems(report) == expected, report.problems
    assert not report.ok
    lines = summary_lines(report)
    for kind, seq in expected:
        assert any(line.startswith(f"seq {seq}: {kind}:") for line in lines)
    assert lines[-1].startswith("audit log TAMPERED")


@_PROPERTY
@given(signed_logs(), st.data())
def test_an_edited_entry_is_named_as_edited(log, data):
    entries, heads = log
    k = data.draw(st.integers(1, len(entries)), label="k")
    name = data.draw(st.sampled_from([*_FIELDS, "prev", "hash"]), label="field")
    old = entries[k - 1]
    if name == "details":
        value: Any = {**old.details, "tampered": True}
    elif name in ("prev", "hash"):
        value = data.draw(_hex.filter(lambda h: h != getattr(old, name)))
    elif name == "time":
        value = at(-1) if old.time != at(-1) else at(-2)
    else:
        value = getattr(old, name) + "!"
    entries[k - 1] = replace(old, **{name: value})
    _check(entries, heads, {("edited", k)})


@_PROPERTY
@given(signed_logs(), st.data())
def test_a_deleted_entry_is_named_as_deleted(log, data):
    entries, heads = log
    k = data.draw(st.integers(1, len(entries)), label="k")
    del entries[k - 1]
    _check(entries, heads, {("deleted", k)})


@_PROPERTY
@given(signed_logs(), st.data())
def test_a_deleted_tail_covered_by_a_head_is_named_at_its_first_entry(log, data):
    entries, heads = log
    count = data.draw(st.integers(1, len(entries) - 1), label="count")
    first = len(entries) - count + 1
    del entries[first - 1 :]
    _check(entries, heads, {("deleted", first)})


@_PROPERTY
@given(signed_logs(), st.data())
def test_an_inserted_entry_is_named_as_inserted(log, data):
    entries, heads = log
    k = data.draw(st.integers(1, len(entries)), label="k")
    fake = data.draw(_events, label="forged event")
    if data.draw(st.booleans(), label="chained"):
        prev = entries[k - 2].hash if k > 1 else GENESIS
        forged = chain_entry(fake, seq=k, prev=prev)
    else:
        forged = replace(chain_entry(fake, seq=k, prev=data.draw(_hex)), hash=data.draw(_hex))
    assume(forged.hash not in {e.hash for e in entries})  # else it is a copy, not a forgery
    shifted = [replace(e, seq=e.seq + 1) for e in entries[k - 1 :]]
    _check([*entries[: k - 1], forged, *shifted], heads, {("inserted", k)})


@_PROPERTY
@given(signed_logs(), st.data())
def test_two_swapped_entries_are_both_named_as_reordered(log, data):
    entries, heads = log
    a, b = data.draw(
        st.lists(st.integers(1, len(entries)), min_size=2, max_size=2, unique=True).map(sorted),
        label="a, b",
    )
    entries[a - 1], entries[b - 1] = (
        replace(entries[b - 1], seq=a),
        replace(entries[a - 1], seq=b),
    )
    _check(entries, heads, {("reordered", a), ("reordered", b)})


@_PROPERTY
@given(signed_logs(), st.data())
def test_a_forged_head_is_named_by_its_seq(log, data):
    entries, heads = log
    i = data.draw(st.integers(0, len(heads) - 1), label="head")
    head = heads[i]
    if data.draw(st.booleans(), label="re-signed with another key"):
        heads[i] = sign_head(OTHER, entries[head.seq - 1], time=head.time)
    else:
        other = data.draw(st.sampled_from([e for e in entries if e.hash != head.hash]))
        heads[i] = replace(head, hash=other.hash)
    _check(entries, heads, {("signature", head.seq)})


# The storage component signs heads -------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> StorageService:
    return StorageService(DataDir.open(tmp_path / "data", create=True), audit_sign_every=4)


def _log(service: StorageService) -> tuple[list[AuditEntry], list[AuditHead]]:
    async def read() -> tuple[list[AuditEntry], list[AuditHead]]:
        page = await service.list_audit(limit=1000)
        return list(page.items), await service.list_audit_heads()

    return asyncio.run(read())


def test_the_storage_component_signs_every_n_entries_and_on_close(service):
    async def body() -> None:
        for n in range(10):
            await service.append_audit(event(n))
        assert [h.seq for h in await service.list_audit_heads()] == [4, 8]
        assert await service.sign_audit_head() is not None
        assert await service.sign_audit_head() is None, "nothing new to sign"
        await service.append_audit(event(10))
        await service.close()

    asyncio.run(body())
    store = SQLiteStore(service.datadir.path / "metadata.db")
    try:
        entries = list(asyncio.run(store.list_audit(limit=100)).items)
        heads = asyncio.run(store.list_audit_heads())
    finally:
        asyncio.run(store.close())
    assert [h.seq for h in heads] == [4, 8, 10, 11]
    key = service.datadir.cluster_key().public_key_bytes()
    report = verify_chain(entries, heads, key)
    assert report.ok and report.unsigned_tail == 0


def test_a_failed_signing_is_logged_and_never_fails_the_append(tmp_path, caplog):
    datadir = DataDir.open(tmp_path / "data", create=True)
    service = StorageService(datadir, audit_sign_every=2)

    def broken_key() -> ClusterKey:
        raise StorageError("cannot read cluster key file (test)")

    datadir.cluster_key = broken_key  # type: ignore[method-assign]

    async def body() -> list[int]:
        with caplog.at_level(logging.ERROR):
            seqs = [(await service.append_audit(event(n))).seq for n in range(3)]
        await datadir.close()
        return seqs

    assert asyncio.run(body()) == [1, 2, 3]
    assert "audit head signing failed" in caplog.text


def test_a_version_1_database_is_migrated_and_keeps_its_sessions(tmp_path):
    path = tmp_path / "metadata.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', '1');"
            "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
            " project TEXT, environment TEXT, created_at TEXT NOT NULL, record TEXT NOT NULL);"
        )
    db.close()
    store = SQLiteStore(path)
    try:
        entry = asyncio.run(store.append_audit(event(1)))
        assert entry.seq == 1
        asyncio.run(store.revoke_token("j", expires_at=1, subject="s", reason="r"))
    finally:
        asyncio.run(store.close())
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    db.close()
    assert version == (str(SCHEMA_VERSION),)
