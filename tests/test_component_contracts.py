"""The component contracts: each interface of :mod:`lucid_sessions.cluster.interfaces`,
run against every adapter.

Every test here runs twice: against the in-process object (``local``) and against the
gRPC client talking to a grpc.aio server on 127.0.0.1 that wraps the same kind of object
(``grpc``). A test uses only the Protocol, so a difference between the two is a defect of
the adapter. The wire mapping of Recorder and Pipeline, method by method, is in
``tests/test_rpc.py``.

Storage also runs every backend-independent case of the metadata store contract
(``tests/test_metadata_store.py``): the Storage interface includes the MetadataStore one,
so its rules must hold through gRPC too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from tests import test_metadata_store as metadata_cases
from tests.conftest import moving_frames
from tests.test_metadata_store import chunk, manifest, session

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.archive.processor import ProcessedChunk
from lucid_sessions.archive.reader import StoredEvidence, load_manifest
from lucid_sessions.archive.verify import verify_evidence
from lucid_sessions.audit import AuditEntry, AuditEvent, AuditHead, verify_chain
from lucid_sessions.chunkfile import open_chunk
from lucid_sessions.cluster.interfaces import (
    CaptureSpec,
    Pipeline,
    Processor,
    Recorder,
    RecorderStatus,
    RecordingEnd,
    Storage,
)
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import DataKey, MasterKey, wrap_data_key
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ChunkNotFoundError,
    FormatError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    NotRecordingError,
    PipelineError,
    StorageError,
    WrongKeyError,
)
from lucid_sessions.merkle import get_hasher
from lucid_sessions.recording.chunker import Chunker, RawChunk
from lucid_sessions.rpc import (
    PipelineClient,
    ProcessorClient,
    RecorderClient,
    StorageClient,
    serve,
)
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import SessionRecord

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

ADAPTERS = ["local", "grpc"]


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    with asyncio.Runner() as runner:
        yield runner.run


def _over_grpc(
    run: Run[Any], cleanup: contextlib.ExitStack, client_class: type[T], **component: Any
) -> T:
    """A client of a server on 127.0.0.1 serving ``component``; both stop in ``cleanup``."""
    server, port = run(serve(component, host="127.0.0.1", port=0))
    cleanup.callback(lambda: run(server.stop(0)))

    async def connect() -> T:
        return client_class(f"127.0.0.1:{port}")  # type: ignore[call-arg]

    client = run(connect())
    cleanup.callback(lambda: run(client.close()))  # type: ignore[attr-defined]
    return client


def _storage_service(folder: Path, **options: Any) -> StorageService:
    return StorageService(DataDir.open(folder, create=True), **options)


# Storage ---------------------------------------------------------------------------------


@pytest.fixture(params=ADAPTERS)
def storage(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[Storage]:
    local = _storage_service(tmp_path / "data")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: run(local.close()))
        if request.param == "local":
            yield local
        else:
            yield _over_grpc(run, cleanup, StorageClient, storage=local)


@pytest.fixture
def store(storage: Storage) -> Storage:
    """The name the metadata store cases ask for."""
    return storage


# Every backend-independent case of the metadata store contract, against both adapters.
for _name, _case in vars(metadata_cases).items():
    if _name.startswith("test_") and not _name.startswith("test_sqlite_"):
        globals()[f"test_storage_metadata_{_name.removeprefix('test_')}"] = _case
labelled = metadata_cases.labelled
four_chunks = metadata_cases.four_chunks


def _blob(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 3 * 1024 * 1024 + 17])
def test_storage_a_stored_chunk_reads_back_byte_for_byte_with_its_record(storage, run, size):
    run(storage.create_session(session("ses_a")))
    record = chunk("ses_a", 2, 0, 99)
    data = _blob(size)
    run(storage.store_chunk(record, data))
    got = run(storage.read_chunk("ses_a", 2))
    assert type(got) is bytes
    assert got == data
    assert run(storage.get_chunk("ses_a", 2)) == record


def test_storage_storing_the_same_chunk_again_is_a_no_op_and_other_bytes_are_refused(storage, run):
    run(storage.create_session(session("ses_a")))
    record = chunk("ses_a", 0)
    run(storage.store_chunk(record, b"first"))
    run(storage.store_chunk(record, b"first"))
    with pytest.raises(AlreadyExistsError):
        run(storage.store_chunk(record, b"other bytes"))
    assert run(storage.read_chunk("ses_a", 0)) == b"first"
    assert run(storage.list_chunks("ses_a")) == [record]


def test_storage_a_chunk_for_an_unknown_session_is_refused_and_nothing_is_written(storage, run):
    with pytest.raises(NotFoundError):
        run(storage.store_chunk(chunk("ses_missing", 0), b"data"))
    assert run(storage.chunk_sequences("ses_missing")) == []
    with pytest.raises(ChunkNotFoundError):
        run(storage.read_chunk("ses_missing", 0))


def test_storage_reading_a_missing_chunk_raises_chunk_not_found(storage, run):
    run(storage.create_session(session("ses_a")))
    run(storage.store_chunk(chunk("ses_a", 0), b"zero"))
    with pytest.raises(ChunkNotFoundError) as caught:
        run(storage.read_chunk("ses_a", 1))
    assert type(caught.value) is ChunkNotFoundError
    assert "chunk 1 of session ses_a" in caught.value.message


def test_storage_chunk_sequences_lists_the_chunk_files_ascending(storage, run):
    run(storage.create_session(session("ses_a")))
    run(storage.create_session(session("ses_b")))
    for sequence in (3, 0, 1):
        run(storage.store_chunk(chunk("ses_a", sequence), b"chunk %d" % sequence))
    run(storage.store_chunk(chunk("ses_b", 7), b"other"))
    assert run(storage.chunk_sequences("ses_a")) == [0, 1, 3]
    assert run(storage.chunk_sequences("ses_b")) == [7]
    assert run(storage.chunk_sequences("ses_unknown")) == []


def test_storage_deleting_a_session_removes_its_chunk_files_and_only_those(storage, run):
    for sid in ("ses_a", "ses_b"):
        run(storage.create_session(session(sid)))
        for sequence in range(2):
            run(storage.store_chunk(chunk(sid, sequence), f"{sid}/{sequence}".encode()))
        run(storage.put_manifest(manifest(sid)))
    run(storage.delete_session("ses_a"))
    assert run(storage.chunk_sequences("ses_a")) == []
    with pytest.raises(ChunkNotFoundError):
        run(storage.read_chunk("ses_a", 0))
    with pytest.raises(NotFoundError):
        run(storage.get_session("ses_a"))
    assert run(storage.chunk_sequences("ses_b")) == [0, 1]
    assert run(storage.read_chunk("ses_b", 1)) == b"ses_b/1"
    with pytest.raises(NotFoundError):
        run(storage.delete_session("ses_a"))


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "", "x" * 129])
def test_storage_an_unsafe_session_id_is_refused_with_storage_error(storage, run, bad_id):
    with pytest.raises(StorageError) as caught:
        run(storage.read_chunk(bad_id, 0))
    assert type(caught.value) is StorageError
    with pytest.raises(StorageError):
        run(storage.chunk_sequences(bad_id))


def test_storage_health_reports_the_metadata_store_and_disk_space(storage, run):
    health = run(storage.health())
    assert health.ok is True
    assert health.metadata == "sqlite"
    assert 0 < health.free_bytes <= health.total_bytes
    assert health.detail == ""


def _audit_event(n: int) -> AuditEvent:
    return AuditEvent(
        subject="alice", role="admin", action="session.create", target=f"ses_{n}", outcome="success"
    )


def _audit_log(storage: Storage, run: Run[Any]) -> tuple[list[AuditEntry], list[AuditHead]]:
    entries: list[AuditEntry] = []
    after = 0
    while True:
        page = run(storage.list_audit(after_seq=after, limit=1000))
        entries.extend(page.items)
        if page.next_after is None:
            return entries, run(storage.list_audit_heads())
        after = page.next_after


def test_storage_signs_the_audit_head_every_hundred_entries(storage, run, tmp_path):
    for n in range(105):
        run(storage.append_audit(_audit_event(n)))
    entries, heads = _audit_log(storage, run)
    assert [head.seq for head in heads] == [100]
    assert heads[0].hash == entries[99].hash
    assert run(storage.latest_audit_head()) == heads[0]
    cluster_key = DataDir.open(tmp_path / "data").cluster_key().public_key_bytes()
    report = verify_chain(entries, heads, cluster_key)
    assert report.ok, report.problems
    assert (report.signed_seq, report.unsigned_tail) == (100, 5)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_storage_signs_the_audit_head_when_entries_wait_unsigned_for_the_interval(
    tmp_path, run, adapter
):
    with contextlib.ExitStack() as cleanup:
        local = _storage_service(tmp_path / "data", audit_sign_interval_s=0.05)
        cleanup.callback(lambda: run(local.close()))
        storage: Storage = local
        if adapter == "grpc":
            storage = _over_grpc(run, cleanup, StorageClient, storage=local)
        first = run(storage.append_audit(_audit_event(1)))
        run(storage.append_audit(_audit_event(2)))
        assert run(storage.list_audit_heads()) == []
        run(asyncio.sleep(0.3))
        heads = run(storage.list_audit_heads())
        assert [head.seq for head in heads] == [2]
        run(asyncio.sleep(0.2))
        assert run(storage.list_audit_heads()) == heads, "nothing new: nothing signed"
        entries, _ = _audit_log(storage, run)
        assert entries[0] == first
        assert verify_chain(entries, heads, local.datadir.cluster_key().public_key_bytes()).ok


# The same failure, raised by each adapter: class, message and details must match.


def _failures(storage: Storage) -> list[Callable[[], Coroutine[Any, Any, Any]]]:
    record = chunk("ses_a", 0)
    return [
        lambda: storage.get_session("ses_missing"),
        lambda: storage.create_session(session("ses_a")),
        lambda: storage.get_chunk("ses_a", 9),
        lambda: storage.read_chunk("ses_a", 9),
        lambda: storage.store_chunk(record, b"other bytes"),
        lambda: storage.put_chunk(replace(record, leaf_hash="ee" * 32)),
        lambda: storage.update_session("ses_a", {"status": "failed"}, if_status=["completed"]),
        lambda: storage.update_session("ses_a", {"no_such_field": 1}),
        lambda: storage.put_manifest(manifest("ses_missing")),
        lambda: storage.get_wrapped_key("k-missing"),
        lambda: storage.read_chunk("../escape", 0),
        lambda: storage.put_audit_head(replace(_HEAD, time="2024-05-01T12:00:01.000000Z")),
    ]


_HEAD = AuditHead(
    seq=1,
    hash="ab" * 32,
    time="2024-05-01T12:00:00.000000Z",
    signature=bytes(64),
    public_key=bytes(32),
)


def test_storage_failures_cross_with_the_same_class_message_and_details(tmp_path, run):
    with contextlib.ExitStack() as cleanup:
        local = _storage_service(tmp_path / "local")
        cleanup.callback(lambda: run(local.close()))
        served = _storage_service(tmp_path / "served")
        cleanup.callback(lambda: run(served.close()))
        remote = _over_grpc(run, cleanup, StorageClient, storage=served)
        seen: dict[str, list[tuple[type, str, dict[str, object]]]] = {}
        for name, adapter in (("local", local), ("grpc", remote)):
            run(adapter.create_session(session("ses_a")))
            run(adapter.store_chunk(chunk("ses_a", 0), b"first"))
            run(adapter.put_audit_head(_HEAD))
            seen[name] = []
            for call in _failures(adapter):
                with pytest.raises((LucidError, ValueError)) as caught:
                    run(call())
                error = caught.value
                details = error.details if isinstance(error, LucidError) else {}
                seen[name].append((type(error), str(error), details))
        assert seen["grpc"] == seen["local"]
        kinds = [kind for kind, _, _ in seen["local"]]
        assert kinds == [
            NotFoundError,
            AlreadyExistsError,
            ChunkNotFoundError,
            ChunkNotFoundError,
            AlreadyExistsError,
            AlreadyExistsError,
            PipelineError,
            ValueError,
            NotFoundError,
            NotFoundError,
            StorageError,
            AlreadyExistsError,
        ]


# Processor -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_chunks() -> list[RawChunk]:
    """Three chunks of a small moving picture, as the recorder would hand them on."""
    chunker = Chunker(max_duration_us=1_000_000)
    chunks = [c for ts, frame in moving_frames(30, 96, 64) if (c := chunker.add(ts, frame))]
    last = chunker.flush()
    assert last is not None
    return [*chunks, last]


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(params=ADAPTERS)
def processor(
    request: pytest.FixtureRequest, master: MasterKey, run: Run[Any]
) -> Iterator[Processor]:
    local = ProcessorService(master)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: run(local.close()))
        if request.param == "local":
            yield local
        else:
            yield _over_grpc(run, cleanup, ProcessorClient, processor=local)


@pytest.mark.parametrize("hash_algorithm", ["blake3", "sha256"])
def test_processor_a_processed_chunk_opens_to_the_raw_plaintext(
    processor, master, run, raw_chunks, hash_algorithm
):
    key = DataKey.generate()
    wrapped = wrap_data_key(key, master)
    for raw in raw_chunks:
        done = run(
            processor.process(
                raw, session_id="ses_a", wrapped_key=wrapped, level=5, hash_algorithm=hash_algorithm
            )
        )
        assert isinstance(done, ProcessedChunk)
        assert (done.session_id, done.raw, done.level) == ("ses_a", raw, 5)
        assert done.seconds >= 0
        plain = open_chunk(done.stored, session_id="ses_a", sequence=raw.sequence, key=key.key)
        assert plain == raw.data
        assert done.leaf_hash == get_hasher(hash_algorithm).leaf_hash(done.stored)
        record = done.record()
        assert (record.sequence, record.plain_size, record.stored_size) == (
            raw.sequence,
            len(raw.data),
            len(done.stored),
        )
        assert record.leaf_hash == done.leaf_hash.hex()


def test_processor_processing_twice_seals_afresh_to_the_same_plaintext(
    processor, master, run, raw_chunks
):
    key = DataKey.generate()
    wrapped = wrap_data_key(key, master)
    raw = raw_chunks[0]
    first, second = (
        run(
            processor.process(
                raw, session_id="ses_a", wrapped_key=wrapped, level=3, hash_algorithm="blake3"
            )
        )
        for _ in range(2)
    )
    assert first.stored != second.stored  # random nonces
    for done in (first, second):
        assert open_chunk(done.stored, session_id="ses_a", sequence=raw.sequence, key=key.key) == (
            raw.data
        )


def test_processor_a_sealed_chunk_is_bound_to_its_session(processor, master, run, raw_chunks):
    key = DataKey.generate()
    raw = raw_chunks[1]
    done = run(
        processor.process(
            raw,
            session_id="ses_a",
            wrapped_key=wrap_data_key(key, master),
            level=3,
            hash_algorithm="blake3",
        )
    )
    with pytest.raises(AuthenticationError):
        open_chunk(done.stored, session_id="ses_b", sequence=raw.sequence, key=key.key)


def test_processor_a_key_wrapped_under_another_master_key_raises_wrong_key_error(
    processor, run, raw_chunks
):
    key = DataKey.generate()
    other = MasterKey.generate()
    with pytest.raises(WrongKeyError) as caught:
        run(
            processor.process(
                raw_chunks[0],
                session_id="ses_a",
                wrapped_key=wrap_data_key(key, other),
                level=3,
                hash_algorithm="blake3",
            )
        )
    assert type(caught.value) is WrongKeyError
    assert caught.value.details["data_key_id"] == key.key_id
    assert caught.value.details["expected_master_key_id"] == other.key_id
    assert other.key_id in caught.value.message


def test_processor_bytes_that_are_not_a_wrapped_key_raise_format_error(processor, run, raw_chunks):
    with pytest.raises(FormatError):
        run(
            processor.process(
                raw_chunks[0],
                session_id="ses_a",
                wrapped_key=b"not a wrapped key",
                level=3,
                hash_algorithm="blake3",
            )
        )


# Recorder --------------------------------------------------------------------------------


class ChunkCollector:
    """The pipeline side a recorder talks to: keeps what it is handed."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, RawChunk]] = []
        self.ends: list[RecordingEnd] = []

    async def submit_chunk(self, session_id: str, raw: RawChunk) -> None:
        self.chunks.append((session_id, raw))

    async def recording_ended(self, end: RecordingEnd) -> None:
        self.ends.append(end)


