"""GraphStore conformance of full-text search where the best-scoring matches do not pass the
filter, or belong to other cubes: the answer is still the best ``limit`` passing memories of the
cube. Neo4j asks its index for a bounded number of hits and filters after (so that a search's
cost does not follow how many memories match); these pin that it asks again when the filter
leaves too few, and that other cubes never use up its hits."""

from __future__ import annotations

from services.textmem.models import MemoryFilter
from services.textmem.stores.graph import GraphStore
from tests.conformance.test_graph_store_conformance import lexical_ids, mem


def test_filtered_out_best_matches_leave_the_best_passing_ones(graph_store: GraphStore) -> None:
    # Short texts score higher (BM25 length normalisation): the 150 best matches are archived
    # or of another type, the 5 passing ones are long and score lowest.
    blocked = [
        mem("D", f"orchid {i}", status="archived" if i % 2 else "activated", memory_type="WorkingMemory")
        for i in range(150)
    ]
    passing = [
        mem("D", f"orchid {i} " + " ".join(f"filler{j}" for j in range(20 + i)), memory_type="UserMemory")
        for i in range(5)
    ]
    graph_store.insert_memories("D", blocked + passing)
    got = lexical_ids(graph_store, "D", "orchid", MemoryFilter(memory_types=("UserMemory",)), limit=3)
    # Longer text, lower score: the passing memories in the order they were written.
    assert got == [m.id for m in passing[:3]]
    assert lexical_ids(graph_store, "D", "orchid", MemoryFilter(memory_types=("UserMemory",)), limit=10) == [
        m.id for m in passing
    ]
    # The archived ones are found when asked for, and nothing passes a filter no memory meets.
    archived = lexical_ids(graph_store, "D", "orchid", MemoryFilter(include_archived=True), limit=500)
    assert len(archived) == 155
    assert lexical_ids(graph_store, "D", "orchid", MemoryFilter(user_id="nobody"), limit=5) == []


def test_other_cubes_matches_never_crowd_out_the_cubes_own(graph_store: GraphStore) -> None:
    # Another cube with many better matches of the same words.
    graph_store.insert_memories("crowd", [mem("crowd", f"tulip garden {i}") for i in range(300)])
    own = [mem("mine", "tulip garden " + " ".join(f"word{j}" for j in range(30))) for _ in range(2)]
    graph_store.insert_memories("mine", own)
    assert sorted(lexical_ids(graph_store, "mine", "tulip garden", limit=5)) == sorted(m.id for m in own)
    assert len(lexical_ids(graph_store, "crowd", "tulip garden", limit=200)) == 200


def test_ties_go_to_the_older_memory(graph_store: GraphStore) -> None:
    same = [mem("T", "the same lantern words") for _ in range(12)]
    for m in same:
        graph_store.insert_memories("T", [m])
    hits = graph_store.search_lexical("T", "lantern", MemoryFilter(), 5)
    assert len({round(s, 6) for _, s in hits}) == 1
    assert [i for i, _ in hits] == [m.id for m in same[:5]]
