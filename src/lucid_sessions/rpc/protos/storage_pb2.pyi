from google.protobuf import empty_pb2 as _empty_pb2
from lucid_sessions.rpc.protos import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WrappedKeyRecord(_message.Message):
    __slots__ = ("key_id", "session_id", "master_key_id", "wrapped", "created_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    session_id: str
    master_key_id: str
    wrapped: bytes
    created_at: str
    def __init__(self, key_id: _Optional[str] = ..., session_id: _Optional[str] = ..., master_key_id: _Optional[str] = ..., wrapped: _Optional[bytes] = ..., created_at: _Optional[str] = ...) -> None: ...

class ManifestRecord(_message.Message):
    __slots__ = ("session_id", "manifest", "signature", "public_key", "created_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    manifest: bytes
    signature: bytes
    public_key: bytes
    created_at: str
    def __init__(self, session_id: _Optional[str] = ..., manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., created_at: _Optional[str] = ...) -> None: ...

class SessionPage(_message.Message):
    __slots__ = ("items", "total", "limit", "offset")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_records_pb2.SessionRecord]
    total: int
    limit: int
    offset: int
    def __init__(self, items: _Optional[_Iterable[_Union[_records_pb2.SessionRecord, _Mapping]]] = ..., total: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class StorageHealth(_message.Message):
    __slots__ = ("ok", "free_bytes", "total_bytes", "metadata", "detail")
    OK_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    free_bytes: int
    total_bytes: int
    metadata: str
    detail: str
    def __init__(self, ok: _Optional[bool] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., metadata: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.SessionRecord
    def __init__(self, record: _Optional[_Union[_records_pb2.SessionRecord, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("status", "project", "environment", "limit", "offset")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    status: str
    project: str
    environment: str
    limit: int
    offset: int
    def __init__(self, status: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class StatusSet(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, statuses: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session_id", "changes_json", "if_status")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_JSON_FIELD_NUMBER: _ClassVar[int]
    IF_STATUS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    changes_json: str
    if_status: StatusSet
    def __init__(self, session_id: _Optional[str] = ..., changes_json: _Optional[str] = ..., if_status: _Optional[_Union[StatusSet, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PutChunkRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.ChunkRecord
    def __init__(self, record: _Optional[_Union[_records_pb2.ChunkRecord, _Mapping]] = ...) -> None: ...

class GetChunkRequest(_message.Message):
    __slots__ = ("session_id", "sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sequence: int
    def __init__(self, session_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class ListChunksRequest(_message.Message):
    __slots__ = ("session_id", "start_us", "end_us", "limit", "offset")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    start_us: int
    end_us: int
    limit: int
    offset: int
    def __init__(self, session_id: _Optional[str] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ChunkRecordList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_records_pb2.ChunkRecord]
    def __init__(self, items: _Optional[_Iterable[_Union[_records_pb2.ChunkRecord, _Mapping]]] = ...) -> None: ...

class PutWrappedKeyRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: WrappedKeyRecord
    def __init__(self, record: _Optional[_Union[WrappedKeyRecord, _Mapping]] = ...) -> None: ...

class GetWrappedKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListWrappedKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WrappedKeyRecordList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[WrappedKeyRecord]
    def __init__(self, items: _Optional[_Iterable[_Union[WrappedKeyRecord, _Mapping]]] = ...) -> None: ...

class ReplaceWrappedKeysRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[WrappedKeyRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[WrappedKeyRecord, _Mapping]]] = ...) -> None: ...

class PutManifestRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ManifestRecord
    def __init__(self, record: _Optional[_Union[ManifestRecord, _Mapping]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class StoreChunkRequest(_message.Message):
    __slots__ = ("record", "data")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.ChunkRecord
    data: bytes
    def __init__(self, record: _Optional[_Union[_records_pb2.ChunkRecord, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReadChunkRequest(_message.Message):
    __slots__ = ("session_id", "sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sequence: int
    def __init__(self, session_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class ChunkPiece(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ChunkSequencesRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ChunkSequenceList(_message.Message):
    __slots__ = ("sequences",)
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StageChunkRequest(_message.Message):
    __slots__ = ("session_id", "sequence", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sequence: int
    data: bytes
    def __init__(self, session_id: _Optional[str] = ..., sequence: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("time", "subject", "role", "action", "target", "outcome", "request_id", "details_json")
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    time: str
    subject: str
    role: str
    action: str
    target: str
    outcome: str
    request_id: str
    details_json: str
    def __init__(self, time: _Optional[str] = ..., subject: _Optional[str] = ..., role: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., request_id: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "time", "subject", "role", "action", "target", "outcome", "request_id", "details_json", "prev", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: str
    subject: str
    role: str
    action: str
    target: str
    outcome: str
    request_id: str
    details_json: str
    prev: str
    hash: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[str] = ..., subject: _Optional[str] = ..., role: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., request_id: _Optional[str] = ..., details_json: _Optional[str] = ..., prev: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

class AuditHead(_message.Message):
    __slots__ = ("seq", "hash", "time", "signature", "public_key")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    time: str
    signature: bytes
    public_key: bytes
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ..., time: _Optional[str] = ..., signature: _Optional[bytes] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("subject", "action", "target", "outcome", "since", "until", "after_seq", "limit")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    action: str
    target: str
    outcome: str
    since: str
    until: str
    after_seq: int
    limit: int
    def __init__(self, subject: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditPage(_message.Message):
    __slots__ = ("items", "next_after")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_after: int
    def __init__(self, items: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_after: _Optional[int] = ...) -> None: ...

class ListAuditHeadsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditHeadList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[AuditHead]
    def __init__(self, items: _Optional[_Iterable[_Union[AuditHead, _Mapping]]] = ...) -> None: ...

class LatestAuditHeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LatestAuditHeadReply(_message.Message):
    __slots__ = ("head",)
    HEAD_FIELD_NUMBER: _ClassVar[int]
    head: AuditHead
    def __init__(self, head: _Optional[_Union[AuditHead, _Mapping]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("jti", "expires_at", "subject", "reason")
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    jti: str
    expires_at: int
    subject: str
    reason: str
    def __init__(self, jti: _Optional[str] = ..., expires_at: _Optional[int] = ..., subject: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IsTokenRevokedRequest(_message.Message):
    __slots__ = ("jti",)
    JTI_FIELD_NUMBER: _ClassVar[int]
    jti: str
    def __init__(self, jti: _Optional[str] = ...) -> None: ...

class IsTokenRevokedReply(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ListRevokedTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedToken(_message.Message):
    __slots__ = ("jti", "subject", "reason", "revoked_at", "expires_at")
    JTI_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    jti: str
    subject: str
    reason: str
    revoked_at: str
    expires_at: int
    def __init__(self, jti: _Optional[str] = ..., subject: _Optional[str] = ..., reason: _Optional[str] = ..., revoked_at: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class RevokedTokenList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RevokedToken]
    def __init__(self, items: _Optional[_Iterable[_Union[RevokedToken, _Mapping]]] = ...) -> None: ...

class PurgeRevokedRequest(_message.Message):
    __slots__ = ("before",)
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    before: int
    def __init__(self, before: _Optional[int] = ...) -> None: ...

class PurgeRevokedReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...
