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

from services.textmem.models import Cube, Edge, Memory, MemoryFilter


@dataclass(frozen=True)
class MemoryStats:
    """Counts for metrics: every cube's memories by type, the cubes, the largest cubes."""

    by_type: dict[str, int] = field(default_factory=dict)
    cubes: int = 0
    largest: list[tuple[str, int]] = field(default_factory=list)


class GraphStore(Protocol):
    # memories -------------------------------------------------------------
    def insert_memories(
        self, cube_id: str, memories: Sequence[Memory], edges: Sequence[Edge] = (), request_id: str = ""
    ) -> None:
        """Stores memories, their sources and edges in one transaction.

        With ``request_id``, records it with the memory ids; a second insert
        with the same (cube, request id) raises ``AlreadyExists``.
        """

    def memory_ids_for_request(self, cube_id: str, request_id: str) -> list[str] | None:
        """Ids written under (cube, request id), or None if never seen."""

    def get_memories(self, cube_id: str, ids: Sequence[str]) -> dict[str, Memory]:
        """The memories of this cube among ``ids`` (others are absent)."""

    def list_memories(self, cube_id: str, flt: MemoryFilter, limit: int, after: int = 0) -> tuple[list[Memory], int]:
        """A page in insertion order and the cursor to pass as ``after`` next (0: no more)."""

    def update_memory(self, memory: Memory) -> None:
        """Replaces a memory's text and metadata (sources kept). NotFound if absent."""

    def delete_memories(self, cube_id: str, ids: Sequence[str]) -> list[str]:
        """Hard-deletes memories, sources and edges; returns the ids that existed."""

    def delete_cube_memories(self, cube_id: str) -> list[str]:
        """Hard-deletes every memory of the cube; returns their ids."""

    def search_lexical(self, cube_id: str, query: str, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        """Full-text (BM25) matches as (id, score), best first; higher score is better."""

    def count(self, cube_id: str, flt: MemoryFilter | None = None) -> int: ...

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        """Ids linked to ``memory_id`` by an edge of ``edge_type``, either direction."""

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
