"""Documents: media-type sniffing, parsing (md, txt, html, pdf, docx) and structure-aware chunking.

Every parser turns bytes into *units*: paragraphs and headings in reading
order, each knowing the heading path it sits under (and its page, for pdf).
The chunker packs units into chunks of about ``chunk_chars``, preferring to
break where a section starts, repeating the tail of the previous chunk when a
section continues across a break, and starting every chunk that does not open
with a heading with its heading path, so that a chunk read alone still says
where it belongs.

Untrusted input: a docx is a zip, checked for declared sizes and compression
ratios before anything is decompressed; pdf and docx parser failures become
precise errors, never crashes.
"""

from __future__ import annotations

import io
import re
import zipfile
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from itertools import accumulate, repeat
from operator import add

from shared.errors import FailedPrecondition, InvalidArgument, MemosError, ResourceExhausted

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
DOCUMENT_TYPES = {PDF, DOCX, HTML, MARKDOWN, TEXT}

# An ATX heading line is one to six "#" and whitespace; its title is the rest without closing "#"s.
# (A lazy "(.*?)\s*#*\s*$" title group backtracks at every character: a microsecond a heading.)
_HEADING = re.compile(r"(#{1,6})\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；])\s+")


# sniffing ------------------------------------------------------------------------------------
def _extension(name: str) -> str:
    name = name.lower().split("?", 1)[0].split("#", 1)[0]
    return name.rsplit(".", 1)[-1] if "." in name.rsplit("/", 1)[-1] else ""


def sniff(data: bytes, declared: str = "", name: str = "") -> str:
    """The media type of ``data`` judged by its bytes first; the declared type and name only tell
    text formats apart (a "report.pdf" that holds markdown is markdown)."""
    head = data[:1024]
    if b"%PDF-" in head:
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if "word/document.xml" in zf.namelist():
                    return DOCX
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
        return "application/zip"
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "application/octet-stream"
    ext = _extension(name)
    start = data[:512].lstrip().lower()
    if (
        declared in ("text/html", "application/xhtml+xml")
        or ext in ("html", "htm", "xhtml")
        or start.startswith((b"<!doctype html", b"<html"))
    ):
        return HTML
    if declared in ("text/markdown", "text/x-markdown") or ext in ("md", "markdown", "mdx"):
        return MARKDOWN
    return MARKDOWN if re.search(rb"(?m)^#{1,6} \S", data[:65536]) else TEXT


def decode_text(data: bytes, charset: str = "") -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for enc in ("utf-8", charset, "gb18030"):
        if not enc:
            continue
        try:
            return data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


# units ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class Unit:
    text: str
    path: tuple[str, ...]
    """Headings above this unit, outermost first."""
    heading: bool = False
    """True when the unit is itself a heading line."""
    page: int = 0
    """1-based page for pdf; 0 when the format has no pages."""


class MarkdownUnits(Sequence[Unit]):
    """The units of one markdown text, held as columns: each unit's text, which units are headings and each
    heading's path. A megabyte file has tens of thousands of paragraphs, and an object per paragraph cost more
    than all the rest of parsing and chunking; ``chunk_units`` reads the columns directly, while indexing or
    iterating builds the ``Unit`` objects (once) for callers that want them."""

    __slots__ = ("texts", "heads", "head_paths", "base_path", "page", "_units")

    def __init__(
        self,
        texts: list[str],
        heads: list[int],
        head_paths: list[tuple[str, ...]],
        base_path: tuple[str, ...],
        page: int,
    ) -> None:
        self.texts = texts
        self.heads = heads
        """Indices into ``texts`` of the heading units, ascending."""
        self.head_paths = head_paths
        """The path of each heading in ``heads`` (itself included); the units after it share it."""
        self.base_path = base_path
        self.page = page
        self._units: list[Unit] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self.units()[i]

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units())

    def units(self) -> list[Unit]:
        if self._units is None:
            out: list[Unit] = []
            path, page, prev = self.base_path, self.page, 0
            for i, hpath in zip(self.heads, self.head_paths, strict=True):
                out.extend(Unit(t, path, False, page) for t in self.texts[prev:i])
                path = hpath
                out.append(Unit(self.texts[i], path, True, page))
                prev = i + 1
            out.extend(Unit(t, path, False, page) for t in self.texts[prev:])
            self._units = out
        return self._units


def markdown_units(text: str, page: int = 0, base_path: tuple[str, ...] = ()) -> list[Unit]:
    """Headings (ATX ``#``) and paragraphs (blank-line separated; fenced code kept whole)."""
    return parse_markdown(text, page, base_path).units()


