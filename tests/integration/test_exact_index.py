"""The exact in-process index answers as Milvus Lite would, survives restarts and failed writes.

The shared VectorStore conformance suite runs it too (tests/conformance); these tests cover
what is particular to a copy: it must agree with the durable store it copies, load what an
earlier process wrote, and never hold a row the durable store refused.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from services.textmem.models import MemoryFilter
from services.textmem.stores.exact_index import ExactIndexVectorStore
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.vector import VectorRecord
from shared.errors import Unavailable

DIM = 16
TYPES = ["LongTermMemory", "UserMemory", "WorkingMemory", "PreferenceMemory"]
STATUSES = ["activated", "archived"]


def records(cube: str, n: int, rng: np.random.Generator) -> list[VectorRecord]:
    return [
        VectorRecord(
            id=uuid.uuid4().hex,
            cube_id=cube,
            user_id=f"user-{i % 3}",
            session_id=f"session-{i % 5}",
            memory_type=TYPES[i % len(TYPES)],
            status=STATUSES[int(i % 7 == 0)],
            created_at=1_700_000_000.0 + i,
            vector=rng.standard_normal(DIM).astype(np.float32),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> MilvusVectorStore:
    store = MilvusVectorStore(str(tmp_path_factory.mktemp("exact") / "m.db"), "exact", DIM)
    yield store
    store.close()


FILTERS = [
    MemoryFilter(),
    MemoryFilter(include_archived=True),
    MemoryFilter(memory_types=("UserMemory",)),
    MemoryFilter(memory_types=("PreferenceMemory", "WorkingMemory"), include_archived=True),
    MemoryFilter(user_id="user-1"),
    MemoryFilter(user_id="nobody"),
    MemoryFilter(session_id="session-2", user_id="user-2"),
    MemoryFilter(created_after=1_700_000_050.0, created_before=1_700_000_120.0),
]


@pytest.mark.parametrize("flt", FILTERS, ids=[str(i) for i in range(len(FILTERS))])
def test_ranks_exactly_as_milvus_lite_does(milvus: MilvusVectorStore, flt: MemoryFilter) -> None:
    rng = np.random.default_rng(7)
    cube = f"agree-{uuid.uuid4().hex}"
    milvus.upsert(records(cube, 300, rng))
    milvus.upsert(records(f"other-{cube}", 50, rng))
    milvus.flush()
    exact = ExactIndexVectorStore(milvus)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        ours = exact.search(cube, q, flt, 20)
        theirs = milvus.search(cube, q, flt, 20)
        assert [i for i, _ in ours] == [i for i, _ in theirs]
        assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


def test_a_new_process_loads_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = str(tmp_path / "m.db")
    first = ExactIndexVectorStore(MilvusVectorStore(path, "restart", DIM))
    recs = records("cube", 40, rng)
    first.upsert(recs)
    first.delete("cube", [recs[0].id])
    first.close()

    second = ExactIndexVectorStore(MilvusVectorStore(path, "restart", DIM))
    try:
        assert second.count("cube") == 39
        hit, score = second.search("cube", recs[1].vector, MemoryFilter(include_archived=True), 1)[0]
        assert hit == recs[1].id and score == pytest.approx(1.0, abs=1e-5)
        assert recs[0].id not in dict(second.search("cube", recs[0].vector, MemoryFilter(include_archived=True), 40))
    finally:
        second.close()


class RefusingStore:
    """The real durable store, except that writes fail once armed (as if Milvus went away)."""

    def __init__(self, inner: MilvusVectorStore) -> None:
        self._inner = inner
        self.fail = False

    def upsert(self, recs):  # type: ignore[no-untyped-def]
        if self.fail:
            raise Unavailable("injected", reason="INJECTED")
        return self._inner.upsert(recs)

    def delete(self, cube_id, ids):  # type: ignore[no-untyped-def]
        if self.fail:
            raise Unavailable("injected", reason="INJECTED")
        return self._inner.delete(cube_id, ids)

    def delete_ids(self, ids):  # type: ignore[no-untyped-def]
        if self.fail:
            raise Unavailable("injected", reason="INJECTED")
        return self._inner.delete_ids(ids)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)


def test_a_refused_write_never_reaches_the_copy(milvus: MilvusVectorStore) -> None:
    rng = np.random.default_rng(3)
    durable = RefusingStore(milvus)
    exact = ExactIndexVectorStore(durable)  # type: ignore[arg-type]
    cube = f"refused-{uuid.uuid4().hex}"
    kept = records(cube, 10, rng)
    exact.upsert(kept)
    assert exact.count(cube) == 10

    durable.fail = True
    refused = records(cube, 5, rng)
    with pytest.raises(Unavailable):
        exact.upsert(refused)
    with pytest.raises(Unavailable):
        exact.delete(cube, [kept[0].id])
    durable.fail = False

    everything = MemoryFilter(include_archived=True, memory_types=tuple(TYPES))
    found = {i for i, _ in exact.search(cube, kept[0].vector, everything, 100)}
    assert found == {r.id for r in kept}
    assert exact.count(cube) == milvus.count(cube) == 10


def test_updates_replace_rows_and_deletes_compact(milvus: MilvusVectorStore) -> None:
    rng = np.random.default_rng(5)
    exact = ExactIndexVectorStore(milvus)
    cube = f"churn-{uuid.uuid4().hex}"
    recs = records(cube, 200, rng)
    exact.upsert(recs)
    # Move every row to a new vector: the old vectors must not be found any more.
    moved = [VectorRecord(**{**r.__dict__, "vector": rng.standard_normal(DIM).astype(np.float32)}) for r in recs]
    exact.upsert(moved)
    everything = MemoryFilter(include_archived=True, memory_types=tuple(TYPES))
    for old, new in zip(recs[:5], moved[:5], strict=True):
        top, score = exact.search(cube, new.vector, everything, 1)[0]
        assert top == new.id and score == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(exact.get_vectors(cube, [old.id])[old.id], new.vector / np.linalg.norm(new.vector))
    # Delete most rows (past the compaction threshold); what is left is still found exactly.
    exact.delete(cube, [r.id for r in moved[:150]])
    assert exact.count(cube) == 50
    survivors = {r.id for r in moved[150:]}
    assert {i for i, _ in exact.search(cube, moved[160].vector, everything, 100)} == survivors
    assert exact.search(cube, moved[160].vector, everything, 1)[0][0] == moved[160].id


def test_prewarm_loads_the_named_cubes_in_the_background(milvus: MilvusVectorStore) -> None:
    rng = np.random.default_rng(9)
    warm, cold = f"warm-{uuid.uuid4().hex}", f"cold-{uuid.uuid4().hex}"
    milvus.upsert(records(warm, 30, rng) + records(cold, 30, rng))
    exact = ExactIndexVectorStore(milvus)
    exact.start_prewarm(lambda: [warm])
    assert exact._prewarmer is not None
    exact._prewarmer.join(timeout=30)
    assert exact.loaded_cubes() == {warm}
    # The cold cube still answers, loading on first use.
    assert exact.count(cold) == 30
    assert exact.loaded_cubes() == {warm, cold}


def test_a_failing_prewarm_leaves_the_store_usable(milvus: MilvusVectorStore) -> None:
    exact = ExactIndexVectorStore(milvus)

    def broken() -> list[str]:
        raise RuntimeError("cannot list cubes")

    exact.start_prewarm(broken)
    assert exact._prewarmer is not None
    exact._prewarmer.join(timeout=30)
    cube = f"after-{uuid.uuid4().hex}"
    exact.upsert(records(cube, 3, np.random.default_rng(2)))
    assert exact.count(cube) == 3


def test_a_new_cube_is_copied_on_write_without_a_scan(milvus: MilvusVectorStore) -> None:
    durable = ScanCounter(milvus)
    exact = ExactIndexVectorStore(durable)  # type: ignore[arg-type]
    cube = f"fresh-{uuid.uuid4().hex}"
    recs = records(cube, 5, np.random.default_rng(4))
    exact.upsert(recs)
    everything = MemoryFilter(include_archived=True, memory_types=tuple(TYPES))
    assert {i for i, _ in exact.search(cube, recs[0].vector, everything, 10)} == {r.id for r in recs}
    assert durable.scans == 0
    # A cube that already held rows before this process wrote to it is loaded by a scan.
    old = f"old-{uuid.uuid4().hex}"
    milvus.upsert(records(old, 3, np.random.default_rng(5)))
    exact.upsert(records(old, 2, np.random.default_rng(6)))
    assert exact.count(old) == 5 and durable.scans == 1


class ScanCounter:
    def __init__(self, inner: MilvusVectorStore) -> None:
        self._inner = inner
        self.scans = 0

    def scan(self, cube_id):  # type: ignore[no-untyped-def]
        self.scans += 1
        return self._inner.scan(cube_id)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)


class CallCounter:
    """The durable store, counting the calls a test names."""

    def __init__(self, inner: MilvusVectorStore, *names: str) -> None:
        self._inner = inner
        self.calls: dict[str, list[tuple]] = {name: [] for name in names}

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        attr = getattr(self._inner, name)
        if name not in self.calls:
            return attr

        def counted(*args):  # type: ignore[no-untyped-def]
            self.calls[name].append(args)
            return attr(*args)

        return counted


EVERYTHING = MemoryFilter(include_archived=True, memory_types=tuple(TYPES))


def test_a_cube_with_no_rows_is_searched_without_a_scan(milvus: MilvusVectorStore) -> None:
    durable = CallCounter(milvus, "scan", "count")
    exact = ExactIndexVectorStore(durable)  # type: ignore[arg-type]
    cube = f"empty-{uuid.uuid4().hex}"
    probe = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    assert exact.search(cube, probe, EVERYTHING, 5) == []
    assert len(durable.calls["count"]) == 1 and durable.calls["scan"] == []
    # The empty copy is the cube's from then on: a write lands in it, no scan, no second count.
    recs = records(cube, 4, np.random.default_rng(8))
    exact.upsert(recs)
    assert {i for i, _ in exact.search(cube, recs[0].vector, EVERYTHING, 10)} == {r.id for r in recs}
    assert len(durable.calls["count"]) == 1 and durable.calls["scan"] == []
    # A cube that holds rows is still read by a scan on its first use.
    old = f"held-{uuid.uuid4().hex}"
    held = records(old, 3, np.random.default_rng(9))
    milvus.upsert(held)
    assert {i for i, _ in exact.search(old, held[1].vector, EVERYTHING, 10)} == {r.id for r in held}
    assert len(durable.calls["scan"]) == 1


def test_a_delete_never_reaches_another_cubes_rows(milvus: MilvusVectorStore) -> None:
    durable = CallCounter(milvus, "delete", "delete_ids")
    exact = ExactIndexVectorStore(durable)  # type: ignore[arg-type]
    mine, theirs, unloaded = (f"{n}-{uuid.uuid4().hex}" for n in ("mine", "theirs", "unloaded"))
    rng = np.random.default_rng(10)
    my_recs, their_recs = records(mine, 3, rng), records(theirs, 3, rng)
    exact.upsert(my_recs + their_recs)  # both cubes loaded (new cubes are copied on write)
    # One of mine and one of theirs, named as mine: only mine goes, by primary key.
    exact.delete(mine, [my_recs[0].id, their_recs[0].id])
    assert durable.calls["delete_ids"] == [([my_recs[0].id],)] and durable.calls["delete"] == []
    assert milvus.count(mine) == 2 and milvus.count(theirs) == 3
    assert exact.count(mine) == 2 and exact.count(theirs) == 3
    assert set(milvus.get_vectors(theirs, [r.id for r in their_recs])) == {r.id for r in their_recs}
    # Only ids of other cubes: nothing to send.
    exact.delete(mine, [their_recs[1].id])
    assert len(durable.calls["delete_ids"]) == 1 and durable.calls["delete"] == []
    # A cube with no copy loaded is loaded first (here: counted, none) and holds none of them.
    exact.delete(unloaded, [their_recs[2].id])
    assert len(durable.calls["delete_ids"]) == 1 and milvus.count(theirs) == 3
    # One that holds rows written before (by another process) is read, then deleted from by key.
    cold = f"cold-{uuid.uuid4().hex}"
    cold_recs = records(cold, 3, rng)
    milvus.upsert(cold_recs)
    exact.delete(cold, [cold_recs[0].id, their_recs[2].id])
    assert durable.calls["delete_ids"][-1] == ([cold_recs[0].id],)
    assert milvus.count(cold) == 2 and milvus.count(theirs) == 3
    assert durable.calls["delete"] == []  # never the filtered delete
    # A second store object (a restart) sees the same rows.
    assert ExactIndexVectorStore(milvus).count(mine) == 2


def test_writes_to_a_cube_not_searched_yet_read_it_once(milvus: MilvusVectorStore) -> None:
    # A cube that held rows before this process (a restart), written to without a search first
    # (dedupe off): read once, then every write lands in the copy without asking Milvus again.
    cold = f"cold-writes-{uuid.uuid4().hex}"
    rng = np.random.default_rng(11)
    milvus.upsert(records(cold, 4, rng))
    durable = CallCounter(milvus, "scan", "count")
    exact = ExactIndexVectorStore(durable)  # type: ignore[arg-type]
    for _ in range(3):
        exact.upsert(records(cold, 2, rng))
    assert len(durable.calls["count"]) == 1 and len(durable.calls["scan"]) == 1
    assert exact.count(cold) == milvus.count(cold) == 10