@pytest.fixture
def collector() -> ChunkCollector:
    return ChunkCollector()


@pytest.fixture(params=ADAPTERS)
def recorder(
    request: pytest.FixtureRequest, collector: ChunkCollector, run: Run[Any]
) -> Iterator[Recorder]:
    local = RecorderService(collector)  # type: ignore[arg-type]
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: run(local.close()))
        if request.param == "local":
            yield local
        else:
            yield _over_grpc(run, cleanup, RecorderClient, recorder=local)


def ingest_spec(**changes: Any) -> CaptureSpec:
    spec = CaptureSpec(source="ingest", fps=20, width=64, height=48, max_duration_us=200_000)
    return replace(spec, **changes)


async def push_for(recorder: Recorder, session_id: str, seconds: float, fps: int = 40) -> int:
    """Push a moving picture of the ingest size for ``seconds``; returns frames pushed."""
    frames = moving_frames(10_000, 64, 48, fps=fps)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    pushed = 0
    while loop.time() < end:
        _, frame = next(frames)
        await recorder.push_frame(session_id, None, frame)
        pushed += 1
        await asyncio.sleep(1 / fps)
    return pushed


def test_recorder_an_ingest_recording_hands_on_its_chunks_and_its_end(recorder, collector, run):
    async def scenario() -> RecorderStatus:
        await recorder.start("ses_a", ingest_spec())
        await push_for(recorder, "ses_a", 0.7)
        status = await recorder.status("ses_a")
        await recorder.stop("ses_a")
        return status

    status = run(scenario())
    assert (status.session_id, status.state) == ("ses_a", "recording")
    assert status.captured >= 5
    sequences = [raw.sequence for sid, raw in collector.chunks]
    assert {sid for sid, _ in collector.chunks} == {"ses_a"}
    assert len(sequences) >= 2
    assert sequences == list(range(len(sequences)))
    assert all((raw.width, raw.height) == (64, 48) for _, raw in collector.chunks)
    assert len(collector.ends) == 1
    end = collector.ends[0]
    assert (end.session_id, end.interrupted, end.reason) == ("ses_a", False, None)
    assert end.last_sequence == sequences[-1]
    assert end.stats["frames_captured"] >= status.captured


