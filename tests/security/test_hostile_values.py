"""Values found by the gateway fuzz (test_fuzz_gateway.py), kept as regular tests.

Protobuf carries any int64 in a Timestamp and any double in a Struct; textmem could not
convert the out-of-range ones (``ValueError`` -> INTERNAL, or a cube's INTERNAL status in
an OK search) nor write NaN/infinity as JSON. The gateway now refuses them up front with
INVALID_ARGUMENT, naming the field, and nothing is written.
"""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from memos.client import AsyncMemosClient, MemosError
from memos.common.v1 import memory_pb2, message_pb2
from memos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.grpc_errors import from_rpc_error

BAD_TIMESTAMPS = [
    timestamp_pb2.Timestamp(seconds=253_402_300_800),  # year 10000
    timestamp_pb2.Timestamp(seconds=-62_135_596_801),  # before year 1
    timestamp_pb2.Timestamp(seconds=1 << 62),
    timestamp_pb2.Timestamp(seconds=5, nanos=-1),
    timestamp_pb2.Timestamp(seconds=5, nanos=1_000_000_000),
]


@pytest.fixture
async def stub(suite):  # type: ignore[no-untyped-def]
    channel = grpc.aio.insecure_channel(suite.address)
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()


async def refused(call) -> MemosError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return from_rpc_error(info.value)


def message(text: str, **kwargs: object) -> message_pb2.ChatMessage:
    return message_pb2.ChatMessage(
        role=message_pb2.ROLE_USER, content=[message_pb2.ContentPart(text=message_pb2.TextPart(text=text))], **kwargs
    )


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


@pytest.mark.parametrize("ts", BAD_TIMESTAMPS, ids=lambda t: f"{t.seconds}s{t.nanos}ns")
async def test_add_with_an_impossible_chat_time_is_refused_and_writes_nothing(stub, suite, unique, ts) -> None:  # type: ignore[no-untyped-def]
    cube = f"ts-{unique}"
    req = gateway_pb2.AddMemoriesRequest(
        user_id=f"u-{unique}", writable_cube_ids=[cube], messages=[message("hello", chat_time=ts)]
    )
    err = await refused(stub.AddMemories(req))
    assert (err.code.name, err.reason) == ("INVALID_ARGUMENT", "INVALID_TIMESTAMP")
    assert err.metadata["field"] == "messages[0].chat_time"
    assert await asyncio.to_thread(suite.memory.graph.count, cube) == 0
    assert await asyncio.to_thread(suite.memory.graph.get_cube, cube) is None  # refused before the cube was made


@pytest.mark.parametrize("ts", BAD_TIMESTAMPS[:2], ids=["year-10000", "before-year-1"])
async def test_filters_with_an_impossible_time_are_refused(stub, client: AsyncMemosClient, unique, ts) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"u-{unique}", f"f-{unique}"
    await client.add_memories(user, [cube], [{"role": "user", "content": "the filter target"}])
    flt = memory_pb2.MemoryFilter(created_before=ts)
    for call in (
        stub.ListMemories(gateway_pb2.ListMemoriesRequest(user_id=user, cube_id=cube, filter=flt)),
        # Before the fix: OK, with the cube's bucket carrying INTERNAL.
        stub.SearchMemories(
            gateway_pb2.SearchMemoriesRequest(user_id=user, readable_cube_ids=[cube], query="target", filter=flt)
        ),
    ):
        err = await refused(call)
        assert (err.code.name, err.reason, err.metadata["field"]) == (
            "INVALID_ARGUMENT",
            "INVALID_TIMESTAMP",
            "filter.created_before",
        )


