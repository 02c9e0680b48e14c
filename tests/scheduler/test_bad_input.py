"""Bad input through the real service, on both backends: the gRPC code AND the ErrorInfo reason
of every refusal, that a refused request stores nothing, and what the worker stream does with
acks it cannot apply and with workers that never answer."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from memos.scheduler.v1 import scheduler_pb2 as pb
from shared.grpc_errors import from_rpc_error
from tests.scheduler.test_service import RawWorker, m, stub_for  # noqa: F401 - stub_for is a fixture

INV, NOT_FOUND, EXHAUSTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
LIMITS = {"max_content_bytes": 1000, "max_messages_per_submit": 50, "max_request_bytes": 64 * 1024}


async def refused(call, code: grpc.StatusCode, reason: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Awaits ``call``, which must fail with ``code`` and ``reason``; returns the ErrorInfo metadata."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == code, e.value.details()
    err = from_rpc_error(e.value)
    assert err.reason == reason, (err.reason, err.message)
    return err.metadata


def submit(stub, *msgs: pb.ScheduleMessage):  # type: ignore[no-untyped-def]
    return stub.SubmitMessages(pb.SubmitMessagesRequest(messages=list(msgs)))


async def pending(stub, user: str = "u") -> int:  # type: ignore[no-untyped-def]
    return (await stub.WaitForTasks(pb.WaitForTasksRequest(user_id=user, timeout_seconds=0.01))).pending_count


@pytest.mark.timeout(30)
async def test_submit_refusals_name_the_reason_and_store_nothing(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(**LIMITS).address)
    cases = [
        ([m("no_such_label")], "UNKNOWN_LABEL", {"field": "label", "label": "no_such_label", "index": "0"}),
        ([m(), m("bad label!")], "UNKNOWN_LABEL", {"index": "1"}),
        ([m(user="")], "MISSING_USER_ID", {"field": "user_id", "index": "0"}),
        ([m(), m(cube="")], "MISSING_CUBE_ID", {"field": "cube_id", "index": "1"}),
        ([m(label="")], "MISSING_LABEL", {"field": "label"}),
        ([m(user="x" * 257)], "ID_TOO_LONG", {"field": "user_id"}),
        ([m(content="x" * 1001)], "CONTENT_TOO_LARGE", {"field": "content", "limit": "1000"}),
        ([m(content="é" * 501)], "CONTENT_TOO_LARGE", {"limit": "1000"}),  # 1002 bytes: bytes count
        ([m(item_id="a/b")], "BAD_ITEM_ID", {"field": "item_id"}),
        ([m(item_id="same"), m(cube="d", item_id="same")], "DUPLICATE_ITEM_ID", {"item_id": "same", "index": "1"}),
        ([m(cube=f"c{i}") for i in range(51)], "BATCH_TOO_LARGE", {"limit": "50"}),
        ([], "EMPTY_BATCH", {"field": "messages"}),
    ]
    for msgs, reason, meta in cases:
        got = await refused(submit(stub, *msgs), INV, reason)
        assert meta.items() <= got.items(), (reason, got)
    # A request past the server's size limit is refused by gRPC itself, before any handler runs.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await submit(stub, m(content="x" * 70_000))
    assert e.value.code() == EXHAUSTED and "larger than max" in e.value.details()
    # The exact limit is fine; none of the refused batches left anything behind.
    await submit(stub, m(content="é" * 500), m(cube="d", content="x" * 1000))
    assert await pending(stub) == 2


@pytest.mark.timeout(30)
async def test_labels_are_accepted_once_registered(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(extra_labels=["from_settings"]).address)
    await submit(stub, m("from_settings"))  # registered by configuration
    await refused(submit(stub, m("custom")), INV, "UNKNOWN_LABEL")
    w = RawWorker(stub, ["custom"])
    await w.subscribed()  # subscribing registers it, durably
    await submit(stub, m("custom"))
    assert (await w.next()).message.label == "custom"
    await w.close()


@pytest.mark.timeout(30)
async def test_other_refusals(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(queue_max_pending=3).address)
    await refused(stub.GetTask(pb.GetTaskRequest()), INV, "MISSING_ITEM_ID")
    await refused(stub.GetTask(pb.GetTaskRequest(item_id="missing")), NOT_FOUND, "TASK_NOT_FOUND")
    await refused(stub.WaitForTasks(pb.WaitForTasksRequest()), INV, "MISSING_USER_ID")
    for t in (-1.0, math.nan):
        await refused(stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=t)), INV, "BAD_TIMEOUT")
    await refused(stub.ListDeadLetters(pb.ListDeadLettersRequest(page_size=-1)), INV, "BAD_PAGE_SIZE")
    await refused(stub.ListDeadLetters(pb.ListDeadLettersRequest(page_token="bogus")), INV, "BAD_PAGE_TOKEN")
    await refused(stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest()), INV, "MISSING_ITEM_IDS")
    await submit(stub, m(cube="a"), m(cube="b"))
    meta = await refused(submit(stub, m(cube="c"), m(cube="d")), EXHAUSTED, "QUEUE_FULL")
    assert meta == {"limit": "3", "pending": "2"}
    assert await pending(stub) == 2

    async def requests(*reqs: pb.SubscribeRequest):  # type: ignore[no-untyped-def]
        for r in reqs:
            yield r

    async def drain(call):  # type: ignore[no-untyped-def]
        async for _ in call:
            pass

    sub = pb.SubscribeRequest
    for reqs, reason in [
        ((), "MISSING_SUBSCRIPTION"),
        ((sub(ack=pb.Acknowledgement(delivery_id="x/y", success=True)),), "MISSING_SUBSCRIPTION"),
        ((sub(subscription=pb.Subscription()),), "MISSING_LABELS"),
        ((sub(subscription=pb.Subscription(labels=["add", "bad label!"])),), "BAD_LABEL"),
    ]:
        await refused(drain(stub.Subscribe(requests(*reqs))), INV, reason)


@pytest.mark.timeout(30)
async def test_acks_that_cannot_apply_change_nothing(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(visibility_timeout_s=0.5, queue_max_attempts=5).address)
    a, b = RawWorker(stub, ["add"], max_in_flight=2), RawWorker(stub, ["query"], max_in_flight=1)
    await a.subscribed()
    await b.subscribed()
    [item] = (await submit(stub, m())).item_ids
    d = await a.next()
    # Unknown, malformed, and another stream's delivery: ignored; the stream goes on.
    await a.ack("unknown/abc")
    await a.ack("no-slash")
    await b.ack(d.delivery_id)  # b does not hold it
    await asyncio.sleep(0.1)
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task
    assert task.state == pb.TASK_STATE_RUNNING and task.attempts == 1
    await a.ack(d.delivery_id)
    await a.ack(d.delivery_id, success=False, error="too late")  # already acked: no effect
    await a.ack(d.delivery_id)
    await asyncio.sleep(0.1)
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task
    assert task.state == pb.TASK_STATE_DONE and task.attempts == 1 and task.last_error == ""
    # A stale ack (its lease ran out and the message was delivered again) does not finish it.
    [item2] = (await submit(stub, m("query"))).item_ids
    d1 = await b.next()
    c = RawWorker(stub, ["query"])
    await c.subscribed()
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # redelivered after the visibility timeout, to b or to c
        task = (await stub.GetTask(pb.GetTaskRequest(item_id=item2))).task
        if task.attempts == 2 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert task.state == pb.TASK_STATE_RUNNING and task.attempts == 2
    await b.ack(d1.delivery_id)
    await asyncio.sleep(0.1)
    assert (await stub.GetTask(pb.GetTaskRequest(item_id=item2))).task.state == pb.TASK_STATE_RUNNING
    for w in (a, b, c):
        await w.close()


@pytest.mark.timeout(30)
async def test_give_up_fails_the_task_with_its_traceback(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    w = RawWorker(stub, ["add"])
    await w.subscribed()
    [item] = (await submit(stub, m())).item_ids
    d = await w.next()
    tb = 'Traceback (most recent call last):\n  File "h.py", line 1\nValueError: bad input'
    ack = pb.Acknowledgement(delivery_id=d.delivery_id, success=False, error=tb, give_up=True)
    await w._requests.put(pb.SubscribeRequest(ack=ack))  # RawWorker.ack has no give_up
    assert (await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=5))).all_done
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task
    assert task.state == pb.TASK_STATE_FAILED and task.last_error == tb and task.attempts == 1
    assert not (await stub.ListDeadLetters(pb.ListDeadLettersRequest())).tasks  # failed, not dead-lettered
    await w.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "max_in_flight",
    [
        pytest.param(
            1,
            marks=pytest.mark.xfail(
                strict=True,
                reason="by design: a delivery whose lease ran out keeps its credit until the worker answers it,"
                " so a worker with max_in_flight=1 that never answers is sent nothing more (not even the"
                " redelivery). Freeing the credit would feed a frozen (SIGSTOPped) worker message after"
                " message (test_kill shows the cost). The worker must give up on a hung handler itself, as"
                " the SDK's does (test_sdk.py: test_a_hung_handler_is_abandoned_and_its_message_delivered_again)",
            ),
        ),
        4,
    ],
)
async def test_worker_that_never_acks(start_scheduler, stub_for, max_in_flight: int) -> None:  # noqa: F811
    """The only worker takes the message and never answers: it is redelivered (to that worker)
    after the visibility timeout, then dead-lettered after max attempts, with the reason."""
    stub = stub_for(start_scheduler(visibility_timeout_s=0.4, queue_max_attempts=2).address)
    w = RawWorker(stub, ["add"], max_in_flight=max_in_flight)
    await w.subscribed()
    [item] = (await submit(stub, m())).item_ids
    first = await w.next()
    assert first.attempt == 1
    again = await w.next(timeout=3)
    assert again.message.item_id == item and again.attempt == 2
    for _ in range(60):
        task = (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task
        if task.state == pb.TASK_STATE_DEAD_LETTERED:
            break
        await asyncio.sleep(0.05)
    assert task.state == pb.TASK_STATE_DEAD_LETTERED and task.attempts == 2
    assert "visibility timeout" in task.last_error
    dead = await stub.ListDeadLetters(pb.ListDeadLettersRequest(label="add"))
    assert [t.item_id for t in dead.tasks] == [item]
    await w.close()
