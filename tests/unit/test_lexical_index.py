"""The in-process BM25 copies of the SQLite store (stores/lexical_index.py): FTS5's scores,
and every committed write seen by the next search, also when another store object (another
process) wrote it or pruned the change log."""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import pytest

from services.textmem.dedupe import Merge
from services.textmem.models import Edge, Memory, MemoryFilter, Source
from services.textmem.stores import lexical_index
from services.textmem.stores.sqlite_graph import SqliteGraphStore

WORDS = (
    "hotel guangzhou booking river view breakfast airport taxi museum painting garden tea "
    "concert ticket guitar lesson friday weekend dinner sister birthday camping lake"
).split()


def mem(cube: str, text: str, **fields: object) -> Memory:
    fields.setdefault("id", uuid.uuid4().hex)
    return Memory(cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "graph.sqlite3"


def search(store: SqliteGraphStore, cube: str, query: str, flt: MemoryFilter | None = None, limit: int = 50):
    return store.search_lexical(cube, query, flt or MemoryFilter(), limit)


def test_scores_equal_fts5_bm25_when_the_file_holds_one_cube(path: Path) -> None:
    indexed = SqliteGraphStore(path)
    fts5 = SqliteGraphStore(path, lexical_index=False)
    indexed.insert_memories("c", [mem("c", t) for t in corpus(300)])
    for query in ["hotel river view", "guitar lesson on friday", "Camping by the LAKE", "tea"]:
        ours = search(indexed, "c", query, limit=40)
        theirs = search(fts5, "c", query, limit=40)
        assert len(ours) == len(theirs) > 0
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert a == pytest.approx(b, rel=1e-4)
        # Same scores; ids agree wherever scores are not tied.
        assert {i for i, _ in ours[:5]} & {i for i, _ in theirs[:5]}
    indexed.close()
    fts5.close()


def test_statistics_are_the_cubes_own(path: Path) -> None:
    store = SqliteGraphStore(path)
    # "tea" is rare in cube a but everywhere in cube b: a's ranking must not feel b's counts.
    store.insert_memories("a", [mem("a", "tea garden"), *(mem("a", f"river walk {i}") for i in range(20))])
    store.insert_memories("b", [mem("b", f"tea tea cup {i}") for i in range(200)])
    alone = SqliteGraphStore(path.with_name("alone.sqlite3"))
    alone.insert_memories("a", [mem("a", "tea garden"), *(mem("a", f"river walk {i}") for i in range(20))])
    assert search(store, "a", "tea")[0][1] == pytest.approx(search(alone, "a", "tea")[0][1], rel=1e-6)
    store.close()
    alone.close()


def test_inserts_updates_archives_and_deletes_are_seen_by_the_next_search(path: Path) -> None:
    store = SqliteGraphStore(path)
    first = mem("c", "the hotel in guangzhou has a river view")
    store.insert_memories("c", [first, mem("c", "airport taxi at dawn")])
    assert [i for i, _ in search(store, "c", "river")] == [first.id]  # the copy is loaded now

    second = mem("c", "a river cruise at night")
    store.insert_memories("c", [second])
    assert {i for i, _ in search(store, "c", "river")} == {first.id, second.id}

    store.update_memory(Memory(**{**first.__dict__, "memory": "the hotel has a garden view"}))
    assert [i for i, _ in search(store, "c", "river")] == [second.id]
    assert [i for i, _ in search(store, "c", "garden")] == [first.id]

    store.update_memory(Memory(**{**second.__dict__, "status": "archived"}))
    assert search(store, "c", "river") == []
    assert [i for i, _ in search(store, "c", "river", MemoryFilter(include_archived=True))] == [second.id]

    store.delete_memories("c", [first.id])
    assert search(store, "c", "garden") == []
    store.delete_cube_memories("c")
    assert search(store, "c", "river", MemoryFilter(include_archived=True)) == []
    store.close()


def test_writes_by_another_store_on_the_same_file_are_seen(path: Path) -> None:
    reader = SqliteGraphStore(path)
    writer = SqliteGraphStore(path)
    writer.insert_memories("c", [mem("c", "concert ticket for friday")])
    assert len(search(reader, "c", "concert")) == 1
    late = mem("c", "concert in the park")
    writer.insert_memories("c", [late])
    assert late.id in {i for i, _ in search(reader, "c", "concert")}
    writer.delete_memories("c", [late.id])
    assert late.id not in {i for i, _ in search(reader, "c", "concert")}
    reader.close()
    writer.close()


def test_a_copy_behind_a_pruned_log_reloads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical_index, "PRUNE_AFTER", 8)
    behind = SqliteGraphStore(path)
    pruner = SqliteGraphStore(path)
    behind.insert_memories("c", [mem("c", "lake camping")])
    assert len(search(behind, "c", "lake")) == 1
    assert len(search(pruner, "c", "lake")) == 1
    gone = [mem("c", f"lake view {i}") for i in range(20)]
    pruner.insert_memories("c", gone)
    pruner.delete_memories("c", [m.id for m in gone[:10]])
    search(pruner, "c", "lake")  # applies 30 changes and prunes them from the log
    conn = pruner._conn()
    assert conn.execute("SELECT COUNT(*) FROM memory_changes WHERE cube_id = 'c'").fetchone()[0] == 0
    # The other copy never saw those changes and cannot read them any more: it must reload.
    found = {i for i, _ in search(behind, "c", "lake")}
    assert found == {m.id for m in gone[10:]} | {i for i, _ in search(pruner, "c", "lake camping")[:1]}
    assert len(found) == 11
    behind.close()
    pruner.close()


