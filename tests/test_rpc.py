"""The gRPC adapter itself (:mod:`lucid_sessions.rpc`).

Generated code in step with the .proto files; protobuf kept inside the adapter; clients
shaped exactly like their Protocols; every error class crossing with its status code;
wire failures as Unavailable; streaming and 64 MiB chunks; the health service; TLS; and
the wire mapping of every Recorder and Pipeline method, checked with small fakes that
record their calls (they exercise the adapter, not the components).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import datetime
import inspect
import ipaddress
import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.servers import free_port
from tests.test_metadata_store import chunk, full_session, session

import lucid_sessions.errors as errors_module
from lucid_sessions.cluster.interfaces import (
    CaptureSpec,
    Pipeline,
    Processor,
    Recorder,
    RecorderStatus,
    RecordingEnd,
    Storage,
    StorageHealth,
    Unavailable,
)
from lucid_sessions.errors import (
    ChunkNotFoundError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    PipelineError,
    RateLimitError,
    StorageError,
)
from lucid_sessions.recording.chunker import RawChunk
from lucid_sessions.rpc import (
    PipelineClient,
    ProcessorClient,
    RecorderClient,
    StorageClient,
    serve,
)
from lucid_sessions.rpc.errors import ERROR_METADATA_KEY, error_from_rpc
from lucid_sessions.rpc.recorder import frame_pixels
from lucid_sessions.rpc.storage import PIECE_BYTES
from lucid_sessions.storage.metadata import ChunkRecord, SessionRecord

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "lucid_sessions"
PROTOS = PACKAGE / "rpc" / "protos"


@contextlib.asynccontextmanager
async def served(client_class: type, client_args: Mapping[str, Any] | None = None, **component):
    """A client of a fresh server on 127.0.0.1 serving ``component``; both always stop."""
    server, port = await serve(component, host="127.0.0.1", port=0)
    try:
        client = client_class(f"127.0.0.1:{port}", **(client_args or {}))
        try:
            yield client
        finally:
            await client.close()
    finally:
        await server.stop(0)


# Generated code and the package boundary --------------------------------------------------


def test_the_committed_generated_code_is_what_the_protos_generate(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-protos"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh_dir = tmp_path / "lucid_sessions" / "rpc" / "protos"
    fresh = {p.name: p.read_bytes() for p in fresh_dir.iterdir()}
    committed = {p.name: p.read_bytes() for p in PROTOS.glob("*_pb2*.py*")}
    assert sorted(fresh) == sorted(committed)
    assert len(committed) == 3 * len(list(PROTOS.glob("*.proto")))
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"run scripts/gen-protos and commit the result: {stale} differ"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


# The TRON backend is the adapter to TRON's own wire format (its transactions are
# protobuf messages); our protos stay in rpc/ all the same.
TRON_ADAPTER = PACKAGE / "anchoring" / "tron.py"


def test_no_module_outside_the_adapter_imports_protobuf_types():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "rpc") in path.parents:
            continue
        if path == TRON_ADAPTER:
            assert not [n for n in _imports(path) if n.startswith("lucid_sessions.rpc")]
            continue
        for name in _imports(path):
            if (
                name.startswith(("google.protobuf", "lucid_sessions.rpc.protos"))
                or name.endswith(("_pb2", "_pb2_grpc"))
                or name.startswith("lucid_sessions.rpc.messages")
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert offenders == []


def _protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    methods = {}
    for name in dir(protocol):
        if name.startswith("_"):
            continue
        member = getattr(protocol, name)
        if inspect.isfunction(member):
            methods[name] = inspect.signature(member)
    return methods


@pytest.mark.parametrize(
    ("client_class", "protocol"),
    [
        (StorageClient, Storage),
        (ProcessorClient, Processor),
        (RecorderClient, Recorder),
        (PipelineClient, Pipeline),
    ],
)
def test_each_client_has_every_protocol_method_with_the_same_signature(client_class, protocol):
    wanted = _protocol_methods(protocol)
    assert wanted, protocol
    for name, signature in wanted.items():
        method = getattr(client_class, name, None)
        assert method is not None, f"{client_class.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == signature, name


# Errors across the wire -------------------------------------------------------------------


class FailingStorage:
    """``get_session`` raises whatever it is given."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def get_session(self, session_id: str) -> SessionRecord:
        raise self.error


