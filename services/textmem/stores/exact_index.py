"""An exact, in-process vector index in front of a durable VectorStore.

Why: Milvus Lite 3 (the embedded default) is a pure-Python engine. Measured on
the 2-core dev machine, one search of a 10,000-row collection took 42 ms with
sealed segments and over 600 ms with unsealed ones, and it scans the whole
collection whatever the cube; a numpy inner product over the same 10,000
unit vectors takes under 1 ms. So on Milvus Lite the vectors stay durable in
Milvus (every write goes there first, and a restart reloads from there) while
searches run on an exact copy held here. A Milvus server searches fast by
itself and is shared by replicas that could not see each other's copies, so
this index is for the embedded default only.

Exact means no recall is traded for speed: every live row of the cube that
passes the filter is scored, as Milvus' IVF_FLAT with every list probed does.
The copy costs ``4 * dim`` bytes per memory (1.5 KiB at 384 dimensions, about
150 MB for 100,000 memories) plus a few bytes of filter columns.

A cube is loaded from the durable store on its first use (search, write or
delete) and kept; the durable store's scan runs under the cube's lock so no
write can fall between the scan and the copy.

A scan of the float32 copy is bound by memory bandwidth, not arithmetic: 100,000 x 384
floats are 150 MB read per search, 30 to 70 ms on the 2-core dev machine (a few GB/s),
whatever BLAS does. So a cube of :data:`QUANTIZED_MIN_ROWS` rows or more also keeps an 8-bit
copy of its vectors (faiss' scalar quantizer, a quarter of the bytes, 1 byte per dimension)
that a search scans first for a short list, which is then scored again on the float32 rows.
That stays exact, not approximate: every row's quantization error bounds how far its 8-bit
score can be from its true one (``|q.v - q.v'| <= |v - v'|`` for a unit query, by
Cauchy-Schwarz; the largest ``|v - v'|`` of the cube is kept), and the short list is accepted
only when no row left out of it can beat the k-th best true score; otherwise the search falls
back to the float32 scan. The 8-bit copy costs ``dim`` bytes more per memory of such a cube
(about 38 MB for 100,000 memories at 384 dimensions) and is built by the cube's first search
(about a second per 100,000 rows here), then extended by later ones. faiss comes with Milvus
Lite (its dependency); without it every search scans the float32 copy.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

try:  # faiss-cpu is a dependency of milvus-lite, the only store this index fronts
    import faiss
except ImportError:  # pragma: no cover - then every search scans the float32 copy
    faiss = None

from services.textmem.models import MEMORY_TYPES, STATUSES, MemoryFilter
from services.textmem.stores.vector import VectorRecord

log = logging.getLogger(__name__)

_TYPE_CODE = {t: i for i, t in enumerate(MEMORY_TYPES)}
_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}

# Cubes from this many rows on keep an 8-bit copy searched first (see the module doc). Below
# it the float32 scan takes a few milliseconds at most and the copy would cost more to keep.
QUANTIZED_MIN_ROWS = 16_384
# Rows the 8-bit scan keeps per search: this many times the limit, at least QUANTIZED_MARGIN
# more. A wider list costs little (its float32 rescoring reads a few hundred rows) and makes
# the fallback to a full float32 scan rarer.
QUANTIZED_WIDEN = 4
QUANTIZED_MARGIN = 64
# The 8-bit scan reads the codes once per query, a float32 matrix product reads the rows about
# once per batch: past a few queries the product wins (dedupe searches a whole add at once).
QUANTIZED_MAX_QUERIES = 4
# Float rounding of the two dot products (8-bit and float32), well above ~1e-5 at 384
# dimensions: added to the quantization bound so that rounding cannot hide a row.
QUANTIZED_SLACK = 1e-4


@dataclass(frozen=True)
class ScannedRow:
    """One stored vector as the durable store gives it back. Scope columns are the store's keys
    (``key_of(id)``), since a store need not keep the raw user or session id."""

    id: str
    user_key: str
    session_key: str
    memory_type: str
    status: str
    created_us: int
    vector: np.ndarray


class ScannableVectorStore(Protocol):
    """A VectorStore that can list a cube's rows and names its scope keys."""

    dim: int

    def key_of(self, value: str) -> str: ...

    def scan(self, cube_id: str) -> Iterator[ScannedRow]: ...

    def count(self, cube_id: str) -> int: ...

    def upsert(self, records: Sequence[VectorRecord]) -> None: ...

    def get_vectors(self, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def delete(self, cube_id: str, ids: Sequence[str]) -> None: ...

    def delete_cube(self, cube_id: str) -> None: ...

    def close(self) -> None: ...


def _allowed(codes: Mapping[str, int], values: Sequence[str]) -> np.ndarray:
    """A lookup table: ``table[code]`` says whether the code's value is allowed. Unknown values
    are stored as -1, which indexes the table's last slot, always False."""
    table = np.zeros(len(codes) + 1, dtype=bool)
    for v in values:
        if v in codes:
            table[codes[v]] = True
    return table


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms


class _Closing(Exception):
    """The store is closing: a load in progress stops."""


class _Quantized:
    """An 8-bit copy of a cube's first ``rows`` vectors (faiss' per-dimension min/max scalar
    quantizer), with ``error``: the largest distance between a row and its decoded copy, which
    bounds how far any 8-bit score is from the true one (unit queries)."""

    def __init__(self, vectors: np.ndarray) -> None:
        dim = vectors.shape[1]
        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        # Ranges from every row present; a later row outside them is clamped, which only raises
        # ``error`` (retraining once the cube doubled keeps the ranges current).
        self.index.train(vectors)
        self.trained_rows = len(vectors)
        self.rows = 0
        self.error = 0.0
        self.append(vectors)

    def _codes(self) -> np.ndarray:
        # A view of the index's own code array: valid until the next add (which may move it).
        n, size = self.index.ntotal, self.index.code_size
        return faiss.rev_swig_ptr(self.index.codes.data(), n * size).reshape(n, size)

    def _track_error(self, vectors: np.ndarray, codes: np.ndarray) -> None:
        for s in range(0, len(vectors), 8192):
            decoded = self.index.sa_decode(codes[s : s + 8192])
            err = float(np.sqrt(((vectors[s : s + 8192] - decoded) ** 2).sum(axis=1).max()))
            self.error = max(self.error, err)

    def append(self, vectors: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        start = self.rows
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.rows += len(vectors)
        self._track_error(vectors, self._codes()[start:])

    def replace(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """Rows rewritten in place (an upsert of an existing id)."""
        codes = self.index.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))
        self._codes()[positions] = codes
        # The replaced rows' old errors stay in the maximum: a looser bound, never a wrong one.
        self._track_error(vectors, codes)

    def search(self, queries: np.ndarray, k: int, passing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` rows per query by 8-bit score, among ``passing`` rows (None: all)."""
        if passing is None:
            return self.index.search(queries, k)
        bitmap = np.packbits(passing[: self.rows], bitorder="little")
        # faiss keeps raw pointers to the bitmap and the selector: both stay referenced here.
        selector = faiss.IDSelectorBitmap(self.rows, faiss.swig_ptr(bitmap))
        scores, rows = self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))
        return scores, rows


class _CubeIndex:
    """The rows of one cube: a growable matrix plus filter columns; deleted rows are tombstoned
    and compacted away once they are half the matrix."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.live = np.zeros(0, dtype=bool)
        self.type_code = np.zeros(0, dtype=np.int8)
        self.status_code = np.zeros(0, dtype=np.int8)
        self.created_us = np.zeros(0, dtype=np.int64)
        self.user = np.zeros(0, dtype=np.int32)
        self.session = np.zeros(0, dtype=np.int32)
        # Scope keys are interned per cube, so filtering compares small integers.
        self.codes: dict[str, int] = {}
        self.dead = 0
        # The 8-bit copy (large cubes only), built on the first search that wants it and kept
        # current by later ones: rows appended since, and rows rewritten in place (``stale``).
        self.quantized: _Quantized | None = None
        self.stale: set[int] = set()
        # Filter masks kept until the cube changes (``version``): a few passes over every row,
        # the same for every search with the same filter (and a handful of filters recur).
        self.version = 0
        self._masks: dict[tuple, tuple[int, np.ndarray | None]] = {}
        # Queries answered by each path (what the scale benchmark reports).
        self.counts: Counter[str] = Counter()

    def _code(self, key: str) -> int:
        return self.codes.setdefault(key, len(self.codes))

    def _grow(self, need: int) -> None:
        cap = len(self.live)
        if need <= cap:
            return
        new_cap = max(need, 2 * cap, 64)

        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((new_cap, *a.shape[1:]), dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.vectors = grown(self.vectors)
        self.live = grown(self.live)
        self.type_code = grown(self.type_code)
        self.status_code = grown(self.status_code)
        self.created_us = grown(self.created_us)
        self.user = grown(self.user)
        self.session = grown(self.session)

    def put(self, rows: Iterable[ScannedRow]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.version += 1
        vectors = _unit_rows(np.stack([r.vector for r in rows]))
        self._grow(len(self.ids) + len(rows))
        for r, v in zip(rows, vectors, strict=True):
            i = self.pos.get(r.id)
            if i is None:
                i = len(self.ids)
                self.ids.append(r.id)
                self.pos[r.id] = i
            self.vectors[i] = v
            if self.quantized is not None and i < self.quantized.rows:
                self.stale.add(i)
            self.live[i] = True
            self.type_code[i] = _TYPE_CODE.get(r.memory_type, -1)
            self.status_code[i] = _STATUS_CODE.get(r.status, -1)
            self.created_us[i] = r.created_us
            self.user[i] = self._code(r.user_key)
            self.session[i] = self._code(r.session_key)

    def remove(self, ids: Iterable[str]) -> None:
        self.version += 1
        for mid in ids:
            i = self.pos.pop(mid, None)
            if i is not None:
                self.live[i] = False
                self.dead += 1
        if self.dead > 64 and self.dead * 2 > len(self.ids):
            self._compact()

    def _compact(self) -> None:
        n = len(self.ids)
        keep = np.flatnonzero(self.live[:n])
        self.ids = [self.ids[i] for i in keep]
        self.pos = {mid: i for i, mid in enumerate(self.ids)}
        for name in ("vectors", "live", "type_code", "status_code", "created_us", "user", "session"):
            setattr(self, name, getattr(self, name)[keep].copy())
        self.dead = 0
        # Rows moved: the next large search rebuilds the 8-bit copy.
        self.quantized = None
        self.stale.clear()

    def count(self) -> int:
        return len(self.pos)

    def mask(self, flt: MemoryFilter, key_of) -> np.ndarray | None:  # type: ignore[no-untyped-def]
        """Rows passing the filter, or None when no row can; callers must not modify it."""
        key = (flt.types(), flt.statuses(), flt.user_id, flt.session_id, flt.created_after, flt.created_before)
        got = self._masks.get(key)
        if got is not None and got[0] == self.version:
            return got[1]
        m = self._compute_mask(flt, key_of)
        if len(self._masks) >= 16:
            self._masks.clear()
        self._masks[key] = (self.version, m)
        return m

    def _compute_mask(self, flt: MemoryFilter, key_of) -> np.ndarray | None:  # type: ignore[no-untyped-def]
        n = len(self.ids)
        m = self.live[:n].copy()
        m &= _allowed(_TYPE_CODE, flt.types())[self.type_code[:n]]
        m &= _allowed(_STATUS_CODE, flt.statuses())[self.status_code[:n]]
        for value, column in ((flt.user_id, self.user), (flt.session_id, self.session)):
            if value:
                code = self.codes.get(key_of(value))
                if code is None:
                    return None
                m &= column[:n] == code
        if flt.created_after is not None:
            m &= self.created_us[:n] >= _micros(flt.created_after)
        if flt.created_before is not None:
            m &= self.created_us[:n] < _micros(flt.created_before)
        return m

    def search(self, query: np.ndarray, flt: MemoryFilter, limit: int, key_of) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
        return self.search_batch(query[None, :], flt, limit, key_of)[0]

    def search_batch(
        self,
        queries: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        key_of,  # type: ignore[no-untyped-def]
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``queries`` (unit vectors), one filter for all: the
        matrix is read once for the whole batch."""
        n, nq = len(self.ids), len(queries)
        if n == 0 or limit <= 0 or nq == 0:
            return [[] for _ in range(nq)]
        m = self.mask(flt, key_of)
        if m is None:
            return [[] for _ in range(nq)]
        passing = int(np.count_nonzero(m))
        if passing == 0:
            return [[] for _ in range(nq)]
        k = min(limit, passing)
        out: list[list[tuple[str, float]] | None] = [None] * nq
        if (
            faiss is not None
            and n >= QUANTIZED_MIN_ROWS
            and nq <= QUANTIZED_MAX_QUERIES
            and passing > QUANTIZED_WIDEN * k + QUANTIZED_MARGIN
        ):
            for j, hits in enumerate(self._quantized_search(queries, m if passing < n else None, k)):
                out[j] = hits
                self.counts["8-bit" if hits is not None else "8-bit fallback"] += 1
        todo = [j for j in range(nq) if out[j] is None]
        if todo:
            self.counts["float32"] += len(todo)
            hits = np.flatnonzero(m)
            q = queries[todo]
            # Scoring every row and masking after is cheaper than gathering the passing rows first
            # unless the filter is very selective (the gather copies the rows).
            if len(hits) * 4 < n:
                scores = self.vectors[hits] @ q.T
            else:
                scores = (self.vectors[:n] @ q.T)[hits]
            for c, j in enumerate(todo):
                out[j] = self._top(hits, scores[:, c], k)
        return out  # type: ignore[return-value]

    def _top(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` best of ``rows`` by ``scores``, best first."""
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        # Ties broken by id so that the order is deterministic, as a database's would be.
        order = sorted(top.tolist(), key=lambda j: (-float(scores[j]), self.ids[rows[j]]))
        return [(self.ids[rows[j]], float(scores[j])) for j in order]

    def _current_quantized(self) -> _Quantized:
        n = len(self.ids)
        q = self.quantized
        if q is None or n >= 2 * q.trained_rows:
            q = self.quantized = _Quantized(self.vectors[:n])
            self.stale.clear()
            return q
        if self.stale:
            rows = np.fromiter(sorted(self.stale), dtype=np.int64)
            q.replace(rows, self.vectors[rows])
            self.stale.clear()
        if q.rows < n:
            q.append(self.vectors[q.rows : n])
        return q

    def _quantized_search(
        self, queries: np.ndarray, passing: np.ndarray | None, k: int
    ) -> list[list[tuple[str, float]] | None]:
        """Exact top ``k`` per query through the 8-bit copy; None for a query whose short list
        cannot be proven to hold it (the caller scans the float32 rows for that one)."""
        # One OpenMP thread for faiss here (the setting is the calling thread's own): a search is
        # one pass over memory, and a second thread on the 2-core machine fights the query
        # embedding and the lexical search running beside it (measured: slower p50 with two).
        faiss.omp_set_num_threads(1)
        q = self._current_quantized()
        width = QUANTIZED_WIDEN * k + QUANTIZED_MARGIN
        approx, rows = q.search(np.ascontiguousarray(queries, dtype=np.float32), width, passing)
        out: list[list[tuple[str, float]] | None] = []
        for j in range(len(queries)):
            got = rows[j][rows[j] >= 0]
            exact = self.vectors[got] @ queries[j]
            if len(got) < k:
                out.append(None)
                continue
            # A row left out scored at most approx[j, -1] in 8 bits, so at most that plus the
            # quantization error in truth: it cannot be among the best k if that is below the
            # k-th best true score of the list.
            kth = float(np.partition(exact, len(exact) - k)[len(exact) - k])
            if len(got) == width and not float(approx[j, width - 1]) + q.error + QUANTIZED_SLACK < kth:
                out.append(None)
                continue
            out.append(self._top(got, exact, k))
        return out


class ExactIndexVectorStore:
    """VectorStore whose searches run on an exact in-process copy of a durable store's vectors.

    Writes go to the durable store first and reach the copy only once stored; a write the
    durable store refuses leaves the copy as it was (and drops the cube from the copy if the
    store may have applied part of it, so the next use reloads the truth)."""

    def __init__(self, durable: ScannableVectorStore) -> None:
        self._durable = durable
        self.dim = durable.dim
        self._cubes: dict[str, _CubeIndex] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._closing = threading.Event()
        self._prewarmer: threading.Thread | None = None

    def start_prewarm(self, cube_ids: Callable[[], Sequence[str]]) -> None:
        """Loads the given cubes in a background thread, so that their first searches after a
        restart do not pay for the load (about 3 s per 10,000 memories from Milvus Lite). A
        search of a cube being loaded waits for that load rather than starting a second one."""

        def run() -> None:
            try:
                for cube_id in cube_ids():
                    if self._closing.is_set():
                        return
                    with self._lock(cube_id):
                        self._cube(cube_id)
            except _Closing:
                return
            except Exception:  # a failed prewarm only means the first search loads the cube
                log.warning("prewarming the vector index failed; cubes load on first use", exc_info=True)

        self._prewarmer = threading.Thread(target=run, name="exact-index-prewarm", daemon=True)
        self._prewarmer.start()

    @property
    def durable(self) -> ScannableVectorStore:
        return self._durable

    def _lock(self, cube_id: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(cube_id, threading.RLock())

    def _cube(self, cube_id: str) -> _CubeIndex:
        """The cube's copy, loaded on first use; call with the cube's lock held."""
        index = self._cubes.get(cube_id)
        if index is None:
            index = _CubeIndex(self.dim)
            batch: list[ScannedRow] = []
            for row in self._durable.scan(cube_id):
                batch.append(row)
                if len(batch) >= 4096:
                    if self._closing.is_set():
                        raise _Closing()
                    index.put(batch)
                    batch = []
            index.put(batch)
            self._cubes[cube_id] = index
        return index

    def loaded_cubes(self) -> set[str]:
        with self._guard:
            return set(self._cubes)

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        by_cube: dict[str, list[VectorRecord]] = {}
        for r in records:
            by_cube.setdefault(r.cube_id, []).append(r)
        for cube_id, recs in by_cube.items():
            with self._lock(cube_id):
                try:
                    self._durable.upsert(recs)
                except Exception:
                    self._cubes.pop(cube_id, None)
                    raise
                index = self._cubes.get(cube_id)
                if index is None and self._durable.count(cube_id) == len({r.id for r in recs}):
                    # The cube holds exactly what was just written (a new cube): start its copy
                    # from these rows instead of scanning them back on its first search.
                    index = self._cubes[cube_id] = _CubeIndex(self.dim)
                if index is not None:
                    key = self._durable.key_of
                    index.put(
                        ScannedRow(
                            id=r.id,
                            user_key=key(r.user_id),
                            session_key=key(r.session_id),
                            memory_type=r.memory_type,
                            status=r.status,
                            created_us=_micros(r.created_at),
                            vector=r.vector,
                        )
                        for r in recs
                    )

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        query = _unit_rows(np.asarray(vector, dtype=np.float32)[None, :])[0]
        with self._lock(cube_id):
            return self._cube(cube_id).search(query, flt, limit, self._durable.key_of)

    def search_batch(
        self, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``vectors``, one filter for all; one pass over the
        cube's rows for the whole batch (dedupe checks every memory of an add this way)."""
        queries = _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        with self._lock(cube_id):
            return self._cube(cube_id).search_batch(queries, flt, limit, self._durable.key_of)

    def search_many(
        self,
        cube_ids: Sequence[str],
        vector: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        available: Callable[[str], int] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        # Each cube's search is a fraction of a millisecond here, so one per cube is fine.
        return {c: self.search(c, vector, flt, limit) for c in dict.fromkeys(cube_ids)}

    def get_vectors(self, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock(cube_id):
            index = self._cube(cube_id)
            out = {}
            for mid in ids:
                i = index.pos.get(mid)
                if i is not None:
                    out[mid] = index.vectors[i].copy()
            return out

    def delete(self, cube_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock(cube_id):
            index = self._cubes.get(cube_id)
            if index is not None and not any(mid in index.pos for mid in ids):
                # A loaded copy holds what the durable store holds for the cube: none of these
                # ids is there, so there is nothing to delete. Spares a Milvus Lite round trip
                # (~4-10 ms) on each write a RoutedVectorStore clears from its other store.
                return
            try:
                self._durable.delete(cube_id, ids)
            except Exception:
                self._cubes.pop(cube_id, None)
                raise
            index = self._cubes.get(cube_id)
            if index is not None:
                index.remove(ids)

    def delete_cube(self, cube_id: str) -> None:
        with self._lock(cube_id):
            try:
                self._durable.delete_cube(cube_id)
            finally:
                self._cubes.pop(cube_id, None)

    def count(self, cube_id: str) -> int:
        with self._lock(cube_id):
            return self._cube(cube_id).count()

    def close(self) -> None:
        self._closing.set()
        if self._prewarmer is not None:
            self._prewarmer.join(timeout=10)
        self._durable.close()
        with self._guard:
            self._cubes.clear()
