"""The embedded durable queue: one SQLite file (WAL), safe across restarts.

Every submitted message is a row; its state, attempts, lease and last error are
columns. A running row whose lease has passed is treated as failed by timeout the
next time anyone receives. Writes are transactions, so a crash loses nothing that
was acknowledged to a submitter.

A worker stream's exchange (the verdicts that arrived, then the next deliveries) is one
transaction (:meth:`SqliteTaskQueue.answer_and_receive`), whatever the batch size.

Retention: the checkpointing thread also deletes finished tasks past their retention (done:
``task_retention_s``; failed and dead-lettered: ``dead_letter_retention_s``) in batches of
:data:`_PURGE_BATCH` rows, each its own short transaction, found through the partial index
``tasks_finished`` (so a round that finds nothing reads nothing). Deleted rows' pages are
reused by new ones: the file stops growing once submissions and purges balance.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.scheduler.queue import codec
from services.scheduler.queue.base import (
    Delivery,
    Message,
    PurgeCounts,
    QueueLimits,
    Task,
    TaskQueue,
    TaskState,
    Verdict,
    in_executor,
    new_delivery_id,
    not_in_flight,
    split_delivery_id,
    task_not_found,
)
from shared.errors import InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)
T = TypeVar("T")

P, R, D, F, X = (
    int(s) for s in (TaskState.PENDING, TaskState.RUNNING, TaskState.DONE, TaskState.FAILED, TaskState.DEAD_LETTERED)
)

# Repeated literally in queries on open tasks: SQLite uses the partial indexes below only when
# the query's WHERE names their condition; ``state=1`` alone makes it scan every task ever kept.
_OPEN = f"state IN ({P}, {R})"

# Most ids bound in one statement (SQLite allows 32766 variables).
_CHUNK = 500
# The checkpointing thread's period, and the WAL size (pages) at which a commit checkpoints itself.
# Under continuous writes a background checkpoint seldom catches the last commit, so the WAL is
# only restarted at the backstop: the WAL file may reach 64 MiB, and only then is a commit delayed.
_CHECKPOINT_EVERY_S = 0.2
_BACKSTOP_CHECKPOINT_PAGES = 16384
# Retention: rows deleted per transaction (the lock is let go between them), and the longest
# time between two purge rounds (a tenth of the shortest retention when that is less).
_PURGE_BATCH = 500
_PURGE_EVERY_MAX_S = 60.0
# PurgeTasks reads the table in ranges of this many rows, one transaction each.
_PURGE_SCAN = 5000
_FINISHED = f"state IN ({D}, {F}, {X})"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  item_id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  cube_id TEXT NOT NULL,
  label TEXT NOT NULL,
  grp TEXT NOT NULL,
  priority INTEGER NOT NULL,
  body TEXT NOT NULL,  -- a BLOB: the ScheduleMessage encoding (codec); JSON text from earlier versions
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
-- A group's tasks in submission order, finished ones too: the order check of a receive reads a
-- task's predecessor in it. Its entries never change with a task's state, so a lease or an ack
-- writes nothing here (tasks_group_open, its predecessor, had state in it: every lease and ack
-- rewrote an entry of every group it touched, most of the pages a worker exchange wrote).
CREATE INDEX IF NOT EXISTS tasks_group_ord ON tasks(grp, ord);
DROP INDEX IF EXISTS tasks_group_open;
DROP INDEX IF EXISTS tasks_group;
-- MAX(ord) on every submit: without it a scan of every task ever submitted.
CREATE INDEX IF NOT EXISTS tasks_ord ON tasks(ord);
DROP INDEX IF EXISTS tasks_user;
CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(dead_seq) WHERE state = {X};
-- Finished tasks by when they finished: what retention purges.
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(state, updated_at) WHERE state IN ({D}, {F}, {X});
CREATE TABLE IF NOT EXISTS labels (label TEXT PRIMARY KEY);
-- "open": the tasks pending or running (the bound of a submit), kept by every transaction that
-- changes it, and counted afresh whenever the queue is opened.
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Open tasks per (user, cube), for WaitForTasks: kept with "open", counted afresh on open too
-- (so a file last written by an earlier version, which did not keep it, is right from the start).
-- Rows that reach 0 are deleted by the retention rounds.
CREATE TABLE IF NOT EXISTS open_counts (
  user_id TEXT NOT NULL,
  cube_id TEXT NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (user_id, cube_id)
) WITHOUT ROWID;
"""


