"""VectorStore on Milvus: Milvus Lite (a local file) or a Milvus server (a URI).

One collection holds every cube. The cube is the partition key, so a search
touches only its cube's partition however many cubes share the collection.

Identifiers never enter a filter expression as given: cube, user and session
ids are stored and filtered as hex SHA-256 keys, memory ids are our own hex
UUIDs (checked), and types/statuses come from closed lists. Quotes, backslashes
or expression syntax in an id therefore cannot change a filter's meaning, on
Milvus Lite (which has no expression templates) as on a server.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from services.textmem.models import MEMORY_TYPES, STATUSES, MemoryFilter
from services.textmem.stores.vector import VectorRecord
from shared.errors import Unavailable

log = logging.getLogger(__name__)

_HEX_ID = re.compile(r"^[0-9a-f]{8,64}$")


def scope_key(value: str) -> str:
    """The filter-safe key stored for a cube, user or session id."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


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
    def __init__(self, uri: str, collection: str, dim: int, *, token: str = "", index_type: str = "AUTOINDEX") -> None:
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._collection = collection
        self._lock = threading.Lock()
        try:
            self._client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
            self._ensure_collection(index_type)
        except MilvusException as exc:
            raise Unavailable(f"Milvus unavailable at {uri}: {exc}", reason="VECTOR_STORE_UNAVAILABLE") from exc

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
        index = c.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type="COSINE")
        c.create_collection(self._collection, schema=schema, index_params=index)

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
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
                "vector": np.asarray(r.vector, dtype=np.float32).tolist(),
            }
            for r in records
        ]
        _ids_literal([r["id"] for r in rows])
        self._call("upsert", self._client.upsert, self._collection, rows)

    def _expr(self, cube_id: str, flt: MemoryFilter) -> str:
        parts = [f'cube_key == "{scope_key(cube_id)}"']
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
            data=[np.asarray(vector, dtype=np.float32).tolist()],
            limit=limit,
            filter=self._expr(cube_id, flt),
            output_fields=[],
            search_params={"metric_type": "COSINE"},
        )
        return [(hit["id"], float(hit["distance"])) for hit in res[0]]

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
        try:
            self._client.close()
        except Exception:  # closing a dead connection is not an error worth raising
            log.debug("closing Milvus client failed", exc_info=True)
