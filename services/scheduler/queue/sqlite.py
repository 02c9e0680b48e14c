"""The embedded durable queue: one SQLite file (WAL), safe across restarts.

Every submitted message is a row; its state, attempts, lease and last error are
columns. A running row whose lease has passed is treated as failed by timeout the
next time anyone receives. Writes are transactions, so a crash loses nothing that
was acknowledged to a submitter.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from services.scheduler.queue.base import (
    Delivery,
    Message,
    QueueLimits,
    Task,
    TaskQueue,
    TaskState,
    new_delivery_id,
    split_delivery_id,
)
from shared.errors import InvalidArgument, NotFound, ResourceExhausted

P, R, D, F, X = (
    int(s) for s in (TaskState.PENDING, TaskState.RUNNING, TaskState.DONE, TaskState.FAILED, TaskState.DEAD_LETTERED)
)

# Repeated literally in queries on open tasks: SQLite uses the partial indexes below only when
# the query's WHERE names their condition; ``state=1`` alone makes it scan every task ever kept.
_OPEN = f"state IN ({P}, {R})"

_SCHEMA = f"""
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
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state, label, priority DESC, ord) WHERE state IN ({P}, {R});
CREATE INDEX IF NOT EXISTS tasks_group ON tasks(grp, ord) WHERE state IN ({P}, {R});
-- MAX(ord) on every submit: without it a scan of every task ever submitted.
CREATE INDEX IF NOT EXISTS tasks_ord ON tasks(ord);
CREATE INDEX IF NOT EXISTS tasks_user ON tasks(user_id, cube_id) WHERE state IN ({P}, {R});
CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(dead_seq) WHERE state = {X};
CREATE TABLE IF NOT EXISTS labels (label TEXT PRIMARY KEY);
"""


class SqliteTaskQueue(TaskQueue):
    def __init__(self, path: str | Path, limits: QueueLimits | None = None) -> None:
        super().__init__(limits)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._labels = {r[0] for r in self._db.execute("SELECT label FROM labels")}

    # -- labels ---------------------------------------------------------------
    def registered_labels(self) -> set[str]:
        return set(self._labels)

    def _store_label(self, label: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO labels(label) VALUES (?)", (label,))
            self._labels.add(label)

    # -- helpers --------------------------------------------------------------
    def _tx(self):  # type: ignore[no-untyped-def]
        return _Tx(self._db)

    @staticmethod
    def _task(row: sqlite3.Row | tuple) -> Task:
        item_id, body, state, attempts, last_error, updated_at = row
        return Task(item_id, Message.from_json(json.loads(body)), TaskState(state), attempts, last_error, updated_at)

    def _fail_locked(self, item_id: str, attempts: int, error: str, retry: bool, now: float) -> TaskState:
        if not retry:
            state = F
        elif attempts >= self.limits.max_attempts:
            state = X
        else:
            state = P
        dead_seq = 0
        if state == X:
            dead_seq = self._db.execute("SELECT COALESCE(MAX(dead_seq), 0) + 1 FROM tasks").fetchone()[0]
        self._db.execute(
            "UPDATE tasks SET state=?, last_error=?, lease='', lease_until=0, dead_seq=?, updated_at=? WHERE item_id=?",
            (state, error, dead_seq, now, item_id),
        )
        return TaskState(state)

    def _next_ord(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(ord), 0) + 1 FROM tasks").fetchone()[0]

    def _expire_locked(self, now: float) -> None:
        rows = self._db.execute(
            f"SELECT item_id, attempts FROM tasks WHERE state={R} AND {_OPEN} AND lease_until <= ?", (now,)
        ).fetchall()
        for item_id, attempts in rows:
            self._fail_locked(item_id, attempts, "visibility timeout: no ack or nack in time", True, now)

    # -- operations -----------------------------------------------------------
    def submit(self, messages: Sequence[Message]) -> list[str]:
        batch = self.prepare(messages)
        now = time.time()
        with self._lock, self._tx():
            open_count = self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE state IN ({P}, {R})").fetchone()[0]
            existing = {
                r[0]
                for r in self._db.execute(
                    f"SELECT item_id FROM tasks WHERE item_id IN ({','.join('?' * len(batch))})",
                    [m.item_id for m in batch],
                )
            }
            new = [m for m in batch if m.item_id not in existing]
            if open_count + len(new) > self.limits.max_pending:
                raise ResourceExhausted(
                    "the queue is full; retry later",
                    reason="QUEUE_FULL",
                    metadata={"limit": str(self.limits.max_pending), "pending": str(open_count)},
                    retriable=True,
                )
            base = self._next_ord()
            self._db.executemany(
                "INSERT INTO tasks(item_id, user_id, cube_id, label, grp, priority, body, state, ord, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.item_id,
                        m.user_id,
                        m.cube_id,
                        m.label,
                        m.group,
                        m.priority,
                        json.dumps(m.to_json()),
                        P,
                        base + i,
                        now,
                    )
                    for i, m in enumerate(new)
                ],
            )
        return [m.item_id for m in batch]

    def receive(
        self, labels: Iterable[str], max_count: int, visibility_timeout_s: float | None = None
    ) -> list[Delivery]:
        labels = list(dict.fromkeys(labels))
        if not labels or max_count <= 0:
            return []
        vt = self._vt(visibility_timeout_s)
        now = time.time()
        out: list[Delivery] = []
        with self._lock, self._tx():
            self._expire_locked(now)
            rows = self._db.execute(
                f"SELECT t.item_id, t.body, t.attempts FROM tasks t WHERE t.state={P} AND t.{_OPEN}"
                f" AND t.label IN ({','.join('?' * len(labels))})"
                f" AND NOT EXISTS (SELECT 1 FROM tasks u WHERE u.grp=t.grp AND u.ord<t.ord AND u.state IN ({P}, {R}))"
                " ORDER BY t.priority DESC, t.ord LIMIT ?",
                [*labels, max_count],
            ).fetchall()
            for item_id, body, attempts in rows:
                delivery_id = new_delivery_id(item_id)
                self._db.execute(
                    f"UPDATE tasks SET state={R}, attempts=attempts+1, lease=?, lease_until=?, updated_at=?"
                    " WHERE item_id=?",
                    (delivery_id, now + vt, now, item_id),
                )
                out.append(Delivery(delivery_id, Message.from_json(json.loads(body)), attempts + 1))
        return out

    def _leased(self, delivery_id: str) -> tuple[str, int]:
        item_id, _ = split_delivery_id(delivery_id)
        row = self._db.execute(
            f"SELECT attempts FROM tasks WHERE item_id=? AND state={R} AND lease=?", (item_id, delivery_id)
        ).fetchone()
        if row is None:
            raise NotFound(
                "no such delivery in flight (unknown, already answered, or its lease ran out)",
                reason="DELIVERY_NOT_FOUND",
                metadata={"delivery_id": delivery_id},
            )
        return item_id, row[0]

    def ack(self, delivery_id: str) -> None:
        with self._lock, self._tx():
            item_id, _ = self._leased(delivery_id)
            self._db.execute(
                f"UPDATE tasks SET state={D}, lease='', lease_until=0, updated_at=? WHERE item_id=?",
                (time.time(), item_id),
            )

    def ack_many(self, delivery_ids: Sequence[str]) -> list[str]:
        failed = []
        now = time.time()
        with self._lock, self._tx():
            for delivery_id in delivery_ids:
                try:
                    item_id, _ = self._leased(delivery_id)
                except (NotFound, InvalidArgument):
                    failed.append(delivery_id)
                    continue
                self._db.execute(
                    f"UPDATE tasks SET state={D}, lease='', lease_until=0, updated_at=? WHERE item_id=?",
                    (now, item_id),
                )
        return failed

    def nack(self, delivery_id: str, error: str, retry: bool = True) -> TaskState:
        with self._lock, self._tx():
            item_id, attempts = self._leased(delivery_id)
            return self._fail_locked(item_id, attempts, error, retry, time.time())

    def release(self, delivery_id: str, delivered: bool = True) -> None:
        with self._lock, self._tx():
            item_id, _ = self._leased(delivery_id)
            self._db.execute(
                f"UPDATE tasks SET state={P}, lease='', lease_until=0, attempts=attempts-?, updated_at=?"
                " WHERE item_id=?",
                (0 if delivered else 1, time.time(), item_id),
            )

    def get_task(self, item_id: str) -> Task:
        with self._lock:
            self._expire_locked(time.time())
            row = self._db.execute(
                "SELECT item_id, body, state, attempts, last_error, updated_at FROM tasks WHERE item_id=?", (item_id,)
            ).fetchone()
        if row is None:
            raise NotFound("no such task", reason="TASK_NOT_FOUND", metadata={"item_id": item_id})
        return self._task(row)

    def unfinished_count(self, user_id: str, cube_id: str = "") -> int:
        sql = f"SELECT COUNT(*) FROM tasks WHERE state IN ({P}, {R}) AND user_id=?"
        args = [user_id]
        if cube_id:
            sql += " AND cube_id=?"
            args.append(cube_id)
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def depth(self) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = {label: [0, 0] for label in self.known_labels()}
        with self._lock:
            rows = self._db.execute(f"SELECT label, state, COUNT(*) FROM tasks WHERE {_OPEN} GROUP BY label, state")
            for label, state, n in rows.fetchall():
                out.setdefault(label, [0, 0])[0 if state == P else 1] = int(n)
        return {label: (p, r) for label, (p, r) in out.items()}

    def dead_letter_count(self) -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE state = {X}").fetchone()[0])

    def list_dead_letters(self, label: str = "", page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        page_size = max(1, min(page_size or 100, 1000))
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument("bad page token", reason="BAD_PAGE_TOKEN", metadata={"field": "page_token"}) from None
        sql = (
            "SELECT item_id, body, state, attempts, last_error, updated_at, dead_seq FROM tasks"
            f" WHERE state={X} AND dead_seq > ?"
        )
        args: list = [after]
        if label:
            sql += " AND label=?"
            args.append(label)
        sql += " ORDER BY dead_seq LIMIT ?"
        args.append(page_size + 1)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = str(rows[-1][6]) if more and rows else ""
        return [self._task(r[:6]) for r in rows], token

    def replay_dead_letters(self, item_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return 0
        with self._lock, self._tx():
            cur = self._db.execute(
                f"SELECT item_id FROM tasks WHERE state={X} AND item_id IN ({','.join('?' * len(ids))}) ORDER BY dead_seq",
                ids,
            ).fetchall()
            base = self._next_ord()
            now = time.time()
            # A replayed message goes behind its group's open messages.
            for i, (item_id,) in enumerate(cur):
                self._db.execute(
                    f"UPDATE tasks SET state={P}, attempts=0, dead_seq=0, ord=?, updated_at=? WHERE item_id=?",
                    (base + i, now, item_id),
                )
            return len(cur)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
