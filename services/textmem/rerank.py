"""Second-stage lexical scoring of a search's candidates: stemmed BM25 over their own words.

The store's full-text search (SQLite FTS5, Neo4j) matches whole words of the query as typed,
so "adoption" misses "adopt" and "painting" misses "painted", and a question's function words
("did", "kind", "how") and the names of the people speaking count as much as its content. The
candidates it and the dense search return are hydrated anyway; :func:`pool_bm25` scores them
again with BM25 over light-stemmed words, question words dropped, and the names of the
candidates' speakers left out of the query (the speaker signal handles who said it). Term
statistics (document frequency, average length) are taken from the candidate pool itself: a
re-ranking of what the first stage found, not a search of the cube.

Pure functions, no stores: unit-tested on their own (tests/unit/test_lexical_rerank.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

BM25_K1 = 1.2
BM25_B = 0.75

_WORD = re.compile(r"\w+", re.UNICODE)
_VOWELS = frozenset("aeiouy")
# Function words, and the words questions are made of, that say nothing about the answer.
QUERY_STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be been before being both but by can could
    did do does doing done during each else ever for from had has have having he her hers him his how
    i if in into is it its just kind me might more most much my no not now of on one or other our out
    over own really said say says she should so some something such tell than that the their them
    then there these they thing things this those through to too type types us very was we were what
    whatever when where whether which while who whom whose why will with would you your""".split()
)


@lru_cache(maxsize=65536)
def light_stem(word: str) -> str:
    """A light English stemmer: folds plurals, -ing, -ed, -ly, -ment, -ness and -ion forms
    (and a final silent e) onto one stem, so "painting", "painted" and "paints" meet at
    "paint", "adopt", "adopted" and "adoption" at "adopt", and "make", "makes" and "making"
    at "make". Conservative on short words
    (three letters or fewer are kept as they are) and on anything that is not alphabetic.
    Stems need not be words; they only need to agree."""
    w = word.lower()
    if len(w) <= 3 or not w.isalpha():
        return w
    # Plurals and third person.
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("es") and w[-3] in "sxz":
        w = w[:-2]
    elif w.endswith("ches") or w.endswith("shes"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    # Derivational and inflectional suffixes: the stem left must keep a vowel and 3 letters.
    for suffix in ("ingly", "edly", "ing", "ied", "ed", "ment", "ness", "ion", "ly"):
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if len(stem) >= 3 and _VOWELS.intersection(stem):
                if suffix == "ied":
                    stem += "y"
                elif suffix in ("ing", "ed", "ingly", "edly"):
                    if stem[-1] == stem[-2] and stem[-1] not in "lsz":
                        stem = stem[:-1]  # running -> run, stopped -> stop
                    elif len(stem) == 3 and _cvc(stem):
                        stem += "e"  # making -> make, liked -> like
                w = stem
            break
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]  # share / sharing / shared
    if len(w) > 3 and w.endswith("y"):
        w = w[:-1] + "i"  # study / studies / studied
    return w


def _cvc(stem: str) -> bool:
    """Ends consonant, vowel, consonant (not w, x or y): a short stem that lost a silent e."""
    a, b, c = stem[-3:]
    return a not in _VOWELS and b in _VOWELS and c not in _VOWELS and c not in "wxy"


def terms(text: str) -> list[str]:
    """The text's words, lower-cased and light-stemmed, in order."""
    return [light_stem(w) for w in _WORD.findall(text.lower())]


@lru_cache(maxsize=8192)
def term_counts(text: str) -> tuple[int, Mapping[str, int]]:
    """(number of words, stem -> count) of a text; cached, as the same memories come back
    search after search. The mapping is shared: do not change it."""
    counts: dict[str, int] = {}
    n = 0
    for w in _WORD.findall(text.lower()):
        s = light_stem(w)
        counts[s] = counts.get(s, 0) + 1
        n += 1
    return n, counts


def query_terms(query: str, ignore: Iterable[str] = ()) -> list[str]:
    """The query's content terms (stemmed, each once): question and function words dropped,
    and the words of ``ignore`` (the names of the people speaking) too, unless nothing else
    is left."""
    words = [w for w in _WORD.findall(query.lower()) if w not in QUERY_STOPWORDS]
    skip = {w for name in ignore for w in _WORD.findall(name.lower())}
    kept = [w for w in words if w not in skip] or words
    return list(dict.fromkeys(light_stem(w) for w in kept))


def pool_bm25(
    query: Iterable[str], texts: Mapping[str, str], k1: float = BM25_K1, b: float = BM25_B
) -> list[tuple[str, float]]:
    """BM25 of each text for the query terms, with document frequencies and the average length
    taken from ``texts`` (the candidate pool); texts matching no term are left out. Best first,
    ties broken by id."""
    wanted = list(dict.fromkeys(query))
    if not wanted or not texts:
        return []
    counts: dict[str, dict[str, int]] = {}
    lengths: dict[str, int] = {}
    df = dict.fromkeys(wanted, 0)
    for item, text in texts.items():
        lengths[item], all_counts = term_counts(text)
        tf = {w: all_counts[w] for w in wanted if w in all_counts}
        if tf:
            counts[item] = tf
            for w in tf:
                df[w] += 1
    n = len(texts)
    avg = sum(lengths.values()) / n or 1.0
    idf = {w: max(math.log((n - d + 0.5) / (d + 0.5)), 1e-6) for w, d in df.items() if d}
    scores = {}
    for item, tf in counts.items():
        norm = k1 * (1 - b + b * lengths[item] / avg)
        scores[item] = sum(idf[w] * f * (k1 + 1) / (f + norm) for w, f in tf.items())
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
