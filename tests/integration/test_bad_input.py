"""Bad input gets a clear error with a reason, and leaves nothing half-written."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from memos.client import AsyncMemosClient, InvalidArgument, MemosError
from memos.common.v1 import memory_pb2, message_pb2
from memos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.grpc_errors import from_rpc_error
from tests.conftest import start_suite, stop_suite

HELLO = [{"role": "user", "content": "hello there"}]


def text_message(role: int, text: str) -> message_pb2.ChatMessage:
    return message_pb2.ChatMessage(role=role, content=[message_pb2.ContentPart(text=message_pb2.TextPart(text=text))])


@pytest.fixture
async def stub(suite):  # type: ignore[no-untyped-def]
    channel = grpc.aio.insecure_channel(suite.address)
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()


async def raw_error(call) -> MemosError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return from_rpc_error(info.value)


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({"user_id": "", "writable_cube_ids": ["c"]}, "MISSING_USER_ID"),
        ({"user_id": "u", "writable_cube_ids": []}, "NO_CUBES"),
        ({"user_id": "u", "writable_cube_ids": [""]}, "EMPTY_CUBE_ID"),
        ({"user_id": "u", "writable_cube_ids": ["c" * 300]}, "CUBE_ID_TOO_LONG"),
        ({"user_id": "u", "writable_cube_ids": ["c"], "mode": 7}, "UNKNOWN_MODE"),
        ({"user_id": "u", "writable_cube_ids": ["c"], "async_mode": 9}, "UNKNOWN_ASYNC_MODE"),
    ],
)
async def test_add_rejects_bad_envelopes(stub, request_kwargs, reason) -> None:  # type: ignore[no-untyped-def]
    req = gateway_pb2.AddMemoriesRequest(messages=[text_message(message_pb2.ROLE_USER, "hi")], **request_kwargs)
    err = await raw_error(stub.AddMemories(req))
    assert err.code.name == "INVALID_ARGUMENT" and err.reason == reason
    assert not err.retriable


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            message_pb2.ChatMessage(
                role=message_pb2.ROLE_UNSPECIFIED,
                content=[message_pb2.ContentPart(text=message_pb2.TextPart(text="x"))],
            ),
            "INVALID_ROLE",
        ),
        (
            message_pb2.ChatMessage(role=42, content=[message_pb2.ContentPart(text=message_pb2.TextPart(text="x"))]),
            "INVALID_ROLE",
        ),
        (message_pb2.ChatMessage(role=message_pb2.ROLE_USER), "EMPTY_MESSAGE"),
        (
            message_pb2.ChatMessage(role=message_pb2.ROLE_USER, content=[message_pb2.ContentPart()]),
            "EMPTY_CONTENT_PART",
        ),
        (text_message(message_pb2.ROLE_TOOL, "result without a call id"), "MISSING_TOOL_CALL_ID"),
    ],
)
async def test_add_rejects_malformed_messages_and_writes_nothing(stub, suite, unique, message, reason) -> None:  # type: ignore[no-untyped-def]
    cube = f"malformed-{unique}"
    good = text_message(message_pb2.ROLE_USER, "a perfectly fine message")
    req = gateway_pb2.AddMemoriesRequest(user_id=f"u-{unique}", writable_cube_ids=[cube], messages=[good, message])
    err = await raw_error(stub.AddMemories(req))
    assert err.code.name == "INVALID_ARGUMENT" and err.reason == reason
    assert err.metadata.get("message_index") == "1"
    assert await asyncio.to_thread(suite.memory.graph.count, cube) == 0
    assert await asyncio.to_thread(suite.memory.vectors.count, cube) == 0


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "wizard", "content": "x"}], "UNKNOWN_ROLE"),
        ([{"role": "user", "content": [{"type": "hologram"}]}], "UNKNOWN_CONTENT_TYPE"),
        ([{"role": "user", "content": [{"type": "text", "text": 42}]}], "NON_STRING_TEXT"),
        ([{"role": "user", "content": 42}], "NON_STRING_TEXT"),
        ([{"role": "user"}], "MISSING_CONTENT"),
        (["not a dict"], "BAD_MESSAGE"),
    ],
)
async def test_sdk_rejects_malformed_openai_messages(client: AsyncMemosClient, messages, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as err:
        await client.add_memories("u", ["c"], messages)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"query": ""}, "EMPTY_QUERY"),
        ({"query": "q", "top_k": 101}, "TOP_K_OUT_OF_RANGE"),
        ({"query": "q", "top_k": -1}, "TOP_K_OUT_OF_RANGE"),
        ({"query": "q", "pref_top_k": 1000}, "TOP_K_OUT_OF_RANGE"),
        ({"query": "q", "filter": memory_pb2.MemoryFilter(memory_types=[99])}, "UNKNOWN_MEMORY_TYPE"),
        ({"query": "q", "readable_cube_ids": []}, "NO_CUBES"),
    ],
)
async def test_search_rejects_bad_requests(stub, kwargs, reason) -> None:  # type: ignore[no-untyped-def]
    base = {"user_id": "u", "readable_cube_ids": ["c"]}
    err = await raw_error(stub.SearchMemories(gateway_pb2.SearchMemoriesRequest(**{**base, **kwargs})))
    assert err.code.name == "INVALID_ARGUMENT" and err.reason == reason


async def test_filters_on_unknown_fields_are_refused(client: AsyncMemosClient) -> None:
    with pytest.raises(InvalidArgument) as err:
        await client.search_memories("u", ["c"], "q", filter={"colour": "blue"})
    assert err.value.reason == "UNKNOWN_FILTER_FIELD" and err.value.metadata["field"] == "colour"


async def test_an_expired_deadline_is_deadline_exceeded(client: AsyncMemosClient, unique: str) -> None:
    await client.add_memories(f"u-{unique}", [f"dl-{unique}"], HELLO)
    with pytest.raises(MemosError) as err:
        # A second in the past when the call starts. A deadline of "now" (timeout=0) or 1 µs ahead
        # races gRPC's deadline timer against the loopback answer: 200 of 300 such searches came
        # back OK in one probe (and once in CI); a second in the past failed 300 of 300.
        await client.search_memories(f"u-{unique}", [f"dl-{unique}"], "hello", timeout=-1.0)
    assert err.value.code.name == "DEADLINE_EXCEEDED"
    assert err.value.retriable


async def test_oversize_requests_are_resource_exhausted(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    small = await start_suite(tmp_path, embedder, max_request_bytes=64 * 1024)
    try:
        async with AsyncMemosClient(small.address) as c:
            with pytest.raises(MemosError) as err:
                await c.add_memories("u", ["big"], [{"role": "user", "content": "x" * 100_000}])
            assert err.value.code.name == "RESOURCE_EXHAUSTED"
            assert "larger than max" in err.value.message
            with pytest.raises(MemosError):
                await c.list_memories("u", "big")  # the cube was never created
    finally:
        await stop_suite(small)


@pytest.mark.parametrize(
    "hostile",
    [
        'a" or cube_key != "',
        "x') OR 1=1 --",
        'cube\\"]',
        "} RETURN n //",
        'id in ["*"]',
        "ünïcødé \u202e\n\t",
    ],
)
async def test_hostile_ids_are_taken_literally_and_stay_isolated(
    client: AsyncMemosClient, unique: str, hostile: str
) -> None:
    user = f"mallory-{unique}"
    victim_cube = f"victim-{unique}"
    await client.add_memories(
        f"victim-user-{unique}", [victim_cube], [{"role": "user", "content": "the secret is 4242"}]
    )
    hostile_cube = hostile + unique
    await client.add_memories(user, [hostile_cube], [{"role": "user", "content": "my own harmless note"}])
    resp = await client.search_memories(user, [hostile_cube], "secret 4242", top_k=10)
    texts = [m.item.memory for m in resp.text_mem[0].memories]
    assert texts and all("4242" not in t for t in texts)
    assert all(m.item.metadata.cube_id == hostile_cube for m in resp.text_mem[0].memories)
    listed = await client.list_memories(user, hostile_cube)
    assert [m.metadata.cube_id for m in listed.memories] == [hostile_cube]
