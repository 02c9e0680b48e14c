"""Deleting a cube or a user's data through the gateway removes their queued scheduler tasks too.

Real services on loopback: textmem, a scheduler (SQLite queue, no built-in handlers: what is
queued stays queued) and a gateway that knows it. Tasks are queued straight into the scheduler
for the owner's cube (by the owner and by a writer it was shared with), for another cube of the
owner and for another user's cube. DeleteCube removes every task of that cube and no other;
DeleteUserData removes the user's tasks and every task of the cubes they owned, and leaves other
users' tasks alone; a worker subscribing afterwards is handed only what was kept. With the
scheduler down the deletion fails UNAVAILABLE (TASK_PURGE_FAILED) and deletes nothing, and a
retry once it is back completes it. Only the owner's DeleteCube touches the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from memos.client import AsyncMemosClient, NotFound, PermissionDenied, Unavailable
from memos.scheduler.v1 import scheduler_pb2 as pb
from memos.scheduler.v1 import scheduler_pb2_grpc
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.settings import SchedulerSettings
from shared.server import GrpcServer
from tests.conftest import Suite, start_suite, stop_suite

pytestmark = pytest.mark.timeout(120)


@dataclass
class QueueSuite:
    suite: Suite
    scheduler: GrpcServer
    scheduler_settings: SchedulerSettings
    channel: grpc.aio.Channel

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel)


@pytest.fixture(scope="module")
async def queue_suite(tmp_path_factory: pytest.TempPathFactory, embedder) -> AsyncIterator[QueueSuite]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("erase-queue")
    settings = SchedulerSettings(
        listen_addr="127.0.0.1:0", data_dir=data / "sched", builtin_handlers=False, log_level="WARNING"
    )
    scheduler = build_scheduler(settings)
    await scheduler.start()
    # Restarted on the same port and file by the outage test.
    settings = settings.model_copy(update={"listen_addr": scheduler.address})
    suite = await start_suite(data, embedder, scheduler_addr=scheduler.address, scheduler_timeout_s=5.0)
    channel = grpc.aio.insecure_channel(scheduler.address)
    qs = QueueSuite(suite, scheduler, settings, channel)
    yield qs
    await channel.close()
    await stop_suite(suite)
    await qs.scheduler.stop(1.0)


async def queue(qs: QueueSuite, *pairs: tuple[str, str]) -> list[str]:
    msgs = [pb.ScheduleMessage(user_id=u, cube_id=c, label="add", content=f"{u} in {c}") for u, c in pairs]
    return list((await qs.stub.SubmitMessages(pb.SubmitMessagesRequest(messages=msgs))).item_ids)


async def exists(qs: QueueSuite, item_id: str) -> bool:
    try:
        await qs.stub.GetTask(pb.GetTaskRequest(item_id=item_id))
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def delivered(qs: QueueSuite, users: set[str]) -> set[str]:
    """Item ids a worker is handed (and acks) until nothing more of ``users`` comes."""
    requests: asyncio.Queue[pb.SubscribeRequest | None] = asyncio.Queue()
    requests.put_nowait(
        pb.SubscribeRequest(subscription=pb.Subscription(worker_id="w", labels=["add"], max_in_flight=64, max_batch=64))
    )

    async def gen() -> AsyncIterator[pb.SubscribeRequest]:
        while (r := await requests.get()) is not None:
            yield r

    call = qs.stub.Subscribe(gen())
    it = call.__aiter__()
    seen: set[str] = set()
    try:
        await asyncio.wait_for(it.__anext__(), 5)  # subscribed
        while True:
            try:
                resp = await asyncio.wait_for(it.__anext__(), 1.0)
            except TimeoutError:
                break
            acks = []
            for d in resp.deliveries:
                if d.message.user_id in users:
                    seen.add(d.message.item_id)
                acks.append(pb.Acknowledgement(delivery_id=d.delivery_id, success=True))
            if acks:
                await requests.put(pb.SubscribeRequest(acks=pb.Acknowledgements(acks=acks)))
    finally:
        await requests.put(None)
        call.cancel()
    return seen


async def test_deleting_a_cube_or_a_user_removes_their_queued_tasks(queue_suite: QueueSuite, unique: str) -> None:
    qs = queue_suite
    owner, writer, other = f"o-{unique}", f"w-{unique}", f"x-{unique}"
    gone, second, theirs = f"gone-{unique}", f"second-{unique}", f"theirs-{unique}"
    async with AsyncMemosClient(qs.suite.address) as client:
        for user, cube in ((owner, gone), (owner, second), (other, theirs)):
            await client.create_cube(user, cube)
        await client.share_cube(owner, gone, writer, "writer")
        await client.share_cube(owner, second, writer, "writer")
        in_gone = await queue(qs, (owner, gone), (owner, gone), (writer, gone))
        in_second = await queue(qs, (owner, second), (writer, second))
        kept = await queue(qs, (other, theirs), (writer, theirs))

        # Only the owner deletes a cube: a writer's attempt leaves the queue as it was.
        with pytest.raises(PermissionDenied):
            await client.delete_cube(writer, gone)
        assert all([await exists(qs, i) for i in in_gone])

        await client.delete_cube(owner, gone)
        for item in in_gone:  # the owner's and the writer's tasks of the cube
            assert not await exists(qs, item)
        assert all([await exists(qs, i) for i in (*in_second, *kept)])
        with pytest.raises(NotFound):
            await client.delete_cube(owner, gone)

        erased = await client.delete_user_data(owner)
        assert list(erased.deleted_cube_ids) == [second]
        for item in in_second:  # the user's own, and the writer's in the cube the user owned
            assert not await exists(qs, item)
        assert all([await exists(qs, i) for i in kept])
        resp = await qs.stub.WaitForTasks(pb.WaitForTasksRequest(user_id=owner, timeout_seconds=0.01))
        assert resp.all_done and resp.pending_count == 0

    # A worker is handed the kept tasks, never a purged one.
    assert await delivered(qs, {owner, writer, other}) == set(kept)


async def test_a_deletion_fails_while_the_scheduler_is_down_and_a_retry_completes_it(
    queue_suite: QueueSuite, unique: str
) -> None:
    qs = queue_suite
    owner = f"o-{unique}"
    cube = f"c-{unique}"
    async with AsyncMemosClient(qs.suite.address) as client:
        await client.create_cube(owner, cube)
        [item] = await queue(qs, (owner, cube))
        await qs.scheduler.stop(0.5)
        try:
            for delete in (lambda: client.delete_cube(owner, cube), lambda: client.delete_user_data(owner)):
                with pytest.raises(Unavailable) as e:
                    await delete()
                assert e.value.reason == "TASK_PURGE_FAILED" and e.value.retriable
            # Nothing was deleted: the cube is still there.
            assert [c.cube_id for c in (await client.list_cubes(owner)).cubes] == [cube]
        finally:
            qs.scheduler = build_scheduler(qs.scheduler_settings)
            await qs.scheduler.start()
        assert await exists(qs, item)
        # The client retries, as UNAVAILABLE invites it to (the gateway's channel to the scheduler
        # may still be backing off from the outage for a moment).
        for _ in range(60):
            try:
                await client.delete_cube(owner, cube, timeout=30)
                break
            except Unavailable:
                await asyncio.sleep(0.5)
        assert not await exists(qs, item)
        assert (await client.list_cubes(owner)).cubes == []
