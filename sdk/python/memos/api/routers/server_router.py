"""MemOS's server API as functions and handler objects.

``add_memories`` / ``add_handler``, ``search_memories`` / ``search_handler``,
``chat_stream_playground`` (``ENABLE_CHAT_API=true``) and ``mem_scheduler``.

With ``MEMOS_GATEWAY_ADDR`` set, calls go to that gateway (and scheduler work to
``MEMOS_SCHEDULER_ADDR``). Unset, the whole suite starts in this process (see
:class:`memos.client.EmbeddedSuite`) the first time it is needed, and stops when
the interpreter exits.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from memos.api.product_models import APIADDRequest, APISearchRequest, ChatRequest, MemoryResponse, SearchResponse
from memos.client import AsyncMemosClient, MemosClient
from memos.client._convert import MEMORY_TYPE_NAMES, memory_to_dict
from memos.client.embedded import EmbeddedSuite
from memos.gateway.v1 import gateway_pb2
from memos.mem_scheduler.facade import MemScheduler
from shared.errors import FailedPrecondition, InvalidArgument, MemosError

_lock = threading.Lock()
_client: MemosClient | None = None
_suite: EmbeddedSuite | None = None
_address = ""


def _shutdown() -> None:
    global _client, _suite
    mem_scheduler.stop()
    if _client is not None:
        _client.close()
        _client = None
    if _suite is not None:
        _suite.stop()
        _suite = None


def get_client() -> MemosClient:
    """The process-wide client (starting the embedded suite if no gateway is configured)."""
    global _client, _suite, _address
    with _lock:
        if _client is None:
            address = os.environ.get("MEMOS_GATEWAY_ADDR", "")
            if not address:
                _suite = EmbeddedSuite()
                address = _suite.start()
            _client = MemosClient(address)
            _address = address
            atexit.register(_shutdown)
        return _client


def scheduler_address() -> str:
    """``MEMOS_SCHEDULER_ADDR``, or the embedded suite's scheduler."""
    address = os.environ.get("MEMOS_SCHEDULER_ADDR", "")
    if address:
        return address
    get_client()
    if _suite is None:
        raise FailedPrecondition(
            "MEMOS_GATEWAY_ADDR is set but MEMOS_SCHEDULER_ADDR is not: set it to reach the scheduler",
            reason="SCHEDULER_NOT_CONFIGURED",
        )
    return _suite.scheduler_address


mem_scheduler = MemScheduler(scheduler_address, get_client)


def _cubes(ids: list[str] | None, single: str | None, user_id: str, field: str) -> list[str]:
    if ids:
        return list(ids)
    if single:
        return [single]
    # MemOS's default: the user's own cube is named after the user.
    if not user_id:
        raise InvalidArgument("user_id is required", reason="MISSING_USER_ID")
    return [user_id]


def add_memories(add_req: APIADDRequest) -> MemoryResponse:
    messages = add_req.messages
    if messages is None and add_req.memory_content:
        messages = [{"role": "user", "content": add_req.memory_content}]
    if not messages:
        raise InvalidArgument("messages (or memory_content) must be given", reason="EMPTY_MESSAGES")
    resp = get_client().add_memories(
        add_req.user_id,
        _cubes(add_req.writable_cube_ids, add_req.mem_cube_id, add_req.user_id, "writable_cube_ids"),
        messages,
        mode=add_req.mode or "fast",
        async_mode=add_req.async_mode,
        session_id=add_req.session_id or "",
        custom_tags=add_req.custom_tags or (),
        info=add_req.info,
        request_id=add_req.task_id,
    )
    data = [
        {
            "memory": m.memory,
            "memory_id": m.memory_id,
            "memory_type": MEMORY_TYPE_NAMES.get(m.memory_type, ""),
            "cube_id": m.cube_id,
        }
        for m in resp.memories
    ]
    # Parts that produced no memory (a refused URL, a corrupt file, ...): listed, never dropped silently.
    data += [
        {
            "cube_id": e.cube_id,
            "message_index": e.message_index,
            "part_index": e.part_index,
            "error": {"code": e.status.code, "message": e.status.message, "reason": _reason(e.status)},
        }
        for e in resp.part_errors
    ]
    return MemoryResponse(message=resp.message, data=data)


def _reason(status) -> str:  # type: ignore[no-untyped-def]
    from shared.grpc_errors import from_status_proto

    return from_status_proto(status).reason


