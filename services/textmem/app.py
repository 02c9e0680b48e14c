"""Assembles textmem from its settings: stores, embedder, servicers, server."""

from __future__ import annotations

import dataclasses
import logging
import threading

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem.conflicts import ConflictJudge
from services.textmem.embedders import Embedder, build_embedder
from services.textmem.memory import TextMemory, VectorRepair
from services.textmem.servicer import CubeServicer, TextMemServicer
from services.textmem.settings import TextMemSettings
from services.textmem.stores.exact_index import ExactIndexVectorStore
from services.textmem.stores.graph import GraphStore, MemoryStats
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.routed_vector import PREFERENCE_TYPES, RoutedVectorStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from services.textmem.stores.vector import VectorStore
from shared.llm import ChatClient
from shared.metrics import TEXTMEM_CUBE_MEMORIES, TEXTMEM_CUBES, TEXTMEM_MEMORIES, Reading
from shared.offload import Offloader
from shared.server import GrpcServer, ServiceBinding

log = logging.getLogger(__name__)

SERVICE_NAMES = [s.full_name for s in textmem_pb2.DESCRIPTOR.services_by_name.values()]


def build_graph_store(settings: TextMemSettings) -> GraphStore:
    if settings.graph_store == "neo4j":
        # Imported here: the driver is only needed by deployments that use Neo4j.
        from services.textmem.stores.neo4j_graph import Neo4jGraphStore

        return Neo4jGraphStore(
            settings.neo4j_uri,
            settings.neo4j_user,
            settings.neo4j_password,
            settings.neo4j_database,
            retry_time_s=settings.neo4j_retry_s,
        )
    graph = SqliteGraphStore(
        settings.sqlite_path or settings.data_dir / "graph.sqlite3", lexical_index=settings.sqlite_lexical_index
    )
    if settings.sqlite_lexical_index and settings.sqlite_lexical_prewarm_cubes:
        graph.start_lexical_prewarm(
            lambda: [c for c, _ in graph.memory_stats(settings.sqlite_lexical_prewarm_cubes).largest]
        )
    return graph


def build_conflict_judge(settings: TextMemSettings) -> ConflictJudge | None:
    """The LLM that resolves conflicting facts on add; None when none is configured."""
    if not settings.conflict_llm_base_url:
        return None
    client = ChatClient(
        settings.conflict_llm_base_url,
        settings.conflict_llm_model,
        api_key=settings.conflict_llm_api_key,
        timeout_s=settings.conflict_llm_timeout_s,
        max_tokens=settings.conflict_llm_max_tokens,
    )
    return ConflictJudge(
        client,
        max_concurrency=settings.conflict_llm_max_concurrency,
        timeout_s=settings.conflict_llm_timeout_s,
        min_similarity=settings.conflict_min_similarity,
        candidates=settings.conflict_candidates,
        max_pairs=settings.conflict_max_pairs,
        max_chars=settings.conflict_max_chars,
    )


def milvus_uri(settings: TextMemSettings) -> str:
    """The Milvus server's URI, or the Milvus Lite file under data_dir."""
    return settings.milvus_uri or str(settings.data_dir / "milvus.db")


def build_vector_store(settings: TextMemSettings, dim: int, graph: GraphStore) -> VectorStore:
    """Two collections of one Milvus behind a RoutedVectorStore: preferences in their own (see
    routed_vector.py), every other memory in the main one; on Milvus Lite each with an exact
    in-process copy in front. Preference vectors an earlier version kept in the main collection
    are moved first, before any copy is loaded."""

    def milvus(collection: str) -> MilvusVectorStore:
        return MilvusVectorStore(
            milvus_uri(settings),
            collection,
            dim,
            token=settings.milvus_token,
            index_type=settings.milvus_index_type,
            lite_flush_interval_s=settings.milvus_lite_flush_interval_s,
            lite_threads=settings.milvus_lite_threads,
        )

    main = milvus(settings.milvus_collection)
    try:
        prefs = milvus(settings.preference_collection)
    except BaseException:
        main.close()
        raise
    try:
        # At every start, before anything is served or copied: idempotent, and a crash mid-move
        # leaves rows in both collections, which the next start finishes moving.
        moved = main.move_rows(PREFERENCE_TYPES, prefs)
    except BaseException:
        main.close()
        prefs.close()
        raise
    if moved:
        log.info("moved preference vectors to their own collection", extra={"moved": moved})
    if not (main.is_lite and settings.milvus_lite_exact_index):
        return RoutedVectorStore(main, prefs)
    approximate = settings.milvus_lite_approximate_index
    exact_main = ExactIndexVectorStore(main, approximate=approximate)
    exact_prefs = ExactIndexVectorStore(prefs, approximate=approximate)
    if settings.milvus_lite_prewarm_cubes:
        largest = lambda: [c for c, _ in graph.memory_stats(settings.milvus_lite_prewarm_cubes).largest]  # noqa: E731
        exact_main.start_prewarm(largest)
        # The same cubes: a loaded copy lets the router's clearing of an id from the other store
        # (on every write) skip Milvus, and preferences are few, so the load is cheap.
        exact_prefs.start_prewarm(largest)
    return RoutedVectorStore(exact_main, exact_prefs)


