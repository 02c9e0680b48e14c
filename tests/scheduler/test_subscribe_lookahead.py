"""A group's messages through a batch-mode worker stream, on both backends: the next one comes right
after its head's ack (on Redis it was leased ahead and is sent on the ack itself), a nacked head
comes back before the message behind it, and what a stream held ahead goes back uncounted when the
stream ends or the head takes too long."""

from __future__ import annotations

import asyncio

import pytest

from memos.scheduler.v1 import scheduler_pb2 as pb
from tests.scheduler.test_service import m, stub_for  # noqa: F401 - stub_for is a fixture
from tests.scheduler.test_subscribe_batches import BatchWorker, all_done, ok

PENDING = pb.TASK_STATE_PENDING


def nack(d: pb.Delivery, error: str = "boom") -> pb.Acknowledgement:
    return pb.Acknowledgement(delivery_id=d.delivery_id, success=False, error=error)


async def task(stub, item_id: str) -> pb.Task:  # type: ignore[no-untyped-def]
    return (await stub.GetTask(pb.GetTaskRequest(item_id=item_id))).task


async def group(stub, n: int, cube: str = "c") -> list[str]:  # type: ignore[no-untyped-def]
    """n messages of one (user, cube, label) group: x0, x1, ..."""
    msgs = [m(cube=cube, content=f"x{i}") for i in range(n)]
    return list((await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=msgs))).item_ids)


async def worker(stub, max_in_flight: int = 4, max_batch: int | None = None) -> BatchWorker:  # type: ignore[no-untyped-def]
    w = BatchWorker(stub, ["add"], max_in_flight=max_in_flight, max_batch=max_batch)
    await w.subscribed()
    return w


@pytest.mark.timeout(30)
async def test_a_groups_next_message_comes_on_its_heads_ack(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    x = await group(stub, 3)
    [y] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube="other")]))).item_ids
    w = await worker(stub)
    first = await w.deliveries(2)
    assert [d.message.item_id for d in first] == [x[0], y]  # one per group
    with pytest.raises(TimeoutError):  # x1 waits for x0's ack, whatever was leased
        await w.next(timeout=0.3)
    for i in (1, 2):
        await w.answer(ok(first[0]))
        first = await w.deliveries(1)
        assert [(d.message.item_id, d.attempt) for d in first] == [(x[i], 1)]
    await w.answer(ok(first[0]))
    with pytest.raises(TimeoutError):
        await w.next(timeout=0.3)
    assert (await task(stub, y)).state == pb.TASK_STATE_RUNNING
    await w.close()


@pytest.mark.timeout(30)
async def test_a_nacked_head_comes_back_before_the_message_behind_it(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    x = await group(stub, 2)
    w = await worker(stub)
    [d0] = await w.deliveries(1)
    await w.answer(nack(d0))
    [again] = await w.deliveries(1)
    assert (again.message.item_id, again.attempt) == (x[0], 2)
    t1 = await task(stub, x[1])
    assert t1.state != pb.TASK_STATE_DONE and t1.attempts <= 1
    await w.answer(ok(again))
    [d1] = await w.deliveries(1)
    assert (d1.message.item_id, d1.attempt) == (x[1], 1)  # a lease ahead that went back is not an attempt
    await w.answer(ok(d1))
    assert await all_done(stub)
    await w.close()


@pytest.mark.timeout(30)
async def test_what_a_stream_held_goes_back_when_it_ends(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    x = await group(stub, 3)
    w = await worker(stub)
    await w.deliveries(1)
    await w.close()
    # The next worker gets the head again, then the rest in order, each message behind the head
    # on its first attempt.
    for _ in range(100):
        t = await task(stub, x[1])
        if t.state == PENDING:
            break
        await asyncio.sleep(0.02)
    assert (t.state, t.attempts) == (PENDING, 0)
    w2 = await worker(stub)
    seen = []
    while len(seen) < 3:
        [d] = await w2.deliveries(1)
        seen.append((d.message.item_id, d.attempt))
        await w2.answer(ok(d))
    assert seen == [(x[0], 2), (x[1], 1), (x[2], 1)]
    assert await all_done(stub)
    await w2.close()


@pytest.mark.timeout(30)
async def test_a_head_whose_lease_ran_out_is_not_overtaken(start_scheduler, stub_for) -> None:  # noqa: F811
    # The first worker holds the head past its lease: the head goes to a second worker, and the
    # first worker's late ack must not bring it the message behind (that would run before the
    # head's second run). That message comes once the head is done, on its first attempt.
    stub = stub_for(start_scheduler(visibility_timeout_s=0.8).address)
    x = await group(stub, 2)
    w1 = await worker(stub, max_in_flight=1, max_batch=2)  # no credit while it holds the head
    [late] = await w1.deliveries(1)
    await asyncio.sleep(1.0)
    w2 = await worker(stub)
    [again] = await w2.deliveries(1)
    assert (again.message.item_id, again.attempt) == (x[0], 2)
    await w1.answer(ok(late))
    resp = await w1.next()
    assert [(r.delivery_id, r.reason) for r in resp.rejected_acks] == [(late.delivery_id, "LEASE_LOST")]
    assert not resp.deliveries
    with pytest.raises(TimeoutError):
        await w1.next(timeout=0.3)
    t1 = await task(stub, x[1])  # pending, or (Redis) leased ahead behind w2's delivery of x0
    assert t1.state in (PENDING, pb.TASK_STATE_RUNNING) and t1.attempts <= 1
    await w2.answer(ok(again))
    got = await asyncio.wait(
        [asyncio.ensure_future(w1.next(timeout=5)), asyncio.ensure_future(w2.next(timeout=5))],
        return_when=asyncio.FIRST_COMPLETED,
    )
    [d1] = next(iter(got[0])).result().deliveries
    assert (d1.message.item_id, d1.attempt) == (x[1], 1)
    for p in got[1]:
        p.cancel()
    await w1.close()
    await w2.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lookahead", [True, False])
async def test_queue_lookahead_says_whether_the_next_message_is_leased_ahead(
    start_scheduler,
    stub_for,  # noqa: F811
    lookahead: bool,
) -> None:
    server = start_scheduler(queue_lookahead=lookahead)
    stub = stub_for(server.address)
    x = await group(stub, 2)
    w = await worker(stub)
    [d0] = await w.deliveries(1)
    # Leased ahead (running, not sent) only on a queue that does it (Redis), when asked to.
    ahead = lookahead and bool(server.settings.redis_url)
    t1 = await task(stub, x[1])
    assert (t1.state, t1.attempts) == ((pb.TASK_STATE_RUNNING, 1) if ahead else (PENDING, 0))
    await w.answer(ok(d0))
    [d1] = await w.deliveries(1)
    assert (d1.message.item_id, d1.attempt) == (x[1], 1)
    await w.close()
