"""Memory lifecycle through the gateway over real gRPC: delete by filter (exactly the matching
memories go, vectors included), the selector rules, who may delete, and update history."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from memos.client import AsyncMemosClient, InvalidArgument, NotFound, PermissionDenied
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem.models import MemoryFilter
from shared.channels import open_channel
from shared.errors import MemosError
from shared.grpc_errors import from_rpc_error

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def gateway(suite) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:  # type: ignore[no-untyped-def]
    """A bare stub, for requests the SDK would refuse before sending."""
    channel = grpc.aio.insecure_channel(suite.address)
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()


async def refused(call) -> MemosError:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return from_rpc_error(exc)
    raise AssertionError("the call succeeded")


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]


async def ids_in(client: AsyncMemosClient, user: str, cube: str, **flt: object) -> set[str]:
    listed = await client.list_memories(user, cube, page_size=1000, filter=flt or None)
    return {m.id for m in listed.memories}


async def vector_hits(suite, cube: str, text: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Ids the vector store itself answers for the text (any type or status)."""
    memory = suite.memory
    qvec = (await asyncio.to_thread(memory.embedder.embed, [text]))[0]
    everything = MemoryFilter(memory_types=("WorkingMemory", "LongTermMemory"), include_archived=True)
    return {i for i, _ in await asyncio.to_thread(memory.vectors.search, cube, qvec, everything, 100)}


# delete by filter -------------------------------------------------------------------------------
async def test_delete_by_filter_removes_exactly_the_matching_memories(  # type: ignore[no-untyped-def]
    client: AsyncMemosClient, suite, unique: str
) -> None:
    alice, bob, cube = f"alice-{unique}", f"bob-{unique}", f"lifecycle-{unique}"
    keep = await client.add_memories(alice, [cube], say("My violin lessons are on Mondays."), custom_tags=["keep"])
    drop = [
        await client.add_memories(alice, [cube], say(f"The quokka number {i} ate a leaf."), custom_tags=["drop"])
        for i in range(2)
    ]
    await client.share_cube(alice, cube, bob, "writer")
    bobs = await client.add_memories(bob, [cube], say("Bob's marmot collection is large."))
    keep_id, bob_id = keep.memories[0].memory_id, bobs.memories[0].memory_id
    drop_ids = {r.memories[0].memory_id for r in drop}
    every = {keep_id, bob_id, *drop_ids}
    assert await ids_in(client, alice, cube) == every
    assert drop_ids <= await vector_hits(suite, cube, "quokka leaf")
    # A working-memory copy of a memory to drop repeats its text; it must go with it.
    channel = open_channel(suite.textmem.address)
    try:
        wm = await textmem_pb2_grpc.TextMemServiceStub(channel).ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=cube, user_id=alice, memory_ids=sorted(drop_ids))
        )
    finally:
        await channel.close()
    copies = {m.id for m in wm.memories}
    assert len(copies) == 2

    # The copies carry the tags too; this filter selects the originals only.
    drop_filter = {"tags": ["drop"], "memory_type": "LongTermMemory"}
    dry = await client.delete_memories(alice, cube, filter=drop_filter, dry_run=True)
    assert dry.deleted_count == 2
    assert await ids_in(client, alice, cube) == every | copies

    done = await client.delete_memories(alice, cube, filter=drop_filter)

    assert done.deleted_count == 2
    assert await ids_in(client, alice, cube) == {keep_id, bob_id}
    found = await client.search_memories(alice, [cube], "quokka leaf", top_k=20)
    assert {m.item.id for m in found.ranked} <= {keep_id, bob_id}
    hits = await vector_hits(suite, cube, "quokka leaf")
    assert not hits & (drop_ids | copies)
    assert {keep_id, bob_id} <= hits
    for memory_id in drop_ids:
        with pytest.raises(NotFound):
            await client.get_memory(alice, cube, memory_id)

    # By user: only bob's memory goes.
    assert (await client.delete_memories(alice, cube, filter={"user_id": bob})).deleted_count == 1
    assert await ids_in(client, alice, cube) == {keep_id}
    assert bob_id not in await vector_hits(suite, cube, "marmot collection")
    # A filter that matches nothing deletes nothing.
    assert (await client.delete_memories(alice, cube, filter={"session_id": "no-such-session"})).deleted_count == 0
    assert await ids_in(client, alice, cube) == {keep_id}


