"""Fuzzing every parser of stored or supplied bytes: hostile input gives a clear error.

Each parser is fed random bytes and mutated valid input (bits flipped, bytes set, inserted,
deleted, truncated; JSON fields deleted or retyped; tar members replaced, dropped,
duplicated or given odd PAX headers). Whatever the input, the parser either returns or
raises the :class:`~lucid_sessions.errors.LucidError` subclass its docstring names, never
another exception, and every example finishes within a time limit (no hang).
Verification of a bundle that opens never raises at all: it reports failures.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import signal
import struct
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lucid_sessions.archive.bundle import Bundle, ExportRange, export_to_file
from lucid_sessions.archive.keys import load_data_key
from lucid_sessions.archive.reader import read_data_key_file, write_data_key_file
from lucid_sessions.archive.service import import_frames
from lucid_sessions.archive.verify import Report, summary_lines, verify_evidence
from lucid_sessions.chunkfile import open_chunk, parse_header, seal_chunk
from lucid_sessions.crypto import (
    DataKey,
    MasterKey,
    load_public_key,
    unwrap_data_key,
    wrap_data_key,
)
from lucid_sessions.errors import (
    AuthenticationError,
    CompressionError,
    FormatError,
    LucidError,
    WrongKeyError,
)
from lucid_sessions.manifest import Manifest, ManifestChunk, parse_manifest
from lucid_sessions.recording.codec import ChunkDecoder, ChunkEncoder, scan_records
from lucid_sessions.storage.datadir import DataDir

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLE_TIME_LIMIT = 10.0
"""Seconds one example may take before it counts as a hang."""

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
"""Nesting deeper than Python's recursion limit: ``json.loads`` raises RecursionError."""


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float = EXAMPLE_TIME_LIMIT) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds`` instead of hanging the suite."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"parser still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(parse: Callable[[], Any], *allowed: type[LucidError]) -> Any:
    """``parse()``'s result, or None when it raised one of ``allowed``; anything else
    (another exception, or running past the time limit) propagates and fails the test."""
    with time_limit():
        try:
            return parse()
        except allowed:
            return None


# Strategies ------------------------------------------------------------------------------

INTERESTING_U32 = (0, 1, 2, 3, 8, 17, 255, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_ops: int = 3) -> bytes:
    """``data`` after 1..max_ops edits: flip a bit, set a byte or a u32, insert, delete or
    truncate."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "byte", "u32", "insert", "delete", "truncate")))
        if not out:
            op = "insert"
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            out[pos] = draw(st.integers(0, 255))
        elif op == "u32":
            out[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING_U32)))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 16))]
        else:
            del out[pos:]
    return bytes(out)


def changed(original: bytes) -> st.SearchStrategy[bytes]:
    """Mutations of ``original`` that differ from it."""
    return mutated(original).filter(lambda b: b != original)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 0, 2**63, 10**30, -(10**30)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "00", "ab" * 32, "zz" * 32, "ab " * 20, "blake3", "sha256"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a JSON value, depth first."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((value, key))
            found += _slots(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            found += _slots(item)
    return found


@st.composite
def json_edited(draw: st.DrawFn, original: Any) -> Any:
    """``original`` with 1..3 fields anywhere deleted, retyped or added."""
    value = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(value)
        if not slots:
            return draw(json_values)
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(("delete", "retype", "add")))
        if action == "delete":
            del container[key]
        elif action == "retype":
            container[key] = draw(json_values)
        elif isinstance(container, dict):
            container[draw(st.text(max_size=8))] = draw(json_values)
        else:
            container.append(draw(json_values))
    return value


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


# Frame codec -----------------------------------------------------------------------------


@st.composite
def encoded_chunks(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, np.ndarray]]]:
    """A valid frame chunk of 1..5 small frames (keyframes, deltas, unchanged, resizes)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 24))
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8)]
    for _ in range(draw(st.integers(0, 4))):
        change = draw(st.sampled_from(("same", "patch", "resize")))
        frame = frames[-1].copy()
        if change == "patch":
            y, x = int(rng.integers(0, frame.shape[0])), int(rng.integers(0, frame.shape[1]))
            frame[y : y + 5, x : x + 5] = rng.integers(0, 256, 3, dtype=np.uint8)
        elif change == "resize":
            size = (int(rng.integers(1, 24)), int(rng.integers(1, 40)), 3)
            frame = rng.integers(0, 256, size, dtype=np.uint8)
        frames.append(frame)
    encoder = ChunkEncoder(tile_size=draw(st.sampled_from((8, 16))))
    timestamps, now = [], 0
    for frame in frames:
        now += draw(st.sampled_from((0, 1, 100_000, 2**40)))
        encoder.append(now, frame)
        timestamps.append(now)
    return encoder.finish(), list(zip(timestamps, frames, strict=True))


