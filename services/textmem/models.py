"""Domain objects of textual memory. Plain dataclasses, no gRPC."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

# MemOS's names for memory types; the stored form.
MEMORY_TYPES = (
    "WorkingMemory",
    "LongTermMemory",
    "UserMemory",
    "OuterMemory",
    "ToolSchemaMemory",
    "ToolTrajectoryMemory",
    "RawFileMemory",
    "PreferenceMemory",
)
# Searched when a filter names no type: everything but preferences, which have their own bucket.
DEFAULT_SEARCH_TYPES = tuple(t for t in MEMORY_TYPES if t != "PreferenceMemory")

STATUSES = ("activated", "archived", "resolving")
SEARCHABLE_STATUSES = ("activated", "resolving")


@dataclass
class Source:
    """Where a memory came from. ``type`` is chat/file/image/audio/tool_call/tool_result/tool_schema/system."""

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

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "", {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        return cls(**{k: v for k, v in d.items() if k in _SOURCE_FIELDS})


_SOURCE_FIELDS = {f.name for f in dataclasses.fields(Source)}


@dataclass
class Memory:
    id: str
    cube_id: str
    memory: str
    user_id: str = ""
    session_id: str = ""
    memory_type: str = "LongTermMemory"
    status: str = "activated"
    key: str = ""
    tags: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    background: str = ""
    confidence: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    event_time: float | None = None
    version: int = 1


@dataclass
class Edge:
    """A relation between two memories of one cube (e.g. FOLLOWS for adjacent windows)."""

    cube_id: str
    src_id: str
    dst_id: str
    type: str


@dataclass
class MemoryFilter:
    """Set fields are ANDed; empty means no constraint."""

    memory_types: tuple[str, ...] = ()
    user_id: str = ""
    session_id: str = ""
    tags: tuple[str, ...] = ()
    created_after: float | None = None
    created_before: float | None = None
    include_archived: bool = False

    def types(self) -> tuple[str, ...]:
        return self.memory_types or DEFAULT_SEARCH_TYPES

    def statuses(self) -> tuple[str, ...]:
        return STATUSES if self.include_archived else SEARCHABLE_STATUSES

    def narrows(self) -> bool:
        """Whether a field other than ``include_archived`` is set (a filter that selects less than
        a whole cube's searchable memories)."""
        return bool(
            self.memory_types
            or self.user_id
            or self.session_id
            or self.tags
            or self.created_after is not None
            or self.created_before is not None
        )


@dataclass
class Cube:
    cube_id: str
    owner_id: str
    name: str = ""
    # user id -> "reader" | "writer"
    members: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def role_of(self, user_id: str) -> str:
        """ "owner", "writer", "reader" or "" (no access)."""
        if user_id == self.owner_id:
            return "owner"
        return self.members.get(user_id, "")


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Part:
    """One content part: kind is text/file/image_url/input_audio."""

    kind: str
    text: str = ""
    file_id: str = ""
    filename: str = ""
    file_data: str = ""
    url: str = ""


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