EXPECTED_STATUS = {
    "LucidError": grpc.StatusCode.INTERNAL,
    "NotFoundError": grpc.StatusCode.NOT_FOUND,
    "InvalidConfigError": grpc.StatusCode.INVALID_ARGUMENT,
    "AlreadyExistsError": grpc.StatusCode.ALREADY_EXISTS,
    "NotRecordingError": grpc.StatusCode.FAILED_PRECONDITION,
    "ChunkNotFoundError": grpc.StatusCode.NOT_FOUND,
    "PipelineError": grpc.StatusCode.FAILED_PRECONDITION,
    "CaptureError": grpc.StatusCode.FAILED_PRECONDITION,
    "CaptureConnectionError": grpc.StatusCode.FAILED_PRECONDITION,
    "CaptureAuthError": grpc.StatusCode.FAILED_PRECONDITION,
    "StorageError": grpc.StatusCode.INTERNAL,
    "FormatError": grpc.StatusCode.INVALID_ARGUMENT,
    "CompressionError": grpc.StatusCode.INTERNAL,
    "EncryptionError": grpc.StatusCode.INTERNAL,
    "WrongKeyError": grpc.StatusCode.FAILED_PRECONDITION,
    "AuthenticationError": grpc.StatusCode.DATA_LOSS,
    "RateLimitError": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UnauthenticatedError": grpc.StatusCode.UNAUTHENTICATED,
    "ForbiddenError": grpc.StatusCode.PERMISSION_DENIED,
    "Unavailable": grpc.StatusCode.UNAVAILABLE,
}

ERROR_CLASSES = [getattr(errors_module, name) for name in errors_module.__all__] + [Unavailable]


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_lucid_error_crosses_as_its_class_with_message_details_and_status(error_class):
    details = {"session_id": "ses_é", "nested": {"n": [1, 2.5, None]}, "count": 10**12}
    message = f"{error_class.__name__}: sécurité — line one\nline two"

    async def call() -> BaseException:
        async with served(
            StorageClient, storage=FailingStorage(error_class(message, details=details))
        ) as client:
            with pytest.raises(LucidError) as caught:
                await client.get_session("ses_a")
            return caught.value

    error = asyncio.run(call())
    assert type(error) is error_class
    assert error.message == message
    assert str(error) == message
    assert error.details == details
    assert error.code == error_class.code
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert error.__cause__.code() == EXPECTED_STATUS[error_class.__name__]


def test_a_huge_error_still_crosses_as_its_class_cut_to_fit_the_metadata_limit():
    message = "\u00e9\u4e2d" * 50_000
    error = StorageError(message, details={"blob": "x" * 100_000})

    async def call() -> BaseException:
        async with served(StorageClient, storage=FailingStorage(error)) as client:
            with pytest.raises(LucidError) as caught:
                await client.get_session("ses_a")
            return caught.value

    got = asyncio.run(call())
    assert type(got) is StorageError
    assert got.details == {"truncated": True}
    assert 100 < len(got.message) < len(message)
    assert message.startswith(got.message)


