"""The task queue interface shared by the embedded (SQLite) and Redis Streams backends.

Semantics every backend keeps (checked by ``tests/scheduler/test_queue_conformance.py``):

- **Labels**: a message's label must be a built-in one (:data:`BUILTIN_LABELS`) or one
  registered with :meth:`TaskQueue.register_label` (a worker subscribing to a label
  registers it); anything else is INVALID_ARGUMENT. Registrations are durable.
- **At-least-once**: :meth:`TaskQueue.receive` leases messages for a visibility timeout;
  :meth:`TaskQueue.ack` finishes one, :meth:`TaskQueue.nack` records the error and makes it
  deliverable again, :meth:`TaskQueue.release` hands it back without a verdict (its worker
  went away). A lease that runs out is redelivered. Every delivery counts as an attempt;
  when a message has had ``max_attempts`` and fails (nack or timeout) once more it is
  dead-lettered: listed by :meth:`TaskQueue.list_dead_letters`, brought back by
  :meth:`TaskQueue.replay_dead_letters`.
- **Order per (user, cube, label)**: a message is delivered only when no earlier message
  of its group is pending or running, so one group's messages are handled one at a time
  in submission order (dead-lettered ones leave the group).
- **Priorities**: among deliverable messages, higher ``priority`` first, then submission order.
- **Bounded**: at most ``max_pending`` messages may be pending or running; a submit that
  would pass that is refused whole with RESOURCE_EXHAUSTED, nothing is dropped.
- **Task state**: pending, running, done, failed (nacked with ``retry=False``),
  dead_lettered; with attempts and the last error.
- **Retention**: a done task is kept ``task_retention_s`` after it finished, a failed or
  dead-lettered one ``dead_letter_retention_s`` (a replay makes it pending again: no longer
  subject to it); then it is purged, body and all: :meth:`TaskQueue.get_task` answers
  NotFound as for an id never submitted, and a resubmitted item id is a new task.
- **Purge**: :meth:`TaskQueue.purge_tasks` removes every task of a user (and cube), or of a
  cube, in any state; a verdict on a withdrawn delivery is refused as for a stale one.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, NoReturn

from shared.errors import InvalidArgument, NotFound

BUILTIN_LABELS = frozenset(
    {"query", "answer", "add", "mem_read", "mem_organize", "mem_update", "mem_archive", "pref_add"}
)
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ID_MAX = 256


class TaskState(enum.IntEnum):
    """Same numbers as ``memos.scheduler.v1.TaskState``."""

    PENDING = 1
    RUNNING = 2
    DONE = 3
    FAILED = 4
    DEAD_LETTERED = 5


TERMINAL_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.DEAD_LETTERED})


@dataclass(frozen=True)
class Message:
    """One unit of work, shaped like MemOS's ``ScheduleMessageItem``."""

    user_id: str
    cube_id: str
    label: str
    content: str = ""
    item_id: str = ""
    session_id: str = ""
    timestamp: float = 0.0
    trace_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    priority: int = 0

    @property
    def group(self) -> str:
        """The ordering group: messages of one group are handled in submission order."""
        return f"{len(self.user_id)}:{self.user_id}|{len(self.cube_id)}:{self.cube_id}|{self.label}"

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "cube_id": self.cube_id,
            "label": self.label,
            "content": self.content,
            "item_id": self.item_id,
            "session_id": self.session_id,
            "timestamp": self.timestamp,
            "trace_id": self.trace_id,
            "info": self.info,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Message:
        if d.keys() == _MESSAGE_FIELDS:
            # Every field given (what to_json writes): set them at once. The frozen dataclass's
            # __init__ sets them one object.__setattr__ at a time, several times slower, and this
            # runs for every message delivered.
            m = object.__new__(cls)
            m.__dict__.update(d)
            return m
        return cls(**d)


_MESSAGE_FIELDS = frozenset(f.name for f in fields(Message))


@dataclass(frozen=True)
class Task:
    """What is known of one submitted message."""

    item_id: str
    message: Message
    state: TaskState
    attempts: int
    last_error: str
    updated_at: float


