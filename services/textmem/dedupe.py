"""Dedupe on add: a memory that repeats one the cube already has is merged into it.

Adds (fast-mode windows and written candidates alike) are planned here before anything is
stored. Each new memory of a cube is compared with the cube's live memories of the same
type, and with the earlier memories of the same add:

* **exact**: the same text once normalised (:func:`normalise`: NFKC, casefolded, whitespace
  collapsed, punctuation stripped at both ends). The graph store keeps the hash of that text
  (:func:`text_hash`) in an indexed column, so the check is one indexed lookup per add and
  costs no embedding: a re-added conversation is recognised before it is embedded.
* **near**: cosine similarity of the embeddings at least the threshold (``MEMOS_DEDUPE_THRESHOLD``,
  :data:`DEFAULT_THRESHOLD`) **and** the same words in the same order once case, punctuation,
  articles and fillers, number words ("two" / "2"), British and American spelling and plural
  endings are set aside (:func:`same_wording`). Only vectors the add computes anyway are
  searched, against the cube's nearest memories and the add's own earlier memories.

Why both: measured with the bundled all-MiniLM-L6-v2 on ``tests/dedupe_pairs.py``, cosine
alone cannot tell a restatement from a changed fact. "prefers tea over coffee" / "prefers
coffee over tea" score 0.996, "moved to Toronto in 2019" / "… in 2021" 0.958, "finished" /
"started reading the novel" 0.942, "is a painter" / "is a former painter" 0.963, while true
paraphrases go as low as 0.855: no threshold merges even half of the paraphrases without
also merging changed facts. A merge keeps the older text (the newer one survives only in the
sources), so merging a changed fact would hide it from search; without an LLM to judge,
only restatements that keep the wording are merged, and the threshold is a backstop (every
restatement of the set scores at least 0.92). Paraphrases that swap a
word for a synonym stay separate memories: a duplicate, not a loss.
``benchmarks/bench_dedupe.py --calibrate`` prints the table behind these numbers.

A merge keeps the existing memory (its id, text and vector) and appends the new memory's
sources that it does not already hold (:func:`new_sources`: the same message re-added is not
recorded twice), unions the tags, bumps ``updated_at`` and counts the merge in
``info["dedupe_merges"]``. Working-memory copies, archived memories and memories of other
cubes or types are never merge targets.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from services.textmem.models import SEARCHABLE_STATUSES, Edge, Memory, MemoryFilter, Source
from services.textmem.stores.vector import search_batch
from shared.errors import Aborted

if TYPE_CHECKING:
    from services.textmem.stores.graph import GraphStore
    from services.textmem.stores.vector import VectorStore

# Measured on tests/dedupe_pairs.py with all-MiniLM-L6-v2 (``bench_dedupe.py --calibrate``):
# every restatement scores at least 0.922, so 0.90 merges all of them (0.95 would miss 3 of 10);
# cosine alone at 0.90 would also merge 8 of 36 changed facts and 6 of 12 added facts, which
# the wording rule refuses. The threshold is the backstop behind that rule.
DEFAULT_THRESHOLD = 0.90
# Counter in a merge target's info: how many added memories were merged into it.
MERGES_KEY = "dedupe_merges"
# Nearest memories looked at per new memory (the best may fail the wording rule).
NEAR_CANDIDATES = 4
# Never a merge target (a copy of another memory), nor merged.
WORKING = "WorkingMemory"

_WORD = re.compile(r"\w+", re.UNICODE)
# Set aside when comparing wording: they change no fact.
_IGNORED = frozenset({"a", "an", "the", "s", "just", "really", "very", "actually", "oh", "um", "uh"})
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
        " seventeen eighteen nineteen twenty".split()
    )
}


def normalise(text: str) -> str:
    """The text as exact dedupe compares it: NFKC, casefolded, whitespace collapsed, punctuation
    (and symbols) stripped at both ends."""
    t = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    t = " ".join(t.split())
    start, end = 0, len(t)
    while start < end and _is_edge_mark(t[start]):
        start += 1
    while end > start and _is_edge_mark(t[end - 1]):
        end -= 1
    return t[start:end]


def _is_edge_mark(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PS"


def text_hash(text: str) -> str:
    """What the graph store indexes for exact dedupe: hex SHA-256 of the normalised text (32 chars)."""
    return hashlib.sha256(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()[:32]


_BRITISH = [
    (re.compile(r"(?<=\w{2})our(?=[a-z]*$)"), "or"),  # colour, favourite, behaviour
    (re.compile(r"(?<=\w{3})is(e|es|ed|ing|ation)$"), r"iz\1"),  # organise, realised
    (re.compile(r"(?<=\w{3})tre$"), "ter"),  # centre, theatre
]


def _stem(word: str) -> str:
    """One spelling for British and American variants, and no plural or third-person ending:
    "colours"/"color" and "lives"/"live" compare equal, "liked"/"likes" do not (tense can be
    the fact)."""
    if len(word) >= 5 and ("our" in word or "is" in word or word.endswith("tre")):
        for pattern, repl in _BRITISH:
            word = pattern.sub(repl, word)
    for suffix in ("es", "s", "e"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@functools.lru_cache(maxsize=4096)
def content_words(text: str) -> tuple[str, ...]:
    """The words that carry the text's facts, in order: number words as digits, "n't" as "not",
    articles and fillers dropped, spelling variants and plural endings folded."""
    t = unicodedata.normalize("NFKC", text).casefold().replace("n't", " not").replace("n\u2019t", " not")
    words = []
    for w in _WORD.findall(t):
        if w in _IGNORED:
            continue
        w = _NUMBER_WORDS.get(w, w)
        words.append(_stem(w) if w.isalpha() else w)
    return tuple(words)


def same_wording(a: str, b: str) -> bool:
    """True when both texts say the same words in the same order, once case, punctuation,
    articles and fillers, number words, spelling variants and plural endings are set aside.

    Stricter than it might be on purpose: measured on ``tests/dedupe_pairs.py``, one added
    word ("almost", "former", "twice", "Caroline's mother") or one swapped word ("finished" /
    "started", "spring" / "autumn") is a different fact at cosine 0.91 to 0.96."""
    return content_words(a) == content_words(b)


def is_near_duplicate(a: str, b: str, similarity: float, threshold: float) -> bool:
    """Near duplicates: embeddings at least ``threshold`` alike, and the same wording."""
    return similarity >= threshold and same_wording(a, b)


# merging -----------------------------------------------------------------------------------------
def _source_key(s: Source, with_message_id: bool) -> tuple[Any, ...]:
    file = tuple(sorted((s.file or {}).items()))
    key = (s.type, s.role, s.content, s.chat_time, s.image_url, s.tool_call_id, s.tool_name, file)
    return (*key, s.message_id) if with_message_id else key


def _generated_id(message_id: str) -> bool:
    # windowing gives messages without an id "msg-<16 hex>": a re-add of the same message gets
    # another one, so such ids say nothing about identity.
    return not message_id or (message_id.startswith("msg-") and len(message_id) == 20)


def new_sources(existing: Sequence[Source], incoming: Iterable[Source]) -> list[Source]:
    """The incoming sources that ``existing`` does not already hold. Two sources are the same
    message when type, role, content, time (and file, image, tool call) agree and their message
    ids agree, or one of the ids was generated rather than given by the caller."""
    full = {_source_key(s, True) for s in existing}
    by_content = {_source_key(s, False) for s in existing}
    by_content_generated = {_source_key(s, False) for s in existing if _generated_id(s.message_id)}
    out: list[Source] = []
    for s in incoming:
        k = _source_key(s, False)
        if (
            _source_key(s, True) in full
            or (_generated_id(s.message_id) and k in by_content)
            or k in by_content_generated
        ):
            continue
        out.append(s)
        full.add(_source_key(s, True))
        by_content.add(k)
        if _generated_id(s.message_id):
            by_content_generated.add(k)
    return out


def union_tags(existing: Sequence[str], incoming: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*existing, *incoming]))


@dataclass
class Merge:
    """What an add folds into an existing memory of the cube instead of storing it anew."""

    target_id: str
    sources: list[Source] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    updated_at: float = 0.0
    event_time: float | None = None
    count: int = 0  # added memories folded in

    def absorb(self, m: Memory) -> None:
        self.sources.extend(m.sources)
        self.tags = union_tags(self.tags, m.tags)
        self.updated_at = max(self.updated_at, m.updated_at)
        self.event_time = _later(self.event_time, m.event_time)
        self.count += 1


@dataclass
class MergedFields:
    """A merge target's changed fields, as a store writes them."""

    appended: list[Source]
    tags: list[str]
    info: dict[str, Any]
    updated_at: float
    event_time: float | None


