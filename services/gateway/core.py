"""The gateway's logic: access control, cube creation, fan-out and merging.

Works on the protobuf contract types (they are the gateway's domain: it
composes other services), and reports failures with :mod:`shared.errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import field_mask_pb2, json_format, struct_pb2
from google.rpc import status_pb2

from memos.actmem.v1 import actmem_pb2
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2
from memos.ingest.v1 import ingest_pb2
from memos.scheduler.v1 import scheduler_pb2
from memos.textmem.v1 import textmem_pb2
from services.gateway.actmem_client import ActMemClient
from services.gateway.auth import check_acting_user
from services.gateway.ingest_client import IngestClient
from services.gateway.scheduler_client import SchedulerClient
from services.gateway.settings import GatewaySettings
from services.gateway.textmem_client import TextMemClient
from shared.errors import DeadlineExceeded, InvalidArgument, MemosError, NotFound, PermissionDenied, Unavailable
from shared.grpc_errors import to_status_proto

log = logging.getLogger(__name__)

MAX_TOP_K = 100
_READ_ROLES = {"owner", "writer", "reader"}
_WRITE_ROLES = {"owner", "writer"}
_ROLE_NAMES = {textmem_pb2.CUBE_ROLE_READER: "reader", textmem_pb2.CUBE_ROLE_WRITER: "writer"}
_TO_INGEST_MODE = {
    gateway_pb2.EXTRACT_MODE_UNSPECIFIED: ingest_pb2.EXTRACTION_MODE_FAST,
    gateway_pb2.EXTRACT_MODE_FAST: ingest_pb2.EXTRACTION_MODE_FAST,
    gateway_pb2.EXTRACT_MODE_FINE: ingest_pb2.EXTRACTION_MODE_FINE,
}
_FROM_INGEST_MODE = {
    ingest_pb2.EXTRACTION_MODE_FAST: gateway_pb2.EXTRACT_MODE_FAST,
    ingest_pb2.EXTRACTION_MODE_FINE: gateway_pb2.EXTRACT_MODE_FINE,
}
_SHARE_TO_CUBE_ROLE = {
    gateway_pb2.SHARE_ROLE_READER: textmem_pb2.CUBE_ROLE_READER,
    gateway_pb2.SHARE_ROLE_WRITER: textmem_pb2.CUBE_ROLE_WRITER,
    gateway_pb2.SHARE_ROLE_NONE: textmem_pb2.CUBE_ROLE_UNSPECIFIED,
}


def role_of(cube: textmem_pb2.Cube, user_id: str) -> str:
    if cube.owner_id == user_id:
        return "owner"
    for m in cube.members:
        if m.user_id == user_id:
            return _ROLE_NAMES.get(m.role, "")
    return ""


def require_user(user_id: str) -> None:
    """The acting user: present, sane, and (with API keys on) the caller's own."""
    if not user_id or not user_id.strip():
        raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
    if len(user_id) > 256:
        raise InvalidArgument("user_id is longer than 256 characters", reason="USER_ID_TOO_LONG")
    check_acting_user(user_id)


def check_cube_ids(cube_ids: Sequence[str], field: str, limit: int) -> list[str]:
    if not cube_ids:
        raise InvalidArgument(f"{field} must name at least one cube", reason="NO_CUBES", metadata={"field": field})
    if len(cube_ids) > limit:
        raise InvalidArgument(
            f"{field} names {len(cube_ids)} cubes; the limit is {limit}",
            reason="TOO_MANY_CUBES",
            metadata={"field": field, "limit": str(limit)},
        )
    for c in cube_ids:
        if not c or not c.strip():
            raise InvalidArgument(
                f"{field} contains an empty cube id", reason="EMPTY_CUBE_ID", metadata={"field": field}
            )
        if len(c) > 256:
            raise InvalidArgument(f"{field} contains a cube id over 256 characters", reason="CUBE_ID_TOO_LONG")
    return list(dict.fromkeys(cube_ids))


def as_list_item(marker: str, text: str) -> str:
    """``text`` as one list item: continuation lines indented under the marker, so a memory that
    contains line breaks cannot start a heading, a numbered item or an instruction of its own
    at the margin of a prompt, an answer or the preference string."""
    pad = " " * len(marker)
    lines = text.splitlines() or [""]  # every kind of line break: \r, \u2028, \x85, ...
    return marker + "\n".join(line if i == 0 else pad + line for i, line in enumerate(lines))


