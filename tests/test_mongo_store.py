"""What the MongoDB store promises beyond the shared contract (``test_metadata_store.py``
runs that whole suite against it): its indexes, the standalone-safe designs of the
multi-document writes, error translation, redaction of the URI, configuration and
assembly.

Against the MongoDB of ``tests/mongo_fixtures.py`` (a private nx-27017 unless
``LUCID_TEST_MONGODB_URI`` names a real one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect
from tests.mongo_fixtures import is_nx_27017, start_private_nx
from tests.redis_fixtures import free_port
from tests.test_metadata_store import chunk, event, full_session, manifest, session, wrapped_key

from lucid_sessions.audit import verify_chain
from lucid_sessions.cluster.assembly import Cluster
from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.errors import InvalidConfigError, NotFoundError, StorageError
from lucid_sessions.storage.mongo_store import INDEXES, MongoStore, redact_uri

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

PASSWORD = "pa55-w0rd/with?odd#chars"
"""A password not percent-encoded: the URI does not parse, and must not leak either."""
SECRET = "s3cr3t-Pa55w0rd"
"""A valid password."""


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def store(mongodb_uri: str, mongo_database: str, run: Run[Any]) -> Iterator[MongoStore]:
    opened = run(MongoStore.open(mongodb_uri, database=mongo_database))
    yield opened
    run(opened.close())


@pytest.fixture
def raw(mongodb_uri: str, mongo_database: str) -> Iterator[Any]:
    """The test's database through a synchronous client, to look behind the store."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000)
    yield client[mongo_database]
    client.close()


# Redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        ("mongodb://app:secret@db1,db2/?replicaSet=rs", "mongodb://app:***@db1,db2/?replicaSet=rs"),
        (f"mongodb://app:{PASSWORD}@db:27017/x", "mongodb://app:***@db:27017/x"),
        ("mongodb://secret@db/", "mongodb://***@db/"),
        ("mongodb+srv://a:b%40c@cluster.example/", "mongodb+srv://a:***@cluster.example/"),
        (
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=hunter2",
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=***",
        ),
        (
            "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t0k",
            "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
        ),
        ("not a uri secret", "<MongoDB URI>"),
    ],
)
def test_a_uri_is_named_without_its_credentials(uri, expected):
    assert redact_uri(uri) == expected


def test_a_malformed_uri_is_refused_without_quoting_the_password():
    for uri in (f"mongodb://app:{PASSWORD}@", f"postgres://app:{PASSWORD}@db/"):
        with pytest.raises(InvalidConfigError) as caught:
            MongoStore(uri)
        assert PASSWORD not in str(caught.value)
        assert PASSWORD not in repr(caught.value.details)


def test_an_unreachable_server_is_unavailable_quickly_and_named_redacted(run):
    uri = f"mongodb://app:{SECRET}@127.0.0.1:{free_port()}/?directConnection=true"
    loop_time = run(_elapsed(MongoStore.open(uri, timeout_ms=300), expect=Unavailable))
    error, elapsed = loop_time
    assert elapsed < 5
    assert "mongodb://app:***@127.0.0.1" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error.details)
    assert not isinstance(error, StorageError)  # retryable, not a database failure


async def _elapsed(call: Coroutine[Any, Any, Any], *, expect: type[Exception]) -> Any:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(expect) as caught:
        await call
    return caught.value, loop.time() - start


def test_the_store_repr_hides_the_password():
    store = MongoStore(f"mongodb://app:{SECRET}@127.0.0.1:1/")
    assert SECRET not in repr(store)
    assert SECRET not in store.where


# Opening and indexes ---------------------------------------------------------------------


def test_opening_creates_every_index_and_opening_again_changes_nothing(
    store, raw, run, mongodb_uri, mongo_database
):
    before = {name: raw[name].index_information() for name in INDEXES}
    stand_in = is_nx_27017(mongodb_uri)
    for name, models in INDEXES.items():
        found = {(tuple(info["key"]), bool(info.get("unique"))) for info in before[name].values()}
        for model in models:
            document = model.document
            wanted = (tuple(document["key"].items()), bool(document.get("unique")))
            assert wanted in found, (name, document["name"])
            # nx-27017 names indexes after their keys (idx_<collection>_<fields>) whatever
            # name is asked for; real MongoDB keeps the explicit name.
            if not stand_in:
                assert document["name"] in before[name]
    run(run_open_close(mongodb_uri, mongo_database))
    assert {name: raw[name].index_information() for name in INDEXES} == before


async def run_open_close(uri: str, database: str) -> None:
    await (await MongoStore.open(uri, database=database)).close()


