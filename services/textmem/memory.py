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
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from services.textmem import conflicts as conflict_rules
from services.textmem import dedupe as dedupe_rules
from services.textmem.embedders import Embedder, QueryCache
from services.textmem.models import MEMORY_TYPES, STATUSES, ChatMessage, Cube, Edge, Memory, MemoryFilter
from services.textmem.quota import CubeQuota, CubeUsage, update_growth
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
    session_spread,
    speakers_of,
    spread_to_neighbours,
)
from services.textmem.rerank import pool_bm25, query_terms
from services.textmem.stores.graph import GraphStore
from services.textmem.stores.vector import VectorRecord, VectorStore
from services.textmem.windowing import build_window_memories
from shared.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    MemosError,
    NotFound,
    PermissionDenied,
    Unavailable,
)

log = logging.getLogger(__name__)

__all__ = ["RRF_K", "AddResult", "TextMemory", "rrf_fuse"]

MAX_TOP_K = 100
MAX_PAGE_SIZE = 1000
# Memories a delete by filter removes per graph transaction (and vector-store call).
DELETE_BATCH = 500
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


# The write-ahead mark of a change to a whole cube (delete_all).
WHOLE_CUBE = "*"


@dataclass
class WriteMarks:
    """Set keep when the change could not finish: the marks stay for the repair."""

    keep: bool = False


@dataclass
class VectorRepair:
    """What repair_vector_writes did."""

    vectors_removed: int = 0
    vectors_rewritten: int = 0
    cubes_cleared: int = 0


@dataclass
class AddResult:
    memories: list[Memory]
    replayed: bool = False
    # Among memories: those that existed before the add and got some of its content (dedupe).
    merged_ids: list[str] = field(default_factory=list)
    # Memories the add archived: a newer fact contradicted them (conflicts.py). Existing ones, or
    # new ones of this add that an existing newer fact contradicted. Not recorded for a replay.
    archived_ids: list[str] = field(default_factory=list)
    # What the caller should know that did not fail the add (e.g. conflict resolution skipped).
    notices: list[str] = field(default_factory=list)


@dataclass
class UserDataDeletion:
    """What erasing a user removed."""

    deleted_memories: int = 0
    deleted_cube_ids: list[str] = field(default_factory=list)
    cleaned_cube_ids: list[str] = field(default_factory=list)
    revoked_cube_ids: list[str] = field(default_factory=list)


