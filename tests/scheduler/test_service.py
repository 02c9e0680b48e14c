"""The scheduler service over real gRPC, on both queue backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from memos.scheduler.v1 import scheduler_pb2 as pb
from memos.scheduler.v1 import scheduler_pb2_grpc

DONE, DEAD = pb.TASK_STATE_DONE, pb.TASK_STATE_DEAD_LETTERED


def m(label: str = "add", user: str = "u", cube: str = "c", content: str = "x", **kw: object) -> pb.ScheduleMessage:
    return pb.ScheduleMessage(user_id=user, cube_id=cube, label=label, content=content, **kw)  # type: ignore[arg-type]


class RawWorker:
    """A worker speaking the Subscribe stream by hand."""

    def __init__(self, stub: scheduler_pb2_grpc.SchedulerServiceStub, labels: list[str], max_in_flight: int = 8):
        self._requests: asyncio.Queue[pb.SubscribeRequest | None] = asyncio.Queue()
        self._requests.put_nowait(
            pb.SubscribeRequest(subscription=pb.Subscription(worker_id="w", labels=labels, max_in_flight=max_in_flight))
        )
        self.call = stub.Subscribe(self._gen())
        self._it = self.call.__aiter__()

    async def _gen(self) -> AsyncIterator[pb.SubscribeRequest]:
        while (r := await self._requests.get()) is not None:
            yield r

    async def subscribed(self) -> None:
        first = await asyncio.wait_for(self._it.__anext__(), 5)
        assert first.delivery_id == ""

    async def next(self, timeout: float = 5.0) -> pb.SubscribeResponse:
        return await asyncio.wait_for(self._it.__anext__(), timeout)

    async def ack(self, delivery_id: str, success: bool = True, error: str = "") -> None:
        await self._requests.put(
            pb.SubscribeRequest(ack=pb.Acknowledgement(delivery_id=delivery_id, success=success, error=error))
        )

    async def close(self) -> None:
        await self._requests.put(None)
        self.call.cancel()


@pytest.fixture
async def stub_for():
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> scheduler_pb2_grpc.SchedulerServiceStub:
        ch = grpc.aio.insecure_channel(address)
        channels.append(ch)
        return scheduler_pb2_grpc.SchedulerServiceStub(ch)

    yield make
    for ch in channels:
        await ch.close()


async def test_200_messages_are_handled(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    msgs = [m(cube=f"c{i % 10}", content=str(i)) for i in range(200)]
    resp = await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=msgs))
    assert len(set(resp.item_ids)) == 200
    w = RawWorker(stub, ["add"], max_in_flight=16)
    await w.subscribed()
    seen: dict[str, list[int]] = {}
    while sum(len(v) for v in seen.values()) < 200:
        d = await w.next()
        seen.setdefault(d.message.cube_id, []).append(int(d.message.content))
        await w.ack(d.delivery_id)
    # Per (user, cube, label) the order of submission is kept.
    assert all(v == sorted(v) for v in seen.values()) and sum(map(len, seen.values())) == 200
    done = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=10))
    assert done.all_done and done.pending_count == 0
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=resp.item_ids[-1]))).task
    assert task.state == DONE and task.attempts == 1 and task.message.content == "199"
    await w.close()


async def test_wait_for_tasks_times_out(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(user="waiter")]))
    r = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="waiter", timeout_seconds=0.2))
    assert not r.all_done and r.pending_count == 1
    r = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="waiter", cube_id="other", timeout_seconds=0.2))
    assert r.all_done


async def test_worker_that_disconnects_mid_task_loses_nothing(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    a = RawWorker(stub, ["custom_label"])
    await a.subscribed()  # subscribing registers the label
    [item] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m("custom_label")]))).item_ids
    d = await a.next()
    assert d.message.item_id == item and d.attempt == 1
    await a.close()  # dies holding the message
    b = RawWorker(stub, ["custom_label"])
    await b.subscribed()
    d2 = await b.next()
    assert d2.message.item_id == item and d2.attempt == 2
    await b.ack(d2.delivery_id)
    r = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=5))
    assert r.all_done
    assert (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task.state == DONE
    await b.close()


async def test_nacks_dead_letter_then_replay(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    w = RawWorker(stub, ["mem_update"])
    await w.subscribed()
    [item] = (await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m("mem_update")]))).item_ids
    for attempt in (1, 2, 3):
        d = await w.next()
        assert d.attempt == attempt
        await w.ack(d.delivery_id, success=False, error=f"Traceback: boom {attempt}")
    r = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=5))
    assert r.all_done
    task = (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task
    assert task.state == DEAD and task.attempts == 3 and task.last_error == "Traceback: boom 3"
    dead = await stub.ListDeadLetters(pb.ListDeadLettersRequest(label="mem_update"))
    assert [t.item_id for t in dead.tasks] == [item]
    replayed = await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(item_ids=[item]))
    assert replayed.replayed_count == 1
    d = await w.next()
    assert d.message.item_id == item and d.attempt == 1
    await w.ack(d.delivery_id)
    assert (await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=5))).all_done
    assert (await stub.GetTask(pb.GetTaskRequest(item_id=item))).task.state == DONE
    assert not (await stub.ListDeadLetters(pb.ListDeadLettersRequest())).tasks
    await w.close()


async def test_bad_input(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    for msgs in ([m("no_such_label")], [m(user="")], [m(cube="")], []):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=msgs))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetTask(pb.GetTaskRequest(item_id="missing"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    async def ack_first():  # type: ignore[no-untyped-def]
        yield pb.SubscribeRequest(ack=pb.Acknowledgement(delivery_id="x/y", success=True))

    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in stub.Subscribe(ack_first()):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Acks for unknown deliveries are ignored; the stream keeps working.
    w = RawWorker(stub, ["add"])
    await w.subscribed()
    await w.ack("unknown/abc")
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m()]))
    d = await w.next()
    await w.ack(d.delivery_id)
    await w.ack(d.delivery_id)  # twice
    assert (await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=5))).all_done
    await w.close()


async def test_full_queue_is_resource_exhausted(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler(queue_max_pending=5).address)
    await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(cube=f"c{i}") for i in range(5)]))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m()]))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    r = await stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=0.1))
    assert r.pending_count == 5  # nothing dropped, nothing extra stored


async def test_submit_time_is_the_timestamp_of_a_message_without_one(start_scheduler, stub_for) -> None:
    stub = stub_for(start_scheduler().address)
    before = time.time()
    given = m(item_id="given")
    given.timestamp.FromMicroseconds(1_700_000_000_250_000)
    resp = await stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m(item_id="unset", cube="c2"), given]))
    after = time.time()
    assert list(resp.item_ids) == ["unset", "given"]
    unset = (await stub.GetTask(pb.GetTaskRequest(item_id="unset"))).task.message.timestamp.ToMicroseconds() / 1e6
    assert before - 0.001 <= unset <= after + 0.001
    kept = (await stub.GetTask(pb.GetTaskRequest(item_id="given"))).task.message.timestamp.ToMicroseconds()
    assert kept == 1_700_000_000_250_000
