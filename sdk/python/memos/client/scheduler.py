"""Client of the scheduler service, and local workers for its labels.

    from memos.client.scheduler import SchedulerClient
    sched = SchedulerClient("127.0.0.1:50055")
    sched.register_handlers({"mem_update": lambda m: print(m.content)})
    sched.submit_messages([{"user_id": "alice", "cube_id": "alice_cube", "label": "mem_update", "content": "hi"}])
    sched.wait_for_tasks("alice")
    sched.close()

:meth:`SchedulerClient.register_handlers` runs a worker thread over the scheduler's
Subscribe stream: each delivered message is passed to the handler of its label; a
handler that returns acks it, one that raises nacks it with the traceback (the
scheduler redelivers it until it is dead-lettered), one still running after the
scheduler's visibility timeout is abandoned (see :class:`Worker`). A handler may run more than once
for one message (at-least-once): make it idempotent. If the stream breaks, the worker
reconnects, and whatever it held is redelivered.

The worker asks for batch mode: the scheduler sends up to ``max_in_flight`` deliveries
per response, and the worker answers them in batches too (when a response's deliveries
are handled, when half its credit is answered, or when a verdict has waited
:data:`ACK_FLUSH_S`, whichever comes first). A scheduler from before batch mode sends one
delivery per response; the worker then answers each at once, in a request of its own, as
such a scheduler expects. If the stream breaks in the middle of a response, the rest of
its deliveries are left to be redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from shared.channels import blocking_channel, with_service_token
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

log = logging.getLogger(__name__)

TASK_STATES = {1: "pending", 2: "running", 3: "done", 4: "failed", 5: "dead_lettered"}
ACK_FLUSH_S = 0.05
"""Longest a batch-mode worker holds a verdict before sending it (while its handlers work on the
rest of a response)."""
# A batch-mode worker asks whether its stream still stands before handling a delivery, at most this
# often (the rest of a response is left to be redelivered once it broke).
_ACTIVE_CHECK_S = 0.005
_STALE = "not run: its lease ran out while it waited for this worker's earlier handlers"
# wait_for_tasks(timeout_s=0): the wire's 0 means "until the deadline", so "no wait" is sent as this.
_NO_WAIT_S = 0.001


@dataclass
class ScheduledMessage:
    """A message as a handler sees it (MemOS's ScheduleMessageItem fields)."""

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
    attempt: int = 0

    @property
    def mem_cube_id(self) -> str:
        return self.cube_id

    def to_proto(self) -> scheduler_pb2.ScheduleMessage:
        return self._fill(scheduler_pb2.ScheduleMessage())

    def _fill(self, m: scheduler_pb2.ScheduleMessage) -> scheduler_pb2.ScheduleMessage:
        m.item_id, m.user_id, m.cube_id, m.session_id = self.item_id, self.user_id, self.cube_id, self.session_id
        m.label, m.content, m.trace_id, m.priority = self.label, self.content, self.trace_id, self.priority
        if self.info:
            m.info.update(self.info)
        if self.timestamp:
            m.timestamp.FromMicroseconds(int(self.timestamp * 1e6))
        return m

    @classmethod
    def from_proto(cls, m: scheduler_pb2.ScheduleMessage, attempt: int = 0) -> ScheduledMessage:
        # One per delivered message: the fields set at once, not through the dataclass's keyword
        # __init__, and the timestamp read as ToMicroseconds() would (an absent one reads as 0).
        ts, info = m.timestamp, m.info
        msg = object.__new__(cls)
        msg.__dict__ = {
            "user_id": m.user_id,
            "cube_id": m.cube_id,
            "label": m.label,
            "content": m.content,
            "item_id": m.item_id,
            "session_id": m.session_id,
            "timestamp": (ts.seconds * 1_000_000 + ts.nanos // 1000) / 1e6,
            "trace_id": m.trace_id,
            "info": json_format.MessageToDict(info) if info.fields else {},
            "priority": m.priority,
            "attempt": attempt,
        }
        return msg


@dataclass
class TaskStatus:
    item_id: str
    state: str
    attempts: int
    last_error: str
    message: ScheduledMessage


def _task(t: scheduler_pb2.Task) -> TaskStatus:
    return TaskStatus(
        t.item_id,
        TASK_STATES.get(t.state, "unspecified"),
        t.attempts,
        t.last_error,
        ScheduledMessage.from_proto(t.message),
    )


Handler = Callable[[ScheduledMessage], Any]


class _Verdicts:
    """Verdicts on their way to the scheduler: the worker thread adds them as its handlers return;
    the request stream (gRPC's thread) takes them, all at once in batch mode.

    In batch mode a verdict waits at most ACK_FLUSH_S, even while the next handler is still
    working: a slow handler does not hold back the acks of the messages handled before it (their
    leases would run out, and they would be handled again). It goes sooner when half the credit
    is answered, or when the response's deliveries are all handled (:meth:`flush`).
    """

    def __init__(self, flush_at: int) -> None:
        # add() runs once per message: it takes the plain lock (a C call), not the Condition's
        # Python-level __enter__; the Condition waits and notifies on that same lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._acks: list[scheduler_pb2.Acknowledgement] = []
        self._oldest = 0.0
        self._urgent = False
        self._closed = False
        self._flush_at = flush_at
        self.batch: bool | None = None  # unknown until the first delivery says

    def add(self, ack: scheduler_pb2.Acknowledgement) -> None:
        with self._lock:
            first = not self._acks
            if first:
                self._oldest = time.monotonic()
            self._acks.append(ack)
            if not self.batch or len(self._acks) >= self._flush_at:
                self._urgent = True
            if first or self._urgent:  # the first starts the clock of take()
                self._cond.notify()

    def flush(self) -> None:
        with self._cond:
            self._urgent = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(self) -> list[scheduler_pb2.Acknowledgement] | None:
        """Blocks until verdicts are due; None once closed and empty."""
        with self._cond:
            while True:
                if self._acks:
                    wait = ACK_FLUSH_S - (time.monotonic() - self._oldest)
                    if self._urgent or self._closed or wait <= 0:
                        acks, self._acks, self._urgent = self._acks, [], False
                        return acks
                elif self._closed:
                    return None
                else:
                    wait = None
                self._cond.wait(wait)


@dataclass
class _Stream:
    """One Subscribe call and what its reader carries between responses."""

    call: Any
    verdicts: _Verdicts
    # Deliveries of the last response not handled yet, and when it arrived; a thread that takes
    # over from an abandoned handler goes on with them.
    backlog: deque[scheduler_pb2.SubscribeResponse | scheduler_pb2.Delivery] = field(default_factory=deque)
    received: float = 0.0


class Worker:
    """A thread that serves some labels over one Subscribe stream (reconnecting when it breaks).

    Handlers run one at a time on the worker's thread. One still running after the scheduler's
    visibility timeout is abandoned: Python cannot stop a thread, so it is left to finish (its
    verdict is dropped), the message is nacked (it is delivered again, to this worker too, until
    it is dead-lettered) and a new thread goes on with the stream. Without this a worker with
    ``max_in_flight=1`` whose handler hangs would never be sent anything again. With more credit,
    the deliveries waiting behind a slow or hung handler keep their leases running: one whose
    lease ran out before its turn is not run but nacked (it is delivered again, on a new attempt).
    """

    def __init__(
        self,
        stub: scheduler_pb2_grpc.SchedulerServiceStub,
        handlers: Mapping[str, Handler],
        worker_id: str,
        max_in_flight: int,
        reconnect_s: float = 0.5,
    ) -> None:
        self._stub = stub
        self.handlers = dict(handlers)
        self.worker_id = worker_id
        self._max_in_flight = max_in_flight
        self._reconnect_s = reconnect_s
        self._stop = threading.Event()
        self._call: Any = None
        self._verdicts = _Verdicts(1)
        self.subscribed = threading.Event()
        self.error: BaseException | None = None
        self.rejected_acks = 0
        """Verdicts the scheduler reported it did not apply (e.g. sent after the lease ran out)."""
        self.abandoned_handlers = 0
        """Handlers left running past the visibility timeout (their threads may still be running)."""
        # _lock guards the two below. A thread serves the stream while its generation is current;
        # abandoning the running handler moves the generation on, and that thread then exits.
        self._lock = threading.Lock()
        self._generation = 0
        self._running: tuple[int, float, str, _Stream] | None = None  # (generation, started, delivery id, stream)
        self._visibility_s = 0.0  # the scheduler's, from the stream's first response (0: not told)
        self._watchdog: threading.Thread | None = None
        self._thread = self._start(None)

    def _start(self, resume: _Stream | None) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(self._generation, resume), name=f"memos-worker-{self.worker_id}", daemon=True
        )
        thread.start()
        return thread

    def _request_stream(self, verdicts: _Verdicts) -> Iterator[scheduler_pb2.SubscribeRequest]:
        yield scheduler_pb2.SubscribeRequest(
            subscription=scheduler_pb2.Subscription(
                worker_id=self.worker_id,
                labels=sorted(self.handlers),
                max_in_flight=self._max_in_flight,
                max_batch=self._max_in_flight,
            )
        )
        while (acks := verdicts.take()) is not None:
            if verdicts.batch:
                yield scheduler_pb2.SubscribeRequest(acks=scheduler_pb2.Acknowledgements(acks=acks))
            else:
                # A scheduler without batch mode: one verdict per request, the only form it reads.
                for ack in acks:
                    yield scheduler_pb2.SubscribeRequest(ack=ack)

    def _run(self, generation: int, resume: _Stream | None) -> None:
        while not self._stop.is_set():
            if resume is None:
                verdicts = self._verdicts = _Verdicts(max(1, self._max_in_flight // 2))
                stream = _Stream(self._stub.Subscribe(self._request_stream(verdicts)), verdicts)
                self._call = stream.call
            else:
                stream, resume = resume, None
            try:
                if not self._serve(stream, generation):
                    return  # its handler was abandoned: another thread serves the stream now
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                err = from_rpc_error(exc)
                if not err.retriable and err.code.name != "CANCELLED":
                    self.error = err
                    log.error("worker stream refused: %s", err)
                    break
                log.warning("worker stream broke, reconnecting: %s", err)
            finally:
                if generation == self._generation:
                    stream.verdicts.close()
            self._stop.wait(self._reconnect_s)

    def _serve(self, stream: _Stream, generation: int) -> bool:
        """Handles the stream's deliveries until it ends (True), or until the handler running on
        this thread is abandoned (False)."""
        call, verdicts, backlog = stream.call, stream.verdicts, stream.backlog
        checked = 0.0  # when the stream was last seen standing
        while True:
            if not backlog:
                resp = next(call, None)
                if resp is None:
                    return True
                checked = stream.received = time.monotonic()  # a response just arrived: the stream stood
                if resp.delivery_id:  # a scheduler without batch mode: one delivery per response
                    verdicts.batch = False
                    backlog.append(resp)
                elif resp.deliveries:
                    verdicts.batch = True
                    backlog.extend(resp.deliveries)
                elif not resp.rejected_acks:
                    self._subscribed(resp)
                if resp.rejected_acks:
                    self.rejected_acks += len(resp.rejected_acks)
                    log.warning(
                        "the scheduler did not apply %d verdicts (%s)",
                        len(resp.rejected_acks),
                        ", ".join(sorted({r.reason for r in resp.rejected_acks})),
                    )
                continue
            now = time.monotonic()
            if verdicts.batch and now - checked >= _ACTIVE_CHECK_S:
                if not call.is_active():
                    backlog.clear()  # the stream broke: no verdict could reach the scheduler now
                    continue
                checked = now
            delivery = backlog.popleft()
            if self._visibility_s and now - stream.received >= self._visibility_s:
                # Its lease ran out while it waited here (it was leased before it arrived): the
                # scheduler delivers it again, so running it now would only run it twice.
                ack = scheduler_pb2.Acknowledgement(delivery_id=delivery.delivery_id, success=False, error=_STALE)
            elif (ack := self._handle(delivery, generation, stream)) is None:
                return False
            verdicts.add(ack)
            if verdicts.batch and not backlog:
                verdicts.flush()

    def _subscribed(self, resp: scheduler_pb2.SubscribeResponse) -> None:
        self._visibility_s = resp.visibility_timeout_seconds
        if self._visibility_s > 0 and self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name=f"memos-watchdog-{self.worker_id}", daemon=True)
            self._watchdog.start()
        self.subscribed.set()

    def _handle(
        self, resp: scheduler_pb2.SubscribeResponse | scheduler_pb2.Delivery, generation: int, stream: _Stream
    ) -> scheduler_pb2.Acknowledgement | None:
        """Runs the delivery's handler: its verdict, or None when it was abandoned meanwhile."""
        msg = ScheduledMessage.from_proto(resp.message, resp.attempt)
        handler = self.handlers.get(msg.label)
        ack = scheduler_pb2.Acknowledgement(delivery_id=resp.delivery_id, success=True)
        if handler is None:
            ack.success, ack.error = False, f"no handler for label {msg.label!r} in worker {self.worker_id}"
            return ack
        self._running = (generation, time.monotonic(), resp.delivery_id, stream)  # one store: no lock
        try:
            handler(msg)
        except Exception:  # noqa: BLE001 - reported to the scheduler as the task's error
            ack.success, ack.error = False, traceback.format_exc()[-8000:]
        with self._lock:
            if generation != self._generation:
                return None
            self._running = None
        return ack

    def _watch(self) -> None:
        """Abandons a handler that runs longer than the visibility timeout (see the class)."""
        while not self._stop.wait(min(1.0, self._visibility_s / 4)):
            with self._lock:
                running = self._running
                if running is None or running[0] != self._generation:
                    continue
                generation, started, delivery_id, stream = running
                if time.monotonic() - started < self._visibility_s:
                    continue
                self._generation += 1
                self._running = None
                self.abandoned_handlers += 1
            log.warning(
                "a handler ran longer than the visibility timeout (%gs): abandoned, its message is delivered again",
                self._visibility_s,
                extra={"delivery_id": delivery_id},
            )
            # The credit comes back with the verdict; the scheduler delivers the message again (the
            # nack, or the lease that ran out, counts the attempt).
            error = f"handler still running after the visibility timeout ({self._visibility_s:g}s): abandoned by worker {self.worker_id}"
            stream.verdicts.add(scheduler_pb2.Acknowledgement(delivery_id=delivery_id, success=False, error=error))
            stream.verdicts.flush()
            self._thread = self._start(stream)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._verdicts.close()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout)


class SchedulerClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = 30.0,
        service_token: str | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        """``settings``: transport security (``MEMOS_TLS_*``) from the environment unless given."""
        self.target = target
        self._timeout = timeout_s
        # The scheduler is internal to a release: callers send its service token (MEMOS_SERVICE_TOKEN)
        # and, where the release runs mutual TLS, a certificate of the release's CA.
        self._channel = with_service_token(blocking_channel(target, settings or ClientSettings()), service_token)
        self.stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._workers: list[Worker] = []

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self._timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def submit_messages(self, messages: Sequence[ScheduledMessage | Mapping[str, Any]]) -> list[str]:
        """Enqueues messages (dataclasses or dicts of their fields); returns their item ids."""
        req = scheduler_pb2.SubmitMessagesRequest(request_id=uuid.uuid4().hex)
        for m in messages:  # filled in place in the request: no message built apart and copied in
            (m if isinstance(m, ScheduledMessage) else ScheduledMessage(**dict(m)))._fill(req.messages.add())
        return list(self._unary("SubmitMessages", req).item_ids)

    def get_task(self, item_id: str) -> TaskStatus:
        return _task(self._unary("GetTask", scheduler_pb2.GetTaskRequest(item_id=item_id)).task)

    def wait_for_tasks(self, user_id: str, cube_id: str = "", timeout_s: float = 30.0) -> bool:
        """Blocks until the user's (cube's) tasks are all finished; False if the timeout passed first
        (or the scheduler's cap on one wait, wait_for_tasks_max_s). ``timeout_s=0`` does not wait: whether
        they are finished now (on the wire 0 would mean "until the deadline"); negative: InvalidArgument."""
        wire = _NO_WAIT_S if timeout_s == 0 else timeout_s
        req = scheduler_pb2.WaitForTasksRequest(user_id=user_id, cube_id=cube_id, timeout_seconds=wire)
        return self._unary("WaitForTasks", req, timeout=max(timeout_s, 0.0) + 10.0).all_done

    def list_dead_letters(
        self, label: str = "", page_size: int = 100, page_token: str = ""
    ) -> tuple[list[TaskStatus], str]:
        resp = self._unary(
            "ListDeadLetters",
            scheduler_pb2.ListDeadLettersRequest(label=label, page_size=page_size, page_token=page_token),
        )
        return [_task(t) for t in resp.tasks], resp.next_page_token

    def replay_dead_letters(self, item_ids: Sequence[str]) -> int:
        req = scheduler_pb2.ReplayDeadLettersRequest(request_id=uuid.uuid4().hex, item_ids=list(item_ids))
        return self._unary("ReplayDeadLetters", req).replayed_count

    def purge_tasks(self, user_id: str = "", cube_id: str = "", request_id: str = "") -> dict[str, int]:
        """Removes every task of a user (only of ``cube_id`` if given), or of a cube (every user), in
        any state; returns how many by the state they were in (pending, running, dead_lettered,
        finished). Idempotent: a retry removes what is left."""
        req = scheduler_pb2.PurgeTasksRequest(
            request_id=request_id or uuid.uuid4().hex, user_id=user_id, cube_id=cube_id
        )
        resp = self._unary("PurgeTasks", req)
        return {
            "pending": resp.pending_count,
            "running": resp.running_count,
            "dead_lettered": resp.dead_lettered_count,
            "finished": resp.finished_count,
        }

    def register_handlers(
        self,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        max_in_flight: int = 1,
        wait_s: float = 10.0,
    ) -> Worker:
        """Starts a worker thread handling ``handlers``' labels (registering them with the scheduler)."""
        if not handlers:
            raise ValueError("no handlers")
        worker = Worker(self.stub, handlers, worker_id or uuid.uuid4().hex[:12], max_in_flight)
        self._workers.append(worker)
        # Labels are registered when the stream opens: wait for the scheduler's confirmation,
        # so that a submit right after this call knows them.
        deadline = time.monotonic() + wait_s
        while not worker.subscribed.wait(0.05):
            if worker.error is not None:
                self._workers.remove(worker)
                raise worker.error
            if time.monotonic() > deadline:
                break
        return worker

    def stop(self) -> None:
        """Stops every worker started by this client."""
        for w in self._workers:
            w.stop()
        self._workers.clear()

    def close(self) -> None:
        self.stop()
        self._channel.close()
