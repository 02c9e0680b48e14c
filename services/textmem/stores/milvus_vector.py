"""VectorStore on Milvus: Milvus Lite (a local file) or a Milvus server (a URI).

One collection holds every cube, with the cube as the partition key. On a
Milvus server that confines a search to its cube's partition; Milvus Lite 3
scans every row of the collection on each search (measured: search time grows
with the collection, not the cube), which is one reason it is the laptop
default and not the production engine.

Identifiers never enter a filter expression as given: cube, user and session
ids are stored and filtered as hex SHA-256 keys, memory ids are our own hex
UUIDs (checked), and types/statuses come from closed lists. Quotes, backslashes
or expression syntax in an id therefore cannot change a filter's meaning, on
Milvus Lite (which has no expression templates) as on a server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from services.textmem.models import MEMORY_TYPES, STATUSES, MemoryFilter
from services.textmem.stores.exact_index import ScannedRow
from services.textmem.stores.vector import VectorRecord
from shared.errors import Unavailable

log = logging.getLogger(__name__)

_HEX_ID = re.compile(r"^[0-9a-f]{8,64}$")


def scope_key(value: str) -> str:
    """The filter-safe key stored for a cube, user or session id."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


@contextmanager
def _lite_thread_env(is_lite: bool, threads: int) -> Iterator[None]:
    """Milvus Lite runs as a child process that inherits our environment; on a small machine
    its OpenMP threads spin against the services' own and multiply search latency."""
    if not is_lite or threads <= 0:
        yield
        return
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


# On Milvus Lite, IVF_FLAT probing every list is exact and, measured here, no slower than
# probing a quarter of them, and faster than FLAT; a memory store must not miss a memory of a
# small cube because it fell in an unprobed list.
IVF_NLIST = 128


def _search_params(metric: str, index_type: str) -> dict:
    if index_type == "IVF_FLAT":
        return {"metric_type": metric, "params": {"nprobe": IVF_NLIST}}
    return {"metric_type": metric}


def _unit(vector: np.ndarray) -> np.ndarray:
    """Unit length, so that the IP index ranks and scores by cosine similarity."""
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _micros(seconds: float) -> int:
    """Times are stored as integer microseconds (finer than any caller's bound needs)."""
    return round(seconds * 1_000_000)


def _ids_literal(ids: Sequence[str]) -> str:
    for i in ids:
        if not _HEX_ID.match(i):
            raise ValueError(f"not a memory id: {i!r}")
    return "[" + ",".join(f'"{i}"' for i in ids) + "]"


def _closed(values: Sequence[str], allowed: Sequence[str]) -> str:
    for v in values:
        if v not in allowed:
            raise ValueError(f"unexpected value {v!r}")
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


