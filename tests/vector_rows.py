"""Rows and references shared by the exact index's tests (tests/integration/test_exact_index_*.py,
test_approximate_vector_index.py): clustered unit-ish vectors with varied filter columns, the
float32 answer every search must match, and the least durable store the index can scan."""

from __future__ import annotations

import numpy as np

from services.textmem.models import MemoryFilter
from services.textmem.stores.exact_index import ScannedRow, _CubeIndex


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def clustered_rows(
    rng: np.random.Generator,
    n: int,
    dim: int,
    *,
    start: int = 0,
    spread: float,
    centres: int,
    users: int,
    user_memory_every: int,
    archived_every: int,
) -> list[ScannedRow]:
    """``n`` rows around ``centres`` random centres (many rows close to each other, as embeddings
    of one conversation are), ids from ``start``, users, sessions, types and statuses in turn."""
    points = rng.standard_normal((centres, dim)).astype(np.float32)
    vectors = points[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return [
        ScannedRow(
            id=f"{start + i:08x}",
            user_key=f"u{i % users}",
            session_key=f"s{i % 5}",
            memory_type="UserMemory" if i % user_memory_every == 0 else "LongTermMemory",
            status="archived" if i % archived_every == 0 else "activated",
            created_us=(start + i) * 1_000_000,
            vector=v,
        )
        for i, v in enumerate(vectors)
    ]


def reference(index: _CubeIndex, q: np.ndarray, flt: MemoryFilter, k: int) -> list[tuple[str, float]]:
    """Every passing row scored in float32, best first, ties by id."""
    m = index._compute_mask(flt, str)
    if m is None:
        return []
    hits = np.flatnonzero(m)
    scores = index.vectors[hits] @ q
    order = sorted(range(len(hits)), key=lambda j: (-float(scores[j]), index.ids[hits[j]]))[:k]
    return [(index.ids[hits[j]], float(scores[j])) for j in order]


class RowsStore:
    """The least a ScannableVectorStore needs for searches over rows given up front."""

    def __init__(self, scanned: list[ScannedRow], dim: int) -> None:
        self.scanned = scanned
        self.dim = dim

    def key_of(self, value: str) -> str:
        return value

    def scan(self, cube_id: str):  # type: ignore[no-untyped-def]
        return iter(self.scanned)

    def count(self, cube_id: str) -> int:
        return len(self.scanned)

    def delete(self, cube_id: str, ids: list[str]) -> None:
        pass

    def delete_ids(self, ids: list[str]) -> None:
        pass

    def close(self) -> None:
        pass
