"""Closing textmem while its background threads still read the graph."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services.textmem.app import build_memory
from services.textmem.settings import TextMemSettings
from services.textmem.stores.sqlite_graph import SqliteGraphStore


def test_close_waits_for_the_prewarm_before_closing_the_graph(
    tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The vector index's prewarm thread asks the graph for the largest cubes. Closing the graph
    first closed the SQLite connection that thread was reading with: CI crashed with a segfault
    there (sqlite_graph.memory_stats, from the prewarm, while the suite stopped)."""
    inside, outcomes = threading.Event(), []
    real = SqliteGraphStore.memory_stats

    def slow_stats(self: SqliteGraphStore, top_cubes: int):  # type: ignore[no-untyped-def]
        if threading.current_thread().name != "exact-index-prewarm":
            return real(self, top_cubes)
        conn = self._conn()  # the prewarm thread's connection, in use across the sleep as in a query
        inside.set()
        time.sleep(0.5)
        self._local.conn = conn  # (a close meanwhile would have dropped it from the thread's slot)
        try:
            result = real(self, top_cubes)
        except Exception as exc:
            outcomes.append(exc)
            raise
        outcomes.append(result)
        return result

    monkeypatch.setattr(SqliteGraphStore, "memory_stats", slow_stats)
    memory = build_memory(TextMemSettings(data_dir=tmp_path / "data", milvus_lite_prewarm_cubes=4), embedder)
    assert inside.wait(10), "the prewarm did not start"
    memory.close()
    assert outcomes and all(not isinstance(o, Exception) for o in outcomes), outcomes
