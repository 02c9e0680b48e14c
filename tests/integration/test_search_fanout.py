"""A multi-cube search works through its cubes with a few threads (TextMemory.search_cubes): each
cube still gets its own answer or its own error, and a slow cube holds one thread, not the cubes
behind it. Uses the suite's fault injection (``slow-`` and ``down-`` cubes, tests/conftest.py)."""

from __future__ import annotations

import asyncio

from grpc import StatusCode

from memos.client import AsyncMemosClient
from services.textmem.models import MemoryFilter
from shared.errors import Unavailable
from tests.conftest import FaultInjectingTextMemory


async def test_each_cube_gets_its_own_outcome_and_a_slow_one_blocks_no_other(suite, unique: str) -> None:  # type: ignore[no-untyped-def]
    user = f"fan-{unique}"
    slow, down = f"slow-{unique}", f"down-{unique}"
    healthy = [f"h{i}-{unique}" for i in range(5)]
    async with AsyncMemosClient(suite.address) as client:
        for cube in [slow, *healthy]:
            await client.add_memories(user, [cube], [{"role": "user", "content": f"The {cube} cube keeps a note."}])
        await client.create_cube(user, down)
        FaultInjectingTextMemory.slow_s = 4.0
        try:
            # In process: the slow cube is first in line, yet every healthy cube is answered
            # (by the other thread) while it still sleeps.
            cubes = [slow, down, *healthy]
            assert suite.memory.fanout_threads == 2
            answers = await asyncio.to_thread(suite.memory.search_cubes, cubes, "note", 5, MemoryFilter())
            for cube in healthy:
                hits, total = await asyncio.wrap_future(answers[cube])
                assert total == 1 and hits and cube in hits[0][0].memory
            assert not answers[slow].done()
            assert isinstance(answers[down].exception(timeout=10), Unavailable)
            await asyncio.wrap_future(answers[slow])  # it does finish, on its own thread

            # Through the gateway with a deadline shorter than the slow cube: it alone times out.
            resp = await client.search_memories(user, cubes, "note", timeout=2.0)
            codes = {b.cube_id: b.status.code for b in resp.text_mem}
            assert codes[slow] == StatusCode.DEADLINE_EXCEEDED.value[0]
            assert codes[down] == StatusCode.UNAVAILABLE.value[0]
            assert all(codes[c] == 0 for c in healthy), codes
            assert all(b.memories for b in resp.text_mem if b.cube_id in healthy)
        finally:
            FaultInjectingTextMemory.slow_s = 2.0
