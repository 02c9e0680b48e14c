"""The Redis Streams queue across a Redis restart (AOF) and while Redis is down."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.scheduler.queue import Message, QueueLimits
from services.scheduler.queue.redis_streams import RedisTaskQueue
from shared.errors import Unavailable
from tests.redis_server import RedisServer, start_redis, stop_redis


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    server = start_redis(appendonly=True)
    yield server
    stop_redis(server)


def test_messages_survive_a_redis_kill_and_restart(aof_redis: RedisServer) -> None:
    q = RedisTaskQueue(aof_redis.url, QueueLimits(visibility_timeout_s=0.2))
    items = q.submit([Message(user_id="u", cube_id=f"c{i}", label="add", content=str(i)) for i in range(100)])
    first = q.receive(["add"], 10)
    for d in first[:5]:
        q.ack(d.delivery_id)
    q.close()
    aof_redis.stop(kill=True)  # SIGKILL: only what was fsynced survives
    aof_redis.restart()
    q2 = RedisTaskQueue(aof_redis.url, QueueLimits(visibility_timeout_s=0.2))
    time.sleep(0.25)
    handled = {d.message.item_id for d in first[:5]}
    while batch := q2.receive(["add"], 50):
        for d in batch:
            handled.add(d.message.item_id)
            q2.ack(d.delivery_id)
    assert handled == set(items)
    assert q2.unfinished_count("u") == 0
    q2.close()


def test_redis_down_is_unavailable_quickly(aof_redis: RedisServer) -> None:
    q = RedisTaskQueue(aof_redis.url)
    q.submit([Message(user_id="u", cube_id="c", label="add")])
    aof_redis.stop()
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:
        q.submit([Message(user_id="u", cube_id="c", label="add")])
    assert e.value.retriable and time.monotonic() - started < 3.0
    with pytest.raises(Unavailable):
        q.receive(["add"], 1)
    q.close()