def _decode_all(data: bytes) -> list[Any]:
    scan_records(data)
    return list(ChunkDecoder(data).frames())


@FUZZ
@given(st.binary(max_size=512))
@example(b"LSFC\x01\x00\x08\x00")
@example(b"LSFC\x01\x00\x08\x00" + b"\x02" + bytes(8) + b"\x04\x00\x00\x00" + bytes(4))
def test_random_bytes_never_break_the_frame_decoder(data):
    outcome(lambda: _decode_all(data), FormatError)


@FUZZ
@given(st.binary(max_size=512))
def test_random_records_after_a_valid_header_never_break_the_frame_decoder(body):
    data = b"LSFC\x01\x00\x08\x00" + body
    outcome(lambda: _decode_all(data), FormatError)


@FUZZ
@given(st.data())
def test_mutated_frame_chunks_decode_or_raise_format_error(data):
    chunk, frames = data.draw(encoded_chunks())
    decoded = _decode_all(chunk)
    assert [(f.timestamp_us, f.pixels.tobytes()) for f in decoded] == [
        (ts, px.tobytes()) for ts, px in frames
    ]
    damaged = data.draw(changed(chunk))
    outcome(lambda: _decode_all(damaged), FormatError)
    outcome(lambda: ChunkDecoder(damaged).frame_at(frames[-1][0]), FormatError)


@pytest.mark.parametrize("indices", [(1, 0), (5, 0), (0, 0)], ids=str)
def test_delta_tile_indices_not_strictly_ascending_are_refused(indices):
    first = np.zeros((8, 16, 3), dtype=np.uint8)
    encoder = ChunkEncoder(tile_size=8)
    encoder.append(0, first)
    encoder.append(1, first + 1)  # both 8x8 tiles change: a delta listing tiles 0 and 1
    chunk = bytearray(encoder.finish())
    delta = scan_records(bytes(chunk))[1][1]
    assert struct.unpack_from("<III", chunk, delta.offset) == (2, 0, 1)
    struct.pack_into("<II", chunk, delta.offset + 4, *indices)
    with pytest.raises(FormatError, match="tile indices"):
        list(ChunkDecoder(bytes(chunk)).frames())


# Stored chunk container ------------------------------------------------------------------

CHUNK_KEY = DataKey.generate()
SEAL = {"session_id": "ses_fuzz", "sequence": 5, "key_id": CHUNK_KEY.key_id, "key": CHUNK_KEY.key}


def _open(stored: bytes, max_size: int = 1 << 30) -> bytes:
    return open_chunk(
        stored, session_id="ses_fuzz", sequence=5, key=CHUNK_KEY.key, max_size=max_size
    )


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_never_break_the_stored_chunk_parsers(data):
    outcome(lambda: parse_header(data), FormatError)
    outcome(lambda: _open(data), FormatError, AuthenticationError)


