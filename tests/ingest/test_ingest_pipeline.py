"""The ingest pipeline without gRPC: documents, chunking, tools, fine mode, every bad input of the issue."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from services.ingest import documents, tools
from services.ingest.models import ChatMessage, Part, ToolCall
from services.ingest.pipeline import Ingestor
from services.ingest.settings import IngestSettings
from services.ingest.windowing import build_window_items
from services.textmem.models import ChatMessage as TmMessage
from services.textmem.models import Part as TmPart
from services.textmem.models import ToolCall as TmToolCall
from services.textmem.windowing import build_window_memories
from tests.fakes.openai_server import FakeOpenAI
from tests.ingest.conftest import scripted_llm
from tests.ingest.helpers import FileServer, encrypt_pdf, make_docx, make_pdf, make_png, zip_bomb_docx

REPORT_MD = (
    b"# PM1 workshop PMT boot-pressure fault report\n\n"
    b"## Symptom\n\nDuring the startup test the edge pressures failed to reach the 2.5-bar interlock.\n\n"
    b"## Cause\n\nPoor contact at the negative terminal of the DC 24V supply in the PLC cabinet.\n"
)


@pytest.fixture(scope="module")
def files():
    fs = FileServer(
        files={
            "/report.md": ("text/markdown; charset=utf-8", REPORT_MD),
            "/report.pdf": ("application/pdf", make_pdf([["PM1 workshop report", "Page one text."], ["Page two."]])),
            "/report.docx": (
                "application/octet-stream",
                make_docx([("h1", "Fault report"), ("p", "The DC 24V terminal block was loose."), ("h2", "Fix")]),
            ),
            "/page.html": (
                "text/html",
                b"<html><head><title>T</title><script>evil()</script></head><body><h1>Boot test</h1>"
                b"<p>Pressure 2.5 bar.</p><ul><li>PLC</li></ul></body></html>",
            ),
            "/encrypted.pdf": ("application/pdf", encrypt_pdf(make_pdf([["secret"]]))),
            "/corrupt.pdf": ("application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ngarbage"),
            "/bomb.docx": ("application/octet-stream", zip_bomb_docx()),
            "/big.md": ("text/markdown", b"# big\n\n" + b"word " * 60_000),
            "/image.png": ("image/png", make_png()),
            "/binary.bin": ("application/octet-stream", b"\x00\x01\x02" * 100),
        }
    )
    with fs.serve():
        yield fs


def ingestor(**overrides: object) -> Ingestor:
    return Ingestor(IngestSettings(**{"fetch_allow_hosts": "127.0.0.1", "fetch_timeout_s": 2.0, **overrides}))


def user_file(file_data: str = "", file_id: str = "", filename: str = "") -> ChatMessage:
    return ChatMessage(
        "user",
        [Part("text", text="Please read this."), Part("file", file_id=file_id, filename=filename, file_data=file_data)],
    )


# documents --------------------------------------------------------------------------------------
def test_sniffing_trusts_bytes_over_names_and_declared_types() -> None:
    assert documents.sniff(REPORT_MD, "application/octet-stream", "report.pdf") == documents.MARKDOWN
    assert documents.sniff(make_pdf([["x"]]), "text/plain", "a.txt") == documents.PDF
    assert documents.sniff(make_png(), "text/html", "x.html") == "image/png"
    assert documents.sniff(b"<!DOCTYPE html><p>x", "", "") == documents.HTML
    assert documents.sniff(b"plain words", "", "notes.txt") == documents.TEXT
    assert documents.sniff(b"\x00\x01binary", "text/plain", "a.txt") == "application/octet-stream"


def test_chunks_follow_headings_and_overlap_within_a_section() -> None:
    para = " ".join(f"Sentence {i} about the PLC cabinet wiring." for i in range(60))
    text = f"# Report\n\nIntro.\n\n## Cause\n\n{para}\n\n## Fix\n\nRe-wired the negative line.\n"
    chunks = documents.chunk_units(documents.markdown_units(text), chunk_chars=600, overlap_chars=100)
    assert len(chunks) >= 4
    assert all(len(c.text) <= 600 + 120 for c in chunks)
    cause = [c for c in chunks if c.path == ("Report", "Cause")]
    assert len(cause) >= 3
    # A continued section repeats the end of the previous chunk, and says where it is.
    assert cause[1].text.startswith("Report > Cause")
    tail_words = chunks[chunks.index(cause[1]) - 1].text.split()[-3:]
    assert " ".join(tail_words) in cause[1].text
    # A heading stays with its text; a small section may share the chunk before it.
    (fix,) = [c for c in chunks if "## Fix" in c.text]
    assert "Re-wired the negative line." in fix.text
    # A large section starts its own chunk, heading first.
    big = documents.chunk_units(documents.markdown_units(f"# A\n\n{para}\n\n# B\n\n{para}"), 600, 100)
    assert any(c.text.startswith("# B") for c in big)


def test_html_is_reduced_to_structured_text_without_scripts() -> None:
    md = documents.html_to_markdown(
        "<html><head><style>p{}</style></head><body><h2>Title</h2><p>One &amp; two</p>"
        "<script>alert(1)</script><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    assert "## Title" in md and "One & two" in md and "alert" not in md and "a | b" in md.replace(" |  | ", " | ")


def test_pdf_and_docx_parse_to_units_with_pages_and_headings() -> None:
    units = documents.pdf_units(make_pdf([["Alpha line"], ["Beta line"]]), 10)
    assert [(u.text, u.page) for u in units] == [("Alpha line", 1), ("Beta line", 2)]
    units = documents.docx_units(make_docx([("h1", "Top"), ("p", "Body text"), ("li", "item")]), 2**30, 200)
    assert [u.text for u in units] == ["# Top", "Body text", "- item"]
    assert units[1].path == ("Top",)


# tools ----------------------------------------------------------------------------------------------
def test_tool_schema_formats() -> None:
    flat = tools.parse_tool_schema('[{"name": "a", "description": "does a", "parameters": []}]')
    openai = tools.parse_tool_schema(
        '{"tools": [{"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]}'
    )
    single = tools.parse_tool_schema('{"name": "c"}')
    assert [t.name for t in flat + openai + single] == ["a", "b", "c"]
    assert tools.schema_blocks("x <tool_chema>[1]</tool_schema> y") == ["[1]"]  # MemOS docs' spelling
    assert tools.call_succeeded('{"rows": 3}') and not tools.call_succeeded('{"error": "denied"}')
    assert not tools.call_succeeded("Error: file not found")


# fast mode ------------------------------------------------------------------------------------------
def test_fast_windows_equal_textmems_own() -> None:
    msgs = [
        ("system", "Be brief.", None),
        ("user", "I'll choose 7 Days Inn.", None),
        ("assistant", "", ("c1", "book", '{"hotel": "7 Days Inn"}')),
        ("tool", "booked", None),
        ("user", "Thanks", None),
        ("assistant", "You're welcome.", None),
    ]
    ours, theirs = [], []
    for k, (role, text, call) in enumerate(msgs):
        parts = [Part("text", text=text)] if text else []
        tparts = [TmPart("text", text=text)] if text else []
        calls = [ToolCall(*call)] if call else []
        tcalls = [TmToolCall(*call)] if call else []
        tcid = "c1" if role == "tool" else ""
        ours.append(
            ChatMessage(role, parts, tool_calls=calls, tool_call_id=tcid, chat_time=1.7e9 + k, message_id=f"m{k}")
        )
        theirs.append(
            TmMessage(role, tparts, tool_calls=tcalls, tool_call_id=tcid, chat_time=1.7e9 + k, message_id=f"m{k}")
        )
    a = build_window_items(ours, tags=["x"], info={"k": 1}, size=4, overlap=1)
    b = build_window_memories(
        theirs, cube_id="c", user_id="u", session_id="s", tags=["x"], info={"k": 1}, size=4, overlap=1
    )
    assert [(i.memory, i.key, i.tags, i.info, i.event_time) for i in a] == [
        (m.memory, m.key, m.tags, m.info, m.event_time) for m in b
    ]
    assert [[vars(s) for s in i.sources] for i in a] == [[vars(s) for s in m.sources] for m in b]


async def test_a_multi_source_request_in_fast_mode(files: FileServer) -> None:
    schema = json.dumps([{"name": "file_reader", "description": "Reads files", "parameters": [{"name": "file_id"}]}])
    messages = [
        ChatMessage("system", [Part("text", text=f"You analyse faults.\n<tool_schema>\n{schema}\n</tool_schema>")]),
        ChatMessage(
            "user",
            [
                Part("text", text="Read these."),
                Part("file", file_id="file_123", filename="report.pdf", file_data=f"@{files.base}/report.md"),
                Part("file", filename="r.pdf", file_data=f"{files.base}/report.pdf"),
                Part("file", file_data=f"{files.base}/report.docx"),
                Part("file", file_data=f"{files.base}/page.html"),
                Part(
                    "file",
                    filename="inline.md",
                    file_data="data:text/markdown;base64," + base64.b64encode(REPORT_MD).decode(),
                ),
                Part("image_url", url=f"{files.base}/image.png"),
                Part("input_audio"),
            ],
        ),
        ChatMessage("assistant", tool_calls=[ToolCall("call_1", "file_reader", '{"file_id": "file_123"}')]),
        ChatMessage("tool", [Part("text", text='{"extracted_text": "DC 24V"}')], tool_call_id="call_1"),
        ChatMessage("assistant", [Part("text", text="Summary: loose terminal.")]),
    ]
    out = await ingestor().extract(messages, tags=["t"])
    assert out.part_errors == []
    by_type: dict[str, list] = {}
    for item in out.items:
        by_type.setdefault(item.memory_type, []).append(item)
    assert set(by_type) == {"LongTermMemory", "ToolSchemaMemory", "ToolTrajectoryMemory"}
    chunks = [i for i in by_type["LongTermMemory"] if "file" in i.tags]
    files_seen = {(c.sources[0].file["filename"], c.sources[0].file["media_type"]) for c in chunks}
    assert files_seen == {
        ("report.pdf", documents.MARKDOWN),  # named .pdf, holds markdown: the bytes decide
        ("r.pdf", documents.PDF),
        ("report.docx", documents.DOCX),
        ("page.html", documents.HTML),
        ("inline.md", documents.MARKDOWN),
    }
    md = [c for c in chunks if c.sources[0].file["file_id"] == "file_123"]
    assert "2.5-bar interlock" in " ".join(c.memory for c in md)
    src = md[0].sources[0]
    assert (src.type, src.role, src.message_index) == ("file", "user", 1)
    assert src.file["url"] == f"{files.base}/report.md" and src.file["chunk_total"] == len(md)
    (schema_item,) = by_type["ToolSchemaMemory"]
    assert schema_item.key == "file_reader" and schema_item.sources[0].tool_name == "file_reader"
    (traj,) = by_type["ToolTrajectoryMemory"]
    assert traj.info["success"] is True and traj.info["arguments"] == {"file_id": "file_123"}
    assert [s.type for s in traj.sources] == ["tool_call", "tool_result"]
    assert any("not described" in n for n in out.notices) and any("not transcribed" in n for n in out.notices)
    windows = [i for i in by_type["LongTermMemory"] if "mode:fast" in i.tags]
    assert any(s.type == "image" and s.image_url.endswith("/image.png") for w in windows for s in w.sources)


# bad input ------------------------------------------------------------------------------------------
async def test_every_bad_input_gets_a_precise_part_error_and_valid_parts_are_kept(files: FileServer) -> None:
    slow = ingestor(fetch_timeout_s=0.5)
    small = ingestor(fetch_max_bytes=64 * 1024)
    default = Ingestor(IngestSettings())  # nothing allowed: loopback refused
    cases = [
        (default, Part("file", file_data=f"@{files.base}/report.md"), "FETCH_ADDRESS_REFUSED"),
        (default, Part("file", file_data="@http://10.0.0.1/x.md"), "FETCH_ADDRESS_REFUSED"),
        (default, Part("file", file_data="http://169.254.169.254/latest/meta-data/"), "FETCH_ADDRESS_REFUSED"),
        (default, Part("file", file_data="@http://[::ffff:127.0.0.1]/x"), "FETCH_ADDRESS_REFUSED"),
        (default, Part("file", file_data="@http://localhost/x"), "FETCH_ADDRESS_REFUSED"),
        (ingestor(), Part("file", file_data="@ftp://example.com/x"), "FETCH_SCHEME_REFUSED"),
        (ingestor(), Part("file", file_data="@/etc/passwd"), "FILE_LOCAL_PATH_REFUSED"),
        (ingestor(), Part("file", file_data="file:///etc/passwd"), "FETCH_SCHEME_REFUSED"),
        (ingestor(), Part("file", filename="x.md"), "FILE_PART_EMPTY"),
        (ingestor(), Part("file", file_data="data:text/plain;base64,@@not base64@@"), "BAD_BASE64"),
        (ingestor(), Part("file", file_id="upload-" + "0" * 32), "FILE_NOT_FOUND"),
        (ingestor(), Part("unknown"), "UNKNOWN_CONTENT_PART"),
        (small, Part("file", file_data=f"{files.base}/big.md"), "FILE_TOO_LARGE"),
        (small, Part("file", file_data="data:text/plain;base64," + "QUFB" * 40_000), "FILE_TOO_LARGE"),
        (slow, Part("file", file_data=f"{files.base}/slow"), "FETCH_TIMEOUT"),
        (ingestor(), Part("file", file_data=f"{files.base}/encrypted.pdf"), "PDF_ENCRYPTED"),
        (ingestor(), Part("file", file_data=f"{files.base}/corrupt.pdf"), "PDF_CORRUPT"),
        (ingestor(), Part("file", file_data=f"{files.base}/bomb.docx"), "DOCX_ZIP_BOMB"),
        (ingestor(), Part("file", file_data=f"{files.base}/binary.bin"), "UNSUPPORTED_MEDIA_TYPE"),
        (ingestor(), Part("file", file_data=f"{files.base}/missing.md"), "FETCH_HTTP_STATUS"),
        (ingestor(max_text_chars=10), Part("text", text="x" * 11), "TEXT_TOO_LONG"),
    ]

    async def one(ing: Ingestor, bad: Part, reason: str) -> None:
        msgs = [
            ChatMessage("user", [Part("text", text="keep me"), bad]),
            ChatMessage("assistant", [Part("text", text="ok")]),
        ]
        out = await ing.extract(msgs)
        assert [(e.message_index, e.part_index, e.error.reason) for e in out.part_errors] == [(0, 1, reason)], reason
        assert out.part_errors[0].error.message
        assert any("keep me" in i.memory for i in out.items), reason  # the valid part is still stored

    await asyncio.gather(*(one(*c) for c in cases))


async def test_broken_tool_schema_and_unmatched_tool_messages() -> None:
    msgs = [
        ChatMessage("system", [Part("text", text='Tools:\n<tool_schema>[{"name": "x",]</tool_schema>')]),
        ChatMessage("user", [Part("text", text="hi")]),
        ChatMessage("tool", [Part("text", text="result without a call")], tool_call_id="call_404"),
        ChatMessage("tool", [Part("text", text="result without an id")]),
        ChatMessage("assistant", tool_calls=[ToolCall("call_late", "f", "{}")]),
    ]
    out = await ingestor().extract(msgs)
    got = [(e.message_index, e.part_index, e.error.reason) for e in out.part_errors]
    assert got == [
        (0, 0, "TOOL_SCHEMA_INVALID_JSON"),
        (2, -1, "TOOL_RESULT_WITHOUT_CALL"),
        (3, -1, "TOOL_RESULT_WITHOUT_CALL"),
    ]
    assert "line 1" in out.part_errors[0].error.message
    (traj,) = [i for i in out.items if i.memory_type == "ToolTrajectoryMemory"]
    assert "no result was recorded" in traj.memory and traj.info["answered"] is False
    assert any("result without a call" in i.memory for i in out.items)  # still in the conversation


# fine mode ------------------------------------------------------------------------------------------
CHAT = [
    ChatMessage("user", [Part("text", text="I prefer quiet hotels near the station.")]),
    ChatMessage("assistant", [Part("text", text="Noted.")]),
    ChatMessage("user", [Part("text", text="My sister Mei plays violin.")]),
]


def fresh_chat() -> list[ChatMessage]:
    return [ChatMessage(m.role, [Part("text", text=m.text())]) for m in CHAT]


async def test_fine_mode_without_an_llm_falls_back_and_says_so() -> None:
    out = await Ingestor(IngestSettings()).extract(fresh_chat(), mode="fine")
    assert out.effective_mode == "fast" and "stored with fast mode" in out.notices[0]
    assert all("mode:fast" in i.tags for i in out.items)


async def test_fine_mode_extracts_validated_memories_and_preferences() -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    with fake.serve() as url:
        out = await ingestor(llm_base_url=url, llm_model="m").extract(fresh_chat(), mode="fine", tags=["t"])
    assert out.effective_mode == "fine" and out.llm_calls == 1 and not out.notices
    types = sorted(i.memory_type for i in out.items)
    assert types == ["PreferenceMemory", "UserMemory", "UserMemory"]
    pref = next(i for i in out.items if i.memory_type == "PreferenceMemory")
    assert pref.sources[0].message_index == 0 and "preference:explicit" in pref.tags
    mei = next(i for i in out.items if "Mei" in i.memory)
    assert [s.message_index for s in mei.sources] == [2] and mei.background == "a scripted conversation"
    (req,) = fake.chat_requests()
    assert req["body"]["model"] == "m" and req["body"]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    "bad",
    ["this is not JSON", '{"memories": [{"key": "k", "memory_type": "Gossip", "value": "v"}]}', '{"memories": "none"}'],
)
async def test_malformed_llm_output_is_retried_once_then_falls_back_with_the_reason(bad: str) -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    with fake.serve() as url:
        ing = ingestor(llm_base_url=url, llm_model="m")
        fake.chat_replies = [bad]  # the retry gets a good answer
        ok = await ing.extract(fresh_chat(), mode="fine")
        assert ok.effective_mode == "fine" and ok.llm_calls == 2
        retry = fake.chat_requests()[-1]["body"]["messages"]
        assert retry[-2]["content"] == bad and "Answer again" in retry[-1]["content"]

        fake.chat_replies = [bad, "```json\n{also broken\n```"]
        out = await ing.extract(fresh_chat(), mode="fine")
    assert out.effective_mode == "fast" and out.llm_calls == 2
    (notice,) = out.notices
    assert "fell back to fast mode" in notice and "LLM_OUTPUT_INVALID" in notice and "twice" in notice
    assert all("fine:fallback" in i.tags and "mode:fast" in i.tags for i in out.items)


async def test_llm_endpoint_failure_falls_back() -> None:
    fake = FakeOpenAI()
    fake.fail_with = 503
    with fake.serve() as url:
        out = await ingestor(llm_base_url=url, llm_model="m").extract(fresh_chat(), mode="fine")
    assert out.effective_mode == "fast" and "LLM_UNAVAILABLE" in out.notices[0]


async def test_llm_calls_are_batched_and_concurrency_is_bounded() -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    fake.chat_delay_s = 0.1
    msgs = [ChatMessage("user", [Part("text", text=f"Fact number {k}.")]) for k in range(40)]
    with fake.serve() as url:
        ing = ingestor(llm_base_url=url, llm_model="m", fine_batch_messages=4, llm_max_concurrency=2)
        out = await ing.extract(msgs, mode="fine")
    assert out.llm_calls == 10 and len(out.items) == 40
    assert fake.chat_max_in_flight == 2
    assert sorted(i.sources[0].message_index for i in out.items) == list(range(40))


async def test_images_are_described_by_a_vision_model(files: FileServer) -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    with fake.serve() as url:
        ing = ingestor(llm_base_url=url, llm_model="m", vision_model="v")
        msgs = [
            ChatMessage("user", [Part("text", text="Look"), Part("image_url", url=f"{files.base}/image.png")]),
            ChatMessage("user", [Part("image_url", url=f"{files.base}/report.md")]),
            ChatMessage("user", [Part("image_url", url="http://10.0.0.1/cam.png")]),
        ]
        out = await ing.extract(msgs)
    (desc,) = [i for i in out.items if "image" in i.tags]
    assert "red square" in desc.memory
    assert desc.sources[0].type == "image" and desc.sources[0].image_url.endswith("/image.png")
    (req,) = [r for r in fake.chat_requests() if r["body"]["model"] == "v"]
    image_part = req["body"]["messages"][0]["content"][1]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")  # the model never fetches URLs
    assert [(e.message_index, e.error.reason) for e in out.part_errors] == [
        (1, "NOT_AN_IMAGE"),
        (2, "FETCH_ADDRESS_REFUSED"),
    ]
