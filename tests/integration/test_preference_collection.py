"""Preference vectors live in a Milvus collection of their own, over real gRPC.

textmem keeps PreferenceMemory vectors in ``<collection>_preferences`` (RoutedVectorStore) and
every other memory in the main collection, both scoped by cube. These tests add through the
gateway and an ingest service without an LLM (its rules find the user's preferences), then
look into Milvus Lite itself with pymilvus: preferences are in their collection and nowhere
else; include_preference gives a pref_mem bucket per cube with pref_top_k honoured and a
pref_string; text searches never see preferences; an update changing the type moves the
vector; deleting a cube or a user removes preference vectors too; preference vectors an
earlier version stored in the main collection are moved at start (also after a crash mid-move);
and a write killed between its preference vector and its graph record is repaired at restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pymilvus import MilvusClient

from memos.client import AsyncMemosClient
from memos.common.v1 import memory_pb2
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.app import build_server as build_ingest
from services.ingest.settings import IngestSettings
from services.textmem.app import build_memory
from services.textmem.app import build_server as build_textmem
from services.textmem.embedders import Embedder
from services.textmem.memory import TextMemory
from services.textmem.models import Memory
from services.textmem.settings import TextMemSettings
from services.textmem.stores.milvus_vector import MilvusVectorStore, scope_key
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from services.textmem.stores.vector import VectorRecord
from shared.channels import open_channel
from shared.server import GrpcServer

pytestmark = pytest.mark.timeout(300)

MAIN = "memos_text"
PREFS = "memos_text_preferences"
PREF = memory_pb2.MEMORY_TYPE_PREFERENCE

TRIP = [
    {"role": "user", "content": "Next month I am going to a trade fair in Shanghai."},
    {"role": "assistant", "content": "Shall I look for a hotel?"},
    {"role": "user", "content": "I prefer hotels within walking distance of the venue."},
    {"role": "assistant", "content": "Understood."},
    {"role": "user", "content": "Also, I'm allergic to feather pillows."},
]


def rows(data_dir: Path, collection: str, cube: str = "") -> dict[str, str]:
    """id -> memory_type of the rows Milvus Lite itself holds in the collection (of one cube)."""
    client = MilvusClient(uri=str(data_dir / "milvus.db"))
    try:
        client.load_collection(collection)
        flt = f'cube_key == "{scope_key(cube)}"' if cube else 'id != ""'
        return {r["id"]: r["memory_type"] for r in client.query(collection, filter=flt, output_fields=["memory_type"])}
    finally:
        client.close()


@dataclass
class PrefSuite:
    textmem: GrpcServer
    ingest: GrpcServer
    gateway: GrpcServer
    memory: TextMemory
    data_dir: Path
    stub: textmem_pb2_grpc.TextMemServiceStub
    channel: grpc.aio.Channel


async def start(data_dir: Path, embedder: Embedder) -> PrefSuite:
    # Built from the settings, as the service is: the wiring of the two collections is tested too.
    settings = TextMemSettings(
        listen_addr="127.0.0.1:0", data_dir=data_dir, log_level="WARNING", milvus_lite_prewarm_cubes=0
    )
    memory = build_memory(settings, embedder=embedder)
    textmem = build_textmem(settings, memory)
    await textmem.start()
    ingest = build_ingest(IngestSettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address, log_level="WARNING"))
    await ingest.start()
    gateway = build_gateway(
        GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address, ingest_addr=ingest.address)
    )
    await gateway.start()
    channel = open_channel(textmem.address)
    return PrefSuite(textmem, ingest, gateway, memory, data_dir, textmem_pb2_grpc.TextMemServiceStub(channel), channel)


async def stop(s: PrefSuite) -> None:
    await s.channel.close()
    await s.gateway.stop(1.0)
    await s.ingest.stop(1.0)
    await s.textmem.stop(1.0)


@pytest.fixture(scope="module")
async def ps(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> AsyncIterator[PrefSuite]:
    s = await start(tmp_path_factory.mktemp("prefs"), embedder)
    yield s
    await stop(s)


@pytest.fixture
async def client(ps: PrefSuite) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(ps.gateway.address)
    yield c
    await c.close()


def pref_ids(added) -> set[str]:  # type: ignore[no-untyped-def]
    return {m.memory_id for m in added.memories if m.memory_type == PREF}


async def test_preferences_live_in_their_own_collection_and_only_pref_searches_see_them(
    client: AsyncMemosClient, ps: PrefSuite, unique: str
) -> None:
    user, cube, other = f"u-{unique}", f"trip-{unique}", f"trip2-{unique}"
    added = await client.add_memories(user, [cube, other], TRIP, session_id="s1")
    prefs = pref_ids(added)
    texts = {m.memory_id for m in added.memories} - prefs
    assert len(prefs) == 4 and texts  # two preferences in each cube, and the conversation

    in_prefs = await asyncio.to_thread(rows, ps.data_dir, PREFS)
    in_main = await asyncio.to_thread(rows, ps.data_dir, MAIN)
    assert prefs <= set(in_prefs) and not prefs & set(in_main)
    assert texts <= set(in_main) and not texts & set(in_prefs)
    assert set(await asyncio.to_thread(rows, ps.data_dir, PREFS, cube)) == {
        m.memory_id for m in added.memories if m.memory_type == PREF and m.cube_id == cube
    }

    found = await client.search_memories(
        user, [cube, other], "hotel near the venue", include_preference=True, pref_top_k=1
    )
    assert sorted(b.cube_id for b in found.pref_mem) == sorted([cube, other])  # a bucket per cube
    for bucket in found.pref_mem:
        (top,) = bucket.memories  # pref_top_k honoured
        assert top.item.memory == "prefers hotels within walking distance of the venue"
        assert top.item.metadata.memory_type == PREF and top.item.metadata.cube_id == bucket.cube_id
    assert found.pref_string.startswith("User preferences:")
    assert "prefers hotels within walking distance of the venue" in found.pref_string
    assert "feather" not in found.pref_string  # only what pref_top_k kept
    assert all(m.item.metadata.memory_type != PREF for b in found.text_mem for m in b.memories)
    assert all(m.item.metadata.memory_type != PREF for m in found.ranked)

    more = await client.search_memories(user, [cube], "pillows allergy", include_preference=True, pref_top_k=5)
    assert {m.item.memory for m in more.pref_mem[0].memories} == {
        "prefers hotels within walking distance of the venue",
        "is allergic to feather pillows",
    }
    plain = await client.search_memories(user, [cube, other], "feather pillows allergic hotel", top_k=50)
    assert not plain.pref_mem and not plain.pref_string
    assert {m.item.id for b in plain.text_mem for m in b.memories} <= texts
    # A filter naming preferences and another type searches both collections and merges them.
    mixed = await client.search_memories(
        user, [cube], "feather pillows", top_k=50, filter={"memory_type": ["PreferenceMemory", "LongTermMemory"]}
    )
    kinds = {m.item.metadata.memory_type for m in mixed.text_mem[0].memories}
    assert kinds == {PREF, memory_pb2.MEMORY_TYPE_LONG_TERM}


async def test_an_update_changing_the_type_moves_the_vector(
    client: AsyncMemosClient, ps: PrefSuite, unique: str
) -> None:
    user, cube = f"u-{unique}", f"move-{unique}"
    added = await client.add_memories(user, [cube], TRIP)
    allergy = next(m for m in added.memories if m.memory == "is allergic to feather pillows")
    window = next(m for m in added.memories if m.memory_type != PREF)

    async def retype(memory_id: str, memory_type: int) -> None:
        await ps.stub.UpdateMemory(
            textmem_pb2.UpdateMemoryRequest(
                cube_id=cube,
                memory=memory_pb2.MemoryItem(id=memory_id, metadata=memory_pb2.MemoryMetadata(memory_type=memory_type)),
                update_mask=field_mask_pb2.FieldMask(paths=["metadata.memory_type"]),
            )
        )

    await retype(allergy.memory_id, memory_pb2.MEMORY_TYPE_USER)
    await retype(window.memory_id, PREF)
    in_prefs = await asyncio.to_thread(rows, ps.data_dir, PREFS, cube)
    in_main = await asyncio.to_thread(rows, ps.data_dir, MAIN, cube)
    assert allergy.memory_id in in_main and allergy.memory_id not in in_prefs
    assert (
        window.memory_id in in_prefs
        and window.memory_id not in in_main
        and in_prefs[window.memory_id] == "PreferenceMemory"
    )

    found = await client.search_memories(
        user, [cube], "feather pillows", top_k=50, include_preference=True, pref_top_k=10
    )
    assert allergy.memory_id in {m.item.id for m in found.text_mem[0].memories}
    assert allergy.memory_id not in {m.item.id for m in found.pref_mem[0].memories}
    assert window.memory_id in {m.item.id for m in found.pref_mem[0].memories}


async def test_deleting_a_cube_or_a_user_removes_their_preference_vectors(
    client: AsyncMemosClient, ps: PrefSuite, unique: str
) -> None:
    owner, guest = f"owner-{unique}", f"guest-{unique}"
    gone, shared = f"gone-{unique}", f"shared-{unique}"
    await client.add_memories(owner, [gone], TRIP)
    await client.add_memories(owner, [shared], [{"role": "user", "content": "I love green tea."}])
    await client.share_cube(owner, shared, guest, "writer")
    guests = pref_ids(await client.add_memories(guest, [shared], [{"role": "user", "content": "I hate loud bars."}]))
    assert guests and set(await asyncio.to_thread(rows, ps.data_dir, PREFS, gone))

    await client.delete_cube(owner, gone)
    assert await asyncio.to_thread(rows, ps.data_dir, PREFS, gone) == {}
    assert await asyncio.to_thread(rows, ps.data_dir, MAIN, gone) == {}

    before = await asyncio.to_thread(rows, ps.data_dir, PREFS, shared)
    assert guests < set(before)
    await client.delete_user_data(guest)
    after = await asyncio.to_thread(rows, ps.data_dir, PREFS, shared)
    assert set(after) == set(before) - guests  # the owner's preference stays
    found = await client.search_memories(owner, [shared], "tea", include_preference=True)
    assert [m.item.memory for m in found.pref_mem[0].memories] == ["loves green tea"]


# existing data and crashes -----------------------------------------------------------------------
def pref_candidate(text: str, memory_type: str = "PreferenceMemory") -> Memory:
    return Memory(id="", cube_id="", memory=text, memory_type=memory_type, tags=["preference:explicit"])


async def test_preference_vectors_of_an_earlier_version_are_moved_at_start(tmp_path: Path, embedder: Embedder) -> None:
    # The layout before this change: one collection for every memory, preferences included.
    graph = SqliteGraphStore(tmp_path / "graph.sqlite3")
    old_vectors = MilvusVectorStore(str(tmp_path / "milvus.db"), MAIN, embedder.dim)
    old = TextMemory(graph, old_vectors, embedder)
    cubes = {"old-a": "u-a", "old-b": "u-b"}
    written: dict[str, list[Memory]] = {}
    for cube, user in cubes.items():
        old.ensure_cube(cube, user)
        written[cube] = old.write_memories(
            cube,
            user,
            "s",
            [
                pref_candidate("prefers aisle seats on long flights"),
                pref_candidate("dislikes spicy food"),
                pref_candidate("The flight to Lisbon leaves at nine.", "LongTermMemory"),
            ],
        ).memories
    old_prefs = {m.id for ms in written.values() for m in ms if m.memory_type == "PreferenceMemory"}
    assert old_prefs <= set(rows(tmp_path, MAIN))
    # A start that crashed mid-move: one preference was copied over but not yet deleted.
    halfway = written["old-a"][0]
    [vector] = old_vectors.get_vectors("old-a", [halfway.id]).values()
    copied = MilvusVectorStore(str(tmp_path / "milvus.db"), PREFS, embedder.dim)
    copied.upsert(
        [VectorRecord(halfway.id, "old-a", "u-a", "s", "PreferenceMemory", "activated", halfway.created_at, vector)]
    )
    copied.close()
    old.close()

    s = await start(tmp_path, embedder)
    try:
        assert set(await asyncio.to_thread(rows, tmp_path, PREFS)) == old_prefs
        in_main = await asyncio.to_thread(rows, tmp_path, MAIN)
        assert not old_prefs & set(in_main) and len(in_main) == 2  # the long-term memories stay
        c = AsyncMemosClient(s.gateway.address)
        try:
            found = await c.search_memories("u-a", ["old-a"], "aisle seat", include_preference=True, pref_top_k=5)
            hits = [m.item.id for m in found.pref_mem[0].memories]
            assert sorted(hits) == sorted(m.id for m in written["old-a"] if m.memory_type == "PreferenceMemory")
            assert found.pref_mem[0].memories[0].item.memory == "prefers aisle seats on long flights"
            assert [m.item.memory for m in found.text_mem[0].memories] == ["The flight to Lisbon leaves at nine."]
        finally:
            await c.close()
    finally:
        await stop(s)

    # Idempotent: a second start finds nothing left to move and changes nothing.
    again = MilvusVectorStore(str(tmp_path / "milvus.db"), MAIN, embedder.dim)
    prefs = MilvusVectorStore(str(tmp_path / "milvus.db"), PREFS, embedder.dim)
    try:
        assert again.move_rows(["PreferenceMemory"], prefs) == 0
        assert set(rows(tmp_path, PREFS)) == old_prefs
    finally:
        again.close()
        prefs.close()


ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{root!r}, {gen!r}]
    from services.textmem.app import build_memory
    from services.textmem.models import Memory
    from services.textmem.settings import TextMemSettings

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def pref(text, memory_type="PreferenceMemory"):
        return Memory(id="", cube_id="", memory=text, memory_type=memory_type)

    if {step!r} == "inspect":
        # What Milvus Lite holds, read in a process of its own: a Lite file open in the test's
        # process would not see what later child processes write.
        import json
        from pymilvus import MilvusClient

        client = MilvusClient(uri=os.path.join({data!r}, "milvus.db"))
        out = {{}}
        for name in ({main!r}, {prefs!r}):
            client.load_collection(name)
            out[name] = {{r["id"]: r["memory_type"] for r in client.query(name, filter='id != ""', output_fields=["memory_type"])}}
        print(json.dumps(out))
        sys.exit(0)
    memory = build_memory(TextMemSettings(data_dir={data!r}, milvus_lite_prewarm_cubes=0))
    if {step!r} == "seed":
        memory.ensure_cube("cube", "u")
        kept = memory.write_memories("cube", "u", "s", [pref("The train leaves at six.", "LongTermMemory")])
        print(kept.memories[0].id)
        memory.close()
    elif {step!r} == "add":
        memory.graph.insert_memories = die
        memory.write_memories("cube", "u", "s", [pref("prefers window seats")])
    elif {step!r} == "retype":
        memory.graph.update_memory = die
        memory.update_memory("cube", {memory_id!r}, Memory(id="", cube_id="cube", memory="", memory_type="PreferenceMemory"), ["metadata.memory_type"])
    """
)