@FUZZ
@given(st.data())
def test_any_change_to_a_stored_chunk_is_refused_with_a_clear_error(data):
    plaintext = data.draw(st.binary(max_size=300))
    stored = seal_chunk(plaintext, level=data.draw(st.integers(1, 5)), **SEAL)
    assert _open(stored) == plaintext
    damaged = data.draw(changed(stored))
    outcome(lambda: parse_header(damaged), FormatError)
    with time_limit(), pytest.raises((FormatError, AuthenticationError)):
        _open(damaged)


@FUZZ
@given(st.binary(max_size=300))
def test_an_authentic_payload_of_random_bytes_opens_or_gives_compression_error(payload):
    outcome(lambda: _open(_seal_uncompressed(payload)), CompressionError)


def _seal_uncompressed(payload: bytes) -> bytes:
    """A correctly sealed chunk whose sealed payload is ``payload`` instead of zstd."""
    with mock.patch("lucid_sessions.chunkfile.zstd_compress", lambda data, level: data):
        return seal_chunk(payload, level=3, **SEAL)


@pytest.mark.parametrize("payload", [b"", b"not zstd at all", b"\x28\xb5\x2f\xfd" + bytes(20)])
def test_an_authentic_payload_that_is_not_zstd_gives_compression_error(payload):
    with pytest.raises(CompressionError, match="does not decompress"):
        _open(_seal_uncompressed(payload))


def test_a_chunk_that_would_decompress_past_the_limit_gives_compression_error():
    stored = seal_chunk(bytes(10_000), level=3, **SEAL)
    with pytest.raises(CompressionError, match="limit"):
        _open(stored, max_size=1_000)


# Manifest --------------------------------------------------------------------------------

VALID_MANIFEST = Manifest(
    session_id="ses_fuzz",
    name="fuzz",
    status="completed",
    created_at="2024-05-01T12:00:00.000000Z",
    started_at="2024-05-01T12:00:00.000000Z",
    ended_at=None,
    hash_algorithm="blake3",
    key_id="0123456789abcdef0123456789abcdef",
    tree_size=2,
    root="cd" * 32,
    chunks=tuple(
        ManifestChunk(
            sequence=i,
            start_us=i * 10,
            end_us=i * 10 + 9,
            frame_count=3,
            raw_size=1000,
            stored_size=400,
            leaf_hash=f"{i:02x}" * 32,
        )
        for i in range(2)
    ),
    metadata={"project": "p", "tags": ["a"]},
).to_dict()


def test_the_fuzzed_manifest_starts_valid():
    assert parse_manifest(json_bytes(VALID_MANIFEST)).tree_size == 2


