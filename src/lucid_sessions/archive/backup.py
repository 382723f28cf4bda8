"""Backup and restore of a data directory, consistent while the cluster runs.

A backup is a folder that mirrors the data directory, plus ``backup-manifest.json``::

    <backup>/backup-manifest.json    format, snapshot time, master key id, and per file
                                     its sha256, size and mode (written last: the commit)
    <backup>/metadata.db             an online snapshot of the SQLite store
    <backup>/lucid-data-dir.json     the marker (it names the master key in use)
    <backup>/chunks/<session>/NNNNNNNN.chunk   every chunk the snapshot references
    <backup>/keys/...                cluster-ed25519.pem, token-hs256.key (secrets, 0600),
                                     master.key only with ``include_master_key``
    <backup>/anchors.jsonl, log/*, checkpoints/*.jsonl

Consistency: the metadata is snapshotted first with SQLite's online backup API (readers
and the writer keep going), then the chunk files the snapshot references are copied.
Chunks are immutable once written (and written before their record), so a chunk the
snapshot names is complete on disk; one written after the snapshot is not referenced yet
and is picked up by the next run. Append-only files (the session log, anchors,
checkpoints) are copied up to their last complete line, the session log under its lock;
they are copied after the snapshot, so they may run slightly ahead of it.

Incremental: a chunk already in the manifest with the same size is not copied again
(chunks never change); every other file is copied only when its sha256 differs from the
manifest's. Files that left the data directory (deleted sessions) leave the backup too,
so a backup never keeps what the cluster has shredded.

Restore checks every file against the manifest's sha256 (naming any corrupted or missing
file), writes into a temporary folder next to the target and renames it into place, with
0700 folders and 0600 keys and metadata. Metadata in MongoDB is not covered: back it up
with ``mongodump``; :func:`backup` refuses rather than pretend.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lucid_sessions.errors import InvalidConfigError, StorageError
from lucid_sessions.storage.chunk_store import check_id, check_sequence, fsync_dir, write_atomic
from lucid_sessions.storage.datadir import MARKER, MONGODB_URI_ENV
from lucid_sessions.storage.metadata import utc_now

__all__ = [
    "BACKUP_FORMAT",
    "BACKUP_MANIFEST",
    "BackupResult",
    "RestoreResult",
    "backup",
    "read_backup_manifest",
    "restore",
]

BACKUP_FORMAT = "lucid-sessions-backup"
BACKUP_VERSION = 1
BACKUP_MANIFEST = "backup-manifest.json"
_DB = "metadata.db"
_SECRET_DIRS = ("keys/",)
_SECRET_FILES = (_DB,)
_MASTER = "keys/master.key"
_APPEND_ONLY_DIRS = ("log", "checkpoints")
_APPEND_ONLY_FILES = ("anchors.jsonl",)
_BLOCK = 1 << 20

Progress = Callable[[int], None]


@dataclass(slots=True)
class BackupResult:
    snapshot_at: str
    sessions: int = 0
    files: int = 0
    """Files the backup holds after this run."""
    copied_files: int = 0
    copied_bytes: int = 0
    copied_chunks: int = 0
    unchanged_files: int = 0
    removed_files: int = 0
    master_key_included: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RestoreResult:
    path: Path
    files: int = 0
    bytes: int = 0
    sessions: list[str] = field(default_factory=list)
    """Sessions with a signed manifest (the ones verification covers)."""
    master_key_id: str | None = None
    master_key_included: bool = False
    snapshot_at: str | None = None


def _is_secret(rel: str) -> bool:
    return rel.startswith(_SECRET_DIRS) or rel in _SECRET_FILES


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=mode)
    os.chmod(path, mode)


def _copy_file(src: Path, dst: Path, mode: int) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` atomically (temp file, fsync, rename); returns its
    sha256 and size as copied."""
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as reader:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                while block := reader.read(_BLOCK):
                    digest.update(block)
                    size += len(block)
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return digest.hexdigest(), size


def _complete_lines(path: Path) -> bytes:
    """An append-only file's bytes up to its last newline (a line being appended is
    left for the next run)."""
    data = path.read_bytes()
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_backup_manifest(backup_dir: Path) -> dict[str, Any]:
    """The backup's manifest; StorageError when the folder is not a backup."""
    path = backup_dir / BACKUP_MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StorageError(
            f"{backup_dir} is not a Lucid Sessions backup (no {BACKUP_MANIFEST})"
        ) from None
    except (OSError, ValueError) as exc:
        raise StorageError(f"backup manifest {path} is unreadable: {exc}") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != BACKUP_FORMAT
        or not isinstance(data.get("files"), dict)
    ):
        raise StorageError(f"backup manifest {path} is corrupt")
    if data.get("version") != BACKUP_VERSION:
        raise StorageError(
            f"backup format version {data.get('version')} is not supported (reads {BACKUP_VERSION})"
        )
    return data


