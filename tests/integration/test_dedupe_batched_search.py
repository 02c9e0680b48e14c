"""Dedupe's near-duplicate search is batched: one vector search per (type, user) of an add,
scoring the add's memories together, with the same plan as one search per memory.

Through the embedded stores (SQLite, Milvus Lite behind the exact index, real MiniLM)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.textmem.app import build_memory
from services.textmem.dedupe import DEFAULT_THRESHOLD, plan_add
from services.textmem.memory import TextMemory
from services.textmem.models import Memory, MemoryFilter
from services.textmem.settings import TextMemSettings


class PerVector:
    """The same store without search_batch: dedupe then searches once per memory."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.dim = store.dim
        self.store = store
        self.searches = 0

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        self.searches += 1
        return self.store.search(cube_id, vector, flt, limit)


class Counting:
    """The store, counting its batched searches."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.dim = store.dim
        self.store = store
        self.batches: list[tuple[int, MemoryFilter]] = []

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        raise AssertionError("dedupe should search in batches")

    def search_batch(
        self, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
    ) -> list[list[tuple[str, float]]]:
        self.batches.append((len(vectors), flt))
        return self.store.search_batch(cube_id, vectors, flt, limit)


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[TextMemory]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("dedupe-batch")
    mem = build_memory(TextMemSettings(data_dir=data, log_level="WARNING"), embedder=embedder)
    yield mem
    mem.close()


def cand(text: str, **fields: object) -> Memory:
    values: dict[str, object] = {"cube_id": "", "user_id": "u", "session_id": "s"}
    values.update(fields)
    return Memory(id=uuid.uuid4().hex, memory=text, **values)  # type: ignore[arg-type]


EXISTING = [
    cand("Oh, the user just adopted three cats."),
    cand("The user lives in Lisbon."),
    cand("The user prefers tea over coffee.", memory_type="UserMemory"),
    cand("The team meets on Mondays.", user_id="alice"),
    cand("Caroline went to the LGBTQ support group on 7 May 2023."),
    cand("Melanie is painting a sunrise over the lake."),
]


def adding(cube: str) -> list[Memory]:
    out = [
        cand("The user adopted 3 cats."),  # a restatement of an existing memory: merged
        cand("The user adopted 4 cats."),  # a changed fact: kept
        cand("The user lives in Lisbon!"),  # an exact repeat: merged without a search
        cand("the user prefers tea over coffee", memory_type="UserMemory"),  # merged, other type
        cand("The team meets on mondays", user_id="bob"),  # another user's words: kept
        cand("The team just meets on Mondays.", user_id="alice"),  # alice's restatement: merged
        cand("Caroline went to an LGBTQ support group on 7 May 2023."),  # merged
        cand("Melanie is painting a sunset over the lake."),  # a changed fact: kept
        cand("Melanie is painting sunsets over the lake."),  # repeats the add's previous one
        cand("The user bought a red bicycle."),  # new
    ]
    return [dataclasses.replace(m, cube_id=cube) for m in out]


def test_batched_search_plans_as_one_search_per_memory(memory: TextMemory) -> None:
    cube = f"batch-{uuid.uuid4().hex[:10]}"
    memory.dedupe = False
    try:
        for user in ("u", "alice"):
            mine = [dataclasses.replace(m, cube_id=cube) for m in EXISTING if m.user_id == user]
            memory.write_memories(cube, user, "s", mine)
    finally:
        memory.dedupe = True
    existing = {m.memory: m.id for m in memory.list(cube, MemoryFilter(include_archived=True), 100, 0)[0]}

    def embed(texts: list[str]) -> np.ndarray:
        return memory.embedder.embed(texts)

    adds = adding(cube)
    per_vector = PerVector(memory.vectors)
    counting = Counting(memory.vectors)
    one_by_one = plan_add(cube, adds, memory.graph, per_vector, embed, DEFAULT_THRESHOLD)  # type: ignore[arg-type]
    batched = plan_add(cube, adds, memory.graph, counting, embed, DEFAULT_THRESHOLD)  # type: ignore[arg-type]

    assert batched.final_ids == one_by_one.final_ids
    assert [m.id for m in batched.new] == [m.id for m in one_by_one.new]
    assert np.array_equal(batched.new_vectors, one_by_one.new_vectors)
    assert [(g.target_id, g.count) for g in batched.merges] == [(g.target_id, g.count) for g in one_by_one.merges]
    # What the plan decided, memory by memory (see adding()).
    f = batched.final_ids
    assert f[0] == existing["Oh, the user just adopted three cats."]
    assert f[1] == adds[1].id
    assert f[2] == existing["The user lives in Lisbon."]
    assert f[3] == existing["The user prefers tea over coffee."]
    assert f[4] == adds[4].id
    assert f[5] == existing["The team meets on Mondays."]
    assert f[6] == existing["Caroline went to the LGBTQ support group on 7 May 2023."]
    assert f[7] == adds[7].id and f[8] == adds[7].id
    assert f[9] == adds[9].id
    # One search per memory that was not an exact repeat, against one batch per (type, user).
    assert per_vector.searches == 8
    groups = sorted((n, flt.memory_types, flt.user_id) for n, flt in counting.batches)
    assert groups == [(1, ("LongTermMemory",), "alice"), (1, ("LongTermMemory",), "bob"), (6, ("LongTermMemory",), "u")]


def test_a_batch_search_finds_what_single_searches_find_in_a_large_cube(memory: TextMemory) -> None:
    """Enough memories for the exact index's 8-bit first pass (its threshold lowered here)."""
    from services.textmem.stores import exact_index

    cube = f"batch-large-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    words = "garden lisbon cats tea hiking pottery wedding novel sunrise lake bicycle piano".split()
    texts = [f"Memory {i}: " + " ".join(rng.choice(words, 5)) for i in range(600)]
    memory.dedupe = False
    try:
        memory.write_memories(cube, "u", "s", [cand(t, cube_id=cube) for t in texts])
    finally:
        memory.dedupe = True
    queries = memory.embedder.embed(texts[:40])
    saved = exact_index.QUANTIZED_MIN_ROWS
    exact_index.QUANTIZED_MIN_ROWS = 256
    try:
        batched = memory.vectors.search_batch(cube, queries, MemoryFilter(user_id="u"), 4)  # type: ignore[attr-defined]
        single = [memory.vectors.search(cube, q, MemoryFilter(user_id="u"), 4) for q in queries]
    finally:
        exact_index.QUANTIZED_MIN_ROWS = saved
    assert [[i for i, _ in h] for h in batched] == [[i for i, _ in h] for h in single]
    # Each memory finds itself first.
    ids = {m.memory: m.id for m in memory.list(cube, MemoryFilter(), 1000, 0)[0]}
    assert [h[0][0] for h in batched] == [ids[t] for t in texts[:40]]
