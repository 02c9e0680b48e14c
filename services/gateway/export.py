"""ExportUserData: everything the suite holds about one user, as a stream of records.

The counterpart of DeleteUserData (services/gateway/core.py), reaching the same services: the
cubes and memories in textmem, the tasks in the scheduler, and (read only here) the KV caches'
descriptions in actmem. Each service is read a page at a time and each record sent as it comes,
so an export of any size holds one page in memory, never the whole.

What is exported is the data about the user: memories the user wrote (in any cube), not other
users' memories in the user's cubes (see the proto's ExportUserData for why).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from google.protobuf.message import Message

from memos.actmem.v1 import actmem_pb2
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2
from memos.scheduler.v1 import scheduler_pb2
from memos.textmem.v1 import textmem_pb2
from services.gateway.actmem_client import ActMemClient
from services.gateway.core import Gateway, require_user
from services.gateway.scheduler_client import SchedulerClient

log = logging.getLogger(__name__)

# Records read from a service per call: bounded pages keep each response small, however much the
# user has (textmem and the scheduler accept up to 1000).
PAGE_SIZE = 500
_MEMBER_ROLES = {
    textmem_pb2.CUBE_ROLE_READER: gateway_pb2.SHARE_ROLE_READER,
    textmem_pb2.CUBE_ROLE_WRITER: gateway_pb2.SHARE_ROLE_WRITER,
}
# Which record a memory becomes, by its type; every other type is a plain memory.
_MEMORY_KINDS = {
    memory_pb2.MEMORY_TYPE_PREFERENCE: "preference",
    memory_pb2.MEMORY_TYPE_WORKING: "working_memory",
}


@dataclass
class _Deadline:
    """What is left of the caller's deadline for each call to a service (None: no deadline, the
    channel's default per call)."""

    at: float | None

    def left(self) -> float | None:
        return None if self.at is None else max(self.at - time.monotonic(), 0.001)


@dataclass
class _Counts:
    by_kind: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, record: Message) -> gateway_pb2.ExportUserDataResponse:
        """``record`` as the response's field ``kind``, counted."""
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        return gateway_pb2.ExportUserDataResponse(**{kind: record})


class UserDataExport:
    def __init__(
        self, gateway: Gateway, scheduler: SchedulerClient | None = None, actmem: ActMemClient | None = None
    ) -> None:
        self._gw = gateway
        self._scheduler = scheduler
        self._actmem = actmem

    async def export(
        self, req: gateway_pb2.ExportUserDataRequest, timeout: float | None
    ) -> AsyncIterator[gateway_pb2.ExportUserDataResponse]:
        """The records in order: cubes, memories (of every kind, cube by cube), tasks, KV caches, and
        the summary. A failure before the first record ends the call with its status; one after it
        too, and the missing summary tells the caller the export is incomplete."""
        require_user(req.user_id)
        user_id = req.user_id
        deadline = _Deadline(None if timeout is None else time.monotonic() + timeout)
        textmem = self._gw.textmem
        counts = _Counts()
        skipped: list[str] = []
        log.info("exporting a user's data")

        cubes = await textmem.call(
            textmem.cubes.ListCubes, textmem_pb2.ListCubesRequest(user_id=user_id), deadline.left()
        )
        owned: list[str] = []
        for cube in cubes.cubes:
            is_owner = cube.owner_id == user_id
            if is_owner:
                owned.append(cube.cube_id)
            members = (
                [
                    gateway_pb2.ExportedCubeMember(user_id=m.user_id, role=_MEMBER_ROLES[m.role])
                    for m in cube.members
                    if m.user_id != user_id and m.role in _MEMBER_ROLES
                ]
                if is_owner
                else []
            )
            yield counts.record(
                "cube",
                gateway_pb2.ExportedCube(
                    cube=Gateway.cube_info(cube, user_id), members=members, created_at=cube.created_at
                ),
            )

        token = ""
        while True:
            page = await textmem.call(
                textmem.memories.ListUserMemories,
                textmem_pb2.ListUserMemoriesRequest(user_id=user_id, page_size=PAGE_SIZE, page_token=token),
                deadline.left(),
            )
            for m in page.memories:
                kind = _MEMORY_KINDS.get(m.memory.metadata.memory_type, "memory")
                yield counts.record(kind, gateway_pb2.ExportedMemory(memory=m.memory, history=m.history))
            token = page.next_page_token
            if not token:
                break

        if self._scheduler is None:
            skipped.append("scheduler")
        else:
            seen: set[str] = set()  # the Redis queue's listing may repeat a task across pages
            token = ""
            while True:
                tasks = await self._scheduler.list_user_tasks(
                    scheduler_pb2.ListUserTasksRequest(user_id=user_id, page_size=PAGE_SIZE, page_token=token),
                    deadline.left(),
                )
                for task in tasks.tasks:
                    if task.item_id not in seen:
                        seen.add(task.item_id)
                        yield counts.record("task", task)
                token = tasks.next_page_token
                if not token:
                    break

        if self._actmem is None:
            skipped.append("actmem")
        else:
            # The caches of the cubes she owns, then those stored for her in other cubes.
            seen: set[tuple[str, str]] = set()
            selectors = [{"cube_id": cube_id} for cube_id in owned] + [{"user_id": user_id}]
            for selector in selectors:
                token = ""
                while True:
                    caches = await self._actmem.list_caches(
                        actmem_pb2.ListCachesRequest(**selector, page_size=PAGE_SIZE, page_token=token),
                        deadline.left(),
                    )
                    for info in caches.caches:
                        if (info.cube_id, info.cache_id) not in seen:
                            seen.add((info.cube_id, info.cache_id))
                            yield counts.record("kv_cache", info)
                    token = caches.next_page_token
                    if not token:
                        break

        n = counts.by_kind
        log.info("user data exported", extra={"records": sum(n.values()), "skipped": ",".join(skipped)})
        yield gateway_pb2.ExportUserDataResponse(
            summary=gateway_pb2.ExportSummary(
                cube_count=n.get("cube", 0),
                memory_count=n.get("memory", 0),
                preference_count=n.get("preference", 0),
                working_memory_count=n.get("working_memory", 0),
                task_count=n.get("task", 0),
                kv_cache_count=n.get("kv_cache", 0),
                skipped_services=skipped,
            )
        )
