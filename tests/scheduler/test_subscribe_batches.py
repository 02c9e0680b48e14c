"""Batch mode of the worker stream, through the real service on both backends: deliveries several
to a response (as many as the worker's credit allows, never more), verdicts several to a request
(each applied or reported on its own), and the order per (user, cube, label) kept throughout.
Workers that speak one delivery and one ack at a time are covered by test_service.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from memos.scheduler.v1 import scheduler_pb2 as pb
from memos.scheduler.v1 import scheduler_pb2_grpc
from tests.scheduler.test_service import m, stub_for  # noqa: F401 - stub_for is a fixture

DONE, RUNNING, PENDING = pb.TASK_STATE_DONE, pb.TASK_STATE_RUNNING, pb.TASK_STATE_PENDING


class BatchWorker:
    """A batch-mode worker speaking the Subscribe stream by hand."""

    def __init__(
        self,
        stub: scheduler_pb2_grpc.SchedulerServiceStub,
        labels: list[str],
        max_in_flight: int,
        max_batch: int | None = None,
    ) -> None:
        self._requests: asyncio.Queue[pb.SubscribeRequest | None] = asyncio.Queue()
        sub = pb.Subscription(
            worker_id="batch",
            labels=labels,
            max_in_flight=max_in_flight,
            max_batch=max_in_flight if max_batch is None else max_batch,
        )
        self._requests.put_nowait(pb.SubscribeRequest(subscription=sub))
        self.call = stub.Subscribe(self._gen())
        # Read by a task of its own: a read that times out must not cancel the call.
        self._responses: asyncio.Queue[pb.SubscribeResponse] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _gen(self) -> AsyncIterator[pb.SubscribeRequest]:
        while (r := await self._requests.get()) is not None:
            yield r

    async def _read(self) -> None:
        async for resp in self.call:
            await self._responses.put(resp)

    async def subscribed(self) -> None:
        first = await asyncio.wait_for(self._responses.get(), 5)
        assert not first.delivery_id and not first.deliveries and not first.rejected_acks

    async def next(self, timeout: float = 5.0) -> pb.SubscribeResponse:
        resp = await asyncio.wait_for(self._responses.get(), timeout)
        assert not resp.delivery_id and not resp.HasField("message"), "batch mode uses deliveries"
        return resp

    async def deliveries(self, n: int, timeout: float = 5.0) -> list[pb.Delivery]:
        """The next ``n`` deliveries, over as many responses as they come in."""
        out: list[pb.Delivery] = []
        while len(out) < n:
            resp = await self.next(timeout)
            assert not resp.rejected_acks, resp.rejected_acks
            out += resp.deliveries
        assert len(out) == n, f"{len(out)} deliveries, expected {n}"
        return out

    async def answer(self, *acks: pb.Acknowledgement) -> None:
        await self._requests.put(pb.SubscribeRequest(acks=pb.Acknowledgements(acks=list(acks))))

    async def ack_one(self, delivery_id: str) -> None:
        """The pre-batching form: one verdict in a request of its own."""
        await self._requests.put(pb.SubscribeRequest(ack=pb.Acknowledgement(delivery_id=delivery_id, success=True)))

    async def close(self) -> None:
        await self._requests.put(None)
        self.call.cancel()
        self._reader.cancel()


def ok(d: pb.Delivery | str) -> pb.Acknowledgement:
    return pb.Acknowledgement(delivery_id=d if isinstance(d, str) else d.delivery_id, success=True)


async def state(stub, item_id: str) -> int:  # type: ignore[no-untyped-def]
    return (await stub.GetTask(pb.GetTaskRequest(item_id=item_id))).task.state


async def all_done(stub, user: str = "u") -> bool:  # type: ignore[no-untyped-def]
    return (await stub.WaitForTasks(pb.WaitForTasksRequest(user_id=user, timeout_seconds=10))).all_done


@pytest.mark.timeout(30)
async def test_the_credit_comes_in_one_response_and_no_more(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    ids = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}") for i in range(20)]))).item_ids
    w = BatchWorker(stub, ["add"], max_in_flight=8)
    await w.subscribed()
    first = await w.next()
    assert len(first.deliveries) == 8  # the whole credit, in one response
    assert [d.message.item_id for d in first.deliveries] == list(ids[:8])  # in submission order
    assert all(d.attempt == 1 and d.delivery_id.startswith(d.message.item_id + "/") for d in first.deliveries)
    # The credit is spent: nothing more comes until verdicts give some back.
    with pytest.raises(TimeoutError):
        await w.next(timeout=0.5)
    assert await state(stub, ids[8]) == PENDING
    # Half the credit back (the refill point) in one request: that many come, again in one response.
    await w.answer(*(ok(d) for d in first.deliveries[:4]))
    second = await w.next()
    assert [d.message.item_id for d in second.deliveries] == list(ids[8:12])
    assert all([await state(stub, i) == DONE for i in ids[:4]])
    await w.answer(*(ok(d) for d in [*first.deliveries[4:], *second.deliveries]))
    rest = await w.deliveries(8)
    assert [d.message.item_id for d in rest] == list(ids[12:])
    await w.answer(*(ok(d) for d in rest))
    assert await all_done(stub)
    await w.close()


@pytest.mark.timeout(30)
async def test_max_batch_caps_a_response(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}") for i in range(7)]))
    w = BatchWorker(stub, ["add"], max_in_flight=7, max_batch=3)
    await w.subscribed()
    sizes = []
    while sum(sizes) < 7:
        sizes.append(len((await w.next()).deliveries))
    assert sizes == [3, 3, 1]
    await w.close()


@pytest.mark.timeout(30)
async def test_a_response_stays_small_enough_for_a_default_client(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(max_content_bytes=2_000_000).address)
    big = "x" * 700_000
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}", content=big) for i in range(3)]))
    w = BatchWorker(stub, ["add"], max_in_flight=8)
    await w.subscribed()
    # Three deliveries of 700 KB would pass the 1 MiB a response is meant to stay within together:
    # one each (and one alone may be larger).
    sizes = [len((await w.next()).deliveries) for _ in range(3)]
    assert sizes == [1, 1, 1]
    await w.close()


@pytest.mark.timeout(30)
async def test_a_batch_of_verdicts_reports_each_one(start_scheduler, stub_for) -> None:  # noqa: F811
    server = start_scheduler(visibility_timeout_s=0.5)
    stub = stub_for(server.address)
    ids = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}") for i in range(5)]))).item_ids
    w = BatchWorker(stub, ["add"], max_in_flight=5)
    await w.subscribed()
    d = await w.deliveries(5)
    await w.answer(ok(d[0]))
    # Wait until the first batch was applied, so the repeat below is a repeat on the queue too.
    for _ in range(100):
        if await state(stub, ids[0]) == DONE:
            break
        await asyncio.sleep(0.02)
    await w.answer(
        ok(d[1]),  # valid
        ok("nope/0123456789abcdef"),  # unknown
        ok(d[0]),  # already acked
        pb.Acknowledgement(delivery_id=d[2].delivery_id, success=False, error="boom"),  # a nack
        ok(d[2]),  # answered earlier in this very batch
        pb.Acknowledgement(delivery_id=d[3].delivery_id, success=False, error="bad input", give_up=True),
        ok("malformed"),
    )
    resp = await w.next()
    assert [(r.delivery_id, r.reason) for r in resp.rejected_acks] == [
        ("nope/0123456789abcdef", "NOT_IN_FLIGHT"),
        (d[0].delivery_id, "NOT_IN_FLIGHT"),
        (d[2].delivery_id, "NOT_IN_FLIGHT"),
        ("malformed", "NOT_IN_FLIGHT"),
    ]
    # The valid verdicts were applied, each as it says.
    if not resp.deliveries:
        resp = await w.next()
    assert [x.message.item_id for x in resp.deliveries] == [ids[2]]  # the nacked one, redelivered
    assert resp.deliveries[0].attempt == 2
    assert await state(stub, ids[1]) == DONE
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=ids[3]))).task
    assert task.state == pb.TASK_STATE_FAILED and task.last_error == "bad input"
    # A verdict that comes after its lease ran out: the stream still held it, the queue no longer
    # (meanwhile the message may have been delivered again).
    await asyncio.sleep(0.7)
    await w.answer(ok(d[4]))
    while not (resp := await w.next()).rejected_acks:
        pass
    assert [(r.delivery_id, r.reason) for r in resp.rejected_acks] == [(d[4].delivery_id, "LEASE_LOST")]
    await w.close()


@pytest.mark.timeout(30)
async def test_single_acks_still_work_on_a_batch_stream(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}") for i in range(4)]))
    w = BatchWorker(stub, ["add"], max_in_flight=4)
    await w.subscribed()
    for d in await w.deliveries(4):
        await w.ack_one(d.delivery_id)
    assert await all_done(stub)
    await w.close()


@pytest.mark.timeout(60)
async def test_order_per_group_holds_under_batching(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    groups = {(user, cube) for user in ("u", "v") for cube in ("c0", "c1", "c2")}
    msgs = [m(user=user, cube=cube, content=str(i), priority=i % 3) for i in range(40) for user, cube in sorted(groups)]
    for k in range(0, len(msgs), 50):
        await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=msgs[k : k + 50]))
    w = BatchWorker(stub, ["add"], max_in_flight=16)
    await w.subscribed()
    seen: dict[tuple[str, str], list[int]] = {g: [] for g in groups}
    running: set[tuple[str, str]] = set()
    handled = 0
    while handled < len(msgs):
        resp = await w.next()
        for d in resp.deliveries:
            g = (d.message.user_id, d.message.cube_id)
            assert g not in running, "two messages of one group out at once"
            running.add(g)
            seen[g].append(int(d.message.content))
        # Answer in an order other than delivery's, nacking some once: order must still hold.
        acks = []
        for d in reversed(resp.deliveries):
            g = (d.message.user_id, d.message.cube_id)
            running.discard(g)
            if d.attempt == 1 and int(d.message.content) % 7 == 3:
                acks.append(pb.Acknowledgement(delivery_id=d.delivery_id, success=False, error="again"))
                seen[g].pop()
            else:
                acks.append(ok(d))
                handled += 1
        await w.answer(*acks)
    assert all(v == list(range(40)) for v in seen.values()), seen
    assert await all_done(stub, "u") and await all_done(stub, "v")
    await w.close()


@pytest.mark.timeout(60)
async def test_verdicts_are_applied_while_the_worker_reads_slowly(start_scheduler, stub_for) -> None:  # noqa: F811
    """The scheduler is stuck sending a response (the worker does not read: HTTP/2 flow control
    holds the write); the verdicts that arrive meanwhile are applied all the same, and a message
    leased ahead behind an acked one (Redis) goes back to the queue rather than wait for the write."""
    stub = stub_for(start_scheduler(max_content_bytes=2_000_000, visibility_timeout_s=60.0).address)
    big = "x" * 1_000_000
    ids = []
    for i in range(16):
        ids += (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}", content=big)]))).item_ids
    [behind] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube="c0")]))).item_ids
    requests: asyncio.Queue[pb.SubscribeRequest | None] = asyncio.Queue()
    sub = pb.Subscription(worker_id="slow-reader", labels=["add"], max_in_flight=16, max_batch=16)
    requests.put_nowait(pb.SubscribeRequest(subscription=sub))

    async def gen() -> AsyncIterator[pb.SubscribeRequest]:
        while (r := await requests.get()) is not None:
            yield r

    call = stub.Subscribe(gen())
    assert not (await call.read()).deliveries  # subscribed
    first = await call.read()  # one delivery: 1 MB fills a response; 15 more are being written
    [d] = first.deliveries
    await requests.put(pb.SubscribeRequest(acks=pb.Acknowledgements(acks=[ok(d)])))
    for _ in range(150):
        if await state(stub, d.message.item_id) == DONE:
            break
        await asyncio.sleep(0.02)
    assert await state(stub, d.message.item_id) == DONE, "the verdict waited for the worker to read"
    assert d.message.cube_id == "c0"
    for _ in range(150):
        t = (await stub.GetTask(pb.GetTaskRequest(item_id=behind))).task
        if t.state == PENDING:
            break
        await asyncio.sleep(0.02)
    assert (t.state, t.attempts) == (PENDING, 0)
    await requests.put(None)
    call.cancel()