def merged_fields(target: Memory, merge: Merge) -> MergedFields:
    """How ``merge`` changes ``target`` (the stores call this inside their write transaction)."""
    info = dict(target.info)
    info[MERGES_KEY] = int(info.get(MERGES_KEY, 0) or 0) + merge.count
    return MergedFields(
        appended=new_sources(target.sources, merge.sources),
        tags=union_tags(target.tags, merge.tags),
        info=info,
        updated_at=max(target.updated_at, merge.updated_at),
        event_time=_later(target.event_time, merge.event_time),
    )


def is_merge_target(m: Memory) -> bool:
    return m.memory_type != WORKING and m.status in SEARCHABLE_STATUSES


TextKey = tuple[str, str, str]  # (text_hash, memory_type, user_id)


def unique_text_keys(memories: Iterable[Memory]) -> set[TextKey]:
    """What must not already be live in the cube when ``memories`` are stored by an add that
    dedupes (``GraphStore.insert_memories(unique_texts=True)``): the exact-text keys of those
    that later adds could merge into."""
    return {(text_hash(m.memory), m.memory_type, m.user_id) for m in memories if is_merge_target(m)}


def text_added_meanwhile() -> Aborted:
    return Aborted(
        "a memory with the same text was added meanwhile; plan the add again",
        reason="TEXT_ADDED_MEANWHILE",
    )


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _fold_into_new(target: Memory, m: Memory) -> None:
    """An add repeats itself: fold a later memory of the batch into an earlier new one."""
    target.sources.extend(new_sources(target.sources, m.sources))
    target.tags = union_tags(target.tags, m.tags)
    target.event_time = _later(target.event_time, m.event_time)
    target.info[MERGES_KEY] = int(target.info.get(MERGES_KEY, 0) or 0) + 1


