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

Even 8 bits a dimension is a pass over every row: about 20 ms at 100,000 rows here, so the
search of a large cube still grew with it. A cube of :data:`ANN_MIN_ROWS` rows or more therefore
also gets an approximate index, an inverted file (faiss IVF, 8-bit codes, about
``2 * sqrt(rows)`` lists, :data:`ANN_PROBES` of them probed per search, so a search reads a few
thousand codes whatever the cube's size). It only proposes candidates: they are scored again on
the float32 rows, so every score returned is exact, and only which rows make the list is
approximate (recall@30 against the exact scan is measured by ``make bench-scale``; 0.95 is the
floor this is tuned for). It answers only searches whose filter leaves at least
:data:`ANN_MIN_PASSING` of the cube's rows; a more selective filter gets the exact path above,
since the rows it keeps are few and far between in the lists a search probes. The index is
built by a background thread (a few seconds per 100,000 rows; the exact path answers until it is
ready) from a snapshot of the rows taken under the cube's lock, and kept consistent with writes
as the 8-bit copy is: a row the index does not hold as it is now (written or deleted since the
index took it) is marked so, every search scores the marked rows that pass its filter exactly
(so a new memory is found by the next search), and the background thread gives them to the index
once :data:`ANN_FLUSH_ROWS` have gathered. A compaction drops the index (row positions moved) and
a cube that doubled since its lists were trained gets a new one, built beside the old one. It
costs ``dim + 8`` bytes per memory of such a cube (about 39 MB for 100,000 memories at 384
dimensions).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
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
# it the float32 scan takes a millisecond or two and the copy would cost more to keep. At
# 10,000 rows the 8-bit scan already pays: dense step 2.4-2.8 -> 1.7 ms a query (same answers),
# for 3.8 MB more (it was 16,384).
QUANTIZED_MIN_ROWS = 8_192
# Rows the 8-bit scan keeps per search: this many times the limit, at least QUANTIZED_MARGIN
# more. A wider list costs little (its float32 rescoring reads a few hundred rows) and makes
# the fallback to a full float32 scan rarer.
QUANTIZED_WIDEN = 4
QUANTIZED_MARGIN = 64
# The 8-bit scan reads the codes once per query, a float32 matrix product reads the rows about
# once per batch: past a few queries the product wins (dedupe searches a whole add at once).
QUANTIZED_MAX_QUERIES = 4
# Cubes from this many live rows on also get an approximate index (see the module doc), built in
# the background; below it the 8-bit scan takes a few milliseconds. One that shrinks below half
# of it loses the index again.
ANN_MIN_ROWS = 32_768
# The approximate index answers a search only when its filter leaves at least this share of the
# cube's live rows; a filter leaving a share f probes 1 / f times as many lists.
ANN_MIN_PASSING = 0.5
# Lists of the inverted file: this many times the square root of the rows it is trained on.
ANN_LISTS_PER_ROOT = 2.0
# Lists probed per unfiltered search. Measured with LoCoMo questions on the scale benchmark's
# 100,000-memory cube (632 lists): see benchmarks/bench_scale.py's recall line.
ANN_PROBES = 32
# Training rows per list (k-means on a sample of the cube; faiss wants at least 39 per list).
ANN_TRAIN_PER_LIST = 40
# Rows the index does not hold as they are that may gather (each search scores them exactly)
# before the background thread adds them; it adds at most ANN_FLUSH_CHUNK per hold of the lock.
ANN_FLUSH_ROWS = 1024
ANN_FLUSH_CHUNK = 8192
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

    def delete_ids(self, ids: Sequence[str]) -> None: ...

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


class _Ann:
    """An inverted-file index over some of a cube's rows (faiss IVF with 8-bit codes, labels =
    row positions) that proposes candidates for a query; the caller scores them exactly."""

    def __init__(self, dim: int, lists: int) -> None:
        # faiss keeps a raw pointer to the quantizer: it stays referenced here.
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFScalarQuantizer(
            self.quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        self.lists = lists
        self.trained_rows = 0

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        if len(positions):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), positions.astype(np.int64))

    def remove(self, positions: np.ndarray) -> None:
        if len(positions):
            self.index.remove_ids(faiss.IDSelectorBatch(positions.astype(np.int64)))

    def search(self, queries: np.ndarray, width: int, probes: int, passing: np.ndarray | None) -> np.ndarray:
        """Labels (row positions, -1 past the end) of up to ``width`` candidates per query from
        ``probes`` lists, among ``passing`` rows (None: every row the index holds)."""
        params = faiss.SearchParametersIVF(nprobe=probes)
        if passing is not None:
            # faiss keeps raw pointers to the bitmap and the selector: both stay referenced here.
            bitmap = np.packbits(passing, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(passing), faiss.swig_ptr(bitmap))
            params.sel = selector
        _, labels = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), width, params=params)
        return labels


