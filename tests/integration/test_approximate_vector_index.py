"""The exact index's approximate index (large cubes): good recall, exact scores, consistent with writes.

A cube of ``approximate_min_rows`` rows or more gets an inverted-file index whose candidates
are scored again on the float32 rows. What must hold: every score returned is the row's exact
similarity and every row returned passes the filter and is live; recall against scoring every
row stays high; a row written or deleted since the index took it is found (or never returned)
at once, before the index is refreshed, including writes that land while a build runs; a
selective filter gets the exact path; the build runs in the background without blocking
searches. Thresholds are lowered so that the cubes stay small.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.textmem.models import MemoryFilter
from services.textmem.stores import exact_index
from services.textmem.stores.exact_index import ExactIndexVectorStore, ScannedRow, _build_ann, _CubeIndex
from tests.vector_rows import RowsStore, clustered_rows, reference, unit

pytest.importorskip("faiss")

DIM = 32


def rows(rng: np.random.Generator, n: int, start: int = 0, spread: float = 0.35) -> list[ScannedRow]:
    return clustered_rows(
        rng, n, DIM, start=start, spread=spread, centres=60, users=4, user_memory_every=10, archived_every=20
    )


def check(index: _CubeIndex, got: list[tuple[str, float]], q: np.ndarray, flt: MemoryFilter, k: int) -> float:
    """Asserts what must hold exactly; returns the recall against the reference."""
    want = reference(index, q, flt, k)
    assert len(got) == len(want)
    m = index._compute_mask(flt, str)
    assert m is not None
    for mid, score in got:
        i = index.pos[mid]  # live
        assert m[i], mid  # passes the filter
        assert score == pytest.approx(float(index.vectors[i] @ q), abs=1e-5)  # exact score
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    return len({i for i, _ in got} & {i for i, _ in want}) / max(len(want), 1)


def built(index: _CubeIndex) -> None:
    """Builds the index's approximate index inline, as the background thread would."""
    snap = index.ann_snapshot()
    assert index.ann_install(snap, _build_ann(snap, DIM, threading.Event()))


def queries(rng: np.random.Generator, index: _CubeIndex, n: int) -> list[np.ndarray]:
    live = np.flatnonzero(index.live[: len(index.ids)])
    # Half near a stored row, half anywhere.
    near = [unit(index.vectors[rng.choice(live)] + 0.3 * rng.standard_normal(DIM)) for _ in range(n // 2)]
    return near + [unit(rng.standard_normal(DIM)) for _ in range(n - n // 2)]


def test_recall_is_high_and_scores_exact() -> None:
    rng = np.random.default_rng(1)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 8000))
    built(index)
    assert index.ann is not None and index.ann.lists > 16
    recall = [
        check(index, index.search(q, MemoryFilter(), 30, str), q, MemoryFilter(), 30) for q in queries(rng, index, 40)
    ]
    assert index.counts["approximate"] == 40
    assert np.mean(recall) >= 0.95


def test_writes_and_deletes_are_seen_before_the_index_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 4000))
    built(index)
    flt = MemoryFilter()
    # A new row equal to the query: first at once, with its exact score.
    q = unit(rng.standard_normal(DIM))
    index.put([ScannedRow("new", "u0", "s0", "LongTermMemory", "activated", 1, q * 3)])
    got = index.search(q, flt, 10, str)
    assert got[0][0] == "new" and got[0][1] == pytest.approx(1.0, abs=1e-5)
    # A row rewritten in place: found at its new vector, scored by it at its old one.
    old = index.vectors[index.pos["00000007"]].copy()
    index.put([ScannedRow("00000007", "u0", "s0", "LongTermMemory", "activated", 1, -old)])
    got = dict(index.search(unit(-old), flt, 5, str))
    assert got["00000007"] == pytest.approx(1.0, abs=1e-5)
    assert "00000007" not in dict(index.search(old, flt, 5, str))
    # Deleted rows are never returned, though the index still holds them.
    top = [mid for mid, _ in index.search(q, flt, 20, str)]
    index.remove(top[:10])
    got = index.search(q, flt, 20, str)
    assert not set(top[:10]) & {mid for mid, _ in got}
    check(index, got, q, flt, 20)
    assert top[0] == "new" and index.ann_pending() == 1 + 10  # "new" was written, then deleted
    # Taken by the index, a few rows at a time: nothing pending, the same answers.
    before = index.search(q, flt, 20, str)
    assert index.ann_flush(5)
    assert not index.ann_flush(1000)
    assert index.ann_pending() == 0
    assert index.search(q, flt, 20, str) == before
    assert dict(index.search(unit(-old), flt, 5, str))["00000007"] == pytest.approx(1.0, abs=1e-5)


