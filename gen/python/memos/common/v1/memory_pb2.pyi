import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemoryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_TYPE_UNSPECIFIED: _ClassVar[MemoryType]
    MEMORY_TYPE_WORKING: _ClassVar[MemoryType]
    MEMORY_TYPE_LONG_TERM: _ClassVar[MemoryType]
    MEMORY_TYPE_USER: _ClassVar[MemoryType]
    MEMORY_TYPE_OUTER: _ClassVar[MemoryType]
    MEMORY_TYPE_TOOL_SCHEMA: _ClassVar[MemoryType]
    MEMORY_TYPE_TOOL_TRAJECTORY: _ClassVar[MemoryType]
    MEMORY_TYPE_RAW_FILE: _ClassVar[MemoryType]
    MEMORY_TYPE_PREFERENCE: _ClassVar[MemoryType]

class MemoryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_STATUS_UNSPECIFIED: _ClassVar[MemoryStatus]
    MEMORY_STATUS_ACTIVATED: _ClassVar[MemoryStatus]
    MEMORY_STATUS_ARCHIVED: _ClassVar[MemoryStatus]
    MEMORY_STATUS_RESOLVING: _ClassVar[MemoryStatus]

class SourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_TYPE_UNSPECIFIED: _ClassVar[SourceType]
    SOURCE_TYPE_CHAT: _ClassVar[SourceType]
    SOURCE_TYPE_FILE: _ClassVar[SourceType]
    SOURCE_TYPE_IMAGE: _ClassVar[SourceType]
    SOURCE_TYPE_AUDIO: _ClassVar[SourceType]
    SOURCE_TYPE_TOOL_CALL: _ClassVar[SourceType]
    SOURCE_TYPE_TOOL_RESULT: _ClassVar[SourceType]
    SOURCE_TYPE_TOOL_SCHEMA: _ClassVar[SourceType]
    SOURCE_TYPE_SYSTEM: _ClassVar[SourceType]
MEMORY_TYPE_UNSPECIFIED: MemoryType
MEMORY_TYPE_WORKING: MemoryType
MEMORY_TYPE_LONG_TERM: MemoryType
MEMORY_TYPE_USER: MemoryType
MEMORY_TYPE_OUTER: MemoryType
MEMORY_TYPE_TOOL_SCHEMA: MemoryType
MEMORY_TYPE_TOOL_TRAJECTORY: MemoryType
MEMORY_TYPE_RAW_FILE: MemoryType
MEMORY_TYPE_PREFERENCE: MemoryType
MEMORY_STATUS_UNSPECIFIED: MemoryStatus
MEMORY_STATUS_ACTIVATED: MemoryStatus
MEMORY_STATUS_ARCHIVED: MemoryStatus
MEMORY_STATUS_RESOLVING: MemoryStatus
SOURCE_TYPE_UNSPECIFIED: SourceType
SOURCE_TYPE_CHAT: SourceType
SOURCE_TYPE_FILE: SourceType
SOURCE_TYPE_IMAGE: SourceType
SOURCE_TYPE_AUDIO: SourceType
SOURCE_TYPE_TOOL_CALL: SourceType
SOURCE_TYPE_TOOL_RESULT: SourceType
SOURCE_TYPE_TOOL_SCHEMA: SourceType
SOURCE_TYPE_SYSTEM: SourceType

class FileReference(_message.Message):
    __slots__ = ("file_id", "filename", "url", "chunk_index", "chunk_total", "media_type")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    filename: str
    url: str
    chunk_index: int
    chunk_total: int
    media_type: str
    def __init__(self, file_id: _Optional[str] = ..., filename: _Optional[str] = ..., url: _Optional[str] = ..., chunk_index: _Optional[int] = ..., chunk_total: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("type", "role", "message_index", "message_id", "chat_time", "content", "file", "image_url", "tool_call_id", "tool_name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    type: SourceType
    role: str
    message_index: int
    message_id: str
    chat_time: _timestamp_pb2.Timestamp
    content: str
    file: FileReference
    image_url: str
    tool_call_id: str
    tool_name: str
    def __init__(self, type: _Optional[_Union[SourceType, str]] = ..., role: _Optional[str] = ..., message_index: _Optional[int] = ..., message_id: _Optional[str] = ..., chat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content: _Optional[str] = ..., file: _Optional[_Union[FileReference, _Mapping]] = ..., image_url: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., tool_name: _Optional[str] = ...) -> None: ...

class MemoryMetadata(_message.Message):
    __slots__ = ("memory_type", "status", "key", "tags", "sources", "background", "confidence", "user_id", "session_id", "cube_id", "created_at", "updated_at", "version", "info", "event_time")
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    memory_type: MemoryType
    status: MemoryStatus
    key: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    background: str
    confidence: float
    user_id: str
    session_id: str
    cube_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    version: int
    info: _struct_pb2.Struct
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, memory_type: _Optional[_Union[MemoryType, str]] = ..., status: _Optional[_Union[MemoryStatus, str]] = ..., key: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., background: _Optional[str] = ..., confidence: _Optional[float] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MemoryItem(_message.Message):
    __slots__ = ("id", "memory", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    memory: str
    metadata: MemoryMetadata
    def __init__(self, id: _Optional[str] = ..., memory: _Optional[str] = ..., metadata: _Optional[_Union[MemoryMetadata, _Mapping]] = ...) -> None: ...

class ScoredMemory(_message.Message):
    __slots__ = ("item", "score")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item: MemoryItem
    score: float
    def __init__(self, item: _Optional[_Union[MemoryItem, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class MemoryFilter(_message.Message):
    __slots__ = ("memory_types", "user_id", "session_id", "tags", "created_after", "created_before", "include_archived")
    MEMORY_TYPES_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    memory_types: _containers.RepeatedScalarFieldContainer[MemoryType]
    user_id: str
    session_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    include_archived: bool
    def __init__(self, memory_types: _Optional[_Iterable[_Union[MemoryType, str]]] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., include_archived: _Optional[bool] = ...) -> None: ...
