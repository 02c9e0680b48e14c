"""MemOS's ``ScheduleMessageItem``: a scheduler message as handlers receive and submit it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memos.client.scheduler import ScheduledMessage


class ScheduleMessageItem(BaseModel):
    """One unit of scheduler work (fields as in MemOS; ``mem_cube`` is accepted, never sent)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    item_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique id of the message")
    user_id: str = Field(..., description="Whose memory the work concerns")
    mem_cube_id: str = Field(..., description="The cube the work concerns")
    session_id: str = Field("", description="Conversation session, if any")
    label: str = Field(..., description="Task kind: a built-in label or a registered one")
    content: str = Field("", description="The work's text (a query, an answer, memory ids ...)")
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it was made")
    trace_id: str = Field("", description="Trace id linking it to the request that caused it")
    info: dict[str, Any] = Field(default_factory=dict, description="Free-form data for the handler")
    priority: int = Field(0, description="Higher runs first within a label")
    mem_cube: Any = Field(None, exclude=True, description="Accepted for compatibility; not sent")

    def to_scheduled(self) -> ScheduledMessage:
        return ScheduledMessage(
            user_id=self.user_id,
            cube_id=self.mem_cube_id,
            label=self.label,
            content=self.content,
            item_id=self.item_id,
            session_id=self.session_id,
            timestamp=self.timestamp.timestamp(),
            trace_id=self.trace_id,
            info=dict(self.info),
            priority=self.priority,
        )

    @classmethod
    def from_scheduled(cls, m: ScheduledMessage) -> ScheduleMessageItem:
        return cls(
            item_id=m.item_id,
            user_id=m.user_id,
            mem_cube_id=m.cube_id,
            session_id=m.session_id,
            label=m.label,
            content=m.content,
            timestamp=datetime.fromtimestamp(m.timestamp or 0.0, UTC),
            trace_id=m.trace_id,
            info=dict(m.info),
            priority=m.priority,
        )
