"""The production metadata store: MongoDB through pymongo's async API.

It implements :class:`~lucid_sessions.storage.metadata.MetadataStore` with the same
contract as the SQLite store (``tests/test_metadata_store.py`` runs the same suite against
both), using only what a *standalone* mongod offers: single-document atomicity, unique
indexes, no multi-document transactions and no change streams. Where SQLite wraps several
statements in one transaction, this store uses ordered steps that are each idempotent, so
a write that failed halfway (connection lost, process killed) is completed by retrying it:

- **Inserts** (sessions, chunks, wrapped keys, manifests, audit heads) are ``insert_one``
  keyed by the record's natural id, with a unique index behind it. A duplicate key is
  compared with what was sent: the same record is a no-op (a retried write leaves one
  document), another one is refused (AlreadyExistsError). ``create_session`` refuses any
  existing id, as the contract asks. Nothing depends on ``$setOnInsert``.
- **Session updates** are one ``find_one_and_update`` whose filter carries ``if_status``:
  the check and the change are a single atomic document operation.
- **Deleting a session** removes its chunk records, wrapped keys and manifest first and
  the session document last. A delete that stops halfway leaves the session visible, so
  deleting it again finishes the job; the id is reusable only once nothing of it is left.
- **Re-wrapping keys** (``replace_wrapped_keys``) checks that every key exists before it
  writes anything (an unknown key changes nothing), then rewrites one key document at a
  time. When a write fails it puts back the keys already rewritten before raising. Only a
  process killed mid-batch can leave some keys rewritten; each key document names the
  master key that wraps it, so every key stays usable, and running the batch again (it is
  idempotent) finishes it.
- **The audit log** has a single writer: the storage component is the only process that
  appends, and this store serialises its appends with an :class:`asyncio.Lock` (read the
  last entry and the highest head, chain, insert). The entry's ``seq`` is its ``_id`` and
  is also uniquely indexed, so a second writer somewhere else cannot fork the chain: its
  insert at an already used ``seq`` fails, loudly (StorageError), instead of adding a
  second entry chaining to the same one.

Nothing filters on binary values either (wrapped keys, manifests, signatures are read by
id and compared here), and the indexes are found by their keys, not their names: the test
stand-in, nx-27017, differs from MongoDB on all three (see ``tests/mongo_fixtures.py``).

Audit ``details`` are kept as the canonical JSON text of the mapping, like SQLite does:
integers, booleans and nulls keep their types, any key is allowed (MongoDB restricts
``$`` and ``.`` in field names), and an entry edited outside the store reads back as it
is, so verification can name it. Session ``config`` and ``stats`` are plain subdocuments.
MongoDB hands 64-bit integers back as :class:`bson.int64.Int64`; records are rebuilt with
plain ``int``.

Errors are translated at the boundary: an unreachable server is
:class:`~lucid_sessions.cluster.interfaces.Unavailable` (the call may be retried), any
other database failure is StorageError. The connection URI may carry a password, so every
message names the server through :func:`redact_uri` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Concatenate, ParamSpec, TypeVar

from bson.int64 import Int64
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidOperation,
    PyMongoError,
)

from lucid_sessions.audit import GENESIS, AuditEntry, AuditEvent, AuditHead, chain_entry
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import (
    AlreadyExistsError,
    ChunkNotFoundError,
    FormatError,
    InvalidConfigError,
    LucidError,
    NotFoundError,
    PipelineError,
    StorageError,
)
from lucid_sessions.redact import redact_url, url_secrets
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

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_TIMEOUT_MS",
    "INDEXES",
    "SCHEMES",
    "MongoStore",
    "redact_uri",
]

SCHEMES = ("mongodb://", "mongodb+srv://")
DEFAULT_DATABASE = "lucid_sessions"
DEFAULT_TIMEOUT_MS = 3000
"""Server selection and connect timeout: a MongoDB that does not answer must become a
quick :class:`Unavailable`, not a call that hangs for pymongo's default 30 seconds."""

