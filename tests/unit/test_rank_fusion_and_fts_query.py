"""rrf_fuse (services/textmem/memory.py) and fts_query (services/textmem/stores/sqlite_graph.py)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from services.textmem.memory import RRF_K, rrf_fuse
from services.textmem.stores.sqlite_graph import fts_query


# rrf_fuse -----------------------------------------------------------------------------
def test_rrf_single_ranking_keeps_its_order_with_reciprocal_scores() -> None:
    assert rrf_fuse([["a", "b", "c"]]) == [
        ("a", pytest.approx(1 / (RRF_K + 1))),
        ("b", pytest.approx(1 / (RRF_K + 2))),
        ("c", pytest.approx(1 / (RRF_K + 3))),
    ]


def test_rrf_sums_over_rankings() -> None:
    fused = dict(rrf_fuse([["a", "b"], ["b", "c"]], k=10))
    assert fused == pytest.approx({"a": 1 / 11, "b": 1 / 12 + 1 / 11, "c": 1 / 12})


def test_rrf_puts_items_found_by_both_first() -> None:
    dense = ["d1", "both", "d2", "d3"]
    lexical = ["l1", "l2", "both"]
    assert rrf_fuse([dense, lexical])[0][0] == "both"


def test_rrf_is_sorted_best_first_and_breaks_ties_by_id() -> None:
    fused = rrf_fuse([["b", "a"], ["a", "b"], ["z"], ["y"]])
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    assert [i for i, _ in fused] == ["a", "b", "y", "z"]


@pytest.mark.parametrize("rankings", [[], [[]], [[], []]])
def test_rrf_of_nothing_is_empty(rankings: list[list[str]]) -> None:
    assert rrf_fuse(rankings) == []


def test_rrf_k_flattens_the_rank_advantage() -> None:
    sharp = dict(rrf_fuse([["a", "b"]], k=0))
    flat = dict(rrf_fuse([["a", "b"]], k=1000))
    assert sharp["a"] / sharp["b"] > flat["a"] / flat["b"]


# fts_query ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", '"hello" OR "world"'),
        ("Which hotel did I book in Guangzhou?", '"hotel" OR "did" OR "book" OR "guangzhou"'),
        ("hotel Hotel HOTEL", '"hotel"'),
        ("to be or not to be", '"not"'),
        ("the of and", '"the" OR "of" OR "and"'),  # only stopwords: keep them rather than search for nothing
        ("", ""),
        ("   ", ""),
        ("?!... --- ***", ""),
        ("NEAR(x y) OR z*", '"near" OR "x" OR "y" OR "z"'),
        ('"quoted" phrase', '"quoted" OR "phrase"'),
        ("memory:hotel -inn", '"memory" OR "hotel" OR "inn"'),
        # Words as FTS5's unicode61 tokenizer makes them (diacritics folded, "_" separates), so
        # the FTS5 query and the in-process index (stores/lexical_index.py) search the same words.
        ("Café 上海 naïve", '"cafe" OR "上海" OR "naive"'),
        ("snake_case 42", '"snake" OR "case" OR "42"'),
    ],
)
def test_fts_query_examples(text: str, expected: str) -> None:
    assert fts_query(text) == expected


def test_fts_query_keeps_at_most_64_distinct_words_in_order() -> None:
    words = [f"word{i}" for i in range(100)]
    terms = fts_query(" ".join(words + words)).split(" OR ")
    assert terms == [f'"{w}"' for w in words[:64]]


TERM = re.compile(r'^"(?:[^"]|"")+"$')

NASTY = [
    '"',
    '""',
    "'",
    "*",
    "NEAR(a, b)",
    "a OR",
    "AND NOT",
    "-x",
    "col:val",
    "{memory}: x",
    "(((",
    ")",
    "^x",
    "x\x00y",
    "\\",
    "🤖 🤖",
    "ß ﬁ Ǆ",
    "\u200b",
    "a" * 10_000,
]


@pytest.mark.parametrize("text", NASTY)
def test_fts_query_output_is_only_quoted_terms(text: str) -> None:
    query = fts_query(text)
    if query:
        assert all(TERM.match(t) for t in query.split(" OR ")), query


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='unicode61 remove_diacritics 2')")
    conn.executemany(
        "INSERT INTO t(body) VALUES (?)",
        [("the NEAR operator and the OR keyword",), ("café in Shanghai 上海",), ("plain words",)],
    )
    return conn


@pytest.mark.parametrize("text", [*NASTY, "NEAR OR", "cafe", "CAFÉ shanghai"])
def test_fts_query_is_valid_fts5(fts: sqlite3.Connection, text: str) -> None:
    query = fts_query(text)
    if query:
        fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (query,)).fetchall()


def test_fts_query_matches_operator_words_literally(fts: sqlite3.Connection) -> None:
    rows = fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts_query("NEAR OR"),)).fetchall()
    assert rows == [(1,)]