def _snapshot_db(source: Path, target: Path) -> None:
    """An online, transactionally consistent copy of ``source`` as one plain file."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot snapshot {source}: {exc}") from exc
    finally:
        src.close()
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def _snapshot_chunks(db: Path) -> tuple[int, list[str]]:
    """(sessions, chunk paths) the snapshot references."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        rows = conn.execute("SELECT session_id, sequence FROM chunks ORDER BY 1, 2").fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"the metadata snapshot is unreadable: {exc}") from exc
    finally:
        conn.close()
    return sessions, [
        f"chunks/{check_id(session)}/{check_sequence(sequence):08d}.chunk"
        for session, sequence in rows
    ]


def _other_files(data_dir: Path, include_master_key: bool) -> list[str]:
    """Relative paths of the marker, keys and append-only files present."""
    found = [MARKER] if (data_dir / MARKER).is_file() else []
    keys = data_dir / "keys"
    if keys.is_dir():
        for entry in sorted(keys.iterdir()):
            rel = f"keys/{entry.name}"
            wanted = rel != _MASTER or include_master_key
            if wanted and entry.is_file() and not entry.name.startswith("."):
                found.append(rel)
    for name in _APPEND_ONLY_FILES:
        if (data_dir / name).is_file():
            found.append(name)
    for folder in _APPEND_ONLY_DIRS:
        root = data_dir / folder
        if root.is_dir():
            for entry in sorted(root.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    found.append(f"{folder}/{entry.name}")
    return found


def backup(
    data_dir: Path,
    backup_dir: Path,
    *,
    include_master_key: bool = False,
    progress: Progress | None = None,
) -> BackupResult:
    """Back ``data_dir`` up into ``backup_dir`` (created if missing), incrementally."""
    if os.environ.get(MONGODB_URI_ENV):
        raise InvalidConfigError(
            f"the metadata lives in MongoDB ({MONGODB_URI_ENV} is set): back it up with "
            "mongodump; `backup` covers the embedded SQLite store only"
        )
    data_dir = Path(data_dir).expanduser()
    backup_dir = Path(backup_dir).expanduser()
    if not (data_dir / MARKER).is_file():
        raise StorageError(f"{data_dir} is not a Lucid Sessions data directory (no {MARKER})")
    if backup_dir.resolve() == data_dir.resolve() or backup_dir.resolve().is_relative_to(
        data_dir.resolve()
    ):
        raise InvalidConfigError("the backup folder must be outside the data directory")
    if backup_dir.exists() and any(backup_dir.iterdir()):
        old = read_backup_manifest(backup_dir)
    else:
        old = {"files": {}}
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(backup_dir, 0o700)
    advance = progress or (lambda n: None)
    with _flock(backup_dir / ".lock"):
        return _backup(data_dir, backup_dir, old, include_master_key, advance)


def _backup(
    data_dir: Path,
    backup_dir: Path,
    old: dict[str, Any],
    include_master_key: bool,
    advance: Progress,
) -> BackupResult:
    old_files: dict[str, dict[str, Any]] = old["files"]
    files: dict[str, dict[str, Any]] = {}
    result = BackupResult(snapshot_at=utc_now())

    def record(rel: str, digest: str, size: int, mode: int, copied: bool) -> None:
        files[rel] = {"sha256": digest, "size": size, "mode": mode}
        if copied:
            result.copied_files += 1
            result.copied_bytes += size
        else:
            result.unchanged_files += 1
        advance(size)

    # 1. the metadata snapshot: everything else is measured against it
    db = data_dir / _DB
    references: list[str] = []
    if db.is_file():
        tmp = backup_dir / f".{_DB}.snapshot"
        result.snapshot_at = utc_now()
        _snapshot_db(db, tmp)
        digest, size = _sha256_file(tmp)
        same = old_files.get(_DB, {}).get("sha256") == digest and (backup_dir / _DB).is_file()
        if same:
            tmp.unlink()
        else:
            os.chmod(tmp, 0o600)
            os.replace(tmp, backup_dir / _DB)
            fsync_dir(backup_dir)
        record(_DB, digest, size, 0o600, not same)
        result.sessions, references = _snapshot_chunks(backup_dir / _DB)

    # 2. the chunks it references (immutable: same name and size means already copied)
    for rel in references:
        src = data_dir / rel
        known = old_files.get(rel)
        try:
            size = src.stat().st_size
        except FileNotFoundError:
            result.warnings.append(
                f"{rel} is referenced by the snapshot but was deleted before it was copied"
            )
            continue
        if known is not None and known.get("size") == size and (backup_dir / rel).is_file():
            record(rel, known["sha256"], size, 0o644, False)
            continue
        digest, size = _copy_file(src, backup_dir / rel, 0o644)
        result.copied_chunks += 1
        record(rel, digest, size, 0o644, True)

    # 3. marker, keys, session log (under its lock), anchors, checkpoints
    others = _other_files(data_dir, include_master_key)
    log_lock = data_dir / "log" / ".lock"
    with _flock(log_lock) if (data_dir / "log").is_dir() else contextlib.nullcontext():
        for rel in others:
            src = data_dir / rel
            append_only = rel in _APPEND_ONLY_FILES or rel.startswith(
                tuple(f"{d}/" for d in _APPEND_ONLY_DIRS)
            )
            try:
                data = _complete_lines(src) if append_only else src.read_bytes()
            except FileNotFoundError:
                continue
            mode = 0o600 if _is_secret(rel) else 0o644
            digest = hashlib.sha256(data).hexdigest()
            known = old_files.get(rel)
            if known is not None and known.get("sha256") == digest and (backup_dir / rel).is_file():
                record(rel, digest, len(data), mode, False)
                continue
            _write_file(backup_dir / rel, data, mode)
            record(rel, digest, len(data), mode, True)
    result.master_key_included = _MASTER in files
    if (data_dir / _MASTER).is_file() and not include_master_key:
        result.warnings.append(
            f"{_MASTER} was not copied (use --include-master-key to include it): a restore "
            "needs LUCID_MASTER_KEY or LUCID_MASTER_KEY_FILE"
        )

    # 4. the manifest is the commit point; then drop what left the data directory
    manifest = {
        "format": BACKUP_FORMAT,
        "version": BACKUP_VERSION,
        "snapshot_at": result.snapshot_at,
        "source": str(data_dir),
        "master_key_id": _marker_key_id(backup_dir / MARKER),
        "master_key_included": result.master_key_included,
        "sessions": result.sessions,
        "files": files,
    }
    _write_file(
        backup_dir / BACKUP_MANIFEST,
        json.dumps(manifest, indent=1, sort_keys=True).encode(),
        0o600,
    )
    for rel in sorted(set(old_files) - set(files)):
        with contextlib.suppress(FileNotFoundError):
            (backup_dir / rel).unlink()
            result.removed_files += 1
    for folder in sorted((backup_dir / "chunks").glob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    result.files = len(files)
    return result


def _marker_key_id(path: Path) -> str | None:
    try:
        value = json.loads(path.read_bytes()).get("master_key_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _safe_rel(rel: object) -> str:
    """A manifest path, refused unless it is plain and relative (a hostile manifest
    must not write outside the target)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise StorageError(f"backup manifest names an unsafe path {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"backup manifest names an unsafe path {rel!r}")
    return rel


def check_backup(backup_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """The manifest, after checking every file's sha256 and size; StorageError naming
    the corrupted or missing files otherwise."""
    manifest = read_backup_manifest(backup_dir)
    bad: list[str] = []
    for rel, entry in sorted(manifest["files"].items()):
        rel = _safe_rel(rel)
        try:
            digest, size = _sha256_file(backup_dir / rel)
        except FileNotFoundError:
            bad.append(f"{rel} (missing)")
            continue
        if (
            not isinstance(entry, dict)
            or entry.get("sha256") != digest
            or entry.get("size") != size
        ):
            bad.append(f"{rel} (sha256 mismatch)")
        if progress is not None:
            progress(size)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise StorageError(f"backup {backup_dir} is corrupt: {', '.join(bad[:5])}{more}")
    return manifest


def restore(backup_dir: Path, target: Path, *, progress: Progress | None = None) -> RestoreResult:
    """Rebuild a data directory at ``target`` (missing or empty) from ``backup_dir``."""
    if os.environ.get(MONGODB_URI_ENV):
        raise InvalidConfigError(
            f"{MONGODB_URI_ENV} is set: restore rebuilds the embedded SQLite store only; "
            "restore MongoDB with mongorestore and unset it"
        )
    backup_dir = Path(backup_dir).expanduser()
    target = Path(target).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StorageError(f"restore target {target} is not empty")
    manifest = check_backup(backup_dir, progress)
    result = RestoreResult(
        target,
        master_key_id=manifest.get("master_key_id"),
        master_key_included=bool(manifest.get("master_key_included")),
        snapshot_at=manifest.get("snapshot_at"),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        for sub in ("chunks", "keys"):
            (tmp / sub).mkdir(mode=0o700)
        for rel, entry in sorted(manifest["files"].items()):
            mode = 0o600 if _is_secret(rel) else 0o644
            digest, size = _copy_file(backup_dir / rel, tmp / rel, mode)
            if digest != entry["sha256"]:  # changed since it was checked
                raise StorageError(f"backup {backup_dir} is corrupt: {rel} (sha256 mismatch)")
            result.files += 1
            result.bytes += size
        for folder, dirs, _ in os.walk(tmp):
            for name in dirs:
                os.chmod(Path(folder) / name, 0o700)
        fsync_dir(tmp)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (target / _DB).is_file():
        conn = sqlite3.connect(f"file:{target / _DB}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT session_id FROM manifests ORDER BY 1").fetchall()
        finally:
            conn.close()
        result.sessions = [row[0] for row in rows]
    return result
