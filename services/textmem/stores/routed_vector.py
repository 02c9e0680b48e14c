"""A VectorStore over two stores, one of them for some memory types only (preferences).

Why: preferences (PreferenceMemory) are searched on their own (the gateway's
include_preference asks for them alone, with pref_top_k) and every other search excludes
them. In one collection both kinds of search filter the same rows by type; in a collection
of their own a preference search scores preferences only, and the main collection's searches
never carry them. So textmem keeps them apart, as MemOS does, and this store routes by type:

- a write goes to the store of its record's type, and the id is deleted from the other store,
  so that an update changing a memory's type moves its vector (the write first: a failure
  between the two leaves the vector in both, which the caller's write-ahead mark repairs, never
  in neither);
- a search whose filter asks only for routed types goes to the routed store, one that asks
  for none of them to the main store, a mixed one to both, merged by similarity (both stores
  score by cosine similarity, so their scores compare);
- deletes (by id and of whole cubes) reach both stores; counts add up.

Both stores keep the same cube scoping (cube as partition key) and filters; any VectorStore
passing ``tests/conformance`` can be either (textmem uses two collections of one Milvus).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from services.textmem.models import MemoryFilter
from services.textmem.stores.exact_index import ScannedRow
from services.textmem.stores.vector import VectorRecord, VectorStore, search_batch

PREFERENCE_TYPES = ("PreferenceMemory",)


def _merge(parts: Sequence[list[tuple[str, float]]], limit: int) -> list[tuple[str, float]]:
    """Hits of several stores, best first, each id once (a vector caught in both stores by a
    crash mid-move counts once, at its better score); ties by id, as the exact index orders them."""
    best: dict[str, float] = {}
    for hits in parts:
        for mid, score in hits:
            if mid not in best or score > best[mid]:
                best[mid] = score
    return sorted(best.items(), key=lambda h: (-h[1], h[0]))[:limit]


class RoutedVectorStore:
    """Vectors of ``routed_types`` in ``routed``, every other vector in ``main``."""

    def __init__(self, main: VectorStore, routed: VectorStore, routed_types: Sequence[str] = PREFERENCE_TYPES) -> None:
        if main.dim != routed.dim:
            raise ValueError(f"stores disagree on the dimension: {main.dim} != {routed.dim}")
        self.dim = main.dim
        self.main = main
        self.routed = routed
        self.routed_types = frozenset(routed_types)

    def _split(self, flt: MemoryFilter) -> tuple[MemoryFilter | None, MemoryFilter | None]:
        """The filter as each store should see it: only its own types, or None when it has none
        of the asked types (an empty type list would mean the default types, not none)."""
        types = flt.types()
        routed = tuple(t for t in types if t in self.routed_types)
        main = tuple(t for t in types if t not in self.routed_types)
        return (
            dataclasses.replace(flt, memory_types=main) if main else None,
            dataclasses.replace(flt, memory_types=routed) if routed else None,
        )

    def _both(self, calls: Sequence[Callable[[], None]]) -> None:
        """Runs each call even if an earlier one fails (a delete must reach every store it can),
        then raises the first failure."""
        first: BaseException | None = None
        for call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - re-raised below, once the other store had its turn
                first = first or exc
        if first is not None:
            raise first

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        routed = [r for r in records if r.memory_type in self.routed_types]
        main = [r for r in records if r.memory_type not in self.routed_types]
        by_cube: dict[tuple[bool, str], list[str]] = {}
        for is_routed, recs in ((True, routed), (False, main)):
            if recs:
                (self.routed if is_routed else self.main).upsert(recs)
            for r in recs:
                by_cube.setdefault((is_routed, r.cube_id), []).append(r.id)
        # Then out of the other store: a no-op for a new memory (the exact index answers that
        # from its copy), a move for one whose type changed.
        for (is_routed, cube_id), ids in by_cube.items():
            (self.main if is_routed else self.routed).delete(cube_id, ids)

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        main_flt, routed_flt = self._split(flt)
        if routed_flt is None:
            return self.main.search(cube_id, vector, flt, limit)
        if main_flt is None:
            return self.routed.search(cube_id, vector, routed_flt, limit)
        return _merge(
            [
                self.main.search(cube_id, vector, main_flt, limit),
                self.routed.search(cube_id, vector, routed_flt, limit),
            ],
            limit,
        )

    def search_batch(
        self, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
    ) -> list[list[tuple[str, float]]]:
        main_flt, routed_flt = self._split(flt)
        if routed_flt is None:
            return search_batch(self.main, cube_id, vectors, flt, limit)
        if main_flt is None:
            return search_batch(self.routed, cube_id, vectors, routed_flt, limit)
        a = search_batch(self.main, cube_id, vectors, main_flt, limit)
        b = search_batch(self.routed, cube_id, vectors, routed_flt, limit)
        return [_merge([x, y], limit) for x, y in zip(a, b, strict=True)]

    def search_many(
        self,
        cube_ids: Sequence[str],
        vector: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        available: Callable[[str], int] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        main_flt, routed_flt = self._split(flt)
        if routed_flt is None:
            return self.main.search_many(cube_ids, vector, flt, limit, available)
        if main_flt is None:
            return self.routed.search_many(cube_ids, vector, routed_flt, limit, available)
        # ``available`` counts both stores' matches: for either store alone it may overstate,
        # which costs a store a second search of a short cube, never a missed hit.
        a = self.main.search_many(cube_ids, vector, main_flt, limit, available)
        b = self.routed.search_many(cube_ids, vector, routed_flt, limit, available)
        return {c: _merge([a.get(c, []), b.get(c, [])], limit) for c in dict.fromkeys(cube_ids)}

    def get_vectors(self, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found = self.main.get_vectors(cube_id, ids)
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self.routed.get_vectors(cube_id, missing))
        return found

    def delete(self, cube_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        self._both([lambda: self.main.delete(cube_id, ids), lambda: self.routed.delete(cube_id, ids)])

    def delete_cube(self, cube_id: str) -> None:
        self._both([lambda: self.main.delete_cube(cube_id), lambda: self.routed.delete_cube(cube_id)])

    def count(self, cube_id: str) -> int:
        return self.main.count(cube_id) + self.routed.count(cube_id)

    # What tools and tests reach below an exact index for (the durable rows, a seal).
    def _durables(self) -> list[object]:
        return [getattr(s, "durable", s) for s in (self.main, self.routed)]

    def scan(self, cube_id: str) -> Iterator[ScannedRow]:
        """Every row the durable stores hold for the cube, main store first."""
        for store in self._durables():
            yield from store.scan(cube_id)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Seals what the durable stores were given so far (those that seal)."""
        for store in self._durables():
            if hasattr(store, "flush"):
                store.flush()

    def close(self) -> None:
        self._both([self.main.close, self.routed.close])
