"""Fast-mode windowing: bounds, sources, times."""

from __future__ import annotations

import numpy as np
import pytest

from services.textmem.memory import TextMemory
from services.textmem.models import ChatMessage, Part, Source, ToolCall
from services.textmem.windowing import build_window_memories, render_message, window_bounds
from shared.errors import InvalidArgument


def check_bounds(n: int, size: int, overlap: int, bounds: list[tuple[int, int]]) -> None:
    effective = min(overlap, size - 1)
    covered = [0] * n
    for start, end in bounds:
        assert 0 <= start < end <= n
        assert end - start <= size
        for i in range(start, end):
            covered[i] += 1
    assert all(covered), f"messages not in any window: {[i for i, c in enumerate(covered) if not c]}"
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (s1, e1), (s2, e2) in zip(bounds, bounds[1:], strict=False):
        assert e1 - s1 == size  # only the last window may be short
        assert s2 - s1 == size - effective
        assert e1 - s2 == effective  # consecutive windows share exactly `overlap` messages
        assert e2 > e1  # no window is contained in the one before


@pytest.mark.parametrize(
    ("n", "size", "overlap"),
    [
        (1, 4, 1),
        (3, 4, 1),
        (4, 4, 1),
        (5, 4, 1),
        (7, 4, 1),
        (100, 4, 1),
        (10, 3, 0),
        (10, 1, 0),
        (9, 5, 2),
        (50, 7, 6),
        (2, 2, 1),
    ],
)
def test_window_bounds_cover_every_message_with_the_overlap(n: int, size: int, overlap: int) -> None:
    check_bounds(n, size, overlap, window_bounds(n, size, overlap))


