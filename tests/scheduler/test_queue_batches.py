"""The batch operations of every TaskQueue backend (see conftest.QUEUES): a worker stream's
verdicts and its next receive in one call, batches of verdicts that report each one, batches
larger than one statement or script call takes, and what a batch must carry byte for byte."""

from __future__ import annotations

import time

from services.scheduler.queue import Message, QueueLimits, TaskState, Verdict
from shared.errors import ResourceExhausted


def msg(label: str = "add", user: str = "u", cube: str = "c", content: str = "x", **kw: object) -> Message:
    return Message(user_id=user, cube_id=cube, label=label, content=content, **kw)  # type: ignore[arg-type]


def test_an_ack_frees_its_groups_next_message_in_the_same_call(open_queue) -> None:
    q = open_queue()
    a = q.submit([msg(content=f"a{i}") for i in range(3)])
    b = q.submit([msg(cube="other", content="b0")])
    first = q.receive(["add"], 10)
    assert [d.message.item_id for d in first] == [a[0], b[0]]  # one per group
    failed, nxt = q.answer_and_receive([Verdict(first[0].delivery_id)], ["add"], 10)
    assert failed == [] and [d.message.item_id for d in nxt] == [a[1]]
    assert q.get_task(a[0]).state == TaskState.DONE
    # Verdicts alone (no labels or no room): applied, nothing leased.
    failed, none = q.answer_and_receive([Verdict(first[1].delivery_id)], [], 10)
    assert failed == [] and none == [] and q.get_task(b[0]).state == TaskState.DONE
    failed, none = q.answer_and_receive([Verdict(nxt[0].delivery_id)], ["add"], 0)
    assert failed == [] and none == [] and q.get_task(a[2]).state == TaskState.PENDING
    assert q.answer_and_receive([], ["add"], 5)[1][0].message.item_id == a[2]


def test_a_batch_of_verdicts_reports_each_one(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=3, visibility_timeout_s=30.0))
    ids = q.submit([msg(cube=f"c{i}") for i in range(6)])
    d = q.receive(["add"], 10)
    assert [x.message.item_id for x in d] == ids
    q.ack(d[0].delivery_id)
    stale = d[5].delivery_id.rpartition("/")[0] + "/0000000000000000"  # its item, not its lease
    verdicts = [
        Verdict(d[1].delivery_id),  # valid
        Verdict("nope/0123456789abcdef"),  # unknown
        Verdict(d[0].delivery_id),  # already acked
        Verdict(d[2].delivery_id, success=False, error="boom"),  # nack: back to pending
        Verdict(d[2].delivery_id),  # answered earlier in this batch
        Verdict(d[3].delivery_id, success=False, error="bad input", retry=False),  # fails the task
        Verdict("malformed"),
        Verdict(stale),  # a lease this item does not have
        Verdict(d[4].delivery_id),  # valid
    ]
    failed, again = q.answer_and_receive(verdicts, ["add"], 10)
    assert failed == ["nope/0123456789abcdef", d[0].delivery_id, d[2].delivery_id, "malformed", stale]
    assert [(x.message.item_id, x.attempt) for x in again] == [(ids[2], 2)]  # the nacked one, at once
    states = [q.get_task(i).state for i in ids]
    S = TaskState
    assert states == [S.DONE, S.DONE, S.RUNNING, S.FAILED, S.DONE, S.RUNNING]
    assert q.get_task(ids[2]).last_error == "boom" and q.get_task(ids[3]).last_error == "bad input"
    assert q.unfinished_count("u") == 2
    assert q.answer_many([]) == []


def test_a_verdict_for_a_lease_that_ran_out_fails_beside_the_current_one(open_queue) -> None:
    q = open_queue(QueueLimits(max_attempts=3, visibility_timeout_s=0.2))
    [item] = q.submit([msg()])
    [d] = q.receive(["add"], 1)
    time.sleep(0.3)
    [d2] = q.receive(["add"], 1)  # the lease ran out (seen by the next receive): leased again
    assert d2.attempt == 2 and q.get_task(item).last_error.startswith("visibility timeout")
    failed, none = q.answer_and_receive([Verdict(d.delivery_id), Verdict(d2.delivery_id)], ["add"], 1)
    assert failed == [d.delivery_id] and none == []
    assert q.get_task(item).state == TaskState.DONE


def test_batches_larger_than_one_statement(open_queue) -> None:
    q = open_queue(QueueLimits(max_pending=5000))
    n = 1234
    ids: list[str] = []
    for k in range(0, n, 500):
        ids += q.submit([msg(cube=f"c{i}", content=str(i)) for i in range(k, min(k + 500, n))])
    got = q.receive(["add"], n + 10)
    assert [d.message.item_id for d in got] == ids  # one group each: all deliverable, in order
    assert len({d.delivery_id for d in got}) == n
    verdicts = [Verdict(d.delivery_id) for d in got[:-2]]
    verdicts += [Verdict(got[-2].delivery_id, success=False, error="e"), Verdict("nope/x")]
    failed, again = q.answer_and_receive(verdicts, ["add"], 10)
    assert failed == ["nope/x"] and [d.message.item_id for d in again] == [ids[-2]]
    assert q.unfinished_count("u") == 2


def test_text_is_carried_byte_for_byte(open_queue) -> None:
    q = open_queue()
    odd = 'ü"\\\n\x00😀\u2028\t<>{}[],:'
    m = msg(
        user="u" + odd,
        cube="c" + odd,
        content="x" + odd,
        item_id="i" + odd,
        session_id="s" + odd,
        trace_id="t" + odd,
        info={"k" + odd: [odd, 1, 2.5, None, {"n": True}]},
        priority=-3,
    )
    [item] = q.submit([m])
    assert item == "i" + odd
    assert q.unfinished_count("u" + odd) == 1 and q.unfinished_count("u" + odd, "c" + odd) == 1
    assert q.unfinished_count("u") == 0 and q.unfinished_count("u" + odd, "c") == 0
    [d] = q.receive(["add"], 5)
    assert d.message == Message(**{**m.__dict__, "timestamp": d.message.timestamp})
    assert d.delivery_id.rpartition("/")[0] == item
    assert q.answer_many([Verdict(d.delivery_id)]) == []
    assert q.get_task(item).state == TaskState.DONE and q.unfinished_count("u" + odd) == 0


def test_the_bound_holds_across_a_restart(open_queue) -> None:
    limits = QueueLimits(max_pending=4)
    q = open_queue(limits)
    q.submit([msg(cube=f"c{i}") for i in range(4)])
    q.close()
    q2 = open_queue(limits)
    try:
        q2.submit([msg(cube="x")])
        raise AssertionError("the bound was not kept")
    except ResourceExhausted:
        pass
    ds = q2.receive(["add"], 2)
    assert q2.answer_many([Verdict(ds[0].delivery_id), Verdict(ds[1].delivery_id, False, "no", retry=False)]) == []
    q2.submit([msg(cube="x"), msg(cube="y")])
    assert q2.unfinished_count("u") == 4