def test_filters_match_the_fts5_path(path: Path) -> None:
    indexed = SqliteGraphStore(path)
    fts5 = SqliteGraphStore(path, lexical_index=False)
    rows = []
    for i, text in enumerate(corpus(120, seed=3)):
        rows.append(
            mem(
                "c",
                text,
                user_id=f"u{i % 3}",
                session_id=f"s{i % 4}",
                memory_type=["LongTermMemory", "UserMemory", "WorkingMemory"][i % 3],
                created_at=1_700_000_000.0 + i * 60,
            )
        )
    indexed.insert_memories("c", rows)
    filters = [
        MemoryFilter(user_id="u1"),
        MemoryFilter(session_id="s2", memory_types=("UserMemory",)),
        MemoryFilter(created_after=1_700_000_000.0 + 30 * 60, created_before=1_700_000_000.0 + 90 * 60),
        MemoryFilter(user_id="nobody"),
    ]
    for flt in filters:
        ours = {i for i, _ in search(indexed, "c", "hotel tea lake garden", flt, limit=500)}
        theirs = {i for i, _ in search(fts5, "c", "hotel tea lake garden", flt, limit=500)}
        assert ours == theirs
    indexed.close()
    fts5.close()


def test_diacritics_and_case_fold_like_unicode61(path: Path) -> None:
    store = SqliteGraphStore(path)
    cafe = mem("c", "Dinner at the Café Élysée")
    store.insert_memories("c", [cafe, mem("c", "breakfast at home")])
    assert [i for i, _ in search(store, "c", "cafe elysee")] == [cafe.id]
    assert [i for i, _ in search(store, "c", "CAFÉ")] == [cafe.id]
    store.close()


def test_counts_from_a_loaded_copy_equal_sqls(path: Path) -> None:
    indexed = SqliteGraphStore(path)
    plain = SqliteGraphStore(path, lexical_index=False)
    rows = [
        mem("c", text, user_id=f"u{i % 2}", memory_type=["LongTermMemory", "UserMemory"][i % 2])
        for i, text in enumerate(corpus(60, seed=11))
    ]
    indexed.insert_memories("c", rows)
    search(indexed, "c", "tea")  # loads the copy: counts come from it from now on
    indexed.update_memory(Memory(**{**rows[0].__dict__, "status": "archived"}))
    indexed.delete_memories("c", [rows[1].id])
    for flt in [
        None,
        MemoryFilter(),
        MemoryFilter(include_archived=True),
        MemoryFilter(user_id="u1"),
        MemoryFilter(memory_types=("UserMemory",)),
        MemoryFilter(user_id="nobody"),
    ]:
        assert indexed.count("c", flt) == plain.count("c", flt)
    assert indexed.count("c") == 59 and indexed.count("c", MemoryFilter()) == 58
    indexed.close()
    plain.close()


