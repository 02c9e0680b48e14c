"""Settings of the gateway service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ClientSettings, ServerSettings


class GatewaySettings(ServerSettings, ClientSettings):
    listen_addr: str = "0.0.0.0:50051"
    """host:port to listen on."""

    textmem_addr: str = "127.0.0.1:50052"
    """Where the textmem service listens."""

    ingest_addr: str = ""
    """Where the ingest service listens; every add (fast and fine) goes through it. Empty: adds go
    straight to textmem's fast path (chat text only; files are not fetched) and fine mode falls back."""

    scheduler_addr: str = ""
    """Where the scheduler listens; empty: async adds run synchronously."""

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
