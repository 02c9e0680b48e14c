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
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

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


_RECIPE_LIST = [
    RetrievalRecipe("lexical", dense=False),
    RetrievalRecipe("dense", lexical=False),
    RetrievalRecipe("fused"),
    RetrievalRecipe("fused-k20", rrf_k=20),
    RetrievalRecipe("+neighbours", rrf_k=20, neighbour_weight=0.3),
    RetrievalRecipe("+speaker", rrf_k=20, neighbour_weight=0.3, speaker_boost=0.5),
    RetrievalRecipe("+temporal", rrf_k=20, neighbour_weight=0.3, speaker_boost=0.5, temporal_boost=0.6),
]
RECIPES: dict[str, RetrievalRecipe] = {r.name: r for r in _RECIPE_LIST}
DEFAULT_RECIPE = "+temporal"
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
) -> dict[str, float]:
    """Each of the ``seeds`` best items gives ``weight`` times its score to each neighbour.

    Neighbours not among the candidates join with what they received. Scores are taken
    from ``fused`` (before spreading), so the result does not depend on visiting order.
    """
    out = dict(fused)
    if weight <= 0:
        return out
    for item, score in list(fused)[:seeds]:
        for other in neighbours(item):
            if other != item:
                out[other] = out.get(other, 0.0) + weight * score
    return out


# speakers -----------------------------------------------------------------------------------
_SPEAKER_LINE = re.compile(r"^([^\W\d_][\w .'\-]{0,40}?): ", re.MULTILINE)
_ROLES = frozenset({"user", "assistant", "system", "tool", "developer"})


def speakers_of(text: str) -> set[str]:
    """Names that open a rendered line (``Name: …`` or ``Name: [time]: …``), roles excluded."""
    return {m.group(1) for m in _SPEAKER_LINE.finditer(text) if m.group(1).lower() not in _ROLES}


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
