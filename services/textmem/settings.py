"""Settings of the textmem service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shared.settings import ServerSettings, default_data_dir


class TextMemSettings(ServerSettings):
    listen_addr: str = "127.0.0.1:50052"
    """host:port to listen on."""

    data_dir: Path = Field(default_factory=default_data_dir)
    """Root of the embedded stores (Milvus Lite file, SQLite graph)."""

    milvus_uri: str = ""
    """Milvus server URI (http://host:19530); empty means Milvus Lite under data_dir."""

    milvus_token: str = ""
    """Milvus token ("user:password" or API key), if the server needs one."""

    milvus_collection: str = "memos_text"
    """Collection holding every cube's vectors (cubes are partition keys)."""

    milvus_index_type: str = ""
    """Vector index type for a new collection (AUTOINDEX, HNSW, IVF_FLAT, FLAT); empty picks
    IVF_FLAT on Milvus Lite and AUTOINDEX on a server."""

    milvus_lite_flush_interval_s: float = Field(default=1.0, ge=0.0)
    """Milvus Lite only: seal new rows this long after a burst of writes (0: never; searches of
    unsealed rows are brute force and much slower)."""

    milvus_lite_threads: int = Field(default=1, ge=0)
    """Milvus Lite only: OpenMP threads of its search process (0: its default, all cores)."""

    embedding_threads: int = Field(default=1, ge=0)
    """torch threads of the local embedder (0: torch's default). One avoids spinning threads
    fighting the other services on a small machine; raise it on a dedicated node."""

    graph_store: Literal["sqlite", "neo4j"] = "sqlite"
    """Graph store backend: "sqlite" (embedded, a file under data_dir) or "neo4j" (a Neo4j 5
    server at neo4j_uri; Community is enough)."""

    sqlite_path: Path | None = None
    """SQLite graph file; data_dir/graph.sqlite3 when unset."""

    neo4j_uri: str = "bolt://127.0.0.1:7687"
    """Neo4j server for graph_store="neo4j": bolt://host:7687 (one server) or neo4j://host:7687
    (routing, for a cluster); add +s/+ssc for TLS (bolt+s://…)."""

    neo4j_user: str = ""
    """Neo4j user name; empty connects without authentication (a server with auth disabled)."""

    neo4j_password: str = ""
    """Password of neo4j_user."""

    neo4j_database: str = "neo4j"
    """Neo4j database holding every cube (Community has one user database: "neo4j"); empty uses
    the server's default database."""

    neo4j_retry_s: float = Field(default=5.0, ge=0.0)
    """How long one graph operation is retried while Neo4j is unreachable or reports a transient
    error (deadlock, leader switch) before the call fails with UNAVAILABLE (retriable)."""

    embedder: Literal["local", "openai"] = "local"
    """"local": sentence-transformers in process; "openai": an OpenAI-compatible /v1/embeddings."""

    embedding_model_path: str = ""
    """Local model directory; the bundled all-MiniLM-L6-v2 when empty."""

    embedding_device: str = "cpu"
    """torch device for the local embedder."""

    embedding_url: str = ""
    """Base URL of an OpenAI-compatible embeddings API (…/v1)."""

    embedding_api_key: str = ""
    """Bearer token for embedding_url."""

    embedding_model: str = "all-MiniLM-L6-v2"
    """Model name sent to embedding_url, and recorded with every vector."""

    embedding_dim: int = Field(default=384, ge=8, le=16384)
    """Vector dimension of the embedding model (checked against the model at start)."""

    embedding_batch_size: int = Field(default=64, ge=1, le=4096)
    """Texts per embedding call."""

    query_cache_size: int = Field(default=2048, ge=0)
    """Query embeddings kept in memory (a multi-cube search embeds its query once)."""

    window_size: int = Field(default=4, ge=1, le=64)
    """Messages per fast-mode memory."""

    window_overlap: int = Field(default=1, ge=0, le=63)
    """Messages shared by consecutive fast-mode windows."""

    max_messages_per_add: int = Field(default=2000, ge=1)
    """Messages one add may carry."""

    max_text_chars: int = Field(default=200_000, ge=1)
    """Characters one message part (or one memory) may carry."""

    working_memory_capacity: int = Field(default=20, ge=1, le=1000)
    """WorkingMemory items a cube keeps; a replace with more ids keeps the first (most relevant) ones."""

    metrics_top_cubes: int = Field(default=10, ge=0, le=1000)
    """With metrics on (MEMOS_METRICS_ADDR): the largest cubes reported one by one in
    ``memos_textmem_cube_memories``; a bound on that metric's series (0: none)."""

    metrics_stats_ttl_s: float = Field(default=15.0, ge=0.0)
    """With metrics on: how long textmem's memory and cube counts are reused between scrapes."""

    retrieval_recipe: Literal["lexical", "dense", "fused", "fused-k20", "+neighbours", "+speaker", "+temporal"] = (
        "+temporal"
    )
    """Retrieval signals searches use (services/textmem/ranking.py RECIPES): "lexical" (BM25
    only), "dense" (vectors only), "fused" (reciprocal rank fusion, k=60), "fused-k20" (k=20),
    then each adding one signal: "+neighbours" (adjacent windows of the same conversation),
    "+speaker" (memories spoken by the person the query names), "+temporal" (when-questions
    prefer memories that say when; a named year or month prefers memories from it)."""

    @model_validator(mode="after")
    def _window_is_usable(self) -> TextMemSettings:
        # Refuse at start rather than fail every add with a caller-facing error.
        if self.window_overlap >= self.window_size:
            raise ValueError(
                f"window_overlap ({self.window_overlap}) must be smaller than window_size ({self.window_size})"
            )
        return self