def test_everything_is_kept_across_close_and_reopen(store, run, mongodb_uri, mongo_database):
    run(store.create_session(full_session("ses_a")))
    run(store.put_chunk(chunk("ses_a", 0, 0, 99)))
    run(store.put_wrapped_key(wrapped_key("k1", "ses_a")))
    run(store.put_manifest(manifest("ses_a")))
    entry = run(store.append_audit(event(1)))
    run(store.close())
    reopened = run(MongoStore.open(mongodb_uri, database=mongo_database))
    try:
        assert run(reopened.get_session("ses_a")) == full_session("ses_a")
        assert run(reopened.list_chunks("ses_a")) == [chunk("ses_a", 0, 0, 99)]
        assert run(reopened.get_wrapped_key("k1")) == wrapped_key("k1", "ses_a")
        assert run(reopened.get_manifest("ses_a")) == manifest("ses_a")
        assert run(reopened.append_audit(event(2))).prev == entry.hash
    finally:
        run(reopened.close())


def test_a_closed_store_raises_storage_error(store, run):
    run(store.close())
    with pytest.raises(StorageError, match="closed"):
        run(store.get_session("ses_a"))
    run(store.close())  # closing twice is harmless


def test_records_come_back_with_plain_ints(store, run):
    run(store.create_session(full_session("ses_a")))
    got = run(store.get_session("ses_a"))
    assert type(got.raw_bytes) is int and type(got.config["zstd_level"]) is int


# Idempotent writes -----------------------------------------------------------------------


def test_a_repeated_write_leaves_one_document(store, raw, run):
    run(store.create_session(session("ses_a")))
    for _ in range(2):
        run(store.put_chunk(chunk("ses_a", 0)))
        run(store.put_wrapped_key(wrapped_key("k1", "ses_a")))
        run(store.put_manifest(manifest("ses_a")))
        run(store.revoke_token("jti", expires_at=5, subject="s", reason="r"))
    for name in ("sessions", "chunks", "wrapped_keys", "manifests", "revoked_tokens"):
        assert raw[name].count_documents({}) == 1, name


def test_audit_details_with_any_key_keep_their_types(store, run):
    details = {"$where": 1, "a.b": "x", "": None, "big": -(2**63), "flag": False}
    appended = run(store.append_audit(event(1, details=details)))
    (got,) = run(store.list_audit()).items
    assert got == appended and dict(got.details) == details
    assert type(got.details["big"]) is int and type(got.details["flag"]) is bool


def test_an_audit_entry_edited_behind_the_store_reads_back_as_stored(store, raw, run):
    first = run(store.append_audit(event(1)))
    run(store.append_audit(event(2)))
    raw["audit_log"].update_one({"seq": 1}, {"$set": {"details": "{broken", "subject": "eve"}})
    raw["audit_log"].update_one({"seq": 2}, {"$set": {"details": {"n": 2}}})
    one, two = run(store.list_audit()).items
    assert (one.subject, dict(one.details)) == ("eve", {"malformed": "{broken"})
    assert "malformed" in two.details
    report = verify_chain([one, two], [])
    assert [(p.kind, p.seq) for p in report.problems][:1] == [("edited", first.seq)]


# The audit log's single writer -----------------------------------------------------------


class _GatedInserts:
    """A collection whose ``insert_one`` waits for ``gate``: holds a writer between
    reading the log's tail and appending to it."""

    def __init__(self, collection: Any, gate: asyncio.Event) -> None:
        self._collection = collection
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def insert_one(self, document: Any, *args: Any, **kwargs: Any) -> Any:
        await self._gate.wait()
        return await self._collection.insert_one(document, *args, **kwargs)


def test_a_second_audit_writer_fails_loudly_instead_of_forking_the_chain(
    store, run, mongodb_uri, mongo_database
):
    async def race() -> None:
        other = await MongoStore.open(mongodb_uri, database=mongo_database)
        gate = asyncio.Event()
        plain = other._collection
        setattr(  # noqa: B010 (the method is replaced on this one instance)
            other,
            "_collection",
            lambda name: _GatedInserts(plain(name), gate) if name == "audit_log" else plain(name),
        )
        try:
            await store.append_audit(event(0))
            held = asyncio.create_task(other.append_audit(event(1)))  # reads seq 1 as the tail
            await asyncio.sleep(0.3)
            await store.append_audit(event(2))  # takes seq 2 meanwhile
            gate.set()
            with pytest.raises(StorageError, match="another writer"):
                await held
        finally:
            await other.close()

    run(race())
    entries = run(store.list_audit()).items
    assert [e.seq for e in entries] == [1, 2]
    assert [e.details["n"] for e in entries] == [0, 2]
    assert verify_chain(entries, []).ok


# Key rotation without transactions -------------------------------------------------------


class _FailingUpdates:
    """A collection whose ``update_one`` fails (connection lost) on call ``fail_at``."""

    def __init__(self, collection: Any, fail_at: int) -> None:
        self._collection = collection
        self.calls = 0
        self.fail_at = fail_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise AutoReconnect("connection closed")
        return await self._collection.update_one(*args, **kwargs)


