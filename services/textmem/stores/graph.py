"""The GraphStore interface: memories, their sources, relations, cubes.

Implementations: :class:`~services.textmem.stores.sqlite_graph.SqliteGraphStore`
(embedded default). Every implementation passes ``tests/conformance``.

Every method that touches memories takes the cube id and never returns or
changes anything of another cube, whatever ids it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.textmem.conflicts import Archive
from services.textmem.dedupe import Merge
from services.textmem.models import Cube, Edge, Memory, MemoryFilter
from services.textmem.quota import CubeQuota, CubeUsage


@dataclass(frozen=True)
class MemoryStats:
    """Counts for metrics: every cube's memories by type, the cubes, the largest cubes."""

    by_type: dict[str, int] = field(default_factory=dict)
    cubes: int = 0
    largest: list[tuple[str, int]] = field(default_factory=list)


class GraphStore(Protocol):
    # memories -------------------------------------------------------------
    def insert_memories(
        self,
        cube_id: str,
        memories: Sequence[Memory],
        edges: Sequence[Edge] = (),
        request_id: str = "",
        merges: Sequence[Merge] = (),
        result_ids: Sequence[str] | None = None,
        quota: CubeQuota | None = None,
        archives: Sequence[Archive] = (),
        unique_texts: bool = False,
    ) -> None:
        """Stores memories, their sources and edges, and applies ``merges`` (dedupe: sources
        appended to existing memories of the cube as :func:`~services.textmem.dedupe.merged_fields`
        says), in one transaction. A merge whose target is absent, archived or a working-memory
        copy raises ``NotFound`` with reason ``MERGE_TARGET_GONE`` and nothing is written.

        ``archives`` (conflict resolution, services/textmem/conflicts.py) sets each named memory's
        status to archived, records ``info["superseded_by"]``, bumps its version and keeps the
        version it replaces in its history, in the same transaction; one that is absent, no longer
        live (activated or resolving) or a working-memory copy raises ``NotFound`` with reason
        ``ARCHIVE_TARGET_GONE`` and nothing is written. Edges are written after the memories and
        archives, so a SUPERSEDES edge to an archived memory is kept.

        With ``quota``, the cube's :meth:`cube_usage` plus the new memories is checked against
        it inside the transaction, with the cube's inserts serialised, so that concurrent inserts
        cannot overshoot it together; past it, ``CubeQuota.check``'s ``ResourceExhausted`` is
        raised and nothing is written.

        With ``unique_texts`` (an add that dedupes), a new live memory whose exact text
        (:func:`~services.textmem.dedupe.text_hash`), type and user a live memory of the cube
        already has (one another add wrote since this one was planned) raises ``Aborted`` with
        reason ``TEXT_ADDED_MEANWHILE`` and nothing is written: the caller plans again and
        merges into it. Checked with the cube's inserts serialised, so that racing adds of one
        fact store it once.

        With ``request_id``, records it with ``result_ids`` (default: the new memories' ids) and
        the merge targets' ids; a second insert with the same (cube, request id) raises
        ``AlreadyExists``. Every memory's :func:`~services.textmem.dedupe.text_hash` is kept, indexed.
        """

    def memory_ids_for_request(self, cube_id: str, request_id: str) -> list[str] | None:
        """Ids written under (cube, request id), or None if never seen."""

    def merged_ids_for_request(self, cube_id: str, request_id: str) -> list[str]:
        """The merge targets recorded with (cube, request id); [] if none or never seen."""

    def forget_request(self, cube_id: str, request_id: str) -> bool:
        """Removes the idempotency record of (cube, request id), so the request can run again;
        whether there was one."""

    def find_by_text_hash(self, cube_id: str, memory_type: str, hashes: Sequence[str]) -> dict[str, str]:
        """For each hash that a live (activated or resolving) memory of the cube and type has, the
        oldest such memory's id: an indexed lookup. Working-memory copies are never returned."""

    def get_memories(
        self, cube_id: str, ids: Sequence[str], with_sources: bool = True, *, shared: bool = False
    ) -> dict[str, Memory]:
        """The memories of this cube among ``ids`` (others are absent). With ``with_sources``
        False, for ranking, which reads ~100 a search: no sources (``sources == []``), and an
        implementation may leave key, background, confidence, updated_at and version at their
        defaults; every other field is exact. With ``shared`` (or ``with_sources`` False) the
        caller only reads what it gets, so an implementation may answer with objects it keeps
        and hands to other callers too (the SQLite store's per-cube copies do)."""

    def list_memories(self, cube_id: str, flt: MemoryFilter, limit: int, after: int = 0) -> tuple[list[Memory], int]:
        """A page in insertion order and the cursor to pass as ``after`` next (0: no more)."""

    def update_memory(self, memory: Memory, quota: CubeQuota | None = None) -> None:
        """Replaces a memory's text and metadata (sources kept), keeping the version it replaces
        in the memory's history, in one transaction. NotFound if absent. With ``quota``, what
        the change adds to the cube's usage (longer text; a working-memory copy becoming counted)
        is checked in the transaction as :meth:`insert_memories` does."""

    def memory_history(self, cube_id: str, memory_id: str) -> list[Memory]:
        """The versions updates replaced, newest first, each as it was (without sources); [] for
        a memory never updated, absent, or of another cube."""

    def delete_memories(self, cube_id: str, ids: Sequence[str]) -> list[str]:
        """Hard-deletes memories, sources, edges and history; returns the ids that existed."""

    def delete_memories_matching(self, cube_id: str, flt: MemoryFilter, limit: int) -> list[str]:
        """Hard-deletes, in one transaction, up to ``limit`` of the cube's memories that
        :meth:`list_memories` would list with ``flt`` (oldest first), with their sources, edges
        and history; returns their ids. Fewer than ``limit`` means none is left."""

    def delete_cube_memories(self, cube_id: str) -> list[str]:
        """Hard-deletes every memory of the cube (with sources, edges and history); returns their ids."""

    def user_memory_cubes(self, user_id: str) -> list[str]:
        """Ids of the cubes holding at least one memory of the user, whatever the user's access, sorted."""

    def search_lexical(self, cube_id: str, query: str, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        """Full-text (BM25) matches as (id, score), best first; higher score is better."""

    def count(self, cube_id: str, flt: MemoryFilter | None = None) -> int: ...

    def cube_usage(self, cube_id: str) -> CubeUsage:
        """The cube's memories and UTF-8 bytes of memory text, working-memory copies aside
        (services/textmem/quota.py); cheap enough to read before every add."""

    def mark_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        """Write-ahead mark: these memories' vectors are about to change (add, update, delete).
        A mark left behind by a crash tells the repair which vectors to check against the graph."""

    def clear_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        """The marked writes are done (both stores agree); unknown marks are ignored."""

    def pending_vector_writes(self, before: float, limit: int) -> list[tuple[str, str]]:
        """(cube id, memory id) of marks made before ``before`` (epoch seconds), oldest first."""

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        """Ids linked to ``memory_id`` by an edge of ``edge_type``, either direction."""

    def neighbours_many(self, cube_id: str, memory_ids: Sequence[str], edge_type: str) -> dict[str, list[str]]:
        """:meth:`neighbours` of each id in one round trip (every id is a key, [] if it has none).
        The lists may be shared with other callers: read them, do not change them."""

    # cubes ----------------------------------------------------------------
    def create_cube(self, cube: Cube) -> Cube:
        """Stores a new cube; ``AlreadyExists`` if the id is taken."""

    def get_cube(self, cube_id: str) -> Cube | None: ...

    def list_cubes(self, user_id: str) -> list[Cube]:
        """Cubes the user owns or is a member of."""

    def set_member(self, cube_id: str, user_id: str, role: str) -> Cube:
        """Sets a member's role ("reader"/"writer"); "" removes the member."""

    def delete_cube(self, cube_id: str) -> None:
        """Removes the cube record (its memories must be deleted first)."""

    # metrics --------------------------------------------------------------
    def memory_stats(self, top_cubes: int) -> MemoryStats:
        """Memories by type, registered cubes, and the ``top_cubes`` largest cubes (largest first)."""

    def close(self) -> None: ...
