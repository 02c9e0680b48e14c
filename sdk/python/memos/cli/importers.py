"""Reads conversation files for ``memos import``: JSONL of OpenAI-format messages, or LoCoMo.

Everything is parsed and checked before anything is sent, so a malformed file
adds nothing; errors name the file and the line (JSONL, invalid JSON) or the
conversation, session and turn (LoCoMo).

JSONL: one JSON object per line, blank lines ignored. A line is either one
message (``{"role": "user", "content": "..."}``, any OpenAI-format message the
SDK accepts, optionally with ``chat_time``) or a conversation
(``{"messages": [...], "session_id": "..."}``). Consecutive message lines form
one conversation, sent in requests of at most ``batch`` messages; a
conversation line is sent in requests of its own.

LoCoMo (Maharana et al., 2024): a JSON list of samples (or one sample), each
with ``conversation.session_N`` lists of turns ``{speaker, dia_id, text,
optional blip_caption}`` and ``session_N_date_time``. Each session becomes one
conversation (session id ``<sample_id>:session_<N>``); the first speaker's
turns are ``user`` messages, the other's ``assistant`` messages, both named
after their speaker, timed at the session's date.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memos.client import _convert
from shared.errors import InvalidArgument

FORMATS = ("auto", "jsonl", "locomo")


class ImportFileError(Exception):
    """The file cannot be imported; the message names where it is wrong."""


@dataclass
class Batch:
    """One AddMemories request's worth of messages."""

    messages: list[dict[str, Any]]
    session_id: str = ""
    where: str = ""  # e.g. "line 3" or "conv-26 session_2", for messages about this batch


@dataclass
class ImportPlan:
    format: str
    batches: list[Batch] = field(default_factory=list)

    @property
    def message_count(self) -> int:
        return sum(len(b.messages) for b in self.batches)


def _check_message(msg: Any, index: int, where: str) -> None:
    try:
        _convert.message_to_proto(msg, index)
    except InvalidArgument as exc:
        raise ImportFileError(f"{where}: {exc.message}") from None


def _chunks(messages: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(messages), size):
        yield messages[start : start + size]


def detect_format(path: Path, text: str) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    head = text.lstrip()[:1]
    if head == "[":
        return "locomo"
    if head == "{":
        try:
            whole = json.loads(text)
        except ValueError:
            return "jsonl"  # several objects, one per line
        if isinstance(whole, Mapping) and "conversation" in whole:
            return "locomo"
    return "jsonl"


def read_jsonl(name: str, text: str, batch: int, session_id: str = "") -> ImportPlan:
    plan = ImportPlan("jsonl")
    pending: list[dict[str, Any]] = []
    pending_line = 0

    def flush() -> None:
        nonlocal pending
        for chunk in _chunks(pending, batch):
            plan.batches.append(Batch(chunk, session_id, f"line {pending_line}"))
        pending = []

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ImportFileError(f"{where}: invalid JSON ({reason})") from None
        if not isinstance(obj, Mapping):
            raise ImportFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "messages" in obj:
            messages = obj["messages"]
            if not isinstance(messages, list) or not messages:
                raise ImportFileError(f"{where}: messages must be a non-empty list")
            for i, msg in enumerate(messages):
                _check_message(msg, i, where)
            line_session = obj.get("session_id", session_id)
            if not isinstance(line_session, str):
                raise ImportFileError(f"{where}: session_id must be a string")
            flush()
            for chunk in _chunks([dict(m) for m in messages], batch):
                plan.batches.append(Batch(chunk, line_session, f"line {lineno}"))
        elif "role" in obj:
            _check_message(obj, 0, where)
            if not pending:
                pending_line = lineno
            pending.append(dict(obj))
        else:
            raise ImportFileError(f'{where}: expected a message (with "role") or an object with "messages"')
    flush()
    if not plan.batches:
        raise ImportFileError(f"{name}: no messages")
    return plan


def _session_time(value: Any) -> str | None:
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return dt.datetime.strptime(str(value).strip(), fmt).replace(tzinfo=dt.UTC).isoformat()
        except ValueError:
            continue
    return None


def read_locomo(name: str, text: str, batch: int) -> ImportPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{name}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    samples = [data] if isinstance(data, Mapping) else data
    if not isinstance(samples, list) or not samples:
        raise ImportFileError(f"{name}: expected a LoCoMo list of samples with a conversation each")
    plan = ImportPlan("locomo")
    for k, sample in enumerate(samples, start=1):
        conv = sample.get("conversation") if isinstance(sample, Mapping) else None
        if not isinstance(conv, Mapping):
            raise ImportFileError(f"{name}: sample {k} has no conversation object")
        sample_id = str(sample.get("sample_id") or f"sample-{k}")
        speaker_a = conv.get("speaker_a")
        sessions = sorted((int(m.group(1)), key) for key in conv if (m := re.fullmatch(r"session_(\d+)", str(key))))
        if not sessions:
            raise ImportFileError(f"{name}: {sample_id} has no session_N lists")
        for _n, key in sessions:
            turns = conv[key]
            where = f"{name}: {sample_id} {key}"
            if not isinstance(turns, list):
                raise ImportFileError(f"{where} must be a list of turns")
            when = _session_time(conv.get(f"{key}_date_time", ""))
            messages = []
            for t, turn in enumerate(turns, start=1):
                if not isinstance(turn, Mapping):
                    raise ImportFileError(f"{where} turn {t} must be an object")
                speaker, body = turn.get("speaker"), turn.get("text")
                if not isinstance(speaker, str) or not speaker or not isinstance(body, str) or not body.strip():
                    raise ImportFileError(f"{where} turn {t} ({turn.get('dia_id', '?')}) needs a speaker and a text")
                content = body.strip()
                if turn.get("blip_caption"):
                    content += f" [shares image: {turn['blip_caption']}]"
                msg: dict[str, Any] = {
                    "role": "user" if speaker == (speaker_a or speaker) else "assistant",
                    "name": speaker,
                    "content": content,
                }
                if speaker_a is None:
                    speaker_a = speaker
                if when:
                    msg["chat_time"] = when
                messages.append(msg)
            for chunk in _chunks(messages, batch):
                plan.batches.append(Batch(chunk, f"{sample_id}:{key}", f"{sample_id} {key}"))
    if not plan.batches:
        raise ImportFileError(f"{name}: no turns")
    return plan


def read_import_file(path: Path, fmt: str = "auto", batch: int = 20, session_id: str = "") -> ImportPlan:
    """The requests importing ``path`` takes; raises :class:`ImportFileError` when it is malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if fmt == "auto":
        fmt = detect_format(path, text)
    if fmt == "locomo":
        return read_locomo(str(path), text, batch)
    return read_jsonl(str(path), text, batch, session_id)
