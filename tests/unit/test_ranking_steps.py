"""The retrieval steps after +temporal (services/textmem/ranking.py): lexical rescoring, two-hop
neighbours, the session prior, and how TextMemory.rank_candidates applies them."""

from __future__ import annotations

import dataclasses

import pytest

from services.textmem.memory import TextMemory
from services.textmem.models import Memory, MemoryFilter, Source
from services.textmem.ranking import (
    DEFAULT_RECIPE,
    RECIPES,
    RetrievalRecipe,
    session_spread,
    spread_to_neighbours,
)


# two-hop neighbours -----------------------------------------------------------------------------
def test_two_hops_reach_neighbours_of_neighbours_at_a_decayed_share() -> None:
    links = {"a": ["b"], "b": ["a", "c"], "c": ["b", "d"]}
    out = spread_to_neighbours([("a", 1.0)], lambda i: links.get(i, []), 0.4, seeds=1, hops=2, decay=0.5)
    assert out == pytest.approx({"a": 1.0, "b": 0.4, "c": 0.2})
    one = spread_to_neighbours([("a", 1.0)], lambda i: links.get(i, []), 0.4, seeds=1)
    assert "c" not in one


def test_two_hops_reach_each_item_once_per_seed_at_its_shortest_distance() -> None:
    # a-b, a-c, b-c: c is one hop from a, so it gets the one-hop share only.
    links = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    out = spread_to_neighbours([("a", 1.0)], lambda i: links[i], 0.4, seeds=1, hops=2, decay=0.5)
    assert out == pytest.approx({"a": 1.0, "b": 0.4, "c": 0.4})


# session ----------------------------------------------------------------------------------------
def test_session_spread_lifts_the_session_holding_most_of_the_best_items() -> None:
    scores = {"s1a": 1.0, "s1b": 0.9, "s2a": 0.95, "s1c": 0.1, "s2b": 0.1, "none": 0.5}
    session = {"s1a": "s1", "s1b": "s1", "s1c": "s1", "s2a": "s2", "s2b": "s2", "none": ""}
    out = session_spread(dict(scores), session.__getitem__, 0.5, seeds=3)
    assert out["s1c"] == pytest.approx(0.1 * 1.5)  # s1 has the most mass: the full factor
    assert out["s2b"] == pytest.approx(0.1 * (1 + 0.5 * 0.95 / 1.9))
    assert out["none"] == pytest.approx(0.5)  # no session, no boost
    assert out["s1b"] > out["s2a"]  # was below it before


def test_session_spread_off_and_seedless_sessions_unchanged() -> None:
    scores = {"a": 1.0, "b": 0.5}
    assert session_spread(dict(scores), lambda i: "s", 0.0, seeds=5) == scores
    out = session_spread(dict(scores), {"a": "s1", "b": "s2"}.__getitem__, 1.0, seeds=1)
    assert out == pytest.approx({"a": 2.0, "b": 0.5})


# recipes ----------------------------------------------------------------------------------------
def test_new_steps_build_on_temporal_and_default_is_the_last() -> None:
    # The ablation ends with the default; "windows" is the default's variant for window memories.
    assert list(RECIPES)[-2:] == [DEFAULT_RECIPE, "windows"] and DEFAULT_RECIPE == "+session"
    assert RECIPES[DEFAULT_RECIPE].for_windows == "windows"
    windows = RECIPES["windows"]
    assert windows.lexical_rescore and windows.neighbour_weight == 0 and windows.session_boost == 0
    base = RECIPES["+temporal"]
    assert not base.lexical_rescore and base.neighbour_hops == 1 and base.session_boost == 0
    assert RECIPES["+lexical-rescore"].lexical_rescore
    assert RECIPES["+two-hop"].neighbour_hops == 2
    assert RECIPES["+session"].session_boost > 0


class _Graph:
    def __init__(self, memories: list[Memory], links: dict[str, list[str]]) -> None:
        self.memories = {m.id: m for m in memories}
        self.links = links
        self.hydrations: list[list[str]] = []

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        return self.links.get(memory_id, [])

    def neighbours_many(self, cube_id: str, memory_ids: list[str], edge_type: str) -> dict[str, list[str]]:
        return {mid: self.neighbours(cube_id, mid, edge_type) for mid in memory_ids}

    def get_memories(
        self, cube_id: str, ids: list[str], with_sources: bool = True, *, shared: bool = False
    ) -> dict[str, Memory]:
        self.hydrations.append(list(ids))
        found = {i: self.memories[i] for i in ids if i in self.memories}
        # As the stores do: without sources when not asked for them.
        return found if with_sources else {i: dataclasses.replace(m, sources=[]) for i, m in found.items()}


