from lucid_sessions.rpc.protos import records_pb2 as _records_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProcessRequest(_message.Message):
    __slots__ = ("raw", "session_id", "wrapped_key", "level", "hash_algorithm")
    RAW_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    raw: _records_pb2.RawChunk
    session_id: str
    wrapped_key: bytes
    level: int
    hash_algorithm: str
    def __init__(self, raw: _Optional[_Union[_records_pb2.RawChunk, _Mapping]] = ..., session_id: _Optional[str] = ..., wrapped_key: _Optional[bytes] = ..., level: _Optional[int] = ..., hash_algorithm: _Optional[str] = ...) -> None: ...

class ProcessResponse(_message.Message):
    __slots__ = ("stored", "leaf_hash", "level", "seconds")
    STORED_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stored: bytes
    leaf_hash: bytes
    level: int
    seconds: float
    def __init__(self, stored: _Optional[bytes] = ..., leaf_hash: _Optional[bytes] = ..., level: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
