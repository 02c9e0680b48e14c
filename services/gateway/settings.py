"""Settings of the gateway service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from shared.settings import ClientSettings, ServerSettings


class GatewaySettings(ServerSettings, ClientSettings):
    listen_addr: str = "0.0.0.0:50051"
    """host:port to listen on."""

    api_keys_file: Path | None = None
    """JSON file of API key records (``python -m services.gateway.auth create`` writes it); every
    call then needs ``authorization: Bearer <key>`` and may act only as the key's user (admin keys:
    any user). Unset: no authentication, for a laptop or a gateway reachable only on loopback."""

    rate_limit_per_user: float = Field(default=0.0, ge=0.0)
    """Calls per second one user may make to this gateway replica on average (0: no limit); past it
    RESOURCE_EXHAUSTED RATE_LIMITED with the wait in its details."""

    rate_limit_burst: int = Field(default=20, ge=1)
    """Calls one user may make at once above the rate before being limited."""

    textmem_addr: str = "127.0.0.1:50052"
    """Where the textmem service listens."""

    ingest_addr: str = ""
    """Where the ingest service listens; every add (fast and fine) goes through it. Empty: adds go
    straight to textmem's fast path (chat text only; files are not fetched) and fine mode falls back."""

    scheduler_addr: str = ""
    """Where the scheduler listens; empty: async adds run synchronously and chats raise no
    query events (no working-memory refresh)."""

    search_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of a search whose caller set none."""

    fanout_reserve_s: float = Field(default=0.02, ge=0)
    """Time kept back from the caller's deadline to answer with per-cube statuses."""

    max_cubes_per_request: int = Field(default=64, ge=1, le=1024)
    """Cubes one search or add may name."""

    cube_cache_ttl_s: float = Field(default=1.0, ge=0)
    """How long a cube's access list is cached; changes made through this gateway apply at once."""

    max_messages_per_add: int = Field(default=2000, ge=1)
    """Messages one add may carry."""

    chat_llm_base_url: str = ""
    """OpenAI-compatible API that writes chat answers (e.g. http://127.0.0.1:8000/v1 for vLLM).
    Empty: Chat answers with the best retrieved memories, marked as such."""

    chat_llm_model: str = ""
    """Model name sent to chat_llm_base_url."""

    chat_llm_api_key: str = ""
    """Bearer token for chat_llm_base_url."""

    chat_llm_timeout_s: float = Field(default=120.0, gt=0)
    """Longest wait for the LLM's answer (a stream that stalls this long fails)."""

    chat_llm_max_tokens: int = Field(default=1024, ge=16)
    """Most tokens of one chat answer."""

    chat_llm_max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Chat answers generated at once by this gateway; more wait their turn."""

    chat_max_query_chars: int = Field(default=20_000, ge=1)
    """Characters a chat query may have."""

    scheduler_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait to hand work to the scheduler (a chat's query event, an async add's mem_read
    task); past it the chat goes on without the event, the add keeps its fast memories."""

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.chat_llm_base_url and not self.chat_llm_model:
            raise ValueError("chat_llm_model is required when chat_llm_base_url is set")
        return self
