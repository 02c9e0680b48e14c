"""The Neo4j store's Lucene query: user text becomes quoted words, never syntax."""

from __future__ import annotations

import re

import pytest

from services.textmem.stores.neo4j_graph import cube_key, fold, lucene_query

CUBE_CLAUSE = f"+cube_key:{cube_key('c')}^0 "
# What every query must look like: the cube clause, then a group of quoted word-only phrases.
SHAPE = re.compile(r'^\+cube_key:[0-9a-f]{64}\^0 \+\((search_text:"\w+")( search_text:"\w+")*\)$')


@pytest.mark.parametrize(
    "text",
    [
        '"hotel',
        "hotel*",
        "NOT hotel",
        "-hotel",
        "+hotel -inn",
        "memory:hotel",
        "hotel~2",
        "(hotel",
        "^hotel",
        "hotel\\",
        "cube_key:* OR *:*",
        "a:b AND c:d",
        "[a TO z]",
        "{x TO y}",
        "hotel^100",
        "/regex.*/",
        "hotel\x00inn",
    ],
)
def test_query_syntax_becomes_quoted_words(text: str) -> None:
    q = lucene_query("c", text)
    assert q.startswith(CUBE_CLAUSE) and SHAPE.match(q), q


@pytest.mark.parametrize("text", ["", "   ", "?!...", "--", "🤖", "* : ( ) [ ] { } ^ ~ \\ / \" '"])
def test_text_without_words_gives_no_query(text: str) -> None:
    assert lucene_query("c", text) == ""


def test_operators_are_lowercased_words_and_stopwords_only_go_when_others_remain() -> None:
    assert (
        lucene_query("c", "inn AND NOT hotel")
        == CUBE_CLAUSE + '+(search_text:"inn" search_text:"not" search_text:"hotel")'
    )
    assert lucene_query("c", "to be") == CUBE_CLAUSE + '+(search_text:"to" search_text:"be")'


def test_diacritics_fold_like_the_index() -> None:
    assert fold("Café NAÏVE") == "cafe naive"
    assert lucene_query("c", "Café") == CUBE_CLAUSE + '+(search_text:"cafe")'


def test_cube_key_is_one_token_for_any_cube_id() -> None:
    for cube in ['a" OR 1=1', "victim\x00", "*", "vïctim 🤖\nnew line"]:
        assert re.fullmatch(r"[0-9a-f]{64}", cube_key(cube))
    assert cube_key("victim") != cube_key("victim\x00")
