"""Dedupe's rules: normalisation, wording, sources, the threshold, and the add planner."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from services.textmem.dedupe import (
    DEFAULT_THRESHOLD,
    MERGES_KEY,
    Merge,
    content_words,
    is_near_duplicate,
    merged_fields,
    new_sources,
    normalise,
    plan_add,
    same_wording,
    text_hash,
)
from services.textmem.models import Edge, Memory, MemoryFilter, Source
from tests.dedupe_pairs import ADDED_FACTS, DISTINCT, PARAPHRASES, RESTATEMENTS, WINDOW_DISTINCT


# normalisation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The user likes pizza.", "the user likes pizza"),
        ("  The   user\tlikes\npizza!!! ", "the user likes pizza"),
        ("“Hello, world”", "hello, world"),
        ("ＦＵＬＬＷＩＤＴＨ text", "fullwidth text"),  # NFKC
        ("Straße", "strasse"),  # casefold
        ("ﬁne", "fine"),  # NFKC ligature
        ("...", ""),
    ],
)
def test_normalise(a: str, b: str) -> None:
    assert normalise(a) == b


def test_text_hash_ignores_what_normalise_ignores_and_nothing_else() -> None:
    assert text_hash("The user likes pizza.") == text_hash("  THE USER LIKES PIZZA ")
    assert text_hash("The user likes pizza.") != text_hash("The user likes pizza a lot.")
    assert text_hash("a, b") != text_hash("a b")  # inner punctuation counts
    assert len(text_hash("x")) == 32


# wording ------------------------------------------------------------------------------------------
def test_content_words_fold_trivia() -> None:
    assert content_words("Oh, the user doesn't like TWO colours!") == ("user", "doe", "not", "lik", "2", "color")


@pytest.mark.parametrize(("a", "b"), RESTATEMENTS)
def test_restatements_have_the_same_wording(a: str, b: str) -> None:
    assert same_wording(a, b)


@pytest.mark.parametrize(("a", "b"), DISTINCT + ADDED_FACTS + WINDOW_DISTINCT)
def test_changed_facts_do_not(a: str, b: str) -> None:
    assert not same_wording(a, b)


# the threshold, with the real embedder -------------------------------------------------------------
def _cosines(embedder, pairs: list[tuple[str, str]]) -> np.ndarray:  # type: ignore[no-untyped-def]
    a = embedder.embed([p[0] for p in pairs])
    b = embedder.embed([p[1] for p in pairs])
    return (a * b).sum(axis=1)


def test_threshold_merges_every_restatement_and_no_changed_fact(embedder) -> None:  # type: ignore[no-untyped-def]
    for (a, b), s in zip(RESTATEMENTS, _cosines(embedder, RESTATEMENTS), strict=True):
        assert s >= DEFAULT_THRESHOLD, (a, b, s)
        assert is_near_duplicate(a, b, float(s), DEFAULT_THRESHOLD)
    negatives = DISTINCT + ADDED_FACTS + WINDOW_DISTINCT
    sims = _cosines(embedder, negatives)
    assert not [p for p, s in zip(negatives, sims, strict=True) if is_near_duplicate(*p, float(s), DEFAULT_THRESHOLD)]
    # Why the wording rule: cosine alone puts changed facts above the threshold ("prefers tea over
    # coffee" / "coffee over tea" is ~0.996), and paraphrases below it.
    assert sims.max() > 0.98
    assert _cosines(embedder, PARAPHRASES).min() < DEFAULT_THRESHOLD


# sources and merges -----------------------------------------------------------------------------------
def chat(content: str, message_id: str = "", chat_time: float | None = 1.0, role: str = "user") -> Source:
    return Source(type="chat", role=role, content=content, message_id=message_id, chat_time=chat_time)


def test_new_sources_drop_messages_already_held() -> None:
    held = [chat("hi", "m1"), chat("bye", "msg-0123456789abcdef")]
    incoming = [
        chat("hi", "m1"),  # same message
        chat("hi", "m9"),  # same words, another message the caller named
        chat("bye", "m2"),  # held under a generated id: the same message re-added
        chat("hi", "msg-fedcba9876543210"),  # generated id, words held
        chat("hi", "m1", chat_time=2.0),  # another time: another message
        chat("hi", "m1", role="assistant"),
        chat("new", "m3"),
        chat("new", "m3"),  # repeated within the incoming
    ]
    assert [(s.content, s.message_id, s.chat_time, s.role) for s in new_sources(held, incoming)] == [
        ("hi", "m9", 1.0, "user"),
        ("hi", "m1", 2.0, "user"),
        ("hi", "m1", 1.0, "assistant"),
        ("new", "m3", 1.0, "user"),
    ]


def test_merged_fields() -> None:
    target = Memory(
        id="t", cube_id="c", memory="x", tags=["a"], sources=[chat("hi", "m1")], info={"k": 1}, updated_at=5.0
    )
    f = merged_fields(target, Merge("t", [chat("hi", "m1"), chat("yo", "m2")], ["b", "a"], 9.0, 3.0, count=2))
    assert [s.content for s in f.appended] == ["yo"]
    assert f.tags == ["a", "b"]
    assert f.info == {"k": 1, MERGES_KEY: 2}
    assert (f.updated_at, f.event_time) == (9.0, 3.0)
    assert target.info == {"k": 1}  # untouched


# planning, with stand-in stores ------------------------------------------------------------------------
class FakeGraph:
    def __init__(self, memories: list[Memory]) -> None:
        self.memories = {m.id: m for m in memories}

    def find_by_text_hash(self, cube_id: str, memory_type: str, hashes: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for m in self.memories.values():
            h = text_hash(m.memory)
            if m.cube_id == cube_id and m.memory_type == memory_type and m.status == "activated" and h in hashes:
                out.setdefault(h, m.id)
        return out

    def get_memories(self, cube_id: str, ids: list[str]) -> dict[str, Memory]:
        return {i: self.memories[i] for i in ids if i in self.memories and self.memories[i].cube_id == cube_id}


class FakeVectors:
    """Returns every memory of the cube and filter with a fixed similarity."""

    dim = 4

    def __init__(self, graph: FakeGraph, similarity: float) -> None:
        self.graph, self.similarity = graph, similarity
        self.searches = 0

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        self.searches += 1
        return [
            (m.id, self.similarity)
            for m in self.graph.memories.values()
            if m.cube_id == cube_id and m.memory_type in flt.types() and m.status in flt.statuses()
        ][:limit]


def mem(text: str, cube: str = "c", **fields: object) -> Memory:
    return Memory(id=uuid.uuid4().hex, cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def same_vector(texts: list[str]) -> np.ndarray:
    return np.tile(np.array([1.0, 0, 0, 0], np.float32), (len(texts), 1))


def test_plan_merges_exact_and_near_repeats_and_embeds_only_the_rest() -> None:
    old = mem("The user likes pizza.", sources=[chat("pizza!", "m1")])
    graph = FakeGraph([old])
    vectors = FakeVectors(graph, 0.97)
    embedded: list[str] = []

    def embed(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        return same_vector(texts)

    exact = mem("the user likes pizza", sources=[chat("pizza!", "m1"), chat("more", "m2")], tags=["t"])
    near = mem("User likes pizza")  # not the same normalised text: "the" is missing
    fresh = mem("The user likes sushi.")
    fresh_again = mem("The user likes sushi!!")
    plan = plan_add("c", [exact, near, fresh, fresh_again], graph, vectors, embed, DEFAULT_THRESHOLD)  # type: ignore[arg-type]
    assert plan.final_ids == [old.id, old.id, fresh.id, fresh.id]
    assert plan.result_ids == [old.id, fresh.id]
    assert plan.merged_ids == [old.id]
    assert [m.id for m in plan.new] == [fresh.id]
    assert plan.new[0].info[MERGES_KEY] == 1  # fresh_again folded in
    assert plan.merges[0].count == 2 and plan.merges[0].tags == ["t"]
    assert embedded == ["User likes pizza", "The user likes sushi."]  # exact repeats are not embedded
    assert plan.new_vectors.shape == (1, 4)
    assert fresh.info == {}  # the caller's memories are not changed


def test_plan_never_merges_into_or_from_working_memory_and_other_types() -> None:
    copy = mem("Remember the milk", memory_type="WorkingMemory")
    user = mem("Remember the milk", memory_type="UserMemory")
    archived = mem("remember the milk", status="archived")
    graph = FakeGraph([copy, user, archived])
    vectors = FakeVectors(graph, 0.99)
    new = mem("Remember the milk.")
    plan = plan_add("c", [new], graph, vectors, same_vector, DEFAULT_THRESHOLD)  # type: ignore[arg-type]
    assert plan.final_ids == [new.id] and not plan.merges
    working = mem("Remember the milk", memory_type="WorkingMemory")
    plan = plan_add("c", [working], graph, vectors, same_vector, DEFAULT_THRESHOLD)  # type: ignore[arg-type]
    assert plan.final_ids == [working.id] and vectors.searches == 1


def test_plan_below_threshold_or_other_wording_stores() -> None:
    old = mem("The user likes pizza.")
    graph = FakeGraph([old])
    new = mem("User likes pizza")
    assert plan_add("c", [new], graph, FakeVectors(graph, 0.89), same_vector, 0.9).final_ids == [new.id]  # type: ignore[arg-type]
    other = mem("The user likes pizza with pineapple.")
    assert plan_add("c", [other], graph, FakeVectors(graph, 0.99), same_vector, 0.9).final_ids == [other.id]  # type: ignore[arg-type]


def test_plan_points_edges_at_merge_targets() -> None:
    old = mem("window two")
    graph = FakeGraph([old])
    a, b, c = mem("window one"), mem("window two"), mem("window three")
    edges = [Edge("c", a.id, b.id, "FOLLOWS"), Edge("c", b.id, c.id, "FOLLOWS")]
    plan = plan_add("c", [a, b, c], graph, FakeVectors(graph, 0.1), same_vector, 0.9)  # type: ignore[arg-type]
    assert [(e.src_id, e.dst_id) for e in plan.edges([a, b, c], edges)] == [(a.id, old.id), (old.id, c.id)]
    twice = mem("window one")
    plan = plan_add("c", [a, twice], FakeGraph([]), FakeVectors(FakeGraph([]), 0.1), same_vector, 0.9)  # type: ignore[arg-type]
    assert plan.edges([a, twice], [Edge("c", a.id, twice.id, "FOLLOWS")]) == []
