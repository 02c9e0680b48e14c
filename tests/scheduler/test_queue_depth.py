"""Queue depth and dead letters, as the scheduler's gauges read them, on every queue backend."""

from __future__ import annotations

from services.scheduler.queue import Message, QueueLimits


def test_depth_counts_pending_and_running_per_label(open_queue) -> None:  # type: ignore[no-untyped-def]
    q = open_queue(QueueLimits(max_attempts=1))
    q.register_label("custom")
    depth = q.depth()
    assert depth["query"] == (0, 0) and depth["custom"] == (0, 0), "every known label, even when idle"
    assert q.dead_letter_count() == 0

    # Two groups for query (only a group's head is deliverable), one message for custom.
    q.submit([Message(user_id="u", cube_id=f"c{i % 2}", label="query", content=str(i)) for i in range(4)])
    q.submit([Message(user_id="u", cube_id="c", label="custom")])
    assert q.depth()["query"] == (4, 0) and q.depth()["custom"] == (1, 0)

    leased = q.receive(["query"], 10)
    assert len(leased) == 2
    assert q.depth()["query"] == (2, 2)
    q.ack(leased[0].delivery_id)
    q.nack(leased[1].delivery_id, "boom")  # max_attempts=1: dead-lettered
    assert q.depth()["query"] == (2, 0)
    assert q.dead_letter_count() == 1
    assert q.depth()["custom"] == (1, 0)