def test_recorder_pause_and_resume_show_in_its_status(recorder, run):
    async def scenario() -> list[str]:
        await recorder.start("ses_a", ingest_spec())
        states = [(await recorder.status("ses_a")).state]
        await recorder.pause("ses_a")
        await recorder.pause("ses_a")  # idempotent
        states.append((await recorder.status("ses_a")).state)
        await recorder.resume("ses_a")
        await recorder.resume("ses_a")
        states.append((await recorder.status("ses_a")).state)
        await recorder.stop("ses_a")
        return states

    assert run(scenario()) == ["recording", "paused", "recording"]


def test_recorder_stop_is_idempotent_and_ends_the_recording_once(recorder, collector, run):
    async def scenario() -> None:
        await recorder.stop("ses_never_started")
        await recorder.start("ses_a", ingest_spec())
        await recorder.stop("ses_a")
        await recorder.stop("ses_a")

    run(scenario())
    assert [end.session_id for end in collector.ends] == ["ses_a"]


def test_recorder_a_session_it_does_not_record_raises_not_recording(recorder, run):
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    for call in (
        lambda: recorder.status("ses_x"),
        lambda: recorder.pause("ses_x"),
        lambda: recorder.resume("ses_x"),
        lambda: recorder.push_frame("ses_x", None, frame),
    ):
        with pytest.raises(NotRecordingError):
            run(call())