async def test_delete_by_time_range_and_session(client: AsyncMemosClient, unique: str) -> None:
    user, cube = f"tess-{unique}", f"times-{unique}"
    old = await client.add_memories(user, [cube], say("An older note about lighthouses."), session_id="s1")
    await asyncio.sleep(0.05)
    cut = time.time()
    await asyncio.sleep(0.05)
    new = await client.add_memories(user, [cube], say("A newer note about lighthouses."), session_id="s1")
    other = await client.add_memories(user, [cube], say("A note from another session."), session_id="s2")
    old_id, new_id, other_id = (r.memories[0].memory_id for r in (old, new, other))

    assert (
        await client.delete_memories(user, cube, filter={"session_id": "s1", "created_after": cut}, dry_run=True)
    ).deleted_count == 1
    assert (await client.delete_memories(user, cube, filter={"created_at": {"lt": cut}})).deleted_count == 1
    assert await ids_in(client, user, cube) == {new_id, other_id}
    assert old_id not in await ids_in(client, user, cube, include_archived=True)
    assert (await client.delete_memories(user, cube, filter={"session_id": "s2"})).deleted_count == 1
    assert await ids_in(client, user, cube) == {new_id}


async def test_archived_memories_go_only_when_the_filter_includes_them(  # type: ignore[no-untyped-def]
    client: AsyncMemosClient, gateway, unique: str
) -> None:
    user, cube = f"arch-{unique}", f"arch-{unique}"
    added = await client.add_memories(user, [cube], say("An archived thought about tides."), custom_tags=["t"])
    archived = memory_pb2.MemoryItem(id=added.memories[0].memory_id)
    archived.metadata.status = memory_pb2.MEMORY_STATUS_ARCHIVED
    await gateway.UpdateMemory(
        gateway_pb2.UpdateMemoryRequest(
            user_id=user, cube_id=cube, memory=archived, update_mask={"paths": ["metadata.status"]}
        )
    )
    assert (await client.delete_memories(user, cube, filter={"tags": ["t"]})).deleted_count == 0
    assert (
        await client.delete_memories(user, cube, filter={"tags": ["t"], "include_archived": True})
    ).deleted_count == 1
    assert await ids_in(client, user, cube, include_archived=True) == set()


# selectors and bad input --------------------------------------------------------------------------------
async def test_delete_needs_exactly_one_selector_and_a_narrowing_valid_filter(  # type: ignore[no-untyped-def]
    client: AsyncMemosClient, gateway, unique: str
) -> None:
    user, cube = f"sel-{unique}", f"sel-{unique}"
    added = await client.add_memories(user, [cube], say("Selectors keep this memory safe."), custom_tags=["x"])
    memory_id = added.memories[0].memory_id

    def req(**fields: object) -> gateway_pb2.DeleteMemoriesRequest:
        return gateway_pb2.DeleteMemoriesRequest(user_id=user, cube_id=cube, **fields)  # type: ignore[arg-type]

    after, before = timestamp_pb2.Timestamp(seconds=2_000_000_000), timestamp_pb2.Timestamp(seconds=1_000_000_000)
    cases = {
        "NO_SELECTOR": [req(), req(dry_run=True)],
        "CONFLICTING_SELECTORS": [
            req(memory_ids=[memory_id], all=True),
            req(memory_ids=[memory_id], filter=memory_pb2.MemoryFilter(tags=["x"])),
            req(all=True, filter=memory_pb2.MemoryFilter(tags=["x"])),
        ],
        # An empty filter never means "everything": that is what all is for.
        "EMPTY_FILTER": [
            req(filter=memory_pb2.MemoryFilter()),
            req(filter=memory_pb2.MemoryFilter(include_archived=True)),
        ],
        "UNKNOWN_MEMORY_TYPE": [
            req(filter=memory_pb2.MemoryFilter(memory_types=[99])),
            req(filter=memory_pb2.MemoryFilter(memory_types=[memory_pb2.MEMORY_TYPE_UNSPECIFIED])),
        ],
        "EMPTY_TIME_RANGE": [req(filter=memory_pb2.MemoryFilter(created_after=after, created_before=before))],
        "INVALID_TIMESTAMP": [req(filter=memory_pb2.MemoryFilter(created_after={"seconds": 10**12}))],
    }
    for reason, requests in cases.items():
        for r in requests:
            err = await refused(gateway.DeleteMemories(r))
            assert isinstance(err, InvalidArgument) and err.reason == reason, (reason, r, err)

    # The SDK refuses unknown filter fields and wrong types before sending, as for a search.
    for flt, reason in [
        ({"colour": "red"}, "UNKNOWN_FILTER_FIELD"),
        ({"user_id": 5}, "BAD_FILTER_VALUE"),
        ({"tags": [1, 2]}, "BAD_FILTER_VALUE"),
        ({"memory_type": "NoSuchMemory"}, "UNKNOWN_MEMORY_TYPE"),
        ({"created_at": {"around": "2024-01-01"}}, "UNKNOWN_FILTER_OPERATOR"),
    ]:
        with pytest.raises(InvalidArgument) as bad:
            await client.delete_memories(user, cube, filter=flt)
        assert bad.value.reason == reason
    with pytest.raises(InvalidArgument) as empty:
        await client.delete_memories(user, cube, filter={})
    assert empty.value.reason == "EMPTY_FILTER"

    assert await ids_in(client, user, cube) == {memory_id}


