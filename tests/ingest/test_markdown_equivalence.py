"""The column-based markdown parser and chunker against the unit-by-unit code they replaced
(tests/ingest/reference_documents.py): same units, same chunks, on random markdown full of edge cases.

Run more examples with MEMOS_EQUIVALENCE_EXAMPLES=20000 (the default keeps the suite quick).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest import documents
from tests.ingest import reference_documents as reference

EXAMPLES = int(os.environ.get("MEMOS_EQUIVALENCE_EXAMPLES", "300"))

# Whitespace the parsers treat differently: blank-line separators are only " " and "\t", while strip() and the
# regex "\s" also take "\x0b", "\x0c", "\x1c" and "\xa0".
SPACE = st.sampled_from(["", " ", "  ", "\t", " \t", "\x0b", "\x0c", "\xa0", "\x1c"])
WORD = st.sampled_from(
    ["valve", "PLC", "terminal", "block.", "checked!", "bar?", "压力。", "ok;", "#tag", "a#b", "##", "`x`", "~", "-"]
)


@st.composite
def heading_line(draw: st.DrawFn) -> str:
    hashes = "#" * draw(st.integers(1, 7))
    gap = draw(st.sampled_from(["", " ", "  ", "\t", "\x0b", " \xa0"]))
    title = " ".join(draw(st.lists(WORD, max_size=4)))
    closing = draw(st.sampled_from(["", " #", " ##", "#", " # x"]))
    return draw(SPACE) * draw(st.integers(0, 1)) + hashes + gap + title + closing + draw(SPACE)


@st.composite
def text_line(draw: st.DrawFn) -> str:
    words = draw(st.lists(WORD, min_size=1, max_size=12))
    # Long lines, so that some paragraphs and headings exceed a chunk and are cut at sentences or spaces.
    repeat = draw(st.sampled_from([1, 1, 1, 2, 8, 30]))
    return draw(SPACE) + " ".join(words * repeat) + draw(SPACE)


LINE = st.one_of(
    text_line(),
    text_line(),
    heading_line(),
    SPACE,  # blank, or a whitespace-only line that is not blank to the separator
    st.sampled_from(["```", "~~~", "  ```py", "````", "~~", "``", "#", "# ", "#\t", "####### seven"]),
)


@st.composite
def markdown(draw: st.DrawFn) -> str:
    lines = draw(st.lists(LINE, max_size=40))
    out = []
    for line in lines:
        out.append(line)
        out.append(draw(st.sampled_from(["\n", "\n", "\n", "\n\n", "\n \n", "\n\t\n\n", "\r\n", "\r", "\n\n\n"])))
    return "".join(out[: draw(st.integers(len(out) - 1 if out else 0, len(out)))])


def unit_rows(units: object) -> list[tuple]:
    return [(u.text, u.path, u.heading, u.page) for u in units]  # type: ignore[attr-defined]


def chunk_rows(chunks: object) -> list[tuple]:
    return [(c.text, c.path, c.page) for c in chunks]  # type: ignore[attr-defined]


def assert_same(text: str, chunk_chars: int, overlap_chars: int, page: int = 0, base_path: tuple = ()) -> None:
    expected_units = reference.markdown_units(text, page, base_path)
    expected_chunks = chunk_rows(reference.chunk_units(expected_units, chunk_chars, overlap_chars))
    columns = documents.parse_markdown(text, page, base_path)
    assert unit_rows(columns) == unit_rows(expected_units)
    assert unit_rows(documents.markdown_units(text, page, base_path)) == unit_rows(expected_units)
    assert chunk_rows(documents.chunk_units(columns, chunk_chars, overlap_chars)) == expected_chunks
    # Units as plain objects (as pdf pages give them) take the unit-by-unit path: it must agree too.
    assert chunk_rows(documents.chunk_units(list(columns), chunk_chars, overlap_chars)) == expected_chunks


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    markdown(),
    st.integers(8, 700),
    st.integers(0, 250),
    st.sampled_from([0, 3]),
    st.sampled_from([(), ("Doc",), ("A", "")]),
)
def test_columns_parse_and_chunk_exactly_as_the_unit_by_unit_code(
    text: str, chunk_chars: int, overlap_chars: int, page: int, base_path: tuple
) -> None:
    assert_same(text, chunk_chars, overlap_chars, page, base_path)


def test_documents_of_many_sections_chunk_exactly_as_before() -> None:
    parts = ["# Maintenance log"]
    for k in range(300):
        parts.append(f"{'#' * (2 + k % 3)} Section {k}")
        parts.append(f"During inspection {k} the PLC cabinet was checked; pressure reached 2.5 bar. " * (1 + k % 7))
        if k % 5 == 0:
            parts.append(f"- item {k} one\n- item {k} two\n## Inline heading {k}\nafter it  ")
    text = "\n\n".join(parts)
    for chunk_chars, overlap_chars in ((1200, 150), (400, 60), (300, 0), (90, 80)):
        assert_same(text, chunk_chars, overlap_chars)
        assert_same(text + "\n\n```\n# code\n```\n", chunk_chars, overlap_chars)


def test_parse_document_hands_markdown_html_and_docx_to_the_column_chunker() -> None:
    from tests.ingest.helpers import make_docx

    md = b"# T\n\nBody one.\n\n## S\n\nBody two."
    html = b"<html><title>T</title><body><h2>S</h2><p>Body two.</p></body></html>"
    docx = make_docx([("h1", "T"), ("p", "Body one."), ("h2", "S"), ("p", "Body two.")])
    for data, media_type in ((md, documents.MARKDOWN), (html, documents.HTML), (docx, documents.DOCX)):
        units = documents.parse_document(data, media_type)
        assert isinstance(units, documents.MarkdownUnits)
        expected = reference.chunk_units([reference.Unit(u.text, u.path, u.heading, u.page) for u in units], 30, 10)
        assert chunk_rows(documents.chunk_units(units, 30, 10)) == chunk_rows(expected)
