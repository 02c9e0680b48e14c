from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from memos.common.v1 import memory_pb2 as _memory_pb2
from memos.common.v1 import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExtractionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXTRACTION_MODE_UNSPECIFIED: _ClassVar[ExtractionMode]
    EXTRACTION_MODE_FAST: _ClassVar[ExtractionMode]
    EXTRACTION_MODE_FINE: _ClassVar[ExtractionMode]
EXTRACTION_MODE_UNSPECIFIED: ExtractionMode
EXTRACTION_MODE_FAST: ExtractionMode
EXTRACTION_MODE_FINE: ExtractionMode

class Candidate(_message.Message):
    __slots__ = ("memory", "metadata")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    memory: str
    metadata: _memory_pb2.MemoryMetadata
    def __init__(self, memory: _Optional[str] = ..., metadata: _Optional[_Union[_memory_pb2.MemoryMetadata, _Mapping]] = ...) -> None: ...

class PartError(_message.Message):
    __slots__ = ("message_index", "part_index", "status")
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PART_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    message_index: int
    part_index: int
    status: _status_pb2.Status
    def __init__(self, message_index: _Optional[int] = ..., part_index: _Optional[int] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ParseMessagesRequest(_message.Message):
    __slots__ = ("user_id", "cube_id", "session_id", "messages", "mode", "custom_tags", "info")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_TAGS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cube_id: str
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    mode: ExtractionMode
    custom_tags: _containers.RepeatedScalarFieldContainer[str]
    info: _struct_pb2.Struct
    def __init__(self, user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., mode: _Optional[_Union[ExtractionMode, str]] = ..., custom_tags: _Optional[_Iterable[str]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ParseMessagesResponse(_message.Message):
    __slots__ = ("candidates", "part_errors", "effective_mode", "notices", "fine_available")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PART_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    FINE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    part_errors: _containers.RepeatedCompositeFieldContainer[PartError]
    effective_mode: ExtractionMode
    notices: _containers.RepeatedScalarFieldContainer[str]
    fine_available: bool
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., part_errors: _Optional[_Iterable[_Union[PartError, _Mapping]]] = ..., effective_mode: _Optional[_Union[ExtractionMode, str]] = ..., notices: _Optional[_Iterable[str]] = ..., fine_available: _Optional[bool] = ...) -> None: ...

class IngestMessagesRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id", "session_id", "messages", "mode", "custom_tags", "info")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_TAGS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    mode: ExtractionMode
    custom_tags: _containers.RepeatedScalarFieldContainer[str]
    info: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., mode: _Optional[_Union[ExtractionMode, str]] = ..., custom_tags: _Optional[_Iterable[str]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IngestMessagesResponse(_message.Message):
    __slots__ = ("memories", "part_errors", "effective_mode", "notices")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    PART_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    part_errors: _containers.RepeatedCompositeFieldContainer[PartError]
    effective_mode: ExtractionMode
    notices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., part_errors: _Optional[_Iterable[_Union[PartError, _Mapping]]] = ..., effective_mode: _Optional[_Union[ExtractionMode, str]] = ..., notices: _Optional[_Iterable[str]] = ...) -> None: ...

class UploadFileRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadFileHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadFileHeader(_message.Message):
    __slots__ = ("user_id", "filename", "media_type", "size_bytes")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    filename: str
    media_type: str
    size_bytes: int
    def __init__(self, user_id: _Optional[str] = ..., filename: _Optional[str] = ..., media_type: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadFileResponse(_message.Message):
    __slots__ = ("file_id", "size_bytes", "sha256")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    size_bytes: int
    sha256: str
    def __init__(self, file_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
