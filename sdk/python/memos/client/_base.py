"""The client's methods, written once for the sync and the async client.

Each public method builds its request and hands it to ``_invoke``; the sync
client's ``_invoke`` returns the response, the async client's returns an
awaitable of it. Every mutation gets a request id, so retrying is safe.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import field_mask_pb2

from memos.client import _convert
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2
from shared.errors import InvalidArgument

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
# The SDK puts a request id on every mutation, so every method may be retried on UNAVAILABLE.
IDEMPOTENT_METHODS = [f"/{GATEWAY_SERVICE.full_name}/{m.name}" for m in GATEWAY_SERVICE.methods]
_SHARE_ROLES = {
    "reader": gateway_pb2.SHARE_ROLE_READER,
    "writer": gateway_pb2.SHARE_ROLE_WRITER,
    "none": gateway_pb2.SHARE_ROLE_NONE,
}


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries an API key (``MEMOS_API_KEY`` when none is given)."""
    key = api_key if api_key is not None else os.environ.get("MEMOS_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


def _request_id(value: str | None) -> str:
    return value or uuid.uuid4().hex


def _choice(value: str, options: Mapping[str, int], field: str) -> int:
    try:
        return options[value]
    except KeyError:
        raise InvalidArgument(
            f"{field} must be one of {sorted(options)}, not {value!r}",
            reason=f"UNKNOWN_{field.upper()}",
            metadata={"field": field},
        ) from None


class ClientMethods:
    def _invoke(self, method: str, request: Any, timeout: float | None) -> Any:
        raise NotImplementedError

    def _stream(self, method: str, request: Any, timeout: float | None) -> Any:
        raise NotImplementedError

    def chat(
        self,
        user_id: str,
        query: str,
        *,
        readable_cube_ids: Sequence[str] = (),
        writable_cube_ids: Sequence[str] = (),
        session_id: str = "",
        top_k: int = 10,
        history: Sequence[Mapping[str, Any]] = (),
        system_prompt: str = "",
        include_preference: bool = True,
        add_message_on_answer: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Streams a chat's events (``gateway_pb2.ChatResponse``: status, references, text, end, error).

        The sync client returns an iterator, the async client an async iterator.
        """
        req = gateway_pb2.ChatRequest(
            request_id=_request_id(request_id),
            user_id=user_id,
            query=query,
            readable_cube_ids=list(readable_cube_ids),
            writable_cube_ids=list(writable_cube_ids),
            session_id=session_id,
            top_k=top_k,
            history=_convert.messages_to_proto(list(history)) if history else [],
            system_prompt=system_prompt,
            include_preference=include_preference,
            add_message_on_answer=add_message_on_answer,
        )
        return self.chat_request(req, timeout=timeout)

    def chat_request(self, request: gateway_pb2.ChatRequest, *, timeout: float | None = None) -> Any:
        """:meth:`chat` with a prepared request."""
        if not request.request_id:
            request.request_id = _request_id(None)
        return self._stream("Chat", request, timeout)

    def add_memories(
        self,
        user_id: str,
        cube_ids: Sequence[str],
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        mode: str = "fast",
        async_mode: str = "sync",
        session_id: str = "",
        custom_tags: Sequence[str] = (),
        info: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.AddMemoriesResponse:
        """Adds OpenAI-format messages to each of ``cube_ids`` (created if new)."""
        req = gateway_pb2.AddMemoriesRequest(
            request_id=_request_id(request_id),
            user_id=user_id,
            writable_cube_ids=list(cube_ids),
            session_id=session_id,
            messages=_convert.messages_to_proto(messages),
            mode=_choice(mode, _convert.MODES, "mode"),
            async_mode=_choice(async_mode, _convert.ASYNC_MODES, "async_mode"),
            custom_tags=list(custom_tags),
            info=_convert.struct(info),
        )
        return self._invoke("AddMemories", req, timeout)

    def search_memories(
        self,
        user_id: str,
        cube_ids: Sequence[str],
        query: str,
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - MemOS's name
        include_preference: bool = False,
        pref_top_k: int = 6,
        session_id: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.SearchMemoriesResponse:
        """Searches the cubes in parallel; one bucket per cube plus a merged ranking."""
        req = gateway_pb2.SearchMemoriesRequest(
            user_id=user_id,
            readable_cube_ids=list(cube_ids),
            query=query,
            top_k=top_k,
            filter=_convert.filter_to_proto(filter),
            include_preference=include_preference,
            pref_top_k=pref_top_k,
            session_id=session_id,
        )
        return self._invoke("SearchMemories", req, timeout)

    def get_memory(
        self,
        user_id: str,
        cube_id: str,
        memory_id: str,
        *,
        include_history: bool = False,
        timeout: float | None = None,
    ) -> gateway_pb2.GetMemoryResponse:
        """One memory; with ``include_history``, also the versions updates replaced (newest first)."""
        req = gateway_pb2.GetMemoryRequest(
            user_id=user_id, cube_id=cube_id, memory_id=memory_id, include_history=include_history
        )
        return self._invoke("GetMemory", req, timeout)

    def list_memories(
        self,
        user_id: str,
        cube_id: str,
        *,
        page_size: int = 100,
        page_token: str = "",
        filter: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: A002
    ) -> gateway_pb2.ListMemoriesResponse:
        req = gateway_pb2.ListMemoriesRequest(
            user_id=user_id,
            cube_id=cube_id,
            page_size=page_size,
            page_token=page_token,
            filter=_convert.filter_to_proto(filter),
        )
        return self._invoke("ListMemories", req, timeout)

    def update_memory(
        self,
        user_id: str,
        cube_id: str,
        memory_id: str,
        *,
        memory: str | None = None,
        tags: Sequence[str] | None = None,
        key: str | None = None,
        memory_type: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.UpdateMemoryResponse:
        """Changes the given fields only; a new text is re-embedded."""
        item = memory_pb2.MemoryItem(id=memory_id)
        paths = []
        if memory is not None:
            item.memory = memory
            paths.append("memory")
        if tags is not None:
            item.metadata.tags.extend(tags)
            paths.append("metadata.tags")
        if key is not None:
            item.metadata.key = key
            paths.append("metadata.key")
        if memory_type is not None:
            item.metadata.memory_type = _choice(memory_type, _convert.MEMORY_TYPES, "memory_type")
            paths.append("metadata.memory_type")
        req = gateway_pb2.UpdateMemoryRequest(
            request_id=_request_id(request_id),
            user_id=user_id,
            cube_id=cube_id,
            memory=item,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        return self._invoke("UpdateMemory", req, timeout)

    def delete_memories(
        self,
        user_id: str,
        cube_id: str,
        memory_ids: Sequence[str] = (),
        *,
        all: bool = False,  # noqa: A002
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - MemOS's name
        dry_run: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.DeleteMemoriesResponse:
        """Deletes by exactly one of ``memory_ids``, ``filter`` (a dict as in :meth:`search_memories`;
        unknown fields or wrong types raise InvalidArgument) and ``all``. With ``dry_run``, deletes
        nothing and reports in ``deleted_count`` how many would go."""
        req = gateway_pb2.DeleteMemoriesRequest(
            request_id=_request_id(request_id),
            user_id=user_id,
            cube_id=cube_id,
            memory_ids=list(memory_ids),
            all=all,
            dry_run=dry_run,
        )
        if filter is not None:
            req.filter.CopyFrom(_convert.filter_to_proto(filter))
        return self._invoke("DeleteMemories", req, timeout)

    def create_cube(
        self, user_id: str, cube_id: str, *, name: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> gateway_pb2.CreateCubeResponse:
        req = gateway_pb2.CreateCubeRequest(
            request_id=_request_id(request_id), user_id=user_id, cube_id=cube_id, name=name
        )
        return self._invoke("CreateCube", req, timeout)

    def list_cubes(self, user_id: str, *, timeout: float | None = None) -> gateway_pb2.ListCubesResponse:
        return self._invoke("ListCubes", gateway_pb2.ListCubesRequest(user_id=user_id), timeout)

    def share_cube(
        self,
        user_id: str,
        cube_id: str,
        target_user_id: str,
        role: str = "reader",
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.ShareCubeResponse:
        """Gives ``target_user_id`` "reader" or "writer" access, or "none" to revoke it."""
        req = gateway_pb2.ShareCubeRequest(
            request_id=_request_id(request_id),
            user_id=user_id,
            cube_id=cube_id,
            target_user_id=target_user_id,
            role=_choice(role, _SHARE_ROLES, "role"),
        )
        return self._invoke("ShareCube", req, timeout)

    def delete_cube(
        self, user_id: str, cube_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> gateway_pb2.DeleteCubeResponse:
        req = gateway_pb2.DeleteCubeRequest(request_id=_request_id(request_id), user_id=user_id, cube_id=cube_id)
        return self._invoke("DeleteCube", req, timeout)

    def delete_user_data(
        self, user_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> gateway_pb2.DeleteUserDataResponse:
        """Erases the user: owned cubes, their memories everywhere, their access to shared cubes."""
        req = gateway_pb2.DeleteUserDataRequest(request_id=_request_id(request_id), user_id=user_id)
        return self._invoke("DeleteUserData", req, timeout)

    def export_user_data(self, user_id: str, *, timeout: float | None = None) -> Any:
        """Streams everything kept about the user, one record per ``gateway_pb2.ExportUserDataResponse``
        (its ``record`` oneof: cube, memory, preference, working_memory, task, kv_cache), ending
        with the summary record (the count of each kind). An iterator that ends without a summary
        (it raised) is an incomplete export.

        The sync client returns an iterator, the async client an async iterator.
        """
        return self._stream("ExportUserData", gateway_pb2.ExportUserDataRequest(user_id=user_id), timeout)
