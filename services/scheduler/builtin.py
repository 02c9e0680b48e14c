"""The scheduler's built-in handlers, run as a fallback worker of the scheduler itself.

They subscribe over the same Subscribe stream as any remote worker, marked
``fallback``: a label's messages go to them only while no other worker subscribes
to that label, so ``register_handlers({"query": ...})`` in the SDK takes over a label
the way MemOS's ``register_handlers`` replaces a handler.

- ``query`` (raised by the gateway's Chat): queues a ``mem_update`` for the same
  user, cube and text.
- ``mem_read`` (raised by an async add): runs fine extraction (ingest, with its LLM) on
  the add's messages, stores the refined memories, then deletes the fast ones the add
  stored, so the content is findable at every moment. Without an LLM (ingest falls
  back to fast) or when extraction finds nothing, the fast memories stay.
- ``mem_update``: searches the cube's memories for the text and makes the best of
  them, followed by the previous working memory (the earlier queries' picks), the
  cube's WorkingMemory through textmem's ReplaceWorkingMemory.

Handlers are idempotent (derived item ids and request ids), as at-least-once
delivery requires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import json_format, struct_pb2

from memos.common.v1 import memory_pb2, message_pb2
from memos.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from shared.channels import open_channel, raw_channel
from shared.grpc_errors import from_rpc_error
from shared.interceptors import SERVICE_TOKEN_HEADER
from shared.settings import ClientSettings

log = logging.getLogger(__name__)

WORKING_COPY_OF = "working_memory_of"  # textmem's info key naming a working copy's original
# What mem_update searches: everything durable, neither preferences nor working copies.
_SEARCHED_TYPES = [
    memory_pb2.MEMORY_TYPE_LONG_TERM,
    memory_pb2.MEMORY_TYPE_USER,
    memory_pb2.MEMORY_TYPE_OUTER,
    memory_pb2.MEMORY_TYPE_TOOL_SCHEMA,
    memory_pb2.MEMORY_TYPE_TOOL_TRAJECTORY,
    memory_pb2.MEMORY_TYPE_RAW_FILE,
]


class BuiltinHandlers:
    """A fallback worker for ``query``, ``mem_update`` and ``mem_read`` inside the scheduler process."""

    def __init__(
        self,
        textmem_addr: str,
        settings: ClientSettings,
        *,
        ingest_addr: str = "",
        top_k: int,
        capacity: int,
        concurrency: int = 8,
    ) -> None:
        self._concurrency = concurrency
        self._textmem_addr = textmem_addr
        self._ingest_addr = ingest_addr
        self.labels = ["mem_update", "query", *(["mem_read"] if ingest_addr else [])]
        self._settings = settings
        self._top_k = top_k
        self._capacity = capacity
        self._task: asyncio.Task | None = None
        self._channels: list[grpc.aio.Channel] = []
        self.handled = 0

    async def start(self, scheduler_addr: str) -> None:
        # A bare channel (with the release's TLS, when configured): the shared one sets a default
        # deadline, and this stream is long-lived.
        sched_channel = raw_channel(scheduler_addr, self._settings)
        self._own_md = ((SERVICE_TOKEN_HEADER, self._settings.service_token),) if self._settings.service_token else ()
        tm_channel = open_channel(self._textmem_addr, settings=self._settings)
        self._channels = [sched_channel, tm_channel]
        self._scheduler = scheduler_pb2_grpc.SchedulerServiceStub(sched_channel)
        self._memories = textmem_pb2_grpc.TextMemServiceStub(tm_channel)
        if self._ingest_addr:
            ingest_channel = open_channel(self._ingest_addr, settings=self._settings)
            self._channels.append(ingest_channel)
            self._ingest = ingest_pb2_grpc.IngestServiceStub(ingest_channel)
        self._task = asyncio.create_task(self._run(), name="memos-scheduler-builtin")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
            self._task = None
        for channel in self._channels:
            await channel.close()
        self._channels = []

    async def _run(self) -> None:
        """Keeps one subscription open, reconnecting while the scheduler runs."""
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the stream broke: open a new one
                log.warning("built-in handlers' stream broke, reconnecting: %s", exc)
            await asyncio.sleep(0.5)

    async def _serve(self) -> None:
        acks: asyncio.Queue[scheduler_pb2.Acknowledgement | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[scheduler_pb2.SubscribeRequest]:
            # Batch mode (this scheduler is the one it talks to): deliveries come several to a
            # response, and the verdicts that are ready go together in one request.
            yield scheduler_pb2.SubscribeRequest(
                subscription=scheduler_pb2.Subscription(
                    worker_id="builtin",
                    labels=self.labels,
                    max_in_flight=self._concurrency,
                    fallback=True,
                    max_batch=self._concurrency,
                )
            )
            done = False
            while not done and (ack := await acks.get()) is not None:
                batch = [ack]
                while not acks.empty():
                    more = acks.get_nowait()
                    if more is None:
                        done = True
                        break
                    batch.append(more)
                yield scheduler_pb2.SubscribeRequest(acks=scheduler_pb2.Acknowledgements(acks=batch))

        call = self._scheduler.Subscribe(requests(), metadata=self._own_md)
        running: set[asyncio.Task] = set()

        async def handle(resp: scheduler_pb2.Delivery) -> None:
            ack = scheduler_pb2.Acknowledgement(delivery_id=resp.delivery_id, success=True)
            try:
                await self._handlers()[resp.message.label](resp.message)
                self.handled += 1
            except grpc.aio.AioRpcError as exc:
                ack.success, ack.error = False, f"{exc.code().name}: {exc.details()}"
                # A missing cube, a bad message or a full cube (a quota, not a rate limit: the error
                # says it is not retriable) will not get better by retrying.
                ack.give_up = exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT) or (
                    exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not from_rpc_error(exc).retriable
                )
            except Exception:  # noqa: BLE001 - reported as the task's error, redelivered
                ack.success, ack.error = False, traceback.format_exc()[-8000:]
            await acks.put(ack)

        try:
            async for resp in call:
                # Concurrently, up to the subscription's max_in_flight (the scheduler sends no more).
                # A response without deliveries is the subscription's confirmation.
                for d in resp.deliveries:
                    task = asyncio.create_task(handle(d))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in list(running):
                task.cancel()  # unacked: the scheduler hands them out again when this stream ends
            await acks.put(None)
            call.cancel()

    def _handlers(self) -> dict[str, Callable[[scheduler_pb2.ScheduleMessage], Awaitable[None]]]:
        return {"query": self._on_query, "mem_update": self._on_mem_update, "mem_read": self._on_mem_read}

    async def _on_mem_read(self, m: scheduler_pb2.ScheduleMessage) -> None:
        info = json_format.MessageToDict(m.info)
        fast_ids = [str(i) for i in info.get("memory_ids", [])]
        messages = [json_format.ParseDict(d, message_pb2.ChatMessage()) for d in json.loads(m.content or "[]")]
        if not messages or not fast_ids:
            return
        extra = struct_pb2.Struct()
        extra.update(info.get("info") or {})
        parsed = await self._ingest.ParseMessages(
            ingest_pb2.ParseMessagesRequest(
                user_id=m.user_id,
                cube_id=m.cube_id,
                session_id=m.session_id,
                messages=messages,
                mode=ingest_pb2.EXTRACTION_MODE_FINE,
                custom_tags=[str(t) for t in info.get("custom_tags", [])],
                info=extra,
            ),
            timeout=600,
        )
        if parsed.effective_mode != ingest_pb2.EXTRACTION_MODE_FINE or not parsed.candidates:
            log.info("mem_read: nothing refined; the fast memories stay", extra={"notices": list(parsed.notices)})
            return
        # Refined memories first, then the fast ones go: the content is never unfindable.
        # Derived request ids make a redelivered task write and delete once.
        await self._memories.WriteMemories(
            textmem_pb2.WriteMemoriesRequest(
                request_id=f"refine:{m.item_id}",
                cube_id=m.cube_id,
                user_id=m.user_id,
                session_id=m.session_id,
                candidates=[
                    textmem_pb2.MemoryCandidate(memory=c.memory, metadata=c.metadata) for c in parsed.candidates
                ],
            ),
            timeout=120,
        )
        await self._memories.DeleteMemories(
            textmem_pb2.DeleteMemoriesRequest(
                request_id=f"refine-delete:{m.item_id}", cube_id=m.cube_id, memory_ids=fast_ids
            ),
            timeout=60,
        )

    async def _on_query(self, m: scheduler_pb2.ScheduleMessage) -> None:
        update = scheduler_pb2.ScheduleMessage()
        update.CopyFrom(m)
        update.label = "mem_update"
        update.item_id = f"{m.item_id}:mem_update"  # a redelivered query queues it once
        await self._scheduler.SubmitMessages(
            scheduler_pb2.SubmitMessagesRequest(request_id=update.item_id, messages=[update]),
            timeout=10,
            metadata=self._own_md,
        )

    async def _on_mem_update(self, m: scheduler_pb2.ScheduleMessage) -> None:
        if not m.content.strip():
            return
        found = await self._memories.SearchMemories(
            textmem_pb2.SearchMemoriesRequest(
                cube_id=m.cube_id,
                query=m.content,
                top_k=self._top_k,
                filter=memory_pb2.MemoryFilter(memory_types=_SEARCHED_TYPES),
            ),
            timeout=30,
        )
        ids = [s.item.id for s in found.memories]
        current = await self._memories.ListMemories(
            textmem_pb2.ListMemoriesRequest(
                cube_id=m.cube_id,
                filter=memory_pb2.MemoryFilter(memory_types=[memory_pb2.MEMORY_TYPE_WORKING]),
                page_size=self._capacity,
            ),
            timeout=30,
        )
        for item in current.memories:
            origin = item.metadata.info.fields.get(WORKING_COPY_OF)
            if origin is not None and origin.string_value not in ids:
                ids.append(origin.string_value)
        await self._memories.ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(
                request_id=f"wm:{m.item_id}", cube_id=m.cube_id, user_id=m.user_id, memory_ids=ids[: self._capacity]
            ),
            timeout=30,
        )
