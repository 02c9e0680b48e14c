"""The markdown parser and chunker of services/ingest/documents.py as they were before the column-based
rewrite (commit 8630e68), kept verbatim so that property tests can hold the new code to exactly their output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_HEADING = re.compile(r"(#{1,6})\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；])\s+")


@dataclass(slots=True)
class Unit:
    text: str
    path: tuple[str, ...]
    heading: bool = False
    page: int = 0


def markdown_units(text: str, page: int = 0, base_path: tuple[str, ...] = ()) -> list[Unit]:
    """Headings (ATX ``#``) and paragraphs (blank-line separated; fenced code kept whole)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    units: list[Unit] = []
    append = units.append
    levels: list[int] = []
    titles: list[str] = []
    path = base_path

    def heading(line: str, m: re.Match) -> None:
        nonlocal path
        level = len(m.group(1))
        while levels and levels[-1] >= level:
            levels.pop()
            titles.pop()
        levels.append(level)
        titles.append(line[m.end() :].rstrip().rstrip("#").strip())
        path = base_path + tuple(titles)
        append(Unit(line.strip(), path, True, page))

    if "```" not in text and "~~~" not in text:
        # Fast path: paragraphs are blank-line separated blocks; only blocks with a heading line are split.
        # This loop runs once per paragraph of megabyte files, so it does as little per block as it can.
        for block in _BLANK_LINES.split(text):
            body = block.strip()
            if not body:
                continue
            if body[0] != "#" and "\n#" not in body:
                append(Unit(body, path, False, page))
                continue
            if "\n" not in block:
                m = _HEADING.match(block)
                if m:
                    heading(block, m)
                else:
                    append(Unit(body, path, False, page))
                continue
            para: list[str] = []
            for line in block.split("\n"):
                m = _HEADING.match(line) if line[:1] == "#" else None
                if m:
                    if para:
                        append(Unit("\n".join(para).strip(), path, False, page))
                        para = []
                    heading(line, m)
                else:
                    para.append(line.rstrip())
            if any(p.strip() for p in para):
                append(Unit("\n".join(para).strip(), path, False, page))
        return units

    para = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(para).strip()
        para.clear()
        if body:
            append(Unit(body, path, False, page))

    for line in text.split("\n"):
        # Cheap character tests first: most lines are neither fences nor headings.
        if ("`" in line or "~" in line) and _FENCE.match(line):
            in_fence = not in_fence
            para.append(line)
            continue
        if in_fence:
            para.append(line)
            continue
        m = _HEADING.match(line) if line[:1] == "#" else None
        if m:
            flush()
            heading(line, m)
        elif not line.strip():
            flush()
        else:
            para.append(line.rstrip())
    flush()
    return units


@dataclass
class Chunk:
    text: str
    path: tuple[str, ...]
    page: int = 0


def _split_long(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at sentence ends, then at spaces, then anywhere."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    cur = ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(sentence[:cut].rstrip())
            sentence = sentence[cut:].lstrip()
        if cur and len(cur) + 1 + len(sentence) > limit:
            pieces.append(cur)
            cur = sentence
        else:
            cur = f"{cur} {sentence}" if cur else sentence
    if cur:
        pieces.append(cur)
    return [p for p in pieces if p]


def _tail(text: str, n: int) -> str:
    """The last ~n characters of ``text``, starting at a word boundary."""
    if n <= 0 or not text:
        return ""
    if len(text) <= n:
        return text
    tail = text[-n:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < n // 2 else tail


def chunk_units(units: Iterable[Unit], chunk_chars: int = 1200, overlap_chars: int = 150) -> list[Chunk]:
    chunks: list[Chunk] = []
    body: list[str] = []
    size = 0
    start_path: tuple[str, ...] = ()
    start_page = 0
    trailing_headings: list[Unit] = []  # headings at the end of the open chunk, not yet followed by text

    def opening(unit: Unit, continued: bool) -> list[str]:
        """What a chunk starting at ``unit`` holds before it: its heading path and the overlap."""
        head = []
        if not unit.heading and unit.path:
            head.append(" > ".join(unit.path))
        if continued and chunks:
            tail = _tail(chunks[-1].text, overlap_chars)
            if tail:
                head.append(tail)
        return head

    budget = max(chunk_chars - overlap_chars, chunk_chars // 2)
    half = chunk_chars // 2
    # This loop runs once per paragraph of megabyte files: its state lives in local variables, and it
    # calls helpers or builds lists only where a chunk ends or a unit is too long for one.
    for unit in units:
        pieces: Iterable[Unit] = (
            (unit,)
            if len(unit.text) <= budget
            else [Unit(piece, unit.path, unit.heading, unit.page) for piece in _split_long(unit.text, budget)]
        )
        for u in pieces:
            text = u.text
            if body and (size + len(text) > chunk_chars or (u.heading and size >= half)):
                # Headings never end a chunk: they move on with the text they head.
                moved = trailing_headings if len(trailing_headings) < len(body) else []
                if moved:
                    del body[-len(moved) :]
                chunks.append(Chunk("\n\n".join(body), start_path, start_page))
                first = moved[0] if moved else u
                start_path, start_page = first.path, first.page
                body = opening(first, continued=not moved and not u.heading)
                body.extend(h.text for h in moved)
                size = sum(len(b) + 2 for b in body)
            elif not body:
                start_path, start_page = u.path, u.page
                body = opening(u, continued=False)
                size = sum(len(b) + 2 for b in body)
            body.append(text)
            size += len(text) + 2
            if u.heading:
                trailing_headings = [*trailing_headings, u]
            elif trailing_headings:
                trailing_headings = []
    if body:
        chunks.append(Chunk("\n\n".join(body), start_path, start_page))
    return chunks
