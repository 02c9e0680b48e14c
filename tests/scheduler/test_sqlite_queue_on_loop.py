"""The SQLite queue answers the service's hot path (submits, worker exchanges) on the event loop's
own thread, but never makes the loop wait for another thread's transaction."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from services.scheduler.queue import Message, SqliteTaskQueue, TaskState


def test_a_busy_queue_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    q = SqliteTaskQueue(tmp_path / "q.sqlite3")
    held, release = threading.Event(), threading.Event()

    def long_transaction() -> None:  # what a purge or a retention round does
        with q._lock:
            held.set()
            release.wait(10)

    async def scenario() -> None:
        # Free: done by the time the call returns (on the loop, no thread hop).
        first = q.submit_async([Message(user_id="u", cube_id="c", label="add", item_id="a")])
        assert first.done() and first.result() == ["a"]
        other = threading.Thread(target=long_transaction)
        other.start()
        assert held.wait(10)
        busy = q.submit_async([Message(user_id="u", cube_id="c", label="add", item_id="b")])
        exchange = q.answer_and_receive_async([], ["add"], 5)
        # The loop goes on while the other thread holds the queue.
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5 and not busy.done() and not exchange.done()
        release.set()
        assert await busy == ["b"]
        _, got = await exchange
        assert [d.message.item_id for d in got] in (["a"], [])  # the exchange may run first or second
        other.join(10)

    try:
        asyncio.run(scenario())
        assert q.get_task("b").state == TaskState.PENDING
    finally:
        q.close()
