"""Async add: fast memories at once, refined by the scheduler's mem_read, never unfindable.

Real services on loopback: the session's textmem, an ingest whose LLM is the loopback
OpenAI-protocol fake, a scheduler running its built-in handlers, and a gateway that
knows both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from memos.client import AsyncMemosClient
from memos.client.scheduler import SchedulerClient
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.settings import SchedulerSettings
from services.textmem.quota import CubeQuota
from shared.errors import NotFound
from tests.ingest.conftest import IngestSuite

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def async_suite(ingest_suite: IngestSuite, tmp_path_factory) -> AsyncIterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    textmem = ingest_suite.base.textmem.address
    scheduler = build_scheduler(
        SchedulerSettings(
            listen_addr="127.0.0.1:0",
            data_dir=tmp_path_factory.mktemp("sched"),
            textmem_addr=textmem,
            ingest_addr=ingest_suite.ingest.address,
            log_level="WARNING",
        )
    )
    await scheduler.start()
    gateway = build_gateway(
        GatewaySettings(
            listen_addr="127.0.0.1:0",
            textmem_addr=textmem,
            ingest_addr=ingest_suite.ingest.address,
            scheduler_addr=scheduler.address,
        )
    )
    await gateway.start()
    yield gateway.address, scheduler.address
    await gateway.stop(1.0)
    await scheduler.stop(1.0)


async def test_async_add_is_searchable_at_once_and_refined_without_a_gap(async_suite, ingest_suite, unique) -> None:  # type: ignore[no-untyped-def]
    gateway, scheduler_addr = async_suite
    user, cube = f"u-{unique}", f"c-{unique}"
    ingest_suite.llm.chat_delay_s = 0.5  # a slow LLM: searches run while the refinement is under way
    sched = SchedulerClient(scheduler_addr)
    try:
        async with AsyncMemosClient(gateway) as c:
            resp = await c.add_memories(
                user,
                [cube],
                [
                    {"role": "user", "content": "My kayak is a yellow Perception Pescador."},
                    {"role": "assistant", "content": "Nice boat!"},
                ],
                async_mode="async",
                mode="fine",
            )
            assert len(resp.task_ids) == 1
            fast_ids = [m.memory_id for m in resp.memories]
            assert fast_ids and "yellow Perception Pescador" in resp.memories[0].memory

            searches = 0
            waiter = asyncio.ensure_future(asyncio.to_thread(sched.wait_for_tasks, user, cube, 60.0))
            while True:  # every search during the refinement finds the content
                found = await c.search_memories(user, [cube], "yellow kayak Pescador", top_k=3)
                assert any("Pescador" in m.item.memory for m in found.ranked), "content unfindable mid-refinement"
                searches += 1
                if waiter.done():
                    break
                await asyncio.sleep(0.05)
            assert await waiter and searches > 1
            task = await asyncio.to_thread(sched.get_task, resp.task_ids[0])
            assert task.state == "done", task.last_error

            for mid in fast_ids:  # replaced, not duplicated
                with pytest.raises(NotFound):
                    await c.get_memory(user, cube, mid)
            found = await c.search_memories(user, [cube], "yellow kayak Pescador", top_k=3)
            top = found.ranked[0].item
            assert top.memory == "The user said: My kayak is a yellow Perception Pescador."
            assert "scripted" in top.metadata.tags
    finally:
        ingest_suite.llm.chat_delay_s = 0.0
        await asyncio.to_thread(sched.close)


@pytest.mark.parametrize(("mode", "async_mode"), [("fine", "sync"), ("fast", "async"), ("fast", "sync")])
async def test_only_async_fine_adds_queue_a_refinement(async_suite, unique, mode, async_mode) -> None:  # type: ignore[no-untyped-def]
    gateway, _ = async_suite
    async with AsyncMemosClient(gateway) as c:
        resp = await c.add_memories(
            f"u-{unique}", [f"c-{unique}"], "I remember the milk", mode=mode, async_mode=async_mode
        )
    assert not resp.task_ids and resp.memories


async def test_a_refinement_refused_by_a_full_cube_is_given_up_not_retried(async_suite, ingest_suite, unique) -> None:  # type: ignore[no-untyped-def]
    gateway, scheduler_addr = async_suite
    user, cube = f"u-{unique}", f"c-{unique}"
    memory = ingest_suite.base.memory
    sched = SchedulerClient(scheduler_addr)
    saved = memory.quota
    # Room for the fast memory only: the refined one, written before the fast one goes, does not fit.
    memory.quota = CubeQuota(max_memories=1, max_bytes=0)
    try:
        async with AsyncMemosClient(gateway) as c:
            resp = await c.add_memories(
                user, [cube], "My kayak is a yellow Perception Pescador.", async_mode="async", mode="fine"
            )
            assert len(resp.task_ids) == 1 and len(resp.memories) == 1
            assert await asyncio.to_thread(sched.wait_for_tasks, user, cube, 60.0)
            task = await asyncio.to_thread(sched.get_task, resp.task_ids[0])
            assert task.state in ("failed", "dead_lettered"), task
            assert task.attempts == 1, task  # given up at once: retrying cannot make room
            assert task.last_error.startswith("RESOURCE_EXHAUSTED") and "MEMOS_MAX_MEMORIES_PER_CUBE" in task.last_error
            # Nothing lost: the fast memory is still there.
            found = await c.search_memories(user, [cube], "yellow kayak", top_k=3)
            assert [m.item.id for m in found.ranked] == [resp.memories[0].memory_id]
    finally:
        memory.quota = saved
        await asyncio.to_thread(sched.close)
