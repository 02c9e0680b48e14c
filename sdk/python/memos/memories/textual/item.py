"""MemOS's ``TextualMemoryItem``: a textual memory as the SDK hands it to Python code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from memos.client._convert import memory_to_dict
from memos.common.v1 import memory_pb2


class TextualMemoryItem(BaseModel):
    id: str = Field(..., description="Memory id (unique in its cube)")
    memory: str = Field(..., description="The memory's text")
    metadata: dict[str, Any] = Field(default_factory=dict, description="memory_type, sources, tags, cube_id, ...")
    score: float | None = Field(None, description="Relevance, when it came from a search")

    @classmethod
    def from_proto(cls, item: memory_pb2.MemoryItem, score: float | None = None) -> TextualMemoryItem:
        d = memory_to_dict(item, score)
        return cls(id=d["id"], memory=d["memory"], metadata=d.get("metadata", {}), score=score)
