"""Fine mode: the extraction (and image description) ingest runs through an OpenAI-compatible LLM.

The LLM is asked for JSON of a fixed shape, validated with pydantic. Output
that does not parse or validate is retried once, with the validation error
shown to the model; a second failure makes the caller fall back to fast items
and report why. Calls are bounded by a process-wide semaphore
(``MEMOS_LLM_MAX_CONCURRENCY``) and run in worker threads.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from shared.llm import ChatClient as BaseChatClient
from shared.llm import LLMOutputError

__all__ = ["ChatClient", "ExtractionOutput", "LLMOutputError", "parse_extraction"]


class ExtractedMemory(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    memory_type: Literal["LongTermMemory", "UserMemory"]
    value: str = Field(min_length=1, max_length=20_000)
    tags: list[str] = Field(default_factory=list, max_length=20)
    source_messages: list[int] = Field(default_factory=list)


class ExtractedPreference(BaseModel):
    preference: str = Field(min_length=1, max_length=5_000)
    kind: Literal["explicit", "implicit"] = "explicit"
    reasoning: str = ""
    source_messages: list[int] = Field(default_factory=list)


class ExtractionOutput(BaseModel):
    memories: list[ExtractedMemory]
    summary: str = ""
    preferences: list[ExtractedPreference] = Field(default_factory=list)


EXTRACTION_PROMPT = """You extract long-term memories from a conversation between a user and an assistant.
Return ONLY a JSON object, no prose, of this shape:
{
  "memories": [
    {"key": "short title",
     "memory_type": "LongTermMemory" or "UserMemory",
     "value": "one self-contained fact, event or piece of knowledge, with who/what/when",
     "tags": ["a few", "keywords"],
     "source_messages": [indices of the messages it comes from]}
  ],
  "summary": "one or two sentences of background: what the conversation is about"%(pref_shape)s
}
Use UserMemory for facts about the user themself (profile, relationships, plans, traits),
LongTermMemory for everything else worth remembering. Resolve pronouns and relative times.
Write each value in the language of the conversation. Skip greetings and small talk.
An empty "memories" list is fine when nothing is worth remembering."""

PREF_SHAPE = """,
  "preferences": [
    {"preference": "what the user prefers, as one sentence",
     "kind": "explicit" (the user said it) or "implicit" (follows from what they did or chose),
     "reasoning": "why you conclude it",
     "source_messages": [indices]}
  ]"""

IMAGE_PROMPT = (
    "Describe this image for a memory store: what it shows, any visible text, numbers, labels "
    "and names, in at most five sentences. Plain text, no preamble."
)

_FENCED = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def extraction_system_prompt(preferences: bool) -> str:
    return EXTRACTION_PROMPT % {"pref_shape": PREF_SHAPE if preferences else ""}


def parse_extraction(text: str) -> ExtractionOutput:
    m = _FENCED.match(text)
    if m:
        text = m.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LLMOutputError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    try:
        return ExtractionOutput.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LLMOutputError(f"JSON of the wrong shape ({where}: {first['msg']})") from None


class ChatClient(BaseChatClient):
    """The chat client with the extraction and image description ingest runs."""

    async def extract(
        self, conversation: str, *, preferences: bool, tally: list[int] | None = None
    ) -> ExtractionOutput:
        """Structured extraction with one retry on invalid output; each call is appended to ``tally``."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": extraction_system_prompt(preferences)},
            {"role": "user", "content": conversation},
        ]
        answer = await self.complete(messages, json_output=True, tally=tally)
        try:
            return parse_extraction(answer)
        except LLMOutputError as first:
            messages += [
                {"role": "assistant", "content": answer},
                {
                    "role": "user",
                    "content": f"That was {first.message}. Answer again with only the JSON object of the shape asked for.",
                },
            ]
        answer = await self.complete(messages, json_output=True, tally=tally)
        try:
            return parse_extraction(answer)
        except LLMOutputError as second:
            raise LLMOutputError(f"invalid output twice; last: {second.message}") from None

    async def describe_image(self, image_url: str, tally: list[int] | None = None) -> str:
        text = await self.complete(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": IMAGE_PROMPT},
                        {"type": "image_url", "image_url": {"url": image_url}},
                    ],
                }
            ],
            tally=tally,
        )
        text = text.strip()
        if not text:
            raise LLMOutputError("the vision model returned an empty description")
        return text