class SqliteTaskQueue(TaskQueue):
    def __init__(self, path: str | Path, limits: QueueLimits | None = None) -> None:
        super().__init__(limits)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Reentrant: the event loop's calls take it first, without waiting (see _from_loop).
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        # WAL with synchronous=NORMAL: a commit is in the WAL file (the OS's page cache) when
        # COMMIT returns, and only checkpoints fsync. That is durable against a crash or kill -9 of
        # this process, which is what a submitter's acknowledgement promises here; a power loss or
        # kernel crash may roll back the last commits (synchronous=FULL would fsync each one, a
        # disk flush per submit, ack and receive).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints (the WAL copied into the database file, with its fsyncs) run in a thread of
        # their own: left to the commits, every thousandth page written stalled one commit, and
        # every call waiting on the lock, for tens of milliseconds. This is only a backstop.
        self._db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_CHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute(
                f"INSERT OR REPLACE INTO counters(name, value) SELECT 'open', COUNT(*) FROM tasks WHERE {_OPEN}"
            )
            self._db.execute("DELETE FROM open_counts")
            self._db.execute(
                "INSERT INTO open_counts(user_id, cube_id, n)"
                f" SELECT user_id, cube_id, COUNT(*) FROM tasks WHERE {_OPEN} GROUP BY user_id, cube_id"
            )
        self._labels = {r[0] for r in self._db.execute("SELECT label FROM labels")}
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        db = sqlite3.connect(str(self.path), isolation_level=None)
        shortest = min(self.limits.task_retention_s, self.limits.dead_letter_retention_s)
        purge_every = min(_PURGE_EVERY_MAX_S, max(_CHECKPOINT_EVERY_S, shortest / 10))
        next_purge = time.monotonic() + purge_every
        try:
            while not self._closed.wait(_CHECKPOINT_EVERY_S):
                if time.monotonic() >= next_purge:
                    try:
                        self.purge_expired()
                    except sqlite3.Error:
                        log.warning("purging expired tasks failed; retrying next round", exc_info=True)
                    next_purge = time.monotonic() + purge_every
                try:
                    # PASSIVE: copies what no reader still needs, never waits for or blocks a writer.
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # e.g. busy; the next round (or the backstop) catches up
        finally:
            db.close()

    def purge_expired(self, now: float | None = None) -> int:
        """Deletes the finished tasks past their retention, :data:`_PURGE_BATCH` rows per
        transaction; returns how many. Run by the checkpointing thread."""
        now = time.time() if now is None else now
        done_before = now - self.limits.task_retention_s
        dead_before = now - self.limits.dead_letter_retention_s
        total = 0
        for state, before in ((D, done_before), (F, dead_before), (X, dead_before)):
            while not self._closed.is_set():
                with self._lock, self._tx():
                    # _FINISHED named literally: the partial index tasks_finished serves the query.
                    n = self._db.execute(
                        f"DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE {_FINISHED} AND state = ?"
                        f" AND updated_at < ? LIMIT {_PURGE_BATCH})",
                        (state, before),
                    ).rowcount
                total += n
                if n < _PURGE_BATCH:
                    break
        if not self._closed.is_set():
            with self._lock, self._tx():
                self._db.execute("DELETE FROM open_counts WHERE n <= 0")
        return total

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
        return Task(item_id, codec.decode(body), TaskState(state), attempts, last_error, updated_at)

    def _count_open(self, changes: dict[tuple[str, str], int]) -> None:
        """Adds ``changes`` (open tasks gained, or lost when below 0, per (user, cube)) to the counts."""
        delta = sum(changes.values())
        if delta:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'open'", (delta,))
        self._db.executemany(
            "INSERT INTO open_counts(user_id, cube_id, n) VALUES (?, ?, ?)"
            " ON CONFLICT(user_id, cube_id) DO UPDATE SET n = n + excluded.n",
            [(user, cube, n) for (user, cube), n in changes.items() if n],
        )

    def _fail_locked(
        self, item_id: str, user_cube: tuple[str, str], attempts: int, error: str, retry: bool, now: float
    ) -> TaskState:
        if not retry:
            state = F
        elif attempts >= self.limits.max_attempts:
            state = X
        else:
            state = P
        dead_seq = 0
        if state == X:
            # Only dead-lettered tasks have a dead_seq (replay resets it): the partial index has them all.
            dead_seq = self._db.execute(
                f"SELECT COALESCE(MAX(dead_seq), 0) + 1 FROM tasks WHERE state = {X}"
            ).fetchone()[0]
        self._db.execute(
            "UPDATE tasks SET state=?, last_error=?, lease='', lease_until=0, dead_seq=?, updated_at=? WHERE item_id=?",
            (state, error, dead_seq, now, item_id),
        )
        if state != P:
            self._count_open({user_cube: -1})
        return TaskState(state)

    def _next_ord(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(ord), 0) + 1 FROM tasks").fetchone()[0]

    def _expire_locked(self, now: float) -> None:
        rows = self._db.execute(
            f"SELECT item_id, user_id, cube_id, attempts FROM tasks WHERE state={R} AND {_OPEN} AND lease_until <= ?",
            (now,),
        ).fetchall()
        for item_id, user, cube, attempts in rows:
            self._fail_locked(item_id, (user, cube), attempts, "visibility timeout: no ack or nack in time", True, now)

    # -- operations -----------------------------------------------------------
    def submit(self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None) -> list[str]:
        batch = self.prepare(messages)
        encoded = codec.bodies_for(messages, batch, bodies)
        now = time.time()
        with self._lock, self._tx():
            open_count = self._db.execute("SELECT value FROM counters WHERE name = 'open'").fetchone()[0]
            existing = {
                r[0]
                for r in self._db.execute(
                    f"SELECT item_id FROM tasks WHERE item_id IN ({','.join('?' * len(batch))})",
                    [m.item_id for m in batch],
                )
            }
            new = [(m, body) for m, body in zip(batch, encoded, strict=True) if m.item_id not in existing]
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
                        body,
                        P,
                        base + i,
                        now,
                    )
                    for i, (m, body) in enumerate(new)
                ],
            )
            added: dict[tuple[str, str], int] = {}
            for m, _ in new:
                key = (m.user_id, m.cube_id)
                added[key] = added.get(key, 0) + 1
            self._count_open(added)
        return [m.item_id for m in batch]

    def receive(
        self, labels: Iterable[str], max_count: int, visibility_timeout_s: float | None = None
    ) -> list[Delivery]:
        labels = list(dict.fromkeys(labels))
        if not labels or max_count <= 0:
            return []
        with self._lock, self._tx():
            return self._receive_locked(labels, max_count, self._vt(visibility_timeout_s), time.time())

    def _receive_locked(self, labels: list[str], max_count: int, vt: float, now: float) -> list[Delivery]:
        self._expire_locked(now)
        rows = self._db.execute(
            f"SELECT t.seq, t.item_id, t.body, t.attempts FROM tasks t WHERE t.state={P} AND t.{_OPEN}"
            f" AND t.label IN ({','.join('?' * len(labels))})"
            # The order check: the task just before this one in its group (tasks_group_ord) is
            # finished, or there is none. A task finishes only as its group's first open one, and a
            # replayed one goes to the end: a group's finished tasks all come before its open ones.
            f" AND COALESCE((SELECT u.state FROM tasks u WHERE u.grp=t.grp AND u.ord<t.ord"
            f" ORDER BY u.ord DESC LIMIT 1), {D}) NOT IN ({P}, {R})"
            " ORDER BY t.priority DESC, t.ord LIMIT ?",
            [*labels, max_count],
        ).fetchall()
        if not rows:
            return []
        # One lease suffix for the batch: a delivery id is still unique (item id and suffix), and
        # the batch is leased in one statement.
        suffix = new_delivery_id("").lstrip("/")
        self._db.execute(
            f"UPDATE tasks SET state={R}, attempts=attempts+1, lease=item_id || '/' || ?, lease_until=?, updated_at=?"
            f" WHERE seq IN ({','.join('?' * len(rows))})",
            [suffix, now + vt, now, *(r[0] for r in rows)],
        )
        # A body stored by an earlier version is JSON (TEXT): what codec.normalize converts.
        return [
            Delivery(f"{item_id}/{suffix}", body if type(body) is bytes else codec.normalize(body), attempts + 1)
            for _, item_id, body, attempts in rows
        ]

    def _leased(self, delivery_id: str) -> tuple[str, tuple[str, str], int]:
        """The item id, (user, cube) and attempts of the task leased as ``delivery_id``."""
        item_id, _ = split_delivery_id(delivery_id)
        row = self._db.execute(
            f"SELECT user_id, cube_id, attempts FROM tasks WHERE item_id=? AND state={R} AND lease=?",
            (item_id, delivery_id),
        ).fetchone()
        if row is None:
            raise not_in_flight(delivery_id)
        return item_id, (row[0], row[1]), row[2]

    def ack(self, delivery_id: str) -> None:
        split_delivery_id(delivery_id)  # InvalidArgument when malformed
        with self._lock, self._tx():
            if self._answer_locked([Verdict(delivery_id)], time.time()):
                raise not_in_flight(delivery_id)

    def _answer_locked(self, verdicts: Sequence[Verdict], now: float) -> list[str]:
        bad: set[int] = set()  # positions in verdicts
        acks: dict[str, tuple[str, int]] = {}  # item id -> (delivery id, position)
        others: list[tuple[int, str, Verdict]] = []  # nacks, and acks of an item acked earlier in the batch
        seen: set[str] = set()
        for i, v in enumerate(verdicts):
            try:
                item_id, _ = split_delivery_id(v.delivery_id)
            except InvalidArgument:
                bad.add(i)
                continue
            if v.delivery_id in seen:  # answered earlier in this batch
                bad.add(i)
                continue
            seen.add(v.delivery_id)
            if v.success and item_id not in acks:
                acks[item_id] = (v.delivery_id, i)
            else:
                others.append((i, item_id, v))
        items = list(acks)
        for k in range(0, len(items), _CHUNK):
            # One statement per chunk of acks: the lease check is in its WHERE, RETURNING names
            # the items whose lease it was.
            chunk = items[k : k + _CHUNK]
            marks = ",".join("?" * len(chunk))
            done = set()
            closed: dict[tuple[str, str], int] = {}
            for item_id, user, cube in self._db.execute(
                f"UPDATE tasks SET state={D}, lease='', lease_until=0, updated_at=?"
                f" WHERE item_id IN ({marks}) AND state={R} AND lease IN ({marks}) RETURNING item_id, user_id, cube_id",
                [now, *chunk, *(acks[item][0] for item in chunk)],
            ):
                done.add(item_id)
                closed[user, cube] = closed.get((user, cube), 0) - 1
            bad.update(acks[item][1] for item in chunk if item not in done)
            self._count_open(closed)
        for i, item_id, v in others:
            try:
                _, user_cube, attempts = self._leased(v.delivery_id)
            except NotFound:
                bad.add(i)
                continue
            if v.success:
                self._db.execute(
                    f"UPDATE tasks SET state={D}, lease='', lease_until=0, updated_at=? WHERE item_id=?",
                    (now, item_id),
                )
                self._count_open({user_cube: -1})
            else:
                self._fail_locked(item_id, user_cube, attempts, v.error, v.retry, now)
        return [v.delivery_id for i, v in enumerate(verdicts) if i in bad]

    def answer_many(self, verdicts: Sequence[Verdict]) -> list[str]:
        if not verdicts:
            return []
        with self._lock, self._tx():
            return self._answer_locked(verdicts, time.time())

    def answer_and_receive(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        labels = list(dict.fromkeys(labels))
        receiving = bool(labels) and max_count > 0
        if not verdicts and not receiving:
            return [], []
        now = time.time()
        with self._lock, self._tx():
            failed = self._answer_locked(verdicts, now) if verdicts else []
            out = self._receive_locked(labels, max_count, self._vt(visibility_timeout_s), now) if receiving else []
        return failed, out

    # -- from an event loop ---------------------------------------------------
    def _from_loop(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on the event loop's own thread when the queue is free, else in the
        executor. A submit or a worker exchange is one short transaction (~0.5 ms for 32
        messages); running it on the loop saves the two thread hand-offs of an executor call and
        the GIL's back and forth between the threads (bench_scheduler: 0.45-0.51 -> 0.54-0.58 of
        raw). While another thread holds the queue (a purge, a retention round) the call waits
        in the executor, never on the loop."""
        if not self._lock.acquire(blocking=False):
            return in_executor(fn, *args)
        done = asyncio.get_running_loop().create_future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the caller's to await
            done.set_exception(exc)
        finally:
            self._lock.release()
        return done

    def submit_async(
        self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None
    ) -> asyncio.Future[list[str]]:
        return self._from_loop(self.submit, messages, bodies)

    def answer_and_receive_async(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> asyncio.Future[tuple[list[str], list[Delivery]]]:
        return self._from_loop(self.answer_and_receive, verdicts, labels, max_count, visibility_timeout_s)

    def nack(self, delivery_id: str, error: str, retry: bool = True) -> TaskState:
        with self._lock, self._tx():
            item_id, user_cube, attempts = self._leased(delivery_id)
            return self._fail_locked(item_id, user_cube, attempts, error, retry, time.time())

    def release(self, delivery_id: str, delivered: bool = True) -> None:
        with self._lock, self._tx():
            item_id, _, _ = self._leased(delivery_id)
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
            raise task_not_found(item_id)
        return self._task(row)

    def unfinished_count(self, user_id: str, cube_id: str = "") -> int:
        with self._lock:
            if cube_id:
                row = self._db.execute(
                    "SELECT n FROM open_counts WHERE user_id = ? AND cube_id = ?", (user_id, cube_id)
                ).fetchone()
                return max(row[0], 0) if row else 0
            return int(
                self._db.execute(
                    "SELECT COALESCE(SUM(n), 0) FROM open_counts WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
            )

    def has_unfinished(self, user_id: str, cube_id: str = "") -> bool:
        return self.unfinished_count(user_id, cube_id) > 0

    def unfinished_count_async(self, user_id: str, cube_id: str = "") -> asyncio.Future[int]:
        return self._from_loop(self.unfinished_count, user_id, cube_id)

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
                f"SELECT item_id, user_id, cube_id FROM tasks WHERE state={X} AND item_id IN ({','.join('?' * len(ids))})"
                " ORDER BY dead_seq",
                ids,
            ).fetchall()
            base = self._next_ord()
            now = time.time()
            added: dict[tuple[str, str], int] = {}
            # A replayed message goes behind its group's open messages.
            for i, (item_id, user, cube) in enumerate(cur):
                self._db.execute(
                    f"UPDATE tasks SET state={P}, attempts=0, dead_seq=0, ord=?, updated_at=? WHERE item_id=?",
                    (base + i, now, item_id),
                )
                added[user, cube] = added.get((user, cube), 0) + 1
            self._count_open(added)
            return len(cur)

    def purge_tasks(self, user_id: str = "", cube_id: str = "") -> PurgeCounts:
        if not user_id and not cube_id:
            raise InvalidArgument("user_id or cube_id is required", reason="MISSING_SELECTOR")
        where, args = [], []
        if user_id:
            where.append("user_id = ?")
            args.append(user_id)
        if cube_id:
            where.append("cube_id = ?")
            args.append(cube_id)
        cond = " AND ".join(where)
        counts = PurgeCounts()
        with self._lock:
            top = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0]
        after = 0
        # No index leads to a user's or a cube's tasks in every state: the table is read in ranges
        # of rows, each range one short transaction (the queue keeps serving between them).
        while after < top:
            with self._lock, self._tx():
                end = self._db.execute(
                    f"SELECT MAX(seq) FROM (SELECT seq FROM tasks WHERE seq > ? ORDER BY seq LIMIT {_PURGE_SCAN})",
                    (after,),
                ).fetchone()[0]
                if end is None:
                    break
                end = min(end, top)
                rows = self._db.execute(
                    f"SELECT seq, state, user_id, cube_id FROM tasks WHERE seq > ? AND seq <= ? AND {cond}",
                    (after, end, *args),
                ).fetchall()
                for k in range(0, len(rows), _CHUNK):
                    chunk = rows[k : k + _CHUNK]
                    self._db.execute(
                        f"DELETE FROM tasks WHERE seq IN ({','.join('?' * len(chunk))})", [r[0] for r in chunk]
                    )
                closed: dict[tuple[str, str], int] = {}
                for _, state, user, cube in rows:
                    counts.count(state)
                    if state in (P, R):
                        closed[user, cube] = closed.get((user, cube), 0) - 1
                self._count_open(closed)
            after = end
        return counts

    def list_user_tasks(self, user_id: str, page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        if not user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        page_size = max(1, min(page_size or 100, 1000))
        try:
            after = int(page_token) if page_token else 0
        except ValueError:
            raise InvalidArgument("bad page token", reason="BAD_PAGE_TOKEN", metadata={"field": "page_token"}) from None
        found: list[Task] = []
        # No index leads to a user's tasks in every state (as for purge_tasks): the table is read in
        # ranges of rows, the lock let go between them, so a listing never stalls the queue.
        while True:
            with self._lock:
                self._expire_locked(time.time())
                end = self._db.execute(
                    f"SELECT MAX(seq) FROM (SELECT seq FROM tasks WHERE seq > ? ORDER BY seq LIMIT {_PURGE_SCAN})",
                    (after,),
                ).fetchone()[0]
                if end is None:
                    return found, ""
                want = page_size - len(found)
                rows = self._db.execute(
                    "SELECT item_id, body, state, attempts, last_error, updated_at, seq FROM tasks"
                    " WHERE seq > ? AND seq <= ? AND user_id = ? ORDER BY seq LIMIT ?",
                    (after, end, user_id, want),
                ).fetchall()
            found.extend(self._task(r[:6]) for r in rows)
            if len(rows) == want:
                return found, str(rows[-1][6])
            after = end

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join(10)
        with self._lock:
            self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