def test_recorder_starting_a_session_twice_is_refused(recorder, run):
    async def scenario() -> None:
        await recorder.start("ses_a", ingest_spec())
        try:
            await recorder.start("ses_a", ingest_spec())
        finally:
            await recorder.stop("ses_a")

    with pytest.raises(AlreadyExistsError):
        run(scenario())


@pytest.mark.parametrize(
    "frame",
    [np.zeros((32, 32, 3), dtype=np.uint8), np.zeros((48, 64), dtype=np.uint8)],
    ids=["wrong-size", "not-rgb"],
)
def test_recorder_a_frame_that_does_not_fit_the_recording_is_refused(recorder, run, frame):
    async def scenario() -> None:
        await recorder.start("ses_a", ingest_spec())
        try:
            await recorder.push_frame("ses_a", 0, frame)
        finally:
            await recorder.stop("ses_a")

    with pytest.raises(InvalidConfigError):
        run(scenario())


def test_recorder_an_unknown_source_is_invalid_config(recorder, run):
    with pytest.raises(InvalidConfigError):
        run(recorder.start("ses_a", ingest_spec(source="vnc")))


# Pipeline --------------------------------------------------------------------------------


class PipelineRig:
    """A pipeline manager with real storage, processor and recorder around it.

    ``pipeline`` is the adapter under test. With ``grpc`` every component talks to the
    others through gRPC, as in per-component mode; ``recorder`` (to push frames) and
    ``storage`` (to check what was stored) are what the test uses besides.
    """

    def __init__(self, adapter: str, path: Path, run: Run[Any], cleanup: contextlib.ExitStack):
        self.datadir = DataDir.open(path, create=True)
        cleanup.callback(lambda: run(self.datadir.close()))
        master, signer = self.datadir.master_key(), self.datadir.cluster_key()
        self.storage = StorageService(self.datadir)
        processor = ProcessorService(master)
        cleanup.callback(lambda: run(processor.close()))
        storage: Storage = self.storage
        if adapter == "grpc":
            storage = _over_grpc(run, cleanup, StorageClient, storage=self.storage)
            processor = _over_grpc(run, cleanup, ProcessorClient, processor=processor)
        manager = PipelineManager(
            storage,
            processor,
            master=master,
            signer=signer,
            anchor=LocalAnchorLog(path / "anchors.jsonl", signer),
        )
        run(manager.start())
        cleanup.callback(lambda: run(manager.close()))
        self.pipeline: Pipeline = manager
        recorder_local = RecorderService(manager)
        if adapter == "grpc":
            self.pipeline = _over_grpc(run, cleanup, PipelineClient, pipeline=manager)
            recorder_local = RecorderService(
                _over_grpc(run, cleanup, PipelineClient, pipeline=manager)
            )
        cleanup.callback(lambda: run(recorder_local.close()))
        self.recorder: Recorder = recorder_local
        if adapter == "grpc":
            self.recorder = _over_grpc(run, cleanup, RecorderClient, recorder=recorder_local)
        manager.attach_recorder(self.recorder)

    async def finished(self, session_id: str, timeout: float = 20.0) -> SessionRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            record = await self.storage.get_session(session_id)
            if record.status in ("completed", "interrupted", "failed"):
                return record
            await asyncio.sleep(0.05)
        raise AssertionError(f"session {session_id} did not finish within {timeout} s")


