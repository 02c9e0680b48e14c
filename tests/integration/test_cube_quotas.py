"""Per-cube quotas (MEMOS_MAX_MEMORIES_PER_CUBE, MEMOS_MAX_BYTES_PER_CUBE) over real gRPC: the
gateway's sync add, WriteMemories (what ingest and the scheduler's refinement call), updates and
working-memory replacement, on the embedded stores (SQLite, Milvus Lite) and the real embedder.

A refused write fails RESOURCE_EXHAUSTED with the limit, the usage and the cube in its details and
leaves the cube as it was (graph and vectors); deletes free room; a re-add that dedupe merges
into existing memories is never refused; concurrent adds never pass the quota together."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2

from memos.client import AsyncMemosClient, MemosClient, ResourceExhausted
from memos.common.v1 import memory_pb2
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.textmem.app import build_memory
from services.textmem.app import build_server as build_textmem
from services.textmem.memory import TextMemory
from services.textmem.models import MemoryFilter
from services.textmem.quota import CubeQuota
from services.textmem.settings import TextMemSettings
from shared.channels import open_channel
from shared.errors import MemosError
from shared.grpc_errors import from_rpc_error
from shared.server import GrpcServer

pytestmark = pytest.mark.timeout(300)

MAX_MEMORIES = 3
MAX_BYTES = 600


@dataclass
class QuotaSuite:
    textmem: GrpcServer
    gateway: GrpcServer
    memory: TextMemory
    stub: textmem_pb2_grpc.TextMemServiceStub
    channel: grpc.aio.Channel


@pytest.fixture(scope="module")
async def qs(tmp_path_factory: pytest.TempPathFactory, embedder) -> AsyncIterator[QuotaSuite]:  # type: ignore[no-untyped-def]
    # Built from the settings (as the service is), so that the MEMOS_ settings' wiring is tested too.
    settings = TextMemSettings(
        listen_addr="127.0.0.1:0",
        data_dir=tmp_path_factory.mktemp("quotas"),
        log_level="WARNING",
        max_memories_per_cube=MAX_MEMORIES,
        max_bytes_per_cube=MAX_BYTES,
    )
    memory = build_memory(settings, embedder=embedder)
    assert memory.quota == CubeQuota(MAX_MEMORIES, MAX_BYTES)
    textmem = build_textmem(settings, memory)
    await textmem.start()
    gateway = build_gateway(GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address))
    await gateway.start()
    channel = open_channel(textmem.address)
    yield QuotaSuite(textmem, gateway, memory, textmem_pb2_grpc.TextMemServiceStub(channel), channel)
    await channel.close()
    await gateway.stop(1.0)
    await textmem.stop(1.0)


@pytest.fixture
async def client(qs: QuotaSuite) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(qs.gateway.address)
    yield c
    await c.close()


@pytest.fixture
def cube() -> str:
    return f"quota-{uuid.uuid4().hex[:10]}"


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]


async def refused(call) -> MemosError:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return from_rpc_error(exc)
    raise AssertionError("the call succeeded")


async def stored(qs: QuotaSuite, cube: str) -> dict[str, str]:
    """id -> text of every memory of the cube the graph holds (any type or status)."""
    everything = MemoryFilter(memory_types=("WorkingMemory", "LongTermMemory"), include_archived=True)
    page, _ = await asyncio.to_thread(qs.memory.graph.list_memories, cube, everything, 1000)
    return {m.id: m.memory for m in page}


async def vector_ids(qs: QuotaSuite, cube: str, text: str) -> set[str]:
    """Ids the vector store itself holds for the cube (searched with the text, any type or status)."""
    qvec = (await asyncio.to_thread(qs.memory.embedder.embed, [text]))[0]
    everything = MemoryFilter(memory_types=("WorkingMemory", "LongTermMemory"), include_archived=True)
    return {i for i, _ in await asyncio.to_thread(qs.memory.vectors.search, cube, qvec, everything, 100)}


def candidate(text: str) -> textmem_pb2.MemoryCandidate:
    return textmem_pb2.MemoryCandidate(
        memory=text, metadata=memory_pb2.MemoryMetadata(memory_type=memory_pb2.MEMORY_TYPE_LONG_TERM)
    )


FACTS = [
    "My violin lessons are on Mondays.",
    "The cat sleeps on the red sofa.",
    "We planted tomatoes in April.",
]


async def test_an_add_past_the_memory_quota_is_refused_whole_and_a_delete_frees_room(
    client: AsyncMemosClient, qs: QuotaSuite, cube: str
) -> None:
    user = f"user-{cube}"
    for fact in FACTS:
        await client.add_memories(user, [cube], say(fact))
    before = await stored(qs, cube)
    assert len(before) == MAX_MEMORIES

    with pytest.raises(ResourceExhausted) as err:
        await client.add_memories(user, [cube], say("The axolotl named Quibble glows at night."))
    e = err.value
    assert e.reason == "CUBE_MEMORY_QUOTA_EXCEEDED" and not e.retriable
    assert e.metadata["cube_id"] == cube
    assert e.metadata["quota"] == "memories"
    assert e.metadata["limit"] == str(MAX_MEMORIES)
    assert e.metadata["usage"] == str(MAX_MEMORIES)
    assert e.metadata["requested"] == "1"
    # Nothing of the refused add anywhere: graph, search, vectors.
    assert await stored(qs, cube) == before
    found = await client.search_memories(user, [cube], "axolotl Quibble glows", top_k=10)
    assert all("axolotl" not in m.item.memory for m in found.ranked)
    assert await vector_ids(qs, cube, "axolotl Quibble glows") == set(before)

    # A delete frees room, but an add of more windows than there is room for is refused whole.
    victim = next(iter(before))
    assert (await client.delete_memories(user, cube, [victim])).deleted_count == 1
    long_talk = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i} is about kite surfing spot {i}."}
        for i in range(8)
    ]
    with pytest.raises(ResourceExhausted) as err:
        await client.add_memories(user, [cube], long_talk)
    assert err.value.metadata["usage"] == str(MAX_MEMORIES - 1)
    assert int(err.value.metadata["requested"]) > 1
    after_delete = await stored(qs, cube)
    assert set(after_delete) == set(before) - {victim}
    assert await vector_ids(qs, cube, "kite surfing spot") == set(after_delete)

    added = await client.add_memories(user, [cube], say("The axolotl named Quibble glows at night."))
    assert len(added.memories) == 1 and not added.memories[0].merged
    assert len(await stored(qs, cube)) == MAX_MEMORIES


async def test_a_full_cube_takes_re_adds_and_working_memory(
    client: AsyncMemosClient, qs: QuotaSuite, cube: str
) -> None:
    user = f"user-{cube}"
    for fact in FACTS:
        await client.add_memories(user, [cube], say(fact))
    before = await stored(qs, cube)
    assert len(before) == MAX_MEMORIES

    # Identical content again: dedupe merges it into the memory it repeats; nothing new is stored.
    again = await client.add_memories(user, [cube], say(FACTS[0]))
    assert [m.merged for m in again.memories] == [True]
    assert await stored(qs, cube) == before

    # Working-memory copies are bounded on their own (working_memory_capacity), not by the quota.
    wm = await qs.stub.ReplaceWorkingMemory(
        textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=cube, user_id=user, memory_ids=sorted(before))
    )
    assert len(wm.memories) == MAX_MEMORIES
    assert len(await stored(qs, cube)) == 2 * MAX_MEMORIES
    # ... and they do not take the room of memories: the cube is still exactly full.
    assert (await asyncio.to_thread(qs.memory.graph.cube_usage, cube)).memories == MAX_MEMORIES
    with pytest.raises(ResourceExhausted):
        await client.add_memories(user, [cube], say("Something entirely new about volcanoes."))


async def test_writes_and_updates_past_the_byte_quota_change_nothing(qs: QuotaSuite, cube: str) -> None:
    user = f"user-{cube}"
    a, b = "a" * 250, "b" * 250
    wrote = await qs.stub.WriteMemories(
        textmem_pb2.WriteMemoriesRequest(cube_id=cube, user_id=user, candidates=[candidate(a), candidate(b)])
    )
    first = wrote.memories[0].id
    before = await stored(qs, cube)

    e = await refused(
        qs.stub.WriteMemories(
            textmem_pb2.WriteMemoriesRequest(
                request_id=f"w-{cube}", cube_id=cube, user_id=user, candidates=[candidate("é" * 125)]
            )
        )
    )
    assert e.code.name == "RESOURCE_EXHAUSTED" and e.reason == "CUBE_BYTES_QUOTA_EXCEEDED"
    assert e.metadata == {
        "cube_id": cube,
        "quota": "bytes",
        "limit": str(MAX_BYTES),
        "usage": "500",
        "requested": "250",  # UTF-8 bytes, not characters
    }
    assert await stored(qs, cube) == before

    # An update that grows the text past the quota changes nothing; one within it passes.
    def update(text: str):  # type: ignore[no-untyped-def]
        return qs.stub.UpdateMemory(
            textmem_pb2.UpdateMemoryRequest(
                cube_id=cube,
                memory=memory_pb2.MemoryItem(id=first, memory=text),
                update_mask=field_mask_pb2.FieldMask(paths=["memory"]),
            )
        )

    e = await refused(update("c" * 400))
    assert e.reason == "CUBE_BYTES_QUOTA_EXCEEDED"
    assert e.metadata["usage"] == "500" and e.metadata["requested"] == "150"
    got = await qs.stub.GetMemory(textmem_pb2.GetMemoryRequest(cube_id=cube, memory_id=first, include_history=True))
    assert got.memory.memory == a and not got.history
    assert await vector_ids(qs, cube, "c" * 400) == set(before)
    await update("c" * 350)  # exactly at the limit
    assert await stored(qs, cube) == {**before, first: "c" * 350}

    # Deleting frees bytes: the refused write (same request id) now goes through.
    await qs.stub.DeleteMemories(textmem_pb2.DeleteMemoriesRequest(cube_id=cube, memory_ids=[first]))
    done = await qs.stub.WriteMemories(
        textmem_pb2.WriteMemoriesRequest(
            request_id=f"w-{cube}", cube_id=cube, user_id=user, candidates=[candidate("é" * 125)]
        )
    )
    assert [m.memory for m in done.memories] == ["é" * 125]
    assert (await asyncio.to_thread(qs.memory.graph.cube_usage, cube)).bytes == 500


async def test_concurrent_adds_never_pass_the_quota(qs: QuotaSuite, cube: str, monkeypatch: pytest.MonkeyPatch) -> None:
    user = f"user-{cube}"
    writers, adds_each = 4, 3
    start = threading.Barrier(writers)
    outcomes: list[str] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    # The first adds of all writers meet before their graph writes, after every one of them has
    # passed TextMemory's early check and written its vectors: only the check in the graph
    # transaction stands between them and a cube over its quota.
    graph = qs.memory.graph
    insert = graph.insert_memories
    meet = threading.Barrier(writers, timeout=60)
    first_round = iter(range(writers))

    def insert_after_meeting(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            waits = next(first_round, None) is not None
        if waits:
            meet.wait()
        return insert(*args, **kwargs)

    monkeypatch.setattr(graph, "insert_memories", insert_after_meeting)

    def writer(n: int) -> None:
        with MemosClient(qs.gateway.address) as c:
            start.wait()
            for i in range(adds_each):
                try:
                    c.add_memories(user, [cube], say(f"Writer {n} reports sighting number {i} of a heron."))
                    outcome = "stored"
                except ResourceExhausted as exc:
                    outcome = exc.reason
                except BaseException as exc:  # noqa: BLE001 - reported below
                    with lock:
                        unexpected.append(exc)
                    continue
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    monkeypatch.undo()
    assert not unexpected, unexpected
    assert not meet.broken
    assert outcomes.count("stored") == MAX_MEMORIES
    assert outcomes.count("CUBE_MEMORY_QUOTA_EXCEEDED") == writers * adds_each - MAX_MEMORIES
    kept = await stored(qs, cube)
    assert len(kept) == MAX_MEMORIES
    # Refused adds that got as far as writing vectors took them back.
    assert await vector_ids(qs, cube, "sighting of a heron") == set(kept)
