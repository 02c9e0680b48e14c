import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
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

class CubeRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CUBE_ROLE_UNSPECIFIED: _ClassVar[CubeRole]
    CUBE_ROLE_READER: _ClassVar[CubeRole]
    CUBE_ROLE_WRITER: _ClassVar[CubeRole]
    CUBE_ROLE_OWNER: _ClassVar[CubeRole]
CUBE_ROLE_UNSPECIFIED: CubeRole
CUBE_ROLE_READER: CubeRole
CUBE_ROLE_WRITER: CubeRole
CUBE_ROLE_OWNER: CubeRole

class WindowOptions(_message.Message):
    __slots__ = ("size", "overlap")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    size: int
    overlap: int
    def __init__(self, size: _Optional[int] = ..., overlap: _Optional[int] = ...) -> None: ...

class AddMemoriesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "user_id", "session_id", "messages", "custom_tags", "info", "window")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_TAGS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    user_id: str
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    custom_tags: _containers.RepeatedScalarFieldContainer[str]
    info: _struct_pb2.Struct
    window: WindowOptions
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., custom_tags: _Optional[_Iterable[str]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., window: _Optional[_Union[WindowOptions, _Mapping]] = ...) -> None: ...

class AddMemoriesResponse(_message.Message):
    __slots__ = ("memories", "replayed", "merged_ids", "archived_ids", "notices")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    MERGED_IDS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_IDS_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    replayed: bool
    merged_ids: _containers.RepeatedScalarFieldContainer[str]
    archived_ids: _containers.RepeatedScalarFieldContainer[str]
    notices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., replayed: _Optional[bool] = ..., merged_ids: _Optional[_Iterable[str]] = ..., archived_ids: _Optional[_Iterable[str]] = ..., notices: _Optional[_Iterable[str]] = ...) -> None: ...

class MemoryCandidate(_message.Message):
    __slots__ = ("memory", "metadata")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    memory: str
    metadata: _memory_pb2.MemoryMetadata
    def __init__(self, memory: _Optional[str] = ..., metadata: _Optional[_Union[_memory_pb2.MemoryMetadata, _Mapping]] = ...) -> None: ...

class WriteMemoriesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "user_id", "session_id", "candidates")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    user_id: str
    session_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[MemoryCandidate]
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[MemoryCandidate, _Mapping]]] = ...) -> None: ...

class WriteMemoriesResponse(_message.Message):
    __slots__ = ("memories", "replayed", "merged_ids", "archived_ids", "notices")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    MERGED_IDS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_IDS_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    replayed: bool
    merged_ids: _containers.RepeatedScalarFieldContainer[str]
    archived_ids: _containers.RepeatedScalarFieldContainer[str]
    notices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., replayed: _Optional[bool] = ..., merged_ids: _Optional[_Iterable[str]] = ..., archived_ids: _Optional[_Iterable[str]] = ..., notices: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchMemoriesRequest(_message.Message):
    __slots__ = ("cube_id", "query", "top_k", "filter")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    query: str
    top_k: int
    filter: _memory_pb2.MemoryFilter
    def __init__(self, cube_id: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ...) -> None: ...

class SearchMemoriesResponse(_message.Message):
    __slots__ = ("memories", "total")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.ScoredMemory]
    total: int
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.ScoredMemory, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class BatchSearchMemoriesRequest(_message.Message):
    __slots__ = ("cube_ids", "query", "top_k", "filter")
    CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    cube_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    top_k: int
    filter: _memory_pb2.MemoryFilter
    def __init__(self, cube_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ...) -> None: ...

class CubeSearchResult(_message.Message):
    __slots__ = ("cube_id", "memories", "total", "status")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.ScoredMemory]
    total: int
    status: _status_pb2.Status
    def __init__(self, cube_id: _Optional[str] = ..., memories: _Optional[_Iterable[_Union[_memory_pb2.ScoredMemory, _Mapping]]] = ..., total: _Optional[int] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class BatchSearchMemoriesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CubeSearchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CubeSearchResult, _Mapping]]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ("cube_id", "memory_id", "include_history")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    memory_id: str
    include_history: bool
    def __init__(self, cube_id: _Optional[str] = ..., memory_id: _Optional[str] = ..., include_history: _Optional[bool] = ...) -> None: ...

