"""Fast-mode conversation memories: overlapping windows of turns.

A port of textmem's windowing (services/textmem/windowing.py), producing the
same texts, keys, tags and sources, so that an add routed through ingest
stores what textmem's own AddMemories stores. No LLM: nothing said is lost or
paraphrased, and every message stays reachable through the window's sources.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from services.ingest.models import ChatMessage, Item, Source
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


def message_sources(msg: ChatMessage, index: int) -> list[Source]:
    """The sources one message contributes to a window: its text, files, images, audio, tool calls."""
    base: dict[str, Any] = dict(role=msg.role, message_index=index, message_id=msg.message_id, chat_time=msg.chat_time)
    sources: list[Source] = []
    text = msg.text()
    if msg.role == "tool":
        sources.append(Source(type="tool_result", content=text, tool_call_id=msg.tool_call_id, **base))
    elif text or not (msg.parts or msg.tool_calls):
        sources.append(Source(type="system" if msg.role == "system" else "chat", content=text, **base))
    for part in msg.parts:
        if part.kind == "file":
            sources.append(
                Source(type="file", content="", file={"file_id": part.file_id, "filename": part.filename}, **base)
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


def assign_message_ids(messages: Sequence[ChatMessage]) -> None:
    for msg in messages:
        if not msg.message_id:
            msg.message_id = f"msg-{uuid.uuid4().hex[:16]}"


def build_window_items(
    messages: Sequence[ChatMessage], *, tags: Sequence[str], info: dict, size: int, overlap: int
) -> list[Item]:
    """The fast-mode memories of a conversation, in order (message ids must be assigned)."""
    items = []
    for start, end in window_bounds(len(messages), size, overlap):
        window = messages[start:end]
        lines = [render_message(m) for m in window]
        sources = [s for offset, m in enumerate(window) for s in message_sources(m, start + offset)]
        times = [m.chat_time for m in window if m.chat_time is not None]
        first_user = next((m.text() for m in window if m.role == "user" and m.text()), lines[0])
        items.append(
            Item(
                memory="\n".join(lines),
                memory_type="LongTermMemory",
                key=first_user[:80],
                tags=[*tags, "mode:fast"],
                sources=sources,
                info=dict(info),
                event_time=max(times) if times else None,
            )
        )
    return items