class Delivery:
    """A leased message: ack or nack it by ``delivery_id`` before the lease runs out.

    ``body`` is the message as stored (:mod:`services.scheduler.queue.codec`): a worker stream
    sends it on as it is; :attr:`message` decodes it, only when asked."""

    __slots__ = ("delivery_id", "body", "attempt", "_message")

    def __init__(self, delivery_id: str, body: bytes, attempt: int) -> None:
        self.delivery_id = delivery_id
        self.body = body
        self.attempt = attempt
        self._message: Message | None = None

    @property
    def message(self) -> Message:
        if self._message is None:
            from services.scheduler.queue import codec  # codec builds on this module

            self._message = codec.decode(self.body)
        return self._message

    def __repr__(self) -> str:
        return f"Delivery({self.delivery_id!r}, attempt={self.attempt})"


class HeldDelivery(NamedTuple):
    """A message leased ahead (:meth:`TaskQueue.answer_and_receive_ahead_async`): the next of its
    group, to send once the delivery ``behind`` (its group's head, in flight) is acked, or to
    give back unsent (``unlease``) otherwise."""

    behind: str
    delivery: Delivery


class Verdict(NamedTuple):
    """A worker's answer to a delivery: an ack (``success``), or a nack with its error (a named
    tuple: one is made per message, and a frozen dataclass costs several times more to make)."""

    delivery_id: str
    success: bool = True
    error: str = ""
    retry: bool = True
    """On failure: False ends the task FAILED instead of redelivering it."""


@dataclass(frozen=True)
class QueueLimits:
    max_pending: int = 100_000
    """Messages pending or running at once; more is RESOURCE_EXHAUSTED."""
    max_attempts: int = 5
    """Deliveries before a failing message is dead-lettered."""
    visibility_timeout_s: float = 30.0
    """How long a delivered message may go without ack or nack before it is redelivered."""
    max_content_bytes: int = 1024 * 1024
    """Largest ``content`` (UTF-8 bytes) of one message."""
    max_batch: int = 10_000
    """Messages one submit may carry."""
    task_retention_s: float = 7 * 24 * 3600.0
    """How long a done task is kept after it finished."""
    dead_letter_retention_s: float = 30 * 24 * 3600.0
    """How long a failed or dead-lettered task is kept after it ended so."""


@dataclass
class PurgeCounts:
    """Tasks :meth:`TaskQueue.purge_tasks` removed, by the state they were in."""

    pending: int = 0
    running: int = 0
    dead_lettered: int = 0
    finished: int = 0
    """Done or failed."""

    def count(self, state: int) -> None:
        if state == TaskState.PENDING:
            self.pending += 1
        elif state == TaskState.RUNNING:
            self.running += 1
        elif state == TaskState.DEAD_LETTERED:
            self.dead_lettered += 1
        else:
            self.finished += 1


def new_delivery_id(item_id: str) -> str:
    return f"{item_id}/{os.urandom(8).hex()}"


def not_in_flight(delivery_id: str) -> NotFound:
    return NotFound(
        "no such delivery in flight (unknown, already answered, or its lease ran out)",
        reason="DELIVERY_NOT_FOUND",
        metadata={"delivery_id": delivery_id},
    )


def task_not_found(item_id: str) -> NotFound:
    return NotFound(
        "no such task: never submitted, or finished longer ago than the scheduler keeps tasks (then purged)",
        reason="TASK_NOT_FOUND",
        metadata={"item_id": item_id},
    )


def split_delivery_id(delivery_id: str) -> tuple[str, str]:
    item_id, sep, lease = delivery_id.rpartition("/")
    if not sep or not item_id or not lease:
        raise InvalidArgument("malformed delivery id", reason="BAD_DELIVERY_ID", metadata={"delivery_id": delivery_id})
    return item_id, lease


def check_label_name(label: str) -> None:
    if not _LABEL_RE.match(label):
        raise InvalidArgument(
            "labels are 1 to 64 characters of letters, digits, _ . : -",
            reason="BAD_LABEL",
            metadata={"field": "label", "label": label[:80]},
        )