class MilvusVectorStore:
    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        *,
        token: str = "",
        index_type: str = "",
        lite_flush_interval_s: float = 1.0,
        lite_threads: int = 1,
    ) -> None:
        self.is_lite = self.is_lite_uri(uri)
        if self.is_lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._collection = collection
        # Milvus Lite can miss rows that a flush is moving to a sealed segment while a search runs
        # (seen in the conformance suite: a fresh row absent from one search in ~5 runs). Its
        # searches run one at a time anyway, so on Lite every call takes this lock; a server
        # needs no such care.
        self._lite_lock: threading.Lock | None = threading.Lock() if self.is_lite else None
        try:
            with _lite_thread_env(self.is_lite, lite_threads):
                self._client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
            self._ensure_collection(index_type)
        except MilvusException as exc:
            raise Unavailable(f"Milvus unavailable at {uri}: {exc}", reason="VECTOR_STORE_UNAVAILABLE") from exc
        # Milvus Lite searches rows in unsealed (growing) segments by brute force, about 100x slower
        # than sealed ones, and seals only on flush. Flush shortly after writes, off the request path.
        # A Milvus server seals segments itself; flushing it from here would only add load.
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if self.is_lite and lite_flush_interval_s > 0:
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(lite_flush_interval_s,), name="milvus-lite-flush", daemon=True
            )
            self._flusher.start()

    @staticmethod
    def is_lite_uri(uri: str) -> bool:
        """Whether the URI names a Milvus Lite file rather than a server."""
        return "://" not in uri

    def _flush_loop(self, interval_s: float) -> None:
        while not self._closed.is_set():
            if not self._dirty.wait(timeout=0.5):
                continue
            # Let a burst of writes finish before sealing.
            if self._closed.wait(timeout=interval_s):
                return
            self._dirty.clear()
            try:
                self._call("flush", self._client.flush, self._collection)
            except Unavailable:
                log.warning("Milvus Lite flush failed; will retry after the next write", exc_info=True)
                self._dirty.set()

    def flush(self) -> None:
        """Seals what has been written so far."""
        self._dirty.clear()
        self._call("flush", self._client.flush, self._collection)

    def _ensure_collection(self, index_type: str) -> None:
        c = self._client
        if c.has_collection(self._collection):
            desc = c.describe_collection(self._collection)
            for f in desc.get("fields", []):
                if f.get("name") == "vector":
                    have = int(f.get("params", {}).get("dim", self.dim))
                    if have != self.dim:
                        raise Unavailable(
                            f"collection {self._collection} has dimension {have}, the embedder gives {self.dim}",
                            reason="EMBEDDING_DIMENSION_MISMATCH",
                        )
            self._metric, index_type = self._index_info()
            self._search_params = _search_params(self._metric, index_type)
            try:
                c.load_collection(self._collection)
            except MilvusException:
                if not self.is_lite:
                    raise
                # Seen in the chaos test: a textmem killed while Milvus Lite wrote an index file
                # left it cut short, and the next start could not load the collection. An index
                # is derived from the stored vectors: rebuild it, then load.
                log.warning("Milvus Lite could not load the collection; rebuilding its index", exc_info=True)
                self._rebuild_index(index_type)
                c.load_collection(self._collection)
            return
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field("cube_key", DataType.VARCHAR, max_length=32, is_partition_key=True)
        schema.add_field("user_key", DataType.VARCHAR, max_length=32)
        schema.add_field("session_key", DataType.VARCHAR, max_length=32)
        schema.add_field("memory_type", DataType.VARCHAR, max_length=32)
        schema.add_field("status", DataType.VARCHAR, max_length=16)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        # Vectors arrive unit-norm, so inner product is cosine similarity without the per-row
        # normalisation a COSINE index pays on every search.
        self._metric = "IP"
        if not index_type:
            index_type = "IVF_FLAT" if self.is_lite else "AUTOINDEX"
        self._search_params = _search_params(self._metric, index_type)
        params = {"nlist": IVF_NLIST} if index_type == "IVF_FLAT" else {}
        index = c.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type=self._metric, params=params)
        c.create_collection(self._collection, schema=schema, index_params=index)

    def _rebuild_index(self, index_type: str) -> None:
        c = self._client
        try:
            c.release_collection(self._collection)
        except MilvusException:
            log.debug("release before the index rebuild failed", exc_info=True)
        for name in c.list_indexes(self._collection):
            c.drop_index(self._collection, name)
        index_type = index_type or "IVF_FLAT"
        params = {"nlist": IVF_NLIST} if index_type == "IVF_FLAT" else {}
        index = c.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type=self._metric, params=params)
        c.create_index(self._collection, index)

    def _index_info(self) -> tuple[str, str]:
        """Metric and type of an existing collection's vector index (early collections were COSINE)."""
        try:
            for name in self._client.list_indexes(self._collection):
                info = self._client.describe_index(self._collection, name)
                if info.get("field_name") == "vector" and info.get("metric_type"):
                    return str(info["metric_type"]), str(info.get("index_type", ""))
        except MilvusException:
            log.warning("could not read the vector index; assuming IP", exc_info=True)
        return "IP", ""

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            if self._lite_lock is None:
                return fn(*args, **kwargs)
            with self._lite_lock:
                return fn(*args, **kwargs)
        except MilvusException as exc:
            raise Unavailable(f"Milvus {what} failed: {exc}", reason="VECTOR_STORE_UNAVAILABLE") from exc

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        rows = [
            {
                "id": r.id,
                "cube_key": scope_key(r.cube_id),
                "user_key": scope_key(r.user_id),
                "session_key": scope_key(r.session_id),
                "memory_type": r.memory_type,
                "status": r.status,
                "created_at": _micros(r.created_at),
                "vector": _unit(r.vector).tolist(),
            }
            for r in records
        ]
        _ids_literal([r["id"] for r in rows])
        self._call("upsert", self._client.upsert, self._collection, rows)
        self._dirty.set()

    def _expr(self, cube_id: str | Sequence[str], flt: MemoryFilter) -> str:
        if isinstance(cube_id, str):
            parts = [f'cube_key == "{scope_key(cube_id)}"']
        else:
            parts = ["cube_key in [" + ",".join(f'"{scope_key(c)}"' for c in cube_id) + "]"]
        parts.append(f"memory_type in {_closed(flt.types(), MEMORY_TYPES)}")
        parts.append(f"status in {_closed(flt.statuses(), STATUSES)}")
        if flt.user_id:
            parts.append(f'user_key == "{scope_key(flt.user_id)}"')
        if flt.session_id:
            parts.append(f'session_key == "{scope_key(flt.session_id)}"')
        if flt.created_after is not None:
            parts.append(f"created_at >= {_micros(flt.created_after)}")
        if flt.created_before is not None:
            parts.append(f"created_at < {_micros(flt.created_before)}")
        return " and ".join(parts)

    def search(self, cube_id: str, vector: np.ndarray, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        res = self._call(
            "search",
            self._client.search,
            self._collection,
            data=[_unit(vector).tolist()],
            limit=limit,
            filter=self._expr(cube_id, flt),
            output_fields=[],
            search_params=self._search_params,
        )
        return [(hit["id"], float(hit["distance"])) for hit in res[0]]

    def search_batch(
        self, cube_id: str, vectors: np.ndarray, flt: MemoryFilter, limit: int
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``vectors``, one filter for all, in one request."""
        if len(vectors) == 0:
            return []
        res = self._call(
            "search",
            self._client.search,
            self._collection,
            data=[_unit(v).tolist() for v in vectors],
            limit=limit,
            filter=self._expr(cube_id, flt),
            output_fields=[],
            search_params=self._search_params,
        )
        return [[(hit["id"], float(hit["distance"])) for hit in hits] for hits in res]

    def search_many(
        self,
        cube_ids: Sequence[str],
        vector: np.ndarray,
        flt: MemoryFilter,
        limit: int,
        available: Callable[[str], int] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        # One grouping search (group = cube) instead of one search per cube: Milvus Lite runs
        # searches one at a time, so a fan-out over n cubes would otherwise cost n searches.
        by_key = {scope_key(c): c for c in cube_ids}
        out: dict[str, list[tuple[str, float]]] = {c: [] for c in cube_ids}
        res = self._call(
            "search",
            self._client.search,
            self._collection,
            data=[_unit(vector).tolist()],
            limit=len(by_key),
            filter=self._expr(list(cube_ids), flt),
            output_fields=["cube_key"],
            search_params=self._search_params,
            group_by_field="cube_key",
            group_size=limit,
            strict_group_size=True,
        )
        for hit in res[0]:
            cube = by_key.get(hit["entity"]["cube_key"])
            if cube is not None:
                out[cube].append((hit["id"], float(hit["distance"])))
        for cube, hits in out.items():
            hits.sort(key=lambda h: -h[1])
            # Grouping search is best effort: a group whose hits rank low overall (or that sits in an
            # unsealed segment) can come back short or missing. A short group is searched on its own,
            # so every cube gets exactly what search() would give it.
            if len(hits) < limit and (available is None or len(hits) < min(limit, available(cube))):
                out[cube] = self.search(cube, vector, flt, limit)
        return out

    def get_vectors(self, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        rows = self._call(
            "query",
            self._client.query,
            self._collection,
            filter=f'cube_key == "{scope_key(cube_id)}" and id in {_ids_literal(ids)}',
            output_fields=["id", "vector"],
        )
        return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}

    def key_of(self, value: str) -> str:
        """The key a cube, user or session id is stored under."""
        return scope_key(value)

    def scan(self, cube_id: str, batch_size: int = 2000) -> Iterator[ScannedRow]:
        """Every row of the cube, vectors included (what an in-process index loads from)."""
        it = self._call(
            "query",
            self._client.query_iterator,
            self._collection,
            batch_size=batch_size,
            filter=f'cube_key == "{scope_key(cube_id)}"',
            output_fields=["id", "user_key", "session_key", "memory_type", "status", "created_at", "vector"],
        )
        try:
            while True:
                rows = self._call("query", it.next)
                if not rows:
                    return
                for r in rows:
                    yield ScannedRow(
                        id=r["id"],
                        user_key=r["user_key"],
                        session_key=r["session_key"],
                        memory_type=r["memory_type"],
                        status=r["status"],
                        created_us=int(r["created_at"]),
                        vector=np.asarray(r["vector"], dtype=np.float32),
                    )
        finally:
            it.close()

    def move_rows(self, memory_types: Sequence[str], to: MilvusVectorStore, batch_size: int = 1000) -> int:
        """Moves every row of the given memory types, whatever its cube, to another store's
        collection, as stored (scope keys and unit vectors); returns how many rows moved.

        Every row is written there before any is deleted here (an iterator's pages must not shift
        under deletes), so a crash leaves rows in both collections, never in neither, and the next
        run (idempotent: upserts by id) finishes the move. The delete names the types too, so a
        row whose type changed meanwhile stays."""
        if to.dim != self.dim:
            raise ValueError(f"cannot move {self.dim}-dimensional rows to a {to.dim}-dimensional store")
        types = _closed(memory_types, MEMORY_TYPES)
        fields = ["id", "cube_key", "user_key", "session_key", "memory_type", "status", "created_at", "vector"]
        it = self._call(
            "query",
            self._client.query_iterator,
            self._collection,
            batch_size=batch_size,
            filter=f"memory_type in {types}",
            output_fields=fields,
        )
        moved: list[str] = []
        try:
            while True:
                rows = self._call("query", it.next)
                if not rows:
                    break
                batch = [
                    {
                        **{f: r[f] for f in fields if f != "vector"},
                        "vector": np.asarray(r["vector"], np.float32).tolist(),
                    }
                    for r in rows
                ]
                _ids_literal([r["id"] for r in batch])
                to._call("upsert", to._client.upsert, to._collection, batch)
                to._dirty.set()
                moved.extend(r["id"] for r in batch)
        finally:
            it.close()
        for i in range(0, len(moved), 1000):
            chunk = moved[i : i + 1000]
            self._call(
                "delete",
                self._client.delete,
                self._collection,
                filter=f"id in {_ids_literal(chunk)} and memory_type in {types}",
            )
        return len(moved)

    def delete(self, cube_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        for i in range(0, len(ids), 1000):
            chunk = list(ids[i : i + 1000])
            self._call(
                "delete",
                self._client.delete,
                self._collection,
                filter=f'cube_key == "{scope_key(cube_id)}" and id in {_ids_literal(chunk)}',
            )

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Deletes rows by primary key alone, whatever their cube: only for a caller that knows
        each id is a row of the cube it means (ids are unique across the collection), as the
        exact index does of a cube it holds. Milvus Lite finds a primary key without evaluating
        a filter over every row: 4-6 ms against 50-100 ms for :meth:`delete` at 14,000 rows,
        where a filtered delete grows with the collection."""
        for i in range(0, len(ids), 1000):
            chunk = list(ids[i : i + 1000])
            _ids_literal(chunk)  # the same check of what an id may be as every other call
            self._call("delete", self._client.delete, self._collection, ids=chunk)

    def delete_cube(self, cube_id: str) -> None:
        self._call("delete", self._client.delete, self._collection, filter=f'cube_key == "{scope_key(cube_id)}"')

    def count(self, cube_id: str) -> int:
        rows = self._call(
            "count",
            self._client.query,
            self._collection,
            filter=f'cube_key == "{scope_key(cube_id)}"',
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def close(self) -> None:
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        try:
            self._client.close()
        except Exception:  # closing a dead connection is not an error worth raising
            log.debug("closing Milvus client failed", exc_info=True)
