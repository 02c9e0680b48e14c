"""gRPC servicers of textmem: convert, call the domain in a worker thread, convert back.

Domain calls block (embedding, SQLite, Milvus), so they run in threads and the
event loop stays free to accept calls and health checks.
"""

from __future__ import annotations

import asyncio
import logging

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem import convert
from services.textmem.memory import TextMemory
from services.textmem.user_export import list_user_memories
from shared.errors import DeadlineExceeded, Internal, InvalidArgument, MemosError
from shared.grpc_errors import ok_status_proto, to_status_proto
from shared.offload import Offloader

log = logging.getLogger(__name__)


MAX_BATCH_CUBES = 1024
# A batch search answers with what is done this long before the call's deadline: a tenth of the
# time it has (at least 50 ms, at most 0.5 s), so that the answer still reaches the caller in time
# on a busy machine. A fixed 10 ms was missed whenever one cube ran to the deadline.
BATCH_RESERVE_S = 0.05
BATCH_RESERVE_SHARE = 0.1
BATCH_RESERVE_MAX_S = 0.5


def _cube_result(
    cube_id: str, job: asyncio.Future, hits_to_proto: convert.SearchHitProtos
) -> textmem_pb2.CubeSearchResult:
    if not job.done():
        job.cancel()  # the worker thread finishes on its own; its result is dropped
        err: MemosError = DeadlineExceeded(
            "this cube did not answer before the deadline", reason="CUBE_TIMEOUT", metadata={"cube_id": cube_id}
        )
        return textmem_pb2.CubeSearchResult(cube_id=cube_id, status=to_status_proto(err))
    exc = job.exception()
    if exc is not None:
        if not isinstance(exc, MemosError):
            log.error("cube search failed", exc_info=exc, extra={"cube_id": cube_id})
            exc = Internal("this cube's search failed", reason="INTERNAL", metadata={"cube_id": cube_id})
        return textmem_pb2.CubeSearchResult(cube_id=cube_id, status=to_status_proto(exc))
    hits, total = job.result()
    return textmem_pb2.CubeSearchResult(
        cube_id=cube_id,
        memories=[hits_to_proto.scored(m, s) for m, s in hits],
        total=total,
        status=ok_status_proto(),
    )


