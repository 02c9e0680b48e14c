"""Closing textmem while its background threads still read the graph."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem.app import build_memory, build_server
from services.textmem.memory import TextMemory
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


def slow_down(
    monkeypatch: pytest.MonkeyPatch, method: str, seconds: float, events: list[str], thread: str | None = None
) -> threading.Event:
    """Makes ``TextMemory.<method>`` sleep first (only on the named thread, if one is given), then
    log its name to ``events`` once it returned; the event is set when a slowed call starts."""
    started, real = threading.Event(), getattr(TextMemory, method)

    def slow(self: TextMemory, *args, **kwargs):  # type: ignore[no-untyped-def]
        if thread is not None and threading.current_thread().name != thread:
            return real(self, *args, **kwargs)
        started.set()
        time.sleep(seconds)
        result = real(self, *args, **kwargs)
        events.append(method)
        return result

    monkeypatch.setattr(TextMemory, method, slow)
    return started


def log_close(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    real = TextMemory.close

    def close(self: TextMemory) -> None:
        events.append("close")
        real(self)

    monkeypatch.setattr(TextMemory, "close", close)


async def test_stop_waits_for_a_repair_in_progress_before_closing_the_stores(
    tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The repair loop reads both stores from its own thread; the server's stop only told it to
    stop, and closed the stores under a repair in progress."""
    events: list[str] = []
    started = slow_down(monkeypatch, "repair_vector_writes", 0.5, events, thread="textmem-repair")
    log_close(monkeypatch, events)
    settings = TextMemSettings(
        listen_addr="127.0.0.1:0", data_dir=tmp_path / "data", repair_interval_s=0.05, milvus_lite_prewarm_cubes=0
    )
    server = build_server(settings, build_memory(settings, embedder))
    await server.start()
    assert await asyncio.to_thread(started.wait, 10)
    await server.stop(0.5)
    assert "repair_vector_writes" in events and events[-1] == "close", events


async def test_stop_waits_for_calls_that_outlived_the_grace_before_closing_the_stores(
    tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A call still running when the grace period ends is cancelled, but its thread runs on: the
    stores are closed only once it returned."""
    events: list[str] = []
    started = slow_down(monkeypatch, "search", 1.0, events)
    log_close(monkeypatch, events)
    settings = TextMemSettings(listen_addr="127.0.0.1:0", data_dir=tmp_path / "data", milvus_lite_prewarm_cubes=0)
    server = build_server(settings, build_memory(settings, embedder))
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = textmem_pb2_grpc.TextMemServiceStub(channel)
        call = stub.SearchMemories(textmem_pb2.SearchMemoriesRequest(cube_id="c", query="anything"))
        assert await asyncio.to_thread(started.wait, 10)
        await server.stop(0.1)
        with pytest.raises(grpc.aio.AioRpcError):
            await call  # cut off by the stop
    assert events == ["search", "close"]