def search_memories(search_req: APISearchRequest) -> SearchResponse:
    if search_req.internet_search:
        raise InvalidArgument("internet_search is not supported", reason="UNSUPPORTED_OPTION")
    resp = get_client().search_memories(
        search_req.user_id,
        _cubes(search_req.readable_cube_ids, search_req.mem_cube_id, search_req.user_id, "readable_cube_ids"),
        search_req.query,
        top_k=search_req.top_k,
        filter=search_req.filter,
        include_preference=search_req.include_preference,
        pref_top_k=search_req.pref_top_k,
        session_id=search_req.session_id or "",
    )

    def bucket(b) -> dict:  # type: ignore[no-untyped-def]
        out = {
            "cube_id": b.cube_id,
            "memories": [memory_to_dict(m.item, m.score) for m in b.memories],
            "total_nodes": b.total,
        }
        if b.status.code:
            out["error"] = {"code": b.status.code, "message": b.status.message}
        return out

    data = {
        "text_mem": [bucket(b) for b in resp.text_mem],
        "act_mem": [],
        "para_mem": [],
        "pref_mem": [bucket(b) for b in resp.pref_mem],
        "pref_note": resp.pref_string,
    }
    failed = [b.cube_id for b in resp.text_mem if b.status.code]
    message = "Search completed successfully" if not failed else f"Search completed; cubes without an answer: {failed}"
    return SearchResponse(message=message, data=data)


class AddHandler:
    """MemOS's ``add_handler``."""

    def handle_add_memories(self, add_req: APIADDRequest) -> MemoryResponse:
        return add_memories(add_req)


class SearchHandler:
    """MemOS's ``search_handler``."""

    def handle_search_memories(self, search_req: APISearchRequest) -> SearchResponse:
        return search_memories(search_req)


add_handler = AddHandler()
search_handler = SearchHandler()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def chat_event_to_sse(event: gateway_pb2.ChatResponse) -> list[dict[str, Any]]:
    """One gateway chat event as MemOS's stream events (``{"type": ..., "data": ...}``)."""
    kind = event.WhichOneof("event")
    if kind == "status":
        return [{"type": "status", "data": event.status.stage, "detail": event.status.detail}]
    if kind == "references":
        refs = [memory_to_dict(m.item, m.score) for m in event.references.memories]
        prefs = [memory_to_dict(m.item, m.score) for m in event.references.preferences]
        out: list[dict[str, Any]] = [{"type": "reference", "data": refs}]
        if prefs:
            out.append({"type": "pref_reference", "data": prefs})
        return out
    if kind == "text":
        return [{"type": "text", "data": event.text.delta}]
    if kind == "end":
        end = event.end
        return [
            {
                "type": "time",
                "data": {
                    "first_token_time": round(end.time_to_first_token_seconds, 4),
                    "total_time": round(end.total_seconds, 4),
                },
            },
            {
                "type": "end",
                "data": {
                    "answer_source": gateway_pb2.AnswerSource.Name(end.source),
                    "added_memories": [json_format.MessageToDict(m) for m in end.added_memories],
                    "query_event_id": end.query_event_id,
                },
            },
        ]
    if kind == "error":
        return [{"type": "error", "content": event.error.message, "code": event.error.code}]
    return []


class StreamingChatResponse:
    """What ``chat_stream_playground`` returns: like Starlette's StreamingResponse, whose
    ``body_iterator`` async-iterates server-sent-event chunks ``data: {json}\\n\\n``."""

    media_type = "text/event-stream"

    def __init__(self, body_iterator: AsyncIterator[str]) -> None:
        self.body_iterator = body_iterator


def _chat_request(chat_req: ChatRequest) -> gateway_pb2.ChatRequest:
    if chat_req.internet_search:
        raise InvalidArgument("internet_search is not supported", reason="UNSUPPORTED_OPTION")
    from memos.client._convert import messages_to_proto

    readable = _cubes(chat_req.readable_cube_ids, chat_req.mem_cube_id, chat_req.user_id, "readable_cube_ids")
    writable = list(chat_req.writable_cube_ids or [])
    if chat_req.add_message_on_answer and not writable:
        writable = [readable[0]]
    return gateway_pb2.ChatRequest(
        user_id=chat_req.user_id,
        query=chat_req.query,
        readable_cube_ids=readable,
        writable_cube_ids=writable,
        session_id=chat_req.session_id or "",
        top_k=chat_req.top_k,
        history=messages_to_proto(chat_req.history) if chat_req.history else [],
        system_prompt=chat_req.system_prompt or "",
        include_preference=chat_req.include_preference,
        add_message_on_answer=chat_req.add_message_on_answer and bool(writable),
    )


def chat_stream_playground(chat_req: ChatRequest) -> StreamingChatResponse:
    """Streams a chat with memory as server-sent events (needs ``ENABLE_CHAT_API=true``).

    Failures after the stream started arrive as an ``error`` event, as in MemOS.
    """
    if os.environ.get("ENABLE_CHAT_API", "false").strip().lower() != "true":
        raise FailedPrecondition("the chat API is disabled: set ENABLE_CHAT_API=true", reason="CHAT_API_DISABLED")
    request = _chat_request(chat_req)
    get_client()  # start the embedded suite (if any) before the first chunk is awaited

    async def body() -> AsyncIterator[str]:
        client = AsyncMemosClient(_address)
        try:
            async for event in client.chat_request(request):
                for payload in chat_event_to_sse(event):
                    yield _sse(payload)
        except MemosError as err:
            yield _sse({"type": "error", "content": err.message, "reason": err.reason})
        finally:
            await client.close()

    return StreamingChatResponse(body())
