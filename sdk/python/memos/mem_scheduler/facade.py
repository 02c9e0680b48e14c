"""MemOS's ``mem_scheduler`` object, backed by the scheduler service.

Handlers registered here run in this process as a worker of the scheduler's
Subscribe stream (see :class:`memos.client.scheduler.SchedulerClient`); they get
MemOS's ``list[ScheduleMessageItem]`` (one message per call) and may submit more
messages. A label registered here takes that label over from the scheduler's
built-in handler.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memos.client import MemosClient
from memos.client.scheduler import ScheduledMessage, SchedulerClient
from memos.mem_scheduler.schemas.message_schemas import ScheduleMessageItem
from memos.memories.textual.item import TextualMemoryItem
from shared.errors import InvalidArgument

MAX_TOP_K = 100
_REMEMBERED_DELIVERIES = 10_000


@dataclass(frozen=True)
class RemoteMemCube:
    """The cube of the message being handled (MemOS hands a whole cube object; ours lives in textmem)."""

    cube_id: str
    user_id: str


class Retriever:
    """``mem_scheduler.retriever``: searches a cube through the gateway (with its access checks)."""

    def __init__(self, client: Callable[[], MemosClient]) -> None:
        self._client = client

    def search(
        self,
        query: str,
        user_id: str,
        mem_cube_id: str,
        mem_cube: Any = None,
        top_k: int = 10,
        method: str = "fast",
        search_args: Mapping[str, Any] | None = None,
    ) -> list[TextualMemoryItem]:
        """The ``top_k`` memories of the cube most relevant to ``query``, best first."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}", reason="TOP_K_OUT_OF_RANGE")
        args = dict(search_args or {})
        resp = self._client().search_memories(
            user_id,
            [mem_cube_id],
            query,
            top_k=top_k,
            filter=args.get("filter"),
            include_preference=False,
        )
        return [TextualMemoryItem.from_proto(m.item, m.score) for m in resp.ranked]


class MemScheduler:
    """The scheduler as MemOS's examples use it: register handlers, submit messages, search, stop."""

    search_method = "fast"

    def __init__(self, scheduler_address: Callable[[], str], client: Callable[[], MemosClient]) -> None:
        self._address = scheduler_address
        self._client: SchedulerClient | None = None
        self._lock = threading.Lock()
        # Ids of messages handed to handlers here. MemOS handlers re-submit a delivered message
        # with model_copy(update={"label": ...}), which keeps its item_id; the scheduler stores
        # a repeated item_id once (idempotent submits), so such a copy gets a fresh id.
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self.retriever = Retriever(client)
        self.current_mem_cube: RemoteMemCube | None = None

    def _scheduler(self) -> SchedulerClient:
        with self._lock:
            if self._client is None:
                self._client = SchedulerClient(self._address())
            return self._client

    def _wrap(self, fn: Callable[[list[ScheduleMessageItem]], Any]) -> Callable[[ScheduledMessage], Any]:
        def handle(message: ScheduledMessage) -> Any:
            with self._lock:
                self._delivered[message.item_id] = None
                while len(self._delivered) > _REMEMBERED_DELIVERIES:
                    self._delivered.popitem(last=False)
            self.current_mem_cube = RemoteMemCube(message.cube_id, message.user_id)
            return fn([ScheduleMessageItem.from_scheduled(message)])

        return handle

    def register_handlers(self, handlers: Mapping[str, Callable[[list[ScheduleMessageItem]], Any]]) -> None:
        """Runs ``handlers`` (label -> fn(list[ScheduleMessageItem])) in a worker thread of this process."""
        self._scheduler().register_handlers({label: self._wrap(fn) for label, fn in handlers.items()})

    def submit_messages(self, messages: ScheduleMessageItem | Sequence[ScheduleMessageItem | Mapping]) -> list[str]:
        """Queues messages; returns their item ids."""
        if isinstance(messages, ScheduleMessageItem):
            messages = [messages]
        items = [m if isinstance(m, ScheduleMessageItem) else ScheduleMessageItem(**dict(m)) for m in messages]
        out = []
        for item in items:
            scheduled = item.to_scheduled()
            with self._lock:
                if scheduled.item_id in self._delivered:
                    scheduled.info = {**scheduled.info, "derived_from": scheduled.item_id}
                    scheduled.item_id = uuid.uuid4().hex
            out.append(scheduled)
        return self._scheduler().submit_messages(out)

    def wait_for_tasks(self, user_id: str, mem_cube_id: str = "", timeout_s: float = 30.0) -> bool:
        """Blocks until the user's (cube's) queued work is finished; False if the timeout passed first."""
        return self._scheduler().wait_for_tasks(user_id, mem_cube_id, timeout_s)

    def stop(self) -> None:
        """Stops this process's handler workers (queued messages stay queued in the service)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
