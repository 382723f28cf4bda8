"""The embedded metadata store: one SQLite file in WAL mode.

Writes run on the store's own thread, one at a time, so SQLite's locks and fsyncs never
block an event loop; a whole write method is one transaction. Reads run inline on a
separate read-only connection: in WAL mode they never wait for the writer. Indexed
columns carry what lists filter and sort on; the rest of a record is kept as JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from lucid_sessions.errors import (
    AlreadyExistsError,
    ChunkNotFoundError,
    FormatError,
    NotFoundError,
    PipelineError,
    StorageError,
)
from lucid_sessions.storage.metadata import (
    SESSION_FIELDS,
    ChunkRecord,
    ManifestRecord,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
    utc_now,
)

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    project TEXT,
    environment TEXT,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status);
CREATE INDEX IF NOT EXISTS sessions_project ON sessions (project);
CREATE INDEX IF NOT EXISTS sessions_environment ON sessions (environment);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions (created_at, session_id);
CREATE TABLE IF NOT EXISTS chunks (
    session_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    leaf_hash TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (session_id, sequence)
);
CREATE TABLE IF NOT EXISTS wrapped_keys (
    key_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS wrapped_keys_session ON wrapped_keys (session_id);
CREATE TABLE IF NOT EXISTS manifests (
    session_id TEXT PRIMARY KEY,
    manifest BLOB NOT NULL,
    signature BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);
"""


def _session_json(record: SessionRecord) -> str:
    data = asdict(record)
    data["tags"] = list(record.tags)
    data["config"] = dict(record.config)
    data["stats"] = dict(record.stats)
    return json.dumps(data, sort_keys=True)


def _session_from_json(text: str) -> SessionRecord:
    try:
        data = json.loads(text)
        data["tags"] = tuple(data.get("tags", ()))
        return SessionRecord(**data)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise FormatError(f"metadata database holds a malformed session record: {exc}") from exc


def _chunk_from_json(text: str) -> ChunkRecord:
    try:
        return ChunkRecord(**json.loads(text))
    except (ValueError, TypeError, RecursionError) as exc:
        raise FormatError(f"metadata database holds a malformed chunk record: {exc}") from exc


P = ParamSpec("P")
R = TypeVar("R")


def _offloaded(
    method: Callable[Concatenate[SQLiteStore, P], R],
) -> Callable[Concatenate[SQLiteStore, P], Awaitable[R]]:
    """Run a store method on the store's own thread, so SQLite's waits (locks, fsync)
    never block the caller's event loop."""

    @functools.wraps(method)
    async def run(self: SQLiteStore, *args: P.args, **kwargs: P.kwargs) -> R:
        call = functools.partial(method, self, *args, **kwargs)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        except RuntimeError:
            raise StorageError(f"metadata database {self.path} is closed") from None
        return await future

    return run