@pytest.mark.parametrize(
    ("n", "size", "overlap", "expected"),
    [
        (0, 4, 1, []),
        (3, 4, 1, [(0, 3)]),
        (4, 4, 1, [(0, 4)]),
        (7, 4, 1, [(0, 4), (3, 7)]),
        (8, 4, 1, [(0, 4), (3, 7), (6, 8)]),
        (6, 3, 0, [(0, 3), (3, 6)]),
        (3, 1, 0, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_window_bounds_examples(n: int, size: int, overlap: int, expected: list[tuple[int, int]]) -> None:
    assert window_bounds(n, size, overlap) == expected


@pytest.mark.parametrize("overlap", [3, 4, 100])
def test_overlap_not_below_size_is_clamped_to_size_minus_one(overlap: int) -> None:
    bounds = window_bounds(5, 3, overlap)
    assert bounds == [(0, 3), (1, 4), (2, 5)]
    check_bounds(5, 3, overlap, bounds)


@pytest.mark.parametrize(("n", "size", "overlap"), [(5, 2, -1), (10, 4, -3)])
def test_negative_overlap_still_covers_every_message(n: int, size: int, overlap: int) -> None:
    covered = {i for start, end in window_bounds(n, size, overlap) for i in range(start, end)}
    assert covered == set(range(n))


class _NoEmbedding:
    """Stands in for stores and embedder where a call must be refused before any is used."""

    dim = 8

    def embed(self, texts: object) -> np.ndarray:
        raise AssertionError("the add was accepted and reached the embedder")

    def memory_ids_for_request(self, cube_id: str, request_id: str) -> None:
        return None


def test_add_messages_rejects_a_negative_window_overlap() -> None:
    stub = _NoEmbedding()
    mem = TextMemory(stub, stub, stub)  # type: ignore[arg-type]
    messages = [ChatMessage("user", [Part("text", text=f"m{i}")]) for i in range(5)]
    with pytest.raises(InvalidArgument):
        mem.add_messages("cube", "u", "s", messages, window_size=2, window_overlap=-1)


def test_add_messages_rejects_overlap_not_below_size() -> None:
    stub = _NoEmbedding()
    mem = TextMemory(stub, stub, stub)  # type: ignore[arg-type]
    messages = [ChatMessage("user", [Part("text", text="hi")])]
    with pytest.raises(InvalidArgument) as exc:
        mem.add_messages("cube", "u", "s", messages, window_size=2, window_overlap=2)
    assert exc.value.reason == "BAD_WINDOW"


# build_window_memories -------------------------------------------------------------------
def conversation() -> list[ChatMessage]:
    return [
        ChatMessage("system", [Part("text", text="Be brief.")], chat_time=100.0, message_id="sys"),
        ChatMessage("user", [Part("text", text="What's the weather in Paris?")], chat_time=110.0),
        ChatMessage(
            "assistant",
            [],
            tool_calls=[ToolCall("call_1", "weather", '{"city": "Paris"}'), ToolCall("call_2", "time", "{}")],
            chat_time=120.0,
            message_id="asst-1",
        ),
        ChatMessage("tool", [Part("text", text="sunny, 21C")], tool_call_id="call_1", chat_time=130.0),
        ChatMessage(
            "user",
            [
                Part("text", text="Look at this"),
                Part("file", file_id="file-1", filename="plan.pdf"),
                Part("image_url", url="https://example.com/p.png"),
                Part("input_audio"),
            ],
            chat_time=115.0,  # out of order on purpose: event_time is the max, not the last
        ),
        ChatMessage("assistant", [Part("text", text="Nice plan.")]),
    ]


def build(messages: list[ChatMessage], size: int = 10, overlap: int = 0, **kw: object):
    args: dict[str, object] = dict(
        cube_id="cube", user_id="alice", session_id="s1", tags=["trip"], info={"k": "v"}, size=size, overlap=overlap
    )
    args.update(kw)
    return build_window_memories(messages, **args)  # type: ignore[arg-type]


def test_every_message_part_and_tool_call_becomes_a_typed_source() -> None:
    [memory] = build(conversation())
    got = [(s.type, s.role, s.message_index) for s in memory.sources]
    assert got == [
        ("system", "system", 0),
        ("chat", "user", 1),
        ("tool_call", "assistant", 2),
        ("tool_call", "assistant", 2),
        ("tool_result", "tool", 3),
        ("chat", "user", 4),
        ("file", "user", 4),
        ("image", "user", 4),
        ("audio", "user", 4),
        ("chat", "assistant", 5),
    ]
    s = memory.sources
    assert s[0].content == "Be brief." and s[0].message_id == "sys" and s[0].chat_time == 100.0
    assert s[1].content == "What's the weather in Paris?"
    assert (s[2].tool_call_id, s[2].tool_name, s[2].content) == ("call_1", "weather", '{"city": "Paris"}')
    assert (s[3].tool_call_id, s[3].tool_name) == ("call_2", "time")
    assert s[2].message_id == s[3].message_id == "asst-1"
    assert (s[4].content, s[4].tool_call_id) == ("sunny, 21C", "call_1")
    assert s[5].content == "Look at this"
    assert s[6].file == {"file_id": "file-1", "filename": "plan.pdf"} and s[6].content == ""
    assert s[7].image_url == "https://example.com/p.png"
    assert s[9].chat_time is None


def test_a_message_without_parts_or_calls_still_gets_a_source() -> None:
    [memory] = build([ChatMessage("user", [], message_id="empty")])
    assert memory.sources == [Source(type="chat", role="user", message_index=0, message_id="empty", content="")]


def test_sources_carry_the_index_in_the_whole_conversation() -> None:
    messages = [ChatMessage("user" if i % 2 == 0 else "assistant", [Part("text", text=f"turn {i}")]) for i in range(7)]
    memories = build(messages, size=4, overlap=1)
    assert [[s.message_index for s in m.sources] for m in memories] == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert [s.content for s in memories[1].sources] == ["turn 3", "turn 4", "turn 5", "turn 6"]
    # A message shared by two windows has the same id in both.
    assert memories[0].sources[3].message_id == memories[1].sources[0].message_id
    assert memories[0].memory.splitlines() == ["user: turn 0", "assistant: turn 1", "user: turn 2", "assistant: turn 3"]


def test_message_ids_are_kept_or_generated_uniquely() -> None:
    messages = [
        ChatMessage("user", [Part("text", text=str(i))], message_id="given" if i == 0 else "") for i in range(4)
    ]
    [memory] = build(messages)
    ids = [s.message_id for s in memory.sources]
    assert ids[0] == "given"
    assert all(ids) and len(set(ids)) == 4


def test_event_time_is_the_latest_chat_time_of_the_window() -> None:
    memories = build(conversation(), size=3, overlap=0)
    assert [m.event_time for m in memories] == [120.0, 130.0]
    [untimed] = build([ChatMessage("user", [Part("text", text="no time")])])
    assert untimed.event_time is None


def test_memory_fields() -> None:
    info = {"k": "v"}
    memories = build(conversation(), size=3, overlap=1, now=1234.5, info=info)
    assert len(memories) == 3
    assert len({m.id for m in memories}) == 3
    for m in memories:
        assert len(m.id) == 32 and int(m.id, 16) >= 0
        assert (m.cube_id, m.user_id, m.session_id) == ("cube", "alice", "s1")
        assert m.memory_type == "LongTermMemory" and m.status == "activated"
        assert m.tags == ["trip", "mode:fast"]
        assert m.info == {"k": "v"} and m.info is not info
        assert m.created_at == m.updated_at == 1234.5
        assert m.version == 1
    # The key is the first user text of the window, else the window's first line.
    assert memories[0].key == "What's the weather in Paris?"
    assert memories[1].key == "Look at this"
    assert memories[2].key == "Look at this"


def test_key_falls_back_to_the_first_line_and_is_short() -> None:
    [m] = build([ChatMessage("assistant", [Part("text", text="x" * 200)])])
    assert m.key == ("assistant: " + "x" * 200)[:80]
    [m] = build([ChatMessage("user", [Part("text", text="y" * 200)])])
    assert m.key == "y" * 80


def test_render_message_marks_non_text_parts_and_time() -> None:
    line = render_message(conversation()[4])
    assert line == (
        "user: [1970-01-01 00:01]: Look at this [file: plan.pdf] [image: https://example.com/p.png] [audio]"
    )
    assert render_message(conversation()[2]).startswith("assistant: [1970-01-01 00:02]: [tool call weather(")


def test_no_messages_no_memories() -> None:
    assert build([]) == []


def test_memories_do_not_share_mutable_fields() -> None:
    memories = build(conversation(), size=2, overlap=1)
    memories[0].tags.append("changed")
    memories[0].sources.clear()
    assert memories[1].tags == ["trip", "mode:fast"] and memories[1].sources
