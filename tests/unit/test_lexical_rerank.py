"""Second-stage lexical scoring (services/textmem/rerank.py): stemming, query terms, pool BM25."""

from __future__ import annotations

import pytest

from services.textmem.rerank import light_stem, pool_bm25, query_terms, term_counts, terms


@pytest.mark.parametrize(
    "group",
    [
        ["paint", "paints", "painted", "painting"],
        ["adopt", "adopted", "adopting", "adoption"],
        ["like", "likes", "liked", "liking"],
        ["run", "runs", "running"],
        ["stop", "stopped", "stopping"],
        ["study", "studies", "studied"],
        ["class", "classes"],
        ["box", "boxes"],
        ["make", "makes", "making"],
        ["share", "shared", "sharing"],
        ["hope", "hoped", "hoping"],
    ],
)
def test_light_stem_folds_a_words_forms_together(group: list[str]) -> None:
    assert len({light_stem(w) for w in group}) == 1, {w: light_stem(w) for w in group}


@pytest.mark.parametrize(
    ("a", "b"), [("paint", "pain"), ("sing", "song"), ("bus", "busy"), ("car", "care"), ("hop", "hoping")]
)
def test_light_stem_keeps_different_words_apart(a: str, b: str) -> None:
    assert light_stem(a) != light_stem(b)


def test_light_stem_leaves_short_and_non_alphabetic_words_alone() -> None:
    assert light_stem("was") == "was"
    assert light_stem("is") == "is"
    assert light_stem("2023") == "2023"
    assert light_stem("Things") == light_stem("thing")  # case-folded


def test_terms_and_counts_agree() -> None:
    n, counts = term_counts("Painting, painted; PAINTS and dogs!")
    assert terms("Painting, painted; PAINTS and dogs!") == ["paint", "paint", "paint", "and", "dog"]
    assert n == 5 and counts == {"paint": 3, "and": 1, "dog": 1}


def test_query_terms_drop_question_words_and_names_but_not_everything() -> None:
    assert query_terms("What kind of pottery did Melanie make with her kids?", {"Melanie", "Caroline"}) == [
        light_stem("pottery"),
        light_stem("make"),
        light_stem("kids"),
    ]
    # A query of nothing but a name still searches for it.
    assert query_terms("Who is Caroline?", {"Caroline"}) == [light_stem("caroline")]
    assert query_terms("paints and painting") == ["paint"]  # once each


def test_pool_bm25_matches_other_forms_of_the_query_words() -> None:
    texts = {
        "a": "I went to the support group yesterday",
        "b": "We adopted two kids last year",
        "c": "Nice weather today",
    }
    ranking = pool_bm25(query_terms("Tell me about the adoption"), texts)
    assert [i for i, _ in ranking] == ["b"]


def test_pool_bm25_weighs_rare_terms_above_common_ones() -> None:
    texts = {
        "common": "dog dog walk",
        "rare": "violin practice",
        "x1": "dog park",
        "x2": "dog food",
        "x3": "dog toys",
    }
    scores = dict(pool_bm25(["dog", light_stem("violin")], texts))
    assert scores["rare"] > scores["common"] > scores["x1"]


def test_pool_bm25_prefers_the_shorter_of_two_equal_matches() -> None:
    texts = {"short": "charity race", "long": "charity " + "filler words that say nothing at all " * 3}
    ranking = pool_bm25([light_stem("charity")], texts)
    assert [i for i, _ in ranking] == ["short", "long"]


def test_pool_bm25_empty_inputs() -> None:
    assert pool_bm25([], {"a": "text"}) == []
    assert pool_bm25(["text"], {}) == []
