"""services/textmem/convert.py: protobuf <-> domain objects, page tokens."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from memos.common.v1 import memory_pb2, message_pb2
from memos.textmem.v1 import textmem_pb2
from services.textmem import convert
from services.textmem.models import MEMORY_TYPES, STATUSES, Cube, Memory, Source
from shared.errors import InvalidArgument


def sample_memory(**changes: object) -> Memory:
    m = Memory(
        id="0123abcd",
        cube_id="cube-1",
        memory="user: hi\nassistant: hello",
        user_id="alice",
        session_id="s1",
        memory_type="UserMemory",
        status="resolving",
        key="greeting",
        tags=["b", "a"],
        sources=[
            Source(type="chat", role="user", message_index=0, message_id="m0", chat_time=1_700_000_000.5, content="hi"),
            Source(
                type="file",
                role="user",
                message_index=1,
                message_id="m1",
                file={
                    "file_id": "f1",
                    "filename": "a.pdf",
                    "url": "https://x/a.pdf",
                    "chunk_index": 2,
                    "chunk_total": 3,
                },
            ),
            Source(type="image", role="user", message_index=1, image_url="https://x/y.png"),
            Source(type="audio", role="user", message_index=1),
            Source(type="tool_call", role="assistant", message_index=2, content="{}", tool_call_id="c1", tool_name="f"),
            Source(type="tool_result", role="tool", message_index=3, content="ok", tool_call_id="c1"),
            Source(type="tool_schema", content="{...}", tool_name="f"),
            Source(type="system", role="system", content="be brief"),
        ],
        background="bg",
        confidence=0.5,
        info={"n": 1, "s": "x", "l": [1, "two", None, False], "d": {"e": {}}},
        created_at=1_700_000_000.25,
        updated_at=1_700_000_100.75,
        event_time=1_700_000_000.5,
        version=4,
    )
    return dataclasses.replace(m, **changes)  # type: ignore[arg-type]


def wire(pb: memory_pb2.MemoryItem) -> memory_pb2.MemoryItem:
    return memory_pb2.MemoryItem.FromString(pb.SerializeToString())


def test_memory_round_trips_through_protobuf() -> None:
    m = sample_memory()
    back = convert.memory_from_proto(wire(convert.memory_to_proto(m)))
    # created_at, updated_at and version are the server's: sent out, never read back in.
    assert back == dataclasses.replace(m, created_at=back.created_at, updated_at=back.updated_at, version=1)


def test_memory_to_proto_sends_server_fields() -> None:
    pb = convert.memory_to_proto(sample_memory())
    md = pb.metadata
    assert md.memory_type == memory_pb2.MEMORY_TYPE_USER
    assert md.status == memory_pb2.MEMORY_STATUS_RESOLVING
    # Float seconds carry about a quarter microsecond of precision at today's epoch.
    assert md.created_at.ToNanoseconds() == pytest.approx(1_700_000_000_250_000_000, abs=1000)
    assert md.updated_at.ToNanoseconds() == pytest.approx(1_700_000_100_750_000_000, abs=1000)
    assert md.event_time.ToNanoseconds() == pytest.approx(1_700_000_000_500_000_000, abs=1000)
    assert md.version == 4
    assert [s.type for s in md.sources] == [
        memory_pb2.SOURCE_TYPE_CHAT,
        memory_pb2.SOURCE_TYPE_FILE,
        memory_pb2.SOURCE_TYPE_IMAGE,
        memory_pb2.SOURCE_TYPE_AUDIO,
        memory_pb2.SOURCE_TYPE_TOOL_CALL,
        memory_pb2.SOURCE_TYPE_TOOL_RESULT,
        memory_pb2.SOURCE_TYPE_TOOL_SCHEMA,
        memory_pb2.SOURCE_TYPE_SYSTEM,
    ]


@pytest.mark.parametrize("name", MEMORY_TYPES)
def test_every_memory_type_round_trips(name: str) -> None:
    assert convert.memory_type_name(convert.memory_type_value(name)) == name
    assert convert.memory_from_proto(convert.memory_to_proto(sample_memory(memory_type=name))).memory_type == name


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_round_trips(status: str) -> None:
    assert convert.memory_from_proto(convert.memory_to_proto(sample_memory(status=status))).status == status


def test_unset_fields_get_defaults() -> None:
    m = convert.memory_from_proto(textmem_pb2.MemoryCandidate(memory="just text"))
    assert (m.id, m.memory, m.memory_type, m.status, m.confidence) == (
        "",
        "just text",
        "LongTermMemory",
        "activated",
        0.0,  # kept as sent: write_memories, not the converter, defaults a new candidate to 1.0
    )
    assert m.info == {} and m.sources == [] and m.tags == [] and m.event_time is None


def test_memory_without_event_time_or_info() -> None:
    pb = convert.memory_to_proto(sample_memory(event_time=None, info={}))
    assert not pb.metadata.HasField("event_time")
    back = convert.memory_from_proto(pb)
    assert back.event_time is None and back.info == {}


def test_unknown_memory_type_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as exc:
        convert.memory_from_proto(memory_pb2.MemoryItem(metadata=memory_pb2.MemoryMetadata(memory_type=99)))
    assert exc.value.reason == "UNKNOWN_MEMORY_TYPE"


def test_unknown_source_type_reads_as_chat() -> None:
    pb = convert.source_to_proto(Source(type="telepathy", content="x"))
    assert pb.type == memory_pb2.SOURCE_TYPE_UNSPECIFIED
    assert convert.source_from_proto(pb).type == "chat"


def test_unknown_file_keys_are_dropped() -> None:
    pb = convert.source_to_proto(Source(type="file", file={"file_id": "f", "secret": "x"}))
    assert convert.source_from_proto(pb).file == {"file_id": "f"}


def test_zero_confidence_round_trips() -> None:
    back = convert.memory_from_proto(convert.memory_to_proto(sample_memory(confidence=0.0)))
    assert back.confidence == 0.0


# messages -----------------------------------------------------------------------------------
def chat(role: int, text: str = "x", **fields: object) -> message_pb2.ChatMessage:
    content = [message_pb2.ContentPart(text=message_pb2.TextPart(text=text))] if text else []
    return message_pb2.ChatMessage(role=role, content=content, **fields)  # type: ignore[arg-type]


def test_messages_from_proto() -> None:
    msgs = [
        chat(message_pb2.ROLE_SYSTEM, "rules"),
        chat(message_pb2.ROLE_DEVELOPER, "dev"),
        chat(message_pb2.ROLE_USER, "hi", message_id="u1", name="al"),
        message_pb2.ChatMessage(
            role=message_pb2.ROLE_ASSISTANT,
            tool_calls=[message_pb2.ToolCall(id="c1", function=message_pb2.FunctionCall(name="f", arguments="{}"))],
        ),
        chat(message_pb2.ROLE_TOOL, "result", tool_call_id="c1"),
        message_pb2.ChatMessage(
            role=message_pb2.ROLE_USER,
            content=[
                message_pb2.ContentPart(file=message_pb2.FilePart(file_id="f1", filename="a.txt", file_data="ZA==")),
                message_pb2.ContentPart(image_url=message_pb2.ImageUrlPart(url="https://x/y.png")),
                message_pb2.ContentPart(input_audio=message_pb2.InputAudioPart(data="AA", format="wav")),
            ],
        ),
    ]
    msgs[2].chat_time.FromNanoseconds(1_700_000_000_500_000_000)
    out = convert.messages_from_proto(msgs)
    assert [m.role for m in out] == ["system", "developer", "user", "assistant", "tool", "user"]
    assert (out[2].text(), out[2].message_id, out[2].name, out[2].chat_time) == ("hi", "u1", "al", 1_700_000_000.5)
    assert out[0].chat_time is None
    assert [(c.id, c.name, c.arguments) for c in out[3].tool_calls] == [("c1", "f", "{}")]
    assert out[4].tool_call_id == "c1"
    assert [p.kind for p in out[5].parts] == ["file", "image_url", "input_audio"]
    assert (out[5].parts[0].file_id, out[5].parts[0].filename, out[5].parts[0].file_data) == ("f1", "a.txt", "ZA==")
    assert out[5].parts[1].url == "https://x/y.png"


@pytest.mark.parametrize(
    ("messages", "reason", "metadata"),
    [
        ([chat(message_pb2.ROLE_UNSPECIFIED)], "INVALID_ROLE", {"message_index": "0"}),
        ([chat(message_pb2.ROLE_USER), chat(77)], "INVALID_ROLE", {"message_index": "1"}),
        (
            [message_pb2.ChatMessage(role=message_pb2.ROLE_USER, content=[message_pb2.ContentPart()])],
            "EMPTY_CONTENT_PART",
            {"message_index": "0", "part_index": "0"},
        ),
        ([chat(message_pb2.ROLE_USER, "")], "EMPTY_MESSAGE", {"message_index": "0"}),
        ([chat(message_pb2.ROLE_TOOL, "r")], "MISSING_TOOL_CALL_ID", {"message_index": "0"}),
    ],
)
def test_bad_messages_are_invalid(messages: list, reason: str, metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        convert.messages_from_proto(messages)
    assert exc.value.reason == reason
    assert metadata.items() <= exc.value.metadata.items()


# filters ----------------------------------------------------------------------------------
def test_filter_from_proto() -> None:
    pb = memory_pb2.MemoryFilter(
        memory_types=[memory_pb2.MEMORY_TYPE_USER, memory_pb2.MEMORY_TYPE_PREFERENCE],
        user_id="u",
        session_id="s",
        tags=["a", "b"],
        include_archived=True,
    )
    pb.created_after.FromNanoseconds(1_000_500_000_000)
    flt = convert.filter_from_proto(pb)
    assert flt.memory_types == ("UserMemory", "PreferenceMemory")
    assert (flt.user_id, flt.session_id, flt.tags, flt.include_archived) == ("u", "s", ("a", "b"), True)
    assert flt.created_after == 1000.5 and flt.created_before is None


def test_empty_filter_from_proto_is_the_default_filter() -> None:
    from services.textmem.models import MemoryFilter

    assert convert.filter_from_proto(memory_pb2.MemoryFilter()) == MemoryFilter()


def test_filter_with_unknown_memory_type_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as exc:
        convert.filter_from_proto(memory_pb2.MemoryFilter(memory_types=[memory_pb2.MEMORY_TYPE_UNSPECIFIED]))
    assert exc.value.reason == "UNKNOWN_MEMORY_TYPE"


# page tokens ------------------------------------------------------------------------------
@pytest.mark.parametrize("cursor", [1, 2, 99, 2**40])
def test_page_tokens_round_trip(cursor: int) -> None:
    token = convert.encode_page_token(cursor)
    assert token and token.isascii()
    assert convert.decode_page_token(token) == cursor


def test_no_cursor_is_no_token() -> None:
    assert convert.encode_page_token(0) == ""
    assert convert.decode_page_token("") == 0


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!!",
        "a",
        "ü",
        b64(b"not json"),
        b64(b"\xff\xfe\x00"),
        b64(b"[]"),
        b64(b"[1, 2]"),
        b64(b"null"),
        b64(b"5"),
        b64(b'"after"'),
        b64(b"{}"),
        b64(b'{"before": 5}'),
        b64(b'{"after": -1}'),
        b64(b'{"after": "5"}'),
        b64(b'{"after": 1.5}'),
        b64(b'{"after": null}'),
        b64(b'{"after": [1]}'),
    ],
)
def test_garbage_page_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        convert.decode_page_token(token)
    assert exc.value.reason == "BAD_PAGE_TOKEN"


# cubes ------------------------------------------------------------------------------------
def test_cube_to_proto() -> None:
    pb = convert.cube_to_proto(Cube("c", "alice", "Team", {"carol": "writer", "bob": "reader"}, 1_700_000_000.0))
    assert (pb.cube_id, pb.owner_id, pb.name) == ("c", "alice", "Team")
    assert [(m.user_id, m.role) for m in pb.members] == [
        ("bob", textmem_pb2.CUBE_ROLE_READER),
        ("carol", textmem_pb2.CUBE_ROLE_WRITER),
    ]
    assert pb.created_at.seconds == 1_700_000_000


def test_search_hits_are_converted_once_per_memory_object(monkeypatch) -> None:
    hits = convert.SearchHitProtos(capacity=2)
    a = Memory(id="a", cube_id="c", memory="lake trip", sources=[Source(type="chat", role="user", content="hi")])
    built: list[str] = []
    real = convert.memory_to_proto
    monkeypatch.setattr(convert, "memory_to_proto", lambda m: built.append(m.id) or real(m))
    first = hits.scored(a, 0.5)
    again = hits.scored(a, 0.25)
    assert built == ["a"]
    assert first.item == again.item == real(a)
    assert (first.score, again.score) == (0.5, 0.25)
    # Another object is converted on its own, even with the same id and text (it may differ).
    twin = Memory(id="a", cube_id="c", memory="lake trip", tags=["new"])
    assert list(hits.scored(twin, 0.5).item.metadata.tags) == ["new"]
    # Past the capacity the least recently used object is dropped, and converted again if it returns.
    hits.scored(Memory(id="b", cube_id="c", memory="tea"), 0.1)
    assert len(hits) == 2
    hits.scored(a, 0.5)
    assert built == ["a", "a", "b", "a"]