class SQLiteStore:
    """:class:`~lucid_sessions.storage.metadata.MetadataStore` on one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lucid-sqlite")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._tx() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    raise StorageError(
                        f"metadata database {self.path} has schema version {row[0]}; "
                        f"this program reads version {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open metadata database {self.path}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"metadata database error: {exc}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """A read on the read-only connection, inline: in WAL mode readers never wait
        for the writer, so a read costs no thread hop."""
        with self._read_lock:
            if self._closed:
                raise StorageError(f"metadata database {self.path} is closed")
            try:
                if self._reader is None:
                    self._reader = sqlite3.connect(
                        f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                    )
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"metadata database error: {exc}") from exc

    # sessions

    @_offloaded
    def create_session(self, record: SessionRecord) -> None:
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM sessions WHERE session_id=?", (record.session_id,)
            ).fetchone()
            if exists:
                raise AlreadyExistsError(f"session {record.session_id} already exists")
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.session_id,
                    record.status,
                    record.project,
                    record.environment,
                    record.created_at,
                    _session_json(record),
                ),
            )

    async def get_session(self, session_id: str) -> SessionRecord:
        rows = self._read("SELECT record FROM sessions WHERE session_id=?", (session_id,))
        if not rows:
            raise NotFoundError(f"session {session_id} does not exist")
        return _session_from_json(rows[0][0])

    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage:
        where, args = [], []
        for column, value in (
            ("status", status),
            ("project", project),
            ("environment", environment),
        ):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self._read(f"SELECT COUNT(*) FROM sessions{clause}", args)[0][0]
        rows = self._read(
            f"SELECT record FROM sessions{clause} ORDER BY created_at, session_id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        items = tuple(_session_from_json(r[0]) for r in rows)
        return SessionPage(items=items, total=int(total), limit=limit, offset=offset)

    @_offloaded
    def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        unknown = set(changes) - SESSION_FIELDS
        if unknown or "session_id" in changes:
            raise ValueError(f"cannot update session fields {sorted(unknown | {'session_id'})}")
        with self._tx() as db:
            row = db.execute(
                "SELECT record FROM sessions WHERE session_id=?", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"session {session_id} does not exist")
            current = _session_from_json(row[0])
            if if_status is not None and current.status not in if_status:
                raise PipelineError(
                    f"session {session_id} is {current.status}, expected one of "
                    f"{', '.join(if_status)}"
                )
            values = dict(changes)
            if "tags" in values:
                values["tags"] = tuple(values["tags"])
            values.setdefault("updated_at", utc_now())
            updated = replace(current, **values)
            db.execute(
                "UPDATE sessions SET status=?, project=?, environment=?, record=? "
                "WHERE session_id=?",
                (
                    updated.status,
                    updated.project,
                    updated.environment,
                    _session_json(updated),
                    session_id,
                ),
            )
        return updated

    @_offloaded
    def delete_session(self, session_id: str) -> None:
        with self._tx() as db:
            cursor = db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))
            if cursor.rowcount == 0:
                raise NotFoundError(f"session {session_id} does not exist")
            for table in ("chunks", "wrapped_keys", "manifests"):
                db.execute(f"DELETE FROM {table} WHERE session_id=?", (session_id,))

    # chunks

    @_offloaded
    def put_chunk(self, record: ChunkRecord) -> None:
        with self._tx() as db:
            if not db.execute(
                "SELECT 1 FROM sessions WHERE session_id=?", (record.session_id,)
            ).fetchone():
                raise NotFoundError(f"session {record.session_id} does not exist")
            row = db.execute(
                "SELECT leaf_hash FROM chunks WHERE session_id=? AND sequence=?",
                (record.session_id, record.sequence),
            ).fetchone()
            if row is not None:
                if row[0] == record.leaf_hash:
                    return
                raise AlreadyExistsError(
                    f"chunk {record.sequence} of session {record.session_id} is already "
                    "recorded with another hash"
                )
            db.execute(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.session_id,
                    record.sequence,
                    record.start_us,
                    record.end_us,
                    record.leaf_hash,
                    json.dumps(asdict(record), sort_keys=True),
                ),
            )

    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord:
        rows = self._read(
            "SELECT record FROM chunks WHERE session_id=? AND sequence=?", (session_id, sequence)
        )
        if not rows:
            raise ChunkNotFoundError(f"chunk {sequence} of session {session_id} does not exist")
        return _chunk_from_json(rows[0][0])

    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        sql = "SELECT record FROM chunks WHERE session_id=?"
        args: list[Any] = [session_id]
        if start_us is not None:
            sql += " AND end_us >= ?"
            args.append(start_us)
        if end_us is not None:
            sql += " AND start_us <= ?"
            args.append(end_us)
        sql += " ORDER BY sequence LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        return [_chunk_from_json(r[0]) for r in self._read(sql, args)]

    # keys

    @_offloaded
    def put_wrapped_key(self, record: WrappedKeyRecord) -> None:
        with self._tx() as db:
            row = db.execute(
                "SELECT wrapped FROM wrapped_keys WHERE key_id=?", (record.key_id,)
            ).fetchone()
            if row is not None:
                if bytes(row[0]) == record.wrapped:
                    return
                raise AlreadyExistsError(f"data key {record.key_id} already exists")
            db.execute(
                "INSERT INTO wrapped_keys VALUES (?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.session_id,
                    record.master_key_id,
                    record.wrapped,
                    record.created_at,
                ),
            )

    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord:
        rows = self._read(
            "SELECT key_id, session_id, master_key_id, wrapped, created_at FROM wrapped_keys "
            "WHERE key_id=?",
            (key_id,),
        )
        if not rows:
            raise NotFoundError(f"data key {key_id} does not exist")
        r = rows[0]
        return WrappedKeyRecord(r[0], r[1], r[2], bytes(r[3]), r[4])

    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]:
        rows = self._read(
            "SELECT key_id, session_id, master_key_id, wrapped, created_at FROM wrapped_keys "
            "ORDER BY created_at, key_id"
        )
        return [WrappedKeyRecord(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    @_offloaded
    def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None:
        with self._tx() as db:
            for record in records:
                cursor = db.execute(
                    "UPDATE wrapped_keys SET master_key_id=?, wrapped=? WHERE key_id=?",
                    (record.master_key_id, record.wrapped, record.key_id),
                )
                if cursor.rowcount == 0:
                    raise NotFoundError(f"data key {record.key_id} does not exist")

    # manifests

    @_offloaded
    def put_manifest(self, record: ManifestRecord) -> None:
        with self._tx() as db:
            if not db.execute(
                "SELECT 1 FROM sessions WHERE session_id=?", (record.session_id,)
            ).fetchone():
                raise NotFoundError(f"session {record.session_id} does not exist")
            row = db.execute(
                "SELECT manifest, signature FROM manifests WHERE session_id=?",
                (record.session_id,),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) == record.manifest and bytes(row[1]) == record.signature:
                    return
                raise AlreadyExistsError(f"session {record.session_id} already has a manifest")
            db.execute(
                "INSERT INTO manifests VALUES (?, ?, ?, ?, ?)",
                (
                    record.session_id,
                    record.manifest,
                    record.signature,
                    record.public_key,
                    record.created_at,
                ),
            )

    async def get_manifest(self, session_id: str) -> ManifestRecord:
        rows = self._read(
            "SELECT session_id, manifest, signature, public_key, created_at FROM manifests "
            "WHERE session_id=?",
            (session_id,),
        )
        if not rows:
            raise NotFoundError(f"session {session_id} has no manifest (not finalised)")
        r = rows[0]
        return ManifestRecord(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3]), r[4])

    async def close(self) -> None:
        def shut() -> None:
            with self._lock:
                self._db.close()
            with self._read_lock:
                if self._reader is not None:
                    self._reader.close()
                self._closed = True

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