def parse_markdown(text: str, page: int = 0, base_path: tuple[str, ...] = ()) -> MarkdownUnits:
    """``markdown_units`` as columns, for ``chunk_units`` (see MarkdownUnits)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    texts: list[str] = []
    heads: list[int] = []
    head_paths: list[tuple[str, ...]] = []
    levels: list[int] = []
    titles: list[str] = []
    path = base_path

    def heading(line: str, m: re.Match) -> None:
        nonlocal path
        level = m.end(1)  # the match starts at the line's start, so this is the number of "#"s
        while levels and levels[-1] >= level:
            levels.pop()
            titles.pop()
        levels.append(level)
        titles.append(line[m.end() :].rstrip().rstrip("#").strip())
        path = base_path + tuple(titles)
        heads.append(len(texts))
        head_paths.append(path)
        texts.append(line.strip())

    # A single-character search is a memchr; "```" is a slower substring search, needed only when a backtick is there.
    if not (("`" in text and "```" in text) or ("~" in text and "~~~" in text)):
        # Paragraphs are blank-line separated blocks. Blocks that hold no line starting with "#" are units as they
        # are: those are found, stripped and copied by list operations that run in C; only the others (headings,
        # and paragraphs with a "#" line) go through Python code, one block at a time.
        blocks = _BLANK_LINES.split(text)
        bodies = list(map(str.strip, blocks))
        prev = 0
        for i in [i for i, b in enumerate(bodies) if not b or b[0] == "#" or "\n#" in b]:
            texts += bodies[prev:i]
            prev = i + 1
            block = blocks[i]
            if not bodies[i]:
                continue
            if "\n" not in block:
                m = _HEADING.match(block)
                if m:
                    heading(block, m)
                else:
                    texts.append(bodies[i])
                continue
            para: list[str] = []
            for line in block.split("\n"):
                m = _HEADING.match(line) if line[:1] == "#" else None
                if m:
                    if para:
                        texts.append("\n".join(para).strip())
                        para = []
                    heading(line, m)
                else:
                    para.append(line.rstrip())
            if any(p.strip() for p in para):
                texts.append("\n".join(para).strip())
        texts += bodies[prev:]
        return MarkdownUnits(texts, heads, head_paths, base_path, page)

    para = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(para).strip()
        para.clear()
        if body:
            texts.append(body)

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
    return MarkdownUnits(texts, heads, head_paths, base_path, page)


class _HtmlToMarkdown(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
    _BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "blockquote",
              "table", "ul", "ol", "dl", "figure", "form", "hr", "address"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("br", "tr", "dt", "dd"):
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" | ")
        elif tag == "pre":
            self._pre += 1
            self.out.append("\n\n```\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self.out.append("\n```\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip:
            return
        if self._pre:
            self.out.append(data)
        else:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_markdown(html: str) -> str:
    p = _HtmlToMarkdown()
    p.feed(html)
    p.close()
    text = "".join(p.out)
    # Heading lines must be single lines; squeeze blank-line runs and trailing spaces.
    text = re.sub(r"(?m)^(#{1,6}) +\n+", r"\1 ", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if p.title.strip() and not re.match(r"#\s", text):
        text = f"# {p.title.strip()}\n\n{text}"
    return text


def pdf_units(data: bytes, max_pages: int) -> list[Unit]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # noqa: BLE001 - untrusted input: any parser failure means a corrupt file
        raise InvalidArgument(f"the pdf is corrupt: {exc}", reason="PDF_CORRUPT") from None
    if encrypted:
        try:
            ok = bool(reader.decrypt(""))  # readable when only an owner password restricts it
        except Exception:  # noqa: BLE001 - unsupported algorithms raise various errors
            ok = False
        if not ok:
            raise FailedPrecondition("the pdf is encrypted with a password", reason="PDF_ENCRYPTED")
    try:
        n = len(reader.pages)
    except Exception as exc:  # noqa: BLE001
        raise InvalidArgument(f"the pdf is corrupt: {exc}", reason="PDF_CORRUPT") from None
    if n > max_pages:
        raise ResourceExhausted(
            f"the pdf has {n} pages; the limit is {max_pages}",
            reason="PDF_TOO_MANY_PAGES",
            metadata={"limit": str(max_pages)},
        )
    units: list[Unit] = []
    for i in range(n):
        try:
            text = reader.pages[i].extract_text() or ""
        except Exception as exc:  # noqa: BLE001
            raise InvalidArgument(f"page {i + 1} of the pdf is corrupt: {exc}", reason="PDF_CORRUPT") from None
        units.extend(markdown_units(text, page=i + 1))
    if not units:
        raise FailedPrecondition("the pdf has no text layer (a scan?)", reason="PDF_NO_TEXT")
    return units


def check_zip(data: bytes, max_total: int, max_ratio: int, max_members: int = 10_000) -> None:
    """Refuses a zip whose declared sizes make it a bomb, before anything is decompressed.

    zipfile never returns more than a member's declared size, so bounding the
    declared sizes bounds what parsing can inflate."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArgument(f"the docx is not a valid zip: {exc}", reason="DOCX_CORRUPT") from None
    if len(infos) > max_members:
        raise InvalidArgument(f"the docx has {len(infos)} members", reason="DOCX_ZIP_BOMB")
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise InvalidArgument(
            f"the docx would inflate to {total} bytes; the limit is {max_total}",
            reason="DOCX_ZIP_BOMB",
            metadata={"limit": str(max_total)},
        )
    for i in infos:
        if i.file_size > 1024 * 1024 and i.file_size > max_ratio * max(i.compress_size, 1):
            raise InvalidArgument(
                f"docx member {i.filename!r} compresses {i.file_size // max(i.compress_size, 1)}:1",
                reason="DOCX_ZIP_BOMB",
                metadata={"member": i.filename},
            )


