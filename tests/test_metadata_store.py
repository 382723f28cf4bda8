"""The metadata store contract: every rule of :mod:`lucid_sessions.storage.metadata`.

Every test here runs against each implementation in ``STORE_FACTORIES``; a new backend
joins by adding one async factory (it gets a fresh empty folder per test, and the test's
fixture request for servers or databases it needs). Tests use only the
:class:`MetadataStore` interface, except the few marked SQLite-only at the end.

``mongo`` runs against the MongoDB of ``tests/mongo_fixtures.py``: a private nx-27017 (a
MongoDB-wire-compatible server on SQLite) unless ``LUCID_TEST_MONGODB_URI`` names a real
one, with a database of the test's own.

Each test runs its calls on one event loop (the ``run`` fixture), the one the store was
created on, so backends whose clients are bound to a loop work too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import FrozenInstanceError, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lucid_sessions.audit import GENESIS, AuditEvent, AuditHead, sign_head, verify_chain
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import (
    AlreadyExistsError,
    ChunkNotFoundError,
    InvalidConfigError,
    NotFoundError,
    PipelineError,
    StorageError,
)
from lucid_sessions.storage.metadata import (
    AuditPage,
    ChunkRecord,
    ManifestRecord,
    MetadataStore,
    SessionRecord,
    WrappedKeyRecord,
)
from lucid_sessions.storage.mongo_store import MongoStore
from lucid_sessions.storage.sqlite_store import SQLiteStore

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


async def _sqlite(folder: Path, request: pytest.FixtureRequest) -> MetadataStore:
    return SQLiteStore(folder / "metadata.db")


async def _mongo(folder: Path, request: pytest.FixtureRequest) -> MetadataStore:
    uri = request.getfixturevalue("mongodb_uri")
    return await MongoStore.open(uri, database=request.getfixturevalue("mongo_database"))


STORE_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Awaitable[MetadataStore]]] = {
    "sqlite": _sqlite,
    "mongo": _mongo,
}
"""Implementation name -> async factory taking an empty folder and the fixture request.
Extend for new backends."""


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[MetadataStore]:
    folder = tmp_path / f"store-{request.param}"
    folder.mkdir()
    opened = run(STORE_FACTORIES[request.param](folder, request))
    yield opened
    run(opened.close())


# Records ---------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 0, 0)


def ts(seconds: float) -> str:
    """An ISO 8601 UTC timestamp ``seconds`` after a fixed origin."""
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds") + "Z"


def session(session_id: str, *, at: float = 0, **fields: Any) -> SessionRecord:
    values: dict[str, Any] = {
        "name": f"name of {session_id}",
        "status": "recording",
        "created_at": ts(at),
        "updated_at": ts(at),
    }
    values.update(fields)
    return SessionRecord(session_id=session_id, **values)


def full_session(session_id: str = "ses_full") -> SessionRecord:
    """A record with every field set, tags and a nested config."""
    return SessionRecord(
        session_id=session_id,
        name="Quarterly close \u2014 \u00e9quipe",
        status="completed",
        created_at=ts(0),
        updated_at=ts(5),
        started_at=ts(1),
        ended_at=ts(4),
        project="finance",
        environment="prod",
        tags=("audit", "sox", "audit-2"),
        config={
            "quality": "high",
            "fps": 2.5,
            "zstd_level": 9,
            "connection": {"host": "rdp.example", "port": 3389, "ignore_cert": False},
            "monitors": [[0, 0, 1920, 1080], [1920, 0, 1280, 1024]],
            "note": None,
        },
        key_id="0123456789abcdef0123456789abcdef",
        hash_algorithm="sha256",
        chunk_count=12,
        raw_bytes=10**12,
        stored_bytes=123_456_789,
        root="ab" * 32,
        status_reason="stopped by operator",
        stats={"frames": 1200, "dropped": 3, "effective_fps": 9.97},
    )


def chunk(
    session_id: str, sequence: int, start_us: int = 0, end_us: int = 0, *, leaf: str = ""
) -> ChunkRecord:
    return ChunkRecord(
        session_id=session_id,
        sequence=sequence,
        start_us=start_us,
        end_us=end_us,
        frame_count=10 + sequence,
        keyframe_count=1,
        unchanged_count=3,
        width=1920,
        height=1080,
        raw_bytes=62_208_000,
        plain_size=1_000_000 + sequence,
        stored_size=400_000 + sequence,
        leaf_hash=leaf or f"{sequence:064x}",
        level=3,
        created_at=ts(sequence),
    )


def wrapped_key(
    key_id: str, session_id: str, *, master: str = "m1" * 8, blob: bytes = b"", at: float = 0
) -> WrappedKeyRecord:
    return WrappedKeyRecord(
        key_id=key_id,
        session_id=session_id,
        master_key_id=master,
        wrapped=blob or (b"LSWK\x01" + key_id.encode() + bytes(range(40))),
        created_at=ts(at),
    )


def manifest(session_id: str, body: bytes = b'{"version":1}') -> ManifestRecord:
    return ManifestRecord(
        session_id=session_id,
        manifest=body,
        signature=bytes(range(64)),
        public_key=b"\x00\xff" * 16,
        created_at=ts(9),
    )


def ids(page_items: tuple[SessionRecord, ...]) -> list[str]:
    return [s.session_id for s in page_items]


# Sessions --------------------------------------------------------------------------------


def test_a_created_session_reads_back_equal_with_every_field(store, run):
    record = full_session()
    run(store.create_session(record))
    got = run(store.get_session(record.session_id))
    assert got == record
    assert isinstance(got.tags, tuple)
    assert got.config["connection"] == {"host": "rdp.example", "port": 3389, "ignore_cert": False}
    assert got.config["monitors"] == [[0, 0, 1920, 1080], [1920, 0, 1280, 1024]]
    assert got.config["note"] is None
    assert got.config["fps"] == 2.5
    assert got.raw_bytes == 10**12


def test_a_minimal_session_keeps_its_none_fields_and_defaults(store, run):
    record = session("ses_min")
    run(store.create_session(record))
    got = run(store.get_session("ses_min"))
    assert got == record
    assert (got.started_at, got.ended_at, got.project, got.environment) == (None,) * 4
    assert (got.key_id, got.root, got.status_reason) == (None, None, None)
    assert got.tags == ()
    assert dict(got.config) == {}


def test_records_handed_out_are_frozen_and_not_shared_with_the_store(store, run):
    config = {"nested": {"a": 1}}
    run(store.create_session(session("ses_a", config=config)))
    config["nested"]["a"] = 2  # the caller's dict changes after create
    got = run(store.get_session("ses_a"))
    assert got.config == {"nested": {"a": 1}}
    with pytest.raises(FrozenInstanceError):
        got.status = "failed"  # type: ignore[misc]
    if isinstance(got.config, dict):
        got.config["nested"]["a"] = 3  # mutating a handed-out record must not reach the store
    assert run(store.get_session("ses_a")).config == {"nested": {"a": 1}}


def test_creating_an_existing_session_is_refused_and_keeps_the_first(store, run):
    run(store.create_session(session("ses_a", name="first")))
    with pytest.raises(AlreadyExistsError):
        run(store.create_session(session("ses_a", name="second", at=10)))
    assert run(store.get_session("ses_a")).name == "first"
    assert run(store.list_sessions()).total == 1


def test_getting_an_unknown_session_raises_not_found(store, run):
    with pytest.raises(NotFoundError):
        run(store.get_session("ses_missing"))


def test_sessions_list_by_creation_time_then_id_whatever_the_insert_order(store, run):
    for sid, at in [("c", 5), ("b", 1), ("z", 0), ("a", 5), ("m", 1), ("d", 9)]:
        run(store.create_session(session(sid, at=at)))
    page = run(store.list_sessions())
    assert ids(page.items) == ["z", "b", "m", "a", "c", "d"]
    assert run(store.list_sessions()) == page  # the same order every time


def test_an_empty_store_lists_no_sessions(store, run):
    page = run(store.list_sessions())
    assert (page.items, page.total, page.has_next) == ((), 0, False)


@pytest.fixture
def labelled(store, run) -> None:
    """Six sessions over two projects, two environments and three statuses."""
    rows = [
        ("s1", "recording", "finance", "prod"),
        ("s2", "completed", "finance", "prod"),
        ("s3", "completed", "finance", "staging"),
        ("s4", "completed", "ops", "prod"),
        ("s5", "failed", "ops", None),
        ("s6", "completed", None, "prod"),
    ]
    for i, (sid, status, project, environment) in enumerate(rows):
        run(
            store.create_session(
                session(sid, at=i, status=status, project=project, environment=environment)
            )
        )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "completed"}, ["s2", "s3", "s4", "s6"]),
        ({"status": "failed"}, ["s5"]),
        ({"status": "interrupted"}, []),
        ({"project": "finance"}, ["s1", "s2", "s3"]),
        ({"project": "ops"}, ["s4", "s5"]),
        ({"environment": "prod"}, ["s1", "s2", "s4", "s6"]),
        ({"environment": "staging"}, ["s3"]),
        ({"status": "completed", "project": "finance"}, ["s2", "s3"]),
        ({"status": "completed", "environment": "prod"}, ["s2", "s4", "s6"]),
        ({"status": "completed", "project": "finance", "environment": "prod"}, ["s2"]),
        ({}, ["s1", "s2", "s3", "s4", "s5", "s6"]),
    ],
)
def test_list_filters_combine_and_count_only_matching_sessions(
    store, run, labelled, filters, expected
):
    page = run(store.list_sessions(**filters))
    assert ids(page.items) == expected
    assert page.total == len(expected)


def test_list_pages_with_limit_offset_total_and_has_next(store, run):
    for i in range(7):
        run(store.create_session(session(f"s{i}", at=i, status="completed")))
    run(store.create_session(session("other", at=3, status="failed")))
    seen: list[str] = []
    pages = []
    for offset in (0, 3, 6):
        page = run(store.list_sessions(status="completed", limit=3, offset=offset))
        assert (page.total, page.limit, page.offset) == (7, 3, offset)
        pages.append(page)
        seen += ids(page.items)
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert [p.has_next for p in pages] == [True, True, False]
    assert seen == [f"s{i}" for i in range(7)]


def test_a_page_past_the_end_is_empty_but_reports_the_total(store, run):
    for i in range(3):
        run(store.create_session(session(f"s{i}", at=i)))
    page = run(store.list_sessions(limit=10, offset=5))
    assert (page.items, page.total, page.has_next) == ((), 3, False)
    exact = run(store.list_sessions(limit=3, offset=0))
    assert (len(exact.items), exact.has_next) == (3, False)


def test_update_applies_changes_and_returns_what_is_stored(store, run):
    original = full_session()
    run(store.create_session(original))
    updated = run(
        store.update_session(
            original.session_id,
            {
                "status": "interrupted",
                "status_reason": None,
                "tags": ["one", "two"],
                "config": {"quality": "low", "nested": {"k": [1, 2]}},
                "chunk_count": 13,
                "ended_at": ts(8),
            },
        )
    )
    assert updated == run(store.get_session(original.session_id))
    assert updated.status == "interrupted"
    assert updated.status_reason is None
    assert updated.tags == ("one", "two")
    assert updated.config == {"quality": "low", "nested": {"k": [1, 2]}}
    assert (updated.chunk_count, updated.ended_at) == (13, ts(8))
    untouched = ("name", "created_at", "started_at", "project", "environment", "key_id", "root")
    for name in untouched:
        assert getattr(updated, name) == getattr(original, name), name


def test_update_stamps_updated_at_in_utc_unless_given(store, run):
    run(store.create_session(session("ses_a")))
    before = datetime.now().astimezone()
    stamped = run(store.update_session("ses_a", {"name": "renamed"}))
    when = datetime.fromisoformat(stamped.updated_at.replace("Z", "+00:00"))
    assert when.utcoffset() == timedelta(0)
    assert when >= before - timedelta(seconds=1)
    given = run(store.update_session("ses_a", {"updated_at": ts(99)}))
    assert given.updated_at == ts(99)


def test_updated_fields_are_what_list_filters_see(store, run):
    run(store.create_session(session("ses_a", project="p1", environment="e1")))
    run(
        store.update_session("ses_a", {"status": "completed", "project": "p2", "environment": "e2"})
    )
    assert run(store.list_sessions(status="recording")).total == 0
    assert run(store.list_sessions(project="p1")).total == 0
    assert run(store.list_sessions(environment="e1")).total == 0
    page = run(store.list_sessions(status="completed", project="p2", environment="e2"))
    assert ids(page.items) == ["ses_a"]


@pytest.mark.parametrize(
    "changes",
    [{"no_such_field": 1}, {"status": "failed", "colour": "red"}, {"session_id": "ses_b"}],
)
def test_update_refuses_unknown_fields_and_the_id_and_changes_nothing(store, run, changes):
    run(store.create_session(session("ses_a")))
    before = run(store.get_session("ses_a"))
    with pytest.raises(ValueError):
        run(store.update_session("ses_a", changes))
    assert run(store.get_session("ses_a")) == before
    with pytest.raises(NotFoundError):
        run(store.get_session("ses_b"))


def test_update_of_an_unknown_session_raises_not_found(store, run):
    with pytest.raises(NotFoundError):
        run(store.update_session("ses_missing", {"status": "failed"}))


def test_update_with_if_status_refuses_other_statuses_and_changes_nothing(store, run):
    run(store.create_session(session("ses_a", status="completed")))
    before = run(store.get_session("ses_a"))
    with pytest.raises(PipelineError):
        run(
            store.update_session(
                "ses_a", {"status": "failed", "name": "x"}, if_status=("recording", "paused")
            )
        )
    assert run(store.get_session("ses_a")) == before
    with pytest.raises(PipelineError):
        run(store.update_session("ses_a", {"status": "failed"}, if_status=()))
    assert run(store.get_session("ses_a")) == before


def test_update_with_if_status_applies_when_the_status_is_listed(store, run):
    run(store.create_session(session("ses_a", status="recording")))
    updated = run(
        store.update_session("ses_a", {"status": "completed"}, if_status=["paused", "recording"])
    )
    assert updated.status == "completed"
    # The transition happened once: the same guarded transition now fails.
    with pytest.raises(PipelineError):
        run(store.update_session("ses_a", {"status": "completed"}, if_status=["recording"]))


def _populate(store: MetadataStore, run: Run[Any], sid: str, at: float = 0) -> None:
    run(store.create_session(session(sid, at=at)))
    for sequence in range(3):
        run(store.put_chunk(chunk(sid, sequence, sequence * 100, sequence * 100 + 99)))
    run(store.put_wrapped_key(wrapped_key(f"key-{sid}", sid, at=at)))
    run(store.put_manifest(manifest(sid)))


def test_delete_removes_the_session_with_its_chunks_key_and_manifest(store, run):
    _populate(store, run, "ses_a")
    _populate(store, run, "ses_b", at=1)
    run(store.delete_session("ses_a"))
    with pytest.raises(NotFoundError):
        run(store.get_session("ses_a"))
    assert run(store.list_chunks("ses_a")) == []
    with pytest.raises(ChunkNotFoundError):
        run(store.get_chunk("ses_a", 0))
    with pytest.raises(NotFoundError):
        run(store.get_wrapped_key("key-ses_a"))
    with pytest.raises(NotFoundError):
        run(store.get_manifest("ses_a"))
    assert [k.key_id for k in run(store.list_wrapped_keys())] == ["key-ses_b"]
    # The other session is untouched.
    assert ids(run(store.list_sessions()).items) == ["ses_b"]
    assert [c.sequence for c in run(store.list_chunks("ses_b"))] == [0, 1, 2]
    assert run(store.get_manifest("ses_b")) == manifest("ses_b")


def test_a_deleted_session_id_can_be_reused_and_starts_empty(store, run):
    _populate(store, run, "ses_a")
    run(store.delete_session("ses_a"))
    run(store.create_session(session("ses_a", name="again")))
    assert run(store.get_session("ses_a")).name == "again"
    assert run(store.list_chunks("ses_a")) == []
    run(store.put_chunk(chunk("ses_a", 0, leaf="ff" * 32)))  # no clash with the old chunk 0
    run(store.put_manifest(manifest("ses_a", b'{"other":true}')))  # nor the old manifest


def test_deleting_an_unknown_session_raises_not_found(store, run):
    _populate(store, run, "ses_a")
    with pytest.raises(NotFoundError):
        run(store.delete_session("ses_missing"))
    assert len(run(store.list_chunks("ses_a"))) == 3


# Chunks ----------------------------------------------------------------------------------


def test_a_stored_chunk_reads_back_equal(store, run):
    run(store.create_session(session("ses_a")))
    record = chunk("ses_a", 4, 1_000, 2_000)
    run(store.put_chunk(record))
    assert run(store.get_chunk("ses_a", 4)) == record


def test_putting_the_same_chunk_again_is_a_no_op(store, run):
    run(store.create_session(session("ses_a")))
    record = chunk("ses_a", 0, 0, 99)
    run(store.put_chunk(record))
    run(store.put_chunk(record))
    assert run(store.list_chunks("ses_a")) == [record]


def test_a_chunk_with_another_leaf_hash_is_refused_and_the_first_kept(store, run):
    run(store.create_session(session("ses_a")))
    record = chunk("ses_a", 0, 0, 99)
    run(store.put_chunk(record))
    with pytest.raises(AlreadyExistsError):
        run(store.put_chunk(replace(record, leaf_hash="ee" * 32, frame_count=999)))
    assert run(store.get_chunk("ses_a", 0)) == record


def test_the_same_sequence_in_another_session_is_a_different_chunk(store, run):
    run(store.create_session(session("ses_a")))
    run(store.create_session(session("ses_b")))
    a, b = chunk("ses_a", 0, leaf="aa" * 32), chunk("ses_b", 0, leaf="bb" * 32)
    run(store.put_chunk(a))
    run(store.put_chunk(b))
    assert (run(store.get_chunk("ses_a", 0)), run(store.get_chunk("ses_b", 0))) == (a, b)


def test_a_chunk_for_an_unknown_session_is_refused(store, run):
    with pytest.raises(NotFoundError):
        run(store.put_chunk(chunk("ses_missing", 0)))
    run(store.create_session(session("ses_missing")))
    assert run(store.list_chunks("ses_missing")) == []


def test_getting_a_missing_chunk_raises_chunk_not_found(store, run):
    run(store.create_session(session("ses_a")))
    run(store.put_chunk(chunk("ses_a", 0)))
    with pytest.raises(ChunkNotFoundError):
        run(store.get_chunk("ses_a", 1))


@pytest.fixture
def four_chunks(store, run) -> list[ChunkRecord]:
    """Chunks 0..3 covering [0,99], [100,199], [200,299], [300,399] us, stored shuffled."""
    run(store.create_session(session("ses_a")))
    run(store.create_session(session("ses_b")))
    records = [chunk("ses_a", s, s * 100, s * 100 + 99) for s in range(4)]
    for sequence in (2, 0, 3, 1):
        run(store.put_chunk(records[sequence]))
    run(store.put_chunk(chunk("ses_b", 0, 0, 10_000)))
    return records


def test_chunks_list_by_sequence_for_their_session_only(store, run, four_chunks):
    assert run(store.list_chunks("ses_a")) == four_chunks
    assert [c.session_id for c in run(store.list_chunks("ses_b"))] == ["ses_b"]
    assert run(store.list_chunks("ses_unknown")) == []


@pytest.mark.parametrize(
    ("start_us", "end_us", "expected"),
    [
        (150, 250, [1, 2]),
        (199, 200, [1, 2]),  # bounds are inclusive on both ends
        (99, 99, [0]),
        (100, 100, [1]),
        (0, 399, [0, 1, 2, 3]),
        (-50, 5_000, [0, 1, 2, 3]),
        (400, 500, []),
        (250, None, [2, 3]),
        (None, 150, [0, 1]),
        (None, None, [0, 1, 2, 3]),
        (300, 200, []),  # an inverted range overlaps nothing
    ],
)
def test_a_time_range_selects_the_chunks_that_overlap_it(
    store, run, four_chunks, start_us, end_us, expected
):
    got = run(store.list_chunks("ses_a", start_us=start_us, end_us=end_us))
    assert [c.sequence for c in got] == expected


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (2, 0, [0, 1]),
        (2, 2, [2, 3]),
        (2, 3, [3]),
        (10, 0, [0, 1, 2, 3]),
        (None, 1, [1, 2, 3]),
        (1, 4, []),
        (0, 0, []),
    ],
)
def test_chunk_lists_page_with_limit_and_offset(store, run, four_chunks, limit, offset, expected):
    got = run(store.list_chunks("ses_a", limit=limit, offset=offset))
    assert [c.sequence for c in got] == expected


def test_a_time_range_and_paging_combine(store, run, four_chunks):
    got = run(store.list_chunks("ses_a", start_us=150, end_us=None, limit=2, offset=1))
    assert [c.sequence for c in got] == [2, 3]


# Wrapped keys ----------------------------------------------------------------------------


def test_a_wrapped_key_reads_back_equal(store, run):
    run(store.create_session(session("ses_a")))
    record = wrapped_key("k1", "ses_a", blob=bytes(range(256)) * 2)
    run(store.put_wrapped_key(record))
    got = run(store.get_wrapped_key("k1"))
    assert got == record
    assert type(got.wrapped) is bytes


def test_putting_the_same_wrapped_key_again_is_a_no_op_and_other_bytes_are_refused(store, run):
    run(store.create_session(session("ses_a")))
    record = wrapped_key("k1", "ses_a")
    run(store.put_wrapped_key(record))
    run(store.put_wrapped_key(record))
    with pytest.raises(AlreadyExistsError):
        run(store.put_wrapped_key(replace(record, wrapped=b"other bytes")))
    assert run(store.list_wrapped_keys()) == [record]


def test_getting_an_unknown_wrapped_key_raises_not_found(store, run):
    with pytest.raises(NotFoundError):
        run(store.get_wrapped_key("k-missing"))


def test_wrapped_keys_list_by_creation_time_then_id(store, run):
    for sid in ("ses_a", "ses_b"):
        run(store.create_session(session(sid)))
    for key_id, at in [("kc", 2), ("kb", 1), ("ka", 2), ("kd", 0)]:
        run(store.put_wrapped_key(wrapped_key(key_id, "ses_a", at=at)))
    assert [k.key_id for k in run(store.list_wrapped_keys())] == ["kd", "kb", "ka", "kc"]


def test_replace_wrapped_keys_rewraps_every_key_given(store, run):
    run(store.create_session(session("ses_a")))
    old = [wrapped_key(f"k{i}", "ses_a", at=i) for i in range(3)]
    for record in old:
        run(store.put_wrapped_key(record))
    new = [replace(r, master_key_id="m2" * 8, wrapped=b"new-" + r.key_id.encode()) for r in old[:2]]
    run(store.replace_wrapped_keys(new))
    assert run(store.list_wrapped_keys()) == [*new, old[2]]
    assert run(store.get_wrapped_key("k0")).master_key_id == "m2" * 8


def test_replace_wrapped_keys_with_an_unknown_key_changes_nothing(store, run):
    run(store.create_session(session("ses_a")))
    old = [wrapped_key(f"k{i}", "ses_a", at=i) for i in range(3)]
    for record in old:
        run(store.put_wrapped_key(record))
    batch = [replace(r, master_key_id="m2" * 8, wrapped=b"rewrapped") for r in old]
    batch.insert(2, wrapped_key("k-unknown", "ses_a", master="m2" * 8))
    with pytest.raises(NotFoundError):
        run(store.replace_wrapped_keys(batch))
    assert run(store.list_wrapped_keys()) == old
    with pytest.raises(NotFoundError):
        run(store.get_wrapped_key("k-unknown"))


# Manifests -------------------------------------------------------------------------------


def test_a_manifest_reads_back_byte_for_byte(store, run):
    run(store.create_session(session("ses_a")))
    record = manifest("ses_a", b'{"a":"\\u00e9"}\n\x00\xff')
    run(store.put_manifest(record))
    got = run(store.get_manifest("ses_a"))
    assert got == record
    assert (type(got.manifest), type(got.signature), type(got.public_key)) == (bytes,) * 3


def test_putting_the_same_manifest_again_is_a_no_op(store, run):
    run(store.create_session(session("ses_a")))
    run(store.put_manifest(manifest("ses_a")))
    run(store.put_manifest(manifest("ses_a")))
    assert run(store.get_manifest("ses_a")) == manifest("ses_a")


def test_a_second_different_manifest_is_refused_and_the_first_kept(store, run):
    run(store.create_session(session("ses_a")))
    run(store.put_manifest(manifest("ses_a")))
    with pytest.raises(AlreadyExistsError):
        run(store.put_manifest(manifest("ses_a", b'{"version":2}')))
    with pytest.raises(AlreadyExistsError):
        run(store.put_manifest(replace(manifest("ses_a"), signature=bytes(64))))
    assert run(store.get_manifest("ses_a")) == manifest("ses_a")


def test_a_manifest_for_an_unknown_session_is_refused(store, run):
    with pytest.raises(NotFoundError):
        run(store.put_manifest(manifest("ses_missing")))


def test_a_session_without_a_manifest_raises_not_found(store, run):
    run(store.create_session(session("ses_a")))
    with pytest.raises(NotFoundError):
        run(store.get_manifest("ses_a"))


# The audit log ---------------------------------------------------------------------------


def event(n: int, **fields: Any) -> AuditEvent:
    """The ``n``-th event of a small varied log: 3 subjects, 2 actions, targets by n % 4."""
    values: dict[str, Any] = {
        "time": ts(n),
        "subject": ("alice", "bob", "carol")[n % 3],
        "role": "admin",
        "action": ("session.create", "chunk.download")[n % 2],
        "target": f"ses_{n % 4}",
        "outcome": "success" if n % 5 else "failure:409",
        "request_id": f"req-{n}",
        "details": {"n": n},
    }
    values.update(fields)
    return AuditEvent(**values)


def _all_entries(store: MetadataStore, run: Run[Any], **filters: Any) -> list[Any]:
    entries, after = [], 0
    while True:
        page = run(store.list_audit(after_seq=after, limit=7, **filters))
        entries.extend(page.items)
        if page.next_after is None:
            return entries
        after = page.next_after


def test_audit_appends_are_numbered_from_one_and_chained(store, run):
    first = run(store.append_audit(event(0)))
    second = run(store.append_audit(event(1)))
    assert (first.seq, first.prev) == (1, GENESIS)
    assert (second.seq, second.prev) == (2, first.hash)
    for entry in (first, second):
        assert entry.hash == entry.computed_hash()
        assert len(entry.hash) == 64
    assert list(run(store.list_audit()).items) == [first, second]


def test_an_audit_entry_reads_back_with_every_field(store, run):
    details = {
        "text": "\u00e9quipe \u2014 \U0001f512",
        "big": 2**62,
        "neg": -1,
        "yes": True,
        "none": None,
    }
    sent = event(3, subject="s\u00fcbject", target="ses_a/12", details=details)
    appended = run(store.append_audit(sent))
    (got,) = run(store.list_audit()).items
    assert got == appended
    for name in ("time", "subject", "role", "action", "target", "outcome", "request_id"):
        assert getattr(got, name) == getattr(sent, name)
    assert dict(got.details) == details
    assert type(got.details["big"]) is int and type(got.details["yes"]) is bool


def test_concurrent_audit_appends_form_one_unbroken_chain(store, run):
    async def append_many() -> None:
        await asyncio.gather(*(store.append_audit(event(n)) for n in range(30)))

    run(append_many())
    entries = _all_entries(store, run)
    assert [e.seq for e in entries] == list(range(1, 31))
    assert verify_chain(entries, []).ok


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, list(range(20))),
        ({"subject": "bob"}, [n for n in range(20) if n % 3 == 1]),
        ({"action": "chunk.download"}, [n for n in range(20) if n % 2]),
        ({"target": "ses_2"}, [2, 6, 10, 14, 18]),
        ({"outcome": "failure:409"}, [0, 5, 10, 15]),
        ({"since": ts(15)}, [15, 16, 17, 18, 19]),
        ({"until": ts(3)}, [0, 1, 2]),
        ({"since": ts(4), "until": ts(9)}, [4, 5, 6, 7, 8]),
        ({"subject": "alice", "action": "session.create"}, [0, 6, 12, 18]),
        ({"subject": "nobody"}, []),
    ],
)
def test_audit_list_filters_combine(store, run, filters, expected):
    for n in range(20):
        run(store.append_audit(event(n)))
    found = [e.details["n"] for e in _all_entries(store, run, **filters)]
    assert found == expected


def test_audit_list_pages_by_seq_with_a_cursor(store, run):
    for n in range(10):
        run(store.append_audit(event(n)))
    first = run(store.list_audit(limit=4))
    assert [e.seq for e in first.items] == [1, 2, 3, 4]
    assert first.next_after == 4
    second = run(store.list_audit(after_seq=first.next_after, limit=4))
    assert [e.seq for e in second.items] == [5, 6, 7, 8]
    last = run(store.list_audit(after_seq=8, limit=4))
    assert [e.seq for e in last.items] == [9, 10]
    assert last.next_after is None
    exact = run(store.list_audit(after_seq=6, limit=4))
    assert [e.seq for e in exact.items] == [7, 8, 9, 10]
    assert exact.next_after is None
    filtered = run(store.list_audit(subject="alice", limit=2))
    assert [e.seq for e in filtered.items] == [1, 4]
    assert filtered.next_after == 4


def test_an_empty_audit_log_lists_nothing(store, run):
    assert run(store.list_audit()) == AuditPage(items=(), next_after=None)
    assert run(store.list_audit_heads()) == []
    assert run(store.latest_audit_head()) is None


def test_audit_heads_are_stored_once_per_seq_and_list_by_seq(store, run):
    key = ClusterKey.generate()
    entries = [run(store.append_audit(event(n))) for n in range(3)]
    heads = [sign_head(key, entries[2], time=ts(30)), sign_head(key, entries[0], time=ts(10))]
    for head in heads:
        run(store.put_audit_head(head))
    run(store.put_audit_head(heads[0]))
    with pytest.raises(AlreadyExistsError):
        run(store.put_audit_head(replace(heads[0], time=ts(31))))
    assert run(store.list_audit_heads()) == [heads[1], heads[0]]
    assert run(store.latest_audit_head()) == heads[0]
    assert verify_chain(_all_entries(store, run), heads, key.public_key_bytes()).ok


def test_audit_seq_continues_after_the_highest_head(store, run):
    run(store.append_audit(event(0)))
    run(
        store.put_audit_head(
            AuditHead(seq=5, hash="ab" * 32, time=ts(1), signature=b"s" * 64, public_key=b"k" * 32)
        )
    )
    assert run(store.append_audit(event(1))).seq == 6


# Revoked tokens --------------------------------------------------------------------------


def test_a_revoked_token_is_refused_and_others_are_not(store, run):
    assert not run(store.is_token_revoked("jti-1"))
    run(store.revoke_token("jti-1", expires_at=2_000_000_000, subject="alice", reason="lost"))
    assert run(store.is_token_revoked("jti-1"))
    assert not run(store.is_token_revoked("jti-2"))
    assert not run(store.is_token_revoked("x" * 500))
    (record,) = run(store.list_revoked_tokens())
    assert (record.jti, record.subject, record.reason, record.expires_at) == (
        "jti-1",
        "alice",
        "lost",
        2_000_000_000,
    )
    assert record.revoked_at.endswith("Z")


def test_revoking_again_keeps_the_first_note_and_the_later_expiry(store, run):
    run(store.revoke_token("jti-1", expires_at=2_000_000_000, subject="alice", reason="lost"))
    run(store.revoke_token("jti-1", expires_at=1_000_000_000, subject="bob", reason="other"))
    run(store.revoke_token("jti-1", expires_at=2_000_000_500, subject="bob", reason="other"))
    (record,) = run(store.list_revoked_tokens())
    assert (record.subject, record.reason, record.expires_at) == ("alice", "lost", 2_000_000_500)


@pytest.mark.parametrize(
    ("jti", "expires_at"),
    [("", 1), ("x" * 129, 1), ("jti", "soon"), ("jti", True), ("jti", 1.5)],
)
def test_a_malformed_revocation_is_refused(store, run, jti, expires_at):
    with pytest.raises(InvalidConfigError):
        run(store.revoke_token(jti, expires_at=expires_at, subject="", reason=""))
    assert run(store.list_revoked_tokens()) == []


def test_purging_forgets_only_revocations_that_expired_before_the_time(store, run):
    for jti, expires in (("old", 100), ("edge", 200), ("new", 300)):
        run(store.revoke_token(jti, expires_at=expires, subject="s", reason="r"))
    assert run(store.purge_revoked(200)) == 1
    assert sorted(r.jti for r in run(store.list_revoked_tokens())) == ["edge", "new"]
    assert not run(store.is_token_revoked("old"))
    assert run(store.is_token_revoked("edge"))
    assert run(store.purge_revoked(200)) == 0


# SQLite only -----------------------------------------------------------------------------


def test_sqlite_keeps_everything_across_close_and_reopen(tmp_path, run):
    path = tmp_path / "metadata.db"
    first = SQLiteStore(path)
    run(first.create_session(full_session("ses_a")))
    record = chunk("ses_a", 0, 0, 99)
    run(first.put_chunk(record))
    key = wrapped_key("k1", "ses_a")
    run(first.put_wrapped_key(key))
    run(first.put_manifest(manifest("ses_a")))
    run(first.update_session("ses_a", {"status": "interrupted"}))
    run(first.close())

    second = SQLiteStore(path)
    try:
        got = run(second.get_session("ses_a"))
        assert got == replace(
            full_session("ses_a"), status="interrupted", updated_at=got.updated_at
        )
        assert run(second.list_chunks("ses_a")) == [record]
        assert run(second.get_wrapped_key("k1")) == key
        assert run(second.get_manifest("ses_a")) == manifest("ses_a")
        assert run(second.list_sessions(status="interrupted")).total == 1
    finally:
        run(second.close())


def _corrupt_pages(path: Path) -> None:
    """Overwrite every page after the first with a pattern: a damaged disk image."""
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data)):
        data[offset] = (offset * 7) & 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"this is not a database" * 200),
        lambda p: p.write_bytes(p.read_bytes()[:100]),
        _corrupt_pages,
    ],
    ids=["garbage", "truncated", "damaged-pages"],
)
def test_sqlite_a_corrupt_database_file_gives_storage_error(tmp_path, run, damage):
    path = tmp_path / "metadata.db"
    store = SQLiteStore(path)
    for i in range(50):
        run(store.create_session(session(f"ses_{i:03d}", at=i, name="n" * 300)))
    run(store.close())
    damage(path)
    with pytest.raises(StorageError) as caught:
        reopened = SQLiteStore(path)
        try:
            run(reopened.list_sessions(limit=1000))
            run(reopened.get_session("ses_025"))
        finally:
            run(reopened.close())
    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_sqlite_a_database_of_another_schema_version_is_refused(tmp_path, run):
    path = tmp_path / "metadata.db"
    run(SQLiteStore(path).close())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.close()
    with pytest.raises(StorageError, match="schema version 99"):
        SQLiteStore(path)


@pytest.mark.parametrize(
    ("table", "record"),
    [
        ("sessions", "{not json"),
        ("sessions", '{"unexpected": 1}'),
        ("sessions", "[1, 2]"),
        ("sessions", '{"session_id": "ses_a", "tags": 5}'),
        ("chunks", "{not json"),
        ("chunks", '{"sequence": 0}'),
        ("chunks", "null"),
    ],
)
def test_sqlite_a_record_altered_outside_the_store_gives_storage_error(
    tmp_path, run, table, record
):
    path = tmp_path / "metadata.db"
    store = SQLiteStore(path)
    try:
        run(store.create_session(session("ses_a")))
        run(store.put_chunk(chunk("ses_a", 0)))
        with sqlite3.connect(path) as db:
            db.execute(f"UPDATE {table} SET record=?", (record,))
        db.close()
        with pytest.raises(StorageError):
            if table == "sessions":
                run(store.get_session("ses_a"))
            else:
                run(store.get_chunk("ses_a", 0))
        with pytest.raises(StorageError):
            if table == "sessions":
                run(store.list_sessions())
            else:
                run(store.list_chunks("ses_a"))
    finally:
        run(store.close())


def test_sqlite_a_closed_store_raises_storage_error(tmp_path, run):
    store = SQLiteStore(tmp_path / "metadata.db")
    run(store.close())
    with pytest.raises(StorageError):
        run(store.get_session("ses_a"))
    with pytest.raises(StorageError):
        run(store.create_session(session("ses_a")))