def _batch_timeout(context) -> float | None:  # type: ignore[no-untyped-def]
    """How long a batch search waits for its cubes: answer with what is done shortly before the
    deadline rather than not at all."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    reserve = min(max(BATCH_RESERVE_S, remaining * BATCH_RESERVE_SHARE), BATCH_RESERVE_MAX_S)
    return max(remaining - reserve, 0.0)


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required", reason=f"MISSING_{field.upper()}", metadata={"field": field})


class TextMemServicer(textmem_pb2_grpc.TextMemServiceServicer):
    def __init__(self, memory: TextMemory, offload: Offloader) -> None:
        self._mem = memory
        self._offload = offload
        self._hits = convert.SearchHitProtos()

    async def AddMemories(self, request, context):  # type: ignore[no-untyped-def]
        messages = convert.messages_from_proto(request.messages)
        window_overlap = request.window.overlap if request.window.HasField("overlap") else None
        result = await self._offload.run(
            self._mem.add_messages,
            request.cube_id,
            request.user_id,
            request.session_id,
            messages,
            tags=list(request.custom_tags),
            info=convert.json_format.MessageToDict(request.info),
            request_id=request.request_id,
            window_size=request.window.size,
            window_overlap=window_overlap,
        )
        return textmem_pb2.AddMemoriesResponse(
            memories=[convert.memory_to_proto(m) for m in result.memories],
            replayed=result.replayed,
            merged_ids=result.merged_ids,
            archived_ids=result.archived_ids,
            notices=result.notices,
        )

    async def WriteMemories(self, request, context):  # type: ignore[no-untyped-def]
        candidates = [convert.memory_from_proto(c) for c in request.candidates]
        result = await self._offload.run(
            self._mem.write_memories,
            request.cube_id,
            request.user_id,
            request.session_id,
            candidates,
            request.request_id,
        )
        return textmem_pb2.WriteMemoriesResponse(
            memories=[convert.memory_to_proto(m) for m in result.memories],
            replayed=result.replayed,
            merged_ids=result.merged_ids,
            archived_ids=result.archived_ids,
            notices=result.notices,
        )

    async def SearchMemories(self, request, context):  # type: ignore[no-untyped-def]
        flt = convert.filter_from_proto(request.filter)
        hits, total = await self._offload.run(self._mem.search, request.cube_id, request.query, request.top_k, flt)
        return textmem_pb2.SearchMemoriesResponse(
            memories=[self._hits.scored(m, s) for m, s in hits],
            total=total,
        )

    async def BatchSearchMemories(self, request, context):  # type: ignore[no-untyped-def]
        cube_ids = list(dict.fromkeys(request.cube_ids))
        if not cube_ids or len(cube_ids) > MAX_BATCH_CUBES:
            raise InvalidArgument(
                f"cube_ids must name 1 to {MAX_BATCH_CUBES} cubes",
                reason="BAD_CUBE_COUNT",
                metadata={"field": "cube_ids"},
            )
        for cube_id in cube_ids:
            self._mem.check_cube_id(cube_id)
        flt = convert.filter_from_proto(request.filter)
        top_k = self._mem.check_search(request.query, request.top_k, flt)
        if len(cube_ids) == 1:
            # One cube (most searches): the single-cube search, one thread hop instead of three.
            [only] = cube_ids
            job = asyncio.ensure_future(self._offload.run(self._mem.search, only, request.query, top_k, flt))
            await asyncio.wait([job], timeout=_batch_timeout(context))
            return textmem_pb2.BatchSearchMemoriesResponse(results=[_cube_result(only, job, self._hits)])
        # One embedding and one grouped vector search, the cubes' full-text candidates read
        # meanwhile; each cube then ranked on its own, with its own outcome.
        answers = await self._offload.run(self._mem.search_cubes, cube_ids, request.query, top_k, flt)
        jobs = {c: asyncio.wrap_future(f) for c, f in answers.items()}
        await asyncio.wait(jobs.values(), timeout=_batch_timeout(context))
        results = []
        for cube_id, job in jobs.items():
            results.append(_cube_result(cube_id, job, self._hits))
        return textmem_pb2.BatchSearchMemoriesResponse(results=results)

    async def GetMemory(self, request, context):  # type: ignore[no-untyped-def]
        _require(request.memory_id, "memory_id")
        if not request.include_history:
            m = await self._offload.run(self._mem.get, request.cube_id, request.memory_id)
            return textmem_pb2.GetMemoryResponse(memory=convert.memory_to_proto(m))
        m, history = await self._offload.run(self._mem.get_with_history, request.cube_id, request.memory_id)
        return textmem_pb2.GetMemoryResponse(
            memory=convert.memory_to_proto(m), history=[convert.memory_to_proto(v) for v in history]
        )

    async def ListMemories(self, request, context):  # type: ignore[no-untyped-def]
        after = convert.decode_page_token(request.page_token)
        flt = convert.filter_from_proto(request.filter)
        items, cursor = await self._offload.run(self._mem.list, request.cube_id, flt, request.page_size, after)
        return textmem_pb2.ListMemoriesResponse(
            memories=[convert.memory_to_proto(m) for m in items], next_page_token=convert.encode_page_token(cursor)
        )

    async def UpdateMemory(self, request, context):  # type: ignore[no-untyped-def]
        _require(request.memory.id, "memory.id")
        changes = convert.memory_from_proto(request.memory)
        if request.memory.metadata.status:
            changes.status = convert.status_name(request.memory.metadata.status)
        m = await self._offload.run(
            self._mem.update_memory, request.cube_id, request.memory.id, changes, list(request.update_mask.paths)
        )
        return textmem_pb2.UpdateMemoryResponse(memory=convert.memory_to_proto(m))

    async def DeleteMemories(self, request, context):  # type: ignore[no-untyped-def]
        flt = convert.filter_from_proto(request.filter) if request.HasField("filter") else None
        n = await self._offload.run(
            self._mem.delete_selected,
            request.cube_id,
            ids=list(request.memory_ids),
            whole_cube=request.all,
            flt=flt,
            dry_run=request.dry_run,
            rolled_back_request_id=request.rolled_back_request_id,
        )
        return textmem_pb2.DeleteMemoriesResponse(deleted_count=n)

    async def ReplaceWorkingMemory(self, request, context):  # type: ignore[no-untyped-def]
        memories, removed = await self._offload.run(
            self._mem.replace_working_memory,
            request.cube_id,
            request.user_id,
            list(request.memory_ids),
            request.request_id,
        )
        return textmem_pb2.ReplaceWorkingMemoryResponse(
            memories=[convert.memory_to_proto(m) for m in memories], removed_count=removed
        )

    async def ListUserMemories(self, request, context):  # type: ignore[no-untyped-def]
        items, token = await self._offload.run(
            list_user_memories, self._mem.graph, request.user_id, request.page_size, request.page_token
        )
        return textmem_pb2.ListUserMemoriesResponse(
            memories=[
                textmem_pb2.UserMemory(
                    memory=convert.memory_to_proto(u.memory), history=[convert.memory_to_proto(v) for v in u.history]
                )
                for u in items
            ],
            next_page_token=token,
        )


class CubeServicer(textmem_pb2_grpc.CubeServiceServicer):
    def __init__(self, memory: TextMemory, offload: Offloader) -> None:
        self._mem = memory
        self._offload = offload

    async def CreateCube(self, request, context):  # type: ignore[no-untyped-def]
        cube = await self._offload.run(self._mem.create_cube, request.cube_id, request.owner_id, request.name)
        return textmem_pb2.CreateCubeResponse(cube=convert.cube_to_proto(cube))

    async def GetCube(self, request, context):  # type: ignore[no-untyped-def]
        cube = await self._offload.run(self._mem.get_cube, request.cube_id)
        return textmem_pb2.GetCubeResponse(cube=convert.cube_to_proto(cube))

    async def EnsureCube(self, request, context):  # type: ignore[no-untyped-def]
        cube, created = await self._offload.run(self._mem.ensure_cube, request.cube_id, request.user_id)
        return textmem_pb2.EnsureCubeResponse(cube=convert.cube_to_proto(cube), created=created)

    async def ListCubes(self, request, context):  # type: ignore[no-untyped-def]
        _require(request.user_id, "user_id")
        cubes = await self._offload.run(self._mem.graph.list_cubes, request.user_id)
        return textmem_pb2.ListCubesResponse(cubes=[convert.cube_to_proto(c) for c in cubes])

    async def SetCubeAccess(self, request, context):  # type: ignore[no-untyped-def]
        if request.role == textmem_pb2.CUBE_ROLE_OWNER:
            raise InvalidArgument("ownership cannot be granted", reason="UNKNOWN_ROLE")
        role = convert.CUBE_ROLE_TO_NAME.get(request.role, "")
        if request.role not in (0, *convert.CUBE_ROLE_TO_NAME):
            raise InvalidArgument(f"unknown role {request.role}", reason="UNKNOWN_ROLE")
        cube = await self._offload.run(self._mem.set_access, request.cube_id, request.owner_id, request.user_id, role)
        return textmem_pb2.SetCubeAccessResponse(cube=convert.cube_to_proto(cube))

    async def DeleteCube(self, request, context):  # type: ignore[no-untyped-def]
        n = await self._offload.run(self._mem.delete_cube, request.cube_id, request.owner_id)
        return textmem_pb2.DeleteCubeResponse(deleted_memories=n)

    async def DeleteUserData(self, request, context):  # type: ignore[no-untyped-def]
        done = await self._offload.run(self._mem.delete_user_data, request.user_id)
        return textmem_pb2.DeleteUserDataResponse(
            deleted_memories=done.deleted_memories,
            deleted_cube_ids=done.deleted_cube_ids,
            cleaned_cube_ids=done.cleaned_cube_ids,
            revoked_cube_ids=done.revoked_cube_ids,
        )