@pytest.fixture(params=ADAPTERS)
def rig(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[PipelineRig]:
    with contextlib.ExitStack() as cleanup:
        yield PipelineRig(request.param, tmp_path / "data", run, cleanup)


INGEST: dict[str, Any] = {
    "name": "contract",
    "source": "ingest",
    "recording_config": {
        "fps": 20,
        "width": 64,
        "height": 48,
        "quality": "medium",
        "chunk_duration_s": 0.25,
    },
}


def test_pipeline_a_new_session_has_a_wrapped_key_and_no_password_in_clear(rig, run):
    spec = {**INGEST, "session_id": "ses_a", "project": "finance", "tags": ["sox"]}
    created = run(rig.pipeline.create_session(spec, password="hunter2-\u00e9"))
    assert (created.session_id, created.status, created.name) == ("ses_a", "created", "contract")
    assert (created.project, created.tags) == ("finance", ("sox",))
    assert created.key_id is not None
    assert run(rig.storage.get_session("ses_a")) == created
    assert "hunter2" not in json.dumps(dict(created.config))
    assert run(rig.storage.get_wrapped_key(created.key_id)).session_id == "ses_a"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({**INGEST, "name": " "}, InvalidConfigError),
        ({**INGEST, "recording_config": {"quality": "lossless"}}, InvalidConfigError),
        ({**INGEST, "session_id": "../escape"}, StorageError),
    ],
    ids=["empty-name", "unknown-quality", "unsafe-id"],
)
def test_pipeline_a_bad_spec_is_refused_and_nothing_is_stored(rig, run, spec, error):
    with pytest.raises(error):
        run(rig.pipeline.create_session(spec))
    assert run(rig.storage.list_sessions()).total == 0


