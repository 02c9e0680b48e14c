"""Reliability: the scheduler service while its Redis is down, and after it is back.

test_redis_durability.py covers the queue object (UNAVAILABLE, AOF restart); these go through
the service and the SDK: the gRPC code and reason a client sees, that a submit that failed left
nothing behind, and that a connected worker recovers by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from memos.client.scheduler import ScheduledMessage, SchedulerClient
from memos.scheduler.v1 import scheduler_pb2 as pb
from services.scheduler.settings import SchedulerSettings
from shared.errors import NotFound, Unavailable
from shared.grpc_errors import from_rpc_error
from tests.redis_server import RedisServer, start_redis, stop_redis
from tests.scheduler.conftest import ServerThread


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    server = start_redis(appendonly=True)
    yield server
    stop_redis(server)


@pytest.fixture
def scheduler(aof_redis: RedisServer, tmp_path) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    s = ServerThread(
        SchedulerSettings(
            listen_addr="127.0.0.1:0",
            data_dir=tmp_path,
            log_level="ERROR",
            redis_url=aof_redis.url,
            visibility_timeout_s=5.0,
            poll_interval_s=0.05,
        )
    )
    yield s
    s.stop()


def batch(prefix: str, n: int, label: str = "add") -> list[ScheduledMessage]:
    return [
        ScheduledMessage(user_id="u", cube_id=f"c{i % 3}", label=label, content=str(i), item_id=f"{prefix}{i}")
        for i in range(n)
    ]


@pytest.mark.timeout(60)
def test_submit_while_redis_is_down(aof_redis: RedisServer, scheduler: ServerThread) -> None:
    handled: list[str] = []
    lock = threading.Lock()

    def on_query(msg: ScheduledMessage) -> None:
        with lock:
            handled.append(msg.item_id)

    with SchedulerClient(scheduler.address, timeout_s=10) as client:
        client.register_handlers({"query": on_query})  # connected through the outage
        stored = client.submit_messages(batch("ok", 50))
        aof_redis.stop()

        started = time.monotonic()
        with pytest.raises(Unavailable) as e:
            client.submit_messages(batch("lost", 10))
        assert time.monotonic() - started < 5.0
        assert e.value.reason == "REDIS_UNAVAILABLE" and e.value.retriable
        # The raw call: the gRPC code, and the ErrorInfo in the status details.
        with pytest.raises(grpc.RpcError) as raw:
            client.stub.SubmitMessages(pb.SubmitMessagesRequest(messages=[m.to_proto() for m in batch("raw", 1)]))
        assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
        assert from_rpc_error(raw.value).reason == "REDIS_UNAVAILABLE"
        for call in (lambda: client.get_task(stored[0]), lambda: client.wait_for_tasks("u", timeout_s=1)):
            with pytest.raises(Unavailable):
                call()

        aof_redis.restart()
        # Everything acknowledged before the outage is there; nothing of the refused batches is.
        assert not client.wait_for_tasks("u", timeout_s=0.1)
        assert client.stub.WaitForTasks(pb.WaitForTasksRequest(user_id="u", timeout_seconds=0.01)).pending_count == 50
        assert {client.get_task(i).state for i in stored} == {"pending"}
        for item in ["lost0", "lost9", "raw0"]:
            with pytest.raises(NotFound):
                client.get_task(item)
        # A client retries the refused batch with the same item ids: it is stored once.
        assert client.submit_messages(batch("lost", 10)) == [f"lost{i}" for i in range(10)]
        # The worker that was connected during the outage reconnected by itself.
        queries = client.submit_messages(batch("q", 5, label="query"))
        assert client.wait_for_tasks("u", cube_id="c0", timeout_s=0.1) is False  # "add"s still wait
        deadline = time.monotonic() + 20
        while len(set(handled)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(set(handled)) == sorted(queries)
        client.register_handlers({"add": lambda m: None})
        assert client.wait_for_tasks("u", timeout_s=20)
        assert {client.get_task(i).state for i in stored + [f"lost{i}" for i in range(10)]} == {"done"}


@pytest.mark.timeout(60)
def test_redis_killed_mid_submits_loses_nothing_acknowledged(aof_redis: RedisServer, scheduler: ServerThread) -> None:
    """Submits run back to back while Redis is SIGKILLed (AOF, fsync always): every submit that
    got an answer is stored whole after the restart, and the one that failed is all or nothing."""
    acked: list[list[str]] = []
    failed: list[list[str]] = []
    enough = threading.Event()

    def submitter() -> None:
        with SchedulerClient(scheduler.address, timeout_s=10) as c:
            k = 0
            while True:
                msgs = batch(f"b{k}-", 10)
                try:
                    acked.append(c.submit_messages(msgs))
                except Unavailable:
                    failed.append([m.item_id for m in msgs])
                    return
                k += 1
                if k == 20:
                    enough.set()

    t = threading.Thread(target=submitter)
    t.start()
    assert enough.wait(30)
    aof_redis.stop(kill=True)
    t.join(30)
    assert len(failed) == 1 and len(acked) >= 20
    aof_redis.restart()
    with SchedulerClient(scheduler.address) as client:
        for ids in acked:
            assert {client.get_task(i).state for i in ids} == {"pending"}
        present = []
        for i in failed[0]:
            try:
                present.append(client.get_task(i).item_id)
            except NotFound:
                pass
        assert present in ([], failed[0]), "a refused submit is stored whole or not at all"
        assert client.stub.WaitForTasks(
            pb.WaitForTasksRequest(user_id="u", timeout_seconds=0.01)
        ).pending_count == 10 * len(acked) + len(present)
