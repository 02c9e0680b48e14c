"""A worker stream whose call gRPC tears down while the servicer's generator sits in a yield: gRPC
may then close the generator only when it is garbage collected, so the stream's end (its leases
given back) hangs on the call's done callback instead. Driven by hand here, on both backends, with a
context that only records that callback: found as a one-in-twenty failure of
test_subscribe_lookahead.py (the next worker waited out the visibility timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from memos.scheduler.v1 import scheduler_pb2 as pb
from services.scheduler.queue import Message, QueueLimits, TaskState
from services.scheduler.servicer import SchedulerServicer


class RecordingContext:
    def __init__(self) -> None:
        self.done_callbacks: list[Callable[[object], None]] = []

    def add_done_callback(self, callback: Callable[[object], None]) -> None:
        self.done_callbacks.append(callback)


def test_a_call_torn_down_mid_yield_gives_its_leases_back(open_queue) -> None:
    q = open_queue(QueueLimits(visibility_timeout_s=60.0))
    x = q.submit([Message(user_id="u", cube_id="c", label="add", content=f"x{i}") for i in range(3)])
    servicer = SchedulerServicer(q, visibility_timeout_s=60.0, poll_interval_s=10.0)
    ctx = RecordingContext()

    async def requests() -> AsyncIterator[pb.SubscribeRequest]:
        sub = pb.Subscription(worker_id="w", labels=["add"], max_in_flight=4, max_batch=4)
        yield pb.SubscribeRequest(subscription=sub)
        await asyncio.Event().wait()  # the worker says nothing more

    async def scenario() -> None:
        stream = servicer.Subscribe(requests(), ctx)
        assert not (await anext(stream)).deliveries  # subscribed
        [d] = (await anext(stream)).deliveries  # the generator now sits in that yield
        assert d.message.item_id == x[0]
        assert q.get_task(x[0]).state == TaskState.RUNNING
        # gRPC tears the call down; the generator is left as it is.
        for callback in ctx.done_callbacks:
            callback(ctx)
        assert q.get_task(x[0]).state == TaskState.PENDING  # back at once, not after 60 s
        t1 = q.get_task(x[1])
        assert (t1.state, t1.attempts) == (TaskState.PENDING, 0)  # leased ahead (Redis): given back
        [again] = q.receive(["add"], 10)
        assert (again.message.item_id, again.attempt) == (x[0], 2)
        # The generator closed later (garbage collected) gives back nothing twice.
        await stream.aclose()
        assert q.get_task(x[0]).state == TaskState.RUNNING
        await q.aclose()

    asyncio.run(scenario())