def check_memory_ids(memory_ids: Sequence[str], field: str) -> None:
    """Memory ids are textmem's hex UUIDs; anything longer than an id could be is refused here, before
    it is echoed back in a NOT_FOUND (an error's text and details travel in gRPC's trailing metadata,
    which a peer refuses past 16 KiB: a huge id turned a plain NOT_FOUND into RESOURCE_EXHAUSTED)."""
    for memory_id in memory_ids:
        if len(memory_id) > 256:
            raise InvalidArgument(
                f"{field} contains an id over 256 characters", reason="MEMORY_ID_TOO_LONG", metadata={"field": field}
            )


def check_memory_filter(flt: memory_pb2.MemoryFilter, field: str) -> None:
    """What the gateway can tell of a filter alone: every memory type is one it knows. (Textmem
    checks the rest, such as an empty time range, for every cube alike.)"""
    for t in flt.memory_types:
        if t not in memory_pb2.MemoryType.values() or t == memory_pb2.MEMORY_TYPE_UNSPECIFIED:
            raise InvalidArgument(
                f"unknown memory type {t} in {field}",
                reason="UNKNOWN_MEMORY_TYPE",
                metadata={"field": f"{field}.memory_types"},
            )


def check_delete_selector(req: gateway_pb2.DeleteMemoriesRequest) -> None:
    """Exactly one of memory_ids, filter and all; a filter must narrow (all means everything)."""
    chosen = [
        name
        for name, on in (("memory_ids", bool(req.memory_ids)), ("filter", req.HasField("filter")), ("all", req.all))
        if on
    ]
    if len(chosen) != 1:
        raise InvalidArgument(
            "set exactly one of memory_ids, filter and all" + (f" (got {', '.join(chosen)})" if chosen else ""),
            reason="CONFLICTING_SELECTORS" if chosen else "NO_SELECTOR",
        )
    if req.HasField("filter"):
        check_memory_filter(req.filter, "filter")
        f = req.filter
        if not (
            f.memory_types
            or f.user_id
            or f.session_id
            or f.tags
            or f.HasField("created_after")
            or f.HasField("created_before")
        ):
            raise InvalidArgument(
                "the filter narrows nothing; set all to delete every memory of the cube",
                reason="EMPTY_FILTER",
                metadata={"field": "filter"},
            )