class GetMemoryResponse(_message.Message):
    __slots__ = ("memory", "history")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    history: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ("cube_id", "page_size", "page_token", "filter")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    page_size: int
    page_token: str
    filter: _memory_pb2.MemoryFilter
    def __init__(self, cube_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ...) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ("memories", "next_page_token")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    next_page_token: str
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateMemoryRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "memory", "update_mask")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    memory: _memory_pb2.MemoryItem
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ...) -> None: ...

class DeleteMemoriesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "memory_ids", "all", "filter", "dry_run", "rolled_back_request_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    memory_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    filter: _memory_pb2.MemoryFilter
    dry_run: bool
    rolled_back_request_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., memory_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ..., dry_run: _Optional[bool] = ..., rolled_back_request_id: _Optional[str] = ...) -> None: ...

class DeleteMemoriesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class ReplaceWorkingMemoryRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "user_id", "memory_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    user_id: str
    memory_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., user_id: _Optional[str] = ..., memory_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplaceWorkingMemoryResponse(_message.Message):
    __slots__ = ("memories", "removed_count")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_COUNT_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    removed_count: int
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., removed_count: _Optional[int] = ...) -> None: ...

class ListUserMemoriesRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class UserMemory(_message.Message):
    __slots__ = ("memory", "history")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    history: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ...) -> None: ...

class ListUserMemoriesResponse(_message.Message):
    __slots__ = ("memories", "next_page_token")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[UserMemory]
    next_page_token: str
    def __init__(self, memories: _Optional[_Iterable[_Union[UserMemory, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CubeMember(_message.Message):
    __slots__ = ("user_id", "role")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: CubeRole
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[CubeRole, str]] = ...) -> None: ...

class Cube(_message.Message):
    __slots__ = ("cube_id", "owner_id", "name", "members", "created_at")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    owner_id: str
    name: str
    members: _containers.RepeatedCompositeFieldContainer[CubeMember]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, cube_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., members: _Optional[_Iterable[_Union[CubeMember, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCubeRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "owner_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    owner_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateCubeResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: Cube
    def __init__(self, cube: _Optional[_Union[Cube, _Mapping]] = ...) -> None: ...

class GetCubeRequest(_message.Message):
    __slots__ = ("cube_id",)
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    def __init__(self, cube_id: _Optional[str] = ...) -> None: ...

class GetCubeResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: Cube
    def __init__(self, cube: _Optional[_Union[Cube, _Mapping]] = ...) -> None: ...

class EnsureCubeRequest(_message.Message):
    __slots__ = ("cube_id", "user_id")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    user_id: str
    def __init__(self, cube_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class EnsureCubeResponse(_message.Message):
    __slots__ = ("cube", "created")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    cube: Cube
    created: bool
    def __init__(self, cube: _Optional[_Union[Cube, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListCubesRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListCubesResponse(_message.Message):
    __slots__ = ("cubes",)
    CUBES_FIELD_NUMBER: _ClassVar[int]
    cubes: _containers.RepeatedCompositeFieldContainer[Cube]
    def __init__(self, cubes: _Optional[_Iterable[_Union[Cube, _Mapping]]] = ...) -> None: ...

class SetCubeAccessRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "owner_id", "user_id", "role")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    owner_id: str
    user_id: str
    role: CubeRole
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., user_id: _Optional[str] = ..., role: _Optional[_Union[CubeRole, str]] = ...) -> None: ...

class SetCubeAccessResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: Cube
    def __init__(self, cube: _Optional[_Union[Cube, _Mapping]] = ...) -> None: ...

class DeleteCubeRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "owner_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    owner_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., owner_id: _Optional[str] = ...) -> None: ...

class DeleteCubeResponse(_message.Message):
    __slots__ = ("deleted_memories",)
    DELETED_MEMORIES_FIELD_NUMBER: _ClassVar[int]
    deleted_memories: int
    def __init__(self, deleted_memories: _Optional[int] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("request_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("deleted_memories", "deleted_cube_ids", "cleaned_cube_ids", "revoked_cube_ids")
    DELETED_MEMORIES_FIELD_NUMBER: _ClassVar[int]
    DELETED_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    CLEANED_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_memories: int
    deleted_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    cleaned_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    revoked_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_memories: _Optional[int] = ..., deleted_cube_ids: _Optional[_Iterable[str]] = ..., cleaned_cube_ids: _Optional[_Iterable[str]] = ..., revoked_cube_ids: _Optional[_Iterable[str]] = ...) -> None: ...