class RetryLater(RateLimitError):
    """An error class whose constructor does not take (message, details)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry in {seconds} s", details={"retry_after": seconds})


def test_an_error_with_its_own_constructor_still_crosses_as_its_class():
    async def call() -> BaseException:
        async with served(StorageClient, storage=FailingStorage(RetryLater(1.5))) as client:
            with pytest.raises(RateLimitError) as caught:
                await client.get_session("ses_a")
            return caught.value

    error = asyncio.run(call())
    assert type(error) is RetryLater
    assert (error.message, error.details) == ("retry in 1.5 s", {"retry_after": 1.5})


def _rpc_error(
    code: grpc.StatusCode, payload: bytes | None, text: str = ""
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if payload is not None:
        trailing.add(ERROR_METADATA_KEY, payload)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=text)


def test_an_error_class_the_client_does_not_know_comes_back_as_its_nearest_known_base():
    payload = json.dumps(
        {
            "type": "elsewhere.SessionGoneError",
            "bases": ["elsewhere.GoneError", "lucid_sessions.errors.NotFoundError"],
            "message": "gone",
            "details": {"id": "ses_a"},
        }
    ).encode()
    error = error_from_rpc(_rpc_error(grpc.StatusCode.NOT_FOUND, payload), "/lucid.v1.Storage/X")
    assert type(error) is NotFoundError
    assert (error.message, error.details) == ("gone", {"id": "ses_a"})


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable),
        (grpc.StatusCode.CANCELLED, Unavailable),
        (grpc.StatusCode.INTERNAL, PipelineError),
        (grpc.StatusCode.UNIMPLEMENTED, PipelineError),
        (grpc.StatusCode.NOT_FOUND, PipelineError),
    ],
)
def test_a_status_without_a_lucid_error_maps_by_code(code, expected):
    for payload in (None, b"{not json", b'{"message": "no type"}'):
        error = error_from_rpc(_rpc_error(code, payload, "text"), "/lucid.v1.Storage/GetSession")
        assert type(error) is expected
        assert error.details == {"method": "/lucid.v1.Storage/GetSession", "grpc_status": code.name}


def test_an_unexpected_exception_crosses_as_internal_without_its_message_or_traceback(caplog):
    secret = "password=hunter2 in /srv/secret/path"

    async def call() -> BaseException:
        async with served(StorageClient, storage=FailingStorage(RuntimeError(secret))) as client:
            with pytest.raises(LucidError) as caught:
                await client.get_session("ses_a")
            return caught.value

    with caplog.at_level(logging.ERROR, logger="lucid_sessions.rpc.errors"):
        error = asyncio.run(call())
    assert type(error) is PipelineError
    assert error.__cause__.code() == grpc.StatusCode.INTERNAL
    text = f"{error.message} {error.details} {error.__cause__.details()}"
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    assert "lucid.v1.Storage/GetSession" in error.message
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and logged[0].method == "lucid.v1.Storage/GetSession"


def test_an_unreachable_peer_is_unavailable():
    async def call() -> None:
        async with StorageClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
            await client.get_session("ses_a")

    with pytest.raises(Unavailable) as caught:
        asyncio.run(call())
    assert caught.value.details["grpc_status"] == "UNAVAILABLE"
    assert caught.value.details["method"] == "/lucid.v1.Storage/GetSession"


class SlowStorage:
    async def get_session(self, session_id: str) -> SessionRecord:
        await asyncio.sleep(10)
        raise AssertionError("not reached")


def test_a_missed_deadline_is_unavailable():
    async def call() -> None:
        async with served(StorageClient, {"timeout": 0.2}, storage=SlowStorage()) as client:
            await client.get_session("ses_a")

    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        asyncio.run(call())
    assert caught.value.details["grpc_status"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 5


def test_a_stopped_server_is_unavailable_to_its_clients():
    async def call() -> None:
        server, _ = await serve({"storage": FakeStorage()})
        try:
            client = StorageClient(f"127.0.0.1:{server.port}", timeout=5)
            try:
                assert (await client.health()).ok
                await server.stop(0)
                with pytest.raises(Unavailable):
                    await client.health()
            finally:
                await client.close()
        finally:
            await server.stop(0)

    asyncio.run(call())


# Storage: chunk bytes, streamed and large ------------------------------------------------


class FakeStorage:
    """Chunk bytes in memory; enough of Storage for the byte paths."""

    def __init__(self) -> None:
        self.chunks: dict[tuple[str, int], bytes] = {}

    async def store_chunk(self, record: ChunkRecord, data: bytes) -> None:
        self.chunks[record.session_id, record.sequence] = data

    async def read_chunk(self, session_id: str, sequence: int) -> bytes:
        try:
            return self.chunks[session_id, sequence]
        except KeyError:
            raise ChunkNotFoundError(f"chunk {sequence} of session {session_id}") from None

    async def health(self) -> StorageHealth:
        return StorageHealth(True, 1, 2, "fake")


@pytest.mark.parametrize(
    ("size", "pieces"),
    [
        (0, [0]),
        (1, [1]),
        (PIECE_BYTES, [PIECE_BYTES]),
        (2 * PIECE_BYTES + PIECE_BYTES // 2, [PIECE_BYTES, PIECE_BYTES, PIECE_BYTES // 2]),
    ],
)
def test_a_chunk_streams_in_pieces_of_at_most_one_mib(size, pieces):
    fake = FakeStorage()
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    fake.chunks["ses_a", 0] = data

    async def call() -> tuple[list[bytes], bytes]:
        async with served(StorageClient, storage=fake) as client:
            streamed = [piece async for piece in client.stream_chunk("ses_a", 0)]
            return streamed, await client.read_chunk("ses_a", 0)

    streamed, whole = asyncio.run(call())
    assert [len(p) for p in streamed] == pieces
    assert b"".join(streamed) == whole == data


def test_a_streamed_read_of_a_missing_chunk_raises_before_any_piece():
    async def call() -> list[bytes]:
        received: list[bytes] = []
        async with served(StorageClient, storage=FakeStorage()) as client:
            with pytest.raises(ChunkNotFoundError):
                async for piece in client.stream_chunk("ses_a", 4):
                    received.append(piece)
        return received

    assert asyncio.run(call()) == []


def test_a_64_mib_chunk_crosses_both_ways():
    fake = FakeStorage()
    data = np.random.default_rng(64).integers(0, 256, 64 * 1024 * 1024, dtype=np.uint8).tobytes()

    async def call() -> None:
        # Compared here, not returned: asyncio.Runner reprs its task (result included) on
        # the way out, and the repr of 64 MiB of bytes takes seconds.
        async with served(StorageClient, storage=fake) as client:
            await client.store_chunk(chunk("ses_a", 0), data)
            assert fake.chunks["ses_a", 0] == data
            assert await client.read_chunk("ses_a", 0) == data

    asyncio.run(call())


@pytest.mark.parametrize("first_has_record", [False, None], ids=["no-record", "empty-stream"])
def test_a_store_stream_without_a_leading_record_is_invalid(first_has_record):
    from lucid_sessions.rpc.protos import storage_pb2, storage_pb2_grpc

    fake = FakeStorage()
    pieces = [] if first_has_record is None else [storage_pb2.StoreChunkRequest(data=b"x")]

    async def call() -> grpc.aio.AioRpcError:
        server, port = await serve({"storage": fake})
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = storage_pb2_grpc.StorageStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.StoreChunk(iter(pieces), timeout=5)
                return caught.value
        finally:
            await server.stop(0)

    error = asyncio.run(call())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert type(error_from_rpc(error, "StoreChunk")) is InvalidConfigError
    assert fake.chunks == {}


# Clients, channels and servers -------------------------------------------------------------


def test_a_client_on_a_given_channel_leaves_the_channel_open():
    async def call() -> None:
        server, _ = await serve({"storage": FakeStorage()})
        try:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            try:
                first = StorageClient(channel)
                assert (await first.health()).metadata == "fake"
                await first.close()
                second = StorageClient(channel)
                assert (await second.health()).metadata == "fake"
                with pytest.raises(ValueError):
                    StorageClient(channel, options=[("grpc.lb_policy_name", "pick_first")])
            finally:
                await channel.close()
        finally:
            await server.stop(0)

    asyncio.run(call())


def test_a_second_server_on_a_port_in_use_is_refused():
    async def call() -> None:
        first, _ = await serve({"storage": FakeStorage()})
        try:
            with pytest.raises(InvalidConfigError) as caught:
                await serve({"storage": FakeStorage()}, port=first.port)
            assert caught.value.details == {"address": f"127.0.0.1:{first.port}"}
        finally:
            await first.stop(0)

    asyncio.run(call())


@pytest.mark.parametrize("components", [{}, {"storage": object(), "api": object()}])
def test_serving_nothing_or_an_unknown_component_is_a_programming_error(components):
    with pytest.raises(ValueError):
        asyncio.run(serve(components))


async def _health(port: int, service: str, credentials: Any = None) -> int:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status
    finally:
        await channel.close()


def test_the_health_service_answers_serving_for_each_service_served():
    names = ["lucid.v1.Storage", "lucid.v1.Processor", "lucid.v1.Recorder", "lucid.v1.Pipeline"]

    async def call() -> None:
        server, port = await serve(
            {
                "storage": FakeStorage(),
                "processor": object(),
                "recorder": RecordingRecorder(),
                "pipeline": RecordingPipeline(),
            }
        )
        try:
            assert server.services == tuple(names)
            for name in [*names, ""]:
                assert await _health(port, name) == health_pb2.HealthCheckResponse.SERVING
        finally:
            await server.stop(0)

        only, _ = await serve({"storage": FakeStorage()})
        try:
            assert await _health(only.port, "lucid.v1.Storage") == (
                health_pb2.HealthCheckResponse.SERVING
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(only.port, "lucid.v1.Processor")
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await only.stop(0)

    asyncio.run(call())


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lucid-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_a_server_with_credentials_speaks_tls_only():
    key_pem, cert_pem = _self_signed()

    async def call() -> None:
        server, _ = await serve(
            {"storage": FakeStorage()},
            server_credentials=grpc.ssl_server_credentials([(key_pem, cert_pem)]),
        )
        try:
            tls = grpc.ssl_channel_credentials(root_certificates=cert_pem)
            async with StorageClient(f"127.0.0.1:{server.port}", credentials=tls) as client:
                assert (await client.health()).metadata == "fake"
            assert await _health(server.port, "lucid.v1.Storage", tls) == (
                health_pb2.HealthCheckResponse.SERVING
            )
            async with StorageClient(f"127.0.0.1:{server.port}", timeout=5) as plain:
                with pytest.raises(Unavailable):
                    await plain.health()
        finally:
            await server.stop(0)

    asyncio.run(call())


# Recorder: every method across the wire ---------------------------------------------------


class RecordingRecorder:
    """A Recorder that records its calls and answers a fixed status."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def start(self, session_id: str, spec: CaptureSpec) -> None:
        self.calls.append(("start", session_id, spec))

    async def stop(self, session_id: str) -> None:
        self.calls.append(("stop", session_id))

    async def pause(self, session_id: str) -> None:
        self.calls.append(("pause", session_id))

    async def resume(self, session_id: str) -> None:
        self.calls.append(("resume", session_id))

    async def status(self, session_id: str) -> RecorderStatus:
        self.calls.append(("status", session_id))
        return RecorderStatus(session_id, "paused", 120, 3, 40, 9.875, 2)

    async def push_frame(self, session_id: str, timestamp_us: int | None, pixels: Any) -> None:
        self.calls.append(("push_frame", session_id, timestamp_us, np.array(pixels)))


