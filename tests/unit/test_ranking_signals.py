"""Retrieval recipes and their signals (services/textmem/ranking.py) and how TextMemory applies them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.textmem.memory import TextMemory, conversation_edges
from services.textmem.models import Memory, MemoryFilter, Source
from services.textmem.ranking import (
    DEFAULT_RECIPE,
    RECIPES,
    RetrievalRecipe,
    asks_when,
    boost,
    named_periods,
    named_speakers,
    says_when,
    speakers_of,
    spread_to_neighbours,
)
from services.textmem.settings import TextMemSettings


def _ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


# neighbours -------------------------------------------------------------------------------------
def test_spread_gives_each_neighbour_a_share_of_the_seed_score() -> None:
    links = {"a": ["b"], "b": ["a", "c"]}
    out = spread_to_neighbours([("a", 1.0), ("b", 0.5)], lambda i: links.get(i, []), 0.3, seeds=2)
    assert out == pytest.approx({"a": 1.0 + 0.15, "b": 0.5 + 0.3, "c": 0.15})


def test_spread_lets_a_neighbour_outrank_a_weaker_direct_hit() -> None:
    # The answer ("x") follows the matching question turn ("q"); "y" matched weakly on its own.
    fused = [("q", 1.0), ("y", 0.2)]
    out = spread_to_neighbours(fused, lambda i: {"q": ["x"]}.get(i, []), 0.3, seeds=2)
    assert out["x"] > out["y"]


def test_spread_only_from_seeds_and_off_at_zero_weight() -> None:
    links = {"a": ["n1"], "b": ["n2"]}
    out = spread_to_neighbours([("a", 1.0), ("b", 0.9)], lambda i: links[i], 0.5, seeds=1)
    assert "n1" in out and "n2" not in out
    assert spread_to_neighbours([("a", 1.0)], lambda i: links[i], 0.0, seeds=5) == {"a": 1.0}


def test_spread_ignores_self_links() -> None:
    assert spread_to_neighbours([("a", 1.0)], lambda i: ["a"], 0.5, seeds=1) == {"a": 1.0}


def test_conversation_edges_link_consecutive_turn_windows_of_one_session_only() -> None:
    def mem(i: str, idx: int | None, session: str = "s") -> Memory:
        sources = [Source(type="chat", message_index=idx)] if idx is not None else [Source(type="file")]
        return Memory(id=i, cube_id="c", memory=i, session_id=session, sources=sources)

    edges = conversation_edges("c", [mem("a", 0), mem("b", 1), mem("f", None), mem("d", 3), mem("e", 4, "t")])
    assert [(e.src_id, e.dst_id, e.type) for e in edges] == [("a", "b", "FOLLOWS")]


# speakers ---------------------------------------------------------------------------------------
def test_speakers_of_rendered_lines_skip_roles() -> None:
    text = "Caroline: [2023-05-08 13:56]: I went to a group\nuser: hi\nMel O'Brien: nice"
    assert speakers_of(text) == {"Caroline", "Mel O'Brien"}
    assert speakers_of("assistant: hello") == set()


def test_named_speakers_matches_whole_names_only() -> None:
    assert named_speakers("What did Caroline research?", {"Caroline", "Melanie"}) == {"Caroline"}
    assert named_speakers("What did Carolines research?", {"Caroline"}) == set()
    assert named_speakers("what did caroline do", {"Caroline"}) == set()


# time -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("When did Caroline go to the support group?", True),
        ("How long has Melanie been painting?", True),
        ("What year did John move?", True),
        ("What did Caroline research?", False),
        ("Whence comes the wind", False),
    ],
)
def test_asks_when(query: str, expected: bool) -> None:
    assert asks_when(query) is expected


def test_says_when() -> None:
    assert says_when("I went to a support group yesterday")
    assert says_when("We moved in 2019")
    assert not says_when("I love painting sunsets")


def test_named_periods_month_and_year() -> None:
    assert named_periods("What happened in May 2023?") == [(_ts(2023, 5, 1), _ts(2023, 6, 1))]
    assert named_periods("Where was she in December, 2022") == [(_ts(2022, 12, 1), _ts(2023, 1, 1))]
    assert named_periods("Anything from 2021?") == [(_ts(2021, 1, 1), _ts(2022, 1, 1))]
    assert named_periods("What did she paint?") == []


def test_boost_scales_only_the_chosen_present_items() -> None:
    assert boost({"a": 1.0, "b": 2.0}, ["a", "zz"], 0.5) == {"a": 1.5, "b": 2.0}


# recipes ----------------------------------------------------------------------------------------
def test_recipes_are_ablation_steps_and_the_setting_knows_them_all() -> None:
    import typing

    field = TextMemSettings.model_fields["retrieval_recipe"]
    assert set(typing.get_args(field.annotation)) == set(RECIPES)
    assert field.default == DEFAULT_RECIPE
    assert not RECIPES["lexical"].dense and not RECIPES["dense"].lexical
    assert RECIPES["+temporal"].temporal_boost > 0 and RECIPES["+temporal"].neighbour_weight > 0


class _Graph:
    """Just what rank_candidates reads."""

    def __init__(self, memories: list[Memory], links: dict[str, list[str]]) -> None:
        self.memories = {m.id: m for m in memories}
        self.links = links

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        assert edge_type == "FOLLOWS"
        return self.links.get(memory_id, [])

    def neighbours_many(self, cube_id: str, memory_ids: list[str], edge_type: str) -> dict[str, list[str]]:
        return {mid: self.neighbours(cube_id, mid, edge_type) for mid in memory_ids}

    def get_memories(
        self, cube_id: str, ids: list[str], with_sources: bool = True, *, shared: bool = False
    ) -> dict[str, Memory]:
        found = {i: self.memories[i] for i in ids if i in self.memories}
        # As the stores do: without sources when not asked for them.
        return found if with_sources else {i: dataclasses.replace(m, sources=[]) for i, m in found.items()}


def _turn(i: str, speaker: str, text: str, when: float | None = None, **kw: object) -> Memory:
    return Memory(
        id=i,
        cube_id="c",
        memory=f"{speaker}: [2023-05-08 13:56]: {text}",
        sources=[Source(type="chat", content=text, chat_time=when)],
        event_time=when,
        **kw,  # type: ignore[arg-type]
    )


def _ranker(memories: list[Memory], links: dict[str, list[str]], recipe: RetrievalRecipe) -> TextMemory:
    tm = TextMemory.__new__(TextMemory)  # no stores needed: rank_candidates uses the graph only
    tm.graph = _Graph(memories, links)  # type: ignore[assignment]
    tm.recipe = recipe
    return tm


def _order(tm: TextMemory, query: str, dense: list[str], lexical: list[str], flt: MemoryFilter | None = None):
    ranking, _ = tm.rank_candidates(
        "c", query, flt or MemoryFilter(), 100, [(i, 1.0) for i in dense], [(i, 1.0) for i in lexical]
    )
    return [i for i, _ in ranking]


def test_speaker_recipe_prefers_the_named_speakers_memory() -> None:
    mems = [_turn("m1", "Melanie", "adoption agencies are great"), _turn("c1", "Caroline", "adoption agencies")]
    q = "What did Caroline research about adoption agencies?"
    assert _order(_ranker(mems, {}, RECIPES["+neighbours"]), q, ["m1", "c1"], ["m1", "c1"])[0] == "m1"
    assert _order(_ranker(mems, {}, RECIPES["+speaker"]), q, ["m1", "c1"], ["m1", "c1"])[0] == "c1"


def test_temporal_recipe_prefers_memories_that_say_when_for_when_questions_only() -> None:
    mems = [_turn("a", "Caroline", "the support group was powerful"), _turn("b", "Caroline", "support group yesterday")]
    when = "When did Caroline go to the support group?"
    what = "What did Caroline think of the support group?"
    # The time stamp every rendered line carries does not count as saying when.
    assert _order(_ranker(mems, {}, RECIPES["+speaker"]), when, ["a", "b"], ["a", "b"])[0] == "a"
    assert _order(_ranker(mems, {}, RECIPES["+temporal"]), when, ["a", "b"], ["a", "b"])[0] == "b"
    assert _order(_ranker(mems, {}, RECIPES["+temporal"]), what, ["a", "b"], ["a", "b"])[0] == "a"


def test_temporal_recipe_prefers_memories_from_a_named_month() -> None:
    mems = [_turn("old", "Jon", "opened the studio", _ts(2023, 1, 5)), _turn("may", "Jon", "dance", _ts(2023, 5, 9))]
    order = _order(_ranker(mems, {}, RECIPES["+temporal"]), "What did Jon do in May 2023?", ["old", "may"], [])
    assert order[0] == "may"


def test_neighbours_join_the_ranking_but_only_if_they_pass_the_filter() -> None:
    mems = [
        _turn("q", "Caroline", "what did you do?"),
        _turn("ans", "Melanie", "I ran a charity race"),
        _turn("arch", "Melanie", "old", status="archived"),
        _turn("x", "Melanie", "unrelated"),
    ]
    tm = _ranker(mems, {"q": ["ans", "arch"]}, RECIPES["+neighbours"])
    ranking, _ = tm.rank_candidates("c", "charity race", MemoryFilter(), 100, [("q", 1.0), ("x", 1.0)], [("q", 1.0)])
    scores = dict(ranking)
    assert scores["ans"] == pytest.approx(RECIPES["+neighbours"].neighbour_weight * scores["q"])
    assert "arch" not in scores
    assert "ans" not in _order(_ranker(mems, {"q": ["ans"]}, RECIPES["fused-k20"]), "charity race", ["q", "x"], ["q"])
