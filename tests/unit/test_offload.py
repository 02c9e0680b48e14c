"""shared.offload: blocking calls that a stop can drain."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from shared.errors import Unavailable
from shared.offload import Offloader

REQUEST = contextvars.ContextVar("request", default="")


async def test_a_call_runs_in_a_thread_with_the_callers_context() -> None:
    offload = Offloader("unit")
    REQUEST.set("req-1")
    seen = await offload.run(lambda x: (threading.current_thread() is threading.main_thread(), REQUEST.get(), x), 5)
    assert seen == (False, "req-1", 5)


async def test_drain_waits_for_running_calls_and_refuses_new_ones() -> None:
    offload = Offloader("unit")
    inside, release = threading.Event(), threading.Event()

    def block() -> str:
        inside.set()
        release.wait(10)
        return "finished"

    running = asyncio.ensure_future(offload.run(block))
    assert await asyncio.to_thread(inside.wait, 10)
    # Still running after a short wait: drain says how many.
    assert await asyncio.to_thread(offload.drain, 0.1) == 1
    release.set()
    assert await asyncio.to_thread(offload.drain, 10) == 0
    assert await running == "finished"
    with pytest.raises(Unavailable) as refused:
        await offload.run(lambda: "too late")
    assert refused.value.reason == "SHUTTING_DOWN"