# planning ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """An add after dedupe: what to store, what to merge, and where each input went."""

    new: list[Memory]
    new_vectors: np.ndarray
    merges: list[Merge]
    # Per input memory, in order: the id that holds its content.
    final_ids: list[str]

    @property
    def result_ids(self) -> list[str]:
        """The memories the add wrote to, once each, in order of first input."""
        return list(dict.fromkeys(self.final_ids))

    @property
    def merged_ids(self) -> list[str]:
        """Memories that existed before the add and received some of its content."""
        return [m.target_id for m in self.merges]

    def edges(self, inputs: Sequence[Memory], edges: Sequence[Edge]) -> list[Edge]:
        """The add's edges, pointing at where their ends went; self-loops and repeats dropped."""
        where = {m.id: f for m, f in zip(inputs, self.final_ids, strict=True)}
        out: dict[tuple[str, str, str], Edge] = {}
        for e in edges:
            src, dst = where.get(e.src_id, e.src_id), where.get(e.dst_id, e.dst_id)
            if src != dst:
                out.setdefault((src, dst, e.type), Edge(e.cube_id, src, dst, e.type))
        return list(out.values())


def plan_add(
    cube_id: str,
    memories: Sequence[Memory],
    graph: GraphStore,
    vectors: VectorStore,
    embed: Callable[[list[str]], np.ndarray],
    threshold: float,
) -> Plan:
    """Decides, for each memory of an add, whether it is stored or merged (see the module doc).

    ``embed`` is called once, for the memories that are not exact duplicates. The caller's
    memories are left as they are: ``Plan.new`` holds copies, with the add's own later repeats
    folded in."""
    # Copies: a retried plan (a target deleted meanwhile) must start from the caller's memories.
    memories = [dataclasses.replace(m, sources=list(m.sources), tags=list(m.tags), info=dict(m.info)) for m in memories]
    n = len(memories)
    final: list[str | None] = [None] * n
    eligible = [m.memory_type != WORKING and m.status == "activated" for m in memories]
    hashes = [text_hash(m.memory) if ok else "" for m, ok in zip(memories, eligible, strict=True)]

    # exact: one indexed lookup per memory type of the add
    existing: dict[tuple[str, str], str] = {}
    by_type: dict[str, list[str]] = {}
    for m, h, ok in zip(memories, hashes, eligible, strict=True):
        if ok:
            by_type.setdefault(m.memory_type, []).append(h)
    for mtype, hs in by_type.items():
        for h, mid in graph.find_by_text_hash(cube_id, mtype, list(dict.fromkeys(hs))).items():
            existing[(mtype, h)] = mid
    # Only a memory of the same user is a merge target: merging another user's words into it
    # would hand them to that user (and survive the first user's erasure).
    owners = (
        {mid: t.user_id for mid, t in graph.get_memories(cube_id, list(set(existing.values()))).items()}
        if existing
        else {}
    )

    merges: dict[str, Merge] = {}

    def merge_existing(i: int, target_id: str) -> None:
        merges.setdefault(target_id, Merge(target_id)).absorb(memories[i])
        final[i] = target_id

    first_new: dict[tuple[str, str, str], int] = {}
    pending: list[int] = []  # not an exact duplicate: embed and look further
    for i, m in enumerate(memories):
        found = existing.get((m.memory_type, hashes[i]))
        key = (m.memory_type, m.user_id, hashes[i])
        if not eligible[i]:
            pending.append(i)
        elif found is not None and owners.get(found) == m.user_id:
            merge_existing(i, found)
        elif key in first_new:
            j = first_new[key]
            _fold_into_new(memories[j], m)
            final[i] = memories[j].id
        else:
            first_new[key] = i
            pending.append(i)

    vecs = embed([memories[i].memory for i in pending]) if pending else np.zeros((0, vectors.dim), np.float32)
    vec_of = {i: _unit(v) for i, v in zip(pending, vecs, strict=True)}

    # near, against the cube: the searches first, then one hydration of every close candidate.
    # One batched search per (type, user) of the add: the exact index then scores every new
    # memory of the group in one matrix product, one pass over the cube's rows instead of one
    # per memory (measured at 100,000 memories: 43 ms per added memory with dedupe on, 9 now).
    groups: dict[tuple[str, str], list[int]] = {}
    for i in pending:
        if eligible[i]:
            groups.setdefault((memories[i].memory_type, memories[i].user_id), []).append(i)
    hits: dict[int, list[tuple[str, float]]] = {}
    for (memory_type, user_id), members in groups.items():
        flt = MemoryFilter(memory_types=(memory_type,), user_id=user_id)
        batch = np.stack([vec_of[i] for i in members])
        for i, found in zip(members, search_batch(vectors, cube_id, batch, flt, NEAR_CANDIDATES), strict=True):
            hits[i] = [(mid, s) for mid, s in found if s >= threshold]
    wanted = list(dict.fromkeys(mid for h in hits.values() for mid, _ in h))
    known = graph.get_memories(cube_id, wanted) if wanted else {}

    stored: list[int] = []
    stored_vecs = np.zeros((len(pending), vecs.shape[1] if len(pending) else 0), np.float32)
    for i in pending:
        m = memories[i]
        if eligible[i]:
            best: tuple[float, str, int | None] | None = None  # (similarity, target id, batch index)
            for mid, s in hits.get(i, []):
                t = known.get(mid)
                if t is not None and t.memory_type == m.memory_type and t.user_id == m.user_id and is_merge_target(t):
                    if is_near_duplicate(t.memory, m.memory, s, threshold) and (best is None or s > best[0]):
                        best = (s, mid, None)
            sims = stored_vecs[: len(stored)] @ vec_of[i] if stored else np.zeros(0, np.float32)
            for k in np.flatnonzero(sims >= threshold):
                j, s = stored[k], float(sims[k])
                o = memories[j]
                if (
                    eligible[j]
                    and o.memory_type == m.memory_type
                    and o.user_id == m.user_id
                    and is_near_duplicate(o.memory, m.memory, s, threshold)
                ):
                    if best is None or s > best[0]:
                        best = (s, o.id, j)
            if best is not None:
                _, target_id, j = best
                if j is None:
                    merge_existing(i, target_id)
                else:
                    _fold_into_new(memories[j], m)
                    final[i] = target_id
                continue
        stored_vecs[len(stored)] = vec_of[i]
        stored.append(i)
        final[i] = m.id

    new_vectors = np.stack([vec_of[i] for i in stored]) if stored else np.zeros((0, vectors.dim), np.float32)
    plan = Plan(
        new=[memories[i] for i in stored],
        new_vectors=new_vectors,
        merges=list(merges.values()),
        final_ids=[f for f in final if f is not None],
    )
    assert len(plan.final_ids) == n
    return plan


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
