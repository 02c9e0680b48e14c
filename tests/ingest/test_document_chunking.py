"""Markdown headings, docx styles and chunk packing: the rules the fast paths in documents.py must keep."""

from __future__ import annotations

from services.ingest import documents
from tests.ingest.helpers import make_docx


def units_of(text: str) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(u.text, u.path, u.heading) for u in documents.markdown_units(text)]


def test_heading_titles_drop_closing_hashes_and_need_whitespace_after_the_hashes() -> None:
    text = "## Cause ##\n\nBody.\n\n#NoSpace\n\n####### seven\n\n#\tTabbed #  \n\nMore."
    assert units_of(text) == [
        ("## Cause ##", ("Cause",), True),
        ("Body.", ("Cause",), False),
        ("#NoSpace", ("Cause",), False),
        ("####### seven", ("Cause",), False),
        ("#\tTabbed #", ("Tabbed",), True),
        ("More.", ("Tabbed",), False),
    ]


def test_heading_paths_nest_and_pop_by_level_with_or_without_code_fences() -> None:
    text = "# A\n\n## B\nline under B\n\n### C\n\n## D\n\nx\n\n# E #\n\ny"
    expected = [
        ("# A", ("A",), True),
        ("## B", ("A", "B"), True),
        ("line under B", ("A", "B"), False),
        ("### C", ("A", "B", "C"), True),
        ("## D", ("A", "D"), True),
        ("x", ("A", "D"), False),
        ("# E #", ("E",), True),
        ("y", ("E",), False),
    ]
    assert units_of(text) == expected
    # A fence sends the text through the line-by-line parser, which must agree outside the fence.
    fenced = units_of(text + "\n\n```\n# not a heading\n```")
    assert fenced[:-1] == expected
    assert fenced[-1] == ("```\n# not a heading\n```", ("E",), False)


def test_crlf_and_whitespace_only_lines_separate_paragraphs() -> None:
    assert units_of("# T\r\n\r\none\r\n \t\r\ntwo\r\n") == [
        ("# T", ("T",), True),
        ("one", ("T",), False),
        ("two", ("T",), False),
    ]


def test_docx_styles_repeat_correctly_across_paragraphs() -> None:
    data = make_docx(
        [("h1", "Top"), ("p", "a"), ("h2", "Sub"), ("p", "b"), ("li", "c"), ("h2", "Other"), ("li", "d"), ("p", "e")]
    )
    units = documents.docx_units(data, 2**30, 200)
    assert [(u.text, u.path) for u in units] == [
        ("# Top", ("Top",)),
        ("a", ("Top",)),
        ("## Sub", ("Top", "Sub")),
        ("b", ("Top", "Sub")),
        ("- c", ("Top", "Sub")),
        ("## Other", ("Top", "Other")),
        ("- d", ("Top", "Other")),
        ("e", ("Top", "Other")),
    ]


def long_document(sections: int = 12, paragraphs: int = 7) -> str:
    parts = ["# Manual"]
    for s in range(sections):
        parts.append(f"## Part {s}")
        for p in range(paragraphs):
            parts.append(" ".join(f"Step {s}.{p}.{w} checks the valve." for w in range(1 + (s + p) % 6)))
    return "\n\n".join(parts)


def test_chunks_keep_every_paragraph_in_order_within_the_size_limit() -> None:
    units = documents.markdown_units(long_document())
    chunks = documents.chunk_units(units, chunk_chars=400, overlap_chars=60)
    assert all(len(c.text) <= 400 for c in chunks)
    # Every unit lands in exactly one chunk, in reading order (overlap and path lines come first).
    joined = "\n\n".join(c.text for c in chunks)
    pos = 0
    for u in units:
        pos = joined.index(u.text, pos) + len(u.text)
    # A chunk that opens with a heading is filed under that heading.
    for c in chunks:
        if c.text.startswith("#"):
            assert c.path[-1] == c.text.split("\n\n")[0].lstrip("# ")


def test_headings_never_end_a_chunk_and_continued_sections_repeat_path_and_tail() -> None:
    units = documents.markdown_units(long_document())
    chunks = documents.chunk_units(units, chunk_chars=400, overlap_chars=60)
    for c in chunks[:-1]:
        assert not c.text.split("\n\n")[-1].startswith("#"), c.text
    continued = [k for k, c in enumerate(chunks) if k and not c.text.startswith("#")]
    assert continued
    for k in continued:
        c = chunks[k]
        assert c.text.startswith(" > ".join(c.path) + "\n\n")
        previous_words = chunks[k - 1].text.split()[-2:]
        assert " ".join(previous_words) in c.text


def test_paragraphs_longer_than_a_chunk_are_cut_at_sentences() -> None:
    sentence = "The PLC cabinet terminal block was re-tightened."
    text = "# Long\n\n" + " ".join([sentence] * 40)
    chunks = documents.chunk_units(documents.markdown_units(text), chunk_chars=300, overlap_chars=50)
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 + 50 for c in chunks)
    # Each piece ends at a sentence end, not in a word.
    for c in chunks:
        assert c.text.endswith("."), c.text
    # A generator of units chunks the same as a list.
    units = documents.markdown_units(text)
    assert documents.chunk_units(iter(units), 300, 50) == chunks