def run_child(data: Path, step: str, memory_id: str = "") -> str:
    """One step in a process of its own, SIGKILLed mid-write unless it is the seed."""
    code = CHILD.format(
        root=str(ROOT),
        gen=str(ROOT / "gen" / "python"),
        data=str(data),
        step=step,
        memory_id=memory_id,
        main=MAIN,
        prefs=PREFS,
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    expected = 0 if step in ("seed", "inspect") else -9
    assert proc.returncode == expected, f"{step}: exit {proc.returncode}, wanted {expected}:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1] if step in ("seed", "inspect") else ""


def inspect(data: Path) -> dict[str, dict[str, str]]:
    """Collection -> id -> memory_type, as Milvus Lite holds them (read by a child process)."""
    return json.loads(run_child(data, "inspect"))


async def test_a_crash_between_a_preference_vector_and_its_graph_write_is_repaired(
    tmp_path: Path, embedder: Embedder
) -> None:
    kept = await asyncio.to_thread(run_child, tmp_path, "seed")
    await asyncio.to_thread(run_child, tmp_path, "add")
    # Killed after the vector write: an orphan preference vector, its mark left in the graph.
    held = await asyncio.to_thread(inspect, tmp_path)
    (orphan,) = held[PREFS]
    assert held[MAIN] == {kept: "LongTermMemory"}
    # The next process repairs that mark when it starts, then is killed retyping a memory to a
    # preference: its vector has moved to the preference collection, the graph never changed.
    await asyncio.to_thread(run_child, tmp_path, "retype", kept)
    assert await asyncio.to_thread(inspect, tmp_path) == {MAIN: {}, PREFS: {kept: "PreferenceMemory"}}

    s = await start(tmp_path, embedder)  # the start repairs every mark (Milvus Lite)
    try:
        assert await asyncio.to_thread(rows, tmp_path, PREFS, "cube") == {}
        assert await asyncio.to_thread(rows, tmp_path, MAIN, "cube") == {kept: "LongTermMemory"}
        assert s.memory.graph.pending_vector_writes(float("inf"), 10) == []
        assert orphan not in s.memory.graph.get_memories("cube", [orphan])
        c = AsyncMemosClient(s.gateway.address)
        try:
            found = await c.search_memories("u", ["cube"], "train", include_preference=True)
            assert [m.item.id for m in found.text_mem[0].memories] == [kept]
            assert not found.pref_mem[0].memories and not found.pref_string
        finally:
            await c.close()
    finally:
        await stop(s)


def test_the_preference_collection_is_derived_and_can_be_named() -> None:
    # The tests above inspect the default names.
    s = TextMemSettings(data_dir=Path("/nonexistent"))
    assert (s.milvus_collection, s.preference_collection) == (MAIN, PREFS)
    assert TextMemSettings(milvus_collection="other").preference_collection == "other_preferences"
    named = TextMemSettings(milvus_preference_collection="my_prefs")
    assert named.preference_collection == "my_prefs"
    with pytest.raises(ValueError, match="must differ"):
        TextMemSettings(milvus_preference_collection=MAIN)
