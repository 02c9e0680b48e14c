"""One conformance suite for every TaskQueue backend (see conftest.QUEUES)."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.scheduler.queue import BUILTIN_LABELS, Message, QueueLimits, TaskState, Verdict
from shared.errors import InvalidArgument, NotFound, ResourceExhausted


def msg(label: str = "add", user: str = "u", cube: str = "c", content: str = "x", **kw: object) -> Message:
    return Message(user_id=user, cube_id=cube, label=label, content=content, **kw)  # type: ignore[arg-type]


def test_submit_receive_ack(open_queue) -> None:
    q = open_queue()
    [item] = q.submit([msg(content="hello", session_id="s", trace_id="t", info={"k": [1, "v"]})])
    assert q.get_task(item).state == TaskState.PENDING
    [d] = q.receive(["add"], 10)
    assert d.message.item_id == item and d.message.content == "hello" and d.attempt == 1
    assert d.message.info == {"k": [1, "v"]} and d.message.session_id == "s" and d.message.timestamp > 0
    assert q.get_task(item).state == TaskState.RUNNING
    assert q.unfinished_count("u") == 1 and q.unfinished_count("u", "c") == 1 and q.unfinished_count("u", "z") == 0
    q.ack(d.delivery_id)
    t = q.get_task(item)
    assert t.state == TaskState.DONE and t.attempts == 1
    assert q.unfinished_count("u") == 0
    assert q.receive(["add"], 10) == []


def test_labels(open_queue) -> None:
    q = open_queue()
    for label in BUILTIN_LABELS:
        q.submit([msg(label)])
    with pytest.raises(InvalidArgument) as e:
        q.submit([msg("no_such_label")])
    assert e.value.reason == "UNKNOWN_LABEL"
    q.register_label("no_such_label")
    q.submit([msg("no_such_label")])
    with pytest.raises(InvalidArgument):
        q.register_label("bad label!")
    # Only the subscribed labels are delivered.
    assert {d.message.label for d in q.receive(["no_such_label"], 10)} == {"no_such_label"}


def test_bad_messages(open_queue) -> None:
    q = open_queue(QueueLimits(max_content_bytes=10))
    for bad, reason in [
        (msg(user=""), "MISSING_USER_ID"),
        (msg(cube=""), "MISSING_CUBE_ID"),
        (msg(label=""), "MISSING_LABEL"),
        (msg(content="x" * 11), "CONTENT_TOO_LARGE"),
        (msg(item_id="a/b"), "BAD_ITEM_ID"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            q.submit([msg(), bad])
        assert e.value.reason == reason
    with pytest.raises(InvalidArgument):
        q.submit([])
    assert q.unfinished_count("u") == 0  # a bad batch stores nothing


def test_resubmitting_an_item_id_is_a_no_op(open_queue) -> None:
    q = open_queue()
    q.submit([msg(item_id="fixed")])
    q.submit([msg(item_id="fixed")])
    assert q.unfinished_count("u") == 1


def test_unknown_and_repeated_acks(open_queue) -> None:
    q = open_queue()
    q.submit([msg()])
    [d] = q.receive(["add"], 1)
    q.ack(d.delivery_id)
    for bad in (d.delivery_id, "nope/abc"):
        with pytest.raises(NotFound):
            q.ack(bad)
        with pytest.raises(NotFound):
            q.nack(bad, "x")
    with pytest.raises(InvalidArgument):
        q.ack("no-slash")
    with pytest.raises(NotFound):
        q.get_task("missing")


def test_nack_retries_then_dead_letters_and_replays(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=3))
    [item] = q.submit([msg("mem_update")])
    for attempt in (1, 2, 3):
        [d] = q.receive(["mem_update"], 1)
        assert d.attempt == attempt
        state = q.nack(d.delivery_id, f"boom {attempt}")
        assert state == (TaskState.DEAD_LETTERED if attempt == 3 else TaskState.PENDING)
    t = q.get_task(item)
    assert t.state == TaskState.DEAD_LETTERED and t.attempts == 3 and t.last_error == "boom 3"
    assert q.receive(["mem_update"], 1) == []
    assert q.unfinished_count("u") == 0
    dead, token = q.list_dead_letters()
    assert [t.item_id for t in dead] == [item] and token == ""
    assert q.list_dead_letters(label="add")[0] == []
    assert q.replay_dead_letters([item, "missing"]) == 1
    assert q.replay_dead_letters([item]) == 0
    assert q.get_task(item).state == TaskState.PENDING
    [d] = q.receive(["mem_update"], 1)
    assert d.attempt == 1
    q.ack(d.delivery_id)
    assert q.list_dead_letters()[0] == []


def test_nack_without_retry_fails_the_task(open_queue) -> None:
    q = open_queue()
    [item] = q.submit([msg()])
    [d] = q.receive(["add"], 1)
    assert q.nack(d.delivery_id, "Traceback: bad input", retry=False) == TaskState.FAILED
    t = q.get_task(item)
    assert t.state == TaskState.FAILED and t.last_error.startswith("Traceback")
    assert q.unfinished_count("u") == 0


def test_dead_letter_pages(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=1))
    items = q.submit([msg("query" if i % 2 else "add", cube=f"c{i}") for i in range(5)])
    for d in q.receive(["add", "query"], 10):
        q.nack(d.delivery_id, "no")
    seen, token = [], ""
    while True:
        page, token = q.list_dead_letters(page_size=2, page_token=token)
        seen += [t.item_id for t in page]
        if not token:
            break
    assert sorted(seen) == sorted(items)
    queries, _ = q.list_dead_letters(label="query", page_size=1)
    assert len(queries) == 1 and queries[0].message.label == "query"
    with pytest.raises(InvalidArgument):
        q.list_dead_letters(page_token="bogus")


def test_visibility_timeout_redelivers_then_dead_letters(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=2, visibility_timeout_s=0.2))
    [item] = q.submit([msg()])
    [d1] = q.receive(["add"], 1)
    assert q.receive(["add"], 1) == []
    time.sleep(0.3)
    [d2] = q.receive(["add"], 1)
    assert d2.attempt == 2 and d2.message.item_id == item
    with pytest.raises(NotFound):
        q.ack(d1.delivery_id)  # its lease ran out
    time.sleep(0.3)
    assert q.receive(["add"], 1) == []
    t = q.get_task(item)
    assert t.state == TaskState.DEAD_LETTERED and "visibility timeout" in t.last_error


def test_release_redelivers_at_once(open_queue) -> None:
    q = open_queue()
    q.submit([msg()])
    [d] = q.receive(["add"], 1)
    q.release(d.delivery_id)
    [d2] = q.receive(["add"], 1)
    assert d2.attempt == 2 and d2.message.item_id == d.message.item_id
    q.release(d2.delivery_id, delivered=False)  # never reached a worker: not an attempt
    [d3] = q.receive(["add"], 1)
    assert d3.attempt == 2


def test_order_per_group(open_queue) -> None:
    q = open_queue()
    a = q.submit([msg(content=f"a{i}") for i in range(3)])
    b = q.submit([msg(cube="other", content=f"b{i}") for i in range(2)])
    q.submit([msg("query", content="q0")])
    first = q.receive(["add", "query"], 10)
    # One message per group at a time: the head of each.
    assert sorted(d.message.item_id for d in first) == sorted([a[0], b[0], first[-1].message.item_id])
    assert len(first) == 3
    handled, batch = [], first
    while batch:
        for d in batch:
            handled.append(d.message.item_id)
            q.ack(d.delivery_id)
        batch = q.receive(["add"], 10)
    assert [i for i in handled if i in a] == a and [i for i in handled if i in b] == b


def test_nacked_message_keeps_its_place(open_queue) -> None:
    q = open_queue()
    a = q.submit([msg(content=f"a{i}") for i in range(2)])
    [d] = q.receive(["add"], 10)
    q.nack(d.delivery_id, "retry me")
    [d] = q.receive(["add"], 10)
    assert d.message.item_id == a[0] and d.attempt == 2


def test_priorities(open_queue) -> None:
    q = open_queue()
    low = q.submit([msg(cube="low", priority=0)])
    high = q.submit([msg(cube="high", priority=5)])
    mid = q.submit([msg(cube="mid", priority=1)])
    got = [d.message.item_id for d in q.receive(["add"], 3)]
    assert got == high + mid + low


def test_bounded_queue_pushes_back(open_queue) -> None:
    q = open_queue(QueueLimits(max_pending=5))
    q.submit([msg(cube=f"c{i}") for i in range(4)])
    with pytest.raises(ResourceExhausted) as e:
        q.submit([msg(cube="x1"), msg(cube="x2")])
    assert e.value.retriable and e.value.reason == "QUEUE_FULL"
    assert q.unfinished_count("u") == 4  # nothing of the refused batch was stored
    q.submit([msg(cube="x1")])
    [d] = q.receive(["add"], 1)
    q.ack(d.delivery_id)
    q.submit([msg(cube="x2")])
    assert q.unfinished_count("u") == 5


def test_survives_restart(open_queue) -> None:
    limits = QueueLimits(visibility_timeout_s=0.3)
    q = open_queue(limits)
    q.register_label("custom")
    items = q.submit([msg(cube=f"c{i}") for i in range(5)] + [msg("custom")])
    [running] = q.receive(["add"], 1)
    done = q.receive(["add"], 1)
    q.ack(done[0].delivery_id)
    q.close()

    q2 = open_queue(limits)
    assert "custom" in q2.known_labels()
    assert q2.get_task(done[0].message.item_id).state == TaskState.DONE
    assert q2.unfinished_count("u") == 5
    time.sleep(0.35)  # the lease of the message running at the "crash" runs out
    got = {d.message.item_id: d for d in q2.receive(["add", "custom"], 10)}
    assert set(got) == set(items) - {done[0].message.item_id}
    assert got[running.message.item_id].attempt == 2
    for d in got.values():
        q2.ack(d.delivery_id)
    assert q2.unfinished_count("u") == 0


def test_ack_many_applies_what_it_can_and_names_the_rest(open_queue) -> None:
    q = open_queue()
    ids = q.submit([msg(cube=f"c{i}") for i in range(4)])
    deliveries = q.receive(["add"], 10)
    assert len(deliveries) == 4
    q.ack(deliveries[0].delivery_id)  # already finished before the batch
    batch = [d.delivery_id for d in deliveries] + ["nope/unknown", "malformed"]
    failed = q.ack_many(batch)
    assert failed == [deliveries[0].delivery_id, "nope/unknown", "malformed"]
    assert all(q.get_task(i).state == TaskState.DONE for i in ids)
    assert q.ack_many([]) == []


def test_the_event_loop_methods_match_the_blocking_ones(open_queue) -> None:
    """submit_async, answer_and_receive_async and unfinished_count_async (the service's hot path:
    Redis answers them on the event loop, SQLite in a thread) store, lease, refuse, answer and count
    as their blocking twins."""
    q = open_queue(QueueLimits(max_pending=3))

    async def scenario() -> None:
        ids = await q.submit_async([msg(cube="a", content="one"), msg(cube="a", content="two"), msg(cube="b")])
        with pytest.raises(ResourceExhausted):
            await q.submit_async([msg()])
        with pytest.raises(InvalidArgument):
            await q.submit_async([msg("no_such_label")])
        failed, got = await q.answer_and_receive_async([], ["add"], 10)
        # Order per group: cube a's second message waits for the first's ack.
        assert failed == [] and sorted(d.message.item_id for d in got) == sorted([ids[0], ids[2]])
        first = next(d for d in got if d.message.item_id == ids[0])
        failed, got = await q.answer_and_receive_async(
            [Verdict(first.delivery_id), Verdict(first.delivery_id), Verdict("no/such")], ["add"], 10
        )
        assert failed == [first.delivery_id, "no/such"]  # answered twice in one call; never leased
        assert [d.message.content for d in got] == ["two"]
        assert q.get_task(ids[0]).state == TaskState.DONE and q.get_task(ids[1]).state == TaskState.RUNNING
        # The counts WaitForTasks reads: two open (cube a's second, cube b's), one per cube.
        assert [await q.unfinished_count_async("u", c) for c in ("", "a", "b", "z")] == [2, 1, 1, 0]
        assert await q.unfinished_count_async("nobody") == 0
        await q.aclose()

    asyncio.run(scenario())