@FUZZ
@given(st.binary(max_size=300))
@example(DEEP_JSON)
@example(b'{"version": 1, "chunks": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example("\ufeff{}".encode("utf-16"))
def test_random_bytes_never_break_the_manifest_parser(data):
    outcome(lambda: parse_manifest(data), FormatError)


@FUZZ
@given(json_values)
def test_random_json_never_breaks_the_manifest_parser(value):
    outcome(lambda: parse_manifest(json_bytes(value)), FormatError)


@FUZZ
@given(json_edited(VALID_MANIFEST))
def test_a_manifest_with_fields_deleted_or_retyped_parses_or_gives_format_error(value):
    outcome(lambda: parse_manifest(json_bytes(value)), FormatError)


@FUZZ
@given(st.data())
def test_mutated_manifest_bytes_parse_or_give_format_error(data):
    damaged = data.draw(changed(json_bytes(VALID_MANIFEST)))
    outcome(lambda: parse_manifest(damaged), FormatError)


@pytest.mark.parametrize("field", sorted(VALID_MANIFEST))
def test_a_manifest_missing_any_field_is_refused_naming_it(field):
    value = copy.deepcopy(VALID_MANIFEST)
    del value[field]
    with pytest.raises(FormatError, match=field):
        parse_manifest(json_bytes(value))


@pytest.mark.parametrize("field", sorted(VALID_MANIFEST["chunks"][0]))
def test_a_manifest_chunk_missing_any_field_is_refused_naming_it(field):
    value = copy.deepcopy(VALID_MANIFEST)
    del value["chunks"][1][field]
    with pytest.raises(FormatError, match=rf"chunks\[1\]\.{field}"):
        parse_manifest(json_bytes(value))


# Wrapped data keys -----------------------------------------------------------------------

MASTER = MasterKey.generate()
WRAPPED = wrap_data_key(DataKey.generate(), MASTER)


@FUZZ
@given(
    st.binary(max_size=120)
    | st.binary(min_size=96, max_size=96).map(lambda tail: b"LSWK\x01" + tail)
    | st.binary(min_size=88, max_size=88).map(lambda tail: WRAPPED[:13] + tail)
)
def test_random_bytes_never_break_unwrapping(data):
    outcome(lambda: unwrap_data_key(data, MASTER), FormatError, WrongKeyError, AuthenticationError)


@FUZZ
@given(changed(WRAPPED))
def test_any_change_to_a_wrapped_key_is_refused_with_a_clear_error(damaged):
    with time_limit(), pytest.raises((FormatError, WrongKeyError, AuthenticationError)):
        unwrap_data_key(damaged, MASTER)


# Key files and public keys ---------------------------------------------------------------


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("key-files")


@pytest.fixture(scope="module")
def valid_key_file(key_dir: Path) -> bytes:
    path = key_dir / "valid.key.json"
    write_data_key_file(path, "ses_fuzz", DataKey.generate())
    assert read_data_key_file(path)[0] == "ses_fuzz"
    return path.read_bytes()


def _read_key_file(key_dir: Path, content: bytes) -> Any:
    path = key_dir / "fuzzed.key.json"
    path.write_bytes(content)
    return outcome(lambda: read_data_key_file(path), FormatError)


@FUZZ
@given(
    st.binary(max_size=300)
    | json_values.map(json_bytes)
    | st.just(DEEP_JSON)
    | st.just(b'{"format": "lucid-sessions-data-key", "version": 1, "x": ' + DEEP_JSON + b"}")
)
def test_random_content_never_breaks_the_data_key_file_reader(key_dir, content):
    _read_key_file(key_dir, content)


@FUZZ
@given(st.data())
def test_an_edited_data_key_file_reads_or_gives_format_error(key_dir, valid_key_file, data):
    if data.draw(st.booleans()):
        content = json_bytes(data.draw(json_edited(json.loads(valid_key_file))))
    else:
        content = data.draw(changed(valid_key_file))
    _read_key_file(key_dir, content)


def test_a_missing_data_key_file_gives_format_error(key_dir):
    with pytest.raises(FormatError):
        read_data_key_file(key_dir / "absent.json")


@FUZZ
@given(
    st.binary(max_size=200)
    | st.binary(max_size=120).map(lambda b: b"-----BEGIN PUBLIC KEY-----\n" + b)
    | st.text(alphabet="0123456789abcdefABCDEF \n", max_size=70).map(str.encode)
)
def test_random_bytes_never_break_the_public_key_loader(data):
    outcome(lambda: load_public_key(data), FormatError)


@FUZZ
@given(
    st.binary(max_size=100)
    | st.text(alphabet="0123456789abcdef+/=\n ", max_size=90).map(str.encode)
)
def test_random_bytes_never_break_the_master_key_file_reader(key_dir, data):
    path = key_dir / "fuzzed-master.key"
    path.write_bytes(data)
    outcome(lambda: MasterKey.from_file(path), FormatError)


# Evidence bundles ------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Evidence:
    folder: Path
    full: bytes
    excerpt: bytes
    data_key: DataKey
    trusted_key: bytes

    def __repr__(self) -> str:  # keeps Hypothesis' failure reports readable
        return f"Evidence({self.folder})"


def _frames() -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for i in range(7):
        frame = frame.copy()
        frame[i : i + 4, 2 * i : 2 * i + 4] = 255
        yield i * 4_000_000, frame


async def _build_evidence(folder: Path) -> Evidence:
    datadir = DataDir.open(folder / "data", create=True)
    try:
        manifest = await import_frames(datadir, _frames(), name="fuzz")
        assert manifest.tree_size >= 3
        full, excerpt = folder / "full.tar", folder / "excerpt.tar"
        await export_to_file(datadir, manifest.session_id, full)
        await export_to_file(
            datadir, manifest.session_id, excerpt, excerpt=ExportRange(11_000_000, 13_000_000)
        )
        key = await load_data_key(datadir, manifest.key_id)
        trusted = datadir.existing_cluster_public_key()
        assert trusted is not None
    finally:
        await datadir.close()
    return Evidence(folder, full.read_bytes(), excerpt.read_bytes(), key, trusted)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    """A real 3+ chunk session exported whole and as an excerpt, with its keys."""
    folder = tmp_path_factory.mktemp("bundles")
    with pytest.MonkeyPatch.context() as env:
        for var in ("LUCID_DATA_DIR", "LUCID_MASTER_KEY", "LUCID_MASTER_KEY_FILE"):
            env.delenv(var, raising=False)
        built = asyncio.run(_build_evidence(folder))
    for content in (built.full, built.excerpt):
        (folder / "check.tar").write_bytes(content)
        with Bundle(folder / "check.tar") as bundle:
            report = verify_evidence(bundle, trusted_key=built.trusted_key, data_key=built.data_key)
            assert report.ok, summary_lines(report)
    return built


def _open_and_verify(evidence: Evidence, content: bytes) -> list[Report] | None:
    """Open ``content`` as a bundle (None if it is refused with FormatError) and verify
    it; verification must return a report whatever the bundle holds."""
    path = evidence.folder / "fuzzed.tar"
    path.write_bytes(content)
    bundle = outcome(lambda: Bundle(path), FormatError)
    if bundle is None:
        return None
    with bundle, time_limit():
        bundle.sequences()
        reports = [
            verify_evidence(bundle),
            verify_evidence(bundle, trusted_key=evidence.trusted_key, data_key=evidence.data_key),
        ]
        for report in reports:
            summary_lines(report)
        return reports


def _tar(members: list[tuple[str, bytes, dict[str, str]]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, pax in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = pax
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _members(content: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        return [(i.name, tar.extractfile(i).read(), {}) for i in tar.getmembers()]  # type: ignore[union-attr]


PAX_KEYS = (
    "size",
    "path",
    "linkpath",
    "mtime",
    "uid",
    "hdrcharset",
    "GNU.sparse.map",
    "GNU.sparse.offset",
    "GNU.sparse.numbytes",
    "GNU.sparse.size",
    "GNU.sparse.realsize",
    "GNU.sparse.major",
    "GNU.sparse.minor",
    "GNU.sparse.name",
)
pax_values = st.sampled_from(["0", "1", "-5", "x", "0,0", "1,x", "99999999999999999999", "BINARY"])


@st.composite
def member_edits(draw: st.DrawFn, content: bytes) -> bytes:
    """A bundle rebuilt with 1..3 member-level edits."""
    members = _members(content)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(members) - 1))
        name, data, pax = members[index]
        op = draw(
            st.sampled_from(
                ("mutate", "json", "random", "drop", "duplicate", "rename", "swap", "pax")
            )
        )
        if op == "mutate":
            members[index] = (name, draw(mutated(data)), pax)
        elif op == "json":
            try:
                value = json.loads(data)
            except ValueError:
                value = None
            edited = draw(json_edited(value)) if value is not None else draw(json_values)
            members[index] = (name, json_bytes(edited), pax)
        elif op == "random":
            members[index] = (name, draw(st.binary(max_size=200)), pax)
        elif op == "drop" and len(members) > 1:
            del members[index]
        elif op == "duplicate":
            members.append(members[index])
        elif op == "rename":
            new = draw(
                st.sampled_from(
                    [
                        "chunks/00000099.chunk",
                        "chunks/00000001.chunk\n",
                        "chunks/1.chunk",
                        "../manifest.json",
                        "extra.txt",
                    ]
                )
            )
            members[index] = (new, data, pax)
        elif op == "swap":
            other = draw(st.integers(0, len(members) - 1))
            members[index] = (name, members[other][1], pax)
        elif op == "pax":
            headers = draw(st.dictionaries(st.sampled_from(PAX_KEYS), pax_values, max_size=3))
            members[index] = (name, data, {**pax, **headers})
    return _tar(members)


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=2048), st.booleans())
def test_random_bytes_never_break_the_bundle_reader(evidence, data, as_tar_prefix):
    content = evidence.full[:512] + data if as_tar_prefix else data
    _open_and_verify(evidence, content)


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_a_byte_mutated_bundle_is_refused_or_verified_without_raising(evidence, data):
    original = data.draw(st.sampled_from((evidence.full, evidence.excerpt)))
    _open_and_verify(evidence, data.draw(changed(original)))


