"""Lookahead (TaskQueue.answer_and_receive_ahead_async): a group's next message leased behind its
head, sent by the stream the moment the head is acked. Run over every backend (conftest.QUEUES);
one that does not lease ahead must say so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from services.scheduler.queue import Message, QueueLimits, TaskQueue, TaskState, Verdict
from tests.scheduler.conftest import QUEUES


def msg(cube: str = "c", content: str = "x", priority: int = 0) -> Message:
    return Message(user_id="u", cube_id=cube, label="add", content=content, priority=priority)


def run(q: TaskQueue, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        try:
            await scenario()
        finally:
            await q.aclose()

    asyncio.run(main())


# The backends that lease ahead (conftest.QUEUES names); the others must refuse the call.
LOOKAHEAD = {"redis"}


@pytest.fixture(params=sorted(LOOKAHEAD))
def ahead_queue(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[..., TaskQueue]]:
    factory = QUEUES[request.param](request, tmp_path)

    def make(limits: QueueLimits | None = None) -> TaskQueue:
        q = factory(limits or QueueLimits(visibility_timeout_s=30.0, max_attempts=3))
        assert q.supports_lookahead
        return q

    yield make


def test_backends_say_whether_they_lease_ahead(open_queue) -> None:
    q = open_queue()
    assert q.supports_lookahead == (type(q).__name__ == "RedisTaskQueue")
    if not q.supports_lookahead:

        async def refused() -> None:
            with pytest.raises(NotImplementedError):
                await q.answer_and_receive_ahead_async([], ["add"], 10)

        run(q, refused)


def test_the_next_message_of_a_group_is_leased_behind_its_head(ahead_queue) -> None:
    q = ahead_queue()
    a = q.submit([msg(content=f"a{i}") for i in range(3)])
    [b] = q.submit([msg(cube="b", content="b0")])

    async def scenario() -> None:
        failed, got, held = await q.answer_and_receive_ahead_async([], ["add"], 10)
        assert failed == [] and [d.message.item_id for d in got] == [a[0], b]
        # Cube a's second message waits behind its head; cube b has no second.
        [(behind, a1)] = [(h.behind, h.delivery) for h in held]
        assert behind == got[0].delivery_id and a1.message.item_id == a[1] and a1.attempt == 1
        assert q.get_task(a[1]).state == TaskState.RUNNING and q.get_task(a[2]).state == TaskState.PENDING
        # Leased ahead, it is not deliverable to anyone else, nor is the one behind it.
        assert q.receive(["add"], 10) == []
        # The head's ack (the stream sent a1 on it): one message per group is leased ahead, so
        # the one behind a1 waits its turn in the queue.
        failed, more, held = await q.answer_and_receive_ahead_async([Verdict(got[0].delivery_id)], ["add"], 10)
        assert failed == [] and more == [] and held == []
        assert q.get_task(a[0]).state == TaskState.DONE and q.get_task(a[2]).state == TaskState.PENDING
        failed, more, held = await q.answer_and_receive_ahead_async(
            [Verdict(a1.delivery_id), Verdict(got[1].delivery_id)], ["add"], 10
        )
        assert failed == [] and [d.message.item_id for d in more] == [a[2]] and held == []
        failed, more, held = await q.answer_and_receive_ahead_async([Verdict(more[0].delivery_id)], ["add"], 10)
        assert failed == [] and more == [] and held == []
        assert {q.get_task(i).state for i in [*a, b]} == {TaskState.DONE}
        assert q.unfinished_count("u") == 0

    run(q, scenario)


def test_a_group_gets_one_message_ahead_of_the_queues_order_not_more(ahead_queue) -> None:
    q = ahead_queue()
    [a0] = q.submit([msg(cube="a", content="a0")])
    [b0] = q.submit([msg(cube="b", content="b0")])
    a1, a2 = q.submit([msg(cube="a", content="a1"), msg(cube="a", content="a2")])

    async def scenario() -> None:
        _, [d0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 1)
        assert d0.message.item_id == a0 and held.delivery.message.item_id == a1  # a1 passes b0
        # a1's ack: b0 has waited longest, so it goes before a2.
        await q.answer_and_receive_ahead_async([Verdict(d0.delivery_id)], ["add"], 0)
        _, [nxt], _ = await q.answer_and_receive_ahead_async([Verdict(held.delivery.delivery_id)], ["add"], 1)
        assert nxt.message.item_id == b0

    run(q, scenario)


def test_nothing_is_leased_ahead_of_a_message_of_higher_priority(ahead_queue) -> None:
    q = ahead_queue()
    q.submit([msg(cube="a", content="a0", priority=5), msg(cube="a", content="a1")])
    [c0] = q.submit([msg(cube="c", content="c0", priority=3)])
    [e0, e1] = q.submit([msg(cube="e", content="e0", priority=3), msg(cube="e", content="e1", priority=3)])

    async def scenario() -> None:
        _, [d0], held = await q.answer_and_receive_ahead_async([], ["add"], 1)
        assert d0.message.content == "a0" and held == []  # a1 (priority 0) would pass c0 (3)
        _, got, held = await q.answer_and_receive_ahead_async([], ["add"], 1)
        assert [d.message.item_id for d in got] == [c0] and held == []  # c has no second
        _, got, held = await q.answer_and_receive_ahead_async([], ["add"], 1)
        # e1 has e0's priority, as high as any that waits (a1 is 0): leased ahead.
        assert [d.message.item_id for d in got] == [e0] and [h.delivery.message.item_id for h in held] == [e1]

    run(q, scenario)


def test_a_message_given_back_unsent_stays_behind_its_head(ahead_queue) -> None:
    q = ahead_queue()
    x = q.submit([msg(content=f"x{i}") for i in range(2)])

    async def scenario() -> None:
        _, [x0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 10)
        # Given back unsent: pending again, its attempt not counted, and still behind x0.
        failed, got, again = await q.answer_and_receive_ahead_async(
            [], ["add"], 10, unlease=[held.delivery.delivery_id]
        )
        assert failed == [] and got == [] and again == []
        t = q.get_task(x[1])
        assert t.state == TaskState.PENDING and t.attempts == 0
        assert q.receive(["add"], 10) == []
        # A second unlease of it (already given back) changes nothing.
        await q.answer_and_receive_ahead_async([], ["add"], 0, unlease=[held.delivery.delivery_id])
        assert q.get_task(x[1]).attempts == 0
        # Its head acked (no lookahead): it is delivered, first attempt.
        failed, got = q.answer_and_receive([Verdict(x0.delivery_id)], ["add"], 10)
        assert failed == [] and [(d.message.item_id, d.attempt) for d in got] == [(x[1], 1)]

    run(q, scenario)


def test_a_nacked_head_comes_back_before_the_message_behind_it(ahead_queue) -> None:
    q = ahead_queue()
    x = q.submit([msg(content=f"x{i}") for i in range(2)])

    async def scenario() -> None:
        _, [x0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 10)
        # The worker nacks x0: the stream gives back the message it held behind it, in the same call.
        failed, got, held2 = await q.answer_and_receive_ahead_async(
            [Verdict(x0.delivery_id, False, "boom")], ["add"], 10, unlease=[held.delivery.delivery_id]
        )
        assert failed == []
        assert [(d.message.item_id, d.attempt) for d in got] == [(x[0], 2)]
        # x1 is leased ahead again behind the new delivery of x0, still its first attempt.
        assert [(h.behind, h.delivery.message.item_id, h.delivery.attempt) for h in held2] == [
            (got[0].delivery_id, x[1], 1)
        ]
        assert q.get_task(x[0]).last_error == "boom"

    run(q, scenario)


def test_a_head_that_fails_for_good_frees_the_message_behind_it(ahead_queue) -> None:
    q = ahead_queue()
    x = q.submit([msg(content=f"x{i}") for i in range(2)])

    async def scenario() -> None:
        _, [x0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 10)
        failed, got, _ = await q.answer_and_receive_ahead_async(
            [Verdict(x0.delivery_id, False, "bad input", retry=False)], ["add"], 10, unlease=[held.delivery.delivery_id]
        )
        assert failed == [] and q.get_task(x[0]).state == TaskState.FAILED
        assert [(d.message.item_id, d.attempt) for d in got] == [(x[1], 1)]

    run(q, scenario)


def test_expired_leases_keep_the_group_in_order(ahead_queue) -> None:
    q = ahead_queue(QueueLimits(visibility_timeout_s=0.2, max_attempts=5))
    x = q.submit([msg(content=f"x{i}") for i in range(2)])

    async def scenario() -> None:
        _, [x0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 10)
        time.sleep(0.3)
        # Both leases ran out: the head is delivered again, and only the head (the message
        # behind it waits, even though it was leased too). No lookahead here: a plain receive.
        got = q.receive(["add"], 10)
        assert [(d.message.item_id, d.attempt) for d in got] == [(x[0], 2)]
        assert q.get_task(x[1]).state == TaskState.PENDING
        # The late ack of the first delivery is refused, and so is the one leased ahead's.
        failed, _, _ = await q.answer_and_receive_ahead_async(
            [Verdict(x0.delivery_id), Verdict(held.delivery.delivery_id)], ["add"], 0
        )
        assert failed == [x0.delivery_id, held.delivery.delivery_id]
        assert q.get_task(x[1]).state == TaskState.PENDING
        q.ack(got[0].delivery_id)
        assert [d.message.item_id for d in q.receive(["add"], 10)] == [x[1]]

    run(q, scenario)


def test_a_stream_that_goes_away_gives_back_what_it_held(ahead_queue) -> None:
    q = ahead_queue()
    x = q.submit([msg(content=f"x{i}") for i in range(3)])

    async def scenario() -> None:
        _, [x0], [held] = await q.answer_and_receive_ahead_async([], ["add"], 10)
        # What the servicer does when a worker's stream ends: every lease back, unsent ones uncounted.
        q.release(held.delivery.delivery_id, delivered=False)
        q.release(x0.delivery_id, delivered=True)
        got = q.receive(["add"], 10)
        assert [(d.message.item_id, d.attempt) for d in got] == [(x[0], 2)]
        assert q.get_task(x[1]).attempts == 0 and q.get_task(x[2]).state == TaskState.PENDING

    run(q, scenario)
