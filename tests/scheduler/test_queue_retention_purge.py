"""Retention of finished tasks and PurgeTasks, on every TaskQueue backend (see conftest.QUEUES)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from services.scheduler.queue import Message, PurgeCounts, QueueLimits, TaskQueue, TaskState
from shared.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.timeout(60)


def msg(user: str = "u", cube: str = "c", label: str = "add", **kw: object) -> Message:
    return Message(user_id=user, cube_id=cube, label=label, content=f"{user}/{cube}", **kw)  # type: ignore[arg-type]


def gone(q: TaskQueue, item_id: str) -> bool:
    try:
        q.get_task(item_id)
    except NotFound as exc:
        assert exc.reason == "TASK_NOT_FOUND"
        return True
    return False


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_finished_tasks_are_purged_after_their_retention(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=1, task_retention_s=0.5, dead_letter_retention_s=2.5))
    done, failed, dead, replayed, waiting = q.submit([msg(cube=f"c{i}") for i in range(5)])
    by_item = {d.message.item_id: d for d in q.receive(["add"], 4)}
    assert set(by_item) == {done, failed, dead, replayed}
    q.ack(by_item[done].delivery_id)
    assert q.nack(by_item[failed].delivery_id, "bad input", retry=False) == TaskState.FAILED
    assert q.nack(by_item[dead].delivery_id, "boom") == TaskState.DEAD_LETTERED
    assert q.nack(by_item[replayed].delivery_id, "boom") == TaskState.DEAD_LETTERED
    started = time.monotonic()
    # The done task goes after task_retention_s; the dead letters and the failed task stay longer.
    eventually(lambda: gone(q, done))
    assert time.monotonic() - started < 2.0
    assert q.get_task(failed).state == TaskState.FAILED
    assert {t.item_id for t in q.list_dead_letters()[0]} == {dead, replayed}
    assert q.replay_dead_letters([replayed]) == 1  # pending again: no longer subject to retention
    eventually(lambda: gone(q, dead) and gone(q, failed))
    assert q.list_dead_letters()[0] == [] and q.dead_letter_count() == 0
    # Open tasks are never purged, however old.
    time.sleep(0.6)
    assert q.get_task(waiting).state == TaskState.PENDING
    assert q.get_task(replayed).state == TaskState.PENDING
    assert q.unfinished_count("u") == 2
    assert {d.message.item_id for d in q.receive(["add"], 10)} == {waiting, replayed}
    # A purged item id is free again: submitting it makes a new task.
    assert q.submit([msg(cube="c0", item_id=done)]) == [done]
    assert q.get_task(done).state == TaskState.PENDING


def test_purge_removes_a_users_and_a_cubes_tasks_in_every_state(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=1, max_pending=8))
    # u1/c1: a running head with a pending successor, a dead letter, a done task.
    running, behind = q.submit([msg("u1", "c1"), msg("u1", "c1")])
    [dead] = q.submit([msg("u1", "c1", "query")])
    [done] = q.submit([msg("u1", "c1", "mem_update")])
    deliveries = {d.message.item_id: d for d in q.receive(["add", "query", "mem_update"], 10)}
    assert set(deliveries) == {running, dead, done}
    q.nack(deliveries[dead].delivery_id, "boom")
    q.ack(deliveries[done].delivery_id)
    # The same user in another cube, another user in the same cube (ids that only share a prefix too).
    [u1c2] = q.submit([msg("u1", "c2")])
    [u2c1] = q.submit([msg("u2", "c1")])
    [u11c1] = q.submit([msg("u11", "c1")])
    assert q.unfinished_count("u1") == 3

    with pytest.raises(InvalidArgument):
        q.purge_tasks()
    counts = q.purge_tasks("u1", "c1")
    assert counts == PurgeCounts(pending=1, running=1, dead_lettered=1, finished=1)
    for item in (running, behind, dead, done):
        assert gone(q, item)
    # The withdrawn delivery's verdicts are refused, as for a stale delivery.
    with pytest.raises(NotFound):
        q.ack(deliveries[running].delivery_id)
    assert q.answer_many([]) == []
    failed, _ = q.answer_and_receive([], ["add"], 0)
    assert failed == []
    assert q.ack_many([deliveries[running].delivery_id]) == [deliveries[running].delivery_id]
    assert q.list_dead_letters()[0] == [] and q.dead_letter_count() == 0
    assert q.unfinished_count("u1", "c1") == 0 and q.unfinished_count("u1") == 1
    # The others' tasks are untouched and are delivered; nothing of u1/c1 ever is.
    got = {d.message.item_id: d for d in q.receive(["add", "query", "mem_update"], 10)}
    assert set(got) == {u1c2, u2c1, u11c1}
    # The bound counts purged tasks out: room for 8 - 3 open.
    q.submit([msg("u3", f"c{i}") for i in range(5)])
    assert q.purge_tasks("u3") == PurgeCounts(pending=5)
    # A cube, every user's tasks; then a user, every cube; a repeat finds nothing left.
    assert q.purge_tasks(cube_id="c1") == PurgeCounts(running=2)
    assert gone(q, u2c1) and gone(q, u11c1) and not gone(q, u1c2)
    assert q.purge_tasks("u1") == PurgeCounts(running=1)
    assert q.purge_tasks("u1") == PurgeCounts()
    assert q.ack_many([d.delivery_id for d in got.values()]) == [d.delivery_id for d in got.values()]
    assert q.unfinished_count("u1") == q.unfinished_count("u2") == q.unfinished_count("u11") == 0
    assert all(p == r == 0 for p, r in q.depth().values())


def test_purge_frees_the_next_task_of_a_shared_group_order(open_queue) -> None:
    """A purge of one user's tasks leaves another user's queue in order and deliverable."""
    q = open_queue()
    mine = q.submit([msg("me", "c") for _ in range(3)])
    theirs = q.submit([msg("them", "c") for _ in range(3)])
    [d1, d2] = q.receive(["add"], 10)  # one head per group
    assert {d1.message.item_id, d2.message.item_id} == {mine[0], theirs[0]}
    assert q.purge_tasks("me").running == 1
    for d in (d1, d2):
        if d.message.user_id == "them":
            q.ack(d.delivery_id)
    order = []
    while batch := q.receive(["add"], 10):
        for d in batch:
            order.append(d.message.item_id)
            q.ack(d.delivery_id)
    assert order == theirs[1:]
