"""The embedded metadata store: one SQLite file in WAL mode.

Writes run on the store's own thread, one at a time, so SQLite's locks and fsyncs never
block an event loop; a whole write method is one transaction. Reads run inline on a
separate read-only connection: in WAL mode they never wait for the writer. Indexed
columns carry what lists filter and sort on; the rest of a record is kept as JSON.

The schema carries a version in ``meta``. Opening an older database applies the
migrations it lacks (each only adds tables and indexes, so it is idempotent) in the same
transaction; a newer one is refused. Version 2 added the audit log, its signed heads and
the revoked tokens. Audit entries are plain columns, one per field, so that what
verification reads is exactly what was written (and an edit made outside the store is
exactly what it sees).
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

from lucid_sessions.audit import GENESIS, AuditEntry, AuditEvent, AuditHead, chain_entry
from lucid_sessions.errors import (
    AlreadyExistsError,
    ChunkNotFoundError,
    FormatError,
    NotFoundError,
    PipelineError,
    StorageError,
)
from lucid_sessions.storage.metadata import (
    MAX_JTI_LENGTH,
    MAX_REVOCATION_NOTE,
    SESSION_FIELDS,
    AuditPage,
    ChunkRecord,
    ManifestRecord,
    RevokedToken,
    SessionPage,
    SessionRecord,
    WrappedKeyRecord,
    check_revocation,
    utc_now,
)

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 2
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
_MIGRATIONS: dict[int, str] = {
    # from version 1 to 2: the audit log, its signed heads, revoked tokens
    1: """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    subject TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL,
    details TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit_log (subject, seq);
CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action, seq);
CREATE INDEX IF NOT EXISTS audit_target ON audit_log (target, seq);
CREATE INDEX IF NOT EXISTS audit_time ON audit_log (time);
CREATE TABLE IF NOT EXISTS audit_heads (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    signature BLOB NOT NULL,
    public_key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expiry ON revoked_tokens (expires_at);
""",
}
"""SQL that takes the schema from the key's version to the next; idempotent."""

_AUDIT_COLUMNS = (
    "seq, time, subject, role, action, target, outcome, request_id, details, prev, hash"
)
_HEAD_COLUMNS = "seq, hash, time, signature, public_key"
_REVOKED_COLUMNS = "jti, subject, reason, revoked_at, expires_at"


def _statements(script: str) -> list[str]:
    return [statement for statement in script.split(";") if statement.strip()]


def _audit_from_row(row: Sequence[Any]) -> AuditEntry:
    """An entry as stored, even when edited outside the store (see the metadata rules)."""
    text = row[8]
    try:
        details = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        details = None
    if not isinstance(details, dict):
        details = {"malformed": str(text)[:1000]}
    return AuditEntry(
        seq=int(row[0]),
        time=str(row[1]),
        subject=str(row[2]),
        role=str(row[3]),
        action=str(row[4]),
        target=str(row[5]),
        outcome=str(row[6]),
        request_id=str(row[7]),
        details=details,
        prev=str(row[9]),
        hash=str(row[10]),
    )


def _head_from_row(row: Sequence[Any]) -> AuditHead:
    return AuditHead(
        seq=int(row[0]),
        hash=str(row[1]),
        time=str(row[2]),
        signature=bytes(row[3]),
        public_key=bytes(row[4]),
    )


def _revoked_from_row(row: Sequence[Any]) -> RevokedToken:
    return RevokedToken(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]))


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
                self._migrate(db)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open metadata database {self.path}: {exc}") from exc

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older one up to :data:`SCHEMA_VERSION`."""
        for statement in _statements(_SCHEMA):
            db.execute(statement)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        found = "1" if row is None else str(row[0])  # _SCHEMA is version 1
        version = int(found) if found.isdigit() else 0
        if not 1 <= version <= SCHEMA_VERSION:
            raise StorageError(
                f"metadata database {self.path} has schema version {found}; "
                f"this program reads version {SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _statements(_MIGRATIONS[step]):
                db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

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

    # the audit log

    @_offloaded
    def append_audit(self, event: AuditEvent) -> AuditEntry:
        with self._tx() as db:
            last = db.execute(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            # Never reuse a seq a head has named, even if entries after it were deleted:
            # the gap stays visible to verification.
            head = db.execute("SELECT MAX(seq) FROM audit_heads").fetchone()
            top = max(last[0] if last else 0, head[0] or 0)
            entry = chain_entry(event, seq=top + 1, prev=last[1] if last else GENESIS)
            db.execute(
                f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.seq,
                    entry.time,
                    entry.subject,
                    entry.role,
                    entry.action,
                    entry.target,
                    entry.outcome,
                    entry.request_id,
                    json.dumps(dict(entry.details), sort_keys=True, ensure_ascii=False),
                    entry.prev,
                    entry.hash,
                ),
            )
        return entry

    async def list_audit(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        where: list[str] = ["seq > ?"]
        args: list[Any] = [after_seq]
        for column, value in (
            ("subject", subject),
            ("action", action),
            ("target", target),
            ("outcome", outcome),
        ):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        rows = self._read(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "
            "ORDER BY seq LIMIT ?",
            [*args, max(limit, 0) + 1],
        )
        items = tuple(_audit_from_row(r) for r in rows[: max(limit, 0)])
        more = len(rows) > len(items) and items
        return AuditPage(items=items, next_after=items[-1].seq if more else None)

    @_offloaded
    def put_audit_head(self, head: AuditHead) -> None:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_HEAD_COLUMNS} FROM audit_heads WHERE seq=?", (head.seq,)
            ).fetchone()
            if row is not None:
                if _head_from_row(row) == head:
                    return
                raise AlreadyExistsError(f"the audit log already has a head at entry {head.seq}")
            db.execute(
                f"INSERT INTO audit_heads ({_HEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (head.seq, head.hash, head.time, head.signature, head.public_key),
            )

    async def list_audit_heads(self) -> list[AuditHead]:
        rows = self._read(f"SELECT {_HEAD_COLUMNS} FROM audit_heads ORDER BY seq")
        return [_head_from_row(r) for r in rows]

    async def latest_audit_head(self) -> AuditHead | None:
        rows = self._read(f"SELECT {_HEAD_COLUMNS} FROM audit_heads ORDER BY seq DESC LIMIT 1")
        return _head_from_row(rows[0]) if rows else None

    # revoked tokens

    @_offloaded
    def revoke_token(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        check_revocation(jti, expires_at)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO revoked_tokens ({_REVOKED_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (jti) DO UPDATE SET "
                "expires_at = MAX(expires_at, excluded.expires_at)",
                (
                    jti,
                    subject[:MAX_REVOCATION_NOTE],
                    reason[:MAX_REVOCATION_NOTE],
                    utc_now(),
                    expires_at,
                ),
            )

    async def is_token_revoked(self, jti: str) -> bool:
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            return False  # no valid token carries such an id; the verifier refuses it
        return bool(self._read("SELECT 1 FROM revoked_tokens WHERE jti=?", (jti,)))

    async def list_revoked_tokens(self) -> list[RevokedToken]:
        rows = self._read(f"SELECT {_REVOKED_COLUMNS} FROM revoked_tokens ORDER BY revoked_at, jti")
        return [_revoked_from_row(r) for r in rows]

    @_offloaded
    def purge_revoked(self, before: int) -> int:
        with self._tx() as db:
            cursor = db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (before,))
            return int(cursor.rowcount)

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