def test_every_recorder_method_crosses_with_its_arguments_and_result():
    fake = RecordingRecorder()
    rdp = CaptureSpec(
        source="rdp",
        fps=12.5,
        width=1920,
        height=1080,
        settings={"host": "rdp.example", "port": 3389, "ignore_cert": False, "domain": None},
        password="p\u00e4ss w\u00f6rd",
        max_duration_us=None,
        max_bytes=8 * 1024 * 1024,
    )
    ingest = CaptureSpec(source="ingest", fps=1.0, width=64, height=48, max_duration_us=0)

    async def call() -> RecorderStatus:
        async with served(RecorderClient, recorder=fake) as client:
            await client.start("ses_a", rdp)
            await client.start("ses_b", ingest)
            await client.pause("ses_a")
            await client.resume("ses_a")
            status = await client.status("ses_a")
            await client.stop("ses_a")
            return status

    status = asyncio.run(call())
    assert status == RecorderStatus("ses_a", "paused", 120, 3, 40, 9.875, 2)
    assert fake.calls == [
        ("start", "ses_a", rdp),
        ("start", "ses_b", ingest),
        ("pause", "ses_a"),
        ("resume", "ses_a"),
        ("status", "ses_a"),
        ("stop", "ses_a"),
    ]
    assert fake.calls[0][2].password == "p\u00e4ss w\u00f6rd"
    assert fake.calls[1][2].max_duration_us == 0  # zero is not None


