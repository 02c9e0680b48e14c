"""TextMemory: the domain logic of textmem, free of gRPC.

Write path (add, write, update): validate, embed, write vectors, then write
the graph in one transaction; if the graph write fails the vectors are removed
again. Search hydrates hits from the graph, so a vector without its graph
record (a crash between the two writes) is never returned.

Read path: dense (Milvus) and lexical (BM25) candidates fused by reciprocal
rank, re-ranked by the signals of the retrieval recipe (``ranking.py``:
conversational neighbours, the speaker the query names, time), hydrated from
the graph.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.textmem.embedders import Embedder, QueryCache
from services.textmem.models import MEMORY_TYPES, STATUSES, ChatMessage, Cube, Edge, Memory, MemoryFilter
from services.textmem.ranking import (
    DEFAULT_RECIPE,
    RECIPES,
    RRF_K,
    RetrievalRecipe,
    asks_when,
    boost,
    in_periods,
    named_periods,
    named_speakers,
    ranked,
    rrf_fuse,
    says_when,
    speakers_of,
    spread_to_neighbours,
)
from services.textmem.stores.graph import GraphStore
from services.textmem.stores.vector import VectorRecord, VectorStore
from services.textmem.windowing import build_window_memories
from shared.errors import AlreadyExists, InvalidArgument, MemosError, NotFound, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

__all__ = ["RRF_K", "AddResult", "TextMemory", "rrf_fuse"]

MAX_TOP_K = 100
MAX_PAGE_SIZE = 1000
# A working-memory copy records the memory it was copied from under this info key.
WORKING_COPY_OF = "working_memory_of"
UPDATABLE_FIELDS = frozenset(
    {
        "memory",
        "metadata.tags",
        "metadata.key",
        "metadata.background",
        "metadata.status",
        "metadata.memory_type",
        "metadata.info",
        "metadata.confidence",
    }
)


@dataclass
class AddResult:
    memories: list[Memory]
    replayed: bool = False


class TextMemory:
    def __init__(
        self,
        graph: GraphStore,
        vectors: VectorStore,
        embedder: Embedder,
        *,
        window_size: int = 4,
        window_overlap: int = 1,
        query_cache_size: int = 2048,
        max_messages_per_add: int = 2000,
        max_text_chars: int = 200_000,
        working_memory_capacity: int = 20,
        recipe: RetrievalRecipe | str = DEFAULT_RECIPE,
    ) -> None:
        if vectors.dim != embedder.dim:
            raise ValueError(f"vector store dimension {vectors.dim} != embedder dimension {embedder.dim}")
        self.graph = graph
        self.vectors = vectors
        self.embedder = embedder
        self._queries = QueryCache(embedder, query_cache_size)
        self.window_size = window_size
        self.window_overlap = window_overlap
        self.max_messages_per_add = max_messages_per_add
        self.max_text_chars = max_text_chars
        self.working_memory_capacity = working_memory_capacity
        # Which retrieval signals searches use (ranking.RECIPES); the LoCoMo benchmark switches it.
        self.recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe

    def close(self) -> None:
        self.graph.close()
        self.vectors.close()

    # validation -------------------------------------------------------------
    @staticmethod
    def check_cube_id(cube_id: str) -> None:
        if not cube_id or not cube_id.strip():
            raise InvalidArgument("cube_id is required", reason="MISSING_CUBE_ID", metadata={"field": "cube_id"})
        if len(cube_id) > 256:
            raise InvalidArgument("cube_id is longer than 256 characters", reason="CUBE_ID_TOO_LONG")

    def _check_messages(self, messages: Sequence[ChatMessage]) -> None:
        if not messages:
            raise InvalidArgument("messages must not be empty", reason="EMPTY_MESSAGES", metadata={"field": "messages"})
        if len(messages) > self.max_messages_per_add:
            raise InvalidArgument(
                f"{len(messages)} messages in one add; the limit is {self.max_messages_per_add}",
                reason="TOO_MANY_MESSAGES",
                metadata={"limit": str(self.max_messages_per_add)},
            )
        for i, m in enumerate(messages):
            for p in m.parts:
                if len(p.text) > self.max_text_chars:
                    raise InvalidArgument(
                        f"message {i} has a part longer than {self.max_text_chars} characters",
                        reason="TEXT_TOO_LONG",
                        metadata={"message_index": str(i), "limit": str(self.max_text_chars)},
                    )

    @staticmethod
    def check_filter(flt: MemoryFilter) -> None:
        for t in flt.memory_types:
            if t not in MEMORY_TYPES:
                raise InvalidArgument(f"unknown memory type {t!r}", reason="UNKNOWN_MEMORY_TYPE")
        if flt.created_after is not None and flt.created_before is not None and flt.created_after >= flt.created_before:
            raise InvalidArgument("created_after must be before created_before", reason="EMPTY_TIME_RANGE")

    # writes -------------------------------------------------------------------
    def _replay(self, cube_id: str, request_id: str) -> AddResult | None:
        if not request_id:
            return None
        ids = self.graph.memory_ids_for_request(cube_id, request_id)
        if ids is None:
            return None
        found = self.graph.get_memories(cube_id, ids)
        return AddResult([found[i] for i in ids if i in found], replayed=True)

    def _store(self, cube_id: str, memories: list[Memory], edges: list[Edge], request_id: str) -> AddResult:
        if not memories:
            return AddResult([])
        vectors = self.embedder.embed([m.memory for m in memories])
        records = [
            VectorRecord(m.id, m.cube_id, m.user_id, m.session_id, m.memory_type, m.status, m.created_at, v)
            for m, v in zip(memories, vectors, strict=True)
        ]
        self.vectors.upsert(records)
        try:
            self.graph.insert_memories(cube_id, memories, edges, request_id=request_id)
        except AlreadyExists:
            # A concurrent retry of the same request won the race: undo ours, return theirs.
            self.vectors.delete(cube_id, [m.id for m in memories])
            replay = self._replay(cube_id, request_id)
            if replay is None:
                raise
            return replay
        except BaseException:
            self._undo_vectors(cube_id, memories)
            raise
        return AddResult(memories)

    def _undo_vectors(self, cube_id: str, memories: list[Memory]) -> None:
        try:
            self.vectors.delete(cube_id, [m.id for m in memories])
        except MemosError:
            # The vectors stay orphaned; search never returns them (it hydrates from the graph).
            log.error("could not remove vectors of a failed add", extra={"cube_id": cube_id, "count": len(memories)})

    def add_messages(
        self,
        cube_id: str,
        user_id: str,
        session_id: str,
        messages: list[ChatMessage],
        *,
        tags: Sequence[str] = (),
        info: dict | None = None,
        request_id: str = "",
        window_size: int = 0,
        window_overlap: int | None = None,
    ) -> AddResult:
        """Fast mode: windows of turns become memories, each keeping its messages as sources."""
        self.check_cube_id(cube_id)
        self._check_messages(messages)
        replay = self._replay(cube_id, request_id)
        if replay is not None:
            return replay
        size = window_size or self.window_size
        overlap = self.window_overlap if window_overlap is None else window_overlap
        if not 0 <= overlap < size:
            raise InvalidArgument(
                "window overlap must be at least 0 and smaller than the window size",
                reason="BAD_WINDOW",
                metadata={"size": str(size), "overlap": str(overlap)},
            )
        memories = build_window_memories(
            messages,
            cube_id=cube_id,
            user_id=user_id,
            session_id=session_id,
            tags=tags,
            info=info or {},
            size=size,
            overlap=overlap,
        )
        edges = [Edge(cube_id, a.id, b.id, "FOLLOWS") for a, b in zip(memories, memories[1:], strict=False)]
        return self._store(cube_id, memories, edges, request_id)

    def write_memories(
        self, cube_id: str, user_id: str, session_id: str, candidates: list[Memory], request_id: str = ""
    ) -> AddResult:
        """Stores memories made elsewhere (ingest), after checking them."""
        self.check_cube_id(cube_id)
        if not candidates:
            raise InvalidArgument("candidates must not be empty", reason="EMPTY_CANDIDATES")
        replay = self._replay(cube_id, request_id)
        if replay is not None:
            return replay
        now = time.time()
        for i, m in enumerate(candidates):
            if not m.memory.strip():
                raise InvalidArgument(f"candidate {i} has no text", reason="EMPTY_MEMORY", metadata={"index": str(i)})
            if len(m.memory) > self.max_text_chars:
                raise InvalidArgument(f"candidate {i} is too long", reason="TEXT_TOO_LONG", metadata={"index": str(i)})
            if m.memory_type not in MEMORY_TYPES:
                raise InvalidArgument(f"candidate {i} has unknown memory type", reason="UNKNOWN_MEMORY_TYPE")
            m.id = uuid.uuid4().hex
            m.cube_id, m.user_id, m.session_id = cube_id, user_id or m.user_id, session_id or m.session_id
            m.created_at = m.updated_at = now
            if m.confidence == 0.0:
                m.confidence = 1.0  # proto3 cannot tell 0 from unset; new candidates default to sure
            m.status = m.status if m.status in STATUSES else "activated"
        return self._store(cube_id, candidates, conversation_edges(cube_id, candidates), request_id)

    def update_memory(self, cube_id: str, memory_id: str, changes: Memory, paths: Sequence[str]) -> Memory:
        self.check_cube_id(cube_id)
        if not paths:
            raise InvalidArgument("update_mask names no field", reason="EMPTY_UPDATE_MASK")
        unknown = set(paths) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgument(
                f"cannot update {sorted(unknown)}; updatable: {sorted(UPDATABLE_FIELDS)}", reason="BAD_UPDATE_MASK"
            )
        current = self.graph.get_memories(cube_id, [memory_id]).get(memory_id)
        if current is None:
            raise NotFound(f"memory {memory_id!r} not found in cube", reason="MEMORY_NOT_FOUND")
        new = Memory(**{**current.__dict__})
        if "memory" in paths:
            if not changes.memory.strip():
                raise InvalidArgument("memory text must not be empty", reason="EMPTY_MEMORY")
            new.memory = changes.memory
        if "metadata.tags" in paths:
            new.tags = list(changes.tags)
        if "metadata.key" in paths:
            new.key = changes.key
        if "metadata.background" in paths:
            new.background = changes.background
        if "metadata.info" in paths:
            new.info = dict(changes.info)
        if "metadata.confidence" in paths:
            new.confidence = changes.confidence
        if "metadata.status" in paths:
            if changes.status not in STATUSES:
                raise InvalidArgument("unknown status", reason="UNKNOWN_STATUS")
            new.status = changes.status
        if "metadata.memory_type" in paths:
            if changes.memory_type not in MEMORY_TYPES:
                raise InvalidArgument("unknown memory type", reason="UNKNOWN_MEMORY_TYPE")
            new.memory_type = changes.memory_type
        new.version = current.version + 1
        new.updated_at = time.time()
        if new.memory != current.memory:
            vector = self.embedder.embed([new.memory])[0]
        else:
            vector = self.vectors.get_vectors(cube_id, [memory_id]).get(memory_id)
            if vector is None:
                vector = self.embedder.embed([new.memory])[0]
        record = VectorRecord(
            new.id, cube_id, new.user_id, new.session_id, new.memory_type, new.status, new.created_at, vector
        )
        self.vectors.upsert([record])
        try:
            self.graph.update_memory(new)
        except BaseException:
            # Put the old vector state back so the two stores agree.
            old_vec = vector if new.memory == current.memory else self.embedder.embed([current.memory])[0]
            self.vectors.upsert(
                [
                    VectorRecord(
                        current.id,
                        cube_id,
                        current.user_id,
                        current.session_id,
                        current.memory_type,
                        current.status,
                        current.created_at,
                        old_vec,
                    )
                ]
            )
            raise
        return new

    def delete_memories(self, cube_id: str, ids: Sequence[str]) -> int:
        self.check_cube_id(cube_id)
        if not ids:
            raise InvalidArgument("memory_ids must not be empty (or set all)", reason="EMPTY_MEMORY_IDS")
        deleted = self.graph.delete_memories(cube_id, ids)
        self._delete_vectors(cube_id, deleted)
        return len(deleted)

    def delete_all(self, cube_id: str) -> int:
        self.check_cube_id(cube_id)
        deleted = self.graph.delete_cube_memories(cube_id)
        try:
            self.vectors.delete_cube(cube_id)
        except Unavailable:
            log.error("vectors of a cleared cube remain; search cannot return them", extra={"cube_id": cube_id})
        return len(deleted)

    def working_memory(self, cube_id: str) -> list[Memory]:
        """The cube's WorkingMemory, most relevant first (as the last replace ordered it)."""
        flt = MemoryFilter(memory_types=("WorkingMemory",), include_archived=True)
        found: list[Memory] = []
        after = 0
        while True:
            page, after = self.graph.list_memories(cube_id, flt, MAX_PAGE_SIZE, after)
            found.extend(page)
            if not after:
                break
        return sorted(found, key=lambda m: (m.info.get("working_memory_rank", 0), m.created_at))

    def replace_working_memory(
        self, cube_id: str, user_id: str, memory_ids: Sequence[str], request_id: str = ""
    ) -> tuple[list[Memory], int]:
        """Makes the cube's WorkingMemory copies of ``memory_ids`` (bounded by the capacity).

        The copies are stored before the previous set is deleted: a concurrent search sees
        the old set, then both, then the new one, never none. Ids that no longer exist (or
        that are themselves working memories) are skipped.
        """
        self.check_cube_id(cube_id)
        if len(memory_ids) > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"at most {MAX_PAGE_SIZE} memory ids",
                reason="TOO_MANY_MEMORY_IDS",
                metadata={"limit": str(MAX_PAGE_SIZE)},
            )
        replay = self._replay(cube_id, request_id)
        if replay is not None:
            return replay.memories, 0
        previous = self.working_memory(cube_id)
        wanted = list(dict.fromkeys(i for i in memory_ids if i))
        originals = self.graph.get_memories(cube_id, wanted)
        now = time.time()
        copies: list[Memory] = []
        for mid in wanted:
            m = originals.get(mid)
            if m is None or m.memory_type == "WorkingMemory":
                continue
            copies.append(
                Memory(
                    id=uuid.uuid4().hex,
                    cube_id=cube_id,
                    memory=m.memory,
                    user_id=user_id or m.user_id,
                    session_id=m.session_id,
                    memory_type="WorkingMemory",
                    key=m.key,
                    tags=list(m.tags),
                    sources=list(m.sources),
                    background=m.background,
                    confidence=m.confidence,
                    info={**m.info, WORKING_COPY_OF: m.id, "working_memory_rank": len(copies)},
                    created_at=now,
                    updated_at=now,
                    event_time=m.event_time,
                )
            )
            if len(copies) == self.working_memory_capacity:
                break
        stored = self._store(cube_id, copies, [], request_id).memories if copies else []
        if previous:
            self.delete_memories(cube_id, [m.id for m in previous])
        return stored, len(previous)

    def _delete_vectors(self, cube_id: str, ids: list[str]) -> None:
        try:
            self.vectors.delete(cube_id, ids)
        except Unavailable:
            log.error("vectors of deleted memories remain; search cannot return them", extra={"cube_id": cube_id})

    # reads ----------------------------------------------------------------------
    def check_search(self, query: str, top_k: int, flt: MemoryFilter) -> int:
        """Validates a search's arguments; returns the effective top_k."""
        if not query.strip():
            raise InvalidArgument("query must not be empty", reason="EMPTY_QUERY", metadata={"field": "query"})
        if len(query) > self.max_text_chars:
            raise InvalidArgument("query is too long", reason="QUERY_TOO_LONG")
        top_k = top_k or 10
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(
                f"top_k must be between 1 and {MAX_TOP_K}",
                reason="TOP_K_OUT_OF_RANGE",
                metadata={"field": "top_k", "max": str(MAX_TOP_K)},
            )
        self.check_filter(flt)
        return top_k

    @staticmethod
    def candidate_depth(top_k: int, flt: MemoryFilter) -> int:
        # Tag filters are applied after hydration, so fetch more candidates when they are set.
        return top_k * (3 if not flt.tags else 10)

    def dense_candidates(
        self, cube_ids: Sequence[str], query: str, top_k: int, flt: MemoryFilter
    ) -> dict[str, list[tuple[str, float]]]:
        """Dense candidates of every cube from one vector-store call (one query embedding)."""
        if not self.recipe.dense:
            return {c: [] for c in cube_ids}
        qvec: np.ndarray = self._queries.get(query)
        depth = self.candidate_depth(top_k, flt)
        if len(cube_ids) == 1:
            return {cube_ids[0]: self.vectors.search(cube_ids[0], qvec, flt, depth)}
        # What each cube can return at most, so that small cubes are not searched a second time.
        available = {c: self.graph.count(c, flt) for c in cube_ids}
        return self.vectors.search_many(cube_ids, qvec, flt, depth, available)

    def rank_candidates(
        self,
        cube_id: str,
        query: str,
        flt: MemoryFilter,
        depth: int,
        dense: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
    ) -> tuple[list[tuple[str, float]], dict[str, Memory]]:
        """Fuses the candidates and applies the recipe's signals; returns the ranking and the
        hydrated memories it names (neighbours that do not pass the filter are dropped)."""
        recipe = self.recipe
        fused = rrf_fuse([[i for i, _ in dense], [i for i, _ in lexical]], k=recipe.rrf_k)[:depth]
        scores = dict(fused)
        if recipe.neighbour_weight > 0:
            seeds = fused[: recipe.neighbour_seeds]
            links = {mid: self.graph.neighbours(cube_id, mid, "FOLLOWS") for mid, _ in seeds}
            scores = spread_to_neighbours(
                seeds, lambda mid: links.get(mid, ()), recipe.neighbour_weight, recipe.neighbour_seeds
            )
            for mid, score in fused[recipe.neighbour_seeds :]:
                scores[mid] = scores.get(mid, 0.0) + score
        hydrated = self.graph.get_memories(cube_id, list(scores))
        candidates = set(i for i, _ in fused)
        for mid in list(scores):
            m = hydrated.get(mid)
            # Neighbours come from the graph, not from a filtered search: check them in full.
            if m is None or (mid not in candidates and not _in_filter(m, flt)):
                scores.pop(mid)
        if recipe.speaker_boost > 0:
            speakers = {mid: speakers_of(hydrated[mid].memory) for mid in scores}
            named = named_speakers(query, set().union(*speakers.values()) if speakers else set())
            if len(named) == 1:
                boost(scores, [mid for mid, who in speakers.items() if who & named], recipe.speaker_boost)
        if recipe.temporal_boost > 0:
            if asks_when(query):
                boost(scores, [mid for mid in scores if says_when(_own_text(hydrated[mid]))], recipe.temporal_boost)
            periods = named_periods(query)
            if periods:
                boost(scores, [mid for mid in scores if _happened_in(hydrated[mid], periods)], recipe.temporal_boost)
        return ranked(scores), hydrated

    def finish_search(
        self, cube_id: str, query: str, top_k: int, flt: MemoryFilter, dense: list[tuple[str, float]]
    ) -> tuple[list[tuple[Memory, float]], int]:
        """One cube's lexical candidates, fused with its dense ones, re-ranked by the recipe and
        hydrated from the graph."""
        depth = self.candidate_depth(top_k, flt)
        lexical = self.graph.search_lexical(cube_id, query, flt, depth) if self.recipe.lexical else []
        fused, hydrated = self.rank_candidates(cube_id, query, flt, depth, dense, lexical)
        results: list[tuple[Memory, float]] = []
        position: dict[str, int] = {}  # original memory id -> index in results
        for mid, score in fused:
            m = hydrated.get(mid)
            if m is None or not _matches(m, flt):
                continue
            is_copy = m.memory_type == "WorkingMemory" and WORKING_COPY_OF in m.info
            origin = str(m.info[WORKING_COPY_OF]) if is_copy else m.id
            if origin in position:
                # A working copy and its original both matched: keep one, the working copy.
                i = position[origin]
                if is_copy:
                    results[i] = (m, max(score, results[i][1]))
                continue
            position[origin] = len(results)
            results.append((m, score))
            if len(results) == top_k:
                break
        # Working memory first: what the scheduler judged relevant to the recent queries.
        results.sort(key=lambda r: r[0].memory_type != "WorkingMemory")
        return results, self.graph.count(cube_id, flt)

    def search(self, cube_id: str, query: str, top_k: int, flt: MemoryFilter) -> tuple[list[tuple[Memory, float]], int]:
        """Hybrid search of one cube: dense + lexical, fused by reciprocal rank."""
        self.check_cube_id(cube_id)
        top_k = self.check_search(query, top_k, flt)
        dense = self.dense_candidates([cube_id], query, top_k, flt)[cube_id]
        return self.finish_search(cube_id, query, top_k, flt, dense)

    def get(self, cube_id: str, memory_id: str) -> Memory:
        self.check_cube_id(cube_id)
        m = self.graph.get_memories(cube_id, [memory_id]).get(memory_id)
        if m is None:
            raise NotFound(
                f"memory {memory_id!r} not found in cube", reason="MEMORY_NOT_FOUND", metadata={"memory_id": memory_id}
            )
        return m

    def list(self, cube_id: str, flt: MemoryFilter, page_size: int, after: int) -> tuple[list[Memory], int]:
        self.check_cube_id(cube_id)
        self.check_filter(flt)
        page_size = page_size or 100
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}", reason="PAGE_SIZE_OUT_OF_RANGE")
        return self.graph.list_memories(cube_id, flt, page_size, after)

    # cubes ------------------------------------------------------------------------
    def ensure_cube(self, cube_id: str, user_id: str) -> tuple[Cube, bool]:
        self.check_cube_id(cube_id)
        if not user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID")
        cube = self.graph.get_cube(cube_id)
        if cube is not None:
            return cube, False
        try:
            return self.graph.create_cube(Cube(cube_id, user_id, cube_id)), True
        except AlreadyExists:
            cube = self.graph.get_cube(cube_id)
            assert cube is not None
            return cube, False

    def create_cube(self, cube_id: str, owner_id: str, name: str) -> Cube:
        self.check_cube_id(cube_id)
        if not owner_id:
            raise InvalidArgument("owner_id is required", reason="MISSING_USER_ID")
        return self.graph.create_cube(Cube(cube_id, owner_id, name or cube_id))

    def get_cube(self, cube_id: str) -> Cube:
        self.check_cube_id(cube_id)
        cube = self.graph.get_cube(cube_id)
        if cube is None:
            raise NotFound(f"cube {cube_id!r} not found", reason="CUBE_NOT_FOUND", metadata={"cube_id": cube_id})
        return cube

    def set_access(self, cube_id: str, owner_id: str, user_id: str, role: str) -> Cube:
        cube = self.get_cube(cube_id)
        if cube.owner_id != owner_id:
            raise PermissionDenied("only the cube's owner can change who may use it", reason="NOT_CUBE_OWNER")
        if not user_id:
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID")
        if user_id == owner_id:
            raise InvalidArgument("the owner's own access cannot be changed", reason="OWNER_ACCESS")
        if role not in ("", "reader", "writer"):
            raise InvalidArgument("role must be reader, writer or none", reason="UNKNOWN_ROLE")
        return self.graph.set_member(cube_id, user_id, role)

    def delete_cube(self, cube_id: str, owner_id: str) -> int:
        cube = self.get_cube(cube_id)
        if cube.owner_id != owner_id:
            raise PermissionDenied("only the cube's owner can delete it", reason="NOT_CUBE_OWNER")
        n = self.delete_all(cube_id)
        self.graph.delete_cube(cube_id)
        return n