def _turn(i: str, speaker: str, text: str, session: str = "s1") -> Memory:
    return Memory(
        id=i,
        cube_id="c",
        session_id=session,
        memory=f"{speaker}: [2023-05-08 13:56]: {text}",
        sources=[Source(type="chat", content=text)],
    )


def _rank(
    memories: list[Memory], recipe: RetrievalRecipe, query: str, dense: list[str], lexical: list[str], links=None
):
    tm = TextMemory.__new__(TextMemory)
    tm.graph = _Graph(memories, links or {})  # type: ignore[assignment]
    tm.recipe = recipe
    ranking, hydrated = tm.rank_candidates(
        "c", query, MemoryFilter(), 100, [(i, 1.0) for i in dense], [(i, 1.0) for i in lexical]
    )
    return [i for i, _ in ranking], hydrated, tm.graph


def test_lexical_rescore_finds_other_word_forms_the_store_ranked_low() -> None:
    mems = [
        _turn("noise", "Caroline", "Caroline here, what did you think?"),
        _turn("gold", "Caroline", "We adopted two kids last year"),
        _turn("other", "Melanie", "Lovely weather for a walk"),
    ]
    q = "What did Caroline say about adoption?"
    # The store's full-text ranking matched the name and the question words only.
    before, _, _ = _rank(mems, RECIPES["+temporal"], q, ["other", "gold", "noise"], ["noise"])
    after, _, graph = _rank(mems, RECIPES["+lexical-rescore"], q, ["other", "gold", "noise"], ["noise"])
    assert before.index("noise") < before.index("gold")
    assert after[0] == "gold"
    assert "noise" not in after[:1]
    # The rescoring hydrates the candidates once; nothing is fetched twice.
    fetched = [i for ids in graph.hydrations for i in ids]
    assert len(fetched) == len(set(fetched))


def test_lexical_rescore_is_skipped_without_a_lexical_signal() -> None:
    mems = [_turn("a", "Jon", "dance studio"), _turn("b", "Jon", "we adopted")]
    recipe = RetrievalRecipe("dense-rescore", lexical=False, lexical_rescore=True)
    order, _, _ = _rank(mems, recipe, "adoption", ["a", "b"], [])
    assert order == ["a", "b"]


def test_default_recipe_reaches_two_turns_past_a_hit() -> None:
    mems = [
        _turn("q", "Caroline", "What did you do with the kids at the lake?", "s1"),
        _turn("mid", "Melanie", "Oh, it was great!", "s1"),
        _turn("ans", "Melanie", "We went canoeing and roasted marshmallows together", "s1"),
        _turn("far", "Melanie", "We went canoeing once, long ago", "s2"),
    ]
    links = {"q": ["mid"], "mid": ["q", "ans"], "ans": ["mid"]}
    order, _, _ = _rank(mems, RECIPES[DEFAULT_RECIPE], "kids lake", ["q", "far"], ["q"], links)
    assert order[0] == "q"
    assert "ans" in order  # two hops away, not a candidate of either search
    assert "ans" not in _rank(mems, RECIPES["+temporal"], "kids lake", ["q", "far"], ["q"], links)[0]


def test_session_step_breaks_a_tie_towards_the_session_of_the_best_hit() -> None:
    mems = [
        _turn("hit", "Jon", "the dance studio opening night", "s1"),
        _turn("a_other", "Jon", "a quiet evening at home", "s2"),
        _turn("b_same", "Jon", "a quiet morning at home", "s1"),
    ]
    # a_other and b_same get the same fused score (second in one list each); ids break the tie.
    dense, lexical = ["hit", "b_same"], ["hit", "a_other"]
    steps = [r for r in RECIPES.values() if r.name in ("+boosts", "+session")]
    no_rescore = [RetrievalRecipe(r.name, rrf_k=r.rrf_k, session_boost=r.session_boost) for r in steps]
    before, _, _ = _rank(mems, no_rescore[0], "studio", dense, lexical)
    after, _, _ = _rank(mems, no_rescore[1], "studio", dense, lexical)
    assert before == ["hit", "a_other", "b_same"]
    assert after == ["hit", "b_same", "a_other"]