def test_a_rewrap_that_fails_midway_puts_back_what_it_changed(store, run):
    from dataclasses import replace

    run(store.create_session(session("ses_a")))
    old = [wrapped_key(f"k{i}", "ses_a", at=i) for i in range(3)]
    for record in old:
        run(store.put_wrapped_key(record))
    failing = _FailingUpdates(store._collection("wrapped_keys"), fail_at=3)
    plain = store._collection
    setattr(  # noqa: B010 (the method is replaced on this one instance)
        store, "_collection", lambda name: failing if name == "wrapped_keys" else plain(name)
    )
    new = [replace(r, master_key_id="m2" * 8, wrapped=b"new") for r in old]
    with pytest.raises(Unavailable):
        run(store.replace_wrapped_keys(new))
    setattr(store, "_collection", plain)  # noqa: B010
    assert run(store.list_wrapped_keys()) == old
    run(store.replace_wrapped_keys(new))  # retried once the server answers: complete
    assert run(store.list_wrapped_keys()) == new


def test_a_delete_interrupted_before_the_session_document_is_finished_by_a_retry(store, raw, run):
    run(store.create_session(session("ses_a")))
    run(store.put_chunk(chunk("ses_a", 0)))
    run(store.put_manifest(manifest("ses_a")))
    raw["chunks"].delete_many({"session_id": "ses_a"})  # as if stopped after the first step
    assert run(store.get_session("ses_a")).session_id == "ses_a"  # still there: retryable
    run(store.delete_session("ses_a"))
    for name in ("sessions", "chunks", "wrapped_keys", "manifests"):
        assert raw[name].count_documents({}) == 0, name
    with pytest.raises(NotFoundError):
        run(store.delete_session("ses_a"))


# A server that goes away -----------------------------------------------------------------


def test_a_server_that_stops_makes_calls_unavailable(run):
    try:
        server = start_private_nx()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        store = run(MongoStore.open(server.uri, database="lucid_gone", timeout_ms=300))
        run(store.create_session(session("ses_a")))
        server.stop()
        with pytest.raises(Unavailable, match="unreachable"):
            run(store.get_session("ses_a"))
        run(store.close())
    finally:
        server.cleanup()


# Configuration and assembly --------------------------------------------------------------


def test_the_uri_and_database_come_from_toml_or_the_environment(tmp_path):
    file = tmp_path / "lucid.toml"
    file.write_text('[mongodb]\nuri = "mongodb://a:b@toml/"\ndatabase = "evidence"\n')
    from_file = load_config(file=file, env={})
    assert (from_file.mongodb_uri, from_file.mongodb_database) == (
        "mongodb://a:b@toml/",
        "evidence",
    )
    env = {"LUCID_MONGODB_URI": f"mongodb://app:{PASSWORD}@env/"}
    from_env = load_config(file=file, env=env)
    assert from_env.mongodb_uri == env["LUCID_MONGODB_URI"]
    assert PASSWORD not in repr(from_env)
    default = load_config(env={})
    assert (default.mongodb_uri, default.mongodb_database) == (None, "lucid_sessions")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LUCID_MONGODB_URI": f"http://app:{PASSWORD}@db/"}, "must start with mongodb://"),
        ({"LUCID_MONGODB_DATABASE": "a.b"}, "database name"),
        ({"LUCID_MONGODB_DATABASE": "x" * 64}, "database name"),
    ],
)
def test_a_bad_mongodb_setting_is_refused_by_name(env, message):
    with pytest.raises(InvalidConfigError, match=message) as caught:
        load_config(env=env)
    assert PASSWORD not in str(caught.value)


def test_the_storage_component_keeps_its_metadata_in_mongodb_when_configured(
    tmp_path, run, mongodb_uri, mongo_database, raw
):
    config = load_config(
        env={
            "LUCID_DATA_DIR": str(tmp_path / "data"),
            "LUCID_TARGETS": "storage",
            "LUCID_STORAGE_PORT": "0",
            "LUCID_MONGODB_URI": mongodb_uri,
            "LUCID_MONGODB_DATABASE": mongo_database,
        }
    )

    async def scenario() -> MongoStore:
        cluster = Cluster(config)
        await cluster.start()
        try:
            storage = cluster.modules.services["storage"].value
            assert isinstance(storage, StorageService)
            assert isinstance(storage.metadata, MongoStore)
            assert (await storage.health()).ok
            await storage.create_session(session("ses_a"))
            await storage.append_audit(event(1))
            return storage.metadata
        finally:
            await cluster.stop(0)

    metadata = run(scenario())
    assert raw["sessions"].count_documents({"_id": "ses_a"}) == 1
    assert raw["audit_heads"].count_documents({}) == 1  # signed at stop, then closed
    with pytest.raises(StorageError, match="closed"):
        run(metadata.get_session("ses_a"))
