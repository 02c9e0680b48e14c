"""GraphStore conformance for the memory lifecycle: update history, delete by filter, the cubes
holding a user's memories. Every implementation in GRAPH_STORES passes these."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from services.textmem.models import MEMORY_TYPES, Cube, Edge, Memory, MemoryFilter, Source
from services.textmem.stores.graph import GraphStore
from services.textmem.stores.neo4j_graph import Neo4jGraphStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from shared.errors import NotFound

# Strings that mean something to SQL, Cypher or Lucene (a few of the main suite's).
HOSTILE_IDS = ['a" or 1==1 or "', "x') OR 1=1 --", "} RETURN n //", "%", "*", "$user", "victim\x00", "vïctim 🤖\nx"]


def lexical_ids(store: GraphStore, cube: str, query: str, flt: MemoryFilter | None = None) -> list[str]:
    return [i for i, _ in store.search_lexical(cube, query, flt or MemoryFilter(), 50)]


def list_all(store: GraphStore, cube: str, flt: MemoryFilter | None = None) -> list[str]:
    page, cursor = store.list_memories(cube, flt or MemoryFilter(), 1000)
    assert cursor == 0
    return [m.id for m in page]


def mem(cube: str, text: str = "plain memory text", **fields: object) -> Memory:
    fields.setdefault("id", uuid.uuid4().hex)
    return Memory(cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def stored_versions(store: GraphStore) -> int:
    """History entries held anywhere in the store, found by looking inside it (a version a delete
    forgot would not show through the interface, whose reads start from the memory)."""
    if isinstance(store, SqliteGraphStore):
        return int(store._conn().execute("SELECT COUNT(*) FROM memory_history").fetchone()[0])
    if isinstance(store, Neo4jGraphStore):
        records, _, _ = store._driver.execute_query(
            "MATCH (v:MemoryVersion) RETURN count(v) AS n", database_=store._database
        )
        return int(records[0]["n"])
    pytest.skip(f"no way to look inside {type(store).__name__}")


def update(store: GraphStore, current: Memory, **changes: object) -> Memory:
    new = dataclasses.replace(current, version=current.version + 1, updated_at=current.updated_at + 1, **changes)
    store.update_memory(new)
    return new


# history ----------------------------------------------------------------------------------
def test_update_keeps_every_replaced_version_newest_first(graph_store: GraphStore) -> None:
    v1 = mem(
        "H",
        "the first text",
        user_id="alice",
        session_id="s",
        key="k1",
        tags=["one"],
        info={"n": 1},
        background="bg",
        confidence=0.5,
        sources=[Source(content="said once")],
        created_at=100.0,
        updated_at=100.0,
        event_time=90.0,
    )
    graph_store.insert_memories("H", [v1])
    v2 = update(graph_store, v1, memory="the second text", tags=["two"], key="k2", info={"n": 2})
    v3 = update(graph_store, v2, status="archived", memory_type="UserMemory", confidence=0.9)

    history = graph_store.memory_history("H", v1.id)

    assert [h.version for h in history] == [2, 1]
    # Each version as it was, without its sources (an update keeps them on the memory).
    assert history == [dataclasses.replace(v2, sources=[]), dataclasses.replace(v1, sources=[])]
    got = graph_store.get_memories("H", [v1.id])[v1.id]
    assert got == v3 and got.sources == v1.sources
    # Old texts are history, not memories: lexical search does not find them.
    assert lexical_ids(graph_store, "H", "first", MemoryFilter(include_archived=True)) == []


def test_history_is_empty_for_a_memory_never_updated_missing_or_of_another_cube(graph_store: GraphStore) -> None:
    a, b = mem("H"), mem("H")
    graph_store.insert_memories("H", [a, b])
    update(graph_store, a, memory="changed")
    assert graph_store.memory_history("H", b.id) == []
    assert graph_store.memory_history("H", "missing") == []
    assert graph_store.memory_history("other", a.id) == []
    assert len(graph_store.memory_history("H", a.id)) == 1


def test_a_failed_update_records_no_history(graph_store: GraphStore) -> None:
    m = mem("H")
    graph_store.insert_memories("H", [m])
    with pytest.raises(NotFound):
        graph_store.update_memory(dataclasses.replace(m, cube_id="elsewhere", version=2))
    assert graph_store.memory_history("H", m.id) == []
    assert stored_versions(graph_store) == 0


def test_hard_deletes_leave_no_history(graph_store: GraphStore) -> None:
    by_id, by_filter, whole = mem("H", tags=["x"]), mem("H", tags=["gone"]), mem("W")
    keep = mem("H", tags=["x"])
    graph_store.insert_memories("H", [by_id, by_filter, keep])
    graph_store.insert_memories("W", [whole])
    for m in (by_id, by_filter, whole, keep):
        update(graph_store, m, memory="edited once")
    assert stored_versions(graph_store) == 4

    graph_store.delete_memories("H", [by_id.id])
    graph_store.delete_memories_matching("H", MemoryFilter(tags=("gone",)), 10)
    graph_store.delete_cube_memories("W")

    assert stored_versions(graph_store) == 1
    assert len(graph_store.memory_history("H", keep.id)) == 1
    # A memory stored again under a deleted id starts without history.
    graph_store.insert_memories("H", [mem("H", id=by_id.id)])
    assert graph_store.memory_history("H", by_id.id) == []


# delete by filter -----------------------------------------------------------------------------
def test_delete_matching_removes_exactly_what_list_would_list(graph_store: GraphStore) -> None:
    alice = [mem("F", f"alice quokka {i}", user_id="alice", tags=["t"]) for i in range(4)]
    bob = [mem("F", f"bob says {i}", user_id="bob", tags=["t"]) for i in range(2)]
    archived = mem("F", "alice archived", user_id="alice", status="archived")
    pref = mem("F", "alice prefers tea", user_id="alice", memory_type="PreferenceMemory")
    other_cube = mem("G", "alice elsewhere", user_id="alice")
    graph_store.insert_memories("F", [*alice, *bob, archived, pref])
    graph_store.insert_memories("G", [other_cube])
    flt = MemoryFilter(user_id="alice")
    expected = list_all(graph_store, "F", flt)

    deleted = graph_store.delete_memories_matching("F", flt, 100)

    assert deleted == expected == [m.id for m in alice]
    assert list_all(graph_store, "F", flt) == []
    # Same selection as a listing: archived memories and preferences only when the filter says so.
    assert graph_store.get_memories("F", [archived.id, pref.id]).keys() == {archived.id, pref.id}
    assert sorted(list_all(graph_store, "F")) == sorted(m.id for m in bob)
    assert graph_store.get_memories("G", [other_cube.id]) == {other_cube.id: other_cube}
    assert lexical_ids(graph_store, "F", "quokka") == []
    everything = MemoryFilter(memory_types=MEMORY_TYPES, user_id="alice", include_archived=True)
    assert sorted(graph_store.delete_memories_matching("F", everything, 100)) == sorted([archived.id, pref.id])
    assert graph_store.count("F") == len(bob)


def test_delete_matching_goes_in_batches_oldest_first(graph_store: GraphStore) -> None:
    ms = [mem("B", f"memory {i}", session_id="s1") for i in range(7)]
    graph_store.insert_memories("B", ms)
    graph_store.insert_memories("B", [mem("B", "kept", session_id="s2")])
    flt = MemoryFilter(session_id="s1")

    batches = []
    while True:
        got = graph_store.delete_memories_matching("B", flt, 3)
        batches.append(got)
        if len(got) < 3:
            break

    assert batches == [[m.id for m in ms[0:3]], [m.id for m in ms[3:6]], [ms[6].id]]
    assert graph_store.count("B") == 1
    assert graph_store.delete_memories_matching("B", flt, 3) == []


def test_delete_matching_removes_sources_and_edges(graph_store: GraphStore) -> None:
    a = mem("E", "alpha", tags=["go"], sources=[Source(content="src a")])
    b = mem("E", "bravo")
    c = mem("E", "charlie", tags=["go"])
    graph_store.insert_memories("E", [a, b, c], [Edge("E", a.id, b.id, "FOLLOWS"), Edge("E", b.id, c.id, "FOLLOWS")])

    assert graph_store.delete_memories_matching("E", MemoryFilter(tags=("go",)), 10) == [a.id, c.id]

    assert graph_store.neighbours("E", b.id, "FOLLOWS") == []
    graph_store.insert_memories("E", [mem("E", "reborn", id=a.id)])
    assert graph_store.get_memories("E", [a.id])[a.id].sources == []
    assert graph_store.neighbours("E", a.id, "FOLLOWS") == []


@pytest.mark.parametrize(
    "flt",
    [
        MemoryFilter(memory_types=("UserMemory",)),
        MemoryFilter(created_after=150.0),
        MemoryFilter(created_before=150.0),
        MemoryFilter(tags=("a", "b")),
    ],
    ids=["type", "after", "before", "tags"],
)
def test_delete_matching_applies_each_filter_field_like_list(graph_store: GraphStore, flt: MemoryFilter) -> None:
    graph_store.insert_memories(
        "T",
        [
            mem("T", "one", memory_type="UserMemory", created_at=100.0, tags=["a"]),
            mem("T", "two", created_at=200.0, tags=["a", "b"]),
            mem("T", "three", memory_type="UserMemory", created_at=300.0, tags=["b", "a"]),
            mem("T", "four", created_at=120.0),
        ],
    )
    expected = list_all(graph_store, "T", flt)
    assert expected  # the case selects something
    assert graph_store.delete_memories_matching("T", flt, 10) == expected
    assert list_all(graph_store, "T", flt) == []
    assert graph_store.count("T") == 4 - len(expected)


# the cubes holding a user's memories -------------------------------------------------------------
def test_user_memory_cubes_lists_every_cube_holding_the_users_memories(graph_store: GraphStore) -> None:
    graph_store.create_cube(Cube("owned-by-bob", "bob"))
    graph_store.insert_memories("owned-by-bob", [mem("owned-by-bob", user_id="alice"), mem("owned-by-bob")])
    # A cube without a registry record, and memories of any type or status, count too.
    graph_store.insert_memories("unregistered", [mem("unregistered", user_id="alice", status="archived")])
    graph_store.insert_memories("prefs", [mem("prefs", user_id="alice", memory_type="PreferenceMemory")])
    graph_store.insert_memories("bobs-only", [mem("bobs-only", user_id="bob")])

    assert graph_store.user_memory_cubes("alice") == ["owned-by-bob", "prefs", "unregistered"]
    assert graph_store.user_memory_cubes("nobody") == []

    graph_store.delete_memories_matching("prefs", MemoryFilter(memory_types=("PreferenceMemory",), user_id="alice"), 10)
    assert graph_store.user_memory_cubes("alice") == ["owned-by-bob", "unregistered"]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_user_ids_select_only_themselves(graph_store: GraphStore, hostile: str) -> None:
    graph_store.insert_memories("V", [mem("V", user_id="victim")])
    graph_store.insert_memories("H", [mem("H", user_id=hostile)])
    assert graph_store.user_memory_cubes(hostile) == ["H"]
    assert graph_store.delete_memories_matching("V", MemoryFilter(user_id=hostile), 10) == []
    assert graph_store.count("V") == 1
    assert len(graph_store.delete_memories_matching("H", MemoryFilter(user_id=hostile), 10)) == 1


def test_revoking_access_removes_the_cube_from_the_users_list(graph_store: GraphStore) -> None:
    graph_store.create_cube(Cube("shared", "owner"))
    graph_store.set_member("shared", "guest", "writer")
    assert [c.cube_id for c in graph_store.list_cubes("guest")] == ["shared"]
    graph_store.set_member("shared", "guest", "")
    assert graph_store.list_cubes("guest") == []
    assert graph_store.get_cube("shared").members == {}  # type: ignore[union-attr]
    assert [c.cube_id for c in graph_store.list_cubes("owner")] == ["shared"]
