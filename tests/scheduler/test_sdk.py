"""The Python SDK's scheduler client: submits, and handlers run by a local worker thread."""

from __future__ import annotations

import threading

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