def test_pipeline_a_second_session_with_the_same_id_is_refused(rig, run):
    run(rig.pipeline.create_session({**INGEST, "session_id": "ses_a"}))
    with pytest.raises(AlreadyExistsError):
        run(rig.pipeline.create_session({**INGEST, "session_id": "ses_a", "name": "again"}))
    assert run(rig.storage.get_session("ses_a")).name == "contract"


def test_pipeline_an_ingest_session_goes_through_every_state_and_verifies(rig, run):
    async def scenario() -> tuple[list[str], SessionRecord]:
        sid = (await rig.pipeline.create_session(INGEST)).session_id
        states = [(await rig.pipeline.start_session(sid)).status]
        await push_for(rig.recorder, sid, 0.6)
        states.append((await rig.pipeline.pause_session(sid)).status)
        states.append((await rig.pipeline.resume_session(sid)).status)
        await push_for(rig.recorder, sid, 0.4)
        await rig.pipeline.stop_session(sid)
        return states, await rig.finished(sid)

    states, final = run(scenario())
    assert states == ["recording", "paused", "recording"]
    assert final.status == "completed", final.status_reason
    assert final.chunk_count >= 2
    sid = final.session_id
    assert run(rig.storage.chunk_sequences(sid)) == list(range(final.chunk_count))
    loaded = run(load_manifest(rig.datadir, sid))
    report = verify_evidence(StoredEvidence(rig.datadir, loaded))
    assert report.ok, report.failures
    assert run(rig.pipeline.pipeline_status())["active_sessions"] == []


