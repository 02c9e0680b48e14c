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
    """Collection holding every cube's vectors (cubes are partition keys), preferences aside."""

    milvus_preference_collection: str = ""
    """Collection holding the preference vectors (PreferenceMemory, explicit and implicit) of
    every cube, in the same Milvus as milvus_collection and scoped the same way; empty:
    milvus_collection + "_preferences". Preferences stored in milvus_collection by earlier
    versions are moved here at start."""

    milvus_index_type: str = ""
    """Vector index type for a new collection (AUTOINDEX, HNSW, IVF_FLAT, FLAT); empty picks
    IVF_FLAT on Milvus Lite and AUTOINDEX on a server."""

    milvus_lite_flush_interval_s: float = Field(default=1.0, ge=0.0)
    """Milvus Lite only: seal new rows this long after a burst of writes (0: never; searches of
    unsealed rows are brute force and much slower)."""

    milvus_lite_threads: int = Field(default=1, ge=0)
    """Milvus Lite only: OpenMP threads of its search process (0: its default, all cores)."""

    milvus_lite_exact_index: bool = True
    """Milvus Lite only: answer vector searches from an exact in-process copy of each cube's
    vectors, loaded from Milvus Lite on the cube's first use; Milvus Lite stays the durable store
    and gets every write first. Milvus Lite 3 is pure Python and scans the whole collection per
    search (tens of milliseconds at 10,000 rows); the copy answers the same query exactly in about
    a millisecond and costs 4 bytes per dimension per memory of memory. Ignored for a Milvus server."""

    milvus_lite_approximate_index: bool = True
    """With the exact index: cubes of 32,768 or more memories also get an approximate index (faiss
    IVF, 8-bit codes, built in a background thread, ~0.4 KiB per memory). A search whose filter
    keeps at least half of the cube takes its candidates from it and scores them exactly on the
    float vectors, so returned scores are exact and only which memories make the list is
    approximate (recall@30 0.98 against the exact scan at 100,000 memories); memories written
    since the index was built are always scored exactly. False: every search scans exactly."""

    milvus_lite_prewarm_cubes: int = Field(default=32, ge=0)
    """With the exact index: how many of the largest cubes are loaded into it in the background
    at start, so that their first searches do not wait for the load (about 3 s per 10,000
    memories). Other cubes load on first use."""

    embedding_threads: int = Field(default=1, ge=0)
    """Threads of the local embedder: ONNX Runtime's intra- and inter-op threads, or torch's (0:
    the runtime's default, all cores). One avoids spinning threads fighting the other services on
    a small machine; raise it on a dedicated node."""

    blas_threads: int = Field(default=1, ge=0)
    """Threads of the BLAS library (OpenBLAS) behind the in-process exact vector index and the
    dedupe scans (0: the library's default, all cores). One: each search's matrix product runs on
    its own request's thread, and requests run side by side instead. With two on a loaded 2-core
    node, a 10,000-row scan took 28 ms instead of 3.8 ms: OpenBLAS's second thread waits for a
    core that other work holds."""

    search_fanout_threads: int = Field(default=0, ge=0, le=16)
    """Threads one multi-cube search works through its cubes with (0: 2 on SQLite, 8 on Neo4j).
    Ranking a cube is Python: on the embedded stores more threads only take turns under the GIL
    (8 cubes of 500 memories: 140 ms p50 with a thread per cube, 95-100 ms with 2), while Neo4j's
    full-text queries wait on the network, which more threads overlap."""

    graph_store: Literal["sqlite", "neo4j"] = "sqlite"
    """Graph store backend: "sqlite" (embedded, a file under data_dir) or "neo4j" (a Neo4j 5
    server at neo4j_uri; Community is enough)."""

    sqlite_path: Path | None = None
    """SQLite graph file; data_dir/graph.sqlite3 when unset."""

    sqlite_lexical_index: bool = True
    """SQLite only: answer full-text searches from per-cube BM25 copies held in process, kept
    current from a change log that triggers write in every transaction (so writes by any process
    are seen by the next search). SQLite's FTS5 index spans every cube and scores every matching
    row of all of them (19 ms per search next to a 10,000-memory cube, and as much again for each
    cube of a fan-out); a copy costs what its own cube's matches cost. FTS5 still answers
    tag-filtered searches. Memory: about 10 bytes per word of stored text."""

    sqlite_lexical_prewarm_cubes: int = Field(default=32, ge=0)
    """With sqlite_lexical_index: how many of the largest cubes are loaded into it in the
    background at start, so that their first searches do not wait for the load (about a second
    per 10,000 memories). Other cubes load on first search."""

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
    """"local": a sentence-transformers model in process (see embedding_runtime); "openai": an
    OpenAI-compatible /v1/embeddings."""

    embedding_model_path: str = ""
    """Local model directory (a sentence-transformers folder); the bundled all-MiniLM-L6-v2 when
    empty."""

    embedding_runtime: Literal["onnx", "torch"] = "onnx"
    """What runs the local model on CPU: "onnx" (ONNX Runtime) or "torch" (sentence-transformers).
    ONNX is the default for query latency: a one-line query embeds about 2.5x faster (MiniLM, one
    thread: ~9 ms instead of ~23 ms, torch's time being mostly per-operator overhead), small adds
    too; batches of 64 long texts run up to ~20% slower than on torch. Vectors agree to cosine
    > 0.999, and a start from the cached graph needs no torch (~0.4 s, ~200 MiB). Its graph is
    the model folder's model.onnx if it ships one, else exported from the folder once (a few
    seconds, at the first start) into embedding_onnx_cache_dir. If the export or ONNX Runtime
    fails, textmem logs a warning and runs torch. A non-CPU embedding_device always runs torch."""

    embedding_onnx_cache_dir: Path | None = None
    """Where ONNX exports of local models are kept, one file per model, named by a hash of its
    weights and config (a changed model is exported again). Unset: $XDG_CACHE_HOME/memos/onnx
    (~/.cache/memos/onnx), shared by every data directory of the machine. The textmem image
    sets /opt/memos/onnx, exported when the image is built, so its pods never export."""

    embedding_quantize: Literal["none", "int8"] = "int8"
    """ONNX runtime only: "int8" (the default) runs the local model with its MatMul weights
    quantized to int8 (one scale per output channel; made once from the float graph and cached
    beside it; the textmem image bakes both); "none" runs the float graph. int8 embeds a one-line
    query ~2.5x faster on one core (3.3-4.4 ms against 8.7-16 ms, loaded 2-core machine) with the
    same retrieval quality: LoCoMo R@500w 0.808 against 0.807 in float. Its vectors stay within
    cosine 0.99 of the float model's for sentences (0.994 on average over 200 LoCoMo questions),
    ~0.96 for texts made mostly of symbols or emoji, so vectors stored under one setting are still
    found under the other, slightly less exactly. If quantizing fails (a read-only cache without
    the int8 file), textmem logs a warning and runs the float graph."""

    embedding_device: str = "cpu"
    """torch device for the local embedder ("cuda" runs torch whatever embedding_runtime says)."""

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

    repair_interval_s: float = Field(default=60.0, ge=0.0)
    """How often textmem looks for write-ahead marks left by a crash between a vector write and
    its graph write, and makes those vectors agree with the graph (0: only at start)."""

    repair_grace_s: float = Field(default=300.0, ge=0.0)
    """Age a mark must reach before the repair touches it: a younger one may belong to a write
    still in progress in another replica. At start on Milvus Lite (a file only this process
    writes) every mark is repaired at once."""

    dedupe: bool = True
    """Merge repeats on add: a memory whose normalised text equals a live memory's of the same
    cube and type, or whose embedding is at least dedupe_threshold alike with the same wording
    (case, punctuation, articles, number words, spelling and plurals aside), is merged into it
    (its sources appended, tags joined) instead of stored anew. Working-memory copies and
    archived memories are never merged into (services/textmem/dedupe.py)."""

    dedupe_threshold: float = Field(default=0.90, ge=0.0, le=1.0)
    """Cosine similarity from which an added memory with the same wording as a live one is a
    near duplicate (see dedupe). Every restatement of the calibration pairs scored at least
    0.92 with the bundled MiniLM; changed facts score up to 0.996, which is why the wording
    must match too."""

    # conflict resolution (services/textmem/conflicts.py) --------------------------------
    conflict_llm_base_url: str = ""
    """Base URL (…/v1) of an OpenAI-compatible chat-completions API that judges, on add, whether
    a new memory contradicts or updates a live one of the same cube, user and type ("I live in
    Beijing" / "I moved to Shanghai"); the older fact (by chat time, else arrival) is archived
    and linked from the newer by a SUPERSEDES relation. Needs dedupe. Empty: no conflict
    resolution (near duplicates are still merged)."""

    conflict_llm_model: str = ""
    """Model name sent to conflict_llm_base_url (required with it)."""

    conflict_llm_api_key: str = Field(default="", repr=False)
    """Bearer token for conflict_llm_base_url."""

    conflict_llm_timeout_s: float = Field(default=30.0, gt=0)
    """Longest one conflict-judging LLM call may take, and longest an add waits for a free call
    slot; past either the add is stored without conflict resolution and says why. An add makes
    one call, and a second when the first answer is not the JSON asked for."""

    conflict_llm_max_concurrency: int = Field(default=4, ge=1, le=256)
    """Conflict-judging LLM calls in flight at once, across all adds of this process."""

    conflict_llm_max_tokens: int = Field(default=2048, ge=16)
    """max_tokens of a conflict-judging call (the answer is one short verdict per pair)."""

    conflict_min_similarity: float = Field(default=0.55, ge=0.0, le=1.0)
    """Cosine similarity from which a live memory is judged against a new one: below it the two
    are taken to be about different things and never reach the LLM. There is no upper bound: a
    changed fact can score as high as a restatement (dedupe merges only those with the same
    wording). With the bundled MiniLM, updates of a fact score 0.67 to 0.83 and unrelated facts
    of one user below 0.45."""

    conflict_candidates: int = Field(default=3, ge=1, le=20)
    """Nearest live memories (at least conflict_min_similarity alike) judged per new memory."""

    conflict_max_pairs: int = Field(default=48, ge=1, le=1000)
    """Pairs one add sends to the LLM at most, the most similar first; the add says how many
    more were left unchecked."""

    conflict_max_chars: int = Field(default=2000, ge=100, le=100_000)
    """Characters of each memory's text shown to the LLM."""

    working_memory_capacity: int = Field(default=20, ge=1, le=1000)
    """WorkingMemory items a cube keeps; a replace with more ids keeps the first (most relevant) ones."""

    max_memories_per_cube: int = Field(default=0, ge=0)
    """Memories a cube may hold (0: no limit). Every memory counts whatever its status, except
    WorkingMemory copies (bounded by working_memory_capacity). An add or write that would pass it
    is refused whole with RESOURCE_EXHAUSTED (reason CUBE_MEMORY_QUOTA_EXCEEDED; the limit, the
    cube's usage, what was asked and the cube id in its details) and stores nothing; a re-add
    merged into existing memories (dedupe) stores nothing new and is never refused. Checked in
    the graph write's transaction, so concurrent adds cannot pass it together."""

    max_bytes_per_cube: int = Field(default=0, ge=0)
    """UTF-8 bytes of memory text a cube may hold (0: no limit), counted like
    max_memories_per_cube; sources (the messages a memory's text already renders) and the
    versions updates replaced are not counted. Adds, writes and updates that would grow the
    cube past it fail with RESOURCE_EXHAUSTED (reason CUBE_BYTES_QUOTA_EXCEEDED) and change
    nothing; deleting memories frees room."""

    metrics_top_cubes: int = Field(default=10, ge=0, le=1000)
    """With metrics on (MEMOS_METRICS_ADDR): the largest cubes reported one by one in
    ``memos_textmem_cube_memories``; a bound on that metric's series (0: none)."""

    metrics_stats_ttl_s: float = Field(default=15.0, ge=0.0)
    """With metrics on: how long textmem's memory and cube counts are reused between scrapes."""

    retrieval_recipe: Literal[
        "lexical",
        "dense",
        "fused",
        "fused-k20",
        "+neighbours",
        "+speaker",
        "+temporal",
        "+lexical-rescore",
        "+two-hop",
        "+boosts",
        "+session",
        "windows",
    ] = "+session"
    """Retrieval signals searches use (services/textmem/ranking.py RECIPES): "lexical" (BM25
    only), "dense" (vectors only), "fused" (reciprocal rank fusion, k=60), "fused-k20" (k=20),
    then each adding one signal: "+neighbours" (adjacent windows of the same conversation),
    "+speaker" (memories spoken by the person the query names), "+temporal" (when-questions
    prefer memories that say when; a named year or month prefers memories from it),
    "+lexical-rescore" (the candidates scored again by stemmed BM25 without question words and
    speaker names), "+two-hop" (neighbours of neighbours too), "+boosts" (stronger speaker and
    time boosts), "+session" (memories of the sessions holding the best hits preferred; the
    default, which ranks with "windows" instead when most candidates are fast-mode windows of
    several turns), "windows" (+temporal with the lexical rescoring and no neighbour spread)."""

    @property
    def preference_collection(self) -> str:
        """The collection preference vectors live in (milvus_preference_collection, or derived)."""
        return self.milvus_preference_collection or f"{self.milvus_collection}_preferences"

    @model_validator(mode="after")
    def _window_is_usable(self) -> TextMemSettings:
        # Refuse at start rather than fail every add with a caller-facing error.
        if self.window_overlap >= self.window_size:
            raise ValueError(
                f"window_overlap ({self.window_overlap}) must be smaller than window_size ({self.window_size})"
            )
        if self.preference_collection == self.milvus_collection:
            raise ValueError("milvus_preference_collection must differ from milvus_collection")
        if self.conflict_llm_base_url and not self.conflict_llm_model:
            raise ValueError("conflict_llm_model is required when conflict_llm_base_url is set")
        return self
