"""The SDK's worker in batch mode: verdicts go out while a slow handler still works on the same
response's next message, and against a scheduler from before batch mode it speaks the old
form (one delivery per response, one ack per request)."""

from __future__ import annotations

import threading
import time

import pytest

from memos.client.scheduler import ScheduledMessage, SchedulerClient
from memos.scheduler.v1 import scheduler_pb2 as pb
from services.scheduler.servicer import SchedulerServicer


def wait_until(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.timeout(60)
def test_a_slow_handler_does_not_hold_back_earlier_acks(start_scheduler) -> None:
    server = start_scheduler()
    release = threading.Event()
    started: list[str] = []

    def handle(m: ScheduledMessage) -> None:
        started.append(m.content)
        if m.content == "slow":
            release.wait(30)

    with SchedulerClient(server.address) as client:
        worker = client.register_handlers({"query": handle}, max_in_flight=8)
        msgs = [
            {"user_id": "u", "cube_id": f"c{i}", "label": "query", "content": c} for i, c in enumerate("a b".split())
        ]
        msgs.insert(1, {"user_id": "u", "cube_id": "cs", "label": "query", "content": "slow"})
        fast1, slow, fast2 = client.submit_messages(msgs)
        try:
            # One response carries all three; while "slow" runs, the ack of "a" (handled before
            # it) still reaches the scheduler, and "b" waits in the worker.
            assert wait_until(lambda: "slow" in started)
            assert wait_until(lambda: client.get_task(fast1).state == "done", 5), "the ack waited for the slow handler"
            assert client.get_task(slow).state == "running" and client.get_task(fast2).state == "running"
            assert started == ["a", "slow"]
        finally:
            release.set()
        assert client.wait_for_tasks("u", timeout_s=20)
        assert started == ["a", "slow", "b"] and worker.rejected_acks == 0


class PreBatchScheduler(SchedulerServicer):
    """The scheduler as it was before batch mode: it does not know Subscription.max_batch (so it
    sends one delivery per response) and reads only single ``ack`` requests."""

    actions: list[str] = []

    async def Subscribe(self, request_iterator, context):  # type: ignore[no-untyped-def,override]
        async def as_before():  # type: ignore[no-untyped-def]
            async for req in request_iterator:
                action = req.WhichOneof("action")
                PreBatchScheduler.actions.append(action)
                if action == "subscription":
                    req.subscription.ClearField("max_batch")
                if action in ("subscription", "ack"):
                    yield req

        async for resp in super().Subscribe(as_before(), context):
            assert not resp.deliveries
            yield resp


@pytest.mark.timeout(60)
def test_the_worker_speaks_the_old_form_to_an_old_scheduler(start_scheduler, monkeypatch) -> None:
    monkeypatch.setattr("services.scheduler.app.SchedulerServicer", PreBatchScheduler)
    PreBatchScheduler.actions = []
    server = start_scheduler()
    seen: list[str] = []
    with SchedulerClient(server.address) as client:
        client.register_handlers({"query": lambda m: seen.append(m.content)}, max_in_flight=4)
        ids = client.submit_messages(
            [ScheduledMessage(user_id="u", cube_id=f"c{i % 3}", label="query", content=str(i)) for i in range(12)]
        )
        assert client.wait_for_tasks("u", timeout_s=20)
        assert sorted(seen, key=int) == [str(i) for i in range(12)]
        assert all(client.get_task(i).state == "done" for i in ids)
    assert PreBatchScheduler.actions[0] == "subscription"
    assert set(PreBatchScheduler.actions[1:]) == {"ack"} and len(PreBatchScheduler.actions) == 13
    assert pb.Subscription().max_batch == 0  # what an old scheduler would have read
