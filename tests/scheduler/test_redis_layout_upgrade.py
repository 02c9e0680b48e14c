"""A Redis queue upgraded with messages in it: task hashes written by the earlier layout (``seq``
unpadded) keep their order, priority and lifecycle under the current scripts (which write ``seq``
as 16 digits and compare ready-set members as strings); and the per-user counts WaitForTasks reads."""

from __future__ import annotations

import uuid

import pytest

from services.scheduler.queue import Message, QueueLimits, TaskState, Verdict
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def queue(redis_server: RedisServer):  # type: ignore[no-untyped-def]
    from services.scheduler.queue.redis_streams import RedisTaskQueue

    prefix = f"t-{uuid.uuid4().hex[:12]}"
    q = RedisTaskQueue(redis_server.url, QueueLimits(max_attempts=2), prefix=prefix)
    yield q
    q.drop_all()
    q.close()


def _as_earlier_version(q) -> None:  # type: ignore[no-untyped-def]
    """Rewrites every task hash's ``seq`` as the earlier layout stored it: the plain number (its
    scripts passed a Lua number to HSET). Ready-set members were "{seq:016d}|{item}" then too."""
    for key in q._r.scan_iter(match=f"{q.prefix}:t:*"):
        seq = q._r.hget(key, "seq")
        q._r.hset(key, "seq", str(int(seq)))


def _m(item: str, cube: str, label: str = "add", priority: int = 0) -> Message:
    return Message(user_id="u", cube_id=cube, label=label, content=item, item_id=item, priority=priority)


def test_seq_is_stored_padded(queue) -> None:  # type: ignore[no-untyped-def]
    queue.submit([_m("a", "c1")])
    assert queue._r.hget(queue._k("t", "a"), "seq") == "0000000000000001"


def test_old_layout_tasks_keep_order_priority_and_lifecycle(queue) -> None:  # type: ignore[no-untyped-def]
    # Sequence numbers 1-8 go to fillers, so the tasks below cross from one digit to two: unpadded,
    # "10" and "11" would sort before "9".
    queue.submit([_m(f"f{i}", f"fill{i}", label="query") for i in range(8)])
    assert queue.ack_many([d.delivery_id for d in queue.receive(["query"], 8)]) == []
    queue.submit([_m("a", "c1"), _m("b", "c1"), _m("c", "c2"), _m("d", "c3", priority=5)])
    _as_earlier_version(queue)
    assert queue._r.hget(queue._k("t", "a"), "seq") == "9"

    # Priority first, then submission order.
    got = queue.receive(["add"], 5)
    assert [d.message.item_id for d in got] == ["d", "a", "c"]
    by_item = {d.message.item_id: d for d in got}
    # A nack puts a (seq 9) and c (seq 11) back in the ready set from their old-layout hashes.
    assert queue.nack(by_item["a"].delivery_id, "boom") == TaskState.PENDING
    assert queue.nack(by_item["c"].delivery_id, "boom") == TaskState.PENDING
    assert queue.ack_many([by_item["d"].delivery_id]) == []
    [again] = queue.receive(["add", "query"], 1)  # the multi-label path compares members too
    assert again.message.item_id == "a" and again.attempt == 2
    # Acking a group's head promotes the next one (b, seq 10), read from its old-layout hash.
    assert queue.answer_many([Verdict(again.delivery_id)]) == []
    assert [d.message.item_id for d in queue.receive(["add"], 5)] == ["b", "c"]


def test_old_layout_dead_letters_replay_behind_open_tasks(queue) -> None:  # type: ignore[no-untyped-def]
    queue.submit([_m("x", "c1"), _m("y", "c2")])
    _as_earlier_version(queue)
    for _ in range(2):  # max_attempts=2: the second failure dead-letters it
        [d] = [d for d in queue.receive(["add"], 5) if d.message.item_id == "x"]
        queue.nack(d.delivery_id, "boom")
    assert queue.get_task("x").state == TaskState.DEAD_LETTERED
    queue.submit([_m("z", "c3")])
    assert queue.replay_dead_letters(["x"]) == 1
    # y is running (delivered above, never answered); z was submitted before the replay.
    assert [d.message.item_id for d in queue.receive(["add"], 5)] == ["z", "x"]
    counts = queue.purge_tasks("u")
    assert (counts.pending, counts.running) == (0, 3)
    assert queue.unfinished_count("u") == 0 and not queue.has_unfinished("u")


def test_has_unfinished_with_counters_left_at_zero(queue) -> None:  # type: ignore[no-untyped-def]
    queue.submit([_m("a", "c1"), _m("b", "c2"), _m("c", "c2")])
    assert queue.has_unfinished("u") and queue.unfinished_count("u") == 3
    assert queue.ack_many([d.delivery_id for d in queue.receive(["add"], 5)]) == []
    # c1's counter is 0 now (the field stays): not counted as open.
    assert queue.unfinished_count("u") == 1 and queue.has_unfinished("u")
    assert not queue.has_unfinished("u", "c1") and queue.has_unfinished("u", "c2")
    assert queue.ack_many([d.delivery_id for d in queue.receive(["add"], 5)]) == []
    assert not queue.has_unfinished("u") and queue.unfinished_count("u") == 0
    assert not queue.has_unfinished("nobody") and queue.unfinished_count("nobody") == 0
