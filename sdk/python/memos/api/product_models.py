"""Request and response models with MemOS's names, fields and defaults."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

MessageList = list[dict[str, Any]]


class BaseRequest(BaseModel):
    """Base of the request models."""


class APIADDRequest(BaseRequest):
    """Add messages to memory cubes (MemOS's ``/product/add``)."""

    user_id: str = Field(..., description="User ID")
    session_id: str | None = Field(None, description="Session ID; 'default_session' when unset")
    task_id: str | None = Field(None, description="Caller's task id, used as the request id (idempotent adds)")
    writable_cube_ids: list[str] | None = Field(
        None, description="Cubes to write; created when named first by their owner"
    )
    mem_cube_id: str | None = Field(None, description="Deprecated single cube id; use writable_cube_ids")
    async_mode: Literal["async", "sync"] = Field(
        "async", description="Return after storing (sync) or after queueing (async)"
    )
    mode: Literal["fast", "fine"] | None = Field(None, description="Extraction mode; fast when unset")
    custom_tags: list[str] | None = Field(None, description="Tags stored with every memory of this add")
    info: dict[str, Any] | None = Field(None, description="Free-form data stored with every memory")
    messages: MessageList | str | None = Field(None, description="OpenAI-format messages")
    memory_content: str | None = Field(None, description="Plain text to remember, as one user message")
    chat_history: MessageList | None = Field(None, description="Accepted for compatibility; not stored")
    source: str | None = Field(None, description="Accepted for compatibility")
    operation: list[dict[str, Any]] | None = Field(None, description="Accepted for compatibility")


class APISearchRequest(BaseRequest):
    """Search memory cubes (MemOS's ``/product/search``)."""

    query: str = Field(..., description="Search query")
    user_id: str = Field(..., description="User ID")
    readable_cube_ids: list[str] | None = Field(None, description="Cubes to search, in parallel")
    mem_cube_id: str | None = Field(None, description="Deprecated single cube id; use readable_cube_ids")
    mode: Literal["fast", "fine", "mixture"] = Field("fast", description="Search mode")
    top_k: int = Field(10, ge=1, le=100, description="Memories per cube and in the merged ranking")
    session_id: str | None = Field(None, description="Only memories of this session")
    filter: dict[str, Any] | None = Field(None, description="e.g. {'memory_type': 'UserMemory', 'tags': [...]}")
    include_preference: bool = Field(True, description="Also return preference memories")
    pref_top_k: int = Field(6, ge=1, le=100, description="Preference memories per cube")
    internet_search: bool = Field(False, description="Not supported: must stay false")
    chat_history: MessageList | None = Field(None, description="Accepted for compatibility")


class ChatRequest(BaseRequest):
    """Chat with memory (MemOS's ``/product/chat``)."""

    user_id: str = Field(..., description="User ID")
    query: str = Field(..., description="The user's question")
    readable_cube_ids: list[str] | None = Field(None, description="Cubes to retrieve from; the user's own when unset")
    writable_cube_ids: list[str] | None = Field(None, description="Cubes that receive the exchange")
    mem_cube_id: str | None = Field(None, description="Deprecated single cube id; use readable_cube_ids")
    history: MessageList | None = Field(None, description="Earlier turns, oldest first (not stored)")
    session_id: str | None = Field(None, description="Session ID")
    top_k: int = Field(10, ge=1, le=50, description="Memories retrieved into the prompt")
    system_prompt: str | None = Field(None, description="Replaces the default system prompt")
    include_preference: bool = Field(True, description="Also retrieve preference memories")
    add_message_on_answer: bool = Field(True, description="Store the exchange in writable_cube_ids")
    internet_search: bool = Field(False, description="Not supported: must stay false")
    moscube: bool = Field(False, description="Accepted for compatibility")


class ChatPlaygroundRequest(ChatRequest):
    """The playground's streaming chat (MemOS's ``/product/chat/stream/playground``)."""

    beginner_guide_step: str | None = Field(None, description="Accepted for compatibility")


class BaseResponse(BaseModel, Generic[T]):
    code: int = Field(200, description="200 on success")
    message: str = Field(..., description="What happened")
    data: T | None = None


class MemoryResponse(BaseResponse[list]):
    """Result of an add: the memories written."""


class SearchResponse(BaseResponse[dict]):
    """Result of a search: ``data`` has text_mem / pref_mem / act_mem / para_mem buckets per cube."""
