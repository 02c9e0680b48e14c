"""VectorStore conformance of batched searches: ``search_batch`` (through the helper, which
falls back to one search per vector for a store without it) answers what one ``search`` per
vector answers, for every implementation in VECTOR_STORES. Dedupe relies on it."""

from __future__ import annotations

import numpy as np

from services.textmem.models import MemoryFilter
from services.textmem.stores.vector import VectorStore, search_batch
from tests.conformance.test_vector_store_conformance import DIM, NewCube, rec


def test_search_batch_equals_one_search_per_vector(vector_store: VectorStore, new_cube: NewCube) -> None:
    rng = np.random.default_rng(3)
    cube, other = new_cube(), new_cube()
    types = ["LongTermMemory", "UserMemory", "PreferenceMemory"]
    vector_store.upsert(
        [
            rec(
                cube,
                rng.standard_normal(DIM).astype(np.float32),
                memory_type=types[i % 3],
                user_id=f"u{i % 2}",
                status="archived" if i % 7 == 0 else "activated",
            )
            for i in range(60)
        ]
    )
    vector_store.upsert([rec(other, rng.standard_normal(DIM).astype(np.float32)) for _ in range(10)])
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    filters = [
        MemoryFilter(),
        MemoryFilter(memory_types=("UserMemory",), user_id="u1"),
        MemoryFilter(memory_types=("PreferenceMemory",)),
        MemoryFilter(memory_types=("LongTermMemory", "PreferenceMemory"), include_archived=True),
        MemoryFilter(user_id="nobody"),
    ]
    for flt in filters:
        batched = search_batch(vector_store, cube, queries, flt, 4)
        assert len(batched) == len(queries)
        for q, got in zip(queries, batched, strict=True):
            want = vector_store.search(cube, q, flt, 4)
            assert [i for i, _ in got] == [i for i, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_search_batch_of_no_vectors_or_an_empty_cube(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    assert search_batch(vector_store, cube, np.zeros((0, DIM), np.float32), MemoryFilter(), 4) == []
    q = np.ones((2, DIM), np.float32)
    assert search_batch(vector_store, cube, q, MemoryFilter(), 4) == [[], []]
