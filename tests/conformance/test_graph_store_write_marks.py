"""GraphStore conformance for write-ahead marks of vector writes (TextMemory.repair_vector_writes).
Every implementation in GRAPH_STORES passes these."""

from __future__ import annotations

import time

import pytest

from services.textmem.stores.graph import GraphStore

HOSTILE = ['a" or 1==1 or "', "} RETURN n //", "*", "$id", "x\x00y", "🤖\n"]


def test_marks_are_listed_until_cleared(graph_store: GraphStore) -> None:
    graph_store.mark_vector_writes("A", ["m1", "m2"])
    graph_store.mark_vector_writes("B", ["m1"])
    later = time.time() + 1
    assert sorted(graph_store.pending_vector_writes(later, 100)) == [("A", "m1"), ("A", "m2"), ("B", "m1")]
    graph_store.clear_vector_writes("A", ["m1", "unknown"])
    assert sorted(graph_store.pending_vector_writes(later, 100)) == [("A", "m2"), ("B", "m1")]
    graph_store.clear_vector_writes("A", ["m2"])
    graph_store.clear_vector_writes("B", ["m1"])
    assert graph_store.pending_vector_writes(later, 100) == []


def test_only_marks_older_than_the_bound_are_listed_oldest_first(graph_store: GraphStore) -> None:
    graph_store.mark_vector_writes("A", ["old"])
    time.sleep(0.05)
    between = time.time()
    time.sleep(0.05)
    graph_store.mark_vector_writes("A", ["new"])
    assert graph_store.pending_vector_writes(between, 100) == [("A", "old")]
    assert graph_store.pending_vector_writes(time.time() + 1, 100) == [("A", "old"), ("A", "new")]
    assert graph_store.pending_vector_writes(time.time() + 1, 1) == [("A", "old")]


def test_marking_twice_keeps_one_mark(graph_store: GraphStore) -> None:
    graph_store.mark_vector_writes("A", ["m", "m"])
    graph_store.mark_vector_writes("A", ["m"])
    assert graph_store.pending_vector_writes(time.time() + 1, 100) == [("A", "m")]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_ids_are_kept_literally(graph_store: GraphStore, hostile: str) -> None:
    graph_store.mark_vector_writes(hostile, [hostile, "plain"])
    graph_store.mark_vector_writes("victim", ["secret"])
    graph_store.clear_vector_writes(hostile, [hostile])
    assert sorted(graph_store.pending_vector_writes(time.time() + 1, 100)) == sorted(
        [(hostile, "plain"), ("victim", "secret")]
    )