async def test_the_extremes_of_the_timestamp_range_are_accepted(stub, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"u-{unique}", f"edge-{unique}"
    for seconds in (0, 253_402_300_799):
        ts = timestamp_pb2.Timestamp(seconds=seconds)
        req = gateway_pb2.AddMemoriesRequest(
            user_id=user, writable_cube_ids=[cube], messages=[message(f"said at {seconds}", chat_time=ts)]
        )
        resp = await stub.AddMemories(req)
        assert resp.memories
    flt = memory_pb2.MemoryFilter(created_after=timestamp_pb2.Timestamp(seconds=-62_135_596_800))
    listed = await stub.ListMemories(gateway_pb2.ListMemoriesRequest(user_id=user, cube_id=cube, filter=flt))
    assert len(listed.memories) == 2


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
async def test_non_finite_numbers_in_info_are_refused(stub, client: AsyncMemosClient, suite, unique, number) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"u-{unique}", f"n-{unique}"
    req = gateway_pb2.AddMemoriesRequest(
        user_id=user,
        writable_cube_ids=[cube],
        messages=[message("hello")],
        info=struct({"ok": 1, "deep": {"list": [1, number]}}),
    )
    err = await refused(stub.AddMemories(req))
    assert (err.code.name, err.reason) == ("INVALID_ARGUMENT", "NON_FINITE_NUMBER")
    assert err.metadata["field"].startswith("info.fields['deep']")
    assert await asyncio.to_thread(suite.memory.graph.count, cube) == 0

    added = await client.add_memories(user, [cube], [{"role": "user", "content": "keep me as I am"}])
    memory_id = added.memories[0].memory_id
    update = gateway_pb2.UpdateMemoryRequest(
        user_id=user,
        cube_id=cube,
        memory=memory_pb2.MemoryItem(id=memory_id, metadata=memory_pb2.MemoryMetadata(info=struct({"x": number}))),
        update_mask=field_mask_pb2.FieldMask(paths=["metadata.info"]),
    )
    err = await refused(stub.UpdateMemory(update))
    assert (err.code.name, err.reason) == ("INVALID_ARGUMENT", "NON_FINITE_NUMBER")
    got = await client.get_memory(user, cube, memory_id)
    assert got.memory.memory.endswith("keep me as I am") and "x" not in got.memory.metadata.info.fields


async def test_the_last_nanosecond_of_year_9999_is_accepted(stub, client: AsyncMemosClient, unique) -> None:  # type: ignore[no-untyped-def]
    """A float rounds this Timestamp up to year 10000: it was INTERNAL until times were clamped."""
    ts = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    user, cube = f"u-{unique}", f"edge9-{unique}"
    req = gateway_pb2.AddMemoriesRequest(
        user_id=user, writable_cube_ids=[cube], messages=[message("the very end", chat_time=ts)]
    )
    [stored] = (await stub.AddMemories(req)).memories
    # Written to the minute, like any other time; the source keeps a Timestamp every client can read.
    assert "[9999-12-31 23:59]: the very end" in stored.memory
    got = await client.get_memory(user, cube, stored.memory_id)
    kept = got.memory.metadata.sources[0].chat_time
    assert (kept.seconds, kept.nanos // 1_000_000) == (253_402_300_799, 999)


HUGE_ID = "\U0009dbf7'}) MATCH (n) DETACH DELETE n //" * 3000  # ~110k characters, 4-byte ones among them


async def test_a_huge_memory_id_is_refused_not_echoed(stub, client: AsyncMemosClient, unique) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzz: textmem's NOT_FOUND quoted the id in its message and details, which travel in
    trailing metadata; past gRPC's 16 KiB limit the gateway got RESOURCE_EXHAUSTED ("received metadata
    size exceeds hard limit") instead. The gateway now refuses ids longer than an id can be."""
    user, cube = f"u-{unique}", f"ids-{unique}"
    await client.add_memories(user, [cube], [{"role": "user", "content": "an ordinary memory"}])
    calls = {
        "memory_id": stub.GetMemory(gateway_pb2.GetMemoryRequest(user_id=user, cube_id=cube, memory_id=HUGE_ID)),
        "memory.id": stub.UpdateMemory(
            gateway_pb2.UpdateMemoryRequest(
                user_id=user,
                cube_id=cube,
                memory=memory_pb2.MemoryItem(id=HUGE_ID, memory="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["memory"]),
            )
        ),
        "memory_ids": stub.DeleteMemories(
            gateway_pb2.DeleteMemoriesRequest(user_id=user, cube_id=cube, memory_ids=["0" * 32, HUGE_ID])
        ),
    }
    for field, call in calls.items():
        err = await refused(call)
        assert (err.code.name, err.reason, err.metadata["field"]) == ("INVALID_ARGUMENT", "MEMORY_ID_TOO_LONG", field)
    assert len((await client.list_memories(user, cube)).memories) == 1


async def test_textmem_answers_a_huge_memory_id_with_not_found(suite, unique) -> None:  # type: ignore[no-untyped-def]
    from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc

    async with grpc.aio.insecure_channel(suite.textmem.address) as channel:
        textmem = textmem_pb2_grpc.TextMemServiceStub(channel)
        err = await refused(textmem.GetMemory(textmem_pb2.GetMemoryRequest(cube_id=f"c-{unique}", memory_id=HUGE_ID)))
    assert err.code.name == "NOT_FOUND"
