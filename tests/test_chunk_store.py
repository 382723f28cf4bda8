"""The chunk store: atomic, immutable chunk files under one root, safe ids only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lucid_sessions.errors import AlreadyExistsError, ChunkNotFoundError, StorageError
from lucid_sessions.storage.chunk_store import ChunkStore

SESSION = "ses_0123abcd"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store" / "chunks"


@pytest.fixture
def store(root: Path) -> ChunkStore:
    return ChunkStore(root)


def _files_below(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_put_then_get_returns_the_same_bytes_at_the_documented_path(store, root):
    path = store.put(SESSION, 7, b"sealed chunk bytes")
    assert path == root / SESSION / "00000007.chunk"
    assert store.get(SESSION, 7) == b"sealed chunk bytes"
    assert store.size(SESSION, 7) == len(b"sealed chunk bytes")


def test_an_empty_chunk_round_trips(store):
    store.put(SESSION, 0, b"")
    assert store.get(SESSION, 0) == b""


def test_putting_identical_bytes_again_is_a_no_op_that_keeps_the_file(store):
    path = store.put(SESSION, 1, b"abc")
    before = path.stat()
    assert store.put(SESSION, 1, b"abc") == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert store.get(SESSION, 1) == b"abc"


@pytest.mark.parametrize("other", [b"abd", b"ab", b"abcd", b""])
def test_putting_other_bytes_over_a_chunk_is_refused_and_the_original_is_untouched(store, other):
    store.put(SESSION, 1, b"abc")
    with pytest.raises(AlreadyExistsError):
        store.put(SESSION, 1, other)
    assert store.get(SESSION, 1) == b"abc"


def test_a_missing_chunk_raises_chunk_not_found(store):
    store.put(SESSION, 0, b"x")
    with pytest.raises(ChunkNotFoundError):
        store.get(SESSION, 1)
    with pytest.raises(ChunkNotFoundError):
        store.get("ses_unknown", 0)
    with pytest.raises(ChunkNotFoundError):
        store.size(SESSION, 1)


def test_sequences_lists_chunk_files_in_numeric_order_and_ignores_everything_else(store, root):
    for sequence in (10, 2, 123456789, 0):
        store.put(SESSION, sequence, b"c")
    folder = root / SESSION
    junk = [
        f".00000003.chunk.{os.getpid()}.tmp",  # a write in progress
        ".00000004.chunk.1.tmp",
        "00000005.chunk.tmp",
        "00000006.chunk.bak",
        "7.chunk",  # fewer than 8 digits
        "0000008.chunk",
        "abcdefgh.chunk",
        "00000009.CHUNK",
        "notes.txt",
        "00000011.chunk\n",  # a trailing newline must not pass for a chunk name
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668.chunk",  # non-ASCII digits
    ]
    for name in junk:
        (folder / name).write_bytes(b"junk")
    (folder / "00000012.chunk.d").mkdir()
    assert store.sequences(SESSION) == [0, 2, 10, 123456789]


def test_sequences_of_a_session_without_chunks_is_empty(store):
    assert store.sequences(SESSION) == []


def test_sessions_lists_only_session_folders_with_valid_ids(store, root):
    store.put("ses_b", 0, b"x")
    store.put("ses_a", 0, b"x")
    (root / "stray-file").write_bytes(b"x")
    (root / ".hidden").mkdir()
    (root / "has space").mkdir()
    assert list(store.sessions()) == ["ses_a", "ses_b"]


def test_sessions_of_a_missing_root_is_empty(tmp_path):
    assert list(ChunkStore(tmp_path / "absent").sessions()) == []


BAD_IDS = [
    "../x",
    "..",
    ".",
    "a/b",
    "/abs",
    "a\\b",
    "",
    "x" * 129,
    "sessi\u00f3n",
    "\u30bb\u30c3\u30b7\u30e7\u30f3",
    "a b",
    "a\x00b",
    "abc\n",
    "~",
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_unsafe_session_ids_are_refused_and_nothing_is_written(store, tmp_path, bad):
    before = _files_below(tmp_path)
    with pytest.raises(StorageError, match="invalid session id"):
        store.put(bad, 0, b"payload")
    with pytest.raises(StorageError, match="invalid session id"):
        store.get(bad, 0)
    with pytest.raises(StorageError, match="invalid session id"):
        store.sequences(bad)
    with pytest.raises(StorageError, match="invalid session id"):
        store.delete_session(bad)
    assert _files_below(tmp_path) == before


def test_the_longest_allowed_id_is_accepted(store):
    longest = "a" * 128
    store.put(longest, 0, b"x")
    assert store.get(longest, 0) == b"x"


def test_a_negative_sequence_is_refused(store, root):
    with pytest.raises(StorageError, match="invalid chunk sequence"):
        store.put(SESSION, -1, b"x")
    assert not root.exists()


def test_delete_session_removes_its_chunks_and_folder_only(store, root):
    for sequence in range(3):
        store.put(SESSION, sequence, b"c%d" % sequence)
    store.put("ses_other", 0, b"keep")
    assert store.delete_session(SESSION) == 3
    assert not (root / SESSION).exists()
    assert store.sequences(SESSION) == []
    with pytest.raises(ChunkNotFoundError):
        store.get(SESSION, 0)
    assert store.get("ses_other", 0) == b"keep"
    assert list(store.sessions()) == ["ses_other"]


def test_delete_of_an_unknown_session_removes_nothing(store):
    store.put("ses_other", 0, b"keep")
    assert store.delete_session(SESSION) == 0
    assert store.get("ses_other", 0) == b"keep"


def test_a_session_can_be_written_again_after_delete(store):
    store.put(SESSION, 0, b"old")
    store.delete_session(SESSION)
    store.put(SESSION, 0, b"new")
    assert store.get(SESSION, 0) == b"new"


def test_a_write_leaves_only_the_chunk_file_behind(store, root):
    store.put(SESSION, 0, b"a" * 100_000)
    store.put(SESSION, 1, b"b")
    assert sorted(os.listdir(root / SESSION)) == ["00000000.chunk", "00000001.chunk"]


def test_a_failed_write_raises_storage_error_and_leaves_no_temp_or_partial_file(
    store, root, monkeypatch
):
    store.put(SESSION, 0, b"first")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="cannot write chunk 1"):
        store.put(SESSION, 1, b"second")
    monkeypatch.undo()
    assert os.listdir(root / SESSION) == ["00000000.chunk"]
    with pytest.raises(ChunkNotFoundError):
        store.get(SESSION, 1)
    store.put(SESSION, 1, b"second")
    assert store.get(SESSION, 1) == b"second"
