"""GraphStore conformance for dedupe on add: text-hash lookup, merges, request records."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from services.textmem.dedupe import MERGES_KEY, Merge, text_hash
from services.textmem.models import Edge, Memory, MemoryFilter, Source
from services.textmem.stores.graph import GraphStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from shared.errors import Aborted, AlreadyExists, NotFound


def mem(cube: str, text: str, **fields: object) -> Memory:
    fields.setdefault("id", uuid.uuid4().hex)
    return Memory(cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def chat(content: str, message_id: str = "", chat_time: float | None = None) -> Source:
    return Source(type="chat", role="user", content=content, message_id=message_id, chat_time=chat_time)


def test_find_by_text_hash_finds_live_memories_of_the_cube_and_type(graph_store: GraphStore) -> None:
    a = mem("A", "The user likes pizza.")
    archived = mem("A", "Archived text", status="archived")
    working = mem("A", "Working copy", memory_type="WorkingMemory")
    user = mem("A", "The user likes pizza.", memory_type="UserMemory")
    other_cube = mem("B", "Only in B")
    graph_store.insert_memories("A", [a, archived, working, user])
    graph_store.insert_memories("B", [other_cube])
    hashes = [text_hash(t) for t in ("user likes PIZZA", "Archived text", "Working copy", "Only in B", "absent")]
    # Normalisation: case and end punctuation do not matter; "the" does (exact is exact).
    assert graph_store.find_by_text_hash("A", "LongTermMemory", hashes) == {}
    found = graph_store.find_by_text_hash("A", "LongTermMemory", [text_hash("  the user likes PIZZA!! "), *hashes])
    assert found == {text_hash("The user likes pizza."): a.id}
    assert graph_store.find_by_text_hash("A", "UserMemory", [text_hash("the user likes pizza")]) == {
        text_hash("the user likes pizza"): user.id
    }
    assert graph_store.find_by_text_hash("A", "WorkingMemory", [text_hash("Working copy")]) == {}
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [text_hash("Archived text")]) == {}
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [text_hash("Only in B")]) == {}
    assert graph_store.find_by_text_hash("B", "LongTermMemory", [text_hash("only in b")]) == {
        text_hash("only in b"): other_cube.id
    }
    assert graph_store.find_by_text_hash("A", "LongTermMemory", []) == {}


def test_find_by_text_hash_returns_the_oldest_and_follows_updates(graph_store: GraphStore) -> None:
    first, second = mem("A", "same text"), mem("A", "Same text.")
    graph_store.insert_memories("A", [first])
    graph_store.insert_memories("A", [second])
    h = text_hash("same text")
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [h]) == {h: first.id}
    first.memory = "changed text"
    first.version = 2
    graph_store.update_memory(first)
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [h]) == {h: second.id}
    h2 = text_hash("CHANGED TEXT")
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [h2]) == {h2: first.id}
    second.status = "archived"
    graph_store.update_memory(second)
    assert graph_store.find_by_text_hash("A", "LongTermMemory", [h]) == {}


def test_merge_appends_new_sources_once_and_unions_tags(graph_store: GraphStore) -> None:
    target = mem("A", "The user likes pizza.", tags=["x"], sources=[chat("I like pizza", "m1", 10.0)], updated_at=100.0)
    graph_store.insert_memories("A", [target])
    merge = Merge(
        target.id,
        sources=[chat("I like pizza", "m1", 10.0), chat("Pizza is great", "m2", 20.0)],
        tags=["y", "x"],
        updated_at=200.0,
        event_time=20.0,
        count=2,
    )
    graph_store.insert_memories("A", [], request_id="r1", merges=[merge], result_ids=[target.id])
    got = graph_store.get_memories("A", [target.id])[target.id]
    assert [s.content for s in got.sources] == ["I like pizza", "Pizza is great"]
    assert got.tags == ["x", "y"]
    assert got.updated_at == 200.0 and got.event_time == 20.0
    assert got.info[MERGES_KEY] == 2
    assert got.memory == "The user likes pizza."
    assert graph_store.memory_ids_for_request("A", "r1") == [target.id]
    assert graph_store.merged_ids_for_request("A", "r1") == [target.id]
    # Tag filters see the merged tag.
    page, _ = graph_store.list_memories("A", MemoryFilter(tags=("y",)), 10)
    assert [m.id for m in page] == [target.id]
    # The same merge again adds no source but counts.
    graph_store.insert_memories(
        "A", [], merges=[Merge(target.id, sources=[chat("Pizza is great", "m2", 20.0)], count=1)]
    )
    got = graph_store.get_memories("A", [target.id])[target.id]
    assert len(got.sources) == 2 and got.info[MERGES_KEY] == 3
    with pytest.raises(AlreadyExists):
        graph_store.insert_memories("A", [], request_id="r1", merges=[Merge(target.id, count=1)])


def test_merge_with_new_memories_and_edges_in_one_transaction(graph_store: GraphStore) -> None:
    old = mem("A", "old window")
    graph_store.insert_memories("A", [old])
    new = mem("A", "new window", sources=[chat("hello")])
    graph_store.insert_memories(
        "A",
        [new],
        [Edge("A", old.id, new.id, "FOLLOWS")],
        request_id="r",
        merges=[Merge(old.id, sources=[chat("again")], count=1)],
        result_ids=[old.id, new.id],
    )
    assert graph_store.memory_ids_for_request("A", "r") == [old.id, new.id]
    assert graph_store.merged_ids_for_request("A", "r") == [old.id]
    assert graph_store.neighbours("A", new.id, "FOLLOWS") == [old.id]
    assert [s.content for s in graph_store.get_memories("A", [old.id])[old.id].sources] == ["again"]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param({"status": "archived"}, id="archived"),
        pytest.param({"memory_type": "WorkingMemory"}, id="working-copy"),
        pytest.param(None, id="deleted"),
        pytest.param({"cube_id": "B"}, id="other-cube"),
    ],
)
def test_merge_into_a_target_that_cannot_take_it_writes_nothing(graph_store: GraphStore, target: dict | None) -> None:
    t = mem("A", "target")
    if target is not None and "cube_id" in target:
        t.cube_id = "B"
        graph_store.insert_memories("B", [t])
    elif target is not None:
        graph_store.insert_memories("A", [mem("A", "target", id=t.id, **target)])
    new = mem("A", "a new memory")
    with pytest.raises(NotFound) as err:
        graph_store.insert_memories(
            "A", [new], request_id="r", merges=[Merge(t.id, sources=[chat("x")], count=1)], result_ids=[t.id, new.id]
        )
    assert err.value.reason == "MERGE_TARGET_GONE"
    assert graph_store.get_memories("A", [new.id]) == {}
    assert graph_store.memory_ids_for_request("A", "r") is None
    assert graph_store.merged_ids_for_request("A", "r") == []


def test_requests_without_merges_record_none(graph_store: GraphStore) -> None:
    m = mem("A", "plain")
    graph_store.insert_memories("A", [m], request_id="plain")
    assert graph_store.memory_ids_for_request("A", "plain") == [m.id]
    assert graph_store.merged_ids_for_request("A", "plain") == []
    assert graph_store.merged_ids_for_request("A", "never") == []


def test_sqlite_file_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    """A graph file made before dedupe (no text_hash, no merged_ids) gains both, hashed."""
    path = tmp_path / "old.sqlite3"
    SqliteGraphStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX memories_text_hash")
    conn.execute("ALTER TABLE memories DROP COLUMN text_hash")
    conn.execute("ALTER TABLE requests DROP COLUMN merged_ids")
    conn.execute(
        "INSERT INTO memories(id, cube_id, user_id, session_id, memory, memory_type, status, key, tags, background,"
        " confidence, info, created_at, updated_at, event_time, version)"
        " VALUES ('aa11', 'A', '', '', 'An old memory!', 'LongTermMemory', 'activated', '', '[]', '', 1, '{}', 1, 1,"
        " NULL, 1)"
    )
    conn.execute(
        "INSERT INTO requests(cube_id, request_id, memory_ids, created_at) VALUES ('A', 'old', '[\"aa11\"]', 1)"
    )
    conn.commit()
    conn.close()
    store = SqliteGraphStore(path)
    try:
        h = text_hash("an old memory")
        assert store.find_by_text_hash("A", "LongTermMemory", [h]) == {h: "aa11"}
        assert store.memory_ids_for_request("A", "old") == ["aa11"]
        assert store.merged_ids_for_request("A", "old") == []
        plan = (
            store._conn()
            .execute("EXPLAIN QUERY PLAN SELECT id FROM memories WHERE cube_id = 'A' AND text_hash IN ('x')")
            .fetchall()
        )
        assert any("memories_text_hash" in str(tuple(r)) for r in plan)
    finally:
        store.close()


def test_neo4j_memories_of_an_earlier_version_get_their_hash(request: pytest.FixtureRequest) -> None:
    """Memories stored before dedupe (no text_hash, no index) are hashed when the index is made."""
    from services.textmem.stores.neo4j_graph import TEXT_HASH_INDEX, Neo4jGraphStore

    server = request.getfixturevalue("neo4j_server")
    server.wipe()
    store = Neo4jGraphStore(server.uri, server.user, server.password, server.database)
    old = mem("A", "An old memory!")
    store.insert_memories("A", [old])
    store.close()
    server._driver.execute_query(f"DROP INDEX {TEXT_HASH_INDEX}", database_=server.database)
    server._driver.execute_query("MATCH (m:Memory) REMOVE m.text_hash", database_=server.database)
    store = Neo4jGraphStore(server.uri, server.user, server.password, server.database)
    try:
        h = text_hash("an old memory")
        assert store.find_by_text_hash("A", "LongTermMemory", [h]) == {h: old.id}
    finally:
        store.close()


def test_unique_texts_refuses_a_text_that_became_live_meanwhile(graph_store: GraphStore) -> None:
    cube = f"A-{uuid.uuid4().hex[:6]}"
    first = mem(cube, "The user's dentist is on Friday.", user_id="u1")
    graph_store.insert_memories(cube, [first], unique_texts=True)
    twin = mem(cube, "the user's dentist is on friday", user_id="u1")
    bystander = mem(cube, "A different fact.", user_id="u1")
    with pytest.raises(Aborted) as err:
        graph_store.insert_memories(cube, [bystander, twin], request_id="r-twin", unique_texts=True)
    assert err.value.reason == "TEXT_ADDED_MEANWHILE"
    # Nothing of the refused insert was written, its request id included.
    assert set(graph_store.get_memories(cube, [first.id, twin.id, bystander.id])) == {first.id}
    assert graph_store.memory_ids_for_request(cube, "r-twin") is None
    # Other users, other types, and archived or working-memory twins are no merge targets.
    others = [
        mem(cube, "The user's dentist is on Friday.", user_id="u2"),
        mem(cube, "The user's dentist is on Friday.", user_id="u1", memory_type="UserMemory"),
        mem(cube, "The user's dentist is on Friday.", user_id="u1", memory_type="WorkingMemory"),
    ]
    graph_store.insert_memories(cube, others, unique_texts=True)
    archived = mem(cube, "An archived fact.", user_id="u1", status="archived")
    graph_store.insert_memories(cube, [archived])
    again = mem(cube, "An archived fact.", user_id="u1")
    graph_store.insert_memories(cube, [again], unique_texts=True)
    # Without the flag (dedupe off), repeats are stored as before.
    graph_store.insert_memories(cube, [twin])
    assert twin.id in graph_store.get_memories(cube, [twin.id])