def docx_units(data: bytes, max_total: int, max_ratio: int) -> MarkdownUnits:
    check_zip(data, max_total, max_ratio)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        # python-docx resolves Paragraph.style by scanning every style in the document (and, for a
        # paragraph without one, converting each style's type to find the default) on every access:
        # that lookup was most of the time on a long document, so it runs once per distinct style id.
        markers: dict[str | None, str | None] = {}
        lines: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                rows = [" | ".join(c.text.strip() for c in row.cells) for row in block.rows]
                lines.append("\n".join(rows))
                continue
            text = block.text.strip()
            if not text:
                continue
            style_id = block._p.style
            if style_id in markers:
                marker = markers[style_id]
            else:
                marker = markers[style_id] = _docx_marker(block.style)
            if marker is None:
                lines.append(text)
            elif marker == "- ":
                lines.append(marker + text)
            else:
                lines.append(marker + text.replace("\n", " "))
    except MemosError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted input: any parser failure means a corrupt file
        raise InvalidArgument(f"the docx is corrupt: {exc}", reason="DOCX_CORRUPT") from None
    return parse_markdown("\n\n".join(lines))


def _docx_marker(style: object) -> str | None:
    """The markdown prefix for paragraphs of a docx paragraph style: "# ".."###### ", "- ", or None."""
    name = (getattr(style, "name", None) if style is not None else "") or ""
    m = re.match(r"Heading (\d)", name)
    if m:
        return "#" * min(int(m.group(1)), 6) + " "
    if name == "Title":
        return "# "
    if name.startswith("List"):
        return "- "
    return None


def parse_document(
    data: bytes,
    media_type: str,
    *,
    charset: str = "",
    pdf_max_pages: int = 2000,
    docx_max_bytes: int = 200 * 1024 * 1024,
    docx_max_ratio: int = 200,
) -> Sequence[Unit]:
    """Units of a document of a sniffed media type; raises a MemosError saying why not."""
    if media_type == PDF:
        return pdf_units(data, pdf_max_pages)
    if media_type == DOCX:
        return docx_units(data, docx_max_bytes, docx_max_ratio)
    if media_type == HTML:
        return parse_markdown(html_to_markdown(decode_text(data, charset)))
    if media_type in (MARKDOWN, TEXT):
        return parse_markdown(decode_text(data, charset))
    raise InvalidArgument(
        f"files of type {media_type} are not supported (pdf, docx, html, md, txt are)",
        reason="UNSUPPORTED_MEDIA_TYPE",
        metadata={"media_type": media_type},
    )


# chunking ------------------------------------------------------------------------------------
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
    if isinstance(units, MarkdownUnits):
        return _chunk_columns(units, chunk_chars, overlap_chars)
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


