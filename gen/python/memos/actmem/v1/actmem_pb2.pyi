import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from memos.common.v1 import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheInfo(_message.Message):
    __slots__ = ("cache_id", "cube_id", "source_text", "num_tokens", "num_layers", "size_bytes", "model", "dtype", "created_at", "merged_from", "metadata", "fingerprint", "tensors", "payload_bytes", "checksum", "last_used_at", "resident", "user_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CACHE_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TEXT_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MERGED_FROM_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    cache_id: str
    cube_id: str
    source_text: str
    num_tokens: int
    num_layers: int
    size_bytes: int
    model: str
    dtype: str
    created_at: _timestamp_pb2.Timestamp
    merged_from: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    fingerprint: ModelFingerprint
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    payload_bytes: int
    checksum: str
    last_used_at: _timestamp_pb2.Timestamp
    resident: bool
    user_id: str
    def __init__(self, cache_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., source_text: _Optional[str] = ..., num_tokens: _Optional[int] = ..., num_layers: _Optional[int] = ..., size_bytes: _Optional[int] = ..., model: _Optional[str] = ..., dtype: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merged_from: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., fingerprint: _Optional[_Union[ModelFingerprint, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., payload_bytes: _Optional[int] = ..., checksum: _Optional[str] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resident: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class ModelFingerprint(_message.Message):
    __slots__ = ("name", "num_layers", "num_kv_heads", "head_dim", "dtype", "rope_json", "digest", "max_context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROPE_JSON_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    rope_json: str
    digest: str
    max_context: int
    def __init__(self, name: _Optional[str] = ..., num_layers: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., dtype: _Optional[str] = ..., rope_json: _Optional[str] = ..., digest: _Optional[str] = ..., max_context: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ExtractCacheRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "messages", "text", "metadata", "add_generation_prompt", "user_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    messages: MessageList
    text: str
    metadata: _containers.ScalarMap[str, str]
    add_generation_prompt: bool
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., messages: _Optional[_Union[MessageList, _Mapping]] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., add_generation_prompt: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class MessageList(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ...) -> None: ...

class ExtractCacheResponse(_message.Message):
    __slots__ = ("cache",)
    CACHE_FIELD_NUMBER: _ClassVar[int]
    cache: CacheInfo
    def __init__(self, cache: _Optional[_Union[CacheInfo, _Mapping]] = ...) -> None: ...

class AddCacheRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: CacheInfo
    chunk: bytes
    def __init__(self, header: _Optional[_Union[CacheInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AddCacheResponse(_message.Message):
    __slots__ = ("cache",)
    CACHE_FIELD_NUMBER: _ClassVar[int]
    cache: CacheInfo
    def __init__(self, cache: _Optional[_Union[CacheInfo, _Mapping]] = ...) -> None: ...

class GetCacheRequest(_message.Message):
    __slots__ = ("cube_id", "cache_id", "info_only", "merge_ids")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_ONLY_FIELD_NUMBER: _ClassVar[int]
    MERGE_IDS_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    cache_id: str
    info_only: bool
    merge_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cube_id: _Optional[str] = ..., cache_id: _Optional[str] = ..., info_only: _Optional[bool] = ..., merge_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCacheResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: CacheInfo
    chunk: bytes
    def __init__(self, header: _Optional[_Union[CacheInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ListCachesRequest(_message.Message):
    __slots__ = ("cube_id", "page_size", "page_token", "user_id")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, cube_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListCachesResponse(_message.Message):
    __slots__ = ("caches", "next_page_token")
    CACHES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    caches: _containers.RepeatedCompositeFieldContainer[CacheInfo]
    next_page_token: str
    def __init__(self, caches: _Optional[_Iterable[_Union[CacheInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MergeCachesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "cache_ids", "store", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_IDS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    cache_ids: _containers.RepeatedScalarFieldContainer[str]
    store: bool
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., cache_ids: _Optional[_Iterable[str]] = ..., store: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class MergeCachesResponse(_message.Message):
    __slots__ = ("cache",)
    CACHE_FIELD_NUMBER: _ClassVar[int]
    cache: CacheInfo
    def __init__(self, cache: _Optional[_Union[CacheInfo, _Mapping]] = ...) -> None: ...

class DeleteCachesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "cache_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    cache_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., cache_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteCachesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class DeleteAllCachesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteAllCachesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class DumpCachesRequest(_message.Message):
    __slots__ = ("cube_id", "directory")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    directory: str
    def __init__(self, cube_id: _Optional[str] = ..., directory: _Optional[str] = ...) -> None: ...

class DumpCachesResponse(_message.Message):
    __slots__ = ("dumped_count",)
    DUMPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    dumped_count: int
    def __init__(self, dumped_count: _Optional[int] = ...) -> None: ...

class LoadCachesRequest(_message.Message):
    __slots__ = ("request_id", "cube_id", "directory", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cube_id: str
    directory: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., directory: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LoadCachesResponse(_message.Message):
    __slots__ = ("caches",)
    CACHES_FIELD_NUMBER: _ClassVar[int]
    caches: _containers.RepeatedCompositeFieldContainer[CacheInfo]
    def __init__(self, caches: _Optional[_Iterable[_Union[CacheInfo, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("cube_id", "cache_ids", "messages", "max_tokens", "temperature")
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    cube_id: str
    cache_ids: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.ChatMessage]
    max_tokens: int
    temperature: float
    def __init__(self, cube_id: _Optional[str] = ..., cache_ids: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.ChatMessage, _Mapping]]] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("delta", "ttft_ms", "done", "cached_tokens", "prompt_tokens", "completion_tokens")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    delta: str
    ttft_ms: float
    done: bool
    cached_tokens: int
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, delta: _Optional[str] = ..., ttft_ms: _Optional[float] = ..., done: _Optional[bool] = ..., cached_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class ComputeCacheRequest(_message.Message):
    __slots__ = ("request_id", "messages", "text", "add_generation_prompt", "metadata", "cube_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    messages: MessageList
    text: str
    add_generation_prompt: bool
    metadata: _containers.ScalarMap[str, str]
    cube_id: str
    def __init__(self, request_id: _Optional[str] = ..., messages: _Optional[_Union[MessageList, _Mapping]] = ..., text: _Optional[str] = ..., add_generation_prompt: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., cube_id: _Optional[str] = ...) -> None: ...

class ComputeCacheResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: CacheInfo
    chunk: bytes
    def __init__(self, header: _Optional[_Union[CacheInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...
