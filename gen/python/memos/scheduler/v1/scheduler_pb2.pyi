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

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_DONE: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_DEAD_LETTERED: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_DONE: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_DEAD_LETTERED: TaskState

class ScheduleMessage(_message.Message):
    __slots__ = ("item_id", "user_id", "cube_id", "session_id", "label", "content", "timestamp", "trace_id", "info", "priority")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    user_id: str
    cube_id: str
    session_id: str
    label: str
    content: str
    timestamp: _timestamp_pb2.Timestamp
    trace_id: str
    info: _struct_pb2.Struct
    priority: int
    def __init__(self, item_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., session_id: _Optional[str] = ..., label: _Optional[str] = ..., content: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., priority: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("item_id", "message", "state", "attempts", "last_error", "updated_at")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    message: ScheduleMessage
    state: TaskState
    attempts: int
    last_error: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., message: _Optional[_Union[ScheduleMessage, _Mapping]] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitMessagesRequest(_message.Message):
    __slots__ = ("request_id", "messages")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    messages: _containers.RepeatedCompositeFieldContainer[ScheduleMessage]
    def __init__(self, request_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ScheduleMessage, _Mapping]]] = ...) -> None: ...

class SubmitMessagesResponse(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("subscription", "ack", "acks")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    ack: Acknowledgement
    acks: Acknowledgements
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., ack: _Optional[_Union[Acknowledgement, _Mapping]] = ..., acks: _Optional[_Union[Acknowledgements, _Mapping]] = ...) -> None: ...

class Acknowledgements(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[Acknowledgement]
    def __init__(self, acks: _Optional[_Iterable[_Union[Acknowledgement, _Mapping]]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("worker_id", "labels", "max_in_flight", "fallback", "max_batch")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_in_flight: int
    fallback: bool
    max_batch: int
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_in_flight: _Optional[int] = ..., fallback: _Optional[bool] = ..., max_batch: _Optional[int] = ...) -> None: ...

class Acknowledgement(_message.Message):
    __slots__ = ("delivery_id", "success", "error", "give_up")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GIVE_UP_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    success: bool
    error: str
    give_up: bool
    def __init__(self, delivery_id: _Optional[str] = ..., success: _Optional[bool] = ..., error: _Optional[str] = ..., give_up: _Optional[bool] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("delivery_id", "message", "attempt", "deliveries", "rejected_acks", "visibility_timeout_seconds")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ACKS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    message: ScheduleMessage
    attempt: int
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    rejected_acks: _containers.RepeatedCompositeFieldContainer[RejectedAck]
    visibility_timeout_seconds: float
    def __init__(self, delivery_id: _Optional[str] = ..., message: _Optional[_Union[ScheduleMessage, _Mapping]] = ..., attempt: _Optional[int] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., rejected_acks: _Optional[_Iterable[_Union[RejectedAck, _Mapping]]] = ..., visibility_timeout_seconds: _Optional[float] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("delivery_id", "message", "attempt")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    message: ScheduleMessage
    attempt: int
    def __init__(self, delivery_id: _Optional[str] = ..., message: _Optional[_Union[ScheduleMessage, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class RejectedAck(_message.Message):
    __slots__ = ("delivery_id", "reason")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    reason: str
    def __init__(self, delivery_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    def __init__(self, item_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WaitForTasksRequest(_message.Message):
    __slots__ = ("user_id", "cube_id", "timeout_seconds")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cube_id: str
    timeout_seconds: float
    def __init__(self, user_id: _Optional[str] = ..., cube_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class WaitForTasksResponse(_message.Message):
    __slots__ = ("all_done", "pending_count", "capped")
    ALL_DONE_FIELD_NUMBER: _ClassVar[int]
    PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    all_done: bool
    pending_count: int
    capped: bool
    def __init__(self, all_done: _Optional[bool] = ..., pending_count: _Optional[int] = ..., capped: _Optional[bool] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("label", "page_size", "page_token")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    label: str
    page_size: int
    page_token: str
    def __init__(self, label: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReplayDeadLettersRequest(_message.Message):
    __slots__ = ("request_id", "item_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplayDeadLettersResponse(_message.Message):
    __slots__ = ("replayed_count",)
    REPLAYED_COUNT_FIELD_NUMBER: _ClassVar[int]
    replayed_count: int
    def __init__(self, replayed_count: _Optional[int] = ...) -> None: ...

class PurgeTasksRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "cube_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CUBE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    cube_id: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cube_id: _Optional[str] = ...) -> None: ...

class PurgeTasksResponse(_message.Message):
    __slots__ = ("pending_count", "running_count", "dead_lettered_count", "finished_count")
    PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    pending_count: int
    running_count: int
    dead_lettered_count: int
    finished_count: int
    def __init__(self, pending_count: _Optional[int] = ..., running_count: _Optional[int] = ..., dead_lettered_count: _Optional[int] = ..., finished_count: _Optional[int] = ...) -> None: ...

class ListUserTasksRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUserTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
