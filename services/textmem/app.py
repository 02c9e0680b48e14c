"""Assembles textmem from its settings: stores, embedder, servicers, server."""

from __future__ import annotations

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem.embedders import Embedder, build_embedder
from services.textmem.memory import TextMemory
from services.textmem.servicer import CubeServicer, TextMemServicer
from services.textmem.settings import TextMemSettings
from services.textmem.stores.graph import GraphStore, MemoryStats
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from shared.metrics import TEXTMEM_CUBE_MEMORIES, TEXTMEM_CUBES, TEXTMEM_MEMORIES, Reading
from shared.server import GrpcServer, ServiceBinding

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
    return SqliteGraphStore(settings.sqlite_path or settings.data_dir / "graph.sqlite3")


def build_memory(settings: TextMemSettings, embedder: Embedder | None = None) -> TextMemory:
    embedder = embedder or build_embedder(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    graph = build_graph_store(settings)
    vectors = MilvusVectorStore(
        settings.milvus_uri or str(settings.data_dir / "milvus.db"),
        settings.milvus_collection,
        embedder.dim,
        token=settings.milvus_token,
        index_type=settings.milvus_index_type,
        lite_flush_interval_s=settings.milvus_lite_flush_interval_s,
        lite_threads=settings.milvus_lite_threads,
    )
    return TextMemory(
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
    )


def build_server(settings: TextMemSettings, memory: TextMemory | None = None) -> GrpcServer:
    memory = memory or build_memory(settings)
    tm = TextMemServicer(memory)
    cubes = CubeServicer(memory)
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
