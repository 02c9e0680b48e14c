"""Fixtures of the scheduler tests: a session redis-server and queue factories.

The queue conformance suite runs over every entry of :data:`QUEUES` (add an
implementation there). Each Redis queue uses a fresh key prefix, so tests share one
server without sharing state.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.scheduler.app import build_server
from services.scheduler.queue import QueueLimits, SqliteTaskQueue, TaskQueue
from services.scheduler.settings import SchedulerSettings
from shared.server import GrpcServer
from tests.redis_server import RedisServer, start_redis, stop_redis

QueueFactory = Callable[[QueueLimits], TaskQueue]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """redis-server on loopback, persistence off (skips, or fails under CI, if not installed)."""
    server = start_redis()
    yield server
    stop_redis(server)


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Callable[[QueueLimits], TaskQueue]:
    return lambda limits: SqliteTaskQueue(tmp / "queue.sqlite3", limits)


def _redis(request: pytest.FixtureRequest, tmp: Path) -> Callable[[QueueLimits], TaskQueue]:
    from services.scheduler.queue.redis_streams import RedisTaskQueue

    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return lambda limits: RedisTaskQueue(server.url, limits, prefix=prefix)


# name -> (test request, empty dir) -> factory(limits) -> queue. Every call of one factory
# opens the same durable queue (same file, same Redis prefix): that is how restarts are tested.
QUEUES: dict[str, Callable[[pytest.FixtureRequest, Path], QueueFactory]] = {
    "sqlite": _sqlite,
    "redis": _redis,
}


@pytest.fixture(params=sorted(QUEUES))
def open_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    opened: list[TaskQueue] = []
    factory = QUEUES[request.param](request, tmp_path)

    def make(limits: QueueLimits | None = None) -> TaskQueue:
        q = factory(limits or QueueLimits(visibility_timeout_s=30.0, max_attempts=3))
        opened.append(q)
        return q

    yield make
    for q in opened:
        try:
            q.close()
        except Exception:  # noqa: BLE001 - already closed by the test
            pass


class ServerThread:
    """The scheduler's gRPC server on its own event loop thread, so sync clients
    (the SDK) and async ones can call it from the test's thread."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="scheduler-server", daemon=True)
        self._thread.start()
        self.server: GrpcServer = self._call(self._start())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> GrpcServer:
        server = build_server(self.settings)
        await server.start()
        return server

    @property
    def address(self) -> str:
        return self.server.address

    def stop(self) -> None:
        self._call(self.server.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(params=sorted(QUEUES))
def start_scheduler(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Starts scheduler servers on the backend of the parameter (settings overridable)."""
    started: list[ServerThread] = []

    def start(**overrides: object) -> ServerThread:
        base: dict[str, object] = {
            "listen_addr": "127.0.0.1:0",
            "data_dir": tmp_path / f"s{len(started)}",
            "log_level": "WARNING",
            "visibility_timeout_s": 5.0,
            "queue_max_attempts": 3,
            "poll_interval_s": 0.05,
        }
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            base |= {"redis_url": server.url, "redis_prefix": f"t-{uuid.uuid4().hex[:12]}"}
        s = ServerThread(SchedulerSettings(**(base | overrides)))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
