"""The VectorStore interface: one vector per memory, searchable per cube.

Implementations: :class:`~services.textmem.stores.milvus_vector.MilvusVectorStore`
(Milvus Lite embedded, or a Milvus server by URI). Every implementation passes
``tests/conformance``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.textmem.models import MemoryFilter


@dataclass
class VectorRecord:
    id: str
    cube_id: str
    user_id: str
    session_id: str
    memory_type: str
    status: str
    created_at: float
    vector: np.ndarray


class VectorStore(Protocol):
    dim: int

    def upsert(self, records: Sequence[VectorRecord]) -> None: ...

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        """Nearest memories of the cube as (id, similarity), best first. Tags are not filtered here."""

    def search_many(
        self,
        cube_ids: Sequence[str],
        vector: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        available: Callable[[str], int] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        """Like :meth:`search` for each cube (``limit`` per cube), in one round trip where the engine allows.

        ``available(cube_id)`` (how many memories of the cube match the filter, if the caller can
        count them) lets an implementation tell a short answer from a cube that has no more; it
        is called only for cubes whose answer came back short, since counting costs a query."""

    def get_vectors(self, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    # Optional: ``search_batch(cube_id, vectors, flt, limit) -> list[list[tuple[str, float]]]``,
    # :meth:`search` for each row of ``vectors`` in one pass; :func:`search_batch` falls back to
    # one search per row for a store without it.

    def delete(self, cube_id: str, ids: Sequence[str]) -> None: ...

    def delete_cube(self, cube_id: str) -> None: ...

    def count(self, cube_id: str) -> int: ...

    def close(self) -> None: ...


def search_batch(
    store: VectorStore, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
) -> list[list[tuple[str, float]]]:
    """``store.search`` for each row of ``vectors`` (one filter for all), through the store's own
    ``search_batch`` where it has one: the exact index scores the whole batch in one matrix
    product, reading the cube's rows once instead of once per vector."""
    batch = getattr(store, "search_batch", None)
    if batch is not None:
        return batch(cube_id, vectors, flt, limit)
    return [store.search(cube_id, v, flt, limit) for v in vectors]
