"""Conversions between ingest's protobuf messages and its domain objects."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from memos.common.v1 import memory_pb2, message_pb2
from memos.ingest.v1 import ingest_pb2
from services.ingest.models import ChatMessage, Item, Part, PartError, Source, ToolCall
from shared.errors import InvalidArgument
from shared.grpc_errors import to_status_proto
from shared.times import to_timestamp

_ROLES = {
    message_pb2.ROLE_SYSTEM: "system",
    message_pb2.ROLE_USER: "user",
    message_pb2.ROLE_ASSISTANT: "assistant",
    message_pb2.ROLE_TOOL: "tool",
    message_pb2.ROLE_DEVELOPER: "developer",
}
MEMORY_TYPES = {
    "WorkingMemory": memory_pb2.MEMORY_TYPE_WORKING,
    "LongTermMemory": memory_pb2.MEMORY_TYPE_LONG_TERM,
    "UserMemory": memory_pb2.MEMORY_TYPE_USER,
    "OuterMemory": memory_pb2.MEMORY_TYPE_OUTER,
    "ToolSchemaMemory": memory_pb2.MEMORY_TYPE_TOOL_SCHEMA,
    "ToolTrajectoryMemory": memory_pb2.MEMORY_TYPE_TOOL_TRAJECTORY,
    "RawFileMemory": memory_pb2.MEMORY_TYPE_RAW_FILE,
    "PreferenceMemory": memory_pb2.MEMORY_TYPE_PREFERENCE,
}
SOURCE_TYPES = {
    "chat": memory_pb2.SOURCE_TYPE_CHAT,
    "file": memory_pb2.SOURCE_TYPE_FILE,
    "image": memory_pb2.SOURCE_TYPE_IMAGE,
    "audio": memory_pb2.SOURCE_TYPE_AUDIO,
    "tool_call": memory_pb2.SOURCE_TYPE_TOOL_CALL,
    "tool_result": memory_pb2.SOURCE_TYPE_TOOL_RESULT,
    "tool_schema": memory_pb2.SOURCE_TYPE_TOOL_SCHEMA,
    "system": memory_pb2.SOURCE_TYPE_SYSTEM,
}
MODES = {
    ingest_pb2.EXTRACTION_MODE_UNSPECIFIED: "fast",
    ingest_pb2.EXTRACTION_MODE_FAST: "fast",
    ingest_pb2.EXTRACTION_MODE_FINE: "fine",
}
MODE_VALUES = {"fast": ingest_pb2.EXTRACTION_MODE_FAST, "fine": ingest_pb2.EXTRACTION_MODE_FINE}
_FILE_FIELDS = {"file_id", "filename", "url", "chunk_index", "chunk_total", "media_type"}


def mode_from_proto(value: int) -> str:
    try:
        return MODES[value]
    except KeyError:
        raise InvalidArgument(f"unknown mode {value}", reason="UNKNOWN_MODE", metadata={"field": "mode"}) from None


def messages_from_proto(messages) -> list[ChatMessage]:  # type: ignore[no-untyped-def]
    """Request-level checks only (role, emptiness); a part this service cannot use becomes kind
    "unknown" here and a per-part error later."""
    if not messages:
        raise InvalidArgument("messages must not be empty", reason="EMPTY_MESSAGES", metadata={"field": "messages"})
    out = []
    for i, m in enumerate(messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise InvalidArgument(
                f"message {i} has no valid role", reason="INVALID_ROLE", metadata={"message_index": str(i)}
            )
        parts = []
        for p in m.content:
            kind = p.WhichOneof("part")
            if kind == "text":
                parts.append(Part("text", text=p.text.text))
            elif kind == "file":
                parts.append(Part("file", file_id=p.file.file_id, filename=p.file.filename, file_data=p.file.file_data))
            elif kind == "image_url":
                parts.append(Part("image_url", url=p.image_url.url))
            elif kind == "input_audio":
                parts.append(Part("input_audio", audio_format=p.input_audio.format))
            else:  # unset, or a part type newer than this service (kept as unknown fields)
                parts.append(Part("unknown"))
        calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls]
        if not parts and not calls:
            raise InvalidArgument(
                f"message {i} has no content", reason="EMPTY_MESSAGE", metadata={"message_index": str(i)}
            )
        out.append(
            ChatMessage(
                role=role,
                parts=parts,
                name=m.name,
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
                chat_time=m.chat_time.ToNanoseconds() / 1e9 if m.HasField("chat_time") else None,
                message_id=m.message_id,
            )
        )
    return out


def source_to_proto(s: Source) -> memory_pb2.Source:
    pb = memory_pb2.Source(
        type=SOURCE_TYPES.get(s.type, memory_pb2.SOURCE_TYPE_UNSPECIFIED),
        role=s.role,
        message_index=s.message_index,
        message_id=s.message_id,
        content=s.content,
        image_url=s.image_url,
        tool_call_id=s.tool_call_id,
        tool_name=s.tool_name,
    )
    if s.chat_time is not None:
        pb.chat_time.CopyFrom(to_timestamp(s.chat_time))
    if s.file:
        pb.file.CopyFrom(memory_pb2.FileReference(**{k: v for k, v in s.file.items() if k in _FILE_FIELDS}))
    return pb


def item_to_candidate(item: Item, user_id: str = "", session_id: str = "", cube_id: str = "") -> ingest_pb2.Candidate:
    info = struct_pb2.Struct()
    if item.info:
        info.update(item.info)
    meta = memory_pb2.MemoryMetadata(
        memory_type=MEMORY_TYPES[item.memory_type],
        status=memory_pb2.MEMORY_STATUS_ACTIVATED,
        key=item.key,
        tags=item.tags,
        sources=[source_to_proto(s) for s in item.sources],
        background=item.background,
        confidence=item.confidence,
        user_id=user_id,
        session_id=session_id,
        cube_id=cube_id,
        info=info,
    )
    if item.event_time is not None:
        meta.event_time.CopyFrom(to_timestamp(item.event_time))
    return ingest_pb2.Candidate(memory=item.memory, metadata=meta)


def part_error_to_proto(e: PartError) -> ingest_pb2.PartError:
    return ingest_pb2.PartError(message_index=e.message_index, part_index=e.part_index, status=to_status_proto(e.error))


def info_from_proto(info: struct_pb2.Struct) -> dict:
    return json_format.MessageToDict(info) if info.fields else {}
