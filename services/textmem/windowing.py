"""Fast-mode extraction: a conversation becomes overlapping windows of turns.

No LLM: each window is stored as its turns' text, so nothing said is lost or
paraphrased, and every message stays reachable through the window's sources.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from services.textmem.models import ChatMessage, Memory, Source
from shared.times import utc_minute


def window_bounds(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) index pairs covering ``n`` messages; every message in at least one."""
    if n <= 0:
        return []
    overlap = max(0, min(overlap, size - 1))
    step = size - overlap
    bounds = []
    start = 0
    while True:
        end = min(start + size, n)
        bounds.append((start, end))
        if end >= n:
            return bounds
        start += step


def render_message(msg: ChatMessage) -> str:
    """One line per message: ``role: [time]: text`` (the speaker's name instead of the role when
    the message has one) plus markers for non-text parts."""
    pieces: list[str] = []
    for part in msg.parts:
        if part.kind == "text" and part.text:
            pieces.append(part.text)
        elif part.kind == "file":
            pieces.append(f"[file: {part.filename or part.file_id or 'unnamed'}]")
        elif part.kind == "image_url":
            pieces.append(f"[image: {part.url}]")
        elif part.kind == "input_audio":
            pieces.append("[audio]")
    for call in msg.tool_calls:
        pieces.append(f"[tool call {call.name}({call.arguments})]")
    prefix = f"{msg.name or msg.role}: "
    if msg.chat_time is not None:
        prefix += f"[{utc_minute(msg.chat_time)}]: "
    return prefix + " ".join(pieces)


def _sources_of(msg: ChatMessage, index: int) -> list[Source]:
    base = dict(role=msg.role, message_index=index, message_id=msg.message_id, chat_time=msg.chat_time)
    sources: list[Source] = []
    text = msg.text()
    if msg.role == "tool":
        sources.append(Source(type="tool_result", content=text, tool_call_id=msg.tool_call_id, **base))
    elif text or not (msg.parts or msg.tool_calls):
        sources.append(Source(type="system" if msg.role == "system" else "chat", content=text, **base))
    for part in msg.parts:
        if part.kind == "file":
            sources.append(
                Source(
                    type="file",
                    content="",
                    file={"file_id": part.file_id, "filename": part.filename},
                    **base,
                )
            )
        elif part.kind == "image_url":
            sources.append(Source(type="image", image_url=part.url, **base))
        elif part.kind == "input_audio":
            sources.append(Source(type="audio", **base))
    for call in msg.tool_calls:
        sources.append(
            Source(type="tool_call", content=call.arguments, tool_call_id=call.id, tool_name=call.name, **base)
        )
    return sources


def build_window_memories(
    messages: Sequence[ChatMessage],
    *,
    cube_id: str,
    user_id: str,
    session_id: str,
    tags: Sequence[str],
    info: dict,
    size: int,
    overlap: int,
    now: float | None = None,
) -> list[Memory]:
    """The fast-mode memories of a conversation, in order."""
    now = time.time() if now is None else now
    for msg in messages:
        if not msg.message_id:
            msg.message_id = f"msg-{uuid.uuid4().hex[:16]}"
    memories = []
    for start, end in window_bounds(len(messages), size, overlap):
        window = messages[start:end]
        lines = [render_message(m) for m in window]
        sources = [s for offset, m in enumerate(window) for s in _sources_of(m, start + offset)]
        times = [m.chat_time for m in window if m.chat_time is not None]
        first_user = next((m.text() for m in window if m.role == "user" and m.text()), lines[0])
        memories.append(
            Memory(
                id=uuid.uuid4().hex,
                cube_id=cube_id,
                user_id=user_id,
                session_id=session_id,
                memory="\n".join(lines),
                memory_type="LongTermMemory",
                key=first_user[:80],
                tags=[*tags, "mode:fast"],
                sources=sources,
                info=dict(info),
                created_at=now,
                updated_at=now,
                event_time=max(times) if times else None,
            )
        )
    return memories
