"""sdk/python/memos/client/_convert.py: OpenAI-format messages and MemOS filters to protobuf."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from memos.client._convert import filter_to_proto, memory_to_dict, messages_to_proto, struct
from memos.common.v1 import memory_pb2, message_pb2
from services.textmem import convert as server_convert
from shared.errors import InvalidArgument

JAN_1 = 1_704_067_200  # 2024-01-01T00:00:00Z


def reason_of(fn: Any, *args: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as exc:
        fn(*args)
    return exc.value


# messages ---------------------------------------------------------------------------------
def test_a_bare_string_is_one_user_message() -> None:
    [m] = messages_to_proto("hello")
    assert m.role == message_pb2.ROLE_USER
    assert [p.text.text for p in m.content] == ["hello"]


@pytest.mark.parametrize(
    ("role", "value"),
    [
        ("system", message_pb2.ROLE_SYSTEM),
        ("user", message_pb2.ROLE_USER),
        ("assistant", message_pb2.ROLE_ASSISTANT),
        ("tool", message_pb2.ROLE_TOOL),
        ("developer", message_pb2.ROLE_DEVELOPER),
    ],
)
def test_string_content_for_every_role(role: str, value: int) -> None:
    [m] = messages_to_proto([{"role": role, "content": "hi", "tool_call_id": "c1" if role == "tool" else None}])
    assert m.role == value
    assert m.content[0].text.text == "hi"


def test_multi_part_content_keeps_every_part_in_order() -> None:
    [m] = messages_to_proto(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "file", "file": {"file_id": "f1", "filename": "a.pdf", "file_data": "ZGF0YQ=="}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
                    {"type": "image_url", "image_url": "https://x/z.png"},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
                "name": "al",
                "id": "msg-7",
                "chat_time": "2024-01-01T00:00:00Z",
            }
        ]
    )
    assert [p.WhichOneof("part") for p in m.content] == ["text", "file", "image_url", "image_url", "input_audio"]
    assert m.content[0].text.text == "look"
    assert (m.content[1].file.file_id, m.content[1].file.filename, m.content[1].file.file_data) == (
        "f1",
        "a.pdf",
        "ZGF0YQ==",
    )
    assert (m.content[2].image_url.url, m.content[2].image_url.detail) == ("https://x/y.png", "high")
    assert m.content[3].image_url.url == "https://x/z.png"
    assert (m.content[4].input_audio.data, m.content[4].input_audio.format) == ("AAAA", "wav")
    assert (m.name, m.message_id) == ("al", "msg-7")
    assert m.chat_time.seconds == JAN_1


def test_tool_calls_and_tool_results() -> None:
    assistant, tool = messages_to_proto(
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"c": 1}'}},
                    {"id": "call_2", "function": {"name": "time"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    assert len(assistant.content) == 0
    calls = [(c.id, c.type, c.function.name, c.function.arguments) for c in assistant.tool_calls]
    assert calls == [("call_1", "function", "weather", '{"c": 1}'), ("call_2", "function", "time", "")]
    assert tool.role == message_pb2.ROLE_TOOL
    assert tool.tool_call_id == "call_1"
    assert tool.content[0].text.text == "sunny"


@pytest.mark.parametrize(
    ("chat_time", "seconds"),
    [
        (JAN_1, JAN_1),
        (JAN_1 + 0.5, JAN_1),
        ("2024-01-01T00:00:00Z", JAN_1),
        ("2024-01-01T08:00:00+08:00", JAN_1),
        ("2024-01-01", JAN_1),
        (dt.datetime(2024, 1, 1), JAN_1),
        (dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), JAN_1),
    ],
)
def test_chat_time_forms(chat_time: Any, seconds: int) -> None:
    [m] = messages_to_proto([{"role": "user", "content": "x", "chat_time": chat_time}])
    assert m.chat_time.seconds == seconds


@pytest.mark.parametrize(
    ("messages", "reason", "metadata"),
    [
        ([{"role": "robot", "content": "x"}], "UNKNOWN_ROLE", {"message_index": "0"}),
        ([{"content": "x"}], "UNKNOWN_ROLE", {"message_index": "0"}),
        ([{"role": "user", "content": "ok"}, {"role": "User", "content": "x"}], "UNKNOWN_ROLE", {"message_index": "1"}),
        ([{"role": "user"}], "MISSING_CONTENT", {"message_index": "0"}),
        ([{"role": "user", "content": None}], "MISSING_CONTENT", {"message_index": "0"}),
        ([{"role": "user", "content": []}], "MISSING_CONTENT", {"message_index": "0"}),
        ([{"role": "assistant", "tool_calls": []}], "MISSING_CONTENT", {"message_index": "0"}),
        ([{"role": "user", "content": 42}], "NON_STRING_TEXT", {"message_index": "0"}),
        (
            [{"role": "user", "content": [{"type": "text", "text": 42}]}],
            "NON_STRING_TEXT",
            {"message_index": "0", "part_index": "0"},
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}],
            "NON_STRING_TEXT",
            {"message_index": "0", "part_index": "1"},
        ),
        (
            [{"role": "user", "content": [{"type": "video", "video": {}}]}],
            "UNKNOWN_CONTENT_TYPE",
            {"message_index": "0", "part_index": "0"},
        ),
        (
            [{"role": "user", "content": [{"text": "no type"}]}],
            "UNKNOWN_CONTENT_TYPE",
            {"message_index": "0", "part_index": "0"},
        ),
        ([{"role": "user", "content": ["bare string part"]}], "BAD_CONTENT_PART", {"message_index": "0"}),
        ([{"role": "user", "content": [{"type": "file", "file": "x"}]}], "BAD_FILE_PART", {"message_index": "0"}),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "BAD_IMAGE_PART", {}),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": ""}]}], "BAD_IMAGE_PART", {}),
        (["not a dict"], "BAD_MESSAGE", {"message_index": "0"}),
        ({"role": "user", "content": "a dict, not a list"}, "BAD_MESSAGES", {}),
        (42, "BAD_MESSAGES", {}),
        ([{"role": "user", "content": "x", "chat_time": "yesterday"}], "BAD_TIME", {}),
        ([{"role": "user", "content": "x", "chat_time": True}], "BAD_TIME", {}),
        ([{"role": "user", "content": "x", "chat_time": [1]}], "BAD_TIME", {}),
    ],
)
def test_bad_messages_raise_invalid_argument_with_a_reason(
    messages: Any, reason: str, metadata: dict[str, str]
) -> None:
    err = reason_of(messages_to_proto, messages)
    assert err.reason == reason
    assert metadata.items() <= err.metadata.items()


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([{"role": "assistant", "tool_calls": ["call_1"]}], id="tool_call-not-an-object"),
        pytest.param(
            [{"role": "assistant", "tool_calls": [{"id": "c", "function": "f"}]}], id="function-not-an-object"
        ),
        pytest.param([{"role": "assistant", "tool_calls": {"id": "c"}}], id="tool_calls-not-a-list"),
        pytest.param(
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": "AAAA"}]}], id="audio-not-an-object"
        ),
        pytest.param([{"role": "user", "content": "x", "chat_time": float("nan")}], id="nan-chat_time"),
        pytest.param([{"role": "user", "content": "x", "chat_time": float("inf")}], id="inf-chat_time"),
    ],
)
def test_malformed_messages_raise_invalid_argument_not_python_errors(messages: Any) -> None:
    with pytest.raises(InvalidArgument):
        messages_to_proto(messages)


def test_sdk_messages_are_what_the_server_reads() -> None:
    msgs = messages_to_proto(
        [
            {"role": "user", "content": "plan a trip", "chat_time": JAN_1, "message_id": "u1"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "search", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "found"}]},
        ]
    )
    user, assistant, tool = server_convert.messages_from_proto(msgs)
    assert (user.role, user.text(), user.chat_time, user.message_id) == ("user", "plan a trip", JAN_1, "u1")
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [("c1", "search", "{}")]
    assert (tool.role, tool.tool_call_id, tool.text()) == ("tool", "c1", "found")


# filters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [None, {}])
def test_no_filter_is_an_empty_filter(empty: Any) -> None:
    assert filter_to_proto(empty) == memory_pb2.MemoryFilter()


def test_every_known_filter_field() -> None:
    pb = filter_to_proto(
        {
            "memory_type": "UserMemory",
            "memory_types": ["LongTermMemory", "PreferenceMemory"],
            "user_id": "alice",
            "session_id": "s1",
            "tags": ["a", "b"],
            "created_after": "2024-01-01",
            "created_before": JAN_1 + 86400,
            "include_archived": True,
        }
    )
    assert list(pb.memory_types) == [
        memory_pb2.MEMORY_TYPE_USER,
        memory_pb2.MEMORY_TYPE_LONG_TERM,
        memory_pb2.MEMORY_TYPE_PREFERENCE,
    ]
    assert (pb.user_id, pb.session_id, list(pb.tags), pb.include_archived) == ("alice", "s1", ["a", "b"], True)
    assert pb.created_after.seconds == JAN_1
    assert pb.created_before.seconds == JAN_1 + 86400


def test_a_single_tag_string_is_one_tag() -> None:
    assert list(filter_to_proto({"tags": "x"}).tags) == ["x"]


def test_and_list_merges_its_clauses() -> None:
    pb = filter_to_proto({"and": [{"user_id": "u"}, {"tags": ["t"]}, {"memory_type": "UserMemory"}], "session_id": "s"})
    assert (pb.user_id, pb.session_id, list(pb.tags)) == ("u", "s", ["t"])
    assert list(pb.memory_types) == [memory_pb2.MEMORY_TYPE_USER]


def test_created_at_operators() -> None:
    pb = filter_to_proto({"created_at": {"gte": "2024-01-01T00:00:00Z", "lt": "2024-02-01T00:00:00Z"}})
    assert pb.created_after.seconds == JAN_1
    assert pb.created_before.seconds == 1_706_745_600


def test_filters_arrive_at_the_server_as_meant() -> None:
    flt = server_convert.filter_from_proto(
        filter_to_proto(
            {
                "memory_type": ["UserMemory"],
                "user_id": "u",
                "tags": ["t"],
                "created_at": {"gte": JAN_1, "lt": JAN_1 + 1},
            }
        )
    )
    assert flt.memory_types == ("UserMemory",)
    assert (flt.user_id, flt.tags, flt.created_after, flt.created_before) == ("u", ("t",), JAN_1, JAN_1 + 1)
    assert flt.include_archived is False


@pytest.mark.parametrize(
    ("flt", "reason", "field"),
    [
        ({"memory": "x"}, "UNKNOWN_FILTER_FIELD", "memory"),
        ({"and": [{"color": "red"}]}, "UNKNOWN_FILTER_FIELD", "color"),
        ({"and": [{"and": [{"user_id": "u"}]}]}, "UNKNOWN_FILTER_FIELD", "and"),
        ({"created_at": {"eq": "2024-01-01"}}, "UNKNOWN_FILTER_OPERATOR", "created_at"),
        ({"created_at": {"gte": JAN_1, "between": [1, 2]}}, "UNKNOWN_FILTER_OPERATOR", "created_at"),
        ({"created_at": "2024-01-01"}, "BAD_FILTER_VALUE", "created_at"),
        ({"memory_type": "Bogus"}, "UNKNOWN_MEMORY_TYPE", "memory_type"),
        ({"memory_types": ["UserMemory", "userMemory"]}, "UNKNOWN_MEMORY_TYPE", "memory_types"),
        ({"user_id": 7}, "BAD_FILTER_VALUE", "user_id"),
        ({"session_id": None}, "BAD_FILTER_VALUE", "session_id"),
        ({"tags": [1]}, "BAD_FILTER_VALUE", "tags"),
        ({"tags": {"a": 1}}, "BAD_FILTER_VALUE", "tags"),
        ({"created_after": "not a time"}, "BAD_TIME", "filter.created_after"),
        ({"and": {"user_id": "u"}}, "BAD_FILTER", None),
        ({"and": ["user_id"]}, "BAD_FILTER", None),
        ("user_id=u", "BAD_FILTER", None),
        (["user_id"], "BAD_FILTER", None),
    ],
)
def test_bad_filters_raise_invalid_argument(flt: Any, reason: str, field: str | None) -> None:
    err = reason_of(filter_to_proto, flt)
    assert err.reason == reason
    if field is not None:
        assert err.metadata.get("field") == field


@pytest.mark.parametrize(
    "flt",
    [
        pytest.param({"memory_type": 5}, id="memory_type-int"),
        pytest.param({"memory_type": None}, id="memory_type-None"),
        pytest.param({"memory_types": [["UserMemory"]]}, id="memory_types-nested"),
        pytest.param({"created_at": {"gte": float("nan")}}, id="nan-time"),
    ],
)
def test_malformed_filter_values_raise_invalid_argument_not_python_errors(flt: Any) -> None:
    with pytest.raises(InvalidArgument):
        filter_to_proto(flt)


def test_include_archived_must_be_a_boolean() -> None:
    with pytest.raises(InvalidArgument):
        filter_to_proto({"include_archived": "false"})


def in_range(t: float, pb: memory_pb2.MemoryFilter) -> bool:
    """MemoryFilter's documented meaning: created_after inclusive, created_before exclusive."""
    after = pb.created_after.ToNanoseconds() / 1e9 if pb.HasField("created_after") else float("-inf")
    before = pb.created_before.ToNanoseconds() / 1e9 if pb.HasField("created_before") else float("inf")
    return after <= t < before


