"""Settings of the actmem service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.settings import ServerSettings, default_data_dir


class ActMemSettings(ServerSettings):
    listen_addr: str = "127.0.0.1:50054"
    """host:port to listen on."""

    backend: Literal["transformers", "vllm"] = "transformers"
    """"transformers": the model runs in this process; "vllm": a co-located vLLM server
    (OpenAI-compatible API with automatic prefix caching) holds the caches as warmed prefixes."""

    model_path: str = ""
    """Local model directory, or a Hugging Face model name resolved from the local Hugging Face
    cache only (never downloaded). Required."""

    device: str = "cpu"
    """torch device of the model and of resident caches: "cpu", "cuda" or "cuda:<n>"."""

    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Model and cache dtype; "auto" is float32 on CPU and bfloat16 on CUDA."""

    torch_threads: int = Field(default=0, ge=0)
    """torch intra-op threads (0: torch's default, all cores)."""

    max_cache_bytes: int = Field(default=4 * 1024**3, ge=0)
    """Budget for caches resident in (device) memory. Beyond it the least recently used caches
    are evicted to disk (data_dir/spill) and reloaded on use; a single cache larger than the
    budget is refused with RESOURCE_EXHAUSTED. 0: no budget."""

    max_spill_bytes: int = Field(default=64 * 1024**3, ge=0)
    """Budget for evicted caches on disk; past it, adds fail with RESOURCE_EXHAUSTED. 0: no budget."""

    max_kv_bytes_per_cube: int = Field(default=0, ge=0)
    """Bytes of KV caches one cube may store, resident and evicted together (0: no limit).
    Storing a cache (ExtractCache, AddCache, MergeCaches with store, LoadCaches) that would pass
    it fails with RESOURCE_EXHAUSTED (reason KV_QUOTA_EXCEEDED; the limit, the cube's usage, the
    cache's size and the cube id in its details) before the model runs or the tensors arrive, and
    stores nothing; deleting caches frees quota. The vllm backend keeps the caches in the vLLM
    server, not here: there neither KV quota applies."""

    max_kv_bytes_per_user: int = Field(default=0, ge=0)
    """Bytes of KV caches one user may store across all cubes, resident and evicted together (0: no
    limit). A cache counts against the user its storing request names (``user_id`` of
    ExtractCache, MergeCaches, LoadCaches, or of the AddCache header); with this set, a storing
    request without a user_id fails with INVALID_ARGUMENT (reason USER_ID_REQUIRED), so no cache
    escapes the quota. Past it: RESOURCE_EXHAUSTED, reason KV_QUOTA_EXCEEDED, quota
    ``kv_bytes_per_user``, the limit, the user's usage and the cache's size in the details;
    nothing is stored. Both quotas apply when both are set."""

    data_dir: Path = Field(default_factory=lambda: default_data_dir() / "actmem")
    """Working directory of the service (evicted caches under spill/, emptied at start)."""

    dump_root: Path | None = None
    """Directory that Dump and Load paths are relative to (never escaped); data_dir/dumps when unset."""

    chunk_bytes: int = Field(default=1024 * 1024, ge=4096, le=8 * 1024 * 1024)
    """Largest tensor chunk per streamed message (well under the gRPC message limits)."""

    checksum: Literal["crc32", "sha256"] = "crc32"
    """Checksum of streamed and dumped payloads: crc32 (3 GB/s, catches corruption and
    truncation) or sha256 (1.3 GB/s here, also resists deliberate tampering)."""

    max_prompt_tokens: int = Field(default=0, ge=0)
    """Longest prompt (cached prefix + new tokens + max_tokens); 0: the model's context length."""

    max_new_tokens: int = Field(default=1024, ge=1)
    """Upper bound on Generate's max_tokens."""

    vllm_url: str = ""
    """vLLM backend: base URL of the co-located OpenAI-compatible server (http://127.0.0.1:8000/v1);
    several comma-separated URLs for replicas of the same model (each cache is warmed on one and
    generations using it are routed there). The server needs --enable-prefix-caching and
    --enable-prompt-tokens-details; model_path must be the directory it serves (its tokenizer
    is used here)."""

    vllm_model: str = ""
    """vLLM backend: served model name; the server's first model when empty."""

    vllm_api_key: str = ""
    """vLLM backend: bearer token, if the server was started with --api-key."""

    vllm_timeout_s: float = Field(default=120.0, gt=0)
    """vLLM backend: timeout of one HTTP call to the server."""

    vllm_startup_timeout_s: float = Field(default=600.0, ge=0)
    """vLLM backend: how long to wait at start for the server to answer (it loads the model)."""

    vllm_rewarm_interval_s: float = Field(default=0.0, ge=0)
    """vLLM backend: re-warm every stored prefix this often, so that idle caches stay in the
    server's prefix cache; 0: only after a generation found its prefix evicted."""

    @property
    def vllm_urls(self) -> list[str]:
        return [u.strip() for u in self.vllm_url.split(",") if u.strip()]

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        # Fail at start, not on the first extraction.
        if v != "cpu" and v != "cuda" and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError(f"device must be cpu, cuda or cuda:<n>, not {v!r}")
        return v

    @property
    def resolved_dump_root(self) -> Path:
        return self.dump_root if self.dump_root is not None else self.data_dir / "dumps"
