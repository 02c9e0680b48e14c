"""``KVCacheItem``: one KV cache with its id, metadata and provenance records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class KVCacheRecords(BaseModel):
    """Where a cache came from (MemOS's ``records``)."""

    text_memories: list[str] = Field(default_factory=list)
    """The texts the cache was computed from, in order (several after a merge)."""
    composed_text_memory: str = ""
    """The text the cache stands for, as one string."""
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    num_tokens: int = 0
    model: str = ""
    merged_from: list[str] = Field(default_factory=list)


class KVCacheItem(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    memory: Any = None
    """A transformers ``DynamicCache`` (``memory.layers[i].keys/values``)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    records: KVCacheRecords = Field(default_factory=KVCacheRecords)
    # The actmem header the cache came with (model fingerprint and all), for adding it back.
    _header: Any = PrivateAttr(default=None)
