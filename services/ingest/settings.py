"""Settings of the ingest service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, model_validator

from shared.settings import ClientSettings, ServerSettings


class IngestSettings(ServerSettings, ClientSettings):
    listen_addr: str = "127.0.0.1:50053"
    """host:port to listen on."""

    textmem_addr: str = "127.0.0.1:50052"
    """Where the textmem service listens (IngestMessages writes there)."""

    window_size: int = Field(default=4, ge=1, le=64)
    """Messages per fast-mode memory (keep equal to textmem's MEMOS_WINDOW_SIZE)."""

    window_overlap: int = Field(default=1, ge=0, le=63)
    """Messages shared by consecutive fast-mode windows (keep equal to textmem's)."""

    max_messages_per_add: int = Field(default=2000, ge=1)
    """Messages one request may carry."""

    max_text_chars: int = Field(default=200_000, ge=1)
    """Characters one message part may carry."""

    # fetching -------------------------------------------------------------------------
    fetch_allow_hosts: str = ""
    """Comma-separated host names, IP addresses or CIDRs that may be fetched although they are
    private, loopback or link-local (e.g. "127.0.0.1" for tests, "10.0.0.0/8,files.internal")."""

    fetch_timeout_s: float = Field(default=15.0, gt=0)
    """Longest a fetch of one URL may take, redirects and body included."""

    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Largest file accepted from a URL, a data: URI or an upload."""

    fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    """Redirects followed per fetch; each target is checked like the first URL."""

    fetch_concurrency: int = Field(default=4, ge=1, le=64)
    """Fetches of one request that run at the same time."""

    # documents --------------------------------------------------------------------------
    chunk_chars: int = Field(default=1200, ge=200, le=20_000)
    """Target size of a document chunk, in characters."""

    chunk_overlap_chars: int = Field(default=150, ge=0, le=5_000)
    """Characters of a chunk's end repeated at the start of the next chunk of the same section."""

    max_chunks_per_file: int = Field(default=2000, ge=1)
    """Chunks one file may produce; a longer file is refused with a part error."""

    pdf_max_pages: int = Field(default=2000, ge=1)
    """Pages a pdf may have."""

    docx_max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    """Total uncompressed size a docx (a zip) may declare; larger is treated as a zip bomb."""

    docx_max_ratio: int = Field(default=200, ge=2)
    """Largest compression ratio of one docx member; higher is treated as a zip bomb."""

    upload_dir: str = ""
    """Where UploadFile keeps files; empty: in memory (lost on restart)."""

    upload_max_files: int = Field(default=256, ge=1)
    """Uploads kept in memory at once when upload_dir is empty (oldest dropped first)."""

    # LLM --------------------------------------------------------------------------------
    llm_base_url: str = ""
    """Base URL (…/v1) of an OpenAI-compatible chat-completions API for fine mode; empty: fine
    mode falls back to fast mode and says so."""

    llm_model: str = ""
    """Model name sent to llm_base_url."""

    llm_api_key: str = ""
    """Bearer token for llm_base_url."""

    llm_timeout_s: float = Field(default=60.0, gt=0)
    """Longest one LLM call may take."""

    llm_max_concurrency: int = Field(default=4, ge=1, le=256)
    """LLM calls in flight at once, across all requests of this process."""

    llm_max_tokens: int = Field(default=2048, ge=16)
    """max_tokens of an extraction call."""

    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """Sampling temperature of extraction calls."""

    fine_batch_messages: int = Field(default=8, ge=1, le=256)
    """Messages per fine-mode extraction call."""

    extract_preferences: bool = True
    """Extract preferences as PreferenceMemory items: explicit and implicit ones by the LLM in fine
    mode; explicit ones by rules (see rule_preferences) where no LLM extracts. Off: no
    PreferenceMemory at all, and the LLM is not asked for preferences."""

    rule_preferences: bool = True
    """Where no LLM extracts (fast mode, fine mode without an LLM, a fine batch that fell back),
    store the preferences a user states outright in their own turns ("I prefer …", "I'm allergic
    to …", "我更喜欢…", "我不吃…") as PreferenceMemory, found by conservative English and Chinese
    rules (questions, negated, hypothetical and reported statements are skipped), so that
    include_preference returns something without an LLM. Needs extract_preferences. Off: fast
    adds store the conversation windows only, as textmem's own AddMemories does."""

    vision_base_url: str = ""
    """Base URL of an OpenAI-compatible chat API that accepts image parts; llm_base_url when empty."""

    vision_model: str = ""
    """Vision model name; empty: images are recorded as sources, not described."""

    vision_api_key: str = ""
    """Bearer token for the vision endpoint; llm_api_key when empty."""

    @model_validator(mode="after")
    def _check(self) -> IngestSettings:
        if self.window_overlap >= self.window_size:
            raise ValueError(
                f"window_overlap ({self.window_overlap}) must be smaller than window_size ({self.window_size})"
            )
        if self.chunk_overlap_chars >= self.chunk_chars:
            raise ValueError("chunk_overlap_chars must be smaller than chunk_chars")
        for entry in self.allow_list():
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)  # raises ValueError on a bad CIDR
        if self.llm_base_url and not self.llm_model:
            raise ValueError("llm_model is required when llm_base_url is set")
        return self

    def allow_list(self) -> list[str]:
        return [e.strip().lower() for e in self.fetch_allow_hosts.split(",") if e.strip()]