def test_gte_and_lt_keep_their_meaning() -> None:
    pb = filter_to_proto({"created_at": {"gte": JAN_1, "lt": JAN_1 + 10}})
    assert in_range(JAN_1, pb) and in_range(JAN_1 + 9.5, pb)
    assert not in_range(JAN_1 - 0.001, pb) and not in_range(JAN_1 + 10, pb)


@pytest.mark.parametrize(("op", "at_bound"), [("gt", False), ("lte", True)])
def test_gt_and_lte_keep_their_meaning_at_the_bound(op: str, at_bound: bool) -> None:
    pb = filter_to_proto({"created_at": {op: JAN_1}})
    assert in_range(JAN_1, pb) is at_bound


# other helpers ----------------------------------------------------------------------------
def test_struct_accepts_json_like_and_rejects_the_rest() -> None:
    assert dict(struct({"a": 1, "b": [True, None, "x"]})) == {"a": 1.0, "b": [True, None, "x"]}
    assert len(struct(None)) == 0
    assert reason_of(struct, {"a": object()}).reason == "BAD_INFO"


def test_memory_to_dict_has_the_memos_shape() -> None:
    from services.textmem.models import Memory, Source

    m = Memory(
        id="m1",
        cube_id="c",
        memory="text",
        user_id="u",
        session_id="s",
        memory_type="UserMemory",
        tags=["t"],
        sources=[Source(type="tool_call", role="assistant", content="{}", tool_call_id="c1", tool_name="f")],
        info={"k": "v"},
        created_at=JAN_1,
        updated_at=JAN_1,
        event_time=JAN_1,
    )
    d = memory_to_dict(server_convert.memory_to_proto(m), score=0.1234567)
    assert d["id"] == "m1" and d["memory"] == "text"
    md = d["metadata"]
    assert md["memory_type"] == "UserMemory" and md["status"] == "activated"
    assert md["created_at"] == md["event_time"] == "2024-01-01T00:00:00+00:00"
    assert md["relativity"] == 0.123457
    assert md["info"] == {"k": "v"}
    assert md["sources"] == [
        {
            "type": "tool_call",
            "role": "assistant",
            "message_index": 0,
            "message_id": "",
            "content": "{}",
            "tool_call_id": "c1",
            "tool_name": "f",
        }
    ]