@dataclass(frozen=True)
class _AnnSnapshot:
    """What a background build of a cube's approximate index starts from, taken under the cube's
    lock: the rows then live, the vector matrix then (rows rewritten in place later are marked
    by their ``written`` version), the cube's layout (bumped by compaction) and version."""

    layout: int
    version: int
    rows: int
    positions: np.ndarray
    vectors: np.ndarray


def _build_ann(snap: _AnnSnapshot, dim: int, closing: threading.Event) -> _Ann:
    """Trains and fills an approximate index from a snapshot (outside the cube's lock)."""
    n = len(snap.positions)
    lists = max(1, min(round(ANN_LISTS_PER_ROOT * math.sqrt(n)), n // 39))
    ann = _Ann(dim, lists)
    sample = snap.positions
    if n > ANN_TRAIN_PER_LIST * lists:
        rng = np.random.default_rng(n)
        sample = np.sort(rng.choice(snap.positions, ANN_TRAIN_PER_LIST * lists, replace=False))
    ann.index.train(np.ascontiguousarray(snap.vectors[sample]))
    ann.trained_rows = n
    for s in range(0, n, 16_384):
        if closing.is_set():
            raise _Closing()
        chunk = snap.positions[s : s + 16_384]
        ann.add(chunk, snap.vectors[chunk])
    return ann


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
        # The approximate index (large cubes only; see the module doc). ``fresh[i]``: it holds row
        # i as the row is now (its current vector if live, nothing if dead); ``written[i]``: the
        # cube's version when row i was last written or deleted; ``layout``: bumped whenever rows
        # move (compaction), which a build started before cannot follow.
        self.ann: _Ann | None = None
        self.fresh = np.zeros(0, dtype=bool)
        self.written = np.zeros(0, dtype=np.int64)
        self.layout = 0
        self.ann_busy = False  # a background job for the index is queued or running
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
        self.fresh = grown(self.fresh)
        self.written = grown(self.written)

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
            self.fresh[i] = False
            self.written[i] = self.version
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
                self.fresh[i] = False
                self.written[i] = self.version
                self.dead += 1
        if self.dead > 64 and self.dead * 2 > len(self.ids):
            self._compact()

    def _compact(self) -> None:
        n = len(self.ids)
        keep = np.flatnonzero(self.live[:n])
        self.ids = [self.ids[i] for i in keep]
        self.pos = {mid: i for i, mid in enumerate(self.ids)}
        for name in (
            "vectors",
            "live",
            "type_code",
            "status_code",
            "created_us",
            "user",
            "session",
            "fresh",
            "written",
        ):
            setattr(self, name, getattr(self, name)[keep].copy())
        self.dead = 0
        # Rows moved: the next large search rebuilds the 8-bit copy, the background thread the
        # approximate index (the exact path answers meanwhile).
        self.quantized = None
        self.stale.clear()
        self.ann = None
        self.layout += 1

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

    # The approximate index's upkeep: what it needs (asked under the cube's lock after every
    # search and write), a snapshot to build from, installing what was built, adding marked rows.

    def ann_job(self, min_rows: int) -> str | None:
        """``"build"`` (none yet for a cube of ``min_rows`` live rows or more, or the cube doubled
        since its lists were trained), ``"flush"`` (many rows it does not hold as they are) or None."""
        if faiss is None:
            return None
        live = self.count()
        if self.ann is None:
            return "build" if live >= min_rows else None
        if live < min_rows // 2:
            self.ann = None
            return None
        if live >= 2 * self.ann.trained_rows:
            return "build"
        if self.ann_pending() >= ANN_FLUSH_ROWS:
            return "flush"
        return None

    def ann_pending(self) -> int:
        """Rows the approximate index does not hold as they are now."""
        n = len(self.ids)
        return n - int(np.count_nonzero(self.fresh[:n]))

    def ann_snapshot(self) -> _AnnSnapshot:
        n = len(self.ids)
        return _AnnSnapshot(self.layout, self.version, n, np.flatnonzero(self.live[:n]), self.vectors)

    def ann_install(self, snap: _AnnSnapshot, ann: _Ann) -> bool:
        """Puts a built index in service, unless rows moved since its snapshot. Rows written or
        deleted since are marked: searches score them exactly until a flush adds them."""
        if snap.layout != self.layout:
            return False
        n = len(self.ids)
        self.fresh[: snap.rows] = self.written[: snap.rows] <= snap.version
        self.fresh[snap.rows : n] = False
        self.ann = ann
        return True

    def ann_flush(self, at_most: int) -> bool:
        """Gives the index up to ``at_most`` marked rows (their old entries go first); returns
        whether marked rows remain."""
        ann = self.ann
        if ann is None:
            return False
        n = len(self.ids)
        todo = np.flatnonzero(~self.fresh[:n])
        more = len(todo) > at_most
        todo = todo[:at_most]
        if len(todo):
            ann.remove(todo)
            add = todo[self.live[todo]]
            ann.add(add, self.vectors[add])
            self.fresh[todo] = True
        return more

    def search(
        self,
        query: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        key_of,  # type: ignore[no-untyped-def]
        approximate: bool = True,
    ) -> list[tuple[str, float]]:
        return self.search_batch(query[None, :], flt, limit, key_of, approximate)[0]

    def search_batch(
        self,
        queries: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        key_of,  # type: ignore[no-untyped-def]
        approximate: bool = True,
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``queries`` (unit vectors), one filter for all: the
        matrix is read once for the whole batch. ``approximate``: the approximate index may
        propose the candidates (when the cube has one and the filter is not selective)."""
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
        live = self.count()
        if approximate and self.ann is not None and passing >= ANN_MIN_PASSING * live:
            for j, hits in enumerate(self._ann_search(queries, m, passing, live, k)):
                out[j] = hits
                self.counts["approximate" if hits is not None else "approximate fallback"] += 1
        todo = [j for j in range(nq) if out[j] is None]
        if (
            todo
            and faiss is not None
            and n >= QUANTIZED_MIN_ROWS
            and len(todo) <= QUANTIZED_MAX_QUERIES
            and passing > QUANTIZED_WIDEN * k + QUANTIZED_MARGIN
        ):
            for j, hits in zip(todo, self._quantized_search(queries[todo], m if passing < n else None, k), strict=True):
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

    def _ann_search(
        self, queries: np.ndarray, m: np.ndarray, passing: int, live: int, k: int
    ) -> list[list[tuple[str, float]] | None]:
        """Top ``k`` per query among the approximate index's candidates and the rows it does not
        hold as they are, all scored on the float32 rows; None for a query with fewer than ``k``
        candidates (the exact path answers it)."""
        faiss.omp_set_num_threads(1)  # as in _quantized_search
        ann = self.ann
        assert ann is not None
        n = len(self.ids)
        probes = min(ann.lists, math.ceil(ANN_PROBES * live / passing))
        width = QUANTIZED_WIDEN * k + QUANTIZED_MARGIN
        labels = ann.search(queries, width, probes, m if passing < live else None)
        marked = np.flatnonzero(m & ~self.fresh[:n]) if self.ann_pending() else None
        out: list[list[tuple[str, float]] | None] = []
        for j in range(len(queries)):
            got = labels[j][labels[j] >= 0]
            got = got[m[got]]  # deleted rows the index still holds, rows outside the filter
            if marked is not None and len(marked):
                got = np.union1d(got, marked)
            if len(got) < k:
                out.append(None)
                continue
            out.append(self._top(got, self.vectors[got] @ queries[j], k))
        return out

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

    def __init__(
        self,
        durable: ScannableVectorStore,
        approximate: bool = True,
        background: bool = True,
        approximate_min_rows: int = ANN_MIN_ROWS,
    ) -> None:
        """``approximate``: cubes of ``approximate_min_rows`` live rows or more get an approximate
        index (see the module doc; False: every search is exact, as before). ``background``: its
        builds and flushes run on a thread of their own; False runs them inline, in the search or
        write that finds them due (tests)."""
        self._durable = durable
        self.dim = durable.dim
        self._cubes: dict[str, _CubeIndex] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._closing = threading.Event()
        self._prewarmer: threading.Thread | None = None
        # Whether searches may use the approximate indexes (the scale benchmark turns it off and
        # on between searches, to compare both on the same cube); builds follow the argument.
        self.approximate = approximate and faiss is not None
        self._build_approximate = self.approximate
        self._background = background
        self._ann_min_rows = max(1, approximate_min_rows)
        self._jobs: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None

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
                        # The largest cubes of the graph: they hold rows, so no count first.
                        self._maintain(cube_id, self._cube(cube_id, probe_empty=False))
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

    def _cube(self, cube_id: str, probe_empty: bool = True) -> _CubeIndex:
        """The cube's copy, loaded on first use; call with the cube's lock held.

        ``probe_empty``: count the cube's rows first and skip the scan when there are none. A
        cube's first use is most often its first add (dedupe searches it), and on Milvus Lite a
        scan of a cube with no rows still reads the whole collection (90-200 ms at 14,000 rows,
        more as it grows) where a count takes 30-50 ms. Off for cubes known to hold rows."""
        index = self._cubes.get(cube_id)
        if index is None and probe_empty and self._durable.count(cube_id) == 0:
            # Nothing of the cube is stored, and every write to it goes through this store
            # under the lock held here: an empty copy is the cube's.
            index = self._cubes[cube_id] = _CubeIndex(self.dim)
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

    # the approximate index's upkeep --------------------------------------------------------------

    def _maintain(self, cube_id: str, index: _CubeIndex) -> None:
        """Starts whatever the cube's approximate index needs; call with the cube's lock held."""
        if not self._build_approximate or index.ann_busy or index.ann_job(self._ann_min_rows) is None:
            return
        index.ann_busy = True
        if not self._background:
            self._run_ann_job(cube_id, index)
            return
        with self._guard:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="exact-index-ann", daemon=True)
                self._worker.start()
        self._jobs.put(cube_id)

    def _work(self) -> None:
        if faiss is not None:
            faiss.omp_set_num_threads(1)  # one core: searches and writes run beside it
        while True:
            cube_id = self._jobs.get()
            try:
                if cube_id is None or self._closing.is_set():
                    return
                with self._lock(cube_id):
                    index = self._cubes.get(cube_id)
                if index is not None:
                    self._run_ann_job(cube_id, index)
            except _Closing:
                return
            except Exception:  # the exact path keeps answering; a later search asks again
                log.warning("building the approximate vector index failed", exc_info=True)
            finally:
                self._jobs.task_done()

    def _run_ann_job(self, cube_id: str, index: _CubeIndex) -> None:
        """Builds (outside the cube's lock, from a snapshot taken under it) or refreshes the
        cube's approximate index; the lock is taken only to snapshot, install and flush."""
        lock = self._lock(cube_id)
        try:
            with lock:
                if self._cubes.get(cube_id) is not index:
                    return
                job = index.ann_job(self._ann_min_rows)
                snap = index.ann_snapshot() if job == "build" else None
            if snap is not None:
                t0 = time.perf_counter()
                built = _build_ann(snap, self.dim, self._closing)
                with lock:
                    if self._cubes.get(cube_id) is not index or not index.ann_install(snap, built):
                        return
                log.info(
                    "approximate vector index built",
                    extra={"cube_id": cube_id, "rows": len(snap.positions), "seconds": time.perf_counter() - t0},
                )
            while not self._closing.is_set():
                with lock:
                    if self._cubes.get(cube_id) is not index or not index.ann_flush(ANN_FLUSH_CHUNK):
                        return
        finally:
            with lock:
                index.ann_busy = False

    def wait_background(self, timeout: float) -> bool:
        """Waits until no approximate index is being built or refreshed; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def loaded_cubes(self) -> set[str]:
        with self._guard:
            return set(self._cubes)

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        by_cube: dict[str, list[VectorRecord]] = {}
        for r in records:
            by_cube.setdefault(r.cube_id, []).append(r)
        for cube_id, recs in by_cube.items():
            with self._lock(cube_id):
                # Loaded first like by any other use: a new cube's copy starts empty (counted, no
                # scan) and takes these rows below; a cube that held rows is read once, not
                # counted again by every later write as long as nothing searched it.
                index = self._cube(cube_id)
                try:
                    self._durable.upsert(recs)
                except Exception:
                    self._cubes.pop(cube_id, None)
                    raise
                key = self._durable.key_of
                self._put(
                    cube_id,
                    index,
                    [
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
                    ],
                )

    def _put(self, cube_id: str, index: _CubeIndex, rows: list[ScannedRow]) -> None:
        index.put(rows)
        self._maintain(cube_id, index)

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        query = _unit_rows(np.asarray(vector, dtype=np.float32)[None, :])[0]
        with self._lock(cube_id):
            index = self._cube(cube_id)
            self._maintain(cube_id, index)
            return index.search(query, flt, limit, self._durable.key_of, self.approximate)

    def search_batch(
        self, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``vectors``, one filter for all; one pass over the
        cube's rows for the whole batch (dedupe checks every memory of an add this way)."""
        queries = _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        with self._lock(cube_id):
            index = self._cube(cube_id)
            self._maintain(cube_id, index)
            return index.search_batch(queries, flt, limit, self._durable.key_of, self.approximate)

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
            # The copy holds what the durable store holds for the cube, so the ids it holds are
            # exactly those to delete: by primary key, which Milvus Lite finds without the filter
            # pass over every row of the collection a scoped delete costs (a cube not loaded yet
            # is loaded first, once, as by any other use). An id it does not hold is not the
            # cube's (maybe another cube's): never sent. None held (each write a RoutedVectorStore
            # clears from its other store): no round trip at all.
            index = self._cube(cube_id)
            held = [mid for mid in dict.fromkeys(ids) if mid in index.pos]
            if not held:
                return
            try:
                self._durable.delete_ids(held)
            except Exception:
                self._cubes.pop(cube_id, None)
                raise
            index.remove(held)
            self._maintain(cube_id, index)

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
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout=10)
        self._durable.close()
        with self._guard:
            self._cubes.clear()
