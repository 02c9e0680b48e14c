"""MemOS's server API as functions: ``add_memories`` and ``search_memories``.

With ``MEMOS_GATEWAY_ADDR`` set, calls go to that gateway. Unset, the whole
suite starts in this process (see :class:`memos.client.EmbeddedSuite`) the
first time it is needed, and stops when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import threading

from memos.api.product_models import APIADDRequest, APISearchRequest, MemoryResponse, SearchResponse
from memos.client import MemosClient
from memos.client._convert import MEMORY_TYPE_NAMES, memory_to_dict
from memos.client.embedded import EmbeddedSuite
from shared.errors import InvalidArgument

_lock = threading.Lock()
_client: MemosClient | None = None
_suite: EmbeddedSuite | None = None


def _shutdown() -> None:
    global _client, _suite
    if _client is not None:
        _client.close()
        _client = None
    if _suite is not None:
        _suite.stop()
        _suite = None


def get_client() -> MemosClient:
    """The process-wide client (starting the embedded suite if no gateway is configured)."""
    global _client, _suite
    with _lock:
        if _client is None:
            address = os.environ.get("MEMOS_GATEWAY_ADDR", "")
            if not address:
                _suite = EmbeddedSuite()
                address = _suite.start()
            _client = MemosClient(address)
            atexit.register(_shutdown)
        return _client


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
