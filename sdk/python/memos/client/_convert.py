"""OpenAI-format dicts and MemOS-style filters to protobuf, and memories back to dicts."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from memos.common.v1 import memory_pb2, message_pb2
from memos.gateway.v1 import gateway_pb2
from shared.errors import InvalidArgument

_ROLES = {
    "system": message_pb2.ROLE_SYSTEM,
    "user": message_pb2.ROLE_USER,
    "assistant": message_pb2.ROLE_ASSISTANT,
    "tool": message_pb2.ROLE_TOOL,
    "developer": message_pb2.ROLE_DEVELOPER,
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
MEMORY_TYPE_NAMES = {v: k for k, v in MEMORY_TYPES.items()}
_STATUS_NAMES = {
    memory_pb2.MEMORY_STATUS_ACTIVATED: "activated",
    memory_pb2.MEMORY_STATUS_ARCHIVED: "archived",
    memory_pb2.MEMORY_STATUS_RESOLVING: "resolving",
}
_SOURCE_NAMES = {
    memory_pb2.SOURCE_TYPE_CHAT: "chat",
    memory_pb2.SOURCE_TYPE_FILE: "file",
    memory_pb2.SOURCE_TYPE_IMAGE: "image",
    memory_pb2.SOURCE_TYPE_AUDIO: "audio",
    memory_pb2.SOURCE_TYPE_TOOL_CALL: "tool_call",
    memory_pb2.SOURCE_TYPE_TOOL_RESULT: "tool_result",
    memory_pb2.SOURCE_TYPE_TOOL_SCHEMA: "tool_schema",
    memory_pb2.SOURCE_TYPE_SYSTEM: "system",
}
MODES = {"fast": gateway_pb2.EXTRACT_MODE_FAST, "fine": gateway_pb2.EXTRACT_MODE_FINE}
ASYNC_MODES = {"sync": gateway_pb2.ASYNC_MODE_SYNC, "async": gateway_pb2.ASYNC_MODE_ASYNC}


def _bad(message: str, reason: str, **metadata: Any) -> InvalidArgument:
    return InvalidArgument(message, reason=reason, metadata={k: str(v) for k, v in metadata.items()})


def _timestamp(value: Any, where: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 253_402_300_799:  # the Timestamp range ends in year 9999
            raise _bad(f"{where} is not a usable epoch time: {value!r}", "BAD_TIME", field=where)
        ts.FromNanoseconds(round(value * 1e9))
    elif isinstance(value, dt.datetime):
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(f"{where} is not an ISO-8601 time: {value!r}", "BAD_TIME", field=where) from None
        ts.FromDatetime(parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC))
    else:
        raise _bad(f"{where} must be a time (ISO string, datetime or epoch seconds)", "BAD_TIME", field=where)
    return ts


def _part(part: Any, i: int, j: int) -> message_pb2.ContentPart:
    if not isinstance(part, Mapping):
        raise _bad(f"messages[{i}].content[{j}] must be an object", "BAD_CONTENT_PART", message_index=i, part_index=j)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(
                f"messages[{i}].content[{j}].text must be a string", "NON_STRING_TEXT", message_index=i, part_index=j
            )
        return message_pb2.ContentPart(text=message_pb2.TextPart(text=text))
    if kind == "file":
        f = part.get("file")
        if not isinstance(f, Mapping):
            raise _bad(
                f"messages[{i}].content[{j}].file must be an object", "BAD_FILE_PART", message_index=i, part_index=j
            )
        return message_pb2.ContentPart(
            file=message_pb2.FilePart(
                file_id=str(f.get("file_id") or ""),
                filename=str(f.get("filename") or ""),
                file_data=str(f.get("file_data") or ""),
            )
        )
    if kind == "image_url":
        img = part.get("image_url")
        url = img.get("url") if isinstance(img, Mapping) else img
        if not isinstance(url, str) or not url:
            raise _bad(
                f"messages[{i}].content[{j}].image_url.url must be a string",
                "BAD_IMAGE_PART",
                message_index=i,
                part_index=j,
            )
        detail = img.get("detail", "") if isinstance(img, Mapping) else ""
        return message_pb2.ContentPart(image_url=message_pb2.ImageUrlPart(url=url, detail=str(detail or "")))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        if not isinstance(audio, Mapping):
            raise _bad(
                f"messages[{i}].content[{j}].input_audio must be an object",
                "BAD_AUDIO_PART",
                message_index=i,
                part_index=j,
            )
        return message_pb2.ContentPart(
            input_audio=message_pb2.InputAudioPart(data=str(audio.get("data", "")), format=str(audio.get("format", "")))
        )
    raise _bad(
        f"messages[{i}].content[{j}] has unknown type {kind!r}", "UNKNOWN_CONTENT_TYPE", message_index=i, part_index=j
    )


def message_to_proto(msg: Any, i: int) -> message_pb2.ChatMessage:
    if not isinstance(msg, Mapping):
        raise _bad(f"messages[{i}] must be an object", "BAD_MESSAGE", message_index=i)
    role = msg.get("role")
    if role not in _ROLES:
        raise _bad(f"messages[{i}] has unknown role {role!r}", "UNKNOWN_ROLE", message_index=i)
    out = message_pb2.ChatMessage(
        role=_ROLES[role],
        name=str(msg.get("name") or ""),
        tool_call_id=str(msg.get("tool_call_id") or ""),
        message_id=str(msg.get("message_id") or msg.get("id") or ""),
    )
    content = msg.get("content")
    if isinstance(content, str):
        out.content.append(message_pb2.ContentPart(text=message_pb2.TextPart(text=content)))
    elif isinstance(content, list):
        out.content.extend(_part(p, i, j) for j, p in enumerate(content))
    elif content is not None:
        raise _bad(f"messages[{i}].content must be a string or a list of parts", "NON_STRING_TEXT", message_index=i)
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad(f"messages[{i}].tool_calls must be a list", "BAD_TOOL_CALL", message_index=i)
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            raise _bad(
                f"messages[{i}].tool_calls[{k}] must be an object with a function object",
                "BAD_TOOL_CALL",
                message_index=i,
            )
        out.tool_calls.append(
            message_pb2.ToolCall(
                id=str(call.get("id") or ""),
                type=str(call.get("type") or "function"),
                function=message_pb2.FunctionCall(
                    name=str(fn.get("name") or ""), arguments=str(fn.get("arguments") or "")
                ),
            )
        )
    if not out.content and not out.tool_calls:
        raise _bad(f"messages[{i}] has no content", "MISSING_CONTENT", message_index=i)
    chat_time = msg.get("chat_time")
    if chat_time is not None:
        out.chat_time.CopyFrom(_timestamp(chat_time, f"messages[{i}].chat_time"))
    return out


def messages_to_proto(messages: Sequence[Any] | str) -> list[message_pb2.ChatMessage]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence):
        raise _bad("messages must be a list of OpenAI-format messages", "BAD_MESSAGES")
    return [message_to_proto(m, i) for i, m in enumerate(messages)]


_FILTER_FIELDS = {
    "memory_type",
    "memory_types",
    "user_id",
    "session_id",
    "tags",
    "created_after",
    "created_before",
    "created_at",
    "include_archived",
    "and",
}


def filter_to_proto(flt: Mapping[str, Any] | None) -> memory_pb2.MemoryFilter:
    """A MemoryFilter from a dict such as ``{"memory_type": "UserMemory", "tags": ["x"],
    "created_at": {"gte": "2024-01-01"}}``; ``{"and": [...]}`` of such dicts is accepted too.
    Unknown fields or operators raise InvalidArgument rather than being ignored."""
    out = memory_pb2.MemoryFilter()
    if not flt:
        return out
    if not isinstance(flt, Mapping):
        raise _bad("filter must be an object", "BAD_FILTER")
    clauses: list[tuple[str, Any]] = []
    for key, value in flt.items():
        if key == "and":
            if not isinstance(value, list):
                raise _bad('filter "and" must be a list', "BAD_FILTER")
            for sub in value:
                if not isinstance(sub, Mapping):
                    raise _bad('filter "and" items must be objects', "BAD_FILTER")
                clauses.extend(sub.items())
        else:
            clauses.append((key, value))
    for key, value in clauses:
        if key not in _FILTER_FIELDS or key == "and":
            raise _bad(
                f"unknown filter field {key!r}; known: {sorted(_FILTER_FIELDS - {'and'})}",
                "UNKNOWN_FILTER_FIELD",
                field=key,
            )
        if key in ("memory_type", "memory_types"):
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise _bad(f"filter {key} must be a type name or a list of them", "UNKNOWN_MEMORY_TYPE", field=key)
            for name in names:
                if name not in MEMORY_TYPES:
                    raise _bad(f"unknown memory type {name!r}", "UNKNOWN_MEMORY_TYPE", field=key)
                out.memory_types.append(MEMORY_TYPES[name])
        elif key in ("user_id", "session_id"):
            if not isinstance(value, str):
                raise _bad(f"filter {key} must be a string", "BAD_FILTER_VALUE", field=key)
            setattr(out, key, value)
        elif key == "tags":
            tags = [value] if isinstance(value, str) else value
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise _bad("filter tags must be a string or a list of strings", "BAD_FILTER_VALUE", field=key)
            out.tags.extend(tags)
        elif key == "include_archived":
            if not isinstance(value, bool):
                raise _bad("filter include_archived must be true or false", "BAD_FILTER_VALUE", field=key)
            out.include_archived = value
        elif key == "created_after":
            out.created_after.CopyFrom(_timestamp(value, "filter.created_after"))
        elif key == "created_before":
            out.created_before.CopyFrom(_timestamp(value, "filter.created_before"))
        elif key == "created_at":
            if not isinstance(value, Mapping):
                raise _bad("filter created_at must be an object of operators (gte, lt)", "BAD_FILTER_VALUE", field=key)
            for op, bound in value.items():
                # MemoryFilter bounds are [created_after, created_before); the strict and inclusive
                # forms shift by one microsecond, the stores' time resolution.
                if op in ("gte", "gt"):
                    ts = _timestamp(bound, "filter.created_at." + op)
                    if op == "gt":
                        ts.FromNanoseconds(ts.ToNanoseconds() + 1000)
                    out.created_after.CopyFrom(ts)
                elif op in ("lt", "lte"):
                    ts = _timestamp(bound, "filter.created_at." + op)
                    if op == "lte":
                        ts.FromNanoseconds(ts.ToNanoseconds() + 1000)
                    out.created_before.CopyFrom(ts)
                else:
                    raise _bad(f"unknown operator {op!r} for created_at", "UNKNOWN_FILTER_OPERATOR", field=key)
    return out


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        try:
            s.update(dict(value))
        except (ValueError, TypeError) as exc:
            raise _bad(f"info must be JSON-like: {exc}", "BAD_INFO") from None
    return s


def _iso(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=dt.UTC).isoformat()


def memory_to_dict(item: memory_pb2.MemoryItem, score: float | None = None) -> dict[str, Any]:
    """A memory as MemOS shows it: id, memory, metadata{...}."""
    md = item.metadata
    from google.protobuf import json_format

    sources = []
    for s in md.sources:
        src: dict[str, Any] = {
            "type": _SOURCE_NAMES.get(s.type, "chat"),
            "role": s.role,
            "message_index": s.message_index,
            "message_id": s.message_id,
            "content": s.content,
        }
        if s.HasField("chat_time"):
            src["chat_time"] = _iso(s.chat_time)
        if s.HasField("file"):
            src["file"] = json_format.MessageToDict(s.file, preserving_proto_field_name=True)
        for name in ("image_url", "tool_call_id", "tool_name"):
            if getattr(s, name):
                src[name] = getattr(s, name)
        sources.append(src)
    metadata: dict[str, Any] = {
        "memory_type": MEMORY_TYPE_NAMES.get(md.memory_type, "LongTermMemory"),
        "status": _STATUS_NAMES.get(md.status, "activated"),
        "key": md.key,
        "tags": list(md.tags),
        "sources": sources,
        "background": md.background,
        "confidence": round(md.confidence, 4),
        "user_id": md.user_id,
        "session_id": md.session_id,
        "cube_id": md.cube_id,
        "created_at": _iso(md.created_at) if md.HasField("created_at") else None,
        "updated_at": _iso(md.updated_at) if md.HasField("updated_at") else None,
        "version": md.version,
        "info": json_format.MessageToDict(md.info) if md.HasField("info") else {},
    }
    if md.HasField("event_time"):
        metadata["event_time"] = _iso(md.event_time)
    if score is not None:
        metadata["relativity"] = round(score, 6)
    return {"id": item.id, "memory": item.memory, "metadata": metadata}
