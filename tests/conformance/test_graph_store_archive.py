"""GraphStore conformance for conflict resolution: archives applied in the insert's transaction."""

from __future__ import annotations

import uuid

import pytest

from services.textmem.conflicts import SUPERSEDED_BY_KEY, SUPERSEDES, Archive
from services.textmem.models import Edge, Memory, MemoryFilter
from services.textmem.stores.graph import GraphStore
from shared.errors import NotFound


def mem(cube: str, text: str, **fields: object) -> Memory:
    fields.setdefault("id", uuid.uuid4().hex)
    return Memory(cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def test_an_insert_archives_what_its_memory_supersedes(graph_store: GraphStore) -> None:
    old = mem("A", "The user lives in Beijing.", info={"k": "v"})
    graph_store.insert_memories("A", [old])
    new = mem("A", "The user moved to Shanghai.")
    graph_store.insert_memories(
        "A", [new], [Edge("A", new.id, old.id, SUPERSEDES)], request_id="r1", archives=[Archive(old.id, new.id)]
    )
    got = graph_store.get_memories("A", [old.id])[old.id]
    assert got.status == "archived" and got.info == {"k": "v", SUPERSEDED_BY_KEY: new.id} and got.version == 2
    assert got.memory == old.memory
    assert [(v.status, v.version) for v in graph_store.memory_history("A", old.id)] == [("activated", 1)]
    assert graph_store.neighbours("A", new.id, SUPERSEDES) == [old.id]
    assert (
        graph_store.count("A", MemoryFilter()) == 1 and graph_store.count("A", MemoryFilter(include_archived=True)) == 2
    )
    assert [i for i, _ in graph_store.search_lexical("A", "Beijing", MemoryFilter(), 10)] == []
    assert graph_store.memory_ids_for_request("A", "r1") == [new.id]


@pytest.mark.parametrize("state", ["absent", "archived", "working", "other-cube"])
def test_an_archive_of_a_memory_that_is_not_live_writes_nothing(graph_store: GraphStore, state: str) -> None:
    target = mem(
        "B" if state == "other-cube" else "A",
        "The user lives in Beijing.",
        status="archived" if state == "archived" else "activated",
        memory_type="WorkingMemory" if state == "working" else "LongTermMemory",
    )
    if state != "absent":
        graph_store.insert_memories(target.cube_id, [target])
    new = mem("A", "The user moved to Shanghai.")
    with pytest.raises(NotFound) as exc:
        graph_store.insert_memories(
            "A",
            [new],
            [Edge("A", new.id, target.id, SUPERSEDES)],
            request_id="r1",
            archives=[Archive(target.id, new.id)],
        )
    assert exc.value.reason == "ARCHIVE_TARGET_GONE"
    assert graph_store.get_memories("A", [new.id]) == {}
    assert graph_store.memory_ids_for_request("A", "r1") is None
    if state != "absent":
        kept = graph_store.get_memories(target.cube_id, [target.id])[target.id]
        assert (kept.status, kept.version) == (target.status, 1)