def test_pipeline_invalid_transitions_are_refused_with_their_classes(rig, run):
    sid = run(rig.pipeline.create_session(INGEST)).session_id
    for call in (
        rig.pipeline.pause_session,
        rig.pipeline.stop_session,
        rig.pipeline.resume_session,
    ):
        with pytest.raises(NotRecordingError):
            run(call(sid))
    for call in (rig.pipeline.start_session, rig.pipeline.delete_session):
        with pytest.raises(NotFoundError):
            run(call("ses_missing"))
    run(rig.pipeline.start_session(sid))
    with pytest.raises(PipelineError) as caught:
        run(rig.pipeline.start_session(sid))
    assert type(caught.value) is PipelineError
    assert caught.value.details == {"status": "recording", "target": "starting"}
    with pytest.raises(PipelineError):
        run(rig.pipeline.delete_session(sid))
    run(rig.pipeline.stop_session(sid))
    run(rig.finished(sid))
    run(rig.pipeline.delete_session(sid))
    with pytest.raises(NotFoundError):
        run(rig.storage.get_session(sid))


def test_pipeline_update_changes_only_the_editable_fields(rig, run):
    sid = run(rig.pipeline.create_session(INGEST)).session_id
    updated = run(
        rig.pipeline.update_session(
            sid, {"name": "renamed", "tags": ["a", "b"], "metadata": {"ticket": 42}}
        )
    )
    assert (updated.name, updated.tags) == ("renamed", ("a", "b"))
    assert updated.config["metadata"] == {"ticket": 42}
    assert updated == run(rig.storage.get_session(sid))
    with pytest.raises(InvalidConfigError) as caught:
        run(rig.pipeline.update_session(sid, {"status": "completed"}))
    assert caught.value.details == {"fields": ["status"]}
    assert run(rig.storage.get_session(sid)).status == "created"


def test_pipeline_a_chunk_for_a_session_not_recording_is_refused(rig, run):
    raw = RawChunk(0, 0, 1, 1, 1, 0, 0, 64, 48, 64 * 48 * 3, b"plaintext")
    with pytest.raises(NotRecordingError):
        run(rig.pipeline.submit_chunk("ses_x", raw))


def test_pipeline_pausing_the_pipeline_shows_in_its_status(rig, run):
    status = run(rig.pipeline.pipeline_status())
    assert status["state"] == "running"
    assert isinstance(status["queue_capacity"], int)
    run(rig.pipeline.pause_pipeline())
    assert run(rig.pipeline.pipeline_status())["state"] == "paused"
    run(rig.pipeline.resume_pipeline())
    assert run(rig.pipeline.pipeline_status())["state"] == "running"
