"""Stored chunks as files: ``<root>/<session id>/<sequence, 8 digits>.chunk``.

Every write is atomic and durable: the bytes go to a temporary file in the same folder,
are fsynced, renamed into place, and the folder is fsynced, so after a crash a chunk file
is either absent or complete. Writing the same bytes again is a no-op; writing different
bytes over an existing chunk is refused (chunks are immutable once stored).

Every session id and sequence number is checked before a path is built from it, whatever
the caller already checked (defence in depth): an id is 1-128 of ``A-Z a-z 0-9 _ -``, so
``..``, separators, NUL, absolute paths and look-alike unicode dots never reach the file
system; a sequence is a plain int from 0 to 2**53.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from lucid_sessions.errors import AlreadyExistsError, ChunkNotFoundError, StorageError

__all__ = ["MAX_SEQUENCE", "ChunkStore", "check_id", "check_sequence", "fsync_dir", "write_atomic"]

# \Z, not $: "$" also matches before a trailing newline, which would let "abc\n" through.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
_NAME = re.compile(r"^([0-9]{8,})\.chunk\Z")
MAX_SEQUENCE = 2**53
"""The largest chunk sequence number (the API's bound too)."""


def _shown(value: object) -> str:
    """``value`` for an error message: repr, cut short (an attacker's id may be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def check_id(value: str, what: str = "session id") -> str:
    """``value`` if it is a safe id (``[A-Za-z0-9_-]``, 1..128), else StorageError."""
    if not isinstance(value, str) or not _ID.match(value):
        raise StorageError(f"invalid {what} {_shown(value)}: use 1-128 of A-Z a-z 0-9 _ -")
    return value


def check_sequence(value: int) -> int:
    """``value`` if it is a chunk sequence number (an int, not a bool, 0..2**53), else
    StorageError: a string or float would otherwise reach the file name."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQUENCE:
        raise StorageError(f"invalid chunk sequence {_shown(value)}: use an int from 0 to 2**53")
    return value


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    On any error (ENOSPC, EIO, ...) the temporary file is removed: a failed write leaves
    no partial file behind, and the old file, if any, untouched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class ChunkStore:
    """Stored chunks under one root folder. Safe for use from several threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, session_id: str, sequence: int) -> Path:
        """Where a chunk lives; the id and sequence are checked before anything is joined."""
        folder = check_id(session_id)
        return self.root / folder / f"{check_sequence(sequence):08d}.chunk"

    def put(self, session_id: str, sequence: int, data: bytes) -> Path:
        """Store a chunk; idempotent for identical bytes."""
        path = self.path(session_id, sequence)
        try:
            if path.exists():
                if path.read_bytes() == data:
                    return path
                raise AlreadyExistsError(
                    f"chunk {sequence} of session {session_id} is already stored with "
                    "different bytes"
                )
            if not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(path.parent.parent)
            try:
                write_atomic(path, data)
            except OSError:
                # Renamed into place but its folder not synced (EIO): not stored either.
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
        except OSError as exc:
            raise StorageError(
                f"cannot write chunk {sequence} of session {session_id}: {exc.strerror}"
            ) from exc
        return path

    def get(self, session_id: str, sequence: int) -> bytes:
        path = self.path(session_id, sequence)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ChunkNotFoundError(
                f"chunk {sequence} of session {session_id} is not on disk"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot read chunk {sequence}: {exc.strerror}") from exc

    def size(self, session_id: str, sequence: int) -> int:
        try:
            return self.path(session_id, sequence).stat().st_size
        except FileNotFoundError:
            raise ChunkNotFoundError(
                f"chunk {sequence} of session {session_id} is not on disk"
            ) from None

    def sequences(self, session_id: str) -> list[int]:
        """Sequence numbers of the chunk files present for a session, ascending."""
        folder = self.root / check_id(session_id)
        if not folder.is_dir():
            return []
        found = (_NAME.match(name) for name in os.listdir(folder))
        return sorted(int(m.group(1)) for m in found if m)

    def sessions(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for entry in sorted(os.listdir(self.root)):
            if _ID.match(entry) and (self.root / entry).is_dir():
                yield entry

    def delete_session(self, session_id: str) -> int:
        """Remove a session's folder with everything in it; returns how many chunk files
        were removed. StorageError if the file system refuses."""
        folder = self.root / check_id(session_id)
        if not folder.is_dir():
            return 0
        removed = len(self.sequences(session_id))
        try:
            shutil.rmtree(folder)
            fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(
                f"cannot delete the chunks of session {session_id}: {exc.strerror}"
            ) from exc
        return removed
