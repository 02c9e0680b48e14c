"""Retrieval recipes: how textmem turns dense and lexical candidates into one ranking.

A :class:`RetrievalRecipe` names which signals a search uses. The named recipes in
:data:`RECIPES` are the ablation steps of ``benchmarks/bench_locomo.py``, each adding one
signal to the one before; the service runs :data:`DEFAULT_RECIPE` unless
``MEMOS_RETRIEVAL_RECIPE`` names another.

Signals, in the order they apply (all pure functions here, so they are unit-tested alone):

1. **fusion**: reciprocal rank fusion of the dense and lexical rankings,
   ``sum 1/(k + rank)``. A smaller ``k`` trusts the top of each ranking more.
2. **neighbours**: a memory's conversational neighbours (the windows before and after it
   in the same add, linked by FOLLOWS edges) receive ``neighbour_weight`` times its score.
   The answer to a question is often the turn after the one that matches it ("What did
   you do yesterday?" / "I went to the support group").
3. **speaker**: when the query names exactly one of the people speaking in the candidates,
   memories spoken by that person are scaled by ``1 + speaker_boost``.
4. **temporal**: when the query asks when something happened, memories whose own text
   (their sources, not the time stamp every rendered line carries) says when are scaled by
   ``1 + temporal_boost``; when the query names a year or a month of a year, memories whose
   event time falls in it are scaled by the same factor.

Later steps (measured on LoCoMo, see ``benchmarks/bench_locomo.py``):

- **lexical rescoring** (applies before fusion): the fused candidates are scored again by
  stemmed BM25 over their own words, question words and speaker names left out of the query
  (``rerank.py``), and that ranking replaces the store's full-text ranking in the fusion.
- **two-hop neighbours**: neighbours of neighbours receive ``neighbour_decay`` times a
  neighbour's share (the answer is often two turns after the question it answers).
- **session**: memories of the conversation sessions that hold most of the best
  ``session_seeds`` memories are scaled by up to ``1 + session_boost`` (the evidence of a
  question tends to sit in one session).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

RRF_K = 60


@dataclass(frozen=True)
class RetrievalRecipe:
    name: str
    dense: bool = True
    lexical: bool = True
    rrf_k: int = RRF_K
    neighbour_weight: float = 0.0
    """Share of a memory's score given to each neighbour (0: off)."""
    neighbour_seeds: int = 30
    """How many of the best fused memories pass score to their neighbours."""
    speaker_boost: float = 0.0
    temporal_boost: float = 0.0
    lexical_rescore: bool = False
    """Score the fused candidates again with stemmed BM25 (rerank.py) and fuse that ranking
    with the dense one instead of the store's full-text ranking."""
    neighbour_hops: int = 1
    """How far along FOLLOWS edges score spreads (2: neighbours of neighbours too)."""
    neighbour_decay: float = 0.5
    """Each further hop passes on this share of what the hop before received."""
    session_boost: float = 0.0
    """Up to this factor for memories of the sessions holding most of the best memories (0: off)."""
    session_seeds: int = 10
    """How many of the best memories vote for their session."""
    for_windows: str = ""
    """The recipe that ranks instead when most candidates are windows of several turns (fast
    mode's default memories); empty: this one ranks every memory."""


_RECIPE_LIST = [
    RetrievalRecipe("lexical", dense=False),
    RetrievalRecipe("dense", lexical=False),
    RetrievalRecipe("fused"),
    RetrievalRecipe("fused-k20", rrf_k=20),
    RetrievalRecipe("+neighbours", rrf_k=20, neighbour_weight=0.3),
    RetrievalRecipe("+speaker", rrf_k=20, neighbour_weight=0.3, speaker_boost=0.5),
    RetrievalRecipe("+temporal", rrf_k=20, neighbour_weight=0.3, speaker_boost=0.5, temporal_boost=0.6),
]
_TEMPORAL = _RECIPE_LIST[-1]
_RECIPE_LIST += [
    replace(_TEMPORAL, name="+lexical-rescore", lexical_rescore=True),
    replace(_TEMPORAL, name="+two-hop", lexical_rescore=True, neighbour_hops=2, neighbour_weight=0.45),
    replace(
        _TEMPORAL,
        name="+boosts",
        lexical_rescore=True,
        neighbour_hops=2,
        neighbour_weight=0.45,
        speaker_boost=1.0,
        temporal_boost=1.0,
    ),
    replace(
        _TEMPORAL,
        name="+session",
        lexical_rescore=True,
        neighbour_hops=2,
        neighbour_weight=0.45,
        speaker_boost=1.0,
        temporal_boost=1.0,
        session_boost=0.6,
        for_windows="windows",
    ),
]
# For memories that are windows of several turns (fast mode's default): each already holds its
# neighbours' words, so spreading score to adjacent windows and to the best sessions spends the
# word budget on context the hits carry anyway. LoCoMo R@500w with 4-turn windows: +session
# 0.595, lexical alone 0.691, this 0.720 (0.734 / 0.706 on the tuned / held-out halves).
_RECIPE_LIST.append(replace(_TEMPORAL, name="windows", neighbour_weight=0.0, lexical_rescore=True))
RECIPES: dict[str, RetrievalRecipe] = {r.name: r for r in _RECIPE_LIST}
DEFAULT_RECIPE = "+session"
RecipeName = str