async def test_deleting_in_another_users_cube_is_denied(client: AsyncMemosClient, unique: str) -> None:
    alice, reader, mallory = f"alice-{unique}", f"reader-{unique}", f"mallory-{unique}"
    cube = f"private-{unique}"
    added = await client.add_memories(alice, [cube], say("Alice's secret garden plans."), custom_tags=["g"])
    await client.share_cube(alice, cube, reader, "reader")
    for user in (mallory, reader):
        for kwargs in ({"filter": {"tags": ["g"]}}, {"filter": {"user_id": alice}, "dry_run": True}, {"all": True}):
            with pytest.raises(PermissionDenied) as denied:
                await client.delete_memories(user, cube, **kwargs)  # type: ignore[arg-type]
            assert denied.value.reason == "CUBE_WRITE_DENIED"
    with pytest.raises(NotFound):
        await client.delete_memories(alice, f"missing-{unique}", filter={"tags": ["g"]})
    assert await ids_in(client, alice, cube) == {added.memories[0].memory_id}


# update history ----------------------------------------------------------------------------------------
async def test_updates_keep_history_until_the_memory_is_deleted(  # type: ignore[no-untyped-def]
    client: AsyncMemosClient, suite, unique: str
) -> None:
    user, cube = f"hist-{unique}", f"hist-{unique}"
    added = await client.add_memories(user, [cube], say("The capybara lives in a pond."), custom_tags=["v1"])
    memory_id = added.memories[0].memory_id
    first = (await client.get_memory(user, cube, memory_id)).memory

    await client.update_memory(user, cube, memory_id, memory="The capybara moved to a river.", tags=["v2"])
    await client.update_memory(user, cube, memory_id, memory="The capybara now lives by the sea.", key="home")

    plain = await client.get_memory(user, cube, memory_id)
    assert plain.memory.metadata.version == 3 and not plain.history
    got = await client.get_memory(user, cube, memory_id, include_history=True)
    assert got.memory.memory == "The capybara now lives by the sea."
    assert [h.metadata.version for h in got.history] == [2, 1]
    assert [h.memory for h in got.history] == ["The capybara moved to a river.", first.memory]
    assert list(got.history[0].metadata.tags) == ["v2"]
    assert list(got.history[1].metadata.tags) == list(first.metadata.tags)
    assert got.history[1].metadata.updated_at == first.metadata.updated_at
    assert got.history[0].metadata.updated_at.ToNanoseconds() < got.memory.metadata.updated_at.ToNanoseconds()
    assert all(h.id == memory_id for h in got.history)

    with pytest.raises(NotFound):
        await client.update_memory(user, cube, "0" * 32, memory="nothing here")

    await client.delete_memories(user, cube, [memory_id])

    with pytest.raises(NotFound):
        await client.get_memory(user, cube, memory_id)
    db = sqlite3.connect(suite.data_dir / "graph.sqlite3")
    try:
        left = db.execute("SELECT COUNT(*) FROM memory_history WHERE memory_id = ?", (memory_id,)).fetchone()
        assert left == (0,)
        assert db.execute("SELECT COUNT(*) FROM memory_history WHERE body LIKE '%capybara%'").fetchone() == (0,)
    finally:
        db.close()
