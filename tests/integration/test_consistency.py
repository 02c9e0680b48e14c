"""A write that fails part-way leaves nothing behind, in either store, in any cube."""

from __future__ import annotations

import asyncio

import pytest

from memos.client import AsyncMemosClient, NotFound, Unavailable
from services.textmem.memory import TextMemory
from services.textmem.models import ChatMessage, Part
from shared.errors import Unavailable as DomainUnavailable


class FailingInsertGraph:
    """The real graph store, except that inserts fail (as if the disk filled up)."""

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self._inner = inner

    def insert_memories(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise DomainUnavailable("injected graph failure", reason="INJECTED")

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)


def test_graph_failure_after_vector_write_removes_the_vectors(suite, unique) -> None:  # type: ignore[no-untyped-def]
    real = suite.memory
    memory = TextMemory(FailingInsertGraph(real.graph), real.vectors, real.embedder)
    cube = f"torn-{unique}"
    with pytest.raises(DomainUnavailable):
        memory.add_messages(cube, "u", "s", [ChatMessage("user", [Part("text", text="remember the milk")])])
    assert real.vectors.count(cube) == 0
    assert real.graph.count(cube) == 0


async def test_multi_cube_add_rolls_back_earlier_cubes_when_a_later_one_fails(
    client: AsyncMemosClient, suite, unique
) -> None:  # type: ignore[no-untyped-def]
    user = f"nina-{unique}"
    good, bad = f"good-{unique}", f"down-{unique}"
    with pytest.raises(Unavailable) as err:
        await client.add_memories(user, [good, bad], [{"role": "user", "content": "remember the milk"}])
    assert err.value.reason == "INJECTED_OUTAGE" and err.value.retriable
    assert (await client.list_memories(user, good)).memories == []
    assert await asyncio.to_thread(suite.memory.vectors.count, good) == 0


async def test_deleting_a_cube_removes_everything(client: AsyncMemosClient, suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"olga-{unique}", f"gone-{unique}"
    await client.add_memories(user, [cube], [{"role": "user", "content": f"fact {i}"} for i in range(9)])
    assert await asyncio.to_thread(suite.memory.vectors.count, cube) > 0
    deleted = await client.delete_cube(user, cube)
    assert deleted.deleted_memories == 3
    assert await asyncio.to_thread(suite.memory.vectors.count, cube) == 0
    assert await asyncio.to_thread(suite.memory.graph.count, cube) == 0
    with pytest.raises(NotFound):
        await client.search_memories(user, [cube], "fact")


async def test_a_retry_of_a_rolled_back_multi_cube_add_stores_everything(
    client: AsyncMemosClient, suite, unique, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # The second cube is down for the whole first call (a passing outage); the client retries
    # with the same request id, as it may for an idempotent add. The rollback removed the first
    # cube's memories: the retry must write them again, not replay their deleted ids and answer
    # OK with the cube empty.
    user = f"rhea-{unique}"
    first, flaky = f"first-{unique}", f"flaky-{unique}"
    real_add = type(suite.memory).add_messages
    failures = []
    outage = [True]

    def fail_during_outage(self, cube_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cube_id == flaky and outage[0]:
            failures.append(cube_id)
            raise DomainUnavailable("a passing outage", reason="INJECTED_OUTAGE")
        return real_add(self, cube_id, *args, **kwargs)

    monkeypatch.setattr(type(suite.memory), "add_messages", fail_during_outage)
    messages = [{"role": "user", "content": "the spare key is under the blue flowerpot"}]
    with pytest.raises(Unavailable):
        await client.add_memories(user, [first, flaky], messages, request_id=f"retry-{unique}")
    # The gateway's channel retried the cube's add within the call (an idempotent method, on
    # UNAVAILABLE: the retry policy of shared/channels.py) before it gave up and rolled back.
    assert len(failures) > 1
    outage[0] = False
    assert (await client.list_memories(user, first)).memories == []
    resp = await client.add_memories(user, [first, flaky], messages, request_id=f"retry-{unique}")
    assert {m.cube_id for m in resp.memories} == {first, flaky}
    for cube in (first, flaky):
        stored = (await client.list_memories(user, cube)).memories
        assert len(stored) == 1 and "blue flowerpot" in stored[0].memory
        assert await asyncio.to_thread(suite.memory.vectors.count, cube) == 1
    # And a third call under the same id replays: nothing new anywhere.
    again = await client.add_memories(user, [first, flaky], messages, request_id=f"retry-{unique}")
    assert sorted(m.memory_id for m in again.memories) == sorted(m.memory_id for m in resp.memories)