def rrf_fuse(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: sum of 1/(k + rank) over the rankings, best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """Best first, ties broken by id so the order is stable."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def spread_to_neighbours(
    fused: Sequence[tuple[str, float]],
    neighbours: Callable[[str], Iterable[str]],
    weight: float,
    seeds: int,
    hops: int = 1,
    decay: float = 0.5,
) -> dict[str, float]:
    """Each of the ``seeds`` best items gives ``weight`` times its score to each neighbour,
    and, with ``hops`` > 1, ``decay`` times that to each neighbour's neighbours further out
    (each item reached once per seed, at its shortest distance).

    Neighbours not among the candidates join with what they received. Scores are taken
    from ``fused`` (before spreading), so the result does not depend on visiting order.
    """
    out = dict(fused)
    if weight <= 0:
        return out
    for item, score in list(fused)[:seeds]:
        seen = {item}
        frontier = [item]
        share = weight * score
        for _ in range(max(hops, 1)):
            reached = []
            for node in frontier:
                for other in neighbours(node):
                    if other not in seen:
                        seen.add(other)
                        reached.append(other)
                        out[other] = out.get(other, 0.0) + share
            frontier = reached
            share *= decay
    return out


def session_spread(
    scores: dict[str, float], session_of: Callable[[str], str], factor: float, seeds: int
) -> dict[str, float]:
    """Scales every item by ``1 + factor * mass(session) / mass(best session)``, where a
    session's mass is the summed score of the ``seeds`` best items in it. Items whose session
    holds none of the seeds keep their score; items without a session ("") get no boost."""
    if factor <= 0 or not scores:
        return scores
    mass: dict[str, float] = {}
    for item, score in ranked(scores)[:seeds]:
        session = session_of(item)
        if session:
            mass[session] = mass.get(session, 0.0) + score
    top = max(mass.values(), default=0.0)
    if top <= 0:
        return scores
    return {item: s * (1.0 + factor * mass.get(session_of(item), 0.0) / top) for item, s in scores.items()}


# speakers -----------------------------------------------------------------------------------
_SPEAKER_LINE = re.compile(r"^([^\W\d_][\w .'\-]{0,40}?): ", re.MULTILINE)
_ROLES = frozenset({"user", "assistant", "system", "tool", "developer"})


# Cached per text: ranking asks about the same memories search after search (~120 texts a
# search at 10,000 memories), and the regex scans cost more than the rest of the boost.
@lru_cache(maxsize=65536)
def speakers_of(text: str) -> frozenset[str]:
    """Names that open a rendered line (``Name: …`` or ``Name: [time]: …``), roles excluded."""
    return frozenset(m.group(1) for m in _SPEAKER_LINE.finditer(text) if m.group(1).lower() not in _ROLES)


def named_speakers(query: str, candidates: Iterable[str]) -> set[str]:
    """The candidate speakers the query names as whole words (case-sensitive: names)."""
    return {s for s in candidates if re.search(r"(?<!\w)" + re.escape(s) + r"(?!\w)", query)}


# time ---------------------------------------------------------------------------------------
_WHEN = re.compile(
    r"\b(when|how long|how many (years|months|weeks|days)|what (year|month|day|date|time)|which (year|month|day))\b",
    re.IGNORECASE,
)
_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_TIME_WORDS = re.compile(
    r"\b(yesterday|today|tonight|tomorrow|last|next|ago|weekend|week|weeks|month|months|year|years|days|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|since|recently|soon|"
    + "|".join(_MONTHS)
    + r"|(19|20)\d\d)\b",
    re.IGNORECASE,
)
_MONTH_YEAR = re.compile(r"\b(?:(" + "|".join(_MONTHS) + r")\s*,?\s*)?((?:19|20)\d\d)\b", re.IGNORECASE)


def asks_when(query: str) -> bool:
    """The query asks for a time ("When did…", "How long…", "What year…")."""
    return bool(_WHEN.search(query))


@lru_cache(maxsize=65536)
def says_when(text: str) -> bool:
    """The text mentions a time (a relative expression, a weekday, a month or a year)."""
    return bool(_TIME_WORDS.search(text))


def named_periods(query: str) -> list[tuple[float, float]]:
    """[start, end) epoch seconds (UTC) of each year or month-of-year the query names."""
    out = []
    for m in _MONTH_YEAR.finditer(query):
        year = int(m.group(2))
        if m.group(1):
            month = _MONTHS.index(m.group(1).lower()) + 1
            start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
            end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt.UTC)
        else:
            start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
            end = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
        out.append((start.timestamp(), end.timestamp()))
    return out


def in_periods(when: float | None, periods: Sequence[tuple[float, float]]) -> bool:
    return when is not None and any(a <= when < b for a, b in periods)


def boost(scores: dict[str, float], chosen: Iterable[str], factor: float) -> dict[str, float]:
    """Scales the chosen items' scores by ``1 + factor``."""
    for item in chosen:
        if item in scores:
            scores[item] *= 1.0 + factor
    return scores
