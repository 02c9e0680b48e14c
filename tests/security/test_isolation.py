"""Tenant isolation through the gateway: every RPC, tried by a user without access.

Alice owns a cube with memories; Mallory owns her own cube and has no access to Alice's.
For every gateway RPC, Mallory tries to read, search, list, update, delete, share, take over
or chat with Alice's data — directly, through her own cube with Alice's memory ids,
through filters naming Alice, and through ids guessed from Alice's cube. Every attempt must
be refused or return nothing of Alice's, and Alice's cube must be unchanged afterwards.
A reader (Bob) may read and nothing more. The number of attempts is printed after the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from memos.client import AsyncMemosClient, NotFound, PermissionDenied
from shared.errors import AlreadyExists, InvalidArgument
from tests.figures import report_figure

pytestmark = pytest.mark.timeout(180)

SECRET = "Alice's bank PIN is 4721 and her passport number is X1234567."
REFUSED = (PermissionDenied, NotFound, AlreadyExists, InvalidArgument)


async def collect(events) -> list:  # type: ignore[no-untyped-def]
    return [e async for e in events]


async def test_no_rpc_gives_another_user_access(client: AsyncMemosClient, unique: str) -> None:
    alice, mallory, bob = f"alice-{unique}", f"mallory-{unique}", f"bob-{unique}"
    a_cube, m_cube = f"alice-cube-{unique}", f"mallory-cube-{unique}"
    added = await client.add_memories(alice, [a_cube], [{"role": "user", "content": SECRET}])
    secret_id = added.memories[0].memory_id
    await client.add_memories(mallory, [m_cube], [{"role": "user", "content": "my grocery list: eggs"}])
    before = sorted((m.id, m.memory) for m in (await client.list_memories(alice, a_cube)).memories)

    refused: list[str] = []
    leaked: list[str] = []

    async def must_refuse(name: str, attempt: Callable[[], Awaitable[object]]) -> None:
        try:
            await attempt()
        except REFUSED:
            refused.append(name)
            return
        leaked.append(f"{name}: not refused")

    async def must_not_leak(name: str, attempt: Callable[[], Awaitable[object]]) -> None:
        try:
            result = await attempt()
        except REFUSED:
            refused.append(name)
            return
        if "4721" in str(result) or secret_id in str(result) or a_cube in str(result):
            leaked.append(f"{name}: returned Alice's data")
        else:
            refused.append(name)

    c = client
    # Reads of Alice's cube.
    await must_refuse("search alice's cube", lambda: c.search_memories(mallory, [a_cube], "bank PIN"))
    await must_refuse(
        "search alice's and own cube together", lambda: c.search_memories(mallory, [m_cube, a_cube], "bank PIN")
    )
    await must_refuse("get alice's memory in alice's cube", lambda: c.get_memory(mallory, a_cube, secret_id))
    await must_refuse("list alice's cube", lambda: c.list_memories(mallory, a_cube))
    await must_refuse("chat reading alice's cube", lambda: collect(c.chat(mallory, "PIN?", readable_cube_ids=[a_cube])))
    # Alice's ids and name through Mallory's own cube.
    await must_refuse("get alice's memory id through own cube", lambda: c.get_memory(mallory, m_cube, secret_id))
    await must_not_leak(
        "search own cube filtered to alice",
        lambda: c.search_memories(mallory, [m_cube], "bank PIN", filter={"user_id": alice}),
    )
    await must_not_leak(
        "list own cube filtered to alice", lambda: c.list_memories(mallory, m_cube, filter={"user_id": alice})
    )
    await must_not_leak("search own cube for alice's words", lambda: c.search_memories(mallory, [m_cube], SECRET))
    await must_not_leak(
        "chat on own cube about alice's words", lambda: collect(c.chat(mallory, SECRET, readable_cube_ids=[m_cube]))
    )
    await must_not_leak("list cubes", lambda: c.list_cubes(mallory))
    # Writes to Alice's cube or items.
    await must_refuse("add to alice's cube", lambda: c.add_memories(mallory, [a_cube], "I am Alice now"))
    await must_refuse("add to own and alice's cube together", lambda: c.add_memories(mallory, [m_cube, a_cube], "both"))
    await must_refuse(
        "update alice's memory in alice's cube", lambda: c.update_memory(mallory, a_cube, secret_id, memory="x")
    )
    await must_refuse(
        "update alice's memory id through own cube", lambda: c.update_memory(mallory, m_cube, secret_id, memory="x")
    )
    await must_refuse("delete alice's memory", lambda: c.delete_memories(mallory, a_cube, [secret_id]))
    await must_refuse("delete all of alice's cube", lambda: c.delete_memories(mallory, a_cube, all=True))
    await must_not_leak(
        "delete alice's memory id through own cube", lambda: c.delete_memories(mallory, m_cube, [secret_id])
    )
    await must_refuse(
        "chat storing into alice's cube",
        lambda: collect(
            c.chat(mallory, "hi", readable_cube_ids=[m_cube], writable_cube_ids=[a_cube], add_message_on_answer=True)
        ),
    )
    # Cube administration.
    await must_refuse("share alice's cube with self", lambda: c.share_cube(mallory, a_cube, mallory, "writer"))
    await must_refuse("share alice's cube with others", lambda: c.share_cube(mallory, a_cube, bob, "reader"))
    await must_refuse("create a cube with alice's cube id", lambda: c.create_cube(mallory, a_cube))
    await must_refuse("delete alice's cube", lambda: c.delete_cube(mallory, a_cube))

    # A reader may read and nothing else.
    await c.share_cube(alice, a_cube, bob, "reader")
    assert (await c.search_memories(bob, [a_cube], "bank PIN")).ranked[0].item.id == secret_id
    await must_refuse("reader adds", lambda: c.add_memories(bob, [a_cube], "reader writes"))
    await must_refuse("reader updates", lambda: c.update_memory(bob, a_cube, secret_id, memory="x"))
    await must_refuse("reader deletes", lambda: c.delete_memories(bob, a_cube, [secret_id]))
    await must_refuse("reader shares on", lambda: c.share_cube(bob, a_cube, mallory, "reader"))
    await must_refuse("reader deletes the cube", lambda: c.delete_cube(bob, a_cube))
    await must_refuse(
        "reader chats storing into the cube",
        lambda: collect(
            c.chat(bob, "hi", readable_cube_ids=[a_cube], writable_cube_ids=[a_cube], add_message_on_answer=True)
        ),
    )
    # Revoked: back to nothing.
    await c.share_cube(alice, a_cube, bob, "none")
    await must_refuse("revoked reader searches", lambda: c.search_memories(bob, [a_cube], "bank PIN"))
    await must_refuse("revoked reader gets", lambda: c.get_memory(bob, a_cube, secret_id))

    attempts = len(refused) + len(leaked)
    report_figure("isolation", f"{attempts} cross-tenant attempts over every gateway RPC: {len(leaked)} got through")
    assert not leaked, leaked
    after = sorted((m.id, m.memory) for m in (await client.list_memories(alice, a_cube)).memories)
    assert after == before  # nothing of Alice's was changed by any attempt
