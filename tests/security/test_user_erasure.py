"""Erasure of a user's data (DeleteUserData) through the gateway over real gRPC.

The user owns a cube, writes into cubes of another user (one they may still write, one whose
grant was since taken away), can read a third, and has update history and a working-memory copy
made for the other user. After the erasure nothing of theirs is found by search, get or list,
nor in any table of the SQLite graph or the vector store; the other user's memories in the
shared cubes stay. Only the user (or an admin key acting for them) may erase.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memos.client import AsyncMemosClient, InvalidArgument, NotFound, PermissionDenied
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.gateway.auth import create_key
from services.textmem.models import MEMORY_TYPES, MemoryFilter
from shared.channels import open_channel
from tests.conftest import start_suite, stop_suite

pytestmark = pytest.mark.timeout(180)

MARK = "wombatrix"  # the erased user's word, found nowhere else in the test data
OTHER = "pelicanor"  # the other user's word


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]


async def listed(client: AsyncMemosClient, user: str, cube: str) -> dict[str, str]:
    resp = await client.list_memories(user, cube, page_size=1000, filter={"include_archived": True})
    return {m.id: m.metadata.user_id for m in resp.memories}


async def test_erasing_a_user_leaves_nothing_of_theirs_and_keeps_the_others_data(  # type: ignore[no-untyped-def]
    client: AsyncMemosClient, suite, unique: str
) -> None:
    erased, other = f"erased-{unique}", f"other-{unique}"
    own, shared, revoked, readable = (f"{name}-{unique}" for name in ("own", "shared", "revoked", "readable"))
    # The erased user's own cube, which the other user writes too (it goes whole).
    await client.add_memories(erased, [own], say(f"My {MARK} diary starts today."), custom_tags=[f"t-{MARK}"])
    await client.share_cube(erased, own, other, "writer")
    await client.add_memories(other, [own], say(f"A {OTHER} note left in a friend's cube."))
    # The other user's cubes: one the erased user writes, one they wrote before losing access,
    # one they only read.
    for cube in (shared, revoked, readable):
        await client.add_memories(other, [cube], say(f"The {OTHER} flies over the bay of {cube}."))
    await client.share_cube(other, shared, erased, "writer")
    await client.share_cube(other, revoked, erased, "writer")
    await client.share_cube(other, readable, erased, "reader")
    in_shared = await client.add_memories(
        erased, [shared], say(f"My {MARK} likes the shared garden."), session_id="s", custom_tags=["mine"]
    )
    in_revoked = await client.add_memories(erased, [revoked], say(f"The {MARK} visited once."))
    await client.share_cube(other, revoked, erased, "none")
    mine_id = in_shared.memories[0].memory_id
    await client.update_memory(erased, shared, mine_id, memory=f"My {MARK} loves the shared garden.")
    # A working-memory copy of the erased user's memory, made for the other user.
    channel = open_channel(suite.textmem.address)
    try:
        wm = await textmem_pb2_grpc.TextMemServiceStub(channel).ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=shared, user_id=other, memory_ids=[mine_id])
        )
    finally:
        await channel.close()
    copy_id = wm.memories[0].id
    # The copy is the other user's (user_id) but repeats the erased user's text: it must go too.
    others_before = {
        cube: {i for i, u in (await listed(client, other, cube)).items() if u == other} - {copy_id}
        for cube in (shared, revoked, readable)
    }
    assert all(others_before.values())
    erased_ids = {mine_id, in_revoked.memories[0].memory_id, copy_id}

    done = await client.delete_user_data(erased, request_id=f"erase-{unique}")

    assert list(done.deleted_cube_ids) == [own]
    assert sorted(done.cleaned_cube_ids) == sorted([shared, revoked])
    assert sorted(done.revoked_cube_ids) == sorted([shared, readable])
    assert done.deleted_memories == 2 + 2  # own cube (both users' memories) + one each in shared, revoked

    # Through the API: the user has no cubes, no access, nothing is found or listed.
    assert not (await client.list_cubes(erased)).cubes
    for cube in (shared, readable):
        with pytest.raises(PermissionDenied):
            await client.search_memories(erased, [cube], MARK)
    with pytest.raises(NotFound):
        await client.search_memories(other, [own], MARK)
    for cube in (shared, revoked, readable):
        assert set(await listed(client, other, cube)) == others_before[cube]
        found = await client.search_memories(other, [cube], f"{MARK} garden diary visited", top_k=50)
        assert {m.item.id for m in found.ranked} <= others_before[cube]
        assert all(MARK not in m.item.memory for m in found.ranked)
    for memory_id in erased_ids:
        with pytest.raises(NotFound):
            await client.get_memory(other, shared, memory_id)
    assert [c.cube_id for c in (await client.list_cubes(other)).cubes] == sorted([shared, revoked, readable])

    # Inside the stores.
    db = sqlite3.connect(suite.data_dir / "graph.sqlite3")
    try:
        assert db.execute("SELECT COUNT(*) FROM memories WHERE user_id = ?", (erased,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memories WHERE memory LIKE ?", (f"%{MARK}%",)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memories WHERE cube_id = ?", (own,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM sources WHERE body LIKE ?", (f"%{MARK}%",)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memory_tags WHERE tag LIKE ?", (f"%{MARK}%",)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memory_history WHERE body LIKE ?", (f"%{MARK}%",)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memories_fts WHERE memories_fts MATCH ?", (MARK,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM cubes WHERE owner_id = ? OR cube_id = ?", (erased, own)).fetchone() == (
            0,
        )
        assert db.execute("SELECT COUNT(*) FROM cube_members WHERE user_id = ?", (erased,)).fetchone() == (0,)
    finally:
        db.close()
    memory = suite.memory
    qvec = (await asyncio.to_thread(memory.embedder.embed, [f"{MARK} diary garden visited"]))[0]
    everything = MemoryFilter(memory_types=MEMORY_TYPES, include_archived=True)
    for cube in (own, shared, revoked, readable):
        hits = {i for i, _ in await asyncio.to_thread(memory.vectors.search, cube, qvec, everything, 100)}
        assert not hits & erased_ids, cube
        assert hits <= others_before.get(cube, set()), cube

    # Idempotent: a retry finds nothing left.
    again = await client.delete_user_data(erased, request_id=f"erase-{unique}")
    assert again.deleted_memories == 0 and not again.deleted_cube_ids
    assert not again.cleaned_cube_ids and not again.revoked_cube_ids


async def test_erasure_needs_a_user(client: AsyncMemosClient) -> None:
    with pytest.raises(InvalidArgument) as err:
        await client.delete_user_data("")
    assert err.value.reason == "MISSING_USER_ID"


@pytest.fixture(scope="module")
async def keyed(tmp_path_factory, embedder) -> AsyncIterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    keys = tmp_path_factory.mktemp("erasure-keys") / "keys.json"
    create_key(keys, "bootstrap")
    suite = await start_suite(tmp_path_factory.mktemp("erasure"), embedder, api_keys_file=keys)
    yield suite.address, keys
    await stop_suite(suite)


async def test_only_the_user_or_an_admin_may_erase_the_user(keyed, unique) -> None:  # type: ignore[no-untyped-def]
    address, keys = keyed
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    alice_key, bob_key = create_key(keys, alice), create_key(keys, bob)
    admin_key = create_key(keys, f"ops-{unique}", "admin")
    await asyncio.sleep(0.6)  # a new key is looked up again after half a second at most
    async with AsyncMemosClient(address, api_key=bob_key) as as_bob:
        await as_bob.add_memories(bob, [f"{bob}-cube"], say(f"Bob's {OTHER} photos."))
    async with AsyncMemosClient(address, api_key=alice_key) as as_alice:
        with pytest.raises(PermissionDenied) as denied:
            await as_alice.delete_user_data(bob)
        assert denied.value.reason == "USER_MISMATCH"
    async with AsyncMemosClient(address, api_key=bob_key) as as_bob:
        assert len((await as_bob.list_memories(bob, f"{bob}-cube")).memories) == 1
    async with AsyncMemosClient(address, api_key=admin_key) as as_admin:
        done = await as_admin.delete_user_data(bob)
        assert list(done.deleted_cube_ids) == [f"{bob}-cube"] and done.deleted_memories == 1
    async with AsyncMemosClient(address, api_key=alice_key) as as_alice:
        await as_alice.add_memories(alice, [f"{alice}-cube"], say("Alice's own note."))
        assert (await as_alice.delete_user_data(alice)).deleted_memories == 1
