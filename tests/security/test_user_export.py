"""Export of a user's data (ExportUserData) through the gateway over real gRPC.

Real services on loopback: textmem, a scheduler (SQLite queue, no built-in handlers: what is
queued stays queued), actmem on a tiny random model (CPU), and a gateway with API keys that
knows all three. Alice writes memories into two cubes of her own and into Bob's cube (shared
with her), updates one, has a preference and a working memory, a queued task and a KV cache;
Bob writes into Alice's cube and his own, and has tasks, a working memory and a KV cache of his
own. Alice's export holds all of hers and nothing of Bob's; Bob may not ask for it; an erased
user's export is only a zero summary; 2,500 memories arrive complete, one record per message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from memos.actmem.v1 import actmem_pb2, actmem_pb2_grpc
from memos.client import AsyncMemosClient, InvalidArgument, PermissionDenied
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2
from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.actmem.app import build_memory as build_actmem_memory
from services.actmem.app import build_server as build_actmem
from services.actmem.backends.transformers_backend import TransformersBackend
from services.actmem.settings import ActMemSettings
from services.gateway.auth import create_key
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.settings import SchedulerSettings
from services.textmem.models import Memory
from shared.channels import open_channel
from shared.server import GrpcServer
from tests.conftest import Suite, start_suite, stop_suite
from tools.tiny_model import build as build_tiny_model

pytestmark = pytest.mark.timeout(300)

ALICE, BOB, CAROL, DAVE = "alice", "bob", "carol", "dave"
MARK = "quokkadile"  # Alice's word
OTHER = "narwhalix"  # Bob's word: never in Alice's export


@dataclass
class ExportSuite:
    suite: Suite
    scheduler: GrpcServer
    actmem: GrpcServer
    keys: dict[str, str]
    channels: list[grpc.aio.Channel]

    def client(self, who: str) -> AsyncMemosClient:
        return AsyncMemosClient(self.suite.address, api_key=self.keys[who])

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = open_channel(address)
        self.channels.append(channel)
        return channel

    @property
    def textmem(self) -> textmem_pb2_grpc.TextMemServiceStub:
        return textmem_pb2_grpc.TextMemServiceStub(self._channel(self.suite.textmem.address))

    @property
    def queue(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self._channel(self.scheduler.address))

    @property
    def caches(self) -> actmem_pb2_grpc.ActMemServiceStub:
        return actmem_pb2_grpc.ActMemServiceStub(self._channel(self.actmem.address))


@pytest.fixture(scope="module")
async def es(tmp_path_factory: pytest.TempPathFactory, embedder) -> AsyncIterator[ExportSuite]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("export")
    scheduler = build_scheduler(
        SchedulerSettings(
            listen_addr="127.0.0.1:0", data_dir=data / "sched", builtin_handlers=False, log_level="WARNING"
        )
    )
    await scheduler.start()
    model_dir = await asyncio.to_thread(build_tiny_model, data / "tiny-qwen3", seed=0)
    actmem_settings = ActMemSettings(
        listen_addr="127.0.0.1:0", model_path=str(model_dir), data_dir=data / "actmem", log_level="WARNING"
    )
    backend = await asyncio.to_thread(TransformersBackend, str(model_dir), device="cpu", dtype="float32")
    actmem = build_actmem(actmem_settings, build_actmem_memory(actmem_settings, backend=backend))
    await actmem.start()
    keys_file = data / "keys.json"
    # Every key exists before the gateway starts, so none waits for the key file to be re-read.
    keys = {who: create_key(keys_file, who) for who in (ALICE, BOB, CAROL, DAVE)}
    keys["admin"] = create_key(keys_file, "ops", "admin")
    suite = await start_suite(
        data, embedder, scheduler_addr=scheduler.address, actmem_addr=actmem.address, api_keys_file=keys_file
    )
    es = ExportSuite(suite, scheduler, actmem, keys, [])
    yield es
    for channel in es.channels:
        await channel.close()
    await stop_suite(suite)
    await actmem.stop(1.0)
    await scheduler.stop(1.0)


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]


async def export(client: AsyncMemosClient, user_id: str) -> list[gateway_pb2.ExportUserDataResponse]:
    return [record async for record in client.export_user_data(user_id, timeout=120)]


def by_kind(records: list[gateway_pb2.ExportUserDataResponse]) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        kind = r.WhichOneof("record")
        out.setdefault(kind, []).append(getattr(r, kind))
    return out


async def submit(es: ExportSuite, *pairs: tuple[str, str]) -> list[str]:
    msgs = [scheduler_pb2.ScheduleMessage(user_id=u, cube_id=c, label="add", content=f"{u} in {c}") for u, c in pairs]
    resp = await es.queue.SubmitMessages(scheduler_pb2.SubmitMessagesRequest(messages=msgs))
    return list(resp.item_ids)


async def extract_cache(es: ExportSuite, cube_id: str, text: str, user_id: str = "") -> str:
    resp = await es.caches.ExtractCache(actmem_pb2.ExtractCacheRequest(cube_id=cube_id, text=text, user_id=user_id))
    return resp.cache.cache_id


async def write_preference(es: ExportSuite, cube_id: str, user_id: str, text: str) -> str:
    resp = await es.textmem.WriteMemories(
        textmem_pb2.WriteMemoriesRequest(
            request_id=uuid.uuid4().hex,
            cube_id=cube_id,
            user_id=user_id,
            candidates=[
                textmem_pb2.MemoryCandidate(
                    memory=text,
                    metadata=memory_pb2.MemoryMetadata(memory_type=memory_pb2.MEMORY_TYPE_PREFERENCE, user_id=user_id),
                )
            ],
        )
    )
    return resp.memories[0].id


async def test_the_export_holds_everything_of_the_user_and_nothing_of_others(es: ExportSuite) -> None:
    own, second, bobs = "alice-own", "alice-second", "bob-shared"
    async with es.client("admin") as admin:
        first = await admin.add_memories(ALICE, [own], say(f"My {MARK} eats figs."), custom_tags=["pets"])
        later = await admin.add_memories(ALICE, [own], say(f"The {MARK} naps at noon."), session_id="s2")
        in_second = await admin.add_memories(ALICE, [second], say(f"My second {MARK} notebook."))
        await admin.add_memories(BOB, [bobs], say(f"The {OTHER} guards the shed."))
        await admin.share_cube(BOB, bobs, ALICE, "writer")
        in_bobs = await admin.add_memories(ALICE, [bobs], say(f"Alice's {MARK} visits the shed."))
        await admin.share_cube(ALICE, own, BOB, "reader")
        await admin.share_cube(ALICE, second, BOB, "writer")
        # Bob's memory in a cube Alice owns: his, not hers.
        bobs_in_second = await admin.add_memories(BOB, [second], say(f"A {OTHER} note in Alice's notebook."))
        updated_id = first.memories[0].memory_id
        await admin.update_memory(ALICE, own, updated_id, memory=f"My {MARK} eats figs and dates.")
    pref_id = await write_preference(es, own, ALICE, f"Alice prefers her {MARK} fed at dawn.")
    await write_preference(es, bobs, BOB, f"Bob prefers the {OTHER} outside.")
    working = await es.textmem.ReplaceWorkingMemory(
        textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=own, user_id=ALICE, memory_ids=[later.memories[0].memory_id])
    )
    bob_first = (await es.textmem.ListMemories(textmem_pb2.ListMemoriesRequest(cube_id=bobs))).memories[0].id
    await es.textmem.ReplaceWorkingMemory(
        textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=bobs, user_id=BOB, memory_ids=[bob_first])
    )
    alice_tasks = await submit(es, (ALICE, own), (ALICE, bobs))
    await submit(es, (BOB, bobs), (BOB, second))
    alice_cache = await extract_cache(es, own, f"Alice's {MARK} cache.")
    await extract_cache(es, bobs, f"Bob's {OTHER} cache.")
    # Stored for her in Bob's cube: hers although the cube is not.
    alice_cache_in_bobs = await extract_cache(es, bobs, f"Alice's {MARK} cache in Bob's cube.", user_id=ALICE)

    async with es.client(ALICE) as alice:
        records = await export(alice, ALICE)

    kinds = by_kind(records)
    assert records[-1].WhichOneof("record") == "summary" and len(kinds["summary"]) == 1
    # Cubes come first, each with Alice's view of it; her shares are listed on the cubes she owns.
    assert [r.WhichOneof("record") for r in records[: len(kinds["cube"])]] == ["cube"] * len(kinds["cube"])
    cubes = {c.cube.cube_id: c for c in kinds["cube"]}
    assert set(cubes) == {own, second, bobs}
    assert cubes[own].cube.owned and cubes[second].cube.owned and not cubes[bobs].cube.owned
    assert [(m.user_id, m.role) for m in cubes[own].members] == [(BOB, gateway_pb2.SHARE_ROLE_READER)]
    assert [(m.user_id, m.role) for m in cubes[second].members] == [(BOB, gateway_pb2.SHARE_ROLE_WRITER)]
    assert cubes[bobs].cube.owner_id == BOB and not cubes[bobs].members
    assert cubes[bobs].cube.my_role == gateway_pb2.SHARE_ROLE_WRITER
    assert all(c.created_at.seconds > 0 for c in kinds["cube"])

    # Every memory she wrote, in her cubes and in Bob's, with its metadata, sources and history.
    memories = {m.memory.id: m for m in kinds["memory"]}
    written = [first, later, in_second, in_bobs]
    assert set(memories) == {r.memories[0].memory_id for r in written}
    assert all(m.memory.metadata.user_id == ALICE for m in memories.values())
    assert memories[in_bobs.memories[0].memory_id].memory.metadata.cube_id == bobs
    updated = memories[updated_id]
    assert updated.memory.memory == f"My {MARK} eats figs and dates." and updated.memory.metadata.version == 2
    assert [v.memory for v in updated.history] == [first.memories[0].memory]
    assert "pets" in updated.memory.metadata.tags
    assert updated.memory.metadata.sources and MARK in updated.memory.metadata.sources[0].content
    assert not memories[later.memories[0].memory_id].history
    assert memories[later.memories[0].memory_id].memory.metadata.session_id == "s2"

    assert [p.memory.id for p in kinds["preference"]] == [pref_id]
    assert kinds["preference"][0].memory.metadata.memory_type == memory_pb2.MEMORY_TYPE_PREFERENCE
    assert [w.memory.id for w in kinds["working_memory"]] == [working.memories[0].id]
    assert sorted(t.item_id for t in kinds["task"]) == sorted(alice_tasks)
    assert all(t.message.user_id == ALICE and t.state == scheduler_pb2.TASK_STATE_PENDING for t in kinds["task"])
    assert [c.cache_id for c in kinds["kv_cache"]] == [alice_cache, alice_cache_in_bobs]
    assert kinds["kv_cache"][0].cube_id == own and kinds["kv_cache"][0].num_tokens > 0
    assert kinds["kv_cache"][1].cube_id == bobs and kinds["kv_cache"][1].user_id == ALICE

    # Nothing of Bob's: none of his text, not his memory in her cube.
    everything = b"".join(r.SerializeToString() for r in records)
    assert OTHER.encode() not in everything
    assert bobs_in_second.memories[0].memory_id.encode() not in everything

    summary = records[-1].summary
    assert (
        summary.cube_count,
        summary.memory_count,
        summary.preference_count,
        summary.working_memory_count,
        summary.task_count,
        summary.kv_cache_count,
    ) == (3, 4, 1, 1, 2, 2)
    assert not summary.skipped_services

    # An admin key may export for the user, and gets the same records.
    async with es.client("admin") as admin:
        again = await export(admin, ALICE)
    assert [r.SerializeToString() for r in again] == [r.SerializeToString() for r in records]


async def test_another_user_may_not_export_the_users_data(es: ExportSuite) -> None:
    async with es.client(ALICE) as alice:
        await alice.add_memories(ALICE, ["alice-private"], say(f"A {MARK} secret."))
    async with es.client(BOB) as bob:
        with pytest.raises(PermissionDenied) as denied:
            await export(bob, ALICE)
    assert denied.value.reason == "USER_MISMATCH"


async def test_an_export_needs_a_user(es: ExportSuite) -> None:
    async with es.client("admin") as admin:
        with pytest.raises(InvalidArgument) as err:
            await export(admin, "")
    assert err.value.reason == "MISSING_USER_ID"


async def test_after_erasure_the_export_is_an_empty_summary(es: ExportSuite) -> None:
    cube = "carol-cube"
    async with es.client(CAROL) as carol:
        await carol.add_memories(CAROL, [cube], say("Carol's garden has a pond."))
        await carol.share_cube(CAROL, cube, BOB, "reader")
        await submit(es, (CAROL, cube))
        await extract_cache(es, cube, "Carol's cache.")
        # Stored for her in a cube of Bob's: erasing her deletes it too, and only it.
        await extract_cache(es, "bob-erasure-cube", "Carol's cache in Bob's cube.", user_id=CAROL)
        bobs = await extract_cache(es, "bob-erasure-cube", "Bob's own cache.", user_id=BOB)
        before = by_kind(await export(carol, CAROL))
        assert before["summary"][0].memory_count == 1 and before["summary"][0].task_count == 1
        assert before["summary"][0].kv_cache_count == 2

        await carol.delete_user_data(CAROL)

        records = await export(carol, CAROL)
    # Not only out of the export: actmem itself holds nothing of the erased cube any more.
    left = await es.caches.ListCaches(actmem_pb2.ListCachesRequest(cube_id=cube))
    assert list(left.caches) == []
    assert list((await es.caches.ListCaches(actmem_pb2.ListCachesRequest(user_id=CAROL))).caches) == []
    others = await es.caches.ListCaches(actmem_pb2.ListCachesRequest(cube_id="bob-erasure-cube"))
    assert [c.cache_id for c in others.caches] == [bobs]
    assert [r.WhichOneof("record") for r in records] == ["summary"]
    s = records[0].summary
    assert (
        s.cube_count,
        s.memory_count,
        s.preference_count,
        s.working_memory_count,
        s.task_count,
        s.kv_cache_count,
    ) == (0, 0, 0, 0, 0, 0)


async def test_a_large_export_arrives_complete_over_many_messages(es: ExportSuite) -> None:
    cubes = {"dave-a": 1300, "dave-b": 1200}  # 1300: a page of textmem's listing ends with the cube
    async with es.client(DAVE) as dave:
        for cube in cubes:
            await dave.create_cube(DAVE, cube)
    graph = es.suite.memory.graph
    now = time.time()
    expected: set[str] = set()
    for cube, n in cubes.items():
        batch = [
            Memory(
                id=uuid.uuid4().hex, cube_id=cube, memory=f"Dave's fact {i} of {cube}.", user_id=DAVE, created_at=now
            )
            for i in range(n)
        ]
        # Straight into the graph (the export reads only the graph): embedding 2,500 texts on a
        # small test machine would take longer than the export itself.
        await asyncio.to_thread(graph.insert_memories, cube, batch)
        expected.update(m.id for m in batch)

    async with es.client(DAVE) as dave:
        records = await export(dave, DAVE)

    kinds = by_kind(records)
    ids = [m.memory.id for m in kinds["memory"]]
    assert len(ids) == len(set(ids)) == 2500 and set(ids) == expected
    assert len(records) == 2 + 2500 + 1  # one record per message: cubes, memories, summary
    assert records[-1].summary.memory_count == 2500 and records[-1].summary.cube_count == 2

    # textmem's own listing, in pages that end exactly at a cube's end and in odd sizes alike.
    for page_size in (100, 7, 1000):
        seen: list[str] = []
        token, pages = "", 0
        while True:
            page = await es.textmem.ListUserMemories(
                textmem_pb2.ListUserMemoriesRequest(user_id=DAVE, page_size=page_size, page_token=token)
            )
            pages += 1
            assert len(page.memories) <= page_size
            seen.extend(m.memory.id for m in page.memories)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == 2500 and set(seen) == expected, page_size
        assert pages >= 2500 // page_size
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await es.textmem.ListUserMemories(textmem_pb2.ListUserMemoriesRequest(user_id=DAVE, page_token="bogus"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_sync_client_iterates_the_same_records(es: ExportSuite) -> None:
    from memos.client import MemosClient

    async with es.client(ALICE) as alice:
        await alice.add_memories(ALICE, ["alice-sync"], say(f"The {MARK} rides a bike."))
        expected = [r.SerializeToString() for r in await export(alice, ALICE)]

    def read() -> list[bytes]:
        # Blocking, so in a thread: the servers answer on this test's event loop.
        with MemosClient(es.suite.address, api_key=es.keys[ALICE]) as client:
            return [r.SerializeToString() for r in client.export_user_data(ALICE, timeout=120)]

    assert await asyncio.to_thread(read) == expected
