from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptureSpec(_message.Message):
    __slots__ = ("source", "fps", "width", "height", "settings_json", "password", "max_duration_us", "max_bytes")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_US_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    source: str
    fps: float
    width: int
    height: int
    settings_json: str
    password: str
    max_duration_us: int
    max_bytes: int
    def __init__(self, source: _Optional[str] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., settings_json: _Optional[str] = ..., password: _Optional[str] = ..., max_duration_us: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class RecorderStatus(_message.Message):
    __slots__ = ("session_id", "state", "captured", "dropped", "unchanged", "effective_fps", "chunks")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FPS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: str
    captured: int
    dropped: int
    unchanged: int
    effective_fps: float
    chunks: int
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[str] = ..., captured: _Optional[int] = ..., dropped: _Optional[int] = ..., unchanged: _Optional[int] = ..., effective_fps: _Optional[float] = ..., chunks: _Optional[int] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("session_id", "spec")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    spec: CaptureSpec
    def __init__(self, session_id: _Optional[str] = ..., spec: _Optional[_Union[CaptureSpec, _Mapping]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class PushFrameRequest(_message.Message):
    __slots__ = ("session_id", "timestamp_us", "width", "height", "pixels")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    timestamp_us: int
    width: int
    height: int
    pixels: bytes
    def __init__(self, session_id: _Optional[str] = ..., timestamp_us: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixels: _Optional[bytes] = ...) -> None: ...
