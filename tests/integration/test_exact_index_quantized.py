"""The exact index's 8-bit first pass (large cubes) changes no answer.

A cube of QUANTIZED_MIN_ROWS rows or more is searched through an 8-bit copy first and the
short list rescored on the float32 rows; that must give exactly what scoring every row in
float32 gives, for every filter, after updates, deletes and compaction, with vectors outside
the ranges the copy was trained on, and when the short list cannot be proven complete (the
float32 scan then answers). The threshold is lowered here so that the cubes stay small.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.textmem.models import MemoryFilter
from services.textmem.stores import exact_index
from services.textmem.stores.exact_index import ExactIndexVectorStore, ScannedRow, _CubeIndex
from tests.vector_rows import RowsStore, clustered_rows, reference, unit

pytest.importorskip("faiss")

DIM = 32


def rows(rng: np.random.Generator, n: int, start: int = 0, spread: float = 0.4) -> list[ScannedRow]:
    return clustered_rows(
        rng, n, DIM, start=start, spread=spread, centres=40, users=2, user_memory_every=6, archived_every=9
    )


FILTERS = [
    MemoryFilter(),
    MemoryFilter(include_archived=True),
    MemoryFilter(memory_types=("UserMemory",)),
    MemoryFilter(user_id="u1"),
    MemoryFilter(session_id="s3", include_archived=True),
    MemoryFilter(created_after=100.0, created_before=1500.0),
    MemoryFilter(user_id="nobody"),
]


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_index, "QUANTIZED_MIN_ROWS", 256)


def assert_same_ranking(
    index: _CubeIndex, q: np.ndarray, got: list[tuple[str, float]], want: list[tuple[str, float]]
) -> None:
    """The same ids in the same order, but for rows whose scores tie to float32 rounding: BLAS
    rounds a row's dot product differently in different kernels (a full scan, a gather), so a
    tie may break either way, as it already did between the float32 scan's two paths."""
    assert len(got) == len(want)
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)

    def true(mid: str) -> float:
        return float(index.vectors[index.pos[mid]].astype(np.float64) @ q.astype(np.float64))

    for (a, _), (b, _) in zip(got, want, strict=True):
        if a != b:
            assert abs(true(a) - true(b)) < 1e-6, (a, b)


def assert_agrees(index: _CubeIndex, rng: np.random.Generator, queries: int = 12, k: int = 10) -> None:
    n = len(index.ids)
    for t in range(queries):
        # Half the queries sit on a stored row (a near-tie at the top), half anywhere.
        q = index.vectors[rng.integers(n)].copy() if t % 2 else unit(rng.standard_normal(DIM))
        for flt in FILTERS:
            assert_same_ranking(index, q, index.search(q, flt, k, str), reference(index, q, flt, k))


def test_answers_as_the_float32_scan_through_changes() -> None:
    rng = np.random.default_rng(11)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 1500))
    assert_agrees(index, rng)
    assert index.quantized is not None and index.quantized.rows == 1500
    # Updates in place (re-encoded), rows far outside the trained ranges (clamped: a larger
    # error bound), new rows, deletes.
    index.put(rows(rng, 200, start=0, spread=3.0))
    index.put(rows(rng, 300, start=5000, spread=5.0))
    index.remove([f"{i:08x}" for i in range(200, 400)])
    assert_agrees(index, rng)
    assert index.quantized is not None and index.quantized.rows == len(index.ids)
    # Compaction moves rows: the 8-bit copy is rebuilt.
    index.remove([f"{i:08x}" for i in range(400, 1500)])
    assert index.dead == 0
    assert_agrees(index, rng)


def test_an_unprovable_short_list_falls_back_to_the_float32_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 1200))
    # With an error bound this large no short list can be proven complete.
    monkeypatch.setattr(exact_index, "QUANTIZED_SLACK", 10.0)
    assert_agrees(index, rng, queries=4)
    assert index.quantized is not None


def test_search_batch_equals_one_search_per_query() -> None:
    rng = np.random.default_rng(2)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 1000))
    queries = np.stack([unit(rng.standard_normal(DIM)) for _ in range(7)])
    for flt in FILTERS:
        # Seven queries: past QUANTIZED_MAX_QUERIES, the batch is one float32 matrix product.
        batched = index.search_batch(queries, flt, 5, str)
        for q, got in zip(queries, batched, strict=True):
            assert_same_ranking(index, q, got, index.search(q, flt, 5, str))
        # Two: through the 8-bit copy, query by query.
        for q, got in zip(queries[:2], index.search_batch(queries[:2], flt, 5, str), strict=True):
            assert got == index.search(q, flt, 5, str)


def test_the_store_searches_a_large_cube_exactly_and_batches() -> None:
    rng = np.random.default_rng(8)
    store = ExactIndexVectorStore(RowsStore(rows(rng, 2000), DIM))  # type: ignore[arg-type]
    queries = rng.standard_normal((3, DIM)).astype(np.float32) * 3  # not unit: the store normalises
    batched = store.search_batch("c", queries, MemoryFilter(), 8)
    single = [store.search("c", q, MemoryFilter(), 8) for q in queries]
    index = store._cubes["c"]
    for q, a, b in zip(queries, batched, single, strict=True):
        assert_same_ranking(index, unit(q), a, b)
    assert index.quantized is not None
    for q, got in zip(queries, single, strict=True):
        assert_same_ranking(index, unit(q), got, reference(index, unit(q), MemoryFilter(), 8))


def test_a_short_list_missing_a_best_row_is_never_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A short list of exactly k rows over tight clusters: the 8-bit order often differs from the
    # true one at the boundary, and only the error bound tells such a list from a complete one.
    monkeypatch.setattr(exact_index, "QUANTIZED_WIDEN", 1)
    monkeypatch.setattr(exact_index, "QUANTIZED_MARGIN", 0)
    rng = np.random.default_rng(4)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 1500, spread=0.05))
    assert_agrees(index, rng, queries=16)
