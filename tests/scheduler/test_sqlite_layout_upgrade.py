"""An embedded (SQLite) queue file written by the earlier layout keeps working: the order check
reads a task's predecessor in ``tasks_group_ord`` (which replaced ``tasks_group_open``, whose
entries every lease and ack rewrote), and WaitForTasks reads the per-(user, cube) counts of
``open_counts``, counted afresh when a file is opened."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from services.scheduler.queue import Message, QueueLimits, SqliteTaskQueue, TaskState, Verdict, codec

pytestmark = pytest.mark.timeout(60)

# The schema as the earlier version created it (its tables and indexes, verbatim).
_EARLIER_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  item_id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  cube_id TEXT NOT NULL,
  label TEXT NOT NULL,
  grp TEXT NOT NULL,
  priority INTEGER NOT NULL,
  body TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  lease TEXT NOT NULL DEFAULT '',
  lease_until REAL NOT NULL DEFAULT 0,
  dead_seq INTEGER NOT NULL DEFAULT 0,
  ord INTEGER NOT NULL,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state, label, priority DESC, ord) WHERE state IN (1, 2);
CREATE INDEX IF NOT EXISTS tasks_group_open ON tasks(grp, ord, state) WHERE state IN (1, 2);
CREATE INDEX IF NOT EXISTS tasks_ord ON tasks(ord);
CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(dead_seq) WHERE state = 5;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(state, updated_at) WHERE state IN (3, 4, 5);
CREATE TABLE IF NOT EXISTS labels (label TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _m(item: str, user: str, cube: str, priority: int = 0) -> Message:
    return Message(
        user_id=user, cube_id=cube, label="add", content=item, item_id=item, priority=priority, timestamp=1.0
    )


def _earlier_file(path: Path) -> None:
    """A file as the earlier version left it: in group (u, c1): a done, b running (leased as
    "b/lease1", not run out), c and d pending; in (u, c2): e pending behind a dead-lettered x;
    in (v, c1): f pending, priority 5."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_EARLIER_SCHEMA)
    now = time.time()
    rows = [
        # item, user, cube, priority, state, attempts, lease, lease_until, dead_seq, ord
        ("a", "u", "c1", 0, 3, 1, "", 0, 0, 1),
        ("x", "u", "c2", 0, 5, 5, "", 0, 1, 2),
        ("b", "u", "c1", 0, 2, 1, "b/lease1", now + 600, 0, 3),
        ("e", "u", "c2", 0, 1, 0, "", 0, 0, 4),
        ("c", "u", "c1", 0, 1, 0, "", 0, 0, 5),
        ("f", "v", "c1", 5, 1, 0, "", 0, 0, 6),
        ("d", "u", "c1", 0, 1, 0, "", 0, 0, 7),
    ]
    for item, user, cube, prio, state, attempts, lease, until, dead, ord_ in rows:
        m = _m(item, user, cube, prio)
        db.execute(
            "INSERT INTO tasks(item_id, user_id, cube_id, label, grp, priority, body, state, attempts, lease,"
            " lease_until, dead_seq, ord, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item, user, cube, "add", m.group, prio, codec.encode(m), state, attempts, lease, until, dead, ord_, now),
        )
    db.execute("INSERT INTO counters(name, value) VALUES ('open', 5)")
    db.close()


def _indexes(path: Path) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        db.close()