# Collections
SESSIONS = "sessions"
CHUNKS = "chunks"
WRAPPED_KEYS = "wrapped_keys"
MANIFESTS = "manifests"
AUDIT_LOG = "audit_log"
AUDIT_HEADS = "audit_heads"
REVOKED_TOKENS = "revoked_tokens"


def _index(name: str, *keys: str, unique: bool = False) -> IndexModel:
    return IndexModel([(key, ASCENDING) for key in keys], name=name, unique=unique)


INDEXES: dict[str, list[IndexModel]] = {
    SESSIONS: [
        _index("sessions_session_id", "session_id", unique=True),
        _index("sessions_created", "created_at", "session_id"),
        # each list filter, then the list order
        _index("sessions_status", "status", "created_at", "session_id"),
        _index("sessions_project", "project", "created_at", "session_id"),
        _index("sessions_environment", "environment", "created_at", "session_id"),
    ],
    CHUNKS: [
        _index("chunks_session_sequence", "session_id", "sequence", unique=True),
    ],
    WRAPPED_KEYS: [
        _index("wrapped_keys_key_id", "key_id", unique=True),
        _index("wrapped_keys_session", "session_id"),
        _index("wrapped_keys_created", "created_at", "key_id"),
    ],
    MANIFESTS: [
        _index("manifests_session_id", "session_id", unique=True),
    ],
    AUDIT_LOG: [
        _index("audit_seq", "seq", unique=True),
        _index("audit_subject", "subject", "seq"),
        _index("audit_action", "action", "seq"),
        _index("audit_target", "target", "seq"),
        _index("audit_outcome", "outcome", "seq"),
        _index("audit_time", "time"),
    ],
    AUDIT_HEADS: [
        _index("audit_heads_seq", "seq", unique=True),
    ],
    REVOKED_TOKENS: [
        _index("revoked_tokens_expiry", "expires_at"),
        _index("revoked_tokens_order", "revoked_at", "jti"),
    ],
}
"""Every index, by collection; created (idempotently, by name) when the store opens."""


# A query option whose value is a credential (tlsCertificateKeyFilePassword=,
# authMechanismProperties=AWS_SESSION_TOKEN:..., password=, ...).
def redact_uri(uri: str) -> str:
    """``uri`` with its credentials hidden (see :mod:`lucid_sessions.redact`)."""
    return redact_url(uri, what="MongoDB URI")


# Documents <-> records ---------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` with BSON's types turned back into Python's: Int64 to int, nested."""
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _session_document(record: SessionRecord) -> dict[str, Any]:
    document = asdict(record)
    document["_id"] = record.session_id
    document["tags"] = list(record.tags)
    document["config"] = dict(record.config)
    document["stats"] = dict(record.stats)
    return document


