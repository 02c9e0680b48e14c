"""Add and search through the gateway and textmem over real gRPC."""

from __future__ import annotations

import asyncio

import pytest

from memos.client import AsyncMemosClient, NotFound, PermissionDenied
from memos.client._convert import memory_to_dict

CONVERSATION = [
    {
        "role": "user",
        "content": "I've planned to travel to Guangzhou during the summer vacation. What chain hotels are there?",
    },
    {"role": "assistant", "content": "You can consider [7 Days Inn, Ji Hotel, Hilton], etc."},
    {"role": "user", "content": "I'll choose 7 Days Inn."},
    {"role": "assistant", "content": "Okay, feel free to ask me if you have any other questions."},
    {"role": "user", "content": "My sister Mei is a violinist in Shanghai."},
    {"role": "assistant", "content": "That's lovely, does she play in an orchestra?"},
    {"role": "user", "content": "Yes, the Shanghai Symphony Orchestra."},
]


async def test_add_then_search_finds_the_conversation_with_its_sources(client: AsyncMemosClient, unique: str) -> None:
    user, cube = f"alice-{unique}", f"cube-{unique}"
    added = await client.add_memories(user, [cube], CONVERSATION, session_id="s1")
    # 7 messages, windows of 4 overlapping by 1: [0,4) [3,7)
    assert len(added.memories) == 2
    assert all(m.cube_id == cube for m in added.memories)

    resp = await client.search_memories(user, [cube], "Which hotel did I pick in Guangzhou?", top_k=5)
    assert [b.cube_id for b in resp.text_mem] == [cube]
    top = resp.text_mem[0].memories[0].item
    assert "7 Days Inn" in top.memory
    roles = [s.role for s in top.metadata.sources]
    assert roles[:4] == ["user", "assistant", "user", "assistant"]
    assert top.metadata.sources[2].content == "I'll choose 7 Days Inn."
    assert top.metadata.session_id == "s1" and top.metadata.user_id == user
    assert resp.ranked[0].item.id == top.id

    music = await client.search_memories(user, [cube], "violin orchestra sister", top_k=1)
    assert "violinist" in music.text_mem[0].memories[0].item.memory


async def test_search_across_cubes_gives_a_bucket_per_cube_and_a_merged_ranking(
    client: AsyncMemosClient, unique: str
) -> None:
    user = f"bob-{unique}"
    hotels, love = f"hotels-{unique}", f"love-{unique}"
    await client.add_memories(user, [hotels], CONVERSATION[:4])
    await client.add_memories(
        user,
        [love],
        [
            {"role": "user", "content": "I love you, I need you."},
            {"role": "assistant", "content": "Wow, I love you too"},
        ],
    )
    resp = await client.search_memories(user, [hotels, love], "Please recommend a hotel, Love u u", top_k=5)
    assert [b.cube_id for b in resp.text_mem] == [hotels, love]
    assert all(b.status.code == 0 for b in resp.text_mem)
    assert "7 Days Inn" in resp.text_mem[0].memories[0].item.memory
    assert "love you" in resp.text_mem[1].memories[0].item.memory
    assert {m.item.metadata.cube_id for m in resp.ranked} == {hotels, love}
    scores = [m.score for m in resp.ranked]
    assert scores == sorted(scores, reverse=True)


async def test_a_slow_or_failing_cube_gets_a_status_not_a_failed_request(client: AsyncMemosClient, unique: str) -> None:
    user = f"carol-{unique}"
    ok, slow, down = f"ok-{unique}", f"slow-{unique}", f"down-{unique}"
    for cube in (ok, slow):
        await client.add_memories(user, [cube], CONVERSATION[:2])
    await client.create_cube(user, down)  # adds to down- cubes fail by design
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Well under the slow cube's 2 s, with room for a loaded CI machine to answer the others.
    resp = await client.search_memories(user, [ok, slow, down], "hotels", timeout=1.2)
    elapsed = loop.time() - started
    by_cube = {b.cube_id: b for b in resp.text_mem}
    assert by_cube[ok].status.code == 0 and by_cube[ok].memories
    assert by_cube[slow].status.code == 4  # DEADLINE_EXCEEDED
    assert by_cube[down].status.code == 14  # UNAVAILABLE
    assert not by_cube[slow].memories and not by_cube[down].memories
    # The caller's deadline held although one cube would have taken 2 s.
    assert elapsed < 1.9


async def test_include_preference_returns_preference_buckets(client: AsyncMemosClient, unique: str, suite) -> None:  # type: ignore[no-untyped-def]
    from services.textmem.models import Memory

    user, cube = f"dan-{unique}", f"pref-{unique}"
    await client.add_memories(user, [cube], CONVERSATION[:2])
    # Preference memories arrive from ingest; written here through textmem's own domain API.
    await asyncio.to_thread(
        suite.memory.write_memories,
        cube,
        user,
        "s",
        [Memory(id="", cube_id=cube, memory="The user prefers budget chain hotels.", memory_type="PreferenceMemory")],
    )
    resp = await client.search_memories(user, [cube], "hotel", include_preference=True, pref_top_k=3)
    assert [b.cube_id for b in resp.pref_mem] == [cube]
    assert resp.pref_mem[0].memories[0].item.memory == "The user prefers budget chain hotels."
    assert "budget chain hotels" in resp.pref_string
    # Preferences stay out of the textual bucket.
    assert all("budget" not in m.item.memory for m in resp.text_mem[0].memories)
    without = await client.search_memories(user, [cube], "hotel", include_preference=False)
    assert not without.pref_mem and not without.pref_string