def test_earlier_file_keeps_order_counts_and_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    _earlier_file(path)
    q = SqliteTaskQueue(path, QueueLimits(max_attempts=5))
    try:
        idx = _indexes(path)
        assert "tasks_group_ord" in idx and "tasks_group_open" not in idx
        # Counted afresh from the file's open tasks.
        assert q.unfinished_count("u") == 4 and q.unfinished_count("u", "c1") == 3
        assert q.unfinished_count("u", "c2") == 1 and q.unfinished_count("v") == 1
        assert q.has_unfinished("v", "c1") and not q.has_unfinished("v", "c2")
        assert q.get_task("a").state == TaskState.DONE

        # b (running) still holds its group: c waits; e is free behind the dead letter x.
        got = q.receive(["add"], 10)
        assert [d.message.item_id for d in got] == ["f", "e"]
        # The lease the earlier version gave b is answered as ever; c follows, then d.
        assert q.answer_many([Verdict("b/lease1")]) == []
        assert q.ack_many([d.delivery_id for d in got]) == []
        [c] = q.receive(["add"], 10)
        assert c.message.item_id == "c"
        assert q.nack(c.delivery_id, "boom") == TaskState.PENDING
        [c] = q.receive(["add"], 10)
        assert c.message.item_id == "c" and c.attempt == 2
        assert q.ack_many([c.delivery_id]) == []
        # x replayed goes behind the open ones of its group: here none are left.
        assert q.replay_dead_letters(["x"]) == 1
        got = q.receive(["add"], 10)
        assert [d.message.item_id for d in got] == ["d", "x"]
        assert q.unfinished_count("u") == 2
        assert q.ack_many([d.delivery_id for d in got]) == []
        assert q.unfinished_count("u") == 0 and not q.has_unfinished("u")
    finally:
        q.close()


def test_counts_are_kept_and_recounted_on_open(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    q = SqliteTaskQueue(path, QueueLimits(max_attempts=1))
    try:
        q.submit([_m("a", "u", "c1"), _m("b", "u", "c1"), _m("c", "u", "c2"), _m("d", "w", "c1")])
        assert (q.unfinished_count("u"), q.unfinished_count("u", "c1"), q.unfinished_count("w")) == (3, 2, 1)
        got = {d.message.item_id: d for d in q.receive(["add"], 10)}
        assert sorted(got) == ["a", "c", "d"]
        assert q.ack_many([got["a"].delivery_id]) == []
        assert q.nack(got["c"].delivery_id, "boom") == TaskState.DEAD_LETTERED  # max_attempts=1
        assert (q.unfinished_count("u"), q.unfinished_count("u", "c2")) == (1, 0)
        assert q.replay_dead_letters(["c"]) == 1
        assert q.unfinished_count("u", "c2") == 1
        counts = q.purge_tasks("w")
        assert counts.running == 1 and q.unfinished_count("w") == 0
        # A count at 0 is a row until the retention round deletes it.
        q.purge_expired()
        rows = dict(((u, c), n) for u, c, n in q._db.execute("SELECT user_id, cube_id, n FROM open_counts"))
        assert rows == {("u", "c1"): 1, ("u", "c2"): 1}
        # A count gone wrong (e.g. written by an earlier version, which did not keep it) is right again on open.
        q._db.execute("UPDATE open_counts SET n = 7")
    finally:
        q.close()
    q = SqliteTaskQueue(path, QueueLimits(max_attempts=1))
    try:
        assert (q.unfinished_count("u"), q.unfinished_count("u", "c1"), q.unfinished_count("w")) == (2, 1, 0)
    finally:
        q.close()


def test_finished_history_does_not_slow_or_break_the_order_check(tmp_path: Path) -> None:
    """The predecessor of a group's head is a finished task: the head is deliverable, the one
    behind it not, however many finished tasks the group has."""
    q = SqliteTaskQueue(tmp_path / "queue.sqlite3")
    try:
        for i in range(50):
            q.submit([_m(f"h{i}", "u", "c1")])
            [d] = q.receive(["add"], 5)
            assert q.ack_many([d.delivery_id]) == []
        q.submit([_m("n1", "u", "c1"), _m("n2", "u", "c1")])
        [d] = q.receive(["add"], 5)
        assert d.message.item_id == "n1" and q.receive(["add"], 5) == []
        assert q.release(d.delivery_id) is None
        [d] = q.receive(["add"], 5)
        assert d.message.item_id == "n1"
        assert q.ack_many([d.delivery_id]) == []
        assert [x.message.item_id for x in q.receive(["add"], 5)] == ["n2"]
    finally:
        q.close()