@dataclass
class _CachedCube:
    cube: textmem_pb2.Cube
    expires: float


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        textmem: TextMemClient,
        ingest: IngestClient | None = None,
        scheduler: SchedulerClient | None = None,
        actmem: ActMemClient | None = None,
    ) -> None:
        self.settings = settings
        self.textmem = textmem
        self.ingest = ingest
        self.scheduler = scheduler
        self.actmem = actmem
        self._cube_cache: dict[str, _CachedCube] = {}

    # cubes and access ---------------------------------------------------------------
    def _forget(self, cube_id: str) -> None:
        self._cube_cache.pop(cube_id, None)

    async def _get_cube(self, cube_id: str, timeout: float | None) -> textmem_pb2.Cube | None:
        now = time.monotonic()
        hit = self._cube_cache.get(cube_id)
        if hit is not None and hit.expires > now:
            return hit.cube
        try:
            resp = await self.textmem.call(
                self.textmem.cubes.GetCube, textmem_pb2.GetCubeRequest(cube_id=cube_id), timeout
            )
        except NotFound:
            return None
        if self.settings.cube_cache_ttl_s > 0:
            self._cube_cache[cube_id] = _CachedCube(resp.cube, now + self.settings.cube_cache_ttl_s)
        return resp.cube

    async def authorize_read(self, user_id: str, cube_ids: Sequence[str], timeout: float | None) -> None:
        cubes = await asyncio.gather(*(self._get_cube(c, timeout) for c in cube_ids))
        for cube_id, cube in zip(cube_ids, cubes, strict=True):
            if cube is None:
                raise NotFound(
                    f"cube {cube_id!r} does not exist", reason="CUBE_NOT_FOUND", metadata={"cube_id": cube_id}
                )
            if role_of(cube, user_id) not in _READ_ROLES:
                raise PermissionDenied(
                    f"user may not read cube {cube_id!r}", reason="CUBE_READ_DENIED", metadata={"cube_id": cube_id}
                )

    async def authorize_write(self, user_id: str, cube_ids: Sequence[str], timeout: float | None) -> list[str]:
        """Checks every cube before touching any; creates the new ones. Returns the created ids."""
        cubes = await asyncio.gather(*(self._get_cube(c, timeout) for c in cube_ids))
        missing = []
        for cube_id, cube in zip(cube_ids, cubes, strict=True):
            if cube is None:
                missing.append(cube_id)
            elif role_of(cube, user_id) not in _WRITE_ROLES:
                raise PermissionDenied(
                    f"user may not write cube {cube_id!r}", reason="CUBE_WRITE_DENIED", metadata={"cube_id": cube_id}
                )
        created = []
        for cube_id in missing:
            resp = await self.textmem.call(
                self.textmem.cubes.EnsureCube, textmem_pb2.EnsureCubeRequest(cube_id=cube_id, user_id=user_id), timeout
            )
            # Someone else may have created it a moment ago.
            if role_of(resp.cube, user_id) not in _WRITE_ROLES:
                raise PermissionDenied(
                    f"user may not write cube {cube_id!r}", reason="CUBE_WRITE_DENIED", metadata={"cube_id": cube_id}
                )
            if resp.created:
                created.append(cube_id)
        return created

    # add -----------------------------------------------------------------------------
    async def add(self, req: gateway_pb2.AddMemoriesRequest, timeout: float | None) -> gateway_pb2.AddMemoriesResponse:
        require_user(req.user_id)
        cube_ids = check_cube_ids(req.writable_cube_ids, "writable_cube_ids", self.settings.max_cubes_per_request)
        if not req.messages:
            raise InvalidArgument("messages must not be empty", reason="EMPTY_MESSAGES", metadata={"field": "messages"})
        if len(req.messages) > self.settings.max_messages_per_add:
            raise InvalidArgument(
                f"{len(req.messages)} messages; the limit is {self.settings.max_messages_per_add}",
                reason="TOO_MANY_MESSAGES",
                metadata={"limit": str(self.settings.max_messages_per_add)},
            )
        if req.mode not in gateway_pb2.ExtractMode.values():
            raise InvalidArgument(f"unknown mode {req.mode}", reason="UNKNOWN_MODE", metadata={"field": "mode"})
        if req.async_mode not in gateway_pb2.AsyncMode.values():
            raise InvalidArgument(
                f"unknown async_mode {req.async_mode}", reason="UNKNOWN_ASYNC_MODE", metadata={"field": "async_mode"}
            )
        notices: list[str] = []
        if req.mode == gateway_pb2.EXTRACT_MODE_FINE and self.ingest is None:
            notices.append("mode=fine needs an LLM-backed ingest service, none is configured: stored with fast mode")
        if req.async_mode == gateway_pb2.ASYNC_MODE_ASYNC and self.scheduler is None:
            notices.append("async_mode=async needs the scheduler service, none is configured: ran synchronously")
        await self.authorize_write(req.user_id, cube_ids, timeout)
        request_id = req.request_id or uuid.uuid4().hex
        session_id = req.session_id or "default_session"
        effective_mode = gateway_pb2.EXTRACT_MODE_FAST
        part_errors: list[gateway_pb2.AddPartError] = []
        candidates: list[textmem_pb2.MemoryCandidate] = []
        # Async fine adds store fast memories now; the scheduler's mem_read refines them later.
        defer_fine = (
            req.async_mode == gateway_pb2.ASYNC_MODE_ASYNC
            and req.mode == gateway_pb2.EXTRACT_MODE_FINE
            and self.scheduler is not None
        )
        parse_mode = ingest_pb2.EXTRACTION_MODE_FAST if defer_fine else _TO_INGEST_MODE[req.mode]
        refine = False
        if self.ingest is not None:
            # Parsed once (files fetched once, the LLM asked once), then written to every cube.
            parsed = await self.ingest.parse(
                ingest_pb2.ParseMessagesRequest(
                    user_id=req.user_id,
                    session_id=session_id,
                    messages=req.messages,
                    mode=parse_mode,
                    custom_tags=req.custom_tags,
                    info=req.info,
                ),
                timeout,
            )
            candidates = [textmem_pb2.MemoryCandidate(memory=c.memory, metadata=c.metadata) for c in parsed.candidates]
            effective_mode = _FROM_INGEST_MODE.get(parsed.effective_mode, gateway_pb2.EXTRACT_MODE_FAST)
            notices.extend(parsed.notices)
            refine = defer_fine and parsed.fine_available
            if defer_fine and not parsed.fine_available:
                notices.append("mode=fine needs an LLM, none is configured in ingest: stored with fast mode")
            part_errors = [
                gateway_pb2.AddPartError(message_index=e.message_index, part_index=e.part_index, status=e.status)
                for e in parsed.part_errors
            ]
        written: dict[str, list[str]] = {}
        # Existing memories the add archived (textmem's conflict resolution): a roll-back revives them.
        archived: dict[str, list[str]] = {}
        added: list[gateway_pb2.AddedMemory] = []
        try:
            for cube_id in cube_ids:
                if self.ingest is None:
                    resp = await self.textmem.call(
                        self.textmem.memories.AddMemories,
                        textmem_pb2.AddMemoriesRequest(
                            request_id=f"{request_id}:{cube_id}",
                            cube_id=cube_id,
                            user_id=req.user_id,
                            session_id=session_id,
                            messages=req.messages,
                            custom_tags=req.custom_tags,
                            info=req.info,
                        ),
                        timeout,
                    )
                elif candidates:
                    resp = await self.textmem.call(
                        self.textmem.memories.WriteMemories,
                        textmem_pb2.WriteMemoriesRequest(
                            request_id=f"{request_id}:{cube_id}",
                            cube_id=cube_id,
                            user_id=req.user_id,
                            session_id=session_id,
                            candidates=candidates,
                        ),
                        timeout,
                    )
                else:
                    continue
                # Memories the add merged into (dedupe) existed before it: a roll-back or a
                # refinement (which replaces what the add wrote) must leave them be.
                merged = set(resp.merged_ids)
                written[cube_id] = [m.id for m in resp.memories if m.id not in merged]
                returned = {m.id for m in resp.memories}
                archived[cube_id] = [i for i in resp.archived_ids if i not in returned]
                notices.extend(f"cube {cube_id}: {n}" for n in resp.notices)
                if resp.archived_ids:
                    notices.append(
                        f"cube {cube_id}: archived {len(resp.archived_ids)} memories that a newer fact contradicts"
                        f" (linked by SUPERSEDES): {', '.join(resp.archived_ids)}"
                    )
                added.extend(
                    gateway_pb2.AddedMemory(
                        memory_id=m.id,
                        memory=m.memory,
                        memory_type=m.metadata.memory_type,
                        cube_id=cube_id,
                        merged=m.id in merged,
                    )
                    for m in resp.memories
                )
        except MemosError:
            await self._roll_back(written, archived, request_id)
            raise
        task_ids: list[str] = []
        # Only what the add stored anew is refined: merged-into memories are older than the add.
        fresh = {cube_id: ids for cube_id, ids in written.items() if ids}
        if refine and fresh:
            task_ids = await self._queue_refinement(req, request_id, session_id, fresh, notices)
        message = f"added {len(added)} memories to {len(cube_ids)} cube(s)"
        merged_count = sum(1 for a in added if a.merged)
        if merged_count:
            message += f" ({merged_count} repeated existing ones and were merged into them)"
        if part_errors:
            message += f"; {len(part_errors)} part(s) not stored (see part_errors)"
        if notices:
            message += "; " + "; ".join(notices)
        return gateway_pb2.AddMemoriesResponse(
            message=message,
            memories=added,
            effective_mode=effective_mode,
            notices=notices,
            part_errors=part_errors,
            task_ids=task_ids,
        )

    async def _queue_refinement(
        self,
        req: gateway_pb2.AddMemoriesRequest,
        request_id: str,
        session_id: str,
        written: dict[str, list[str]],
        notices: list[str],
    ) -> list[str]:
        """Async fine add: the fast memories are stored and searchable; a ``mem_read`` task per
        cube refines them (fine extraction) and replaces them. If it cannot be queued, the fast
        memories simply stay, and the caller is told."""
        assert self.scheduler is not None
        content = json.dumps([json_format.MessageToDict(m) for m in req.messages])
        messages = []
        for cube_id, ids in written.items():
            info = struct_pb2.Struct()
            info.update({"memory_ids": ids, "custom_tags": list(req.custom_tags), "request_id": request_id})
            if req.HasField("info"):
                info["info"] = json_format.MessageToDict(req.info)
            m = scheduler_pb2.ScheduleMessage(
                item_id=f"mem_read:{request_id}:{cube_id}",
                user_id=req.user_id,
                cube_id=cube_id,
                session_id=session_id,
                label="mem_read",
                content=content,
                info=info,
            )
            m.timestamp.GetCurrentTime()
            messages.append(m)
        try:
            return await self.scheduler.submit(
                scheduler_pb2.SubmitMessagesRequest(request_id=f"mem_read:{request_id}", messages=messages),
                self.settings.scheduler_timeout_s,
            )
        except MemosError as err:
            log.warning("refinement not queued", extra={"reason": err.reason})
            notices.append(f"refinement not queued ({err.reason or err.code.name}): the fast memories stay as they are")
            return []

    async def _roll_back(
        self, written: dict[str, list[str]], archived: dict[str, list[str]] | None = None, request_id: str = ""
    ) -> None:
        """A multi-cube add failed part-way: remove what the earlier cubes got (with textmem's
        record of those adds, so that the client's retry under the same request id writes them
        again instead of replaying deleted ids), and set the memories their adds archived
        (conflict resolution) live again."""
        for cube_id, ids in (archived or {}).items():
            for memory_id in ids:
                try:
                    await self.textmem.call(
                        self.textmem.memories.UpdateMemory,
                        textmem_pb2.UpdateMemoryRequest(
                            request_id=uuid.uuid4().hex,
                            cube_id=cube_id,
                            memory=memory_pb2.MemoryItem(
                                id=memory_id,
                                metadata=memory_pb2.MemoryMetadata(status=memory_pb2.MEMORY_STATUS_ACTIVATED),
                            ),
                            update_mask=field_mask_pb2.FieldMask(paths=["metadata.status"]),
                        ),
                        self.settings.search_timeout_s,
                    )
                except MemosError:
                    log.error("could not revive a memory a rolled-back add archived", extra={"cube_id": cube_id})
        for cube_id, ids in written.items():
            if not ids:
                continue
            try:
                await self.textmem.call(
                    self.textmem.memories.DeleteMemories,
                    textmem_pb2.DeleteMemoriesRequest(
                        request_id=uuid.uuid4().hex,
                        cube_id=cube_id,
                        memory_ids=ids,
                        rolled_back_request_id=f"{request_id}:{cube_id}" if request_id else "",
                    ),
                    self.settings.search_timeout_s,
                )
            except MemosError:
                log.error("could not roll back a partial add", extra={"cube_id": cube_id, "count": len(ids)})

    # search ----------------------------------------------------------------------------
    async def search(
        self, req: gateway_pb2.SearchMemoriesRequest, time_remaining: float | None
    ) -> gateway_pb2.SearchMemoriesResponse:
        started = time.monotonic()
        require_user(req.user_id)
        cube_ids = check_cube_ids(req.readable_cube_ids, "readable_cube_ids", self.settings.max_cubes_per_request)
        if not req.query.strip():
            raise InvalidArgument("query must not be empty", reason="EMPTY_QUERY", metadata={"field": "query"})
        top_k = req.top_k or 10
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(
                f"top_k must be between 1 and {MAX_TOP_K}",
                reason="TOP_K_OUT_OF_RANGE",
                metadata={"field": "top_k", "max": str(MAX_TOP_K)},
            )
        pref_top_k = req.pref_top_k or 6
        if not 1 <= pref_top_k <= MAX_TOP_K:
            raise InvalidArgument(
                f"pref_top_k must be between 1 and {MAX_TOP_K}",
                reason="TOP_K_OUT_OF_RANGE",
                metadata={"field": "pref_top_k", "max": str(MAX_TOP_K)},
            )
        check_memory_filter(req.filter, "filter")
        budget = time_remaining if time_remaining is not None else self.settings.search_timeout_s
        if budget <= 0:
            raise DeadlineExceeded("the call's deadline had passed", reason="DEADLINE_PASSED")
        await self.authorize_read(req.user_id, cube_ids, budget)
        # Every cube gets what is left of the caller's deadline, less a reserve to answer in.
        fanout_timeout = max(budget - (time.monotonic() - started) - self.settings.fanout_reserve_s, 0.001)
        text_filter = memory_pb2.MemoryFilter()
        text_filter.CopyFrom(req.filter)
        if req.session_id and not text_filter.session_id:
            text_filter.session_id = req.session_id
        jobs = [self._search_cubes(cube_ids, req.query, top_k, text_filter, fanout_timeout)]
        if req.include_preference:
            pref_filter = memory_pb2.MemoryFilter()
            pref_filter.CopyFrom(text_filter)
            del pref_filter.memory_types[:]
            pref_filter.memory_types.append(memory_pb2.MEMORY_TYPE_PREFERENCE)
            jobs.append(self._search_cubes(cube_ids, req.query, pref_top_k, pref_filter, fanout_timeout))
        results = await asyncio.gather(*jobs)
        text_buckets = results[0]
        pref_buckets = results[1] if req.include_preference else []
        ranked = sorted((m for b in text_buckets for m in b.memories), key=lambda m: (-m.score, m.item.id))[:top_k]
        pref_string = ""
        if req.include_preference:
            prefs = [m.item.memory for b in pref_buckets for m in b.memories]
            if prefs:
                pref_string = "User preferences:\n" + "\n".join(as_list_item("- ", p) for p in prefs)
        return gateway_pb2.SearchMemoriesResponse(
            text_mem=text_buckets, pref_mem=pref_buckets, pref_string=pref_string, ranked=ranked
        )

    async def _search_cubes(
        self, cube_ids: list[str], query: str, top_k: int, flt: memory_pb2.MemoryFilter, timeout: float
    ) -> list[gateway_pb2.CubeMemories]:
        """One batch call for the cubes (all held by one textmem): textmem embeds the query once,
        makes one vector-store round trip, and answers each cube with its hits or its status;
        the gateway only turns a failure of the whole call into every cube's status."""
        try:
            resp = await self.textmem.call(
                self.textmem.memories.BatchSearchMemories,
                textmem_pb2.BatchSearchMemoriesRequest(cube_ids=cube_ids, query=query, top_k=top_k, filter=flt),
                timeout,
            )
        except MemosError as err:
            if err.code.name == "INVALID_ARGUMENT":
                raise  # the request is wrong for every cube alike
            log.warning("cube search failed", extra={"cubes": len(cube_ids), "reason": err.reason})
            status = to_status_proto(err)
            return [gateway_pb2.CubeMemories(cube_id=c, status=status) for c in cube_ids]
        return [
            gateway_pb2.CubeMemories(cube_id=r.cube_id, memories=r.memories, total=r.total, status=r.status)
            for r in resp.results
        ]

    # single-cube operations -------------------------------------------------------------------
    async def get(self, req: gateway_pb2.GetMemoryRequest, timeout: float | None) -> gateway_pb2.GetMemoryResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        check_memory_ids([req.memory_id], "memory_id")
        await self.authorize_read(req.user_id, [req.cube_id], timeout)
        resp = await self.textmem.call(
            self.textmem.memories.GetMemory,
            textmem_pb2.GetMemoryRequest(
                cube_id=req.cube_id, memory_id=req.memory_id, include_history=req.include_history
            ),
            timeout,
        )
        return gateway_pb2.GetMemoryResponse(memory=resp.memory, history=resp.history)

    async def list(
        self, req: gateway_pb2.ListMemoriesRequest, timeout: float | None
    ) -> gateway_pb2.ListMemoriesResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        await self.authorize_read(req.user_id, [req.cube_id], timeout)
        resp = await self.textmem.call(
            self.textmem.memories.ListMemories,
            textmem_pb2.ListMemoriesRequest(
                cube_id=req.cube_id, page_size=req.page_size, page_token=req.page_token, filter=req.filter
            ),
            timeout,
        )
        return gateway_pb2.ListMemoriesResponse(memories=resp.memories, next_page_token=resp.next_page_token)

    async def update(
        self, req: gateway_pb2.UpdateMemoryRequest, timeout: float | None
    ) -> gateway_pb2.UpdateMemoryResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        check_memory_ids([req.memory.id], "memory.id")
        await self._authorize_existing_write(req.user_id, req.cube_id, timeout)
        resp = await self.textmem.call(
            self.textmem.memories.UpdateMemory,
            textmem_pb2.UpdateMemoryRequest(
                request_id=req.request_id or uuid.uuid4().hex,
                cube_id=req.cube_id,
                memory=req.memory,
                update_mask=req.update_mask,
            ),
            timeout,
        )
        return gateway_pb2.UpdateMemoryResponse(memory=resp.memory)

    async def delete(
        self, req: gateway_pb2.DeleteMemoriesRequest, timeout: float | None
    ) -> gateway_pb2.DeleteMemoriesResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        check_memory_ids(req.memory_ids, "memory_ids")
        check_delete_selector(req)
        await self._authorize_existing_write(req.user_id, req.cube_id, timeout)
        resp = await self.textmem.call(
            self.textmem.memories.DeleteMemories,
            textmem_pb2.DeleteMemoriesRequest(
                request_id=req.request_id or uuid.uuid4().hex,
                cube_id=req.cube_id,
                memory_ids=req.memory_ids,
                all=req.all,
                filter=req.filter if req.HasField("filter") else None,
                dry_run=req.dry_run,
            ),
            timeout,
        )
        return gateway_pb2.DeleteMemoriesResponse(deleted_count=resp.deleted_count)

    async def _authorize_existing_write(self, user_id: str, cube_id: str, timeout: float | None) -> None:
        cube = await self._get_cube(cube_id, timeout)
        if cube is None:
            raise NotFound(f"cube {cube_id!r} does not exist", reason="CUBE_NOT_FOUND", metadata={"cube_id": cube_id})
        if role_of(cube, user_id) not in _WRITE_ROLES:
            raise PermissionDenied(
                f"user may not write cube {cube_id!r}", reason="CUBE_WRITE_DENIED", metadata={"cube_id": cube_id}
            )

    # cube management ----------------------------------------------------------------------------
    @staticmethod
    def cube_info(cube: textmem_pb2.Cube, user_id: str) -> gateway_pb2.CubeInfo:
        role = role_of(cube, user_id)
        my_role = {
            "owner": gateway_pb2.SHARE_ROLE_WRITER,
            "writer": gateway_pb2.SHARE_ROLE_WRITER,
            "reader": gateway_pb2.SHARE_ROLE_READER,
        }.get(role, gateway_pb2.SHARE_ROLE_NONE)
        return gateway_pb2.CubeInfo(
            cube_id=cube.cube_id, owner_id=cube.owner_id, name=cube.name, my_role=my_role, owned=role == "owner"
        )

    async def create_cube(
        self, req: gateway_pb2.CreateCubeRequest, timeout: float | None
    ) -> gateway_pb2.CreateCubeResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        resp = await self.textmem.call(
            self.textmem.cubes.CreateCube,
            textmem_pb2.CreateCubeRequest(
                request_id=req.request_id, cube_id=req.cube_id, owner_id=req.user_id, name=req.name
            ),
            timeout,
        )
        return gateway_pb2.CreateCubeResponse(cube=self.cube_info(resp.cube, req.user_id))

    async def list_cubes(
        self, req: gateway_pb2.ListCubesRequest, timeout: float | None
    ) -> gateway_pb2.ListCubesResponse:
        require_user(req.user_id)
        resp = await self.textmem.call(
            self.textmem.cubes.ListCubes, textmem_pb2.ListCubesRequest(user_id=req.user_id), timeout
        )
        return gateway_pb2.ListCubesResponse(cubes=[self.cube_info(c, req.user_id) for c in resp.cubes])

    async def share_cube(
        self, req: gateway_pb2.ShareCubeRequest, timeout: float | None
    ) -> gateway_pb2.ShareCubeResponse:
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        if not req.target_user_id:
            raise InvalidArgument("target_user_id is required", reason="MISSING_TARGET_USER_ID")
        if req.role not in _SHARE_TO_CUBE_ROLE:
            raise InvalidArgument(
                "role must be READER, WRITER or NONE", reason="UNKNOWN_ROLE", metadata={"field": "role"}
            )
        self._forget(req.cube_id)
        resp = await self.textmem.call(
            self.textmem.cubes.SetCubeAccess,
            textmem_pb2.SetCubeAccessRequest(
                request_id=req.request_id,
                cube_id=req.cube_id,
                owner_id=req.user_id,
                user_id=req.target_user_id,
                role=_SHARE_TO_CUBE_ROLE[req.role],
            ),
            timeout,
        )
        self._forget(req.cube_id)
        return gateway_pb2.ShareCubeResponse(cube=self.cube_info(resp.cube, req.user_id))

    async def delete_cube(
        self, req: gateway_pb2.DeleteCubeRequest, timeout: float | None
    ) -> gateway_pb2.DeleteCubeResponse:
        """Deletes the cube with its memories and, with a scheduler, every task queued for it (any
        user's): purged before the cube is deleted (a failure there leaves everything as it was:
        UNAVAILABLE, retry) and once more after it (tasks queued meanwhile)."""
        require_user(req.user_id)
        check_cube_ids([req.cube_id], "cube_id", 1)
        self._forget(req.cube_id)
        request_id = req.request_id or uuid.uuid4().hex
        if self.scheduler is not None or self.actmem is not None:
            # Only the owner may purge the cube's queue and caches: checked here first, as textmem will.
            cube = await self._get_cube(req.cube_id, timeout)
            self._forget(req.cube_id)
            if cube is None:
                raise NotFound(
                    f"cube {req.cube_id!r} does not exist", reason="CUBE_NOT_FOUND", metadata={"cube_id": req.cube_id}
                )
            if cube.owner_id != req.user_id:
                raise PermissionDenied("only the cube's owner can delete it", reason="NOT_CUBE_OWNER")
            await self._purge_tasks(request_id, timeout, cube_ids=[req.cube_id])
            await self._drop_caches(request_id, [req.cube_id], timeout)
        resp = await self.textmem.call(
            self.textmem.cubes.DeleteCube,
            textmem_pb2.DeleteCubeRequest(request_id=req.request_id, cube_id=req.cube_id, owner_id=req.user_id),
            timeout,
        )
        self._forget(req.cube_id)
        await self._purge_tasks(request_id, timeout, cube_ids=[req.cube_id], after=True)
        await self._drop_caches(request_id, [req.cube_id], timeout)
        return gateway_pb2.DeleteCubeResponse(deleted_memories=resp.deleted_memories)

    async def _drop_caches(self, request_id: str, cube_ids: Sequence[str], timeout: float | None) -> None:
        """Deletes every KV cache actmem holds for these cubes, when an actmem is configured. Run
        before the cube's memories go (a failure is UNAVAILABLE and leaves the memories: retry) and
        once more after (caches extracted meanwhile). A cache is derived from memories, so dropping
        it first loses nothing the memories cannot rebuild."""
        if self.actmem is None:
            return
        for cube_id in dict.fromkeys(cube_ids):
            await self.actmem.delete_all_caches(
                actmem_pb2.DeleteAllCachesRequest(request_id=f"{request_id}:{cube_id}", cube_id=cube_id), timeout
            )

    async def _drop_user_caches(self, request_id: str, user_id: str, timeout: float | None) -> None:
        """Deletes every KV cache actmem holds for the user (stored with their user id), in any cube:
        those in cubes of others too. Before and after the user's memories go, as :meth:`_drop_caches`."""
        if self.actmem is None:
            return
        await self.actmem.delete_all_caches(
            actmem_pb2.DeleteAllCachesRequest(request_id=f"{request_id}:user", user_id=user_id), timeout
        )

    async def _purge_tasks(
        self,
        request_id: str,
        timeout: float | None,
        *,
        user_id: str = "",
        cube_ids: Sequence[str] = (),
        after: bool = False,
    ) -> None:
        """Removes the scheduler's tasks of ``user_id`` (every cube) and of each of ``cube_ids`` (every
        user), when a scheduler is configured. A failure is UNAVAILABLE (retriable: a purge repeated
        removes what is left): a deletion never succeeds with the deleted data's work still queued.
        ``after``: the data is deleted already, this purge catches what was queued meanwhile."""
        if self.scheduler is None:
            return
        reqs = [scheduler_pb2.PurgeTasksRequest(request_id=request_id, user_id=user_id)] if user_id else []
        reqs += [scheduler_pb2.PurgeTasksRequest(request_id=request_id, cube_id=c) for c in dict.fromkeys(cube_ids)]
        if not reqs:
            return
        try:
            await asyncio.gather(*(self.scheduler.purge(r, timeout) for r in reqs))
        except MemosError as exc:
            log.error(
                "queued tasks not purged", extra={"request_id": request_id, "error": str(exc)[:200], "after": after}
            )
            what = "the data is deleted, but tasks queued for it meanwhile" if after else "nothing was deleted: tasks"
            raise Unavailable(
                f"{what} could not be removed from the scheduler; retry the request",
                reason="TASK_PURGE_FAILED",
                metadata={"scheduler_reason": exc.reason, "request_id": request_id},
                retriable=True,
            ) from None

    async def delete_user_data(
        self, req: gateway_pb2.DeleteUserDataRequest, timeout: float | None
    ) -> gateway_pb2.DeleteUserDataResponse:
        """Erasure of one user, asked by that user (or an admin key acting for them): textmem
        deletes what the user owns and wrote and the user's grants; the gateway then forgets every
        cube it touched, so its cache grants nothing that is gone."""
        require_user(req.user_id)
        request_id = req.request_id or uuid.uuid4().hex
        log.info("deleting a user's data", extra={"request_id": request_id})
        owned: list[str] = []
        if self.scheduler is not None or self.actmem is not None:
            # The user's tasks, every task queued for the cubes the user owns (they go too) and those
            # cubes' KV caches, before anything is deleted: a failure leaves all as it was
            # (UNAVAILABLE, retry).
            cubes = await self.textmem.call(
                self.textmem.cubes.ListCubes, textmem_pb2.ListCubesRequest(user_id=req.user_id), timeout
            )
            owned = [c.cube_id for c in cubes.cubes if c.owner_id == req.user_id]
            await self._purge_tasks(request_id, timeout, user_id=req.user_id, cube_ids=owned)
            await self._drop_caches(request_id, owned, timeout)
            await self._drop_user_caches(request_id, req.user_id, timeout)
        resp = await self.textmem.call(
            self.textmem.cubes.DeleteUserData,
            textmem_pb2.DeleteUserDataRequest(request_id=request_id, user_id=req.user_id),
            timeout,
        )
        for cube_id in (*resp.deleted_cube_ids, *resp.revoked_cube_ids):
            self._forget(cube_id)
        await self._purge_tasks(request_id, timeout, user_id=req.user_id, cube_ids=resp.deleted_cube_ids, after=True)
        await self._drop_caches(request_id, [*owned, *resp.deleted_cube_ids], timeout)
        await self._drop_user_caches(request_id, req.user_id, timeout)
        return gateway_pb2.DeleteUserDataResponse(
            deleted_memories=resp.deleted_memories,
            deleted_cube_ids=resp.deleted_cube_ids,
            cleaned_cube_ids=resp.cleaned_cube_ids,
            revoked_cube_ids=resp.revoked_cube_ids,
        )


__all__ = ["Gateway", "status_pb2"]
