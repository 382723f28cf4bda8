from google.protobuf import empty_pb2 as _empty_pb2
from lucid_sessions.rpc.protos import records_pb2 as _records_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PipelineCreateSessionRequest(_message.Message):
    __slots__ = ("spec_json", "password")
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    password: str
    def __init__(self, spec_json: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class StartSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class StopSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PauseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ResumeSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PipelineUpdateSessionRequest(_message.Message):
    __slots__ = ("session_id", "changes_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    changes_json: str
    def __init__(self, session_id: _Optional[str] = ..., changes_json: _Optional[str] = ...) -> None: ...

class PipelineDeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SubmitChunkRequest(_message.Message):
    __slots__ = ("session_id", "raw")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    raw: _records_pb2.RawChunk
    def __init__(self, session_id: _Optional[str] = ..., raw: _Optional[_Union[_records_pb2.RawChunk, _Mapping]] = ...) -> None: ...

class RecordingEnd(_message.Message):
    __slots__ = ("session_id", "interrupted", "reason", "last_sequence", "stats_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    interrupted: bool
    reason: str
    last_sequence: int
    stats_json: str
    def __init__(self, session_id: _Optional[str] = ..., interrupted: _Optional[bool] = ..., reason: _Optional[str] = ..., last_sequence: _Optional[int] = ..., stats_json: _Optional[str] = ...) -> None: ...

class RecordingEndedRequest(_message.Message):
    __slots__ = ("end",)
    END_FIELD_NUMBER: _ClassVar[int]
    end: RecordingEnd
    def __init__(self, end: _Optional[_Union[RecordingEnd, _Mapping]] = ...) -> None: ...

class PipelineStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PipelineStatusResponse(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class PausePipelineRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumePipelineRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
