"""The counts textmem's gauges read (``GraphStore.memory_stats``), on every graph store.

A store may hold other tests' data (one Neo4j server serves the session), so the checks
compare before and after rather than assume an empty store.
"""

from __future__ import annotations

import uuid

from services.textmem.models import Cube, Memory
from services.textmem.stores.graph import GraphStore


def _mems(cube: str, n: int, memory_type: str = "LongTermMemory") -> list[Memory]:
    return [Memory(id=uuid.uuid4().hex, cube_id=cube, memory=f"m{i}", memory_type=memory_type) for i in range(n)]


def test_memory_stats_counts_types_cubes_and_the_largest_cubes(graph_store: GraphStore, new_cube) -> None:  # type: ignore[no-untyped-def]
    before = graph_store.memory_stats(top_cubes=0)
    assert before.largest == []
    big, small = new_cube("big"), new_cube("small")
    for cube in (big, small):
        graph_store.create_cube(Cube(cube, "owner"))
    graph_store.insert_memories(big, _mems(big, 30))
    graph_store.insert_memories(big, _mems(big, 2, "UserMemory"))
    graph_store.insert_memories(small, _mems(small, 1))

    after = graph_store.memory_stats(top_cubes=500)
    assert after.cubes == before.cubes + 2
    assert after.by_type.get("LongTermMemory", 0) == before.by_type.get("LongTermMemory", 0) + 31
    assert after.by_type.get("UserMemory", 0) == before.by_type.get("UserMemory", 0) + 2
    counts = dict(after.largest)
    assert counts[big] == 32
    assert [n for _, n in after.largest] == sorted((n for _, n in after.largest), reverse=True)
    top = graph_store.memory_stats(top_cubes=1).largest
    assert len(top) == 1 and top[0][1] >= 32

    graph_store.delete_cube_memories(big)
    assert big not in dict(graph_store.memory_stats(top_cubes=500).largest)
