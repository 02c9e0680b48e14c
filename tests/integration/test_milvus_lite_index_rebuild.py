"""A Milvus Lite collection that cannot be loaded at start (an index file cut short by a killed
process, seen in the chaos test) gets its index rebuilt from the stored vectors, and every
vector is found again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient, MilvusException

from services.textmem.models import MemoryFilter
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.vector import VectorRecord


def _records(n: int, dim: int) -> list[VectorRecord]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        v = rng.normal(size=dim).astype(np.float32)
        out.append(
            VectorRecord(f"{i:032x}", "cube", "u", "s", "LongTermMemory", "activated", 1.0, v / np.linalg.norm(v))
        )
    return out


def test_a_collection_that_fails_to_load_is_reindexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = str(tmp_path / "milvus.db")
    records = _records(64, 16)
    store = MilvusVectorStore(uri, "memos_text", 16)
    store.upsert(records)
    store.flush()
    store.close()

    real_load = MilvusClient.load_collection
    real_drop = MilvusClient.drop_index
    loads, drops = [], []

    def load_failing_once(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(name)
        if len(loads) == 1:
            raise MilvusException(message="read error in data_000001_000064.vector.ivf_flat.idx: 3998 != 15360")
        return real_load(self, name, *args, **kwargs)

    def counting_drop(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        drops.append(args)
        return real_drop(self, *args, **kwargs)

    monkeypatch.setattr(MilvusClient, "load_collection", load_failing_once)
    monkeypatch.setattr(MilvusClient, "drop_index", counting_drop)
    reopened = MilvusVectorStore(uri, "memos_text", 16)
    try:
        assert len(loads) == 2 and len(drops) == 1  # failed, rebuilt, loaded
        assert reopened.count("cube") == len(records)
        for r in records[:5]:
            assert reopened.search("cube", r.vector, MemoryFilter(), 1)[0][0] == r.id
    finally:
        reopened.close()
