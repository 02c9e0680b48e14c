"""Scale benchmark (``make bench-scale``): search latency on cubes of 10,000 and 100,000 memories.

The issue's targets: search p50 on a cube of 100,000 memories at most 30 ms at concurrency 1
on the embedded backends, and a cost that grows sub-linearly with the cube (the ratio
p50(100k) / p50(10k) printed, against the 10x the cube grew); and the same search on a real
Neo4j side by side with the embedded store.

In this process, for each backend (``--backends``), on textmem's default settings otherwise
(``build_memory``: Milvus Lite behind the exact in-process vector index, textmem's default
embedder for queries, one thread, the default retrieval recipe), under a temporary data directory:

* ``sqlite``: the embedded graph store (SQLite, full-text search from the per-cube in-process
  BM25 copies);
* ``neo4j``: a real Neo4j 5 Community server started here by the test tooling
  (``tools/neo4j/start.sh``, as ``tests/neo4j_server.py`` does: Java 17 and Maven; the first
  build downloads Neo4j), full-text search from its Lucene index, with the same vector store.

One cube per size of ``--sizes`` (default 10,000 and 100,000), each filled from the corpus's
start (the small cube holds the first memories of the large one), is written through
``TextMemory.write_memories`` (the real write path: the write-ahead marks, Milvus Lite's upsert
and the exact index, the graph store's insert with its FOLLOWS edges and, on SQLite, the change
log the BM25 copies follow) in batches of ``--load-batch``. Then:

1. search latency at concurrency 1 (``TextMemory.search``, top_k 10, no filter): p50/p90/p99 over
   ``--queries`` distinct LoCoMo questions after ``--warmup`` warm-up ones, with the query
   embedding included in every request (textmem's query-embedding cache is off, so each
   search embeds its query on textmem's one-thread embedder). The cubes are measured side by
   side: each question is searched in every cube in turn, the order alternating, so load from
   other work on the machine lands on every size alike and the ratio p50(large) / p50(small)
   holds up on a shared machine. The first search of each cube is timed apart (it loads the
   cube's BM25 copy). The approximate vector index of a large cube is built in the background
   after the load; the searches start once it is ready (the wait is reported). Unless
   ``--no-compare-exact``, every search is made twice, with the approximate index and with the
   exact scan alone (the order alternating), so that both are measured side by side on the same
   cubes: the rows "exact" are what the search cost before the approximate index;
2. the load throughput (memories/s) of each cube's load;
3. in each cube, side by side: where a search's time goes, each step of the search timed on
   its own (query embedding, exact vector search, lexical search, rank: fusion + neighbours +
   hydration + boosts, the cube count the answer carries). ``TextMemory.search`` runs the
   lexical search beside the embedding and vector search, so its time is less than the sum.
   The vector search's answers are also checked against a float32 scan of every row of the
   cube's exact-index copy (recall@depth: 1.0 unless the index's 8-bit first pass, see
   stores/exact_index.py, ever let a row slip), with how many searches the 8-bit pass answered;
   on a cube large enough for the approximate index (stores/exact_index.py, ``ANN_MIN_ROWS``)
   this recall is the approximate index's (it proposes candidates, scored exactly);
4. ``--dedupe-probe``: on the largest cube, more memories written with dedupe on and off,
   alternating batches: what dedupe costs per memory once the cube is that large.

Why the bulk load differs from a live one, and what that leaves out:

* Memories are the LoCoMo turns as single-turn memories (``Speaker (date): text``, the
  gateway benchmark's corpus), cycled with every pass moved 400 days later, so all texts are
  distinct. Embedding every one of 100,000 texts with MiniLM takes 30 to 50 minutes on this
  2-core machine (float graph, idle: 35 texts/s on one thread, 57 on two), far more than the
  rest of the load; so by default the first pass's texts (5,882) are embedded once, up front,
  by textmem's embedder model (``--embed-threads`` threads; kept between runs under
  ``--vector-cache``, outside the repo), and a memory of a later pass is given the vector of
  the turn it repeats moved by fixed noise to cosine ~0.85 with it: repeats are neither ties nor dedupe's near
  duplicates; the exact index's 8-bit first pass is exact whatever the values, and only how
  often it must fall back to the float32 scan (reported) could depend on them. The
  embedder's own rate is measured every run, so that the load rate with embedding can be
  worked out; ``--embed-all`` embeds every text during the load instead (slow).
* Dedupe is off for the bulk load unless ``--dedupe``: with it on, every add searches the whole
  cube for its new memories' near duplicates (one batched search per type and user of the add
  since dedupe batches them; before, one search per memory: 20 to 30 ms more per memory at
  20,000, about 45 ms at 100,000, against 2 ms per memory without), so a load's cost still
  grows with the cube; ``--dedupe-probe`` measures it.
* Searches run in this process, without gRPC: the gateway benchmark measures the RPC path
  (about 1 to 2 ms more at concurrency 1).

It prints the numbers, the ratios and the targets side by side, with the machine's load
average and how much CPU other processes used during each row (the machine is shared), and
writes ``benchmarks/results/scale_latest.json``. It never fails on a target: the exit status is
non-zero only when a backend could not run. ``--sizes 2000,20000`` is a quick check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "gen" / "python", ROOT / "sdk" / "python"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from benchmarks.bench_gateway import (  # noqa: E402
    DEFAULT_DATA,
    Corpus,
    CpuMeter,
    Progress,
    fmt_table,
    free_port,
    latency_stats,
    loadavg,
    log,
    run_header,
    title_lines,
    verdict,
)
from services.textmem.app import build_memory  # noqa: E402
from services.textmem.embedders import Embedder, build_embedder  # noqa: E402
from services.textmem.memory import TextMemory  # noqa: E402
from services.textmem.models import Memory, MemoryFilter, Source  # noqa: E402
from services.textmem.settings import TextMemSettings  # noqa: E402

RESULTS_PATH = ROOT / "benchmarks" / "results" / "scale_latest.json"
NEO4J_START = ROOT / "tools" / "neo4j" / "start.sh"
USER = "bench-user"
CUBE = "bench-scale"
SESSION = "bench"
TOP_K = 10
BACKENDS = ("sqlite", "neo4j")
# Per-dimension noise on a repeated turn's vector: cosine 1 / sqrt(1 + dim * sd^2), ~0.85 at 384.
PASS_NOISE = 0.032
# vector_recall: what the approximate index of large cubes is accepted at (recall@depth of the
# vector search against a float32 scan of every row; exact cubes score 1.0).
TARGETS = {"search_p50_ms": 30.0, "growth": "sub-linear: p50 ratio below the size ratio", "vector_recall": 0.95}


# embedding ---------------------------------------------------------------------------------------------------


class BenchEmbedder:
    """textmem's embedder for queries; memory texts of the bulk load come from a table filled up
    front (see the module doc) or, where missing, from a second embedder with more threads."""

    def __init__(self, query: Embedder, bulk: Embedder) -> None:
        self.query, self.bulk = query, bulk
        self.model_name, self.dim = query.model_name, query.dim
        self.table: dict[str, np.ndarray] = {}
        # Vectors of the first pass, by corpus position (None: every text is embedded).
        self.base: np.ndarray | None = None
        self.loading = False
        self.bulk_embedded = 0

    def vector_of(self, i: int) -> np.ndarray:
        """The vector of corpus position ``i``: the first pass's own; a later pass's is the turn's,
        moved by fixed noise to cosine ~0.85 with it (below dedupe's 0.90), so that repeats are
        neither identical (ties) nor near duplicates. The same for every backend."""
        assert self.base is not None
        n = len(self.base)
        v = self.base[i % n]
        if i < n:
            return v
        noise = np.random.default_rng(i).standard_normal(self.dim).astype(np.float32) * PASS_NOISE
        w = v + noise
        return w / np.linalg.norm(w)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = []
        for i, t in enumerate(texts):
            v = self.table.get(t)
            if v is None:
                missing.append(i)
            else:
                out[i] = v
        if missing:
            embedder = self.bulk if self.loading else self.query
            out[missing] = embedder.embed([texts[i] for i in missing])
            if self.loading:
                self.bulk_embedded += len(missing)
        return out


def embed_first_pass(corpus: Corpus, embedder: Embedder, n: int, batch: int = 256) -> tuple[np.ndarray, float]:
    """Vectors of the first ``n`` memory texts (one pass at most); returns them and the seconds taken."""
    texts = [corpus.memory(i)[0] for i in range(n)]
    out = np.empty((n, embedder.dim), dtype=np.float32)
    progress = Progress("embed first pass", n, "texts")
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        out[s : s + batch] = embedder.embed(texts[s : s + batch])
        progress.add(min(batch, n - s))
    return out, time.perf_counter() - t0


def vector_cache_path(cache_dir: Path, data: Path, embedder: Embedder, n: int) -> Path:
    """Where the first pass's vectors are kept between runs: named by the corpus file's bytes,
    the embedding model (its ONNX file's name carries a hash of the weights) and the count."""
    h = hashlib.sha256(data.read_bytes())
    h.update(f"{embedder.model_name}|{getattr(embedder, 'onnx_path', type(embedder).__name__)}|{n}".encode())
    return cache_dir / f"locomo-first-pass-{h.hexdigest()[:20]}.npy"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memos" / "bench-scale"


# neo4j -------------------------------------------------------------------------------------------------------


class Neo4jProcess:
    """A throwaway Neo4j 5 Community server from tools/neo4j/start.sh (auth off, loopback, data in
    a temporary directory); it also stops by itself once this process is gone."""

    def __init__(self, data_dir: Path, java_opts: str, pagecache_mb: int) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.uri = f"bolt://127.0.0.1:{self.port}"
        self.java_opts = f"{java_opts} -Dmemos.neo4j.pagecacheMb={pagecache_mb}"
        self.pid: int | None = None

    def start(self) -> float:
        for tool in ("java", "mvn"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found (Java 17+ and Maven build and run the Neo4j server)")
        t0 = time.perf_counter()
        build = subprocess.run([str(NEO4J_START), "--build-only"], capture_output=True, text=True, timeout=1200)
        if build.returncode != 0:
            raise RuntimeError(f"building tools/neo4j failed: {(build.stderr or build.stdout)[-2000:]}")
        env = {
            **os.environ,
            "MEMOS_NEO4J_WATCH_PID": str(os.getpid()),
            "NEO4J_JAVA_OPTS": self.java_opts,
            "NEO4J_START_TIMEOUT_S": "300",
        }
        proc = subprocess.run(
            [str(NEO4J_START), str(self.port), str(self.data_dir)], capture_output=True, text=True, env=env, timeout=330
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"tools/neo4j/start.sh failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
            )
        self.pid = int((self.data_dir / "neo4j.pid").read_text().strip())
        return time.perf_counter() - t0

    def rss_mib(self) -> float | None:
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def flush_milvus(store: Any) -> None:
    """Seals what Milvus Lite holds unsealed, through whatever stores wrap it."""
    if hasattr(store, "flush"):
        store.flush()
        return
    for inner in ("durable", "main", "routed"):
        if hasattr(store, inner):
            flush_milvus(getattr(store, inner))


def describe_store(store: Any) -> str:
    """The vector store's layers: RoutedVectorStore(ExactIndexVectorStore(MilvusVectorStore), ...)."""
    inner = [getattr(store, a) for a in ("durable", "main", "routed") if hasattr(store, a)]
    name = type(store).__name__
    return f"{name}({', '.join(describe_store(x) for x in inner)})" if inner else name


def exact_stores(store: Any) -> list[Any]:
    """The exact-index stores among the vector store's layers (those with an approximate index)."""
    found = [store] if hasattr(store, "approximate") and hasattr(store, "wait_background") else []
    for inner in ("main", "routed"):
        if hasattr(store, inner):
            found += exact_stores(getattr(store, inner))
    return found


def set_approximate(store: Any, on: bool) -> None:
    for s in exact_stores(store):
        s.approximate = on


def own_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# the benchmark -----------------------------------------------------------------------------------------------


class Backend:
    """One TextMemory on one graph backend, with one cube per size of ``--sizes``."""

    def __init__(self, name: str, args: argparse.Namespace, corpus: Corpus, embedder: BenchEmbedder, tmp: Path) -> None:
        self.name, self.args, self.corpus, self.embedder = name, args, corpus, embedder
        self.dir = tmp / name
        self.dir.mkdir(parents=True)
        self.neo4j: Neo4jProcess | None = None
        self.mem: TextMemory | None = None
        self.size: dict[str, int] = {}  # memories per cube; a cube holds corpus positions 0..size-1
        own = os.getpid()
        self.meter = CpuMeter(lambda: [own])

    def open(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        if self.name == "neo4j":
            self.neo4j = Neo4jProcess(self.dir / "neo4j", self.args.neo4j_java_opts, self.args.neo4j_pagecache_mb)
            log(f"[{self.name}] starting Neo4j (tools/neo4j/start.sh)")
            info["neo4j_start_s"] = self.neo4j.start()
            info["neo4j_uri"] = self.neo4j.uri
            log(
                f"[{self.name}] Neo4j serving on {self.neo4j.uri} (pid {self.neo4j.pid}) in {info['neo4j_start_s']:.1f}s"
            )
            overrides = {
                "graph_store": "neo4j",
                "neo4j_uri": self.neo4j.uri,
                "neo4j_user": "",
                "neo4j_database": "neo4j",
            }
            pids = [os.getpid(), self.neo4j.pid]
            self.meter = CpuMeter(lambda: [p for p in pids if p])
        # textmem's defaults (no MEMOS_* variables read), but no query-embedding cache: every
        # search pays for its query embedding, whatever questions earlier rows used.
        settings = TextMemSettings.model_construct(
            data_dir=self.dir / "data",
            listen_addr="127.0.0.1:0",
            query_cache_size=0,
            dedupe=self.args.dedupe,
            **overrides,
        )
        info["settings"] = {
            k: getattr(settings, k)
            for k in (
                "graph_store",
                "milvus_lite_exact_index",
                "sqlite_lexical_index",
                "embedding_runtime",
                "embedding_threads",
                "retrieval_recipe",
                "dedupe",
                "query_cache_size",
            )
        }
        self.mem = build_memory(settings, embedder=self.embedder)  # type: ignore[arg-type]
        info["vector_store"] = describe_store(self.mem.vectors)
        return info

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
            self.mem = None
        if self.neo4j is not None:
            self.neo4j.stop()

    def candidates(self, cube: str, indices: range) -> list[Memory]:
        out = []
        for i in indices:
            text, turn, when = self.corpus.memory(i)
            if self.embedder.base is not None and text not in self.embedder.table:
                self.embedder.table[text] = self.embedder.vector_of(i)
            out.append(
                Memory(
                    id="",
                    cube_id=cube,
                    memory=text,
                    memory_type="LongTermMemory",
                    key=text[:80],
                    tags=["bench"],
                    sources=[Source(type="chat", role=turn.role, content=turn.text, chat_time=when)],
                )
            )
        return out

    def write(self, cube: str, n: int, label: str, dedupe: bool | None = None, batch: int = 0) -> dict[str, Any]:
        """Writes the cube's next ``n`` corpus positions in batches; returns the load's numbers."""
        mem = self.mem
        assert mem is not None
        if cube not in self.size:
            mem.ensure_cube(cube, USER)
            self.size[cube] = 0
        batch = batch or self.args.load_batch
        progress = Progress(label, n, "memories")
        before = self.meter.snapshot()
        saved = mem.dedupe
        if dedupe is not None:
            mem.dedupe = dedupe
        self.embedder.loading = True
        embedded = self.embedder.bulk_embedded
        written = 0
        t0 = time.perf_counter()
        try:
            for s in range(0, n, batch):
                k = min(batch, n - s)
                start = self.size[cube]
                res = mem.write_memories(cube, USER, SESSION, self.candidates(cube, range(start, start + k)))
                self.size[cube] += k
                written += len(res.memories)
                progress.add(k)
        finally:
            self.embedder.loading = False
            mem.dedupe = saved
        wall = time.perf_counter() - t0
        # Milvus Lite seals what was written a second after a burst; sealed here, timed apart,
        # so that the seal does not run during the searches.
        t1 = time.perf_counter()
        flush_milvus(mem.vectors)
        seal = time.perf_counter() - t1
        return {
            "cube": cube,
            "memories": written,
            "seconds": wall,
            "per_s": written / wall if wall > 0 else 0.0,
            "embedded_during_load": self.embedder.bulk_embedded - embedded,
            "milvus_seal_s": seal,
            "other_cpu_pct": CpuMeter.other_pct(before, self.meter.snapshot()),
        }

    def wait_vector_index(self) -> float:
        """Waits for the vector store's background work (the approximate indexes of large cubes);
        returns the seconds waited."""
        assert self.mem is not None
        t0 = time.perf_counter()
        for store in exact_stores(self.mem.vectors):
            if not store.wait_background(1800):
                log(f"[{self.name}] the approximate vector index was not ready after 30 min; measuring anyway")
        return time.perf_counter() - t0

    def search_rows(
        self, cubes: list[str], queries: list[str], warmup: int, modes: Sequence[bool] = (True,)
    ) -> dict[bool, list[dict[str, Any]]]:
        """One row per cube and vector mode (``modes``: approximate index on, off), measured side
        by side: each query is searched in every cube and mode in turn (the order alternating),
        so that other load on the machine lands on every row alike."""
        mem = self.mem
        assert mem is not None
        flt = MemoryFilter()
        pairs = [(cube, mode) for cube in cubes for mode in modes]
        first: dict[str, tuple[float, int]] = {}
        for cube in cubes:
            t0 = time.perf_counter()
            hits, _ = mem.search(cube, queries[0], TOP_K, flt)
            first[cube] = ((time.perf_counter() - t0) * 1000, len(hits))
        for q in queries[1:warmup]:
            for cube, mode in pairs:
                set_approximate(mem.vectors, mode)
                mem.search(cube, q, TOP_K, flt)
        latencies: dict[tuple[str, bool], list[float]] = {p: [] for p in pairs}
        empty = dict.fromkeys(pairs, 0)
        before = self.meter.snapshot()
        t_all = time.perf_counter()
        try:
            for j, q in enumerate(queries[warmup:]):
                for cube, mode in pairs if j % 2 == 0 else pairs[::-1]:
                    set_approximate(mem.vectors, mode)
                    t0 = time.perf_counter()
                    hits, _total = mem.search(cube, q, TOP_K, flt)
                    latencies[cube, mode].append(time.perf_counter() - t0)
                    empty[cube, mode] += not hits
        finally:
            set_approximate(mem.vectors, True)
        wall = time.perf_counter() - t_all
        other = CpuMeter.other_pct(before, self.meter.snapshot())
        rows: dict[bool, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for cube, mode in pairs:
            lat = latencies[cube, mode]
            stats = latency_stats(lat, wall)
            stats["qps"] = len(lat) / sum(lat)  # the block's wall time spans every row
            row = {
                "backend": self.name,
                "cube": cube,
                "memories": self.size[cube],
                "vector_index": "approximate" if mode else "exact",
                "first_search_ms": first[cube][0],
                "first_search_hits": first[cube][1],
                **stats,
                "empty_results": empty[cube, mode],
                "other_cpu_pct": other,
            }
            log(
                f"[{self.name}] {row['memories']:,} memories, {row['vector_index']}: p50 {row['p50_ms']:.1f} ms, "
                f"p90 {row['p90_ms']:.1f}, p99 {row['p99_ms']:.1f} (first search {row['first_search_ms']:.0f} ms; "
                f"other processes {other:.0f}% CPU)"
            )
            rows[mode].append(row)
        return rows

    def breakdown(self, cubes: list[str], queries: list[str], warmup: int) -> dict[str, Any]:
        """Each step of a search timed on its own, then the whole search, per query and cube."""
        mem = self.mem
        assert mem is not None
        flt = MemoryFilter()
        depth = mem.candidate_depth(TOP_K, flt)
        names = ["embed query", "vector search", "lexical", "rank (fuse, neighbours, hydrate, boosts)", "count"]
        exact_step = "vector search, exact scan (before)"
        steps = {c: {k: [] for k in [*names, "sum of the steps", "search() end to end", exact_step]} for c in cubes}
        before = self.meter.snapshot()
        for i, q in enumerate(queries):
            for cube in cubes if i % 2 == 0 else cubes[::-1]:
                t = [time.perf_counter()]
                qvec = mem.embedder.embed([q])[0]
                t.append(time.perf_counter())
                dense = mem.vectors.search(cube, qvec, flt, depth)
                t.append(time.perf_counter())
                lexical = mem.lexical_candidates(cube, q, TOP_K, flt)
                t.append(time.perf_counter())
                mem.rank_candidates(cube, q, flt, depth, dense, lexical)
                t.append(time.perf_counter())
                mem.graph.count(cube, flt)
                t.append(time.perf_counter())
                t0 = time.perf_counter()
                mem.search(cube, q, TOP_K, flt)
                whole = time.perf_counter() - t0
                set_approximate(mem.vectors, False)
                try:
                    t1 = time.perf_counter()
                    mem.vectors.search(cube, qvec, flt, depth)
                    exact = time.perf_counter() - t1
                finally:
                    set_approximate(mem.vectors, True)
                if i < warmup:
                    continue
                got: dict[str, list[float]] = steps[cube]
                got[exact_step].append(exact)
                for k, a, b in zip(names, t, t[1:], strict=False):
                    got[k].append(b - a)
                got["sum of the steps"].append(t[-1] - t[0])
                got["search() end to end"].append(whole)
        other = CpuMeter.other_pct(before, self.meter.snapshot())
        exactness = {cube: vector_exactness(mem, cube, queries[warmup:], flt, depth) for cube in cubes}
        return {
            "queries": len(queries) - warmup,
            "other_cpu_pct": other,
            "vector_exactness": exactness,
            "cubes": {
                cube: {
                    "memories": self.size[cube],
                    "steps": {
                        k: {
                            "p50_ms": float(np.percentile(v, 50) * 1000),
                            "p90_ms": float(np.percentile(v, 90) * 1000),
                            "mean_ms": float(np.mean(v) * 1000),
                        }
                        for k, v in steps[cube].items()
                        if v
                    },
                }
                for cube in cubes
            },
        }

    def dedupe_probe(self, cube: str, n: int) -> dict[str, Any]:
        """``n`` more memories with dedupe on and ``n`` with it off, in alternating batches."""
        batch = min(self.args.load_batch, max(n // 4, 1))
        at_start = self.size[cube]
        sums = {True: [0, 0.0], False: [0, 0.0]}
        left = {True: n, False: n}
        on = True
        while left[True] or left[False]:
            if left[on]:
                k = min(batch, left[on])
                r = self.write(cube, k, f"dedupe {'on' if on else 'off'}", dedupe=on, batch=k)
                sums[on][0] += r["memories"]
                sums[on][1] += r["seconds"]
                left[on] -= k
            on = not on
        out = {
            "cube_memories_at_start": at_start,
            "batch": batch,
            "on": {"memories": sums[True][0], "seconds": sums[True][1], "ms_per_memory": 1000 * sums[True][1] / n},
            "off": {"memories": sums[False][0], "seconds": sums[False][1], "ms_per_memory": 1000 * sums[False][1] / n},
        }
        log(
            f"[{self.name}] dedupe probe at {at_start:,}: on {out['on']['ms_per_memory']:.2f} ms"
            f"/memory, off {out['off']['ms_per_memory']:.2f} ms/memory"
        )
        return out


def vector_exactness(mem: TextMemory, cube: str, queries: list[str], flt: MemoryFilter, depth: int) -> dict[str, Any]:
    """The vector search's answers against a float32 scan of every passing row of the cube's
    exact-index copy: recall@depth (1.0 when exact) and how many searches the 8-bit first pass
    answered without falling back. Empty when the store has no exact index."""
    store: Any = mem.vectors
    store = getattr(store, "main", store)
    index = getattr(store, "_cubes", {}).get(cube)
    if index is None:
        return {}
    key_of = store.durable.key_of
    found = wanted = 0
    for q in queries:
        qvec = mem.embedder.embed([q])[0]
        got = {i for i, _ in mem.vectors.search(cube, qvec, flt, depth)}
        unit = qvec / np.linalg.norm(qvec)
        hits = np.flatnonzero(index.mask(flt, key_of))
        scores = index.vectors[hits] @ unit.astype(np.float32)
        top = {index.ids[hits[j]] for j in np.argsort(-scores)[:depth]}
        found += len(got & top)
        wanted += len(top)
    out: dict[str, Any] = {"queries": len(queries), "depth": depth, "recall": found / wanted if wanted else 1.0}
    counts = getattr(index, "counts", None)
    if counts is not None:
        out["searches_by_path"] = dict(counts)
    return out


def run_backend(
    name: str,
    args: argparse.Namespace,
    corpus: Corpus,
    embedder: BenchEmbedder,
    queries: list[str],
    tmp: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": name, "loads": [], "search": []}
    backend = Backend(name, args, corpus, embedder, tmp)
    cubes = [f"{CUBE}-{size}" for size in args.sizes]
    try:
        out.update(backend.open())
        for cube, size in zip(cubes, args.sizes, strict=True):
            log(f"[{name}] loading {size:,} memories into {cube} in batches of {args.load_batch:,}")
            load = backend.write(cube, size, f"[{name}] load {cube}")
            out["loads"].append(load)
            log(
                f"[{name}]   {load['memories']:,} in {load['seconds']:.1f}s = {load['per_s']:.0f} memories/s "
                f"(Milvus Lite seal {load['milvus_seal_s']:.1f}s; other processes {load['other_cpu_pct']:.0f}% CPU)"
            )
        out["vector_index_wait_s"] = backend.wait_vector_index()
        log(
            f"[{name}] vector store's background work (approximate indexes) done after {out['vector_index_wait_s']:.1f}s"
        )
        modes = (True, False) if args.compare_exact and exact_stores(backend.mem.vectors) else (True,)
        log(
            f"[{name}] searching the {len(cubes)} cubes side by side"
            + (", approximate and exact" if len(modes) > 1 else "")
        )
        by_mode = backend.search_rows(cubes, queries, args.warmup, modes)
        out["search"] = by_mode[True]
        if False in by_mode:
            out["search_exact"] = by_mode[False]
        if args.breakdown_queries > 0:
            log(f"[{name}] timing the steps of a search in each cube")
            try:
                out["breakdown"] = backend.breakdown(
                    cubes, queries[: args.breakdown_queries + args.warmup], args.warmup
                )
            except Exception as exc:  # noqa: BLE001 - a renamed step of the search path must not sink the run
                log(f"[{name}] breakdown failed: {type(exc).__name__}: {exc}")
                out["breakdown_error"] = f"{type(exc).__name__}: {exc}"
        out["process_rss_mib"] = own_rss_mib()
        if backend.neo4j is not None:
            out["neo4j_rss_mib"] = backend.neo4j.rss_mib()
        if args.dedupe_probe > 0:
            log(f"[{name}] dedupe probe: {args.dedupe_probe:,} memories with dedupe on, as many off, into {cubes[-1]}")
            out["dedupe_probe"] = backend.dedupe_probe(cubes[-1], args.dedupe_probe)
    finally:
        backend.close()
    return out


# report ------------------------------------------------------------------------------------------------------


def growth(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Smallest and largest cube of one backend: the p50 ratio against the size ratio."""
    if len(rows) < 2:
        return None
    small, big = rows[0], rows[-1]
    size_ratio = big["memories"] / small["memories"]
    ratio = big["p50_ms"] / small["p50_ms"]
    return {
        "backend": small["backend"],
        "small": small["memories"],
        "big": big["memories"],
        "size_ratio": size_ratio,
        "p50_small_ms": small["p50_ms"],
        "p50_big_ms": big["p50_ms"],
        "p50_ratio": ratio,
        "p99_ratio": big["p99_ms"] / small["p99_ms"],
        # cost ~ size^exponent between the two sizes: 1 is linear, 0 flat
        "exponent": math.log(ratio) / math.log(size_ratio) if ratio > 0 and size_ratio > 1 else float("nan"),
        "sub_linear": ratio < size_ratio,
    }


def report(res: dict[str, Any]) -> str:
    m = res["machine"]
    cfg = res["config"]
    out = [
        "",
        *title_lines(res, "scale"),
        f"load average at start {m['loadavg_start']}, at end {m['loadavg_end']}; 'other CPU' columns: share of the "
        "machine used by processes outside the benchmark (and, for neo4j, its server) during that row",
        f"corpus: {res['corpus']['file']}: {res['corpus']['turns']:,} turns as single-turn memories, cycled with "
        f"dates moved 400 days a pass; {res['corpus']['questions']:,} questions",
        f"vectors: {res['embedding']['how']}",
        *(f"{b['backend']}: vector store {b['vector_store']}" for b in res["backends"] if b.get("vector_store")),
        f"dedupe during the bulk load: {'on' if cfg['dedupe'] else 'off (see the dedupe probe)'}; batches of "
        f"{cfg['load_batch']:,} memories through TextMemory.write_memories",
        "",
        "Loading: one cube per size, each filled from the corpus's start (memories/s through the real write path; "
        "the embedding is not in it unless --embed-all)",
    ]
    rows = []
    for b in res["backends"]:
        for ld in b.get("loads", []):
            rows.append(
                [
                    b["backend"],
                    ld["cube"],
                    ld["memories"],
                    ld["seconds"],
                    ld["per_s"],
                    ld["embedded_during_load"],
                    ld["milvus_seal_s"],
                    ld["other_cpu_pct"],
                ]
            )
    out.append(
        fmt_table(
            ["backend", "cube", "memories", "seconds", "memories/s", "embedded", "seal s", "other CPU %"],
            rows,
        )
    )
    e = res["embedding"]
    if e.get("per_s"):
        out.append(
            f"  embedder alone (textmem's model on {e['threads']} thread(s), one call): {e['sample_texts']:,} memory texts "
            f"in {e['sample_s']:.1f}s = {e['per_s']:.1f} texts/s (other CPU {e['sample_other_cpu_pct']:.0f}%); a load that "
            "embeds every text runs at about 1 / (1 / memories/s + 1 / texts/s)"
        )
    out += [
        "",
        f"Search latency at concurrency 1 (ms; TextMemory.search in this process, top_k={TOP_K}, query embedding "
        f"included; {cfg['queries']} distinct questions per row after {cfg['warmup']} warm-up, the same ones in every row)",
    ]
    rows = []
    for b in res["backends"]:
        for r in [*b.get("search", []), *b.get("search_exact", [])]:
            rows.append(
                [
                    b["backend"],
                    r.get("vector_index", ""),
                    r["memories"],
                    r["n"],
                    r["p50_ms"],
                    r["p90_ms"],
                    r["p99_ms"],
                    r["mean_ms"],
                    r["max_ms"],
                    r["first_search_ms"],
                    r["empty_results"],
                    r["other_cpu_pct"],
                ]
            )
    out.append(
        fmt_table(
            [
                "backend",
                "vectors",
                "memories",
                "n",
                "p50",
                "p90",
                "p99",
                "mean",
                "max",
                "1st search",
                "empty",
                "other CPU %",
            ],
            rows,
        )
    )
    if any(b.get("search_exact") for b in res["backends"]):
        out.append(
            "  vectors: approximate = the approximate index of large cubes (the default), exact = the exact scan "
            "alone (as before it); each question searched both ways, alternating, in the same run"
        )
    waits = [f"{b['backend']} {b['vector_index_wait_s']:.1f}s" for b in res["backends"] if "vector_index_wait_s" in b]
    if waits:
        out.append(f"  approximate indexes built in the background after the load; waited for them: {', '.join(waits)}")
    out += [
        "",
        "Growth: backend x cube size -> p50 / p99 (ms), and the p50 ratio against the size ratio (the cubes were "
        "searched side by side, query by query)",
    ]
    rows = []
    for b, key, label in [
        (b, key, label) for b in res["backends"] for key, label in (("growth", ""), ("growth_exact", " (exact)"))
    ]:
        g = b.get(key)
        if g is None:
            continue
        search = b["search"] if key == "growth" else b["search_exact"]
        rows.append(
            [
                b["backend"] + label,
                f"{g['p50_small_ms']:.1f} / {next(r['p99_ms'] for r in search if r['memories'] == g['small']):.1f}",
                f"{g['p50_big_ms']:.1f} / {next(r['p99_ms'] for r in search if r['memories'] == g['big']):.1f}",
                f"{g['p50_ratio']:.2f}x",
                f"{g['size_ratio']:.0f}x",
                f"{g['exponent']:.2f}",
                f"{verdict(g['sub_linear'])} (< {g['size_ratio']:.0f}x)",
                f"{verdict(g['p50_big_ms'] <= TARGETS['search_p50_ms'])} (<= {TARGETS['search_p50_ms']:g} ms)",
            ]
        )
    if rows:
        sizes = res["config"]["sizes"]
        out.append(
            fmt_table(
                [
                    "backend",
                    f"{sizes[0]:,}: p50 / p99",
                    f"{sizes[-1]:,}: p50 / p99",
                    "p50 ratio",
                    "size ratio",
                    "exponent",
                    "sub-linear",
                    f"p50 at {sizes[-1]:,}",
                ],
                rows,
            )
        )
        out.append("  exponent: log(p50 ratio) / log(size ratio); cost ~ size^exponent (1 linear, 0 flat)")
    cols = [
        (f"{b['backend']} {c['memories']:,}", c["steps"])
        for b in res["backends"]
        if b.get("breakdown")
        for c in b["breakdown"]["cubes"].values()
    ]
    if cols:
        out += [
            "",
            "Where a search's time goes: each step timed on its own, cubes side by side (ms, p50 / mean); search() "
            "runs the lexical step beside the embedding and the vector search, so it takes less than the sum",
        ]
        names = list(cols[0][1])
        out.append(
            fmt_table(
                ["step", *(name for name, _ in cols)],
                [
                    [k, *(f"{st[k]['p50_ms']:.2f} / {st[k]['mean_ms']:.2f}" for _, st in cols)]
                    for k in names
                    if all(k in st for _, st in cols)
                ],
            )
        )
        for b in res["backends"]:
            for cube, ex in (b.get("breakdown") or {}).get("vector_exactness", {}).items():
                if ex:
                    out.append(
                        f"  {b['backend']} {cube}: vector search recall@{ex['depth']} against a float32 scan of every"
                        f" row: {ex['recall']:.4f} ({ex['queries']} queries); searches by path since load:"
                        f" {ex.get('searches_by_path', {})}"
                    )
        out.append(
            "  other CPU during the breakdown: "
            + ", ".join(
                f"{b['backend']} {b['breakdown']['other_cpu_pct']:.0f}%" for b in res["backends"] if b.get("breakdown")
            )
        )
    for b in res["backends"]:
        if b.get("breakdown_error"):
            out.append(f"  {b['backend']}: breakdown failed: {b['breakdown_error']}")
    probes = [(b["backend"], b["dedupe_probe"]) for b in res["backends"] if b.get("dedupe_probe")]
    if probes:
        out += ["", "Dedupe on the large cube: the same kind of memories written with dedupe on and off, alternating"]
        out.append(
            fmt_table(
                ["backend", "cube at start", "batch", "on: ms/memory", "off: ms/memory", "on / off"],
                [
                    [
                        name,
                        p["cube_memories_at_start"],
                        p["batch"],
                        p["on"]["ms_per_memory"],
                        p["off"]["ms_per_memory"],
                        p["on"]["ms_per_memory"] / p["off"]["ms_per_memory"],
                    ]
                    for name, p in probes
                ],
            )
        )
    mem_rows = [
        [b["backend"], b.get("process_rss_mib") or 0.0, b.get("neo4j_rss_mib") or 0.0]
        for b in res["backends"]
        if "process_rss_mib" in b
    ]
    if mem_rows:
        out += ["", "Memory after the largest cube (this process: textmem's stores in process; Neo4j's server apart)"]
        out.append(fmt_table(["backend", "this process RSS MiB", "neo4j RSS MiB"], mem_rows))
    errors = [(b["backend"], b["error"]) for b in res["backends"] if b.get("error")]
    for name, err in errors:
        out.append(f"  {name}: could not run: {err}")
    out += ["", "Summary against the issue's targets (informational: the run never fails on them)"]
    out.append(fmt_table(["measure", "measured", "target", ""], res["summary"]))
    out.append("")
    return "\n".join(out)


def summarize(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for b in res["backends"]:
        search = b.get("search") or []
        if not search:
            continue
        big = search[-1]
        embedded = b["backend"] != "neo4j"
        rows.append(
            [
                f"{b['backend']}: search p50, 1 cube x {big['memories']:,}, conc 1",
                f"{big['p50_ms']:.1f} ms (p99 {big['p99_ms']:.1f})",
                f"<= {TARGETS['search_p50_ms']:g} ms" + ("" if embedded else " (set for the embedded backends)"),
                verdict(big["p50_ms"] <= TARGETS["search_p50_ms"]),
            ]
        )
        exact = b.get("search_exact") or []
        if exact:
            rows.append(
                [
                    f"{b['backend']}: same, exact vector scan alone (before)",
                    f"{exact[-1]['p50_ms']:.1f} ms (p99 {exact[-1]['p99_ms']:.1f})",
                    "(comparison)",
                    "",
                ]
            )
        g = b.get("growth")
        if g is not None:
            rows.append(
                [
                    f"{b['backend']}: p50({g['big']:,}) / p50({g['small']:,})",
                    f"{g['p50_ratio']:.2f}x ({g['p50_big_ms']:.1f} / {g['p50_small_ms']:.1f} ms; exponent {g['exponent']:.2f})",
                    f"sub-linear: < {g['size_ratio']:.0f}x",
                    verdict(g["sub_linear"]),
                ]
            )
        ex = (b.get("breakdown") or {}).get("vector_exactness", {}).get(big["cube"])
        if ex:
            rows.append(
                [
                    f"{b['backend']}: vector recall@{ex['depth']} vs the exact scan, {big['memories']:,}",
                    f"{ex['recall']:.4f} ({ex['queries']} queries)",
                    f">= {TARGETS['vector_recall']:g}",
                    verdict(ex["recall"] >= TARGETS["vector_recall"]),
                ]
            )
        loads = b.get("loads") or []
        if loads:
            n = sum(ld["memories"] for ld in loads)
            s = sum(ld["seconds"] for ld in loads)
            rows.append(
                [f"{b['backend']}: bulk load", f"{n / s:.0f} memories/s ({n:,} in {s:.0f}s)", "(no target)", ""]
            )
    return rows


# main --------------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("sizes are positive memory counts, e.g. 10000,100000")
    return sizes


def parse_backends(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"backends are among {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo locomo10.json (never copied into the repo)")
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default="10000,100000",
        help="cube sizes, one cube each, comma-separated (quick check: 2000,20000)",
    )
    p.add_argument(
        "--backends", type=parse_backends, default=",".join(BACKENDS), help="graph backends, comma-separated"
    )
    p.add_argument("--queries", type=int, default=200, help="measured searches per row (distinct questions)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up searches per row, not counted")
    p.add_argument(
        "--breakdown-queries",
        type=int,
        default=100,
        help="searches whose steps are timed in each cube (0: none)",
    )
    p.add_argument("--load-batch", type=int, default=1000, help="memories per write_memories call in the bulk load")
    p.add_argument("--dedupe", action="store_true", help="keep dedupe on during the bulk load (quadratic at 100k)")
    p.add_argument(
        "--dedupe-probe",
        type=int,
        default=500,
        help="memories written with dedupe on (and as many off) to the largest cube, to price dedupe (0: skip)",
    )
    p.add_argument(
        "--embed-all",
        action="store_true",
        help="embed every memory text during the load, not only the first pass (30-50 min per 100,000 here)",
    )
    p.add_argument(
        "--embed-threads", type=int, default=2, help="threads of the embedder for memory texts (queries: textmem's 1)"
    )
    p.add_argument(
        "--neo4j-java-opts",
        default="-Xmx2g -XX:+UseSerialGC",
        help="JVM options of the Neo4j server (C2 on: tools/neo4j's default stops at C1, for short test runs)",
    )
    p.add_argument(
        "--embed-sample", type=int, default=256, help="memory texts the embedder's own rate is measured on (0: skip)"
    )
    p.add_argument(
        "--vector-cache",
        type=Path,
        default=default_cache_dir(),
        help="directory keeping the first pass's vectors between runs (outside the repo; about 9 MB)",
    )
    p.add_argument("--no-vector-cache", action="store_true", help="embed the first pass every run, keep nothing")
    p.add_argument("--neo4j-pagecache-mb", type=int, default=512, help="Neo4j page cache")
    p.add_argument(
        "--no-compare-exact",
        dest="compare_exact",
        action="store_false",
        help="search with the approximate vector index only, not also with the exact scan alone",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the temporary data directory (its path is printed)")
    p.add_argument("--output", type=Path, default=RESULTS_PATH, help="where the JSON results go")
    args = p.parse_args(argv)
    if args.queries < 1 or args.warmup < 1:
        p.error("--queries and --warmup must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.exists():
        print(f"dataset not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    corpus = Corpus(args.data)
    log(f"corpus: {len(corpus.turns):,} turns from {args.data}")
    res: dict[str, Any] = {
        **run_header(args, corpus, TARGETS),
        "backends": [],
    }
    if os.getloadavg()[0] > 0.5:
        log(f"note: load average is {loadavg()} before the run; other work on this machine skews the numbers")
    # The same questions in every row (distinct within a row): rows differ by backend and size only.
    queries = corpus.take_queries(args.warmup + max(args.queries, args.breakdown_queries))

    log("loading textmem's embedder (queries: its defaults, one thread)")
    query_embedder = build_embedder(TextMemSettings.model_construct())
    bulk_embedder = build_embedder(TextMemSettings.model_construct(embedding_threads=args.embed_threads))
    embedder = BenchEmbedder(query_embedder, bulk_embedder)
    n_first = min(args.sizes[-1], len(corpus.turns))
    # The embedder's own rate on memory texts, measured every run (the vectors may come from the cache).
    sample = [corpus.memory(i)[0] for i in range(min(args.embed_sample, len(corpus.turns)))]
    res["embedding"] = {"threads": args.embed_threads}
    if sample:
        bulk_embedder.embed(sample[:16])
        before = CpuMeter(lambda: [os.getpid()]).snapshot()
        t0 = time.perf_counter()
        bulk_embedder.embed(sample)
        secs = time.perf_counter() - t0
        other = CpuMeter.other_pct(before, CpuMeter(lambda: [os.getpid()]).snapshot())
        res["embedding"].update({"sample_texts": len(sample), "sample_s": secs, "per_s": len(sample) / secs})
        res["embedding"]["sample_other_cpu_pct"] = other
        log(f"embedder alone on {len(sample)} memory texts: {len(sample) / secs:.1f} texts/s (other CPU {other:.0f}%)")
    if args.embed_all:
        res["embedding"]["how"] = f"every memory text embedded during the load ({args.embed_threads} thread(s))"
    else:
        cache = (
            None if args.no_vector_cache else vector_cache_path(args.vector_cache, args.data, bulk_embedder, n_first)
        )
        how = (
            f"the first pass's {n_first:,} texts embedded once by textmem's model; a memory of a later pass gets "
            "the turn's vector moved by fixed noise to cosine ~0.85 (--embed-all embeds every text)"
        )
        if cache is not None and cache.exists():
            embedder.base = np.load(cache)
            how += f"; vectors read from {cache}"
            log(f"first pass's vectors read from {cache}")
        else:
            log(f"embedding the first pass's {n_first:,} texts ({args.embed_threads} thread(s))")
            embedder.base, secs = embed_first_pass(corpus, bulk_embedder, n_first)
            res["embedding"]["first_pass_s"] = secs
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, embedder.base)
                how += f"; vectors kept in {cache} for the next run (--no-vector-cache: never)"
        res["embedding"]["how"] = how

    tmp = Path(tempfile.mkdtemp(prefix="memos-bench-scale-"))
    failed = False
    try:
        for name in args.backends:
            try:
                b = run_backend(name, args, corpus, embedder, queries[: args.warmup + args.queries], tmp)
                b["growth"] = growth(b["search"])
                if b.get("search_exact"):
                    b["growth_exact"] = growth(b["search_exact"])
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run leaves the other's numbers
                log(f"[{name}] failed: {type(exc).__name__}: {exc}")
                b = {"backend": name, "error": f"{type(exc).__name__}: {exc}"}
                failed = True
            res["backends"].append(b)
            embedder.table.clear()
            # After every backend, so that a run cut short keeps what it measured.
            res["summary"] = summarize(res)
            res["machine"]["loadavg_end"] = loadavg()
            res["elapsed_s"] = time.perf_counter() - t_start
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(report(res))
        log(f"results written to {args.output}; the run took {res['elapsed_s'] / 60:.1f} min")
    finally:
        if args.keep_data:
            log(f"data kept under {tmp}")
        else:
            remove_tree(tmp)
    return 1 if failed else 0


def remove_tree(path: Path) -> None:
    """Removes the temporary data; Milvus Lite may still be writing an index file just after
    it was closed, so a tree that comes back is removed again."""
    for _ in range(10):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(1.0)
    log(f"could not remove {path} entirely; remove it by hand")


if __name__ == "__main__":
    sys.exit(main())
