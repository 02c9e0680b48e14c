"""gRPC servicer of the scheduler: submits, worker streams, task status, dead letters.

Queue calls block (SQLite, Redis), so they run in threads, except the hot path's two (a submit,
a worker stream's exchange), which the queue runs on the event loop where it can
(:meth:`TaskQueue.submit_async`, :meth:`TaskQueue.answer_and_receive_async`). A subscription stream
keeps up to ``max_in_flight`` deliveries out at once (the worker's credit: a delivery
takes one, a verdict gives it back); it is woken by every submit, verdict and replay
of this replica and polls every ``poll_interval_s`` for the rest. Each turn of a
stream is one queue call (:meth:`TaskQueue.answer_and_receive`: the verdicts that
arrived meanwhile, then as many deliveries as the credit allows), so its cost is per
batch, not per message; a worker in batch mode (``Subscription.max_batch``) gets the
deliveries in as few responses as that allows and may answer many in one request.
When a worker's stream ends, whatever it still held is handed back at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator

from google.protobuf import json_format, timestamp_pb2

from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.scheduler.queue import Delivery, Message, Task, TaskQueue, Verdict
from services.scheduler.queue.base import check_label_name, in_executor
from shared.errors import InvalidArgument, MemosError

log = logging.getLogger(__name__)

MAX_WAIT_S = 3600.0
# WaitForTasks answers a tenth of the call's remaining time before its deadline (at least
# 50 ms, at most 1 s), so the answer arrives in time even on a busy machine.
DEADLINE_MARGIN_S = 0.05
DEADLINE_MARGIN_SHARE = 0.1
DEADLINE_MARGIN_MAX_S = 1.0
# WaitForTasks looks again when woken, but no more often than this.
WAIT_RECHECK_S = 0.01
# A worker stream held this long in sending a response applies the verdicts that arrive apart.
STALLED_S = 0.05
# Lookahead: how often (at most) a worker stream looks for messages it leased ahead that waited
# too long behind their heads (more often with a visibility timeout under 4 s: a quarter of it).
HELD_CHECK_S = 1.0
# Batch mode: a response's deliveries stop growing past this size (one message may be up to
# max_content_bytes on its own); a worker's default receive limit is 4 MiB.
MAX_BATCH_BYTES = 1024 * 1024
# At most what a delivery adds to a response besides its body and id: four tags (the entry's,
# its id's, message's and attempt's), three lengths of up to five bytes, the attempt (a varint).
_DELIVERY_OVERHEAD = 4 + 3 * 5 + 10


_VARINT1 = [bytes([i]) for i in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _VARINT1[n]
    if n < 0:  # an int32 below 0 is sent as its 64-bit two's complement
        n += 1 << 64
    out = bytearray()
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _deliveries_wire(deliveries: list[Delivery]) -> bytes:
    """The encoding of a ``SubscribeResponse`` holding ``deliveries``: each a ``Delivery`` (field 4),
    its ``delivery_id`` (1), ``message`` (2, the stored body as it is) and ``attempt`` (3)."""
    parts = []
    small = _VARINT1
    for d in deliveries:
        i, body, attempt = d.delivery_id.encode(), d.body, d.attempt
        n_i, n_body = len(i), len(body)
        inner = b"".join(
            (
                b"\n",
                small[n_i] if n_i < 128 else _varint(n_i),
                i,
                b"\x12",
                small[n_body] if n_body < 128 else _varint(n_body),
                body,
                b"\x18",
                small[attempt] if 0 <= attempt < 128 else _varint(attempt),
            )
        )
        n = len(inner)
        parts += (b"\x22", small[n] if n < 128 else _varint(n), inner)
    return b"".join(parts)


def messages_from_request(
    protos: Iterable[scheduler_pb2.ScheduleMessage], now: float
) -> tuple[list[Message], list[bytes]]:
    """A submit's messages, and each one's stored form (:mod:`services.scheduler.queue.codec`): the
    request's own ``ScheduleMessage``, with what the queue would fill in set in place first (an item
    id, the timestamp ``now``, the present and empty ``info``), serialized as it is, instead of being
    read into a :class:`Message` and encoded again field by field (most of a submit's own cost)."""
    messages, bodies = [], []
    for p in protos:
        item_id = p.item_id
        if not item_id:
            p.item_id = item_id = uuid.uuid4().hex
        ts = p.timestamp
        seconds, nanos = ts.seconds, ts.nanos
        if seconds or nanos:
            timestamp = (seconds * 1_000_000 + nanos // 1000) / 1e6
        else:  # none (or the epoch itself): now, as the queue would set it
            micros = int(now * 1e6)
            ts.seconds, ts.nanos = micros // 1_000_000, micros % 1_000_000 * 1000
            timestamp = micros / 1e6  # as stored
        struct = p.info
        struct.SetInParent()  # present, empty if none was given, as always
        # MessageToDict costs more than the rest of the message: skipped for an empty Struct.
        info = json_format.MessageToDict(struct) if struct.fields else {}
        m = object.__new__(Message)  # as Message.from_json, without its check of the keys
        m.__dict__.update(
            user_id=p.user_id,
            cube_id=p.cube_id,
            label=p.label,
            content=p.content,
            item_id=item_id,
            session_id=p.session_id,
            timestamp=timestamp,
            trace_id=p.trace_id,
            info=info,
            priority=p.priority,
        )
        messages.append(m)
        bodies.append(p.SerializeToString())
    return messages, bodies


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(int(seconds * 1e6))
    return ts


def message_to_proto(m: Message) -> scheduler_pb2.ScheduleMessage:
    return fill_message(scheduler_pb2.ScheduleMessage(), m)


def fill_message(p: scheduler_pb2.ScheduleMessage, m: Message) -> scheduler_pb2.ScheduleMessage:
    """Sets ``m`` into the empty ``p`` in place (one per delivery: no Struct, Timestamp or
    message built apart and copied in)."""
    p.item_id, p.user_id, p.cube_id, p.session_id = m.item_id, m.user_id, m.cube_id, m.session_id
    p.label, p.content, p.trace_id, p.priority = m.label, m.content, m.trace_id, m.priority
    micros = int(m.timestamp * 1e6)
    p.timestamp.seconds, p.timestamp.nanos = micros // 1_000_000, micros % 1_000_000 * 1000
    if m.info:
        p.info.update(m.info)
    else:
        p.info.SetInParent()  # present and empty, as always
    return p


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
    """Wakes every waiter (of this replica) at once: WaitForTasks calls wait on :meth:`current`;
    a subscription that can take work puts its own event in :attr:`hungry`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.hungry: set[asyncio.Event] = set()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()
        for kick in self.hungry:
            kick.set()


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        queue: TaskQueue,
        *,
        poll_interval_s: float = 0.2,
        max_in_flight: int = 256,
        visibility_timeout_s: float,
        max_wait_s: float = MAX_WAIT_S,
        lookahead: bool = True,
    ) -> None:
        self._q = queue
        self._lookahead = lookahead and queue.supports_lookahead
        self._max_wait = max_wait_s
        self._poll = poll_interval_s
        self._max_in_flight = max_in_flight
        self._vt = visibility_timeout_s
        self._wake = _Wakeup()
        # Ordinary (non-fallback) subscriptions per label on this replica: while a label has
        # one, fallback workers (the built-in handlers) leave its messages alone.
        self._ordinary: Counter[str] = Counter()

    async def SubmitMessages(self, request, context):  # type: ignore[no-untyped-def]
        messages, bodies = messages_from_request(request.messages, time.time())
        ids = await self._q.submit_async(messages, bodies)
        self._wake.notify()
        return scheduler_pb2.SubmitMessagesResponse(item_ids=ids)

    async def GetTask(self, request, context):  # type: ignore[no-untyped-def]
        if not request.item_id:
            raise InvalidArgument("item_id is required", reason="MISSING_ITEM_ID", metadata={"field": "item_id"})
        task = await in_executor(self._q.get_task, request.item_id)
        return scheduler_pb2.GetTaskResponse(task=task_to_proto(task))

    async def WaitForTasks(self, request, context):  # type: ignore[no-untyped-def]
        if not request.user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        timeout = request.timeout_seconds
        if timeout < 0 or timeout != timeout:
            raise InvalidArgument(
                "timeout_seconds must be >= 0", reason="BAD_TIMEOUT", metadata={"field": "timeout_seconds"}
            )
        # 0 (unset) or +inf: until the call's deadline. Whatever ends first of the timeout, the
        # deadline and the cap ends the wait; capped says when the cap did (so the caller knows a
        # second call would wait on).
        remaining = context.time_remaining()
        wanted = math.inf if timeout == 0 else timeout
        if remaining is not None:
            margin = min(max(DEADLINE_MARGIN_S, remaining * DEADLINE_MARGIN_SHARE), DEADLINE_MARGIN_MAX_S)
            wanted = min(wanted, max(remaining - margin, 0.0))
        capped = wanted > self._max_wait
        timeout = min(wanted, self._max_wait)
        deadline = time.monotonic() + timeout
        while True:
            event = self._wake.current()
            checked = time.monotonic()
            # Woken by every submit and verdict; the count is one read of the user's counters (on
            # Redis from the event loop itself: no thread hand-off every few milliseconds).
            pending = await self._q.unfinished_count_async(request.user_id, request.cube_id)
            left = deadline - time.monotonic()
            if pending == 0 or left <= 0:
                return scheduler_pb2.WaitForTasksResponse(
                    all_done=pending == 0, pending_count=pending, capped=capped and pending > 0
                )
            try:
                async with asyncio.timeout(min(self._poll, left)):
                    await event.wait()
            except TimeoutError:
                continue
            # Under load the wakeups come every few milliseconds (each worker's batch of
            # verdicts): look again at most every WAIT_RECHECK_S, not once per wakeup.
            await asyncio.sleep(min(WAIT_RECHECK_S - (time.monotonic() - checked), deadline - time.monotonic()))

    async def ListDeadLetters(self, request, context):  # type: ignore[no-untyped-def]
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", reason="BAD_PAGE_SIZE", metadata={"field": "page_size"})
        tasks, token = await in_executor(
            self._q.list_dead_letters, request.label, request.page_size, request.page_token
        )
        return scheduler_pb2.ListDeadLettersResponse(tasks=[task_to_proto(t) for t in tasks], next_page_token=token)

    async def ReplayDeadLetters(self, request, context):  # type: ignore[no-untyped-def]
        if not request.item_ids:
            raise InvalidArgument("item_ids is required", reason="MISSING_ITEM_IDS", metadata={"field": "item_ids"})
        n = await in_executor(self._q.replay_dead_letters, list(request.item_ids))
        self._wake.notify()
        return scheduler_pb2.ReplayDeadLettersResponse(replayed_count=n)

    async def PurgeTasks(self, request, context):  # type: ignore[no-untyped-def]
        if not request.user_id and not request.cube_id:
            raise InvalidArgument(
                "user_id or cube_id is required", reason="MISSING_SELECTOR", metadata={"field": "user_id"}
            )
        counts = await in_executor(self._q.purge_tasks, request.user_id, request.cube_id)
        self._wake.notify()  # WaitForTasks of the user may be done now; their groups' next messages are free
        log.info(
            "tasks purged",
            extra={
                "request_id": request.request_id,
                "pending": counts.pending,
                "running": counts.running,
                "dead_lettered": counts.dead_lettered,
                "finished": counts.finished,
            },
        )
        return scheduler_pb2.PurgeTasksResponse(
            pending_count=counts.pending,
            running_count=counts.running,
            dead_lettered_count=counts.dead_lettered,
            finished_count=counts.finished,
        )

    async def ListUserTasks(self, request, context):  # type: ignore[no-untyped-def]
        if not request.user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", reason="BAD_PAGE_SIZE", metadata={"field": "page_size"})
        tasks, token = await in_executor(
            self._q.list_user_tasks, request.user_id, request.page_size, request.page_token
        )
        return scheduler_pb2.ListUserTasksResponse(tasks=[task_to_proto(t) for t in tasks], next_page_token=token)

    async def _rejection_reasons(self, failed: list[str]) -> dict[str, str]:
        """Why verdicts this stream held were not applied: PURGED when their task is gone, else
        LEASE_LOST (their lease ran out). Asked only when some failed."""
        try:
            gone = await in_executor(self._q.missing, list({d.rpartition("/")[0] for d in failed}))
        except MemosError:
            gone = set()
        return {d: "PURGED" if d.rpartition("/")[0] in gone else "LEASE_LOST" for d in failed}

    # -- the worker stream ----------------------------------------------------
    def _exchange_job(
        self, verdicts: list[Verdict], labels: list[str], count: int, unlease: list[str] | None = None
    ) -> asyncio.Future:
        """The queue call that applies verdicts and leases work, under way once this returns;
        with lookahead (``unlease`` not None) it also leases groups' next messages ahead. Its
        result is (failed, deliveries), or (failed, deliveries, held) with lookahead."""
        if unlease is None:
            return self._q.answer_and_receive_async(verdicts, labels, count, self._vt)
        return self._q.answer_and_receive_ahead_async(verdicts, labels, count, self._vt, unlease=unlease)

    async def _exchange(self, job: asyncio.Future) -> tuple[list[str], list, list]:
        """The outcome of an _exchange_job; if the stream is cancelled meanwhile, the verdicts
        still count and what it leased goes back."""
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(self._release_all)
            raise
        return result if len(result) == 3 else (*result, [])

    def _release_all(self, job: asyncio.Future) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        result = job.result()
        held = result[2] if len(result) == 3 else ()
        self._unlease([d.delivery_id for d in (*result[1], *(h.delivery for h in held))])
        self._wake.notify()

    def _unlease(self, delivery_ids: list[str]) -> None:
        """Gives back leased messages that never reached the worker, their attempt uncounted
        (blocking calls)."""
        for delivery_id in delivery_ids:
            try:
                self._q.release(delivery_id, delivered=False)
            except MemosError:
                pass

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
            await in_executor(self._q.register_label, label)
        max_in_flight = min(sub.max_in_flight or 1, self._max_in_flight)
        batch_mode = sub.max_batch > 1
        max_batch = min(sub.max_batch, max_in_flight) if batch_mode else 1
        worker = sub.worker_id or uuid.uuid4().hex[:12]
        # Delivered to this stream and not answered (the credit taken): whether it was handed to
        # the stream yet.
        in_flight: dict[str, bool] = {}
        # Lookahead (batch mode, on a queue that leases ahead): each group's next message, leased
        # behind the head this stream holds, and sent the moment the worker acks that head (the
        # exchange that applies the ack runs meanwhile). held: head's delivery id -> (the message
        # behind it, when leased); leased: when each delivery in flight was leased. Only leases
        # younger than half the visibility timeout are acted on: an older head may have run out
        # and gone to another worker, and a message sent behind it would overtake its redelivery.
        lookahead = batch_mode and self._lookahead
        held: dict[str, tuple[Delivery, float]] = {}
        leased: dict[str, float] = {}
        fresh_for = self._vt / 2
        check_held_every = min(HELD_CHECK_S, self._vt / 4)
        verdicts: list[Verdict] = []  # received, not yet applied to the queue
        rejected: list[scheduler_pb2.RejectedAck] = []  # batch mode: to tell the worker
        kick = asyncio.Event()  # a verdict arrived, or the worker's side ended
        ended = asyncio.Event()
        loop = asyncio.get_running_loop()
        held_checked = loop.time()
        # While the loop below is held in a yield (a worker that reads slowly: HTTP/2 flow
        # control holds the write), verdicts that wait longer than STALLED_S are applied apart.
        sending_since: float | None = None
        applier: asyncio.Task | None = None

        async def apply_apart() -> None:
            while verdicts and sending_since is not None:
                batch = verdicts[:]
                del verdicts[:]
                try:
                    failed = await in_executor(self._q.answer_many, batch)
                except MemosError as exc:  # the queue is down: the leases run out, redelivered
                    log.warning("verdicts not applied: %s", exc, extra={"worker": worker})
                    return
                # What was leased behind them goes back unsent (the loop is held in a yield).
                for v in batch:
                    leased.pop(v.delivery_id, None)
                behind = [held.pop(v.delivery_id)[0].delivery_id for v in batch if v.delivery_id in held]
                if behind:
                    await in_executor(self._unlease, behind)
                self._wake.notify()
                if failed and batch_mode:
                    for delivery_id, reason in (await self._rejection_reasons(failed)).items():
                        reject(delivery_id, reason)

        def stalled() -> None:
            nonlocal applier
            if verdicts and sending_since is not None and (applier is None or applier.done()):
                applier = asyncio.create_task(apply_apart())

        def reject(delivery_id: str, reason: str) -> None:
            if batch_mode:
                rejected.append(scheduler_pb2.RejectedAck(delivery_id=delivery_id, reason=reason))

        def take(ack: scheduler_pb2.Acknowledgement) -> None:
            delivery_id = ack.delivery_id
            if in_flight.pop(delivery_id, None) is None:
                log.warning("ack for a delivery this stream does not hold", extra={"worker": worker})
                reject(delivery_id, "NOT_IN_FLIGHT")
            elif ack.success:
                verdicts.append(Verdict(delivery_id))
            else:
                verdicts.append(Verdict(delivery_id, False, ack.error, not ack.give_up))

        pop, add = in_flight.pop, verdicts.append

        async def read_verdicts() -> None:
            try:
                async for req in request_iterator:
                    action = req.WhichOneof("action")
                    if action == "ack":
                        take(req.ack)
                    elif action == "acks":
                        for ack in req.acks.acks:
                            # take(), inlined for the common case: an ack of a delivery held here.
                            if ack.success and pop(delivery_id := ack.delivery_id, None) is not None:
                                add(Verdict(delivery_id))
                            else:
                                take(ack)
                    else:
                        continue  # a repeated subscription is ignored
                    kick.set()
                    if sending_since is not None and loop.time() - sending_since >= STALLED_S:
                        stalled()
            finally:
                ended.set()
                kick.set()

        def responses(deliveries: list) -> Iterator[scheduler_pb2.SubscribeResponse]:
            if not batch_mode:
                for d in deliveries:
                    in_flight[d.delivery_id] = True
                    resp = scheduler_pb2.SubscribeResponse(delivery_id=d.delivery_id, attempt=d.attempt)
                    resp.message.MergeFromString(d.body)  # stored as the wire format: copied as it is
                    yield resp
                return
            wire = _deliveries_wire(deliveries) if len(deliveries) <= max_batch else b""
            if wire and (len(wire) <= MAX_BATCH_BYTES or len(deliveries) == 1) or not deliveries:
                # The common case, all in one response: its encoding written out and parsed in one
                # call (building it item by item costs three times as much).
                resp = scheduler_pb2.SubscribeResponse.FromString(wire)
                for d in deliveries:
                    in_flight[d.delivery_id] = True
                if rejected:
                    resp.rejected_acks.extend(rejected)
                    del rejected[:]
                if deliveries or resp.rejected_acks:
                    yield resp
                return
            resp = scheduler_pb2.SubscribeResponse(rejected_acks=rejected)
            del rejected[:]
            size = 0
            for d in deliveries:
                # Built in place in the response; moved to the next one if this one is full. The
                # body is stored as the wire format: copied as it is.
                item = resp.deliveries.add(delivery_id=d.delivery_id, attempt=d.attempt)
                item.message.MergeFromString(d.body)
                # At least the item's encoded size (a character of the id is at most 4 UTF-8
                # bytes), without encoding it again.
                n = len(d.body) + 4 * len(d.delivery_id) + _DELIVERY_OVERHEAD
                # A response stays within a worker's default receive limit (4 MiB) unless one
                # message alone is larger.
                if len(resp.deliveries) > 1 and (len(resp.deliveries) > max_batch or size + n > MAX_BATCH_BYTES):
                    nxt = scheduler_pb2.SubscribeResponse()
                    nxt.deliveries.add().CopyFrom(item)
                    del resp.deliveries[-1]
                    yield resp
                    resp, size = nxt, 0
                in_flight[d.delivery_id] = True
                size += n
            if resp.deliveries or resp.rejected_acks:
                yield resp

        def send(deliveries: list) -> Iterator[scheduler_pb2.SubscribeResponse]:
            nonlocal sending_since
            if not (deliveries or rejected):
                return
            sending_since = loop.time()
            timer = loop.call_later(STALLED_S, stalled)
            try:
                yield from responses(deliveries)
            finally:
                sending_since = None
                timer.cancel()

        closed = False

        def close_stream() -> None:
            """This stream's end: what it received is applied, what it leased goes back. From the
            generator's finally, and from the call's done callback: gRPC may tear a call down while
            the generator sits in a yield, and close the generator only when it is garbage collected
            (its leases would wait for the visibility timeout meanwhile). Safe to run twice: the
            second run gives back what came in since (an exchange that finished in between)."""
            nonlocal closed
            if not closed:
                closed = True
                self._wake.hungry.discard(kick)
                if not fallback:
                    self._ordinary.subtract(labels)
                    self._wake.notify()  # fallback workers may take these labels again
                if reader is not None:
                    reader.cancel()
                if applier is not None:
                    applier.cancel()  # what it took is applied by its thread all the same
            answered, leased_ahead, holding = (
                verdicts[:],
                [d.delivery_id for d, _ in held.values()],
                list(in_flight.items()),
            )
            del verdicts[:]
            held.clear()
            in_flight.clear()
            if answered:  # received but not yet applied: apply them, or they would be redelivered
                try:
                    self._q.answer_many(answered)
                except MemosError as exc:
                    log.warning("verdicts not applied: %s", exc, extra={"worker": worker})
            if leased_ahead:  # never sent
                self._unlease(leased_ahead)
            # The worker went away: what it held goes back to the queue at once.
            for delivery_id, sent in holding:
                try:
                    self._q.release(delivery_id, delivered=sent)
                except MemosError:
                    pass
                except Exception:  # noqa: BLE001 - never mask the stream's own outcome
                    log.exception("could not release a delivery")
            if holding or answered:
                self._wake.notify()

        fallback = sub.fallback
        if not fallback:
            self._ordinary.update(labels)
        reader: asyncio.Task | None = None
        # Refill once half the credit is back: one receive of many rather than one per verdict.
        refill_at = max(1, max_in_flight // 2)
        try:
            context.add_done_callback(lambda _: close_stream())
            # Subscribed: the labels are registered.
            yield scheduler_pb2.SubscribeResponse(visibility_timeout_seconds=self._vt)
            reader = asyncio.create_task(read_verdicts())
            while not ended.is_set():
                kick.clear()
                answering = verdicts[:]
                del verdicts[:]
                ahead_now: list[Delivery] = []  # sent now, on their heads' acks
                unlease: list[str] = []  # leased ahead, going back unsent
                if lookahead and (answering or held):
                    now = loop.time()
                    young = now - fresh_for
                    for v in answering:
                        since = leased.pop(v.delivery_id, 0.0)
                        behind = held.pop(v.delivery_id, None)
                        if behind is not None:
                            if v.success and since > young:
                                ahead_now.append(behind[0])
                                leased[behind[0].delivery_id] = behind[1]
                            else:
                                unlease.append(behind[0].delivery_id)
                    if held and now - held_checked >= check_held_every:
                        held_checked = now  # heads out for long (slow handlers): give back what waits behind
                        for head, (d, since) in list(held.items()):
                            if since <= young:
                                del held[head]
                                unlease.append(d.delivery_id)
                    for d in ahead_now:
                        in_flight[d.delivery_id] = False
                free = max_in_flight - len(in_flight)
                serving = [label for label in labels if not self._ordinary[label]] if fallback else labels
                has_credit = free > 0 and (not in_flight or free >= refill_at)
                want = free if has_credit and serving else 0
                # With credit to spare, new work (a submit, a replay, a verdict elsewhere, an
                # ordinary worker leaving a fallback's label) kicks this stream too, from now on:
                # what happens during the exchange below is not missed.
                if has_credit:
                    self._wake.hungry.add(kick)
                else:
                    self._wake.hungry.discard(kick)
                deliveries: list = []
                if answering or want or unlease:
                    started = loop.time()
                    job = self._exchange_job(answering, serving if want else [], want, unlease if lookahead else None)
                    # The worker works on these while the exchange applies their heads' acks.
                    for resp in send(ahead_now):
                        yield resp
                    failed, deliveries, new_held = await self._exchange(job)
                    if answering:
                        self._wake.notify()  # WaitForTasks, and fallback streams blocked by an order group
                    if failed:  # e.g. their lease ran out and they went to another worker
                        log.warning("verdicts not applied", extra={"worker": worker, "count": len(failed)})
                        if batch_mode:
                            for delivery_id, reason in (await self._rejection_reasons(failed)).items():
                                reject(delivery_id, reason)
                    for d in deliveries:
                        in_flight[d.delivery_id] = False
                    if lookahead:
                        for d in deliveries:
                            leased[d.delivery_id] = started
                        for h in new_held:
                            held[h.behind] = (h.delivery, started)
                for resp in send(deliveries):
                    yield resp
                if deliveries or verdicts or ended.is_set():
                    continue  # more credit may be back already
                # Wait for a kick: a verdict (credit back), the end, or (with credit to spare) new
                # work or the next poll; while messages wait leased ahead, their next check too.
                if has_credit:
                    poll = loop.call_later(min(self._poll, check_held_every) if held else self._poll, kick.set)
                else:
                    poll = loop.call_later(check_held_every, kick.set) if held else None
                try:
                    await kick.wait()
                finally:
                    if poll is not None:
                        poll.cancel()
        finally:
            close_stream()