def test_pushed_frames_cross_as_exact_pixels_with_their_timestamps():
    fake = RecordingRecorder()
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    strided = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)[:, ::2]  # not contiguous

    async def call() -> None:
        async with served(RecorderClient, recorder=fake) as client:
            await client.push_frame("ses_a", None, frame)
            await client.push_frame("ses_a", 0, frame)
            await client.push_frame("ses_a", 2**40, strided)
            with pytest.raises(InvalidConfigError):
                await client.push_frame("ses_a", 1, frame.astype(np.uint16))
            with pytest.raises(InvalidConfigError):
                await client.push_frame("ses_a", 1, frame[:, :, 0])

    asyncio.run(call())
    assert [c[2] for c in fake.calls] == [None, 0, 2**40]
    for call_, expected in zip(fake.calls, [frame, frame, strided], strict=True):
        assert call_[3].dtype == np.uint8
        assert call_[3].shape == expected.shape
        assert np.array_equal(call_[3], expected)


def test_frame_bytes_of_the_wrong_length_are_refused():
    assert frame_pixels(2, 1, bytes(6)).shape == (1, 2, 3)
    for width, height, data in [(2, 1, bytes(5)), (0, 1, b""), (2, 2, bytes(6))]:
        with pytest.raises(InvalidConfigError):
            frame_pixels(width, height, data)


# Pipeline: every method across the wire ---------------------------------------------------