class SearchReads:
    """What one cube's search has read from the graph: memories in full or without their
    sources, and FOLLOWS links. A search fills part of it ahead, from its full-text candidates
    while the query is embedded (the embedding releases the GIL, so the other core reads), and
    ranking reads only what is still missing. Used by one thread at a time."""

    def __init__(self, graph: GraphStore, cube_id: str) -> None:
        self._graph = graph
        self._cube_id = cube_id
        self.full: dict[str, Memory] = {}
        self.lean: dict[str, Memory] = {}
        self.links: dict[str, list[str]] = {}

    def memories(self, ids: Sequence[str], with_sources: bool = True) -> dict[str, Memory]:
        """The cube's memories among ``ids``, read once per search (a full read serves both)."""
        wanted = list(dict.fromkeys(ids))
        need = [i for i in wanted if i not in self.full and (with_sources or i not in self.lean)]
        if need:
            got = self._graph.get_memories(self._cube_id, need, with_sources=with_sources, shared=True)
            (self.full if with_sources else self.lean).update(got)
        out: dict[str, Memory] = {}
        for i in wanted:
            m = self.full.get(i) if with_sources else self.full.get(i) or self.lean.get(i)
            if m is not None:
                out[i] = m
        return out

    def expand(self, seeds: Sequence[str], hops: int) -> set[str]:
        """Reads the links of ``seeds`` and ``hops - 1`` rings beyond, one store round trip per
        hop (one per memory cost ~0.25 ms each: ~20 ms a search at 30 seeds and 2 hops);
        returns every memory reached."""
        frontier = list(seeds)
        reached: set[str] = set()
        for _ in range(max(hops, 1)):
            todo = [mid for mid in dict.fromkeys(frontier) if mid not in self.links]
            if todo:
                self.links.update(self._graph.neighbours_many(self._cube_id, todo, "FOLLOWS"))
            frontier = [other for mid in dict.fromkeys(frontier) for other in self.links[mid]]
            reached.update(frontier)
        return reached

    def neighbours(self, memory_id: str) -> list[str]:
        if memory_id not in self.links:
            self.links[memory_id] = self._graph.neighbours(self._cube_id, memory_id, "FOLLOWS")
        return self.links[memory_id]


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
        dedupe: bool = True,
        dedupe_threshold: float = dedupe_rules.DEFAULT_THRESHOLD,
        max_memories_per_cube: int = 0,
        max_bytes_per_cube: int = 0,
        conflicts: conflict_rules.ConflictJudge | None = None,
        fanout_threads: int = 2,
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
        # Adds (fast-mode windows, written candidates) merge repeats of live memories (dedupe.py).
        self.dedupe = dedupe
        self.dedupe_threshold = dedupe_threshold
        # Per-cube quotas (quota.py; 0: none), checked by the graph store in each write's transaction.
        self.quota = CubeQuota(max_memories_per_cube, max_bytes_per_cube)
        # With an LLM, adds that dedupe stores anew archive the live memories they contradict.
        self.conflicts = conflicts
        self._lexical_pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="textmem-lexical")
        # A multi-cube search works through its cubes in this many threads (search_cubes).
        self.fanout_threads = max(1, fanout_threads)
        self._fanout_pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="textmem-fanout")

    def close(self) -> None:
        self._fanout_pool.shutdown(wait=True)
        self._lexical_pool.shutdown(wait=True)
        # The vectors first: closing them joins their threads, and the index prewarm reads the
        # graph (closing its SQLite connection under a running query crashed the process).
        self.vectors.close()
        self.graph.close()

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
        merged = self.graph.merged_ids_for_request(cube_id, request_id)
        return AddResult([found[i] for i in ids if i in found], replayed=True, merged_ids=merged)

    def _check_quota(self, cube_id: str, memories: Sequence[Memory]) -> None:
        """Refuses an add past the cube's quota before it is embedded and its vectors written.
        Advisory: the graph store checks again in the write's transaction, which concurrent adds
        cannot both pass."""
        if self.quota.enabled:
            adding = CubeUsage.of(memories)
            if adding.memories:
                self.quota.check(cube_id, self.graph.cube_usage(cube_id), adding)

    def _store(
        self, cube_id: str, memories: list[Memory], edges: list[Edge], request_id: str, dedupe: bool = False
    ) -> AddResult:
        if not memories:
            return AddResult([])
        if dedupe:
            return self._store_deduped(cube_id, memories, edges, request_id)
        self._check_quota(cube_id, memories)
        vectors = self.embedder.embed([m.memory for m in memories])
        records = [
            VectorRecord(m.id, m.cube_id, m.user_id, m.session_id, m.memory_type, m.status, m.created_at, v)
            for m, v in zip(memories, vectors, strict=True)
        ]
        with self._vector_writes(cube_id, [m.id for m in memories]):
            return self._store_records(cube_id, memories, edges, request_id, records)

    def _store_records(
        self, cube_id: str, memories: list[Memory], edges: list[Edge], request_id: str, records: list[VectorRecord]
    ) -> AddResult:
        self.vectors.upsert(records)
        try:
            self.graph.insert_memories(cube_id, memories, edges, request_id=request_id, quota=self.quota)
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

    def _store_deduped(self, cube_id: str, memories: list[Memory], edges: list[Edge], request_id: str) -> AddResult:
        """Like :meth:`_store`, but repeats of the cube's live memories (and of each other) are
        merged into them instead of stored anew (``dedupe.py``)."""
        embedded: dict[str, np.ndarray] = {}

        def embed(texts: list[str]) -> np.ndarray:
            missing = list(dict.fromkeys(t for t in texts if t not in embedded))
            if missing:
                embedded.update(zip(missing, self.embedder.embed(missing), strict=True))
            return np.stack([embedded[t] for t in texts])

        # With an LLM: asked once per add, its verdicts kept across the retried plans below.
        step = conflict_rules.ConflictStep(self.conflicts) if self.conflicts is not None else None
        attempts = 3
        for attempt in range(attempts):
            plan = dedupe_rules.plan_add(cube_id, memories, self.graph, self.vectors, embed, self.dedupe_threshold)
            # Only what the add stores anew counts: a re-add merged into existing memories passes.
            self._check_quota(cube_id, plan.new)
            resolution = self._resolve_conflicts(step, cube_id, plan)
            records = [
                VectorRecord(m.id, m.cube_id, m.user_id, m.session_id, m.memory_type, m.status, m.created_at, v)
                for m, v in zip(plan.new, plan.new_vectors, strict=True)
            ]
            archiving, restoring = self._archive_records(cube_id, resolution)

            def undo(new: list[Memory] = plan.new, restore: list[VectorRecord] = restoring) -> None:
                self._undo_vectors(cube_id, new)
                self._restore_vectors(cube_id, restore)

            try:
                with self._vector_writes(cube_id, [m.id for m in plan.new] + [r.id for r in archiving]):
                    if records or archiving:
                        self.vectors.upsert(records + archiving)
                    self.graph.insert_memories(
                        cube_id,
                        plan.new,
                        plan.edges(memories, edges) + resolution.edge_list(cube_id),
                        request_id=request_id,
                        merges=plan.merges,
                        result_ids=plan.result_ids,
                        quota=self.quota,
                        archives=resolution.archives,
                        unique_texts=True,
                    )
            except AlreadyExists:
                # A concurrent retry of the same request won the race: undo ours, return theirs.
                undo()
                replay = self._replay(cube_id, request_id)
                if replay is None:
                    raise
                return replay
            except NotFound as exc:
                # A merge target was deleted or archived since the plan, or a memory to archive
                # is no longer live: plan again (the LLM's verdicts are kept).
                undo()
                if exc.reason not in ("MERGE_TARGET_GONE", "ARCHIVE_TARGET_GONE") or attempt == attempts - 1:
                    raise
                continue
            except Aborted as exc:
                # A racing add stored one of these texts first: plan again, merging into it.
                undo()
                if exc.reason != "TEXT_ADDED_MEANWHILE" or attempt == attempts - 1:
                    raise
                continue
            except BaseException:
                undo()
                raise
            break
        targets = self.graph.get_memories(cube_id, plan.merged_ids) if plan.merges else {}
        new = {m.id: m for m in plan.new}
        stored = [new.get(i) or targets.get(i) for i in plan.result_ids]
        return AddResult(
            [m for m in stored if m is not None],
            merged_ids=plan.merged_ids,
            archived_ids=resolution.archived_ids,
            notices=resolution.notices,
        )

    def _resolve_conflicts(
        self, step: conflict_rules.ConflictStep | None, cube_id: str, plan: dedupe_rules.Plan
    ) -> conflict_rules.Resolution:
        """Which memories the add archives (conflicts.py); marks the new ones that lose archived."""
        if step is None or not plan.new:
            return conflict_rules.Resolution()

        def skipped(exc: MemosError) -> None:
            log.warning(
                "conflict resolution skipped; the add is stored without it",
                extra={"cube_id": cube_id, "reason": exc.reason, "error": exc.message},
            )

        resolution = step.resolve(
            cube_id,
            plan.new,
            plan.new_vectors,
            self.graph,
            self.vectors,
            self.dedupe_threshold,
            exclude=set(plan.merged_ids),
            on_skip=skipped,
        )
        for m in plan.new:
            winner = resolution.archived_new.get(m.id)
            if winner is not None:
                m.status = "archived"
                m.info[conflict_rules.SUPERSEDED_BY_KEY] = winner
        return resolution

    def _archive_records(
        self, cube_id: str, resolution: conflict_rules.Resolution
    ) -> tuple[list[VectorRecord], list[VectorRecord]]:
        """The vector records of the existing memories an add archives: as archived (search
        filters vectors by status), and as they are now (to put back if the add fails)."""
        if not resolution.archives:
            return [], []
        ids = [a.memory_id for a in resolution.archives]
        found = self.vectors.get_vectors(cube_id, ids)
        olds = [resolution.losers[i] for i in ids]
        missing = [m for m in olds if m.id not in found]
        if missing:
            found.update(zip([m.id for m in missing], self.embedder.embed([m.memory for m in missing]), strict=True))
        archiving, restoring = [], []
        for m in olds:
            for status, out in (("archived", archiving), (m.status, restoring)):
                out.append(
                    VectorRecord(
                        m.id, cube_id, m.user_id, m.session_id, m.memory_type, status, m.created_at, found[m.id]
                    )
                )
        return archiving, restoring

    def _restore_vectors(self, cube_id: str, records: list[VectorRecord]) -> None:
        if not records:
            return
        try:
            self.vectors.upsert(records)
        except MemosError:
            # The write-ahead marks stay (the add failed): the repair rewrites them from the graph.
            log.error("could not restore the vectors of memories a failed add archived", extra={"cube_id": cube_id})

    @contextmanager
    def _vector_writes(self, cube_id: str, ids: Sequence[str]) -> Iterator[WriteMarks]:
        """Write-ahead marks around a change that touches both stores.

        The graph store notes the ids first; the mark is cleared once both stores agree. A
        process killed in between leaves the mark, and :meth:`repair_vector_writes` (run at start
        and periodically) makes those vectors agree with the graph. A failed change keeps its
        mark too: it undid itself, or the repair finishes the undo. If the graph store cannot
        even take the mark, nothing is written and the caller gets its UNAVAILABLE."""
        ids = list(dict.fromkeys(ids))
        marks = WriteMarks()
        if not ids:
            yield marks
            return
        self.graph.mark_vector_writes(cube_id, ids)
        yield marks
        if marks.keep:
            return
        try:
            self.graph.clear_vector_writes(cube_id, ids)
        except MemosError:
            log.warning("could not clear write marks; the repair will", extra={"cube_id": cube_id, "count": len(ids)})

    def repair_vector_writes(self, older_than_s: float, batch: int = 500) -> VectorRepair:
        """Makes the vectors of marked writes older than ``older_than_s`` agree with the graph:
        a memory the graph has gets its vector rewritten from its text; one it lacks loses its
        vector; a cube marked as cleared whose graph is empty loses all its vectors. Then the
        marks go. Idempotent; a mark younger than the grace may belong to a write in progress
        (in this or another replica) and is left alone."""
        report = VectorRepair()
        before = time.time() - older_than_s
        while True:
            marks = self.graph.pending_vector_writes(before, batch)
            by_cube: dict[str, list[str]] = {}
            for cube_id, memory_id in marks:
                by_cube.setdefault(cube_id, []).append(memory_id)
            for cube_id, ids in by_cube.items():
                if WHOLE_CUBE in ids and self.graph.count(cube_id) == 0:
                    self.vectors.delete_cube(cube_id)
                    report.cubes_cleared += 1
                memory_ids = [i for i in ids if i != WHOLE_CUBE]
                present = self.graph.get_memories(cube_id, memory_ids) if memory_ids else {}
                gone = [i for i in memory_ids if i not in present]
                if gone:
                    self.vectors.delete(cube_id, gone)
                if present:
                    kept = list(present.values())
                    vectors = self.embedder.embed([m.memory for m in kept])
                    self.vectors.upsert(
                        [
                            VectorRecord(
                                m.id, cube_id, m.user_id, m.session_id, m.memory_type, m.status, m.created_at, v
                            )
                            for m, v in zip(kept, vectors, strict=True)
                        ]
                    )
                self.graph.clear_vector_writes(cube_id, ids)
                report.vectors_removed += len(gone)
                report.vectors_rewritten += len(present)
            if len(marks) < batch:
                return report

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
        return self._store(cube_id, memories, edges, request_id, dedupe=self.dedupe)

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
        return self._store(cube_id, candidates, conversation_edges(cube_id, candidates), request_id, dedupe=self.dedupe)

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
        if self.quota.enabled:
            # Before the embedding; the graph store checks again in the update's transaction.
            growth = update_growth(current.memory_type, current.memory, new)
            self.quota.check(cube_id, self.graph.cube_usage(cube_id), growth)
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
        with self._vector_writes(cube_id, [memory_id]):
            self._write_update(cube_id, current, new, vector, record)
        return new

    def _write_update(
        self, cube_id: str, current: Memory, new: Memory, vector: np.ndarray, record: VectorRecord
    ) -> None:
        self.vectors.upsert([record])
        try:
            self.graph.update_memory(new, quota=self.quota)
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
        with self._vector_writes(cube_id, ids) as marks:
            deleted = self.graph.delete_memories(cube_id, ids)
            marks.keep = not self._delete_vectors(cube_id, deleted)
        self._drop_copies_of(cube_id, deleted)
        return len(deleted)

    def delete_selected(
        self,
        cube_id: str,
        *,
        ids: Sequence[str] = (),
        whole_cube: bool = False,
        flt: MemoryFilter | None = None,
        dry_run: bool = False,
        rolled_back_request_id: str = "",
    ) -> int:
        """Deletes by exactly one selector (ids, all, or a filter that narrows); with ``dry_run``
        only counts what would go. Returns the count. ``rolled_back_request_id`` (with ids): the
        add that wrote them is being undone, so its idempotency record goes first; a retry of it
        then writes again rather than replaying ids that are gone. (Record first: if the delete
        then fails, a retry writes the same texts again, which dedupe merges.)"""
        self.check_cube_id(cube_id)
        if rolled_back_request_id:
            if not ids or whole_cube or flt is not None:
                raise InvalidArgument(
                    "rolled_back_request_id goes with memory_ids only",
                    reason="CONFLICTING_SELECTORS",
                    metadata={"field": "rolled_back_request_id"},
                )
            if not dry_run:
                self.graph.forget_request(cube_id, rolled_back_request_id)
        chosen = [
            name for name, on in (("memory_ids", bool(ids)), ("all", whole_cube), ("filter", flt is not None)) if on
        ]
        if len(chosen) != 1:
            raise InvalidArgument(
                "set exactly one of memory_ids, filter and all"
                + (f" (got {', '.join(chosen)})" if chosen else " (got none)"),
                reason="CONFLICTING_SELECTORS" if chosen else "NO_SELECTOR",
            )
        if flt is not None:
            self.check_filter(flt)
            if not flt.narrows():
                raise InvalidArgument(
                    "the filter narrows nothing; set all to delete every memory of the cube",
                    reason="EMPTY_FILTER",
                    metadata={"field": "filter"},
                )
            return self.graph.count(cube_id, flt) if dry_run else self.delete_matching(cube_id, flt)
        if whole_cube:
            return self.graph.count(cube_id) if dry_run else self.delete_all(cube_id)
        return len(self.graph.get_memories(cube_id, ids)) if dry_run else self.delete_memories(cube_id, ids)

    def delete_matching(self, cube_id: str, flt: MemoryFilter) -> int:
        """Deletes the memories ``list`` would list with ``flt``, a batch at a time (bounded memory).

        Each batch leaves the graph before its vectors go: a search hydrates from the graph, so a
        crash between the two leaves orphan vectors that nothing returns, never a findable memory.
        """
        total = 0
        while True:
            # The batch's ids are marked before the graph lets them go, so that a crash between
            # the two stores leaves a mark the repair follows (see repair_vector_writes).
            page, _ = self.graph.list_memories(cube_id, flt, DELETE_BATCH, 0)
            ids = [m.id for m in page]
            if not ids:
                return total
            with self._vector_writes(cube_id, ids) as marks:
                deleted = self.graph.delete_memories(cube_id, ids)
                marks.keep = not self._delete_vectors(cube_id, deleted)
            self._drop_copies_of(cube_id, deleted)
            total += len(deleted)
            if len(page) < DELETE_BATCH:
                return total

    def _drop_copies_of(self, cube_id: str, deleted: Sequence[str]) -> None:
        """Working-memory copies of deleted memories go with them (a copy repeats the text)."""
        if not deleted:
            return
        gone = set(deleted)
        copies = [m.id for m in self.working_memory(cube_id) if str(m.info.get(WORKING_COPY_OF, "")) in gone]
        if copies:
            with self._vector_writes(cube_id, copies) as marks:
                marks.keep = not self._delete_vectors(cube_id, self.graph.delete_memories(cube_id, copies))

    def delete_user_data(self, user_id: str) -> UserDataDeletion:
        """Erases a user: the cubes they own (every memory in them), their memories in every other
        cube (of any type or status, whatever their access there now), and their access to other
        users' cubes. Idempotent: a second run finds nothing left."""
        if not user_id or not user_id.strip():
            raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
        out = UserDataDeletion()
        cubes = self.graph.list_cubes(user_id)
        owned = {c.cube_id for c in cubes if c.owner_id == user_id}
        everything = MemoryFilter(memory_types=MEMORY_TYPES, user_id=user_id, include_archived=True)
        for cube_id in self.graph.user_memory_cubes(user_id):
            if cube_id in owned:
                continue
            n = self.delete_matching(cube_id, everything)
            if n:
                out.cleaned_cube_ids.append(cube_id)
                out.deleted_memories += n
        for cube in cubes:
            if cube.cube_id not in owned and user_id in cube.members:
                self.graph.set_member(cube.cube_id, user_id, "")
                out.revoked_cube_ids.append(cube.cube_id)
        for cube_id in sorted(owned):
            out.deleted_memories += self.delete_all(cube_id)
            self.graph.delete_cube(cube_id)
            out.deleted_cube_ids.append(cube_id)
        log.info(
            "user data deleted",
            extra={
                "deleted_memories": out.deleted_memories,
                "deleted_cubes": len(out.deleted_cube_ids),
                "cleaned_cubes": len(out.cleaned_cube_ids),
                "revoked_cubes": len(out.revoked_cube_ids),
            },
        )
        return out

    def delete_all(self, cube_id: str) -> int:
        self.check_cube_id(cube_id)
        with self._vector_writes(cube_id, [WHOLE_CUBE]) as marks:
            deleted = self.graph.delete_cube_memories(cube_id)
            try:
                self.vectors.delete_cube(cube_id)
            except Unavailable:
                # Nothing can find them (search hydrates from the graph); the kept mark has the
                # repair remove them once the vector store is back.
                log.error("vectors of a cleared cube remain until the repair", extra={"cube_id": cube_id})
                marks.keep = True
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

    def _delete_vectors(self, cube_id: str, ids: list[str]) -> bool:
        """Deletes the vectors; False when the vector store failed (the caller keeps its marks)."""
        try:
            self.vectors.delete(cube_id, ids)
        except Unavailable:
            log.error("vectors of deleted memories remain until the repair", extra={"cube_id": cube_id})
            return False
        return True

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
        # What a cube can return at most, so that a small cube is not searched a second time.
        return self.vectors.search_many(cube_ids, qvec, flt, depth, lambda c: self.graph.count(c, flt))

    def rank_candidates(
        self,
        cube_id: str,
        query: str,
        flt: MemoryFilter,
        depth: int,
        dense: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
        reads: SearchReads | None = None,
    ) -> tuple[list[tuple[str, float]], dict[str, Memory]]:
        """Fuses the candidates and applies the recipe's signals; returns the ranking and the
        hydrated memories it names (neighbours that do not pass the filter are dropped).
        ``reads``: what :meth:`prefetch` already read for this search."""
        recipe = self.recipe
        reads = reads or SearchReads(self.graph, cube_id)
        fused = rrf_fuse([[i for i, _ in dense], [i for i, _ in lexical]], k=recipe.rrf_k)[:depth]
        hydrated: dict[str, Memory] = {}

        def speakers_of_memory(mid: str) -> frozenset[str]:
            return speakers_of(hydrated[mid].memory)  # cached per text

        if recipe.lexical_rescore and recipe.lexical and fused:
            # Stemmed BM25 over the fused candidates' own words replaces the store's ranking.
            hydrated = reads.memories([i for i, _ in fused])
            if recipe.for_windows and _mostly_windows(hydrated.values()):
                recipe = RECIPES[recipe.for_windows]
            names = set().union(*(speakers_of_memory(mid) for mid in hydrated))
            rescored = pool_bm25(query_terms(query, names), {i: _own_text(m) for i, m in hydrated.items()})
            dense_ids = [i for i, _ in dense if i in hydrated]
            fused = rrf_fuse([dense_ids, [i for i, _ in rescored]], k=recipe.rrf_k)[:depth]
        scores = dict(fused)
        if recipe.neighbour_weight > 0:
            seeds = fused[: recipe.neighbour_seeds]
            reads.expand([mid for mid, _ in seeds], recipe.neighbour_hops)
            scores = spread_to_neighbours(
                seeds,
                reads.neighbours,
                recipe.neighbour_weight,
                recipe.neighbour_seeds,
                hops=recipe.neighbour_hops,
                decay=recipe.neighbour_decay,
            )
            for mid, score in fused[recipe.neighbour_seeds :]:
                scores[mid] = scores.get(mid, 0.0) + score
        missing = [mid for mid in scores if mid not in hydrated]
        if missing:
            hydrated.update(reads.memories(missing, with_sources=self._ranking_reads_sources(query)))
        candidates = set(i for i, _ in fused)
        passes = _filter_test(flt)
        for mid in list(scores):
            m = hydrated.get(mid)
            # Neighbours come from the graph, not from a filtered search: check them in full.
            if m is None or (mid not in candidates and not passes(m)):
                scores.pop(mid)
        if recipe.speaker_boost > 0:
            said_by = {mid: speakers_of(hydrated[mid].memory) for mid in scores}
            named = named_speakers(query, set().union(*said_by.values()) if said_by else set())
            if len(named) == 1:
                boost(scores, [mid for mid, who in said_by.items() if who & named], recipe.speaker_boost)
        if recipe.temporal_boost > 0:
            if asks_when(query):
                boost(scores, [mid for mid in scores if says_when(_own_text(hydrated[mid]))], recipe.temporal_boost)
            periods = named_periods(query)
            if periods:
                boost(scores, [mid for mid in scores if _happened_in(hydrated[mid], periods)], recipe.temporal_boost)
        if recipe.session_boost > 0:
            scores = session_spread(
                scores, lambda mid: hydrated[mid].session_id, recipe.session_boost, recipe.session_seeds
            )
        return ranked(scores), hydrated

    def lexical_candidates(self, cube_id: str, query: str, top_k: int, flt: MemoryFilter) -> list[tuple[str, float]]:
        """One cube's full-text candidates (none when the recipe has no lexical signal)."""
        if not self.recipe.lexical:
            return []
        return self.graph.search_lexical(cube_id, query, flt, self.candidate_depth(top_k, flt))

    def _ranking_reads_sources(self, query: str) -> bool:
        # Neighbours are read without their sources (most of a search's reads, and most of them
        # never make the answer) unless the temporal signals need what the sources say.
        recipe = self.recipe
        return recipe.temporal_boost > 0 and (asks_when(query) or bool(named_periods(query)))

    def prefetch(
        self,
        cube_id: str,
        query: str,
        top_k: int,
        flt: MemoryFilter,
        lexical: list[tuple[str, float]],
        neighbours: bool = True,
    ) -> SearchReads:
        """Reads ahead what ranking will read about the full-text candidates (themselves, their
        links and neighbours), to run while the query is embedded and the vectors searched.
        About half of them end up among the fused candidates; the rest is read for nothing,
        on a core that would otherwise wait. ``neighbours``: read the links and neighbours
        too (only worth it while that core would otherwise wait)."""
        reads = SearchReads(self.graph, cube_id)
        recipe = self.recipe
        ids = [i for i, _ in lexical[: self.candidate_depth(top_k, flt)]]
        if not ids:
            return reads
        if recipe.lexical_rescore:
            reads.memories(ids)
        if recipe.neighbour_weight > 0 and neighbours:
            reached = reads.expand(ids[: recipe.neighbour_seeds], recipe.neighbour_hops)
            reads.memories([i for i in reached if i not in reads.full], with_sources=self._ranking_reads_sources(query))
        return reads

    def lexical_and_prefetch(
        self, cube_id: str, query: str, top_k: int, flt: MemoryFilter, neighbours: bool = True
    ) -> tuple[list[tuple[str, float]], SearchReads]:
        """:meth:`lexical_candidates`, then :meth:`prefetch` of them."""
        lexical = self.lexical_candidates(cube_id, query, top_k, flt)
        return lexical, self.prefetch(cube_id, query, top_k, flt, lexical, neighbours)

    def finish_search(
        self,
        cube_id: str,
        query: str,
        top_k: int,
        flt: MemoryFilter,
        dense: list[tuple[str, float]],
        lexical: list[tuple[str, float]] | None = None,
        reads: SearchReads | None = None,
    ) -> tuple[list[tuple[Memory, float]], int]:
        """One cube's lexical candidates (found here unless given), fused with its dense ones,
        re-ranked by the recipe and hydrated from the graph (``reads``: what was read ahead)."""
        depth = self.candidate_depth(top_k, flt)
        if lexical is None:
            lexical = self.lexical_candidates(cube_id, query, top_k, flt)
        fused, hydrated = self.rank_candidates(cube_id, query, flt, depth, dense, lexical, reads)
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
        # Neighbours that made the answer were read without their sources: read them in full.
        # (A memory with no sources at all is read again too, harmlessly.)
        lean = [m.id for m, _ in results if not m.sources]
        if lean:
            full = self.graph.get_memories(cube_id, lean, shared=True)
            results = [(full.get(m.id, m) if not m.sources else m, score) for m, score in results]
        # Working memory first: what the scheduler judged relevant to the recent queries.
        results.sort(key=lambda r: r[0].memory_type != "WorkingMemory")
        return results, self.graph.count(cube_id, flt)

    def search_cubes(
        self, cube_ids: Sequence[str], query: str, top_k: int, flt: MemoryFilter
    ) -> dict[str, futures.Future[tuple[list[tuple[Memory, float]], int]]]:
        """Searches several cubes (arguments checked by the caller): one query embedding and one
        grouped vector search for all of them, in this thread, while ``fanout_threads`` threads
        read the cubes' full-text candidates; then those threads rank the cubes, each taking the
        next cube that is ready (a slow cube holds one thread, not the cubes behind it). Returns
        once the dense step is done, with a future per cube that holds its answer or its own
        error; a cube whose future is cancelled before its turn is skipped. The dense step's
        error is raised (no cube can be answered without it).

        A few threads, not one a cube: ranking is Python, and the threads of one process take
        turns under the GIL. Eight 500-memory cubes took 140 ms p50 with a thread a cube and
        95-100 ms with two (the same queries in one process, alternated); with Neo4j, whose
        queries wait on the network, more threads overlap those waits."""
        answers: dict[str, futures.Future[tuple[list[tuple[Memory, float]], int]]] = {
            c: futures.Future() for c in cube_ids
        }
        dense_ready: futures.Future[dict[str, list[tuple[str, float]]]] = futures.Future()
        to_read = deque(cube_ids)  # cubes whose full-text candidates nobody has read yet
        to_rank: deque[tuple[str, list[tuple[str, float]], SearchReads]] = deque()  # read, not ranked
        unclaimed = [len(cube_ids)]  # cubes not yet taken to rank (nor failed, nor cancelled)
        turn = threading.Condition()

        def next_job() -> tuple[str, str, list[tuple[str, float]], SearchReads | None] | None:
            with turn:
                while True:
                    if to_read:
                        return "read", to_read.popleft(), [], None
                    if dense_ready.done() and to_rank:
                        unclaimed[0] -= 1
                        return ("rank", *to_rank.popleft())
                    if not unclaimed[0]:
                        return None
                    turn.wait()

        def work() -> None:
            while (job := next_job()) is not None:
                kind, c, hits, reads = job
                if kind == "read":
                    if not answers[c].set_running_or_notify_cancel():
                        result = None
                    else:
                        try:
                            # Neighbours are read ahead only while the dense step runs: after it,
                            # every cube's ranking is waiting for the cores, and half of what
                            # is read ahead is read for nothing (8 x 500 memories: ~10% of the
                            # fan-out's time when the query's embedding was cached).
                            result = self.lexical_and_prefetch(c, query, top_k, flt, not dense_ready.done())
                        except BaseException as exc:  # noqa: BLE001 - this cube's own error
                            answers[c].set_exception(exc)
                            result = None
                    with turn:
                        if result is None:
                            unclaimed[0] -= 1
                        else:
                            to_rank.append((c, *result))
                        turn.notify_all()
                    continue
                try:
                    dense = dense_ready.result()
                    assert reads is not None
                    answers[c].set_result(self.finish_search(c, query, top_k, flt, dense.get(c, []), hits, reads))
                except BaseException as exc:  # noqa: BLE001 - this cube's own error (or the dense step's)
                    answers[c].set_exception(exc)

        for _ in range(min(self.fanout_threads, len(cube_ids))):
            self._fanout_pool.submit(work)
        try:
            dense_ready.set_result(self.dense_candidates(cube_ids, query, top_k, flt))
        except BaseException as exc:
            dense_ready.set_exception(exc)
            raise
        finally:
            with turn:
                turn.notify_all()
        return answers

    def search(self, cube_id: str, query: str, top_k: int, flt: MemoryFilter) -> tuple[list[tuple[Memory, float]], int]:
        """Hybrid search of one cube: dense + lexical, fused by reciprocal rank."""
        self.check_cube_id(cube_id)
        top_k = self.check_search(query, top_k, flt)
        # The full-text query (SQLite or Neo4j) and the query embedding both release the GIL:
        # running them side by side makes a search cost the longer of the two, not their sum.
        lexical = self._lexical_pool.submit(self.lexical_and_prefetch, cube_id, query, top_k, flt)
        try:
            dense = self.dense_candidates([cube_id], query, top_k, flt)[cube_id]
        finally:
            futures.wait([lexical])
        hits, reads = lexical.result()
        return self.finish_search(cube_id, query, top_k, flt, dense, hits, reads)

    def get(self, cube_id: str, memory_id: str) -> Memory:
        self.check_cube_id(cube_id)
        m = self.graph.get_memories(cube_id, [memory_id]).get(memory_id)
        if m is None:
            raise NotFound(
                f"memory {memory_id!r} not found in cube", reason="MEMORY_NOT_FOUND", metadata={"memory_id": memory_id}
            )
        return m

    def get_with_history(self, cube_id: str, memory_id: str) -> tuple[Memory, list[Memory]]:
        """The memory and the versions updates replaced, newest first."""
        m = self.get(cube_id, memory_id)
        return m, self.graph.memory_history(cube_id, memory_id)

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