def _chunk_columns(units: MarkdownUnits, chunk_chars: int, overlap_chars: int) -> list[Chunk]:
    """``chunk_units`` of one markdown text's columns, with the same output, in Python steps per chunk rather than
    per unit: where a chunk ends is found by bisecting the running sizes and the heading indices.

    The rules, as ``chunk_units`` applies them unit by unit: a chunk's size is the length of its lines (its opening
    lines, then units) plus 2 for each; a unit after the chunk's first ends the chunk before it when it would take
    the size past ``chunk_chars``, or when it is a heading and the size is already ``chunk_chars // 2``. The headings
    at the end of a chunk ending that way move on to the next chunk, unless they are all the chunk holds. A chunk
    starting at anything but a heading opens with its path line and, when it continues the previous chunk's
    section, that chunk's tail.
    """
    texts, heads, head_paths, base_path, page = units.texts, units.heads, units.head_paths, units.base_path, units.page
    budget = max(chunk_chars - overlap_chars, chunk_chars // 2)
    half = chunk_chars // 2
    lens = list(map(len, texts))
    if lens and max(lens) > budget:
        texts, heads, head_paths = _split_long_units(texts, lens, heads, head_paths, budget)
        lens = list(map(len, texts))
    n = len(texts)
    if not n:
        return []
    # ends[i]: the size that units 0..i-1 add to a chunk holding all of them (each counts its length plus 2).
    ends = list(accumulate(map(add, lens, repeat(2)), initial=0))
    n_heads = len(heads)
    chunks: list[Chunk] = []
    append = chunks.append
    start = 0  # the chunk's first unit (after its opening lines)
    if heads and heads[0] == 0:
        start_path, opening = head_paths[0], []
    else:
        start_path = base_path
        opening = [" > ".join(base_path)] if base_path else []
    # The chunk's size before unit j is ends[j] - offset.
    offset = -sum(len(line) + 2 for line in opening)
    first_check = 1  # the first unit that may end the chunk: the one that opened it never does
    while True:
        # First j whose own length takes the size past chunk_chars: ends[j] + lens[j] - offset > chunk_chars, that
        # is ends[j + 1] > chunk_chars + offset + 2 (ends rises with j, so the j that pass form a suffix).
        j = bisect_right(ends, chunk_chars + offset + 2, first_check + 1) - 1
        # First heading at or after the first j where the size is already half a chunk.
        k = bisect_left(ends, half + offset, first_check)
        k = bisect_left(heads, k if k > first_check else first_check)
        if k < n_heads and heads[k] < j:
            j = heads[k]
        if j >= n:
            body = texts[start:]
            body[:0] = opening
            append(Chunk("\n\n".join(body), start_path, page))
            return chunks
        k = bisect_left(heads, j)  # heads[k] == j when unit j is a heading
        # The run of headings just before unit j, within this chunk, moves on with it.
        moved = 0
        while moved < k and heads[k - 1 - moved] == j - 1 - moved and j - 1 - moved >= start:
            moved += 1
        if moved and moved < len(opening) + j - start:
            body = texts[start : j - moved]
            body[:0] = opening
            append(Chunk("\n\n".join(body), start_path, page))
            start = j - moved
            start_path = head_paths[k - moved]
            opening = []  # a heading opens the chunk: no path line, and it starts a section
        else:
            body = texts[start:j]
            body[:0] = opening
            text = "\n\n".join(body)
            append(Chunk(text, start_path, page))
            start = j
            if k < n_heads and heads[k] == j:
                start_path = head_paths[k]
                opening = []
            else:
                start_path = head_paths[k - 1] if k else base_path
                opening = [" > ".join(start_path)] if start_path else []
                tail = _tail(text, overlap_chars)
                if tail:
                    opening.append(tail)
        offset = ends[start]
        for line in opening:
            offset -= len(line) + 2
        first_check = j + 1


def _split_long_units(
    texts: list[str], lens: list[int], heads: list[int], head_paths: list[tuple[str, ...]], budget: int
) -> tuple[list[str], list[int], list[tuple[str, ...]]]:
    """The columns with each unit longer than ``budget`` replaced by its ``_split_long`` pieces, each piece of a
    heading a heading with the heading's path."""
    head_of = dict(zip(heads, head_paths, strict=True))
    new_texts: list[str] = []
    new_heads: list[int] = []
    new_paths: list[tuple[str, ...]] = []
    prev = 0
    for i in [i for i, n in enumerate(lens) if n > budget] + [len(texts)]:
        for h in heads[bisect_left(heads, prev) : bisect_left(heads, i)]:
            new_heads.append(len(new_texts) + h - prev)
            new_paths.append(head_of[h])
        new_texts += texts[prev:i]
        if i == len(texts):
            break
        pieces = _split_long(texts[i], budget)
        if i in head_of:
            new_heads.extend(range(len(new_texts), len(new_texts) + len(pieces)))
            new_paths.extend([head_of[i]] * len(pieces))
        new_texts += pieces
        prev = i + 1
    return new_texts, new_heads, new_paths
