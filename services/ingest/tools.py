"""Tools: schemas declared in system prompts, and calls with their results.

A system prompt may carry ``<tool_schema>[...]</tool_schema>`` (JSON: a list of
tools, one tool, or ``{"tools": [...]}``; each tool flat ``{"name",
"description", "parameters"}`` or OpenAI's ``{"type": "function",
"function": {...}}``). Each tool becomes a ToolSchemaMemory. An assistant's
tool call and the ``tool`` message answering it become a ToolTrajectoryMemory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidArgument

# Tolerates the "<tool_chema>" spelling MemOS's own docs use for the opening tag.
TOOL_SCHEMA_BLOCK = re.compile(r"<tool_s?chema>(.*?)</tool_s?chema>", re.S | re.I)
_FAILURE_WORDS = re.compile(r"^\s*(error|exception|traceback|failed|failure)\b", re.I)


@dataclass
class ToolSchema:
    name: str
    description: str
    parameters: Any
    returns: Any = None

    def render(self) -> str:
        lines = [f"Tool {self.name}: {self.description}".rstrip(": ")]
        if self.parameters not in (None, {}, []):
            lines.append("Parameters: " + json.dumps(self.parameters, ensure_ascii=False, sort_keys=True))
        if self.returns not in (None, {}, []):
            lines.append("Returns: " + json.dumps(self.returns, ensure_ascii=False, sort_keys=True))
        return "\n".join(lines)


def schema_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in TOOL_SCHEMA_BLOCK.finditer(text)]


def strip_schema_blocks(text: str) -> str:
    return TOOL_SCHEMA_BLOCK.sub("", text).strip()


def parse_tool_schema(block: str) -> list[ToolSchema]:
    """The tools of one ``<tool_schema>`` block; InvalidArgument says what is wrong."""
    try:
        data = json.loads(block)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"<tool_schema> is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            reason="TOOL_SCHEMA_INVALID_JSON",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InvalidArgument(
            "<tool_schema> must hold a tool or a non-empty list of tools", reason="TOOL_SCHEMA_INVALID"
        )
    tools = []
    for i, raw in enumerate(data):
        if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
            raw = raw["function"]
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise InvalidArgument(f"tool {i} of <tool_schema> has no name", reason="TOOL_SCHEMA_INVALID")
        desc = raw.get("description", "")
        tools.append(
            ToolSchema(
                name=raw["name"].strip(),
                description=desc if isinstance(desc, str) else json.dumps(desc, ensure_ascii=False),
                parameters=raw.get("parameters"),
                returns=raw.get("returns"),
            )
        )
    return tools


def summarize_result(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def call_succeeded(result: str) -> bool:
    """A heuristic: a result that is an error object or starts with an error word failed."""
    if not result.strip():
        return False
    try:
        data = json.loads(result)
    except json.JSONDecodeError:
        return not _FAILURE_WORDS.match(result)
    if isinstance(data, dict):
        if data.get("error") or data.get("errors") or data.get("success") is False or data.get("ok") is False:
            return False
        status = str(data.get("status", "")).lower()
        if status in ("error", "failed", "failure"):
            return False
    return True


def render_trajectory(name: str, arguments: str, result: str | None) -> tuple[str, bool]:
    if result is None:
        return f"Called tool {name} with arguments {arguments or '{}'}; no result was recorded.", False
    ok = call_succeeded(result)
    outcome = "succeeded" if ok else "failed"
    return (
        f"Called tool {name} with arguments {arguments or '{}'}; it {outcome}. Result: {summarize_result(result)}",
        ok,
    )
