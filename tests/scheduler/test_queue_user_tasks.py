"""TaskQueue.list_user_tasks on every queue implementation: every task of a user, in every state
(pending, running, done, dead-lettered), each once across pages, and nothing of another user."""

from __future__ import annotations

import pytest

from services.scheduler.queue import QueueLimits, TaskQueue
from services.scheduler.queue.base import Message, TaskState
from shared.errors import InvalidArgument


def listed(q: TaskQueue, user_id: str, page_size: int) -> tuple[list[str], int]:
    """Item ids over every page (repeats kept, so a test sees them) and the number of pages."""
    ids: list[str] = []
    token, pages = "", 0
    while True:
        tasks, token = q.list_user_tasks(user_id, page_size, token)
        pages += 1
        assert all(t.message.user_id == user_id for t in tasks)
        ids.extend(t.item_id for t in tasks)
        if not token:
            return ids, pages


def test_a_users_tasks_in_every_state_are_listed_once(open_queue) -> None:  # type: ignore[no-untyped-def]
    q: TaskQueue = open_queue(QueueLimits(visibility_timeout_s=30.0, max_attempts=1))
    mine = q.submit([Message(user_id="u1", cube_id=f"c{i % 3}", label="add", content=f"m{i}") for i in range(25)])
    theirs = q.submit([Message(user_id="u2", cube_id="c0", label="add") for _ in range(10)])
    q.submit([Message(user_id="u10", cube_id="c0", label="add")])  # shares a prefix with u1: not theirs
    # One of u1's tasks done, one running, one dead-lettered (max_attempts=1); the rest pending.
    states: dict[str, TaskState] = {}
    for d in q.receive(["add"], 3):
        if d.message.user_id != "u1":
            continue
        if not states:
            q.ack(d.delivery_id)
            states[d.message.item_id] = TaskState.DONE
        elif len(states) == 1:
            states[d.message.item_id] = q.nack(d.delivery_id, "boom")
        else:
            states[d.message.item_id] = TaskState.RUNNING
    assert set(states.values()) == {TaskState.DONE, TaskState.DEAD_LETTERED, TaskState.RUNNING}

    ids, pages = listed(q, "u1", 4)
    assert sorted(ids) == sorted(mine)  # each exactly once
    assert pages > 1
    by_id = {t.item_id: t for t in q.list_user_tasks("u1", 1000)[0]}
    for item_id, state in states.items():
        assert by_id[item_id].state == state
    assert sorted(listed(q, "u2", 1000)[0]) == sorted(theirs)
    assert listed(q, "nobody", 10) == ([], 1)

    q.purge_tasks(user_id="u1")
    assert listed(q, "u1", 10)[0] == []


def test_listing_needs_a_user_and_a_token_it_issued(open_queue) -> None:  # type: ignore[no-untyped-def]
    q: TaskQueue = open_queue()
    with pytest.raises(InvalidArgument) as err:
        q.list_user_tasks("")
    assert err.value.reason == "MISSING_USER_ID"
    with pytest.raises(InvalidArgument) as err:
        q.list_user_tasks("u1", 10, "not-a-token")
    assert err.value.reason == "BAD_PAGE_TOKEN"
