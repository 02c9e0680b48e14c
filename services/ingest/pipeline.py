"""The ingest pipeline: messages in, memory items and per-part errors out.

Every part of every message either contributes to a memory or gets a
:class:`PartError` saying precisely why not; nothing is dropped silently.
Conversation turns become windows (fast) or LLM-extracted facts (fine, with
fallback to windows); files become chunks; tool schemas and tool calls become
their own memory types; images are described when a vision model is
configured and otherwise recorded as sources, with a notice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.ingest import documents, preferences, tools
from services.ingest.fetcher import SafeFetcher
from services.ingest.llm import ChatClient, ExtractionOutput
from services.ingest.models import ChatMessage, Extraction, Item, Part, PartError, Source
from services.ingest.settings import IngestSettings
from services.ingest.uploads import UploadStore
from services.ingest.windowing import assign_message_ids, build_window_items, message_sources, render_message
from shared.errors import InvalidArgument, MemosError, ResourceExhausted

_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_DATA_URI = re.compile(r"^data:([^,]*?),", re.S)


@dataclass
class _File:
    """A file part's bytes and what is known about them."""

    data: bytes
    declared: str = ""
    charset: str = ""
    url: str = ""
    name: str = ""


def _url_for_sources(url: str) -> str:
    """A URL for sources: without query strings or fragments that might carry tokens."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return ""
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


class Ingestor:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        fetcher: SafeFetcher | None = None,
        llm: ChatClient | None = None,
        vision: ChatClient | None = None,
        uploads: UploadStore | None = None,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher or SafeFetcher(
            allow=settings.allow_list(),
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.fetch_max_redirects,
        )
        semaphore = asyncio.Semaphore(settings.llm_max_concurrency)
        if llm is None and settings.llm_base_url:
            llm = ChatClient(
                settings.llm_base_url,
                settings.llm_model,
                api_key=settings.llm_api_key,
                timeout_s=settings.llm_timeout_s,
                max_tokens=settings.llm_max_tokens,
                temperature=settings.llm_temperature,
                semaphore=semaphore,
            )
        if vision is None and settings.vision_model and (settings.vision_base_url or settings.llm_base_url):
            vision = ChatClient(
                settings.vision_base_url or settings.llm_base_url,
                settings.vision_model,
                api_key=settings.vision_api_key or settings.llm_api_key,
                timeout_s=settings.llm_timeout_s,
                max_tokens=512,
                semaphore=semaphore,
            )
        self.llm = llm
        self.vision = vision
        self.uploads = uploads or UploadStore(settings.upload_dir, settings.upload_max_files)
        self._fetch_slots = asyncio.Semaphore(settings.fetch_concurrency)

    # entry point ------------------------------------------------------------------------------
    async def extract(
        self,
        messages: list[ChatMessage],
        *,
        mode: str = "fast",
        user_id: str = "",
        tags: Sequence[str] = (),
        info: dict[str, Any] | None = None,
    ) -> Extraction:
        out = Extraction(effective_mode="fast")
        info = dict(info or {})
        tags = list(tags)
        assign_message_ids(messages)
        self._check_parts(messages, out)
        jobs = []
        for i, msg in enumerate(messages):
            if msg.role in ("system", "developer"):
                self._tool_schemas(msg, i, tags, info, out)
            for j, part in enumerate(msg.parts):
                if part.kind == "file":
                    jobs.append(self._file_part(msg, i, j, part, user_id, tags, info, out))
                elif part.kind == "image_url":
                    if self.vision is not None:
                        jobs.append(self._image_part(msg, i, j, part, tags, info, out))
                    else:
                        out.notices.append(
                            f"image at message {i} part {j} was not described (no vision model is configured); "
                            "it is recorded as a source of the conversation"
                        )
                elif part.kind == "input_audio":
                    out.notices.append(
                        f"audio at message {i} part {j} is recorded as a source of the conversation, not transcribed"
                    )
        self._trajectories(messages, tags, info, out)
        conversation = self._conversation(messages, mode, tags, info, out)
        results = await asyncio.gather(conversation, *jobs)
        items: list[Item] = list(results[0])
        for r in results[1:]:
            items.extend(r)
        out.items = items + out.items
        out.part_errors.sort(key=lambda e: (e.message_index, e.part_index))
        return out

    # validation ---------------------------------------------------------------------------------
    def _check_parts(self, messages: list[ChatMessage], out: Extraction) -> None:
        limit = self.settings.max_text_chars
        for i, msg in enumerate(messages):
            for j, part in enumerate(msg.parts):
                if part.kind == "unknown":
                    out.part_errors.append(
                        PartError(
                            i,
                            j,
                            InvalidArgument(
                                "the part is of a type this service does not know (text, file, image_url, "
                                "input_audio are known)",
                                reason="UNKNOWN_CONTENT_PART",
                            ),
                        )
                    )
                elif part.kind == "text" and len(part.text) > limit:
                    out.part_errors.append(
                        PartError(
                            i,
                            j,
                            InvalidArgument(
                                f"the text part has {len(part.text)} characters; the limit is {limit}",
                                reason="TEXT_TOO_LONG",
                                metadata={"limit": str(limit)},
                            ),
                        )
                    )
                    part.kind = "rejected"

    # conversation ---------------------------------------------------------------------------------
    async def _conversation(
        self, messages: list[ChatMessage], mode: str, tags: list[str], info: dict, out: Extraction
    ) -> list[Item]:
        s = self.settings
        if mode == "fine" and self.llm is None:
            out.notices.append(
                "mode=fine needs an LLM (MEMOS_LLM_BASE_URL), none is configured in ingest: stored with fast mode"
            )
        if mode != "fine" or self.llm is None:
            windows = build_window_items(messages, tags=tags, info=info, size=s.window_size, overlap=s.window_overlap)
            return windows + self._rule_preferences(messages, tags, info)
        step = s.fine_batch_messages
        batches = [(start, messages[start : start + step]) for start in range(0, len(messages), step)]
        results = await asyncio.gather(*(self._fine_batch(start, batch, tags, info, out) for start, batch in batches))
        items = [item for batch_items, _ in results for item in batch_items]
        if any(ok for _, ok in results):
            out.effective_mode = "fine"
        return items

    async def _fine_batch(
        self, start: int, batch: list[ChatMessage], tags: list[str], info: dict, out: Extraction
    ) -> tuple[list[Item], bool]:
        assert self.llm is not None
        s = self.settings
        lines = [f"[{k}] {render_message(m)}" for k, m in enumerate(batch)]
        tally: list[int] = []
        try:
            result = await self.llm.extract("\n".join(lines), preferences=s.extract_preferences, tally=tally)
        except MemosError as err:
            out.llm_calls += len(tally)
            end = start + len(batch) - 1
            out.notices.append(
                f"fine extraction of messages {start}-{end} fell back to fast mode: {err.reason}: {err.message}"
            )
            items = build_window_items(batch, tags=tags, info=info, size=s.window_size, overlap=s.window_overlap)
            items += self._rule_preferences(batch, tags, info)
            for item in items:
                for src in item.sources:
                    src.message_index += start
                item.tags.append("fine:fallback")
            return items, False
        out.llm_calls += len(tally)
        if not result.memories and not result.preferences:
            out.notices.append(
                f"fine extraction found nothing to remember in messages {start}-{start + len(batch) - 1}"
            )
        return self._fine_items(result, start, batch, tags, info), True

    def _rule_preferences(self, messages: Sequence[ChatMessage], tags: list[str], info: dict) -> list[Item]:
        """The explicit preferences the user states, found by rules (services/ingest/preferences.py), for
        conversations no LLM extracts from; message indices are those of ``messages``."""
        s = self.settings
        if not (s.extract_preferences and s.rule_preferences):
            return []
        items = []
        for p in preferences.extract(messages):
            msg = messages[p.message_index]
            items.append(
                Item(
                    memory=p.statement,
                    memory_type="PreferenceMemory",
                    key=p.statement[:80],
                    tags=[*tags, "mode:fast", f"preference:{p.kind}", f"preference:{p.polarity}", "extractor:rules"],
                    sources=[
                        Source(
                            type="chat",
                            role=msg.role,
                            message_index=p.message_index,
                            message_id=msg.message_id,
                            chat_time=msg.chat_time,
                            content=p.span,
                        )
                    ],
                    background=f"Stated by the user: {p.span}",
                    info={
                        **info,
                        "preference_type": p.kind,
                        "polarity": p.polarity,
                        "extractor": "rules",
                        "span": {"part_index": p.part_index, "start": p.start, "end": p.end},
                    },
                    event_time=msg.chat_time,
                )
            )
        return items

    def _fine_items(
        self, result: ExtractionOutput, start: int, batch: list[ChatMessage], tags: list[str], info: dict
    ) -> list[Item]:
        def sources(indices: list[int]) -> list[Source]:
            picked = [k for k in dict.fromkeys(indices) if 0 <= k < len(batch)] or list(range(len(batch)))
            return [s for k in picked for s in message_sources(batch[k], start + k)]

        def event_time(indices: list[int]) -> float | None:
            times = [batch[k].chat_time for k in indices if 0 <= k < len(batch) and batch[k].chat_time is not None]
            times = times or [m.chat_time for m in batch if m.chat_time is not None]
            return max(times) if times else None

        items = []
        for m in result.memories:
            items.append(
                Item(
                    memory=m.value,
                    memory_type=m.memory_type,
                    key=m.key,
                    tags=[*tags, "mode:fine", *m.tags],
                    sources=sources(m.source_messages),
                    background=result.summary,
                    info=dict(info),
                    event_time=event_time(m.source_messages),
                )
            )
        if self.settings.extract_preferences:
            for p in result.preferences:
                items.append(
                    Item(
                        memory=p.preference,
                        memory_type="PreferenceMemory",
                        key=p.preference[:80],
                        tags=[*tags, "mode:fine", f"preference:{p.kind}"],
                        sources=sources(p.source_messages),
                        background=p.reasoning or result.summary,
                        info={**info, "preference_type": p.kind},
                        event_time=event_time(p.source_messages),
                    )
                )
        return items

    # tool schemas and trajectories ----------------------------------------------------------------
    def _tool_schemas(self, msg: ChatMessage, i: int, tags: list[str], info: dict, out: Extraction) -> None:
        for j, part in enumerate(msg.parts):
            if part.kind != "text":
                continue
            for block in tools.schema_blocks(part.text):
                try:
                    schemas = tools.parse_tool_schema(block)
                except MemosError as err:
                    out.part_errors.append(PartError(i, j, err))
                    continue
                for t in schemas:
                    out.items.append(
                        Item(
                            memory=t.render(),
                            memory_type="ToolSchemaMemory",
                            key=t.name,
                            tags=[*tags, "tool_schema"],
                            sources=[
                                Source(
                                    type="tool_schema",
                                    role=msg.role,
                                    message_index=i,
                                    message_id=msg.message_id,
                                    chat_time=msg.chat_time,
                                    content=block,
                                    tool_name=t.name,
                                )
                            ],
                            info={**info, "tool": {"name": t.name, "parameters": t.parameters, "returns": t.returns}},
                            event_time=msg.chat_time,
                        )
                    )

    def _trajectories(self, messages: list[ChatMessage], tags: list[str], info: dict, out: Extraction) -> None:
        calls: dict[str, tuple[int, ChatMessage, Any]] = {}
        for i, msg in enumerate(messages):
            for call in msg.tool_calls:
                if call.id and call.id not in calls:
                    calls[call.id] = (i, msg, call)
        answered: dict[str, tuple[int, ChatMessage]] = {}
        for i, msg in enumerate(messages):
            if msg.role != "tool":
                continue
            if not msg.tool_call_id:
                out.part_errors.append(
                    PartError(
                        i,
                        -1,
                        InvalidArgument(
                            "the tool message has no tool_call_id: no trajectory is made of it (it stays in the "
                            "conversation)",
                            reason="TOOL_RESULT_WITHOUT_CALL",
                        ),
                    )
                )
            elif msg.tool_call_id not in calls or calls[msg.tool_call_id][0] > i:
                out.part_errors.append(
                    PartError(
                        i,
                        -1,
                        InvalidArgument(
                            f"no earlier assistant message made tool call {msg.tool_call_id!r}: no trajectory is made "
                            "of this result (it stays in the conversation)",
                            reason="TOOL_RESULT_WITHOUT_CALL",
                            metadata={"tool_call_id": msg.tool_call_id},
                        ),
                    )
                )
            elif msg.tool_call_id not in answered:
                answered[msg.tool_call_id] = (i, msg)
        for call_id, (i, msg, call) in calls.items():
            result = answered.get(call_id)
            text, ok = tools.render_trajectory(call.name, call.arguments, result[1].text() if result else None)
            base = dict(message_id=msg.message_id, chat_time=msg.chat_time, tool_call_id=call_id, tool_name=call.name)
            srcs = [Source(type="tool_call", role=msg.role, message_index=i, content=call.arguments, **base)]
            times = [t for t in (msg.chat_time, result[1].chat_time if result else None) if t is not None]
            if result:
                ri, rmsg = result
                srcs.append(
                    Source(
                        type="tool_result",
                        role="tool",
                        message_index=ri,
                        message_id=rmsg.message_id,
                        chat_time=rmsg.chat_time,
                        content=rmsg.text(),
                        tool_call_id=call_id,
                        tool_name=call.name,
                    )
                )
            try:
                arguments: Any = json.loads(call.arguments) if call.arguments else {}
            except json.JSONDecodeError:
                arguments = call.arguments
            out.items.append(
                Item(
                    memory=text,
                    memory_type="ToolTrajectoryMemory",
                    key=f"{call.name} call",
                    tags=[*tags, "tool_trajectory", f"tool:{call.name}"],
                    sources=srcs,
                    info={**info, "tool": call.name, "arguments": arguments, "success": ok, "answered": bool(result)},
                    event_time=max(times) if times else None,
                )
            )

    # files ------------------------------------------------------------------------------------------
    async def _load_file(self, part: Part, user_id: str) -> _File:
        data = part.file_data.strip()
        if data.startswith("@"):
            target = data[1:].strip()
            if not _URL_SCHEME.match(target):
                raise InvalidArgument(
                    "file_data '@…' must name an http(s) URL; local paths are not read by the service "
                    "(upload the file with UploadFile, or send it as a data: URI)",
                    reason="FILE_LOCAL_PATH_REFUSED",
                )
            return await self._fetch(target)
        if _URL_SCHEME.match(data):
            return await self._fetch(data)
        if data.startswith("data:"):
            return self._data_uri(data)
        if data:
            raw = data.encode("utf-8")
            if len(raw) > self.settings.fetch_max_bytes:
                raise self._too_large(len(raw))
            return _File(raw, declared="text/plain")
        if part.file_id:
            up = self.uploads.get(part.file_id, user_id)
            return _File(up.data, declared=up.media_type, name=up.filename)
        raise InvalidArgument("the file part has neither file_data nor file_id", reason="FILE_PART_EMPTY")

    def _too_large(self, size: int) -> ResourceExhausted:
        limit = self.settings.fetch_max_bytes
        return ResourceExhausted(
            f"the file is {size} bytes; the limit is {limit}", reason="FILE_TOO_LARGE", metadata={"limit": str(limit)}
        )

    def _data_uri(self, uri: str) -> _File:
        m = _DATA_URI.match(uri)
        if not m:
            raise InvalidArgument("the data: URI has no ',' before its data", reason="BAD_DATA_URI")
        params = m.group(1).split(";")
        declared = params[0].strip().lower()
        payload = uri[m.end() :]
        charset = next((p.split("=", 1)[1] for p in params[1:] if p.lower().startswith("charset=")), "")
        if "base64" in (p.strip().lower() for p in params[1:]):
            if len(payload) > self.settings.fetch_max_bytes * 4 // 3 + 4:
                raise self._too_large(len(payload) * 3 // 4)
            try:
                raw = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument("the data: URI's base64 is malformed", reason="BAD_BASE64") from None
        else:
            raw = urllib.parse.unquote_to_bytes(payload)
        if len(raw) > self.settings.fetch_max_bytes:
            raise self._too_large(len(raw))
        return _File(raw, declared=declared, charset=charset)

    async def _fetch(self, url: str) -> _File:
        async with self._fetch_slots:
            got = await self.fetcher.fetch(url)
        return _File(got.data, declared=got.media_type, charset=got.charset, url=_url_for_sources(got.url))

    async def _file_part(
        self, msg: ChatMessage, i: int, j: int, part: Part, user_id: str, tags: list[str], info: dict, out: Extraction
    ) -> list[Item]:
        s = self.settings
        try:
            f = await self._load_file(part, user_id)
            name = part.filename or f.name or (urllib.parse.unquote(f.url.rsplit("/", 1)[-1]) if f.url else "")
            media_type = documents.sniff(f.data, f.declared, name or f.url)
            if media_type in documents.IMAGE_TYPES:
                raise InvalidArgument(
                    f"the file is an image ({media_type}); send it as an image_url part",
                    reason="UNSUPPORTED_MEDIA_TYPE",
                    metadata={"media_type": media_type},
                )
            units = await asyncio.to_thread(
                documents.parse_document,
                f.data,
                media_type,
                charset=f.charset,
                pdf_max_pages=s.pdf_max_pages,
                docx_max_bytes=s.docx_max_uncompressed_bytes,
                docx_max_ratio=s.docx_max_ratio,
            )
            # In the thread too: a large document's chunking would stall every other call's loop.
            chunks = await asyncio.to_thread(documents.chunk_units, units, s.chunk_chars, s.chunk_overlap_chars)
            if not chunks:
                raise InvalidArgument("the file has no text", reason="FILE_EMPTY")
            if len(chunks) > s.max_chunks_per_file:
                raise ResourceExhausted(
                    f"the file makes {len(chunks)} chunks; the limit is {s.max_chunks_per_file}",
                    reason="FILE_TOO_MANY_CHUNKS",
                )
        except MemosError as err:
            err.metadata.setdefault("file_id", part.file_id)
            err.metadata.setdefault("filename", part.filename)
            out.part_errors.append(PartError(i, j, err))
            return []
        filename = part.filename or name or part.file_id
        items = []
        for k, chunk in enumerate(chunks):
            where = " > ".join(chunk.path)
            items.append(
                Item(
                    memory=chunk.text,
                    memory_type="LongTermMemory",
                    key=f"{filename} ({k + 1}/{len(chunks)})" + (f": {where}"[:120] if where else ""),
                    tags=[*tags, "file"],
                    sources=[
                        Source(
                            type="file",
                            role=msg.role,
                            message_index=i,
                            message_id=msg.message_id,
                            chat_time=msg.chat_time,
                            content=where,
                            file={
                                "file_id": part.file_id,
                                "filename": filename,
                                "url": f.url,
                                "chunk_index": k,
                                "chunk_total": len(chunks),
                                "media_type": media_type,
                            },
                        )
                    ],
                    background=f"From the file {filename}"
                    + (f", section {where}" if where else "")
                    + (f", page {chunk.page}" if chunk.page else ""),
                    info={**info, **({"page": chunk.page} if chunk.page else {})},
                    event_time=msg.chat_time,
                )
            )
        return items

    # images -------------------------------------------------------------------------------------------
    async def _image_part(
        self, msg: ChatMessage, i: int, j: int, part: Part, tags: list[str], info: dict, out: Extraction
    ) -> list[Item]:
        assert self.vision is not None
        tally: list[int] = []
        try:
            if part.url.startswith("data:"):
                f = self._data_uri(part.url)
            else:
                f = await self._fetch(part.url)
            media_type = documents.sniff(f.data, f.declared, part.url)
            if media_type not in documents.IMAGE_TYPES:
                raise InvalidArgument(
                    f"the image URL holds {media_type}, not an image",
                    reason="NOT_AN_IMAGE",
                    metadata={"media_type": media_type},
                )
            uri = f"data:{media_type};base64," + base64.b64encode(f.data).decode()
            description = await self.vision.describe_image(uri, tally=tally)
        except MemosError as err:
            out.llm_calls += len(tally)
            out.part_errors.append(PartError(i, j, err))
            return []
        out.llm_calls += len(tally)
        shown = part.url if not part.url.startswith("data:") else "inline image"
        return [
            Item(
                memory=description,
                memory_type="LongTermMemory",
                key=f"image: {shown[:70]}",
                tags=[*tags, "image"],
                sources=[
                    Source(
                        type="image",
                        role=msg.role,
                        message_index=i,
                        message_id=msg.message_id,
                        chat_time=msg.chat_time,
                        image_url=part.url if not part.url.startswith("data:") else "",
                        content=msg.text(),
                    )
                ],
                background="Description of an image in the conversation",
                info=dict(info),
                event_time=msg.chat_time,
            )
        ]