RANKING_FIELDS = ("id", "cube_id", "memory", "user_id", "session_id", "memory_type", "status", "tags", "info")


def test_reads_without_sources_come_from_the_copy_and_follow_every_change(path: Path) -> None:
    indexed = SqliteGraphStore(path)
    plain = SqliteGraphStore(path, lexical_index=False)
    a = mem("c", "lake camping trip", user_id="u1", session_id="s1", tags=["trip"], info={"k": 1}, event_time=5.0)
    b = mem("c", "tea garden visit", memory_type="UserMemory")
    indexed.insert_memories("c", [a, b])
    search(indexed, "c", "lake")  # the copy is loaded: lean reads come from it now

    def same() -> None:
        ours = indexed.get_memories("c", [a.id, b.id, "missing"], with_sources=False)
        theirs = plain.get_memories("c", [a.id, b.id, "missing"])
        assert set(ours) == set(theirs)
        for mid, m in ours.items():
            assert m.sources == []
            for f in RANKING_FIELDS:
                assert getattr(m, f) == getattr(theirs[mid], f), f
            assert m.created_at == pytest.approx(theirs[mid].created_at)
            assert m.event_time == theirs[mid].event_time

    same()
    indexed.update_memory(Memory(**{**a.__dict__, "memory": "lake fishing trip", "tags": ["trip", "fish"]}))
    same()
    indexed.update_memory(Memory(**{**b.__dict__, "status": "archived", "info": {"why": "old"}}))
    same()
    indexed.delete_memories("c", [a.id])
    same()
    assert a.id not in indexed.get_memories("c", [a.id], with_sources=False)
    indexed.close()
    plain.close()