def _refuse(m: Message, i: int, known: set[str], max_content: int) -> NoReturn:
    """Raises the reason ``m`` (the ``i``-th of its batch) cannot be submitted."""
    for name, value in (("user_id", m.user_id), ("cube_id", m.cube_id)):
        if not value:
            raise InvalidArgument(
                f"{name} is required", reason=f"MISSING_{name.upper()}", metadata={"field": name, "index": str(i)}
            )
        if len(value) > _ID_MAX:
            raise InvalidArgument(
                f"{name} is too long", reason="ID_TOO_LONG", metadata={"field": name, "index": str(i)}
            )
    if not m.label:
        raise InvalidArgument("label is required", reason="MISSING_LABEL", metadata={"field": "label", "index": str(i)})
    if m.label not in known:
        raise InvalidArgument(
            f"unknown label {m.label!r}: use a built-in label or register it (subscribe a worker to it)",
            reason="UNKNOWN_LABEL",
            metadata={"field": "label", "label": m.label[:80], "index": str(i)},
        )
    if len(m.content.encode()) > max_content:
        raise InvalidArgument(
            "content is too large",
            reason="CONTENT_TOO_LARGE",
            metadata={"field": "content", "limit": str(max_content), "index": str(i)},
        )
    raise InvalidArgument(
        "item_id must be at most 256 characters without '/'",
        reason="BAD_ITEM_ID",
        metadata={"field": "item_id", "index": str(i)},
    )


