"""QueryCache (services/textmem/embedders.py): one embedding per distinct query, LRU.

The embedder here is a counting stand-in: the unit under test is the cache.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.textmem.embedders import QueryCache


class CountingEmbedder:
    model_name = "counting"
    dim = 4

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self._delay = delay_s
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.calls.update(texts)
        time.sleep(self._delay)
        return np.array([[len(t), hash(t) % 97, 1.0, 0.0] for t in texts], dtype=np.float32)


class FailingOnceEmbedder(CountingEmbedder):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        first = not self.calls
        out = super().embed(texts)
        if first:
            raise RuntimeError("embedder hiccup")
        return out


def test_a_repeated_query_is_embedded_once() -> None:
    emb = CountingEmbedder()
    cache = QueryCache(emb, 8)
    first = cache.get("hello")
    second = cache.get("hello")
    assert emb.calls == {"hello": 1}
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, emb.embed(["hello"])[0])


def test_distinct_queries_are_embedded_separately() -> None:
    emb = CountingEmbedder()
    cache = QueryCache(emb, 8)
    a, b = cache.get("a"), cache.get("bb")
    assert emb.calls == {"a": 1, "bb": 1}
    assert not np.array_equal(a, b)


def test_concurrent_requests_for_one_query_embed_it_once() -> None:
    emb = CountingEmbedder(delay_s=0.05)
    cache = QueryCache(emb, 8)
    barrier = threading.Barrier(8)

    def ask(_: int) -> np.ndarray:
        barrier.wait()
        return cache.get("same query")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))

    assert emb.calls == {"same query": 1}
    for r in results:
        np.testing.assert_array_equal(r, results[0])


def test_concurrent_mixed_queries_embed_each_once() -> None:
    emb = CountingEmbedder(delay_s=0.01)
    cache = QueryCache(emb, 16)
    queries = [f"q{i % 4}" for i in range(32)]
    barrier = threading.Barrier(8)

    def ask(q: str) -> np.ndarray:
        barrier.wait(timeout=5)  # eight at a time, all at once
        return cache.get(q)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, queries))
    assert emb.calls == {"q0": 1, "q1": 1, "q2": 1, "q3": 1}


def test_least_recently_used_entry_is_evicted() -> None:
    emb = CountingEmbedder()
    cache = QueryCache(emb, 2)
    cache.get("a")
    cache.get("b")
    cache.get("a")  # "b" is now the least recently used
    cache.get("c")  # evicts "b"
    assert emb.calls == {"a": 1, "b": 1, "c": 1}
    cache.get("a")
    cache.get("c")
    assert emb.calls == {"a": 1, "b": 1, "c": 1}
    cache.get("b")  # was evicted: embedded again, evicting "a"
    assert emb.calls["b"] == 2
    cache.get("c")
    cache.get("a")
    assert emb.calls == {"a": 2, "b": 2, "c": 1}


def test_capacity_one_keeps_only_the_last_query() -> None:
    emb = CountingEmbedder()
    cache = QueryCache(emb, 1)
    for q in ["a", "a", "b", "b", "a"]:
        cache.get(q)
    assert emb.calls == {"a": 2, "b": 1}


def test_capacity_zero_disables_caching() -> None:
    emb = CountingEmbedder()
    cache = QueryCache(emb, 0)
    cache.get("a")
    cache.get("a")
    assert emb.calls == {"a": 2}


def test_a_failed_embedding_is_not_cached_and_does_not_block_the_query() -> None:
    emb = FailingOnceEmbedder()
    cache = QueryCache(emb, 4)
    with pytest.raises(RuntimeError):
        cache.get("q")
    done = threading.Event()
    result: list[np.ndarray] = []

    def retry() -> None:
        result.append(cache.get("q"))
        done.set()

    threading.Thread(target=retry, daemon=True).start()
    assert done.wait(5), "the query stayed locked after a failed embedding"
    assert emb.calls == {"q": 2}
    cache.get("q")
    assert emb.calls == {"q": 2}
