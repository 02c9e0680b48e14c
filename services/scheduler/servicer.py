"""gRPC servicer of the scheduler: submits, worker streams, task status, dead letters.

Queue calls block (SQLite, Redis), so they run in threads. A subscription stream
keeps up to ``max_in_flight`` deliveries out at once; it is woken by every submit,
ack and replay of this replica and polls every ``poll_interval_s`` for the rest.
When a worker's stream ends, whatever it still held is handed back at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.scheduler.queue import Message, Task, TaskQueue
from services.scheduler.queue.base import check_label_name
from shared.errors import InvalidArgument, MemosError

log = logging.getLogger(__name__)

MAX_WAIT_S = 3600.0


def message_from_proto(m: scheduler_pb2.ScheduleMessage) -> Message:
    return Message(
        user_id=m.user_id,
        cube_id=m.cube_id,
        label=m.label,
        content=m.content,
        item_id=m.item_id,
        session_id=m.session_id,
        timestamp=m.timestamp.ToMicroseconds() / 1e6 if m.HasField("timestamp") else 0.0,
        trace_id=m.trace_id,
        info=json_format.MessageToDict(m.info) if m.HasField("info") else {},
        priority=m.priority,
    )


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(int(seconds * 1e6))
    return ts


def message_to_proto(m: Message) -> scheduler_pb2.ScheduleMessage:
    info = struct_pb2.Struct()
    info.update(m.info)
    return scheduler_pb2.ScheduleMessage(
        item_id=m.item_id,
        user_id=m.user_id,
        cube_id=m.cube_id,
        session_id=m.session_id,
        label=m.label,
        content=m.content,
        timestamp=_ts(m.timestamp),
        trace_id=m.trace_id,
        info=info,
        priority=m.priority,
    )


def task_to_proto(t: Task) -> scheduler_pb2.Task:
    return scheduler_pb2.Task(
        item_id=t.item_id,
        message=message_to_proto(t.message),
        state=int(t.state),
        attempts=t.attempts,
        last_error=t.last_error,
        updated_at=_ts(t.updated_at),
    )


class _Wakeup:
    """Wakes every waiting subscription (of this replica) at once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(
        self, queue: TaskQueue, *, poll_interval_s: float = 0.2, max_in_flight: int = 256, visibility_timeout_s: float
    ) -> None:
        self._q = queue
        self._poll = poll_interval_s
        self._max_in_flight = max_in_flight
        self._vt = visibility_timeout_s
        self._wake = _Wakeup()
        # Ordinary (non-fallback) subscriptions per label on this replica: while a label has
        # one, fallback workers (the built-in handlers) leave its messages alone.
        self._ordinary: Counter[str] = Counter()

    async def SubmitMessages(self, request, context):  # type: ignore[no-untyped-def]
        messages = [message_from_proto(m) for m in request.messages]
        ids = await asyncio.to_thread(self._q.submit, messages)
        self._wake.notify()
        return scheduler_pb2.SubmitMessagesResponse(item_ids=ids)

    async def GetTask(self, request, context):  # type: ignore[no-untyped-def]
        if not request.item_id:
            raise InvalidArgument("item_id is required", reason="MISSING_ITEM_ID", metadata={"field": "item_id"})
        task = await asyncio.to_thread(self._q.get_task, request.item_id)
        return scheduler_pb2.GetTaskResponse(task=task_to_proto(task))

    async def WaitForTasks(self, request, context):  # type: ignore[no-untyped-def]
        if not request.user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        timeout = request.timeout_seconds
        if timeout < 0 or timeout != timeout:
            raise InvalidArgument(
                "timeout_seconds must be >= 0", reason="BAD_TIMEOUT", metadata={"field": "timeout_seconds"}
            )
        timeout = min(timeout or MAX_WAIT_S, MAX_WAIT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining - 0.05, 0.0))
        deadline = time.monotonic() + timeout
        while True:
            event = self._wake.current()
            pending = await asyncio.to_thread(self._q.unfinished_count, request.user_id, request.cube_id)
            left = deadline - time.monotonic()
            if pending == 0 or left <= 0:
                return scheduler_pb2.WaitForTasksResponse(all_done=pending == 0, pending_count=pending)
            try:
                await asyncio.wait_for(event.wait(), timeout=min(self._poll, left))
            except TimeoutError:
                pass

    async def ListDeadLetters(self, request, context):  # type: ignore[no-untyped-def]
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", reason="BAD_PAGE_SIZE", metadata={"field": "page_size"})
        tasks, token = await asyncio.to_thread(
            self._q.list_dead_letters, request.label, request.page_size, request.page_token
        )
        return scheduler_pb2.ListDeadLettersResponse(tasks=[task_to_proto(t) for t in tasks], next_page_token=token)

    async def ReplayDeadLetters(self, request, context):  # type: ignore[no-untyped-def]
        if not request.item_ids:
            raise InvalidArgument("item_ids is required", reason="MISSING_ITEM_IDS", metadata={"field": "item_ids"})
        n = await asyncio.to_thread(self._q.replay_dead_letters, list(request.item_ids))
        self._wake.notify()
        return scheduler_pb2.ReplayDeadLettersResponse(replayed_count=n)

    # -- the worker stream ----------------------------------------------------
    async def _apply_acks(self, batch: list[str], worker: str) -> None:
        try:
            failed = await asyncio.to_thread(self._q.ack_many, batch)
        except MemosError as exc:  # the queue is down: the leases run out and are redelivered
            log.warning("acks not applied: %s", exc, extra={"worker": worker, "count": len(batch)})
            return
        if failed:  # e.g. their lease ran out and they went to another worker
            log.warning("acks not applied", extra={"worker": worker, "count": len(failed)})
        self._wake.notify()

    async def _receive(self, labels: list[str], count: int) -> list:
        """Leases work; if the stream is cancelled meanwhile, what the lease got goes back."""
        job = asyncio.ensure_future(asyncio.to_thread(self._q.receive, labels, count, self._vt))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(self._release_all)
            raise

    def _release_all(self, job: asyncio.Future) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        for d in job.result():
            try:
                self._q.release(d.delivery_id, delivered=False)
            except MemosError:
                pass
        self._wake.notify()

    async def Subscribe(self, request_iterator, context) -> AsyncIterator[scheduler_pb2.SubscribeResponse]:  # type: ignore[no-untyped-def,override]
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("action") != "subscription":
            raise InvalidArgument(
                "the first message of Subscribe must be a subscription", reason="MISSING_SUBSCRIPTION"
            )
        sub = first.subscription
        labels = list(dict.fromkeys(sub.labels))
        if not labels:
            raise InvalidArgument(
                "subscribe to at least one label", reason="MISSING_LABELS", metadata={"field": "labels"}
            )
        for label in labels:
            check_label_name(label)
        for label in labels:
            await asyncio.to_thread(self._q.register_label, label)
        max_in_flight = min(sub.max_in_flight or 1, self._max_in_flight)
        worker = sub.worker_id or uuid.uuid4().hex[:12]
        in_flight: set[str] = set()
        sent: set[str] = set()  # in_flight that were handed to the stream
        room = asyncio.Event()
        room.set()
        ended = asyncio.Event()

        async def read_acks() -> None:
            try:
                async for req in request_iterator:
                    if req.WhichOneof("action") != "ack":
                        continue  # a repeated subscription is ignored
                    ack = req.ack
                    if ack.delivery_id not in in_flight:
                        log.warning("ack for a delivery this stream does not hold", extra={"worker": worker})
                        continue
                    in_flight.discard(ack.delivery_id)
                    sent.discard(ack.delivery_id)
                    if ack.success:
                        acked.append(ack.delivery_id)
                        acks_waiting.set()
                    else:
                        try:
                            await asyncio.to_thread(self._q.nack, ack.delivery_id, ack.error, not ack.give_up)
                        except MemosError as exc:  # e.g. its lease ran out and it went to another worker
                            log.warning("nack not applied: %s", exc, extra={"worker": worker})
                        self._wake.notify()
                    room.set()
            finally:
                ended.set()
                room.set()

        acked: list[str] = []  # successful acks received and not yet applied to the queue
        acks_waiting = asyncio.Event()

        async def apply_acks() -> None:
            # One queue transaction (or Redis round trip) for all the acks that arrived while
            # the previous batch was applied, instead of a thread hop per ack.
            while True:
                await acks_waiting.wait()
                acks_waiting.clear()
                batch = acked[:]
                del acked[:]
                if batch:
                    await self._apply_acks(batch, worker)

        fallback = sub.fallback
        if not fallback:
            self._ordinary.update(labels)
        reader: asyncio.Task | None = None
        applier: asyncio.Task | None = None
        # Refill once half the slots are free: one receive of many rather than one per ack.
        refill_at = max(1, max_in_flight // 2)
        try:
            yield scheduler_pb2.SubscribeResponse()  # subscribed: the labels are registered
            reader = asyncio.create_task(read_acks())
            applier = asyncio.create_task(apply_acks())
            while not ended.is_set():
                free = max_in_flight - len(in_flight)
                if free <= 0 or (in_flight and free < refill_at):
                    room.clear()
                    await room.wait()
                    continue
                event = self._wake.current()
                serving = [label for label in labels if not self._ordinary[label]] if fallback else labels
                deliveries = await self._receive(serving, free) if serving else []
                for d in deliveries:
                    in_flight.add(d.delivery_id)
                for d in deliveries:
                    sent.add(d.delivery_id)
                    yield scheduler_pb2.SubscribeResponse(
                        delivery_id=d.delivery_id, message=message_to_proto(d.message), attempt=d.attempt
                    )
                if not deliveries:
                    waiter = asyncio.ensure_future(event.wait())
                    ender = asyncio.ensure_future(ended.wait())
                    try:
                        await asyncio.wait({waiter, ender}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        ender.cancel()
        finally:
            if not fallback:
                self._ordinary.subtract(labels)
                self._wake.notify()  # fallback workers may take these labels again
            if reader is not None:
                reader.cancel()
            if applier is not None:
                applier.cancel()
            if acked:  # received but not yet applied: apply them, or they would be redelivered
                try:
                    self._q.ack_many(acked)
                except MemosError as exc:
                    log.warning("acks not applied: %s", exc, extra={"worker": worker})
            # The worker went away: what it held goes back to the queue at once.
            for delivery_id in list(in_flight):
                try:
                    self._q.release(delivery_id, delivered=delivery_id in sent)
                except MemosError:
                    pass
                except Exception:  # noqa: BLE001 - never mask the stream's own outcome
                    log.exception("could not release a delivery")
            if in_flight:
                self._wake.notify()