class RecordingPipeline:
    """A Pipeline that records its calls and answers from canned records."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def _session(self, session_id: str, status: str) -> SessionRecord:
        return session(session_id, status=status, config={"recording_config": {"fps": 10}})

    async def create_session(self, spec: Mapping[str, Any], *, password: str = "") -> SessionRecord:
        self.calls.append(("create_session", dict(spec), password))
        return full_session(spec["session_id"])

    async def start_session(self, session_id: str) -> SessionRecord:
        self.calls.append(("start_session", session_id))
        return self._session(session_id, "recording")

    async def stop_session(self, session_id: str) -> SessionRecord:
        self.calls.append(("stop_session", session_id))
        return self._session(session_id, "stopped")

    async def pause_session(self, session_id: str) -> SessionRecord:
        self.calls.append(("pause_session", session_id))
        return self._session(session_id, "paused")

    async def resume_session(self, session_id: str) -> SessionRecord:
        self.calls.append(("resume_session", session_id))
        return self._session(session_id, "recording")

    async def update_session(self, session_id: str, changes: Mapping[str, Any]) -> SessionRecord:
        self.calls.append(("update_session", session_id, dict(changes)))
        return self._session(session_id, "recording")

    async def delete_session(self, session_id: str) -> None:
        self.calls.append(("delete_session", session_id))

    async def submit_chunk(self, session_id: str, raw: RawChunk) -> None:
        self.calls.append(("submit_chunk", session_id, raw))

    async def recording_ended(self, end: RecordingEnd) -> None:
        self.calls.append(("recording_ended", end))

    async def pipeline_status(self) -> Mapping[str, Any]:
        self.calls.append(("pipeline_status",))
        return {"state": "running", "queue_depth": 2, "active_sessions": ["ses_a"], "x": None}

    async def pause_pipeline(self) -> None:
        self.calls.append(("pause_pipeline",))

    async def resume_pipeline(self) -> None:
        self.calls.append(("resume_pipeline",))


def test_every_pipeline_method_crosses_with_its_arguments_and_result():
    fake = RecordingPipeline()
    spec = {
        "session_id": "ses_a",
        "name": "Quarterly close",
        "tags": ["audit"],
        "recording_config": {"fps": 2.5, "width": 1280, "height": 720, "quality": "high"},
        "rdp_config": {"host": "rdp.example", "port": 3389},
        "note": None,
    }
    raw = RawChunk(3, 1_000, 2_000_000, 20, 1, 5, 2, 1280, 720, 55_296_000, b"\x00\xff" * 999)
    ended = RecordingEnd("ses_a", True, "source lost", 3, {"frames_captured": 20, "fps": 9.5})
    clean = RecordingEnd("ses_b", False, None, -1)

    async def call() -> list[Any]:
        async with served(PipelineClient, pipeline=fake) as client:
            return [
                await client.create_session(spec, password="s3cret"),
                await client.start_session("ses_a"),
                await client.pause_session("ses_a"),
                await client.resume_session("ses_a"),
                await client.update_session("ses_a", {"tags": ["a", "b"], "metadata": {"k": 1}}),
                await client.submit_chunk("ses_a", raw),
                await client.recording_ended(ended),
                await client.recording_ended(clean),
                await client.stop_session("ses_a"),
                await client.pipeline_status(),
                await client.pause_pipeline(),
                await client.resume_pipeline(),
                await client.delete_session("ses_a"),
            ]

    results = asyncio.run(call())
    assert results[0] == full_session("ses_a")
    assert [r.status for r in results[1:4]] == ["recording", "paused", "recording"]
    assert results[4] == fake._session("ses_a", "recording")
    assert results[8].status == "stopped"
    assert results[9] == {
        "state": "running",
        "queue_depth": 2,
        "active_sessions": ["ses_a"],
        "x": None,
    }
    assert [results[i] for i in (5, 6, 7, 10, 11, 12)] == [None] * 6
    assert fake.calls == [
        ("create_session", spec, "s3cret"),
        ("start_session", "ses_a"),
        ("pause_session", "ses_a"),
        ("resume_session", "ses_a"),
        ("update_session", "ses_a", {"tags": ["a", "b"], "metadata": {"k": 1}}),
        ("submit_chunk", "ses_a", raw),
        ("recording_ended", ended),
        ("recording_ended", clean),
        ("stop_session", "ses_a"),
        ("pipeline_status",),
        ("pause_pipeline",),
        ("resume_pipeline",),
        ("delete_session", "ses_a"),
    ]
