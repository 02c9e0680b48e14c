"""The Python SDK's scheduler client: submits, and handlers run by a local worker thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from memos.client.scheduler import ScheduledMessage, SchedulerClient
from shared.errors import InvalidArgument, ResourceExhausted


def test_register_handlers_runs_a_local_worker(start_scheduler) -> None:
    server = start_scheduler(queue_max_pending=50)
    seen: list[ScheduledMessage] = []
    lock = threading.Lock()

    def on_query(msg: ScheduledMessage) -> None:
        with lock:
            seen.append(msg)

    def on_custom(msg: ScheduledMessage) -> None:
        raise ValueError(f"cannot handle {msg.content}")

    with SchedulerClient(server.address) as client:
        with pytest.raises(InvalidArgument):
            client.submit_messages([{"user_id": "alice", "cube_id": "c", "label": "my_label", "content": "x"}])
        client.register_handlers({"query": on_query, "my_label": on_custom}, max_in_flight=4)
        ids = client.submit_messages(
            [
                ScheduledMessage(user_id="alice", cube_id="c", label="query", content=f"q{i}", info={"n": i})
                for i in range(20)
            ]
        )
        [bad] = client.submit_messages([{"user_id": "alice", "cube_id": "c", "label": "my_label", "content": "x"}])
        assert client.wait_for_tasks("alice", timeout_s=20)
        assert [m.content for m in seen] == [f"q{i}" for i in range(20)]  # one group: in order
        assert seen[3].info == {"n": 3} and seen[3].mem_cube_id == "c" and seen[3].attempt == 1
        assert client.get_task(ids[0]).state == "done"
        status = client.get_task(bad)
        assert status.state == "dead_lettered" and status.attempts == 3
        assert "Traceback" in status.last_error and "ValueError: cannot handle x" in status.last_error
        dead, token = client.list_dead_letters("my_label")
        assert [t.item_id for t in dead] == [bad] and token == ""
        assert client.replay_dead_letters([bad]) == 1
        assert client.wait_for_tasks("alice", timeout_s=20)
        assert client.get_task(bad).state == "dead_lettered"
        client.stop()
        with pytest.raises(ResourceExhausted):
            client.submit_messages([{"user_id": "bob", "cube_id": f"c{i}", "label": "add"} for i in range(51)])


class HangingHandler:
    """Records each call's (content, attempt), and hangs on the messages ``hangs`` picks until the
    ``with`` block ends."""

    def __init__(self, hangs: Callable[[ScheduledMessage], bool]) -> None:
        self._hangs = hangs
        self._calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()

    def __call__(self, msg: ScheduledMessage) -> None:
        with self._lock:
            self._calls.append((msg.content, msg.attempt))
        if self._hangs(msg):
            self._release.wait(30)

    def calls(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._calls)

    def __enter__(self) -> HangingHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()


@pytest.mark.timeout(60)
def test_a_hung_handler_is_abandoned_and_its_message_delivered_again(start_scheduler) -> None:
    """With the SDK's default credit of one, a handler that hangs held the worker's only slot, so
    nothing (not even its own redelivery) was sent to it again. Past the visibility timeout the
    worker now gives up on it: the message comes back to the same worker, and the rest go on."""
    server = start_scheduler(visibility_timeout_s=0.5, queue_max_attempts=3)
    hanging = HangingHandler(lambda m: m.content == "hangs always" or (m.content == "hangs once" and m.attempt == 1))
    with hanging, SchedulerClient(server.address) as client:
        worker = client.register_handlers({"query": hanging})
        once, always, after = client.submit_messages(
            [
                ScheduledMessage(user_id="hung", cube_id=cube, label="query", content=content)
                for cube, content in (("a", "hangs once"), ("b", "hangs always"), ("c", "after"))
            ]
        )
        assert client.wait_for_tasks("hung", timeout_s=30)
        assert (client.get_task(once).state, client.get_task(once).attempts) == ("done", 2)
        assert client.get_task(after).state == "done"
        dead = client.get_task(always)
        assert (dead.state, dead.attempts) == ("dead_lettered", 3)
        assert "visibility timeout" in dead.last_error
        assert hanging.calls() == [
            ("after", 1),
            ("hangs always", 1),
            ("hangs always", 2),
            ("hangs always", 3),
            ("hangs once", 1),
            ("hangs once", 2),
        ]
        assert worker.abandoned_handlers == 4
        client.stop()


@pytest.mark.timeout(60)
def test_a_delivery_whose_lease_ran_out_while_it_waited_is_not_run(start_scheduler) -> None:
    """Credit 3: a, b and c come in one response, and a's handler hangs past the visibility
    timeout, so the leases of b and c run out while they wait for it. The worker does not run them
    on those leases (they are delivered again anyway): each runs once, on attempt 2."""
    server = start_scheduler(visibility_timeout_s=0.5, queue_max_attempts=5)
    with (
        HangingHandler(lambda m: m.content == "a" and m.attempt == 1) as hanging,
        SchedulerClient(server.address) as client,
    ):
        worker = client.register_handlers({"stale_check": hanging}, max_in_flight=3)
        # One submit: its messages are stored at once, so the worker's next receive leases all three.
        ids = client.submit_messages(
            [ScheduledMessage(user_id="stale", cube_id=c, label="stale_check", content=c) for c in "abc"]
        )
        assert client.wait_for_tasks("stale", timeout_s=30)
        assert [client.get_task(i).state for i in ids] == ["done"] * 3
        assert hanging.calls() == [("a", 1), ("a", 2), ("b", 2), ("c", 2)]
        assert worker.abandoned_handlers == 1
        client.stop()