def conversation_edges(cube_id: str, memories: Sequence[Memory]) -> list[Edge]:
    """FOLLOWS edges between consecutive memories made from one conversation's turns (in the
    order given), as fast-mode adds link their windows: what neighbour expansion follows."""

    def first_turn(m: Memory) -> int | None:
        turns = [s.message_index for s in m.sources if s.type == "chat"]
        return min(turns) if turns else None

    edges = []
    for a, b in zip(memories, memories[1:], strict=False):
        ta, tb = first_turn(a), first_turn(b)
        if ta is not None and tb is not None and ta <= tb and a.session_id == b.session_id:
            edges.append(Edge(cube_id, a.id, b.id, "FOLLOWS"))
    return edges


def _own_text(m: Memory) -> str:
    """What the memory's messages said, without the time stamps rendered into its text."""
    said = [s.content for s in m.sources if s.type == "chat" and s.content]
    return "\n".join(said) if said else m.memory


def _happened_in(m: Memory, periods: Sequence[tuple[float, float]]) -> bool:
    times = [s.chat_time for s in m.sources if s.chat_time is not None]
    if m.event_time is not None:
        times.append(m.event_time)
    return any(in_periods(t, periods) for t in times)


def _in_filter(m: Memory, flt: MemoryFilter) -> bool:
    """Every filter field, for memories that did not come from a filtered store search."""
    if m.memory_type not in flt.types() or m.status not in flt.statuses():
        return False
    if flt.user_id and m.user_id != flt.user_id:
        return False
    if flt.session_id and m.session_id != flt.session_id:
        return False
    return _matches(m, flt)


def _matches(m: Memory, flt: MemoryFilter) -> bool:
    """The graph's record is authoritative: recheck what the vector index filtered approximately."""
    if flt.created_after is not None and m.created_at < flt.created_after:
        return False
    if flt.created_before is not None and m.created_at >= flt.created_before:
        return False
    return all(t in m.tags for t in flt.tags)
