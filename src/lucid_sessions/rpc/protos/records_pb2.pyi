from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRecord(_message.Message):
    __slots__ = ("session_id", "name", "status", "created_at", "updated_at", "started_at", "ended_at", "project", "environment", "tags", "config_json", "key_id", "hash_algorithm", "chunk_count", "raw_bytes", "stored_bytes", "root", "status_reason", "stats_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    status: str
    created_at: str
    updated_at: str
    started_at: str
    ended_at: str
    project: str
    environment: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    config_json: str
    key_id: str
    hash_algorithm: str
    chunk_count: int
    raw_bytes: int
    stored_bytes: int
    root: str
    status_reason: str
    stats_json: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., started_at: _Optional[str] = ..., ended_at: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., config_json: _Optional[str] = ..., key_id: _Optional[str] = ..., hash_algorithm: _Optional[str] = ..., chunk_count: _Optional[int] = ..., raw_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., root: _Optional[str] = ..., status_reason: _Optional[str] = ..., stats_json: _Optional[str] = ...) -> None: ...

class ChunkRecord(_message.Message):
    __slots__ = ("session_id", "sequence", "start_us", "end_us", "frame_count", "keyframe_count", "unchanged_count", "width", "height", "raw_bytes", "plain_size", "stored_size", "leaf_hash", "level", "created_at", "status", "dropped_count")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sequence: int
    start_us: int
    end_us: int
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    width: int
    height: int
    raw_bytes: int
    plain_size: int
    stored_size: int
    leaf_hash: str
    level: int
    created_at: str
    status: str
    dropped_count: int
    def __init__(self, session_id: _Optional[str] = ..., sequence: _Optional[int] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., frame_count: _Optional[int] = ..., keyframe_count: _Optional[int] = ..., unchanged_count: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., raw_bytes: _Optional[int] = ..., plain_size: _Optional[int] = ..., stored_size: _Optional[int] = ..., leaf_hash: _Optional[str] = ..., level: _Optional[int] = ..., created_at: _Optional[str] = ..., status: _Optional[str] = ..., dropped_count: _Optional[int] = ...) -> None: ...

class RawChunk(_message.Message):
    __slots__ = ("sequence", "start_us", "end_us", "frame_count", "keyframe_count", "unchanged_count", "dropped_count", "width", "height", "raw_bytes", "data")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    start_us: int
    end_us: int
    frame_count: int
    keyframe_count: int
    unchanged_count: int
    dropped_count: int
    width: int
    height: int
    raw_bytes: int
    data: bytes
    def __init__(self, sequence: _Optional[int] = ..., start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., frame_count: _Optional[int] = ..., keyframe_count: _Optional[int] = ..., unchanged_count: _Optional[int] = ..., dropped_count: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., raw_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