def _mostly_windows(memories: Iterable[Memory]) -> bool:
    """Most of the memories hold several chat turns each (fast-mode windows, not single turns)."""
    turns = [sum(1 for s in m.sources if s.type == "chat") for m in memories]
    return sum(1 for n in turns if n > 1) * 2 > len(turns)


def _own_text(m: Memory) -> str:
    """What the memory's messages said, without the time stamps rendered into its text."""
    said = [s.content for s in m.sources if s.type == "chat" and s.content]
    return "\n".join(said) if said else m.memory


def _happened_in(m: Memory, periods: Sequence[tuple[float, float]]) -> bool:
    times = [s.chat_time for s in m.sources if s.chat_time is not None]
    if m.event_time is not None:
        times.append(m.event_time)
    return any(in_periods(t, periods) for t in times)


def _filter_test(flt: MemoryFilter) -> Callable[[Memory], bool]:
    """:func:`_in_filter` for one filter, its fixed parts worked out once (ranking checks
    ~70 neighbours a cube; most searches filter on nothing but the default types)."""
    if flt.user_id or flt.session_id or flt.tags or flt.created_after is not None or flt.created_before is not None:
        return lambda m: _in_filter(m, flt)
    types, statuses = frozenset(flt.types()), frozenset(flt.statuses())
    return lambda m: m.memory_type in types and m.status in statuses


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