def test_writes_during_a_build_are_marked() -> None:
    rng = np.random.default_rng(3)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 3000))
    snap = index.ann_snapshot()
    # While the build runs: new rows (the matrix grows and moves), a rewrite, deletes.
    index.put(rows(rng, 3000, start=10_000))
    q = unit(rng.standard_normal(DIM))
    index.put([ScannedRow("00000003", "u0", "s0", "LongTermMemory", "activated", 1, q)])
    index.remove(["00000004", f"{10_001:08x}"])  # an old row and a new one
    assert index.ann_install(snap, _build_ann(snap, DIM, threading.Event()))
    assert index.ann_pending() == 3000 + 1 + 1  # the new rows, the rewritten one, the deleted old one
    flt = MemoryFilter(include_archived=True)
    got = index.search(q, flt, 10, str)
    assert got[0][0] == "00000003"
    recall = [check(index, index.search(v, flt, 20, str), v, flt, 20) for v in queries(rng, index, 20)]
    assert np.mean(recall) >= 0.9
    index.ann_flush(100_000)
    recall = [check(index, index.search(v, flt, 20, str), v, flt, 20) for v in queries(rng, index, 20)]
    assert np.mean(recall) >= 0.9


def test_a_build_across_a_compaction_is_refused_and_compaction_drops_the_index() -> None:
    rng = np.random.default_rng(4)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 2000))
    snap = index.ann_snapshot()
    index.remove([f"{i:08x}" for i in range(1500)])  # compacts: rows move
    assert not index.ann_install(snap, _build_ann(snap, DIM, threading.Event()))
    assert index.ann is None
    built(index)
    index.remove([f"{i:08x}" for i in range(1500, 1800)])
    assert index.ann is None  # compacted again


def test_selective_filters_take_the_exact_path() -> None:
    rng = np.random.default_rng(5)
    index = _CubeIndex(DIM)
    index.put(rows(rng, 5000))
    built(index)
    q = unit(rng.standard_normal(DIM))
    # A quarter of the rows: exact, whatever the index.
    flt = MemoryFilter(user_id="u1")
    assert index.search(q, flt, 10, str) == index.search(q, flt, 10, str, approximate=False)
    assert index.counts["approximate"] == 0
    # Most rows pass: approximate (with the filter inside the index's scan), and exact scores.
    flt = MemoryFilter(created_after=500.0)
    check(index, index.search(q, flt, 10, str), q, flt, 10)
    assert index.counts["approximate"] == 1


def test_the_store_builds_in_the_background_without_blocking_searches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    started, release = threading.Event(), threading.Event()
    real_build = exact_index._build_ann

    def slow_build(*args):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(30)
        return real_build(*args)

    monkeypatch.setattr(exact_index, "_build_ann", slow_build)
    store = ExactIndexVectorStore(RowsStore(rows(rng, 3000), DIM), approximate_min_rows=2000)  # type: ignore[arg-type]
    try:
        q = unit(rng.standard_normal(DIM))
        first = store.search("c", q, MemoryFilter(), 10)  # loads the cube, starts the build
        assert started.wait(10)
        # The build is waiting: searches and deletes go on, exactly.
        t0 = time.perf_counter()
        assert store.search("c", q, MemoryFilter(), 10) == first
        store.delete("c", [first[0][0]])
        assert time.perf_counter() - t0 < 5
        index = store._cubes["c"]
        assert index.ann is None and index.counts["approximate"] == 0
        release.set()
        assert store.wait_background(30)
        assert index.ann is not None and not index.ann_busy
        got = store.search("c", q, MemoryFilter(), 10)
        assert index.counts["approximate"] == 1
        assert first[0][0] not in dict(got)
        check(index, got, q, MemoryFilter(), 10)
        # The A/B switch the scale benchmark uses.
        store.approximate = False
        assert store.search("c", q, MemoryFilter(), 10) == reference(index, q, MemoryFilter(), 10)
        assert index.counts["approximate"] == 1
    finally:
        release.set()
        store.close()


def test_the_store_refreshes_the_index_after_many_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_index, "ANN_FLUSH_ROWS", 100)
    rng = np.random.default_rng(7)
    store = ExactIndexVectorStore(RowsStore(rows(rng, 2500), DIM), background=False, approximate_min_rows=2000)  # type: ignore[arg-type]
    try:
        q = unit(rng.standard_normal(DIM))
        store.search("c", q, MemoryFilter(), 10)
        index = store._cubes["c"]
        assert index.ann is not None and index.ann_pending() == 0
        index.put(rows(rng, 150, start=50_000))  # as an upsert would, without the durable store
        assert index.ann_pending() == 150
        store.search("c", q, MemoryFilter(), 10)  # due: flushed first
        assert index.ann_pending() == 0
        trained = index.ann.trained_rows
        index.put(rows(rng, 2600, start=60_000))  # the cube doubled: new lists
        store.search("c", q, MemoryFilter(), 10)
        assert index.ann.trained_rows > trained and index.ann_pending() == 0
    finally:
        store.close()
