"""WaitForTasks' timeout semantics, retention and PurgeTasks through the real service, on both
backends."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from memos.scheduler.v1 import scheduler_pb2 as pb
from tests.scheduler.test_bad_input import INV, NOT_FOUND, refused
from tests.scheduler.test_service import m, stub_for  # noqa: F401 - stub_for is a fixture
from tests.scheduler.test_subscribe_batches import BatchWorker, ok

pytestmark = pytest.mark.timeout(60)


def wait(stub, timeout_seconds: float = 0.0, deadline: float | None = None, user: str = "u"):  # type: ignore[no-untyped-def]
    req = pb.WaitForTasksRequest(user_id=user, timeout_seconds=timeout_seconds)
    return stub.WaitForTasks(req, timeout=deadline)


async def timed(call) -> tuple[pb.WaitForTasksResponse, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    resp = await call
    return resp, time.monotonic() - started


async def test_wait_for_tasks_timeouts(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(wait_for_tasks_max_s=2.0).address)
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m()]))
    # 0 (unset): until the call's deadline, answered just before it, not DEADLINE_EXCEEDED.
    r, took = await timed(wait(stub, 0.0, deadline=1.5))
    assert not r.all_done and r.pending_count == 1 and not r.capped
    assert 0.9 <= took < 1.5
    # The deadline ends an explicit timeout that is longer.
    r, took = await timed(wait(stub, 30.0, deadline=1.5))
    assert not r.all_done and not r.capped and took < 1.5
    # An explicit timeout shorter than the cap and the deadline.
    r, took = await timed(wait(stub, 0.2, deadline=10.0))
    assert not r.all_done and not r.capped and 0.15 <= took < 0.9
    # The server's cap ends waits that asked for more, and says so: no timeout and no deadline,
    # no timeout and a later deadline, a longer timeout.
    for timeout_seconds, deadline in ((0.0, None), (0.0, 10.0), (30.0, None), (float("inf"), 10.0)):
        r, took = await timed(wait(stub, timeout_seconds, deadline))
        assert not r.all_done and r.capped and r.pending_count == 1, (timeout_seconds, deadline)
        assert 1.8 <= took < 4.0
    # Nothing to wait for: at once, whatever the timeout.
    r, took = await timed(wait(stub, 0.0, deadline=10.0, user="idle"))
    assert r.all_done and not r.capped and r.pending_count == 0 and took < 0.5
    for bad in (-1.0, -0.001, float("nan"), float("-inf")):
        await refused(wait(stub, bad), INV, "BAD_TIMEOUT")


async def test_finished_tasks_expire(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler(task_retention_s=0.3, dead_letter_retention_s=60.0).address)
    [item] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m()]))).item_ids
    w = BatchWorker(stub, ["add"], max_in_flight=4)
    await w.subscribed()
    [d] = await w.deliveries(1)
    await w.answer(ok(d))
    assert (await wait(stub, 5.0)).all_done
    assert (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task.state == pb.TASK_STATE_DONE
    end = time.monotonic() + 10
    while True:
        try:
            await stub.GetTask(pb.GetTaskRequest(item_id=item))
        except grpc.aio.AioRpcError as e:
            assert e.code() == NOT_FOUND
            break
        assert time.monotonic() < end, "the done task was never purged"
        await asyncio.sleep(0.1)
    await refused(stub.GetTask(pb.GetTaskRequest(item_id=item)), NOT_FOUND, "TASK_NOT_FOUND")
    await w.close()


async def test_purge_tasks(start_scheduler, stub_for) -> None:  # noqa: F811
    stub = stub_for(start_scheduler().address)
    await refused(stub.PurgeTasks(pb.PurgeTasksRequest(request_id="r")), INV, "MISSING_SELECTOR")
    w = BatchWorker(stub, ["add"], max_in_flight=2)
    await w.subscribed()
    [held] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(user="a", cube="gone")]))).item_ids
    [d] = await w.deliveries(1)
    assert d.message.item_id == held
    queued = [m("query", user="a", cube="gone", content=str(i)) for i in range(3)]
    queued += [m("query", user="b", cube="gone"), m("query", user="a", cube="kept"), m("query", user="b", cube="kept")]
    items = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=queued))).item_ids
    r = await stub.PurgeTasks(pb.PurgeTasksRequest(request_id="r1", user_id="a", cube_id="gone"))
    assert (r.pending_count, r.running_count, r.dead_lettered_count, r.finished_count) == (3, 1, 0, 0)
    # The held delivery's ack is rejected as purged: it is not redelivered.
    await w.answer(ok(d))
    resp = await w.next()
    assert [(x.delivery_id, x.reason) for x in resp.rejected_acks] == [(d.delivery_id, "PURGED")]
    assert not resp.deliveries
    for item in (held, *items[:3]):
        await refused(stub.GetTask(pb.GetTaskRequest(item_id=item)), NOT_FOUND, "TASK_NOT_FOUND")
    # A cube's tasks of every user.
    r = await stub.PurgeTasks(pb.PurgeTasksRequest(request_id="r2", cube_id="gone"))
    assert (r.pending_count, r.running_count) == (1, 0)
    assert (await stub.PurgeTasks(pb.PurgeTasksRequest(request_id="r2", cube_id="gone"))).pending_count == 0
    # What is left is delivered, and nothing purged ever is.
    q = BatchWorker(stub, ["query"], max_in_flight=8)
    await q.subscribed()
    got = await q.deliveries(2)
    await q.answer(*(ok(x) for x in got))
    assert sorted((x.message.user_id, x.message.cube_id) for x in got) == [("a", "kept"), ("b", "kept")]
    assert (await wait(stub, 5.0, user="a")).all_done and (await wait(stub, 5.0, user="b")).all_done
    with pytest.raises(TimeoutError):
        await q.next(timeout=0.5)
    await w.close()
    await q.close()
