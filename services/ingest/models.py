"""Domain objects of ingest: parsed messages, memory items, part errors. No gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.errors import MemosError


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Part:
    """One content part: kind is text/file/image_url/input_audio/unknown."""

    kind: str
    text: str = ""
    file_id: str = ""
    filename: str = ""
    file_data: str = ""
    url: str = ""
    audio_format: str = ""


@dataclass
class ChatMessage:
    role: str
    parts: list[Part] = field(default_factory=list)
    name: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    chat_time: float | None = None
    message_id: str = ""

    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if p.kind == "text" and p.text)


@dataclass
class Source:
    """Where a memory came from (same fields as memos.common.v1.Source)."""

    type: str = "chat"
    role: str = ""
    message_index: int = 0
    message_id: str = ""
    chat_time: float | None = None
    content: str = ""
    file: dict[str, Any] | None = None
    image_url: str = ""
    tool_call_id: str = ""
    tool_name: str = ""


@dataclass
class Item:
    """A memory candidate: text plus metadata, not yet embedded or stored."""

    memory: str
    memory_type: str = "LongTermMemory"
    key: str = ""
    tags: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    background: str = ""
    confidence: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)
    event_time: float | None = None


@dataclass
class PartError:
    """Why one part of one message produced nothing. part_index -1: the message as a whole."""

    message_index: int
    part_index: int
    error: MemosError


@dataclass
class Extraction:
    """What parsing a request produced."""

    items: list[Item] = field(default_factory=list)
    part_errors: list[PartError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    effective_mode: str = "fast"
    llm_calls: int = 0