def test_full_reads_for_search_are_kept_by_the_copy_and_follow_every_change(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexed = SqliteGraphStore(path)
    writer = SqliteGraphStore(path)  # another process's store on the same file
    plain = SqliteGraphStore(path, lexical_index=False)
    a = mem("c", "lake camping trip", sources=[Source(type="chat", role="user", content="we camp", chat_time=1.0)])
    b = mem("c", "tea garden visit", tags=["tea"], sources=[Source(type="chat", role="user", content="tea?")])
    indexed.insert_memories("c", [a, b])
    search(indexed, "c", "lake")  # the copy is loaded
    ids = [a.id, b.id, "missing"]

    def same() -> None:
        assert indexed.get_memories("c", ids, shared=True) == plain.get_memories("c", ids)

    same()
    # Read again: from the copy, without SQL.
    real = indexed._read_memories
    monkeypatch.setattr(indexed, "_read_memories", lambda *a, **k: pytest.fail("read from SQL again"))
    same()
    monkeypatch.setattr(indexed, "_read_memories", real)
    # A merge appends sources: the memory is read again.
    indexed.insert_memories(
        "c", [], merges=[Merge(a.id, sources=[Source(type="chat", role="user", content="and fish")], count=1)]
    )
    assert len(indexed.get_memories("c", [a.id], shared=True)[a.id].sources) == 2
    same()
    indexed.update_memory(Memory(**{**b.__dict__, "memory": "tea garden tour", "tags": ["tea", "tour"]}))
    same()
    writer.insert_memories("c", [], merges=[Merge(b.id, sources=[Source(type="chat", content="again")], count=1)])
    same()
    writer.delete_memories("c", [a.id])
    same()
    assert a.id not in indexed.get_memories("c", [a.id], shared=True)
    for store in (indexed, writer, plain):
        store.close()


def test_links_for_search_are_kept_by_the_copy_and_follow_links_made_alone(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexed = SqliteGraphStore(path)
    writer = SqliteGraphStore(path)
    plain = SqliteGraphStore(path, lexical_index=False)
    x, y, z = (mem("c", f"window {w}") for w in ("one", "two", "three"))
    indexed.insert_memories("c", [x, y, z], edges=[Edge("c", x.id, y.id, "FOLLOWS")])
    search(indexed, "c", "window")  # the copy is loaded
    ids = [x.id, y.id, z.id]

    def links() -> dict[str, list[str]]:
        ours = indexed.neighbours_many("c", ids, "FOLLOWS")
        assert ours == plain.neighbours_many("c", ids, "FOLLOWS")
        return ours

    assert links()[y.id] == [x.id]
    real = indexed._read_neighbours
    monkeypatch.setattr(indexed, "_read_neighbours", lambda *a, **k: pytest.fail("read from SQL again"))
    links()
    monkeypatch.setattr(indexed, "_read_neighbours", real)
    # A link between memories that already exist changes no memory row; it is seen all the same.
    writer.insert_memories("c", [], edges=[Edge("c", y.id, z.id, "FOLLOWS")])
    assert links()[y.id] == sorted([x.id, z.id])
    writer.delete_memories("c", [x.id])
    assert links()[y.id] == [z.id]
    for store in (indexed, writer, plain):
        store.close()


def test_a_copy_nothing_was_committed_since_is_not_refreshed(path: Path) -> None:
    store = SqliteGraphStore(path)
    store.insert_memories("c", [mem("c", "concert ticket for friday")])
    search(store, "c", "concert")  # the copy is loaded
    statements: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(statements.append)
    try:
        assert len(search(store, "c", "concert")) == 1
        # One look at the database's commit counter; none of the refresh's reads of the log.
        assert statements == ["PRAGMA data_version"]
        statements.clear()
        store.insert_memories("c", [mem("c", "concert in the park")])
        statements.clear()
        assert len(search(store, "c", "concert")) == 2
        assert any("memory_changes" in s for s in statements)
    finally:
        conn.set_trace_callback(None)
    store.close()


def test_writes_through_another_thread_of_the_same_store_are_seen(path: Path) -> None:
    store = SqliteGraphStore(path)
    store.insert_memories("c", [mem("c", "concert ticket for friday")])
    assert len(search(store, "c", "concert")) == 1
    late = mem("c", "concert in the park")
    # Another thread commits through its own connection of the same store object.
    writer = threading.Thread(target=store.insert_memories, args=("c", [late]))
    writer.start()
    writer.join()
    assert late.id in {i for i, _ in search(store, "c", "concert")}
    deleter = threading.Thread(target=store.delete_memories, args=("c", [late.id]))
    deleter.start()
    deleter.join()
    assert late.id not in {i for i, _ in search(store, "c", "concert")}
    store.close()


def test_full_reads_past_the_bound_drop_the_least_recently_read(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical_index, "FULL_CACHE_MEMORIES", 2)
    store = SqliteGraphStore(path)
    a, b, c = (mem("c", f"lake note {w}", sources=[Source(type="chat", content=w)]) for w in ("one", "two", "three"))
    store.insert_memories("c", [a, b, c])
    search(store, "c", "lake")  # the copy is loaded
    read: list[str] = []
    real = store._read_memories
    monkeypatch.setattr(
        store, "_read_memories", lambda cube, ids, *x, **k: read.extend(ids) or real(cube, ids, *x, **k)
    )

    def get(m: Memory) -> None:
        assert store.get_memories("c", [m.id], shared=True)[m.id].sources[0].content == m.sources[0].content

    get(a)
    get(b)
    get(a)  # a is now the most recently read
    get(c)  # past the bound: b goes, not a
    assert read == [a.id, b.id, c.id]
    get(a)
    assert read == [a.id, b.id, c.id]
    get(b)
    assert read == [a.id, b.id, c.id, b.id]
    store.close()
