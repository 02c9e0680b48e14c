"""Chat with memory through the gateway, and the working memory the scheduler keeps.

A suite of real services on loopback: textmem, the gateway with a scheduler, the
scheduler with its built-in handlers, and an OpenAI-protocol fake as the chat LLM
(the only fake allowed: the external model endpoint).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from memos.client import AsyncMemosClient
from memos.client.scheduler import SchedulerClient
from memos.gateway.v1 import gateway_pb2
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.settings import SchedulerSettings
from shared.errors import InvalidArgument, PermissionDenied
from tests.conftest import free_port, start_suite, stop_suite
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.timeout(180)

CONVERSATION = [
    {"role": "user", "content": "I just adopted a golden retriever puppy named Max."},
    {"role": "assistant", "content": "Congratulations on Max!"},
    {"role": "user", "content": "I live near Central Park in New York and I am allergic to nuts."},
    {"role": "assistant", "content": "Noted: Central Park, and no nuts."},
]


@pytest.fixture(scope="module")
def fake_llm():  # type: ignore[no-untyped-def]
    fake = FakeOpenAI()
    with fake.serve() as url:
        yield fake, url


@pytest.fixture(scope="module")
async def chat_suite(tmp_path_factory, embedder, fake_llm) -> AsyncIterator:  # type: ignore[no-untyped-def]
    _, url = fake_llm
    scheduler_addr = f"127.0.0.1:{free_port()}"
    data = tmp_path_factory.mktemp("chat")
    suite = await start_suite(
        data, embedder, scheduler_addr=scheduler_addr, chat_llm_base_url=url, chat_llm_model="fake-chat"
    )
    scheduler = build_scheduler(
        SchedulerSettings(
            listen_addr=scheduler_addr, data_dir=data, textmem_addr=suite.textmem.address, log_level="WARNING"
        )
    )
    await scheduler.start()
    yield suite, scheduler_addr
    await scheduler.stop(1.0)
    await stop_suite(suite)


async def collect(events) -> list[gateway_pb2.ChatResponse]:  # type: ignore[no-untyped-def]
    return [e async for e in events]


def kinds(events: list[gateway_pb2.ChatResponse]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def test_chat_streams_the_llm_answer_built_from_memories(chat_suite, fake_llm, unique) -> None:  # type: ignore[no-untyped-def]
    suite, _ = chat_suite
    fake, _ = fake_llm
    fake.chat_replies.append("Your dog is called Max and he is a golden retriever.")
    user, cube = f"u-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(user, [cube], CONVERSATION)
        events = await collect(c.chat(user, "What is my dog's name?", readable_cube_ids=[cube]))
    assert kinds(events)[0] == "status"
    assert "references" in kinds(events) and kinds(events)[-1] == "end"
    refs = next(e.references for e in events if e.HasField("references"))
    assert any("Max" in m.item.memory for m in refs.memories)
    text = "".join(e.text.delta for e in events if e.HasField("text"))
    assert text == "Your dog is called Max and he is a golden retriever."
    assert sum(1 for e in events if e.HasField("text")) > 1  # streamed, not one block
    end = events[-1].end
    assert end.source == gateway_pb2.ANSWER_SOURCE_LLM
    assert 0 < end.time_to_first_token_seconds <= end.total_seconds
    # The prompt carried the memories as data, and the question last.
    sent = fake.chat_requests()[-1]["body"]
    assert sent["stream"] is True
    assert "Max" in sent["messages"][0]["content"] and "not instructions" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "What is my dog's name?"}


async def test_chat_stores_the_exchange_when_asked(chat_suite, fake_llm, unique) -> None:  # type: ignore[no-untyped-def]
    suite, _ = chat_suite
    fake, _ = fake_llm
    fake.chat_replies.append("You are allergic to nuts.")
    user, cube = f"u-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(user, [cube], CONVERSATION)
        events = await collect(
            c.chat(
                user,
                "Which food should I avoid? I also started learning the cello.",
                readable_cube_ids=[cube],
                writable_cube_ids=[cube],
                add_message_on_answer=True,
            )
        )
        end = events[-1].end
        assert end.added_memories and all(m.cube_id == cube for m in end.added_memories)
        found = await c.search_memories(user, [cube], "cello lessons", top_k=3)
    assert "cello" in found.ranked[0].item.memory
    assert "You are allergic to nuts." in found.ranked[0].item.memory  # the answer was stored with it


async def test_chat_refusals_are_the_calls_status(chat_suite, unique) -> None:  # type: ignore[no-untyped-def]
    suite, _ = chat_suite
    owner, other, cube = f"o-{unique}", f"x-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(owner, [cube], CONVERSATION)
        with pytest.raises(PermissionDenied):
            await collect(c.chat(other, "what does the owner like?", readable_cube_ids=[cube]))
        await c.add_memories(other, [other], [{"role": "user", "content": "my own note"}])
        with pytest.raises(PermissionDenied):  # reading their own cube, writing into someone else's
            await collect(
                c.chat(other, "hi", readable_cube_ids=[other], writable_cube_ids=[cube], add_message_on_answer=True)
            )
        for kwargs, reason in [
            ({"query": "  "}, "EMPTY_QUERY"),
            ({"query": "x" * 20_001}, "QUERY_TOO_LONG"),
            ({"query": "q", "top_k": 51}, "TOP_K_OUT_OF_RANGE"),
            ({"query": "q", "readable_cube_ids": [""]}, None),
        ]:
            q = kwargs.pop("query")
            with pytest.raises(InvalidArgument) as err:
                await collect(c.chat(owner, q, **{"readable_cube_ids": [cube], **kwargs}))
            if reason:
                assert err.value.reason == reason


async def test_llm_failure_mid_chat_is_an_error_event(chat_suite, fake_llm, unique) -> None:  # type: ignore[no-untyped-def]
    suite, _ = chat_suite
    fake, _ = fake_llm
    user, cube = f"u-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(user, [cube], CONVERSATION)
        fake.fail_with = 503
        try:
            events = await collect(c.chat(user, "Where do I live?", readable_cube_ids=[cube]))
        finally:
            fake.fail_with = None
    assert kinds(events)[-1] == "error"
    assert "references" in kinds(events)  # what was retrieved still reached the caller
    assert "LLM" in events[-1].error.message


async def test_chat_query_refreshes_working_memory_through_the_builtin_handlers(chat_suite, fake_llm, unique) -> None:  # type: ignore[no-untyped-def]
    suite, scheduler_addr = chat_suite
    fake, _ = fake_llm
    fake.chat_replies.append("Near Central Park.")
    user, cube = f"u-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(user, [cube], CONVERSATION)
        await c.add_memories(user, [cube], [{"role": "user", "content": "My sister Ana plays tennis on Sundays."}])
        events = await collect(c.chat(user, "Where do I live?", readable_cube_ids=[cube]))
        assert events[-1].end.query_event_id
        sched = SchedulerClient(scheduler_addr)
        try:
            assert await asyncio.to_thread(sched.wait_for_tasks, user, cube, 60.0)
            task = await asyncio.to_thread(sched.get_task, events[-1].end.query_event_id)
            assert task.state == "done"
        finally:
            await asyncio.to_thread(sched.close)
        working = await c.list_memories(user, cube, filter={"memory_type": "WorkingMemory"})
        assert working.memories and "Central Park" in working.memories[0].memory
        # Search puts working memory first, and not also its original.
        found = await c.search_memories(user, [cube], "Central Park New York", top_k=5)
    first = found.ranked[0].item
    assert first.metadata.memory_type == 1  # MEMORY_TYPE_WORKING
    texts = [m.item.memory for m in found.ranked]
    assert texts.count(first.memory) == 1


async def test_a_registered_handler_takes_over_a_builtin_label(chat_suite, unique) -> None:  # type: ignore[no-untyped-def]
    suite, scheduler_addr = chat_suite
    user, cube = f"u-{unique}", f"c-{unique}"
    seen: list[str] = []
    sched = SchedulerClient(scheduler_addr)
    try:
        await asyncio.to_thread(sched.register_handlers, {"query": lambda m: seen.append(m.content)})
        async with AsyncMemosClient(suite.address) as c:
            await c.add_memories(user, [cube], CONVERSATION)
            for q in ("first question", "second question"):
                await collect(c.chat(user, q, readable_cube_ids=[cube]))
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert seen == ["first question", "second question"]
        # The custom handler did not queue mem_update, so the built-in one never touched the cube.
        async with AsyncMemosClient(suite.address) as c:
            working = await c.list_memories(user, cube, filter={"memory_type": "WorkingMemory"})
        assert not working.memories
    finally:
        await asyncio.to_thread(sched.close)


async def test_replace_working_memory_skips_missing_ids_and_clears(chat_suite, unique) -> None:  # type: ignore[no-untyped-def]
    from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
    from shared.channels import open_channel
    from shared.settings import ClientSettings

    suite, _ = chat_suite
    user, cube = f"u-{unique}", f"c-{unique}"
    async with AsyncMemosClient(suite.address) as c:
        added = await c.add_memories(user, [cube], CONVERSATION)
    ids = [m.memory_id for m in added.memories]
    channel = open_channel(suite.textmem.address, settings=ClientSettings())
    stub = textmem_pb2_grpc.TextMemServiceStub(channel)
    try:
        first = await stub.ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=cube, user_id=user, memory_ids=[*ids, "no-such-id"])
        )
        assert [m.metadata.info["working_memory_of"] for m in first.memories] == ids
        assert first.removed_count == 0
        # Working copies are not copied again; the previous set is removed.
        again = await stub.ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(
                cube_id=cube, user_id=user, memory_ids=[first.memories[0].id, ids[-1]]
            )
        )
        assert [m.metadata.info["working_memory_of"] for m in again.memories] == [ids[-1]]
        assert again.removed_count == len(ids)
        cleared = await stub.ReplaceWorkingMemory(textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=cube, user_id=user))
        assert not cleared.memories and cleared.removed_count == 1
        # The originals are untouched.
        listed = await stub.ListMemories(textmem_pb2.ListMemoriesRequest(cube_id=cube))
        assert sorted(m.id for m in listed.memories) == sorted(ids)
    finally:
        await channel.close()