async def test_cube_access_owner_sharing_and_revocation(client: AsyncMemosClient, unique: str) -> None:
    owner, other, cube = f"erin-{unique}", f"frank-{unique}", f"erin-cube-{unique}"
    await client.add_memories(owner, [cube], CONVERSATION[:2])

    with pytest.raises(PermissionDenied) as denied:
        await client.search_memories(other, [cube], "hotel")
    assert denied.value.reason == "CUBE_READ_DENIED" and denied.value.metadata["cube_id"] == cube

    before = (await client.list_memories(owner, cube)).memories
    with pytest.raises(PermissionDenied) as wdenied:
        await client.add_memories(other, [cube], [{"role": "user", "content": "let me in"}])
    assert wdenied.value.reason == "CUBE_WRITE_DENIED"
    assert len((await client.list_memories(owner, cube)).memories) == len(before)

    await client.share_cube(owner, cube, other, "reader")
    assert (await client.search_memories(other, [cube], "hotel")).text_mem[0].memories
    with pytest.raises(PermissionDenied):
        await client.delete_memories(other, cube, all=True)
    with pytest.raises(PermissionDenied) as not_owner:
        await client.share_cube(other, cube, f"x-{unique}", "writer")
    assert not_owner.value.reason == "NOT_CUBE_OWNER"

    await client.share_cube(owner, cube, other, "writer")
    await client.add_memories(other, [cube], [{"role": "user", "content": "now I can write"}])

    await client.share_cube(owner, cube, other, "none")
    with pytest.raises(PermissionDenied):
        await client.search_memories(other, [cube], "hotel")

    cubes = {c.cube_id: c for c in (await client.list_cubes(owner)).cubes}
    assert cubes[cube].owned


async def test_unknown_cube_is_not_found_for_reads(client: AsyncMemosClient, unique: str) -> None:
    with pytest.raises(NotFound) as err:
        await client.search_memories(f"gina-{unique}", [f"nope-{unique}"], "anything")
    assert err.value.reason == "CUBE_NOT_FOUND"


async def test_a_multi_cube_add_with_one_forbidden_cube_writes_nothing(client: AsyncMemosClient, unique: str) -> None:
    owner, intruder = f"hank-{unique}", f"ivy-{unique}"
    theirs, mine = f"theirs-{unique}", f"mine-{unique}"
    await client.add_memories(owner, [theirs], CONVERSATION[:2])
    with pytest.raises(PermissionDenied):
        await client.add_memories(intruder, [mine, theirs], CONVERSATION[:2])
    # Access is checked for every cube before any is touched: the new cube was not even created.
    with pytest.raises(NotFound):
        await client.list_memories(intruder, mine)


async def test_repeating_a_request_id_does_not_duplicate(client: AsyncMemosClient, unique: str) -> None:
    user, cube = f"jack-{unique}", f"idem-{unique}"
    first = await client.add_memories(user, [cube], CONVERSATION, request_id=f"req-{unique}")
    again = await client.add_memories(user, [cube], CONVERSATION, request_id=f"req-{unique}")
    assert [m.memory_id for m in again.memories] == [m.memory_id for m in first.memories]
    assert len((await client.list_memories(user, cube)).memories) == len(first.memories)


async def test_get_update_list_and_delete(client: AsyncMemosClient, unique: str, suite) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"kim-{unique}", f"crud-{unique}"
    added = await client.add_memories(user, [cube], CONVERSATION)
    mid = added.memories[0].memory_id

    got = (await client.get_memory(user, cube, mid)).memory
    assert got.id == mid and got.metadata.version == 1

    updated = (
        await client.update_memory(user, cube, mid, memory="I stayed at the Hilton in Guangzhou.", tags=["trip"])
    ).memory
    assert updated.metadata.version == 2 and list(updated.metadata.tags) == ["trip"]
    hits = await client.search_memories(user, [cube], "Hilton stay", top_k=1)
    assert hits.text_mem[0].memories[0].item.id == mid
    assert (await client.search_memories(user, [cube], "x", filter={"tags": ["trip"]})).text_mem[0].memories[
        0
    ].item.id == mid

    page1 = await client.list_memories(user, cube, page_size=1)
    page2 = await client.list_memories(user, cube, page_size=1, page_token=page1.next_page_token)
    assert page1.next_page_token and not page2.next_page_token
    assert {page1.memories[0].id, page2.memories[0].id} == {m.memory_id for m in added.memories}

    assert (await client.delete_memories(user, cube, [mid])).deleted_count == 1
    with pytest.raises(NotFound):
        await client.get_memory(user, cube, mid)
    hits = await client.search_memories(user, [cube], "Hilton stay Guangzhou hotel", top_k=10)
    assert mid not in {m.item.id for m in hits.text_mem[0].memories}
    # Gone from the vector store and the graph, not only hidden.
    assert await asyncio.to_thread(suite.memory.vectors.get_vectors, cube, [mid]) == {}
    assert await asyncio.to_thread(suite.memory.graph.get_memories, cube, [mid]) == {}

    assert (await client.delete_memories(user, cube, all=True)).deleted_count == 1
    assert not (await client.list_memories(user, cube)).memories


async def test_memories_serialise_like_memos(client: AsyncMemosClient, unique: str) -> None:
    user, cube = f"lee-{unique}", f"shape-{unique}"
    await client.add_memories(user, [cube], CONVERSATION[:2], custom_tags=["travel"], info={"source": "test"})
    item = (await client.search_memories(user, [cube], "hotel")).text_mem[0].memories[0]
    d = memory_to_dict(item.item, item.score)
    assert d["metadata"]["memory_type"] == "LongTermMemory"
    assert "travel" in d["metadata"]["tags"] and d["metadata"]["info"] == {"source": "test"}
    assert d["metadata"]["sources"][0]["role"] == "user"
    assert d["metadata"]["relativity"] > 0