class TaskQueue(ABC):
    """A durable task queue. Methods block (I/O); async callers run them in threads, or call the
    ``*_async`` methods of the hot path."""

    def __init__(self, limits: QueueLimits | None = None) -> None:
        self.limits = limits or QueueLimits()

    # -- labels ---------------------------------------------------------------
    @abstractmethod
    def registered_labels(self) -> set[str]:
        """User-defined labels registered so far (built-ins not included)."""

    @abstractmethod
    def _store_label(self, label: str) -> None: ...

    def register_label(self, label: str) -> None:
        check_label_name(label)
        if label not in BUILTIN_LABELS and label not in self.registered_labels():
            self._store_label(label)

    def known_labels(self) -> set[str]:
        return set(BUILTIN_LABELS) | self.registered_labels()

    def _known_among(self, labels: set[str]) -> set[str]:
        """Known labels, to check ``labels`` against (backends may answer from what they saw
        before when all of ``labels`` are in it: a registration is never taken back)."""
        return self.known_labels()

    # -- validation -----------------------------------------------------------
    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        """Validates a batch and fills in item ids and timestamps."""
        if not messages:
            raise InvalidArgument("no messages to submit", reason="EMPTY_BATCH", metadata={"field": "messages"})
        if len(messages) > self.limits.max_batch:
            raise InvalidArgument(
                f"at most {self.limits.max_batch} messages per submit",
                reason="BATCH_TOO_LARGE",
                metadata={"field": "messages", "limit": str(self.limits.max_batch)},
            )
        known = self._known_among({m.label for m in messages})
        max_content = self.limits.max_content_bytes
        out: list[Message] = []
        seen: set[str] = set()
        now = time.time()
        for i, m in enumerate(messages):
            user, cube, label, content, item_id = m.user_id, m.cube_id, m.label, m.content, m.item_id
            # One test for the common case; the refusal, with its reason, is worked out apart.
            # (A character is at most 4 UTF-8 bytes: most contents need no encoding to be measured.)
            if not (
                user
                and cube
                and len(user) <= _ID_MAX
                and len(cube) <= _ID_MAX
                and label in known
                and (len(content) * 4 <= max_content or len(content.encode()) <= max_content)
                and (not item_id or (len(item_id) <= _ID_MAX and "/" not in item_id))
            ):
                _refuse(m, i, known, max_content)
            item_id = item_id or uuid.uuid4().hex
            if item_id in seen:
                raise InvalidArgument(
                    "item_id repeated in the batch",
                    reason="DUPLICATE_ITEM_ID",
                    metadata={"item_id": item_id, "index": str(i)},
                )
            seen.add(item_id)
            if item_id != m.item_id or not m.timestamp:
                # A copy with the id and time filled in, made as from_json makes one: the frozen
                # dataclass's constructor (or dataclasses.replace) costs several times more.
                m = Message.from_json({**m.__dict__, "item_id": item_id, "timestamp": m.timestamp or now})
            out.append(m)
        return out

    # -- operations -----------------------------------------------------------
    @abstractmethod
    def submit(self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None) -> list[str]:
        """Stores the batch (all or nothing); returns item ids. Resubmitting an item id is a no-op.

        ``bodies``: the messages' stored form (:func:`codec.encode`), one per message, when the
        caller has it already: the service passes each request's ``ScheduleMessage`` encoding as
        received rather than have it built again field by field (see :func:`codec.bodies_for`)."""

    @abstractmethod
    def receive(
        self, labels: Iterable[str], max_count: int, visibility_timeout_s: float | None = None
    ) -> list[Delivery]:
        """Leases up to ``max_count`` deliverable messages of ``labels`` (does not wait)."""

    @abstractmethod
    def ack(self, delivery_id: str) -> None:
        """Marks the delivery's message done. NotFound for an unknown, stale or finished delivery."""

    def ack_many(self, delivery_ids: Sequence[str]) -> list[str]:
        """Acks several deliveries; returns those that could not be acked (unknown, stale, finished),
        in the order given."""
        return self.answer_many([Verdict(d) for d in delivery_ids])

    def answer_many(self, verdicts: Sequence[Verdict]) -> list[str]:
        """Applies several acks and nacks, in the order given, each as :meth:`ack` or :meth:`nack`
        would; returns the delivery ids that could not be answered (unknown, stale, finished,
        malformed), in the order given.

        Backends override it to apply the batch in one transaction or round trip."""
        failed = []
        for v in verdicts:
            try:
                if v.success:
                    self.ack(v.delivery_id)
                else:
                    self.nack(v.delivery_id, v.error, v.retry)
            except (NotFound, InvalidArgument):
                failed.append(v.delivery_id)
        return failed

    def answer_and_receive(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        """:meth:`answer_many`, then :meth:`receive` (which sees the answers: an ack frees its
        group's next message at once). Returns what answer_many and receive return.

        A worker stream's whole exchange with the queue: backends override it to do both in one
        transaction or round trip."""
        failed = self.answer_many(verdicts) if verdicts else []
        return failed, self.receive(labels, max_count, visibility_timeout_s)

    # -- from an event loop ---------------------------------------------------
    # The service's hot path (every submit, every worker exchange). These run the blocking
    # methods in the loop's default executor; backends override them to save the two thread
    # hand-offs of each call: Redis with an asyncio client, SQLite by running the transaction on
    # the loop's thread while nobody else holds the queue.
    def submit_async(
        self, messages: Sequence[Message], bodies: Sequence[bytes] | None = None
    ) -> asyncio.Future[list[str]]:
        """:meth:`submit`, under way on the running event loop once this returns."""
        return in_executor(self.submit, messages, bodies)

    def answer_and_receive_async(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
    ) -> asyncio.Future[tuple[list[str], list[Delivery]]]:
        """:meth:`answer_and_receive`, under way on the running event loop once this returns (a
        caller that stops waiting still gets its outcome from the future)."""
        return in_executor(self.answer_and_receive, verdicts, labels, max_count, visibility_timeout_s)

    supports_lookahead = False
    """Whether :meth:`answer_and_receive_ahead_async` is available."""

    def answer_and_receive_ahead_async(
        self,
        verdicts: Sequence[Verdict],
        labels: Iterable[str],
        max_count: int,
        visibility_timeout_s: float | None = None,
        *,
        unlease: Sequence[str] = (),
    ) -> asyncio.Future[tuple[list[str], list[Delivery], list[HeldDelivery]]]:
        """:meth:`answer_and_receive_async` with lookahead: a worker stream's exchange that also
        leases, behind each group head it leases, the group's next message, unless a message of a
        higher priority waits (to send the moment the head is acked, without waiting for the queue
        in between; the message behind that one waits its turn in the queue's order). Returns the
        verdicts not applied, the deliveries, and the messages leased ahead.

        ``unlease``: messages leased ahead that go back unsent (their head was nacked, or they
        waited too long), first, without counting the attempt; they stay behind their heads.

        Only for backends with :attr:`supports_lookahead`."""
        raise NotImplementedError(f"{type(self).__name__} does not lease ahead")

    @abstractmethod
    def nack(self, delivery_id: str, error: str, retry: bool = True) -> TaskState:
        """Records a failure; the message is redelivered, dead-lettered, or (``retry=False``) failed."""

    @abstractmethod
    def release(self, delivery_id: str, delivered: bool = True) -> None:
        """Hands a leased message back for immediate redelivery (its worker went away).

        ``delivered=False`` (the message never reached a worker) does not count the attempt."""

    @abstractmethod
    def get_task(self, item_id: str) -> Task:
        """NotFound when no such item was submitted."""

    @abstractmethod
    def unfinished_count(self, user_id: str, cube_id: str = "") -> int:
        """Pending or running messages of a user (and cube; empty: every cube)."""

    def has_unfinished(self, user_id: str, cube_id: str = "") -> bool:
        """Whether :meth:`unfinished_count` is above 0; backends answer it without counting."""
        return self.unfinished_count(user_id, cube_id) > 0

    def unfinished_count_async(self, user_id: str, cube_id: str = "") -> asyncio.Future[int]:
        """:meth:`unfinished_count`, under way on the running event loop once this returns (what
        WaitForTasks asks every few milliseconds while a user's messages are worked on)."""
        return in_executor(self.unfinished_count, user_id, cube_id)

    @abstractmethod
    def depth(self) -> dict[str, tuple[int, int]]:
        """Open messages per known label (built-in or registered): (pending, running)."""

    @abstractmethod
    def dead_letter_count(self) -> int:
        """Dead-lettered messages, all labels."""

    @abstractmethod
    def list_dead_letters(self, label: str = "", page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        """Dead-lettered tasks, oldest first, and the next page's token ("" when none)."""

    @abstractmethod
    def replay_dead_letters(self, item_ids: Sequence[str]) -> int:
        """Makes dead-lettered messages pending again with fresh attempts; returns how many."""

    @abstractmethod
    def purge_tasks(self, user_id: str = "", cube_id: str = "") -> PurgeCounts:
        """Removes every task of ``user_id`` (only of ``cube_id`` if given), or with no user, every
        task of ``cube_id``, in any state: pending ones are never delivered, running ones are
        withdrawn (an ack, nack or release of their delivery is refused, NotFound), dead-lettered and
        finished ones are deleted. Tasks submitted while it runs may stay."""

    @abstractmethod
    def list_user_tasks(self, user_id: str, page_size: int = 100, page_token: str = "") -> tuple[list[Task], str]:
        """Every task of ``user_id`` in any state (pending, running, finished within the retention,
        dead-lettered), a page at a time, and the next page's token ("" when none). ``page_size`` is
        a hint: a page may be shorter (even empty) and not the last, or (Redis) somewhat longer.
        Tasks submitted or removed while a listing runs may be missed (Redis: or listed twice)."""

    def missing(self, item_ids: Sequence[str]) -> set[str]:
        """Those of ``item_ids`` that are not stored (never submitted, purged)."""
        out = set()
        for item_id in item_ids:
            try:
                self.get_task(item_id)
            except NotFound:
                out.add(item_id)
        return out

    @abstractmethod
    def close(self) -> None: ...

    async def aclose(self) -> None:
        """:meth:`close`, from the event loop that used the ``*_async`` methods."""
        self.close()

    def _vt(self, visibility_timeout_s: float | None) -> float:
        return self.limits.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s


def in_executor(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """``fn(*args)`` in the running loop's default executor, with the caller's context variables
    (request id, trace)."""
    return asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, fn, *args)