@settings(FUZZ, max_examples=250)
@given(st.data())
def test_a_bundle_with_edited_members_is_refused_or_verified_without_raising(evidence, data):
    original = data.draw(st.sampled_from((evidence.full, evidence.excerpt)))
    _open_and_verify(evidence, data.draw(member_edits(original)))


@pytest.mark.parametrize("member", ["lucid-bundle.json", "manifest.json", "proofs.json"], ids=str)
def test_a_deeply_nested_json_member_is_a_format_error(evidence, member):
    members = [(n, DEEP_JSON if n == member else d, p) for n, d, p in _members(evidence.full)]
    path = evidence.folder / "deep.tar"
    path.write_bytes(_tar(members))
    with pytest.raises(FormatError):
        Bundle(path)


@pytest.mark.parametrize(
    "pax",
    [
        {"GNU.sparse.map": "x,y", "GNU.sparse.offset": "0"},
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"},
        {"GNU.sparse.size": "x"},
        {"GNU.sparse.realsize": "x"},
        {"size": "99999999999999999999"},
        {"GNU.sparse.map": "0,0", "GNU.sparse.realsize": "200000000"},
        {"size": "-5"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("member", ["lucid-bundle.json", "chunks/00000001.chunk"])
def test_a_malformed_or_sparse_pax_member_is_refused_with_format_error(evidence, pax, member):
    members = [(n, d, pax if n == member else p) for n, d, p in _members(evidence.full)]
    path = evidence.folder / "pax.tar"
    path.write_bytes(_tar(members))
    with time_limit(), pytest.raises(FormatError):
        Bundle(path)


def test_an_unreadable_chunk_member_is_reported_by_verify_not_raised(evidence):
    class Unreadable:
        excerpt = False
        listed_chunks = None

        def __init__(self, bundle: Bundle) -> None:
            self._bundle = bundle
            self.proofs: dict[int, list[bytes]] = {}
            self.manifest_bytes = bundle.manifest_bytes
            self.signature = bundle.signature
            self.public_key = bundle.public_key

        def sequences(self) -> list[int]:
            return self._bundle.sequences()

        def chunk(self, sequence: int) -> bytes | None:
            if sequence == 1:
                raise FormatError("bundle member chunks/00000001.chunk is truncated")
            return self._bundle.chunk(sequence)

    path = evidence.folder / "whole.tar"
    path.write_bytes(evidence.full)
    with Bundle(path) as bundle:
        report = verify_evidence(Unreadable(bundle), data_key=evidence.data_key)
    assert [(f.kind, f.sequence) for f in report.failures] == [("missing", 1)]
    assert "truncated" in report.failures[0].message