def limit_blas_threads(threads: int) -> None:
    """Caps the BLAS thread pools of this process (numpy's OpenBLAS) at ``threads`` (0: leave
    them). Process-wide and lasting, like the embedder's thread setting."""
    if threads <= 0:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def build_memory(settings: TextMemSettings, embedder: Embedder | None = None) -> TextMemory:
    limit_blas_threads(settings.blas_threads)
    embedder = embedder or build_embedder(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    graph = build_graph_store(settings)
    vectors = build_vector_store(settings, embedder.dim, graph)
    memory = TextMemory(
        graph,
        vectors,
        embedder,
        window_size=settings.window_size,
        window_overlap=settings.window_overlap,
        query_cache_size=settings.query_cache_size,
        max_messages_per_add=settings.max_messages_per_add,
        max_text_chars=settings.max_text_chars,
        working_memory_capacity=settings.working_memory_capacity,
        recipe=settings.retrieval_recipe,
        dedupe=settings.dedupe,
        dedupe_threshold=settings.dedupe_threshold,
        max_memories_per_cube=settings.max_memories_per_cube,
        max_bytes_per_cube=settings.max_bytes_per_cube,
        fanout_threads=settings.search_fanout_threads or (8 if settings.graph_store == "neo4j" else 2),
        conflicts=build_conflict_judge(settings),
    )
    if MilvusVectorStore.is_lite_uri(milvus_uri(settings)):
        # This process is the Milvus Lite file's only writer: every mark left is from a crash.
        repaired = memory.repair_vector_writes(older_than_s=0.0)
        if repaired != VectorRepair():
            log.warning("repaired writes cut short by a crash", extra=dataclasses.asdict(repaired))
    return memory


class RepairLoop:
    """Runs TextMemory.repair_vector_writes every interval on a daemon thread (marks older than
    the grace), so that a replica that crashed and was never restarted is repaired by another."""

    def __init__(self, memory: TextMemory, interval_s: float, grace_s: float) -> None:
        self._memory, self._interval, self._grace = memory, interval_s, grace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="textmem-repair", daemon=True)

    def start(self, _server: object = None) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        # No join here: this runs before the server drains its calls, which need not wait for a
        # repair. join() runs later, before the stores close.
        self._stop.set()

    def join(self, timeout_s: float = 10.0) -> None:
        """Waits for a repair in progress: it reads both stores, which must not close under it."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                repaired = self._memory.repair_vector_writes(older_than_s=self._grace)
                if repaired != VectorRepair():
                    log.warning("repaired writes cut short", extra=dataclasses.asdict(repaired))
            except Exception:  # a store that is down now is retried at the next interval
                log.warning("write repair failed; retrying later", exc_info=True)


def build_server(settings: TextMemSettings, memory: TextMemory | None = None) -> GrpcServer:
    memory = memory or build_memory(settings)
    # The servicers' blocking calls: the stop drains them before the stores close under them.
    offload = Offloader("textmem")
    tm = TextMemServicer(memory, offload)
    cubes = CubeServicer(memory, offload)
    server = GrpcServer(
        name="textmem",
        settings=settings,
        services=[
            ServiceBinding(
                "memos.textmem.v1.TextMemService",
                lambda s: textmem_pb2_grpc.add_TextMemServiceServicer_to_server(tm, s),
            ),
            ServiceBinding(
                "memos.textmem.v1.CubeService", lambda s: textmem_pb2_grpc.add_CubeServiceServicer_to_server(cubes, s)
            ),
        ],
        on_stop=[memory.close],
    )
    repair = RepairLoop(memory, settings.repair_interval_s, settings.repair_grace_s)
    server.on_start.append(repair.start)
    server.before_stop.append(repair.stop)
    # Before memory.close, after the calls' grace: threads of calls cut off by it may still run.
    server.on_stop[:0] = [offload.drain, repair.join]
    if settings.metrics_addr:
        _observe_memories(server, memory.graph, settings)
    return server


def _observe_memories(server: GrpcServer, graph: GraphStore, settings: TextMemSettings) -> None:
    """Memory and cube counts as gauges. Per-cube series only for the largest cubes: cube ids
    are unbounded (one per user or more), and a series per cube would grow Prometheus without limit."""
    # One count serves the three gauges of a scrape (and later scrapes, for ttl_s).
    stats: Reading[MemoryStats] = Reading(
        lambda: graph.memory_stats(settings.metrics_top_cubes), ttl_s=settings.metrics_stats_ttl_s
    )
    removers = [
        TEXTMEM_MEMORIES.add(lambda: [(n, {"memory_type": t}) for t, n in sorted(stats().by_type.items())]),
        TEXTMEM_CUBES.add(lambda: [(stats().cubes, {})]),
        TEXTMEM_CUBE_MEMORIES.add(lambda: [(n, {"cube_id": cube}) for cube, n in stats().largest]),
    ]
    # Before memory.close: a scrape must not read a closed store.
    server.on_stop[:0] = [*removers, stats.close]
