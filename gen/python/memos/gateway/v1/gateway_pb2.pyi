import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from memos.actmem.v1 import actmem_pb2 as _actmem_pb2
from memos.common.v1 import memory_pb2 as _memory_pb2
from memos.common.v1 import message_pb2 as _message_pb2
from memos.scheduler.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExtractMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXTRACT_MODE_UNSPECIFIED: _ClassVar[ExtractMode]
    EXTRACT_MODE_FAST: _ClassVar[ExtractMode]
    EXTRACT_MODE_FINE: _ClassVar[ExtractMode]

class AsyncMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASYNC_MODE_UNSPECIFIED: _ClassVar[AsyncMode]
    ASYNC_MODE_SYNC: _ClassVar[AsyncMode]
    ASYNC_MODE_ASYNC: _ClassVar[AsyncMode]

class ShareRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARE_ROLE_UNSPECIFIED: _ClassVar[ShareRole]
    SHARE_ROLE_READER: _ClassVar[ShareRole]
    SHARE_ROLE_WRITER: _ClassVar[ShareRole]
    SHARE_ROLE_NONE: _ClassVar[ShareRole]

class AnswerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_SOURCE_UNSPECIFIED: _ClassVar[AnswerSource]
    ANSWER_SOURCE_LLM: _ClassVar[AnswerSource]
    ANSWER_SOURCE_RETRIEVED_MEMORIES: _ClassVar[AnswerSource]
EXTRACT_MODE_UNSPECIFIED: ExtractMode
EXTRACT_MODE_FAST: ExtractMode
EXTRACT_MODE_FINE: ExtractMode
ASYNC_MODE_UNSPECIFIED: AsyncMode
ASYNC_MODE_SYNC: AsyncMode
ASYNC_MODE_ASYNC: AsyncMode
SHARE_ROLE_UNSPECIFIED: ShareRole
SHARE_ROLE_READER: ShareRole
SHARE_ROLE_WRITER: ShareRole
SHARE_ROLE_NONE: ShareRole
ANSWER_SOURCE_UNSPECIFIED: AnswerSource
ANSWER_SOURCE_LLM: AnswerSource
ANSWER_SOURCE_RETRIEVED_MEMORIES: AnswerSource

class AddMemoriesRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "writable_cube_ids", "session_id", "messages", "mode", "async_mode", "custom_tags", "info")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ASYNC_MODE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_TAGS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    writable_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    mode: ExtractMode
    async_mode: AsyncMode
    custom_tags: _containers.RepeatedScalarFieldContainer[str]
    info: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., writable_cube_ids: _Optional[_Iterable[str]] = ..., session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., mode: _Optional[_Union[ExtractMode, str]] = ..., async_mode: _Optional[_Union[AsyncMode, str]] = ..., custom_tags: _Optional[_Iterable[str]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AddedMemory(_message.Message):
    __slots__ = ("memory_id", "memory", "memory_type", "cube_id", "merged")
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    memory_id: str
    memory: str
    memory_type: _memory_pb2.MemoryType
    cube_id: str
    merged: bool
    def __init__(self, memory_id: _Optional[str] = ..., memory: _Optional[str] = ..., memory_type: _Optional[_Union[_memory_pb2.MemoryType, str]] = ..., cube_id: _Optional[str] = ..., merged: _Optional[bool] = ...) -> None: ...

class AddMemoriesResponse(_message.Message):
    __slots__ = ("message", "memories", "effective_mode", "notices", "part_errors", "task_ids")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    PART_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    message: str
    memories: _containers.RepeatedCompositeFieldContainer[AddedMemory]
    effective_mode: ExtractMode
    notices: _containers.RepeatedScalarFieldContainer[str]
    part_errors: _containers.RepeatedCompositeFieldContainer[AddPartError]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, message: _Optional[str] = ..., memories: _Optional[_Iterable[_Union[AddedMemory, _Mapping]]] = ..., effective_mode: _Optional[_Union[ExtractMode, str]] = ..., notices: _Optional[_Iterable[str]] = ..., part_errors: _Optional[_Iterable[_Union[AddPartError, _Mapping]]] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AddPartError(_message.Message):
    __slots__ = ("cube_id", "message_index", "part_index", "status")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PART_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    message_index: int
    part_index: int
    status: _status_pb2.Status
    def __init__(self, cube_id: _Optional[str] = ..., message_index: _Optional[int] = ..., part_index: _Optional[int] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class SearchMemoriesRequest(_message.Message):
    __slots__ = ("user_id", "readable_cube_ids", "query", "top_k", "filter", "include_preference", "pref_top_k", "session_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    READABLE_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    PREF_TOP_K_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    readable_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    top_k: int
    filter: _memory_pb2.MemoryFilter
    include_preference: bool
    pref_top_k: int
    session_id: str
    def __init__(self, user_id: _Optional[str] = ..., readable_cube_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ..., include_preference: _Optional[bool] = ..., pref_top_k: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class CubeMemories(_message.Message):
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

class SearchMemoriesResponse(_message.Message):
    __slots__ = ("text_mem", "pref_mem", "pref_string", "ranked")
    TEXT_MEM_FIELD_NUMBER: _ClassVar[int]
    PREF_MEM_FIELD_NUMBER: _ClassVar[int]
    PREF_STRING_FIELD_NUMBER: _ClassVar[int]
    RANKED_FIELD_NUMBER: _ClassVar[int]
    text_mem: _containers.RepeatedCompositeFieldContainer[CubeMemories]
    pref_mem: _containers.RepeatedCompositeFieldContainer[CubeMemories]
    pref_string: str
    ranked: _containers.RepeatedCompositeFieldContainer[_memory_pb2.ScoredMemory]
    def __init__(self, text_mem: _Optional[_Iterable[_Union[CubeMemories, _Mapping]]] = ..., pref_mem: _Optional[_Iterable[_Union[CubeMemories, _Mapping]]] = ..., pref_string: _Optional[str] = ..., ranked: _Optional[_Iterable[_Union[_memory_pb2.ScoredMemory, _Mapping]]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ("user_id", "cube_id", "memory_id", "include_history")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cube_id: str
    memory_id: str
    include_history: bool
    def __init__(self, user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., memory_id: _Optional[str] = ..., include_history: _Optional[bool] = ...) -> None: ...

class GetMemoryResponse(_message.Message):
    __slots__ = ("memory", "history")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    history: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ("user_id", "cube_id", "page_size", "page_token", "filter")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cube_id: str
    page_size: int
    page_token: str
    filter: _memory_pb2.MemoryFilter
    def __init__(self, user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ...) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ("memories", "next_page_token")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    next_page_token: str
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateMemoryRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id", "memory", "update_mask")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    memory: _memory_pb2.MemoryItem
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ...) -> None: ...

class DeleteMemoriesRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id", "memory_ids", "all", "filter", "dry_run")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    memory_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    filter: _memory_pb2.MemoryFilter
    dry_run: bool
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., memory_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., filter: _Optional[_Union[_memory_pb2.MemoryFilter, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeleteMemoriesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class CubeInfo(_message.Message):
    __slots__ = ("cube_id", "owner_id", "name", "my_role", "owned")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MY_ROLE_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    owner_id: str
    name: str
    my_role: ShareRole
    owned: bool
    def __init__(self, cube_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., my_role: _Optional[_Union[ShareRole, str]] = ..., owned: _Optional[bool] = ...) -> None: ...

class CreateCubeRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateCubeResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: CubeInfo
    def __init__(self, cube: _Optional[_Union[CubeInfo, _Mapping]] = ...) -> None: ...

class ListCubesRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListCubesResponse(_message.Message):
    __slots__ = ("cubes",)
    CUBES_FIELD_NUMBER: _ClassVar[int]
    cubes: _containers.RepeatedCompositeFieldContainer[CubeInfo]
    def __init__(self, cubes: _Optional[_Iterable[_Union[CubeInfo, _Mapping]]] = ...) -> None: ...

class ShareCubeRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id", "target_user_id", "role")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    target_user_id: str
    role: ShareRole
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., target_user_id: _Optional[str] = ..., role: _Optional[_Union[ShareRole, str]] = ...) -> None: ...

class ShareCubeResponse(_message.Message):
    __slots__ = ("cube",)
    CUBE_FIELD_NUMBER: _ClassVar[int]
    cube: CubeInfo
    def __init__(self, cube: _Optional[_Union[CubeInfo, _Mapping]] = ...) -> None: ...

class DeleteCubeRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ...) -> None: ...

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

class ExportUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ExportedCubeMember(_message.Message):
    __slots__ = ("user_id", "role")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: ShareRole
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[ShareRole, str]] = ...) -> None: ...

class ExportedCube(_message.Message):
    __slots__ = ("cube", "members", "created_at")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    cube: CubeInfo
    members: _containers.RepeatedCompositeFieldContainer[ExportedCubeMember]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, cube: _Optional[_Union[CubeInfo, _Mapping]] = ..., members: _Optional[_Iterable[_Union[ExportedCubeMember, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportedMemory(_message.Message):
    __slots__ = ("memory", "history")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.MemoryItem
    history: _containers.RepeatedCompositeFieldContainer[_memory_pb2.MemoryItem]
    def __init__(self, memory: _Optional[_Union[_memory_pb2.MemoryItem, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_memory_pb2.MemoryItem, _Mapping]]] = ...) -> None: ...

class ExportSummary(_message.Message):
    __slots__ = ("cube_count", "memory_count", "preference_count", "working_memory_count", "task_count", "kv_cache_count", "skipped_services")
    CUBE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    WORKING_MEMORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SERVICES_FIELD_NUMBER: _ClassVar[int]
    cube_count: int
    memory_count: int
    preference_count: int
    working_memory_count: int
    task_count: int
    kv_cache_count: int
    skipped_services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cube_count: _Optional[int] = ..., memory_count: _Optional[int] = ..., preference_count: _Optional[int] = ..., working_memory_count: _Optional[int] = ..., task_count: _Optional[int] = ..., kv_cache_count: _Optional[int] = ..., skipped_services: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportUserDataResponse(_message.Message):
    __slots__ = ("cube", "memory", "preference", "working_memory", "task", "kv_cache", "summary")
    CUBE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    WORKING_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    cube: ExportedCube
    memory: ExportedMemory
    preference: ExportedMemory
    working_memory: ExportedMemory
    task: _scheduler_pb2.Task
    kv_cache: _actmem_pb2.CacheInfo
    summary: ExportSummary
    def __init__(self, cube: _Optional[_Union[ExportedCube, _Mapping]] = ..., memory: _Optional[_Union[ExportedMemory, _Mapping]] = ..., preference: _Optional[_Union[ExportedMemory, _Mapping]] = ..., working_memory: _Optional[_Union[ExportedMemory, _Mapping]] = ..., task: _Optional[_Union[_scheduler_pb2.Task, _Mapping]] = ..., kv_cache: _Optional[_Union[_actmem_pb2.CacheInfo, _Mapping]] = ..., summary: _Optional[_Union[ExportSummary, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "query", "readable_cube_ids", "writable_cube_ids", "session_id", "top_k", "history", "system_prompt", "include_preference", "add_message_on_answer", "event_cube_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    READABLE_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_CUBE_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ADD_MESSAGE_ON_ANSWER_FIELD_NUMBER: _ClassVar[int]
    EVENT_CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    query: str
    readable_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    writable_cube_ids: _containers.RepeatedScalarFieldContainer[str]
    session_id: str
    top_k: int
    history: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    system_prompt: str
    include_preference: bool
    add_message_on_answer: bool
    event_cube_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., query: _Optional[str] = ..., readable_cube_ids: _Optional[_Iterable[str]] = ..., writable_cube_ids: _Optional[_Iterable[str]] = ..., session_id: _Optional[str] = ..., top_k: _Optional[int] = ..., history: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., system_prompt: _Optional[str] = ..., include_preference: _Optional[bool] = ..., add_message_on_answer: _Optional[bool] = ..., event_cube_id: _Optional[str] = ...) -> None: ...

class ChatStatus(_message.Message):
    __slots__ = ("stage", "detail")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    detail: str
    def __init__(self, stage: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ChatReferences(_message.Message):
    __slots__ = ("memories", "preferences", "failed_cubes")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    FAILED_CUBES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[_memory_pb2.ScoredMemory]
    preferences: _containers.RepeatedCompositeFieldContainer[_memory_pb2.ScoredMemory]
    failed_cubes: _containers.RepeatedCompositeFieldContainer[CubeMemories]
    def __init__(self, memories: _Optional[_Iterable[_Union[_memory_pb2.ScoredMemory, _Mapping]]] = ..., preferences: _Optional[_Iterable[_Union[_memory_pb2.ScoredMemory, _Mapping]]] = ..., failed_cubes: _Optional[_Iterable[_Union[CubeMemories, _Mapping]]] = ...) -> None: ...

class ChatText(_message.Message):
    __slots__ = ("delta",)
    DELTA_FIELD_NUMBER: _ClassVar[int]
    delta: str
    def __init__(self, delta: _Optional[str] = ...) -> None: ...

class ChatEnd(_message.Message):
    __slots__ = ("source", "time_to_first_token_seconds", "total_seconds", "added_memories", "query_event_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADDED_MEMORIES_FIELD_NUMBER: _ClassVar[int]
    QUERY_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    source: AnswerSource
    time_to_first_token_seconds: float
    total_seconds: float
    added_memories: _containers.RepeatedCompositeFieldContainer[AddedMemory]
    query_event_id: str
    def __init__(self, source: _Optional[_Union[AnswerSource, str]] = ..., time_to_first_token_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., added_memories: _Optional[_Iterable[_Union[AddedMemory, _Mapping]]] = ..., query_event_id: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("status", "references", "text", "end", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: ChatStatus
    references: ChatReferences
    text: ChatText
    end: ChatEnd
    error: _status_pb2.Status
    def __init__(self, status: _Optional[_Union[ChatStatus, _Mapping]] = ..., references: _Optional[_Union[ChatReferences, _Mapping]] = ..., text: _Optional[_Union[ChatText, _Mapping]] = ..., end: _Optional[_Union[ChatEnd, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