def _settable(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(changes)
    if "tags" in values:
        values["tags"] = list(values["tags"])
    for name in ("config", "stats"):
        if name in values and isinstance(values[name], Mapping):
            values[name] = dict(values[name])
    return values


def _session(document: Mapping[str, Any]) -> SessionRecord:
    try:
        data = _plain({k: v for k, v in document.items() if k != "_id"})
        data["tags"] = tuple(data.get("tags", ()))
        return SessionRecord(**data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"MongoDB holds a malformed session record: {exc}") from exc


def _chunk(document: Mapping[str, Any]) -> ChunkRecord:
    try:
        return ChunkRecord(**_plain({k: v for k, v in document.items() if k != "_id"}))
    except (TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds a malformed chunk record: {exc}") from exc


def _wrapped_key(document: Mapping[str, Any]) -> WrappedKeyRecord:
    try:
        return WrappedKeyRecord(
            key_id=str(document["key_id"]),
            session_id=str(document["session_id"]),
            master_key_id=str(document["master_key_id"]),
            wrapped=bytes(document["wrapped"]),
            created_at=str(document["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds a malformed wrapped key record: {exc}") from exc


def _manifest(document: Mapping[str, Any]) -> ManifestRecord:
    try:
        return ManifestRecord(
            session_id=str(document["session_id"]),
            manifest=bytes(document["manifest"]),
            signature=bytes(document["signature"]),
            public_key=bytes(document["public_key"]),
            created_at=str(document["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds a malformed manifest record: {exc}") from exc


def _details_text(details: Mapping[str, object]) -> str:
    return json.dumps(dict(details), sort_keys=True, ensure_ascii=False)


def _audit_document(entry: AuditEntry) -> dict[str, Any]:
    document = asdict(entry)
    document["_id"] = entry.seq
    document["details"] = _details_text(entry.details)
    return document


def _audit_entry(document: Mapping[str, Any]) -> AuditEntry:
    """An entry as stored, even when edited outside the store (see the metadata rules)."""
    text = document.get("details")
    details: Any = None
    if isinstance(text, str):
        try:
            details = json.loads(text)
        except (ValueError, RecursionError):
            details = None
    if not isinstance(details, dict):
        details = {"malformed": str(text)[:1000]}
    try:
        return AuditEntry(
            seq=int(document["seq"]),
            time=str(document.get("time", "")),
            subject=str(document.get("subject", "")),
            role=str(document.get("role", "")),
            action=str(document.get("action", "")),
            target=str(document.get("target", "")),
            outcome=str(document.get("outcome", "")),
            request_id=str(document.get("request_id", "")),
            details=details,
            prev=str(document.get("prev", "")),
            hash=str(document.get("hash", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds an audit entry without a seq: {exc}") from exc


def _head_document(head: AuditHead) -> dict[str, Any]:
    return {
        "_id": head.seq,
        "seq": head.seq,
        "hash": head.hash,
        "time": head.time,
        "signature": head.signature,
        "public_key": head.public_key,
    }


def _head(document: Mapping[str, Any]) -> AuditHead:
    try:
        return AuditHead(
            seq=int(document["seq"]),
            hash=str(document["hash"]),
            time=str(document["time"]),
            signature=bytes(document["signature"]),
            public_key=bytes(document["public_key"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds a malformed audit head: {exc}") from exc


def _revoked(document: Mapping[str, Any]) -> RevokedToken:
    try:
        return RevokedToken(
            jti=str(document["jti"]),
            subject=str(document["subject"]),
            reason=str(document["reason"]),
            revoked_at=str(document["revoked_at"]),
            expires_at=int(document["expires_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"MongoDB holds a malformed token revocation: {exc}") from exc


def _limit(limit: int | None) -> int | None:
    """A list limit as SQLite reads one: None or negative is no limit. (pymongo's
    ``limit(0)`` would mean no limit too, so a limit of 0 is answered without a query.)"""
    return None if limit is None or limit < 0 else limit


# Error translation --------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def _translated(
    method: Callable[Concatenate[MongoStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[MongoStore, P], Coroutine[Any, Any, R]]:
    """Turn pymongo's errors into the package's at the boundary (see the module)."""

    @functools.wraps(method)
    async def call(self: MongoStore, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._closed:
            raise StorageError(f"MongoDB store {self.where} is closed")
        try:
            return await method(self, *args, **kwargs)
        except (LucidError, ValueError):
            raise
        except Exception as exc:
            raise self._error(exc, method.__name__) from exc

    return call


class MongoStore:
    """:class:`~lucid_sessions.storage.metadata.MetadataStore` on one MongoDB database.

    Open it with :meth:`open`, which checks that the server answers and creates the
    indexes; the constructor connects to nothing. A store belongs to the event loop it
    is first used on (a pymongo rule).
    """

    kind = "mongodb"

    def __init__(
        self,
        uri: str,
        *,
        database: str = DEFAULT_DATABASE,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        self.where = redact_uri(uri)
        self._secrets = url_secrets(uri)
        if not uri.startswith(SCHEMES):
            raise InvalidConfigError(
                f"MongoDB URI {self.where} must start with mongodb:// or mongodb+srv://",
                details={"uri": self.where},
            )
        if not database or not isinstance(database, str):
            raise InvalidConfigError("MongoDB database name must not be empty")
        try:
            self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                uri,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                appname="lucid-sessions",
            )
        except (ConfigurationError, ValueError, TypeError):
            # The parser's own message is not repeated: it may quote part of a password.
            raise InvalidConfigError(
                f"MongoDB URI {self.where} is not valid: check the hosts, options and "
                "percent-encode special characters in the user name and password",
                details={"uri": self.where},
            ) from None
        try:
            self._db: AsyncDatabase[dict[str, Any]] = self._client[database]
        except (PyMongoError, ValueError, TypeError) as exc:
            raise InvalidConfigError(f"MongoDB database name {database!r} is not valid") from exc
        self.database = database
        self._closed = False
        self._audit_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        uri: str,
        *,
        database: str = DEFAULT_DATABASE,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> MongoStore:
        """A store whose server answered a ping and whose indexes exist."""
        store = cls(uri, database=database, timeout_ms=timeout_ms)
        try:
            await store.ping()
            await store.create_indexes()
        except BaseException:
            await store.close()
            raise
        return store

    def _error(self, exc: BaseException, doing: str) -> LucidError:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = text[:500]
        details: dict[str, object] = {"mongodb": self.where}
        if isinstance(exc, ConnectionFailure):
            return Unavailable(
                f"MongoDB at {self.where} is unreachable ({doing}): {text}", details=details
            )
        if isinstance(exc, InvalidOperation) and self._closed:
            return StorageError(f"MongoDB store {self.where} is closed", details=details)
        return StorageError(f"MongoDB at {self.where} failed ({doing}): {text}", details=details)

    def _collection(self, name: str) -> AsyncCollection[dict[str, Any]]:
        return self._db[name]

    @_translated
    async def ping(self) -> None:
        """Check that the server answers (Unavailable naming it, redacted, if not)."""
        await self._client.admin.command("ping")

    @_translated
    async def create_indexes(self) -> None:
        """Create every index of :data:`INDEXES`; those that exist are left as they are."""
        for name, models in INDEXES.items():
            await self._collection(name).create_indexes(models)

    # sessions

    @_translated
    async def create_session(self, record: SessionRecord) -> None:
        try:
            await self._collection(SESSIONS).insert_one(_session_document(record))
        except DuplicateKeyError:
            raise AlreadyExistsError(f"session {record.session_id} already exists") from None

    async def _session_exists(self, session_id: str) -> bool:
        found = await self._collection(SESSIONS).find_one({"_id": session_id}, {"_id": 1})
        return found is not None

    @_translated
    async def get_session(self, session_id: str) -> SessionRecord:
        document = await self._collection(SESSIONS).find_one({"_id": session_id})
        if document is None:
            raise NotFoundError(f"session {session_id} does not exist")
        return _session(document)

    @_translated
    async def list_sessions(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        environment: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> SessionPage:
        query = {
            name: value
            for name, value in (
                ("status", status),
                ("project", project),
                ("environment", environment),
            )
            if value is not None
        }
        sessions = self._collection(SESSIONS)
        total = await sessions.count_documents(query)
        items: tuple[SessionRecord, ...] = ()
        bounded = _limit(limit)
        if bounded != 0:
            cursor = sessions.find(query).sort([("created_at", 1), ("session_id", 1)])
            cursor = cursor.skip(max(offset, 0))
            if bounded is not None:
                cursor = cursor.limit(bounded)
            items = tuple([_session(d) async for d in cursor])
        return SessionPage(items=items, total=int(total), limit=limit, offset=offset)

    @_translated
    async def update_session(
        self,
        session_id: str,
        changes: Mapping[str, Any],
        *,
        if_status: Sequence[str] | None = None,
    ) -> SessionRecord:
        unknown = set(changes) - SESSION_FIELDS
        if unknown or "session_id" in changes:
            raise ValueError(f"cannot update session fields {sorted(unknown | {'session_id'})}")
        values = _settable(changes)
        values.setdefault("updated_at", utc_now())
        query: dict[str, Any] = {"_id": session_id}
        if if_status is not None:
            query["status"] = {"$in": list(if_status)}
        # One atomic document operation: the status check and the change cannot interleave
        # with another update.
        document = await self._collection(SESSIONS).find_one_and_update(
            query, {"$set": values}, return_document=ReturnDocument.AFTER
        )
        if document is not None:
            return _session(document)
        current = await self._collection(SESSIONS).find_one({"_id": session_id}, {"status": 1})
        if current is None:
            raise NotFoundError(f"session {session_id} does not exist")
        raise PipelineError(
            f"session {session_id} is {current.get('status')}, expected one of "
            f"{', '.join(if_status or ())}"
        )

    @_translated
    async def delete_session(self, session_id: str) -> None:
        # Children first, the session last: a delete interrupted halfway leaves the session
        # visible, and deleting it again finishes the job (every step is idempotent).
        if not await self._session_exists(session_id):
            raise NotFoundError(f"session {session_id} does not exist")
        for name in (CHUNKS, WRAPPED_KEYS, MANIFESTS):
            await self._collection(name).delete_many({"session_id": session_id})
        await self._collection(SESSIONS).delete_one({"_id": session_id})

    # chunks

    @_translated
    async def put_chunk(self, record: ChunkRecord) -> None:
        if not await self._session_exists(record.session_id):
            raise NotFoundError(f"session {record.session_id} does not exist")
        chunks = self._collection(CHUNKS)
        try:
            await chunks.insert_one(asdict(record))
            return
        except DuplicateKeyError:
            pass
        existing = await chunks.find_one(
            {"session_id": record.session_id, "sequence": record.sequence}, {"leaf_hash": 1}
        )
        if existing is not None and existing.get("leaf_hash") == record.leaf_hash:
            return
        raise AlreadyExistsError(
            f"chunk {record.sequence} of session {record.session_id} is already "
            "recorded with another hash"
        )

    @_translated
    async def get_chunk(self, session_id: str, sequence: int) -> ChunkRecord:
        document = await self._collection(CHUNKS).find_one(
            {"session_id": session_id, "sequence": sequence}
        )
        if document is None:
            raise ChunkNotFoundError(f"chunk {sequence} of session {session_id} does not exist")
        return _chunk(document)

    @_translated
    async def list_chunks(
        self,
        session_id: str,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChunkRecord]:
        bounded = _limit(limit)
        if bounded == 0:
            return []
        query: dict[str, Any] = {"session_id": session_id}
        if start_us is not None:
            query["end_us"] = {"$gte": start_us}
        if end_us is not None:
            query["start_us"] = {"$lte": end_us}
        cursor = self._collection(CHUNKS).find(query).sort("sequence", ASCENDING)
        cursor = cursor.skip(max(offset, 0))
        if bounded is not None:
            cursor = cursor.limit(bounded)
        return [_chunk(d) async for d in cursor]

    # keys

    @_translated
    async def put_wrapped_key(self, record: WrappedKeyRecord) -> None:
        keys = self._collection(WRAPPED_KEYS)
        try:
            await keys.insert_one({"_id": record.key_id, **asdict(record)})
            return
        except DuplicateKeyError:
            pass
        existing = await keys.find_one({"_id": record.key_id})
        if existing is not None and _wrapped_key(existing).wrapped == record.wrapped:
            return
        raise AlreadyExistsError(f"data key {record.key_id} already exists")

    @_translated
    async def get_wrapped_key(self, key_id: str) -> WrappedKeyRecord:
        document = await self._collection(WRAPPED_KEYS).find_one({"_id": key_id})
        if document is None:
            raise NotFoundError(f"data key {key_id} does not exist")
        return _wrapped_key(document)

    @_translated
    async def list_wrapped_keys(self) -> list[WrappedKeyRecord]:
        cursor = self._collection(WRAPPED_KEYS).find().sort([("created_at", 1), ("key_id", 1)])
        return [_wrapped_key(d) async for d in cursor]

    @_translated
    async def replace_wrapped_keys(self, records: Sequence[WrappedKeyRecord]) -> None:
        keys = self._collection(WRAPPED_KEYS)
        wanted = [r.key_id for r in records]
        before = {d["_id"]: _wrapped_key(d) async for d in keys.find({"_id": {"$in": wanted}})}
        for key_id in wanted:
            if key_id not in before:
                raise NotFoundError(f"data key {key_id} does not exist")
        done: list[str] = []
        try:
            for record in records:
                result = await keys.update_one(
                    {"_id": record.key_id},
                    {"$set": {"master_key_id": record.master_key_id, "wrapped": record.wrapped}},
                )
                if result.matched_count == 0:  # deleted since the check above
                    raise NotFoundError(f"data key {record.key_id} does not exist")
                done.append(record.key_id)
        except Exception:
            await self._restore_keys([before[k] for k in done])
            raise

    async def _restore_keys(self, originals: Sequence[WrappedKeyRecord]) -> None:
        """Put back keys a failed :meth:`replace_wrapped_keys` had already rewritten; if
        even that fails, say which keys may be left under the new master key."""
        keys = self._collection(WRAPPED_KEYS)
        try:
            for record in originals:
                await keys.update_one(
                    {"_id": record.key_id},
                    {"$set": {"master_key_id": record.master_key_id, "wrapped": record.wrapped}},
                )
        except PyMongoError as exc:
            raise StorageError(
                f"re-wrapping data keys failed and {len(originals)} of them could not be put "
                f"back ({self._error(exc, 'restoring keys').message}); each key names its "
                "master key, so all stay usable: run the rotation again to finish it",
                details={"key_ids": [r.key_id for r in originals]},
            ) from exc

    # manifests

    @_translated
    async def put_manifest(self, record: ManifestRecord) -> None:
        if not await self._session_exists(record.session_id):
            raise NotFoundError(f"session {record.session_id} does not exist")
        manifests = self._collection(MANIFESTS)
        try:
            await manifests.insert_one({"_id": record.session_id, **asdict(record)})
            return
        except DuplicateKeyError:
            pass
        existing = await manifests.find_one({"_id": record.session_id})
        if existing is not None:
            stored = _manifest(existing)
            if (stored.manifest, stored.signature) == (record.manifest, record.signature):
                return
        raise AlreadyExistsError(f"session {record.session_id} already has a manifest")

    @_translated
    async def get_manifest(self, session_id: str) -> ManifestRecord:
        document = await self._collection(MANIFESTS).find_one({"_id": session_id})
        if document is None:
            raise NotFoundError(f"session {session_id} has no manifest (not finalised)")
        return _manifest(document)

    # the audit log

    @_translated
    async def append_audit(self, event: AuditEvent) -> AuditEntry:
        log = self._collection(AUDIT_LOG)
        async with self._audit_lock:  # one append at a time: this store is the only writer
            last = await log.find_one({}, {"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)])
            head = await self._collection(AUDIT_HEADS).find_one(
                {}, {"seq": 1}, sort=[("seq", DESCENDING)]
            )
            # Never reuse a seq a head has named, even if entries after it were deleted:
            # the gap stays visible to verification.
            top = max(int(last["seq"]) if last else 0, int(head["seq"]) if head else 0)
            entry = chain_entry(event, seq=top + 1, prev=str(last["hash"]) if last else GENESIS)
            try:
                await log.insert_one(_audit_document(entry))
            except DuplicateKeyError:
                stored = await log.find_one({"seq": entry.seq}, {"hash": 1})
                if stored is not None and stored.get("hash") == entry.hash:
                    return entry  # our own insert, retried
                raise StorageError(
                    f"audit entry {entry.seq} was written by another writer: the audit log "
                    "has a single writer (the storage component); refusing to fork the chain",
                    details={"seq": entry.seq},
                ) from None
            except ConnectionFailure:
                # The insert may have reached the server before the connection broke.
                stored = await log.find_one({"seq": entry.seq}, {"hash": 1})
                if stored is not None and stored.get("hash") == entry.hash:
                    return entry
                raise
        return entry

    @_translated
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
        if limit <= 0:
            return AuditPage(items=(), next_after=None)
        query: dict[str, Any] = {"seq": {"$gt": after_seq}}
        for name, value in (
            ("subject", subject),
            ("action", action),
            ("target", target),
            ("outcome", outcome),
        ):
            if value is not None:
                query[name] = value
        time: dict[str, str] = {}
        if since is not None:
            time["$gte"] = since
        if until is not None:
            time["$lt"] = until
        if time:
            query["time"] = time
        cursor = self._collection(AUDIT_LOG).find(query).sort("seq", ASCENDING).limit(limit + 1)
        found = [_audit_entry(d) async for d in cursor]
        items = tuple(found[:limit])
        more = len(found) > limit
        return AuditPage(items=items, next_after=items[-1].seq if more else None)

    @_translated
    async def put_audit_head(self, head: AuditHead) -> None:
        heads = self._collection(AUDIT_HEADS)
        try:
            await heads.insert_one(_head_document(head))
            return
        except DuplicateKeyError:
            pass
        existing = await heads.find_one({"_id": head.seq})
        if existing is not None and _head(existing) == head:
            return
        raise AlreadyExistsError(f"the audit log already has a head at entry {head.seq}")

    @_translated
    async def list_audit_heads(self) -> list[AuditHead]:
        cursor = self._collection(AUDIT_HEADS).find().sort("seq", ASCENDING)
        return [_head(d) async for d in cursor]

    @_translated
    async def latest_audit_head(self) -> AuditHead | None:
        document = await self._collection(AUDIT_HEADS).find_one({}, sort=[("seq", DESCENDING)])
        return None if document is None else _head(document)

    # revoked tokens

    @_translated
    async def revoke_token(self, jti: str, *, expires_at: int, subject: str, reason: str) -> None:
        check_revocation(jti, expires_at)
        tokens = self._collection(REVOKED_TOKENS)
        try:
            await tokens.insert_one(
                {
                    "_id": jti,
                    "jti": jti,
                    "subject": subject[:MAX_REVOCATION_NOTE],
                    "reason": reason[:MAX_REVOCATION_NOTE],
                    "revoked_at": utc_now(),
                    "expires_at": expires_at,
                }
            )
        except DuplicateKeyError:
            # Revoked before: keep the first note, take the later expiry (atomic $max).
            await tokens.update_one({"_id": jti}, {"$max": {"expires_at": expires_at}})

    @_translated
    async def is_token_revoked(self, jti: str) -> bool:
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            return False  # no valid token carries such an id; the verifier refuses it
        found = await self._collection(REVOKED_TOKENS).find_one({"_id": jti}, {"_id": 1})
        return found is not None

    @_translated
    async def list_revoked_tokens(self) -> list[RevokedToken]:
        cursor = self._collection(REVOKED_TOKENS).find().sort([("revoked_at", 1), ("jti", 1)])
        return [_revoked(d) async for d in cursor]

    @_translated
    async def purge_revoked(self, before: int) -> int:
        result = await self._collection(REVOKED_TOKENS).delete_many({"expires_at": {"$lt": before}})
        return int(result.deleted_count)

    async def close(self) -> None:
        """Close the client; later calls raise StorageError. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(PyMongoError):  # nothing more to release
            await self._client.close()

    def __repr__(self) -> str:
        return f"MongoStore({self.where!r}, database={self.database!r})"
