"""ingest over gRPC, alone and behind the gateway, on the session's real textmem."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from memos.api.routers import server_router
from memos.client import AsyncMemosClient
from memos.client._convert import messages_to_proto
from memos.common.v1 import memory_pb2, message_pb2
from memos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from memos.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from shared.errors import Unavailable
from shared.grpc_errors import from_status_proto
from tests.ingest.conftest import IMAGE_DESCRIPTION, IngestSuite
from tests.ingest.helpers import make_docx, make_png
from tests.integration.test_gateway_paths import CONVERSATION

REPORT = (
    b"# PM1 workshop PMT boot-pressure fault\n\n## Symptom\n\nThe edge pressures on both sides failed to reach "
    b"the 2.5-bar interlock, so the drive could not run.\n\n## Root cause\n\nPoor contact at the negative "
    b"terminal of the proportional valve's DC 24V supply in the PLC cabinet (short-jumpered terminal block).\n"
)


@pytest.fixture(scope="module", autouse=True)
def served(ingest_suite: IngestSuite) -> None:
    ingest_suite.files.files.update(
        {
            "/svc/report.md": ("text/markdown", REPORT),
            "/svc/photo.png": ("image/png", make_png()),
        }
    )


def bucket(added: gateway_pb2.AddMemoriesResponse, kind: int) -> list[gateway_pb2.AddedMemory]:
    return [m for m in added.memories if m.memory_type == kind]


async def test_fast_add_through_ingest_stores_what_textmem_alone_stores(
    iclient: AsyncMemosClient, client: AsyncMemosClient, unique: str
) -> None:
    user = f"same-{unique}"
    via_ingest = await iclient.add_memories(user, [f"a-{unique}"], CONVERSATION, session_id="s1", custom_tags=["x"])
    direct = await client.add_memories(user, [f"b-{unique}"], CONVERSATION, session_id="s1", custom_tags=["x"])
    assert [m.memory for m in via_ingest.memories] == [m.memory for m in direct.memories]
    assert via_ingest.effective_mode == gateway_pb2.EXTRACT_MODE_FAST and not via_ingest.part_errors
    a = (await iclient.list_memories(user, f"a-{unique}")).memories
    b = (await client.list_memories(user, f"b-{unique}")).memories

    def shape(items):  # type: ignore[no-untyped-def]
        return sorted(
            (
                m.memory,
                m.metadata.key,
                tuple(m.metadata.tags),
                [(s.role, s.content, s.message_index) for s in m.metadata.sources],
            )
            for m in items
        )

    assert shape(a) == shape(b)


async def test_multi_source_add_stores_chunks_tools_and_reports_every_bad_part(
    iclient: AsyncMemosClient, ingest_suite: IngestSuite, unique: str
) -> None:
    base = ingest_suite.files.base
    user, cube, other = f"multi-{unique}", f"multi-{unique}", f"multi2-{unique}"
    messages = [
        {
            "role": "system",
            "content": 'Assist.\n<tool_schema>[{"name": "file_reader", "description": "Reads a file"}]</tool_schema>',
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Please read this file."},
                {
                    "type": "file",
                    "file": {"file_id": "file_123", "filename": "report.md", "file_data": f"@{base}/svc/report.md"},
                },
                {
                    "type": "file",
                    "file": {"filename": "meta.md", "file_data": "@http://169.254.169.254/latest/meta-data/"},
                },
                {"type": "image_url", "image_url": {"url": f"{base}/svc/photo.png"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "file_reader", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
        {"role": "tool", "tool_call_id": "nobody", "content": "orphan"},
    ]
    added = await iclient.add_memories(user, [cube, other], messages)
    assert {m.cube_id for m in added.memories} == {cube, other}
    errors = [(e.message_index, e.part_index, from_status_proto(e.status).reason) for e in added.part_errors]
    assert errors == [(1, 2, "FETCH_ADDRESS_REFUSED"), (4, -1, "TOOL_RESULT_WITHOUT_CALL")]
    assert all(e.cube_id == "" for e in added.part_errors)  # parsed once, for every cube
    assert "2 part(s) not stored" in added.message
    mine = [m for m in added.memories if m.cube_id == cube]
    assert len(bucket(added, memory_pb2.MEMORY_TYPE_TOOL_SCHEMA)) == 2  # one per cube
    assert len([m for m in mine if m.memory_type == memory_pb2.MEMORY_TYPE_TOOL_TRAJECTORY]) == 1
    assert any(m.memory == IMAGE_DESCRIPTION for m in mine)

    found = await iclient.search_memories(user, [cube], "PLC cabinet DC 24V terminal block", top_k=3)
    top = found.text_mem[0].memories[0].item
    assert "DC 24V" in top.memory
    (src,) = top.metadata.sources
    assert src.type == memory_pb2.SOURCE_TYPE_FILE
    assert (src.file.file_id, src.file.filename, src.file.url) == ("file_123", "report.md", f"{base}/svc/report.md")
    assert src.file.chunk_total >= 1 and src.message_index == 1


async def test_unknown_part_types_from_newer_clients_are_reported_not_fatal(
    ingest_suite: IngestSuite, unique: str
) -> None:
    msg = messages_to_proto([{"role": "user", "content": "keep this"}])[0]
    # A part of a type this server does not know arrives as an unknown field of ContentPart.
    unknown = message_pb2.ContentPart()
    unknown.MergeFromString(b"\x4a\x03abc")  # field 9, length-delimited
    msg.content.append(unknown)
    async with grpc.aio.insecure_channel(ingest_suite.address) as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        resp = await stub.AddMemories(
            gateway_pb2.AddMemoriesRequest(user_id=f"u-{unique}", writable_cube_ids=[f"unk-{unique}"], messages=[msg])
        )
    assert [(e.message_index, e.part_index) for e in resp.part_errors] == [(0, 1)]
    assert from_status_proto(resp.part_errors[0].status).reason == "UNKNOWN_CONTENT_PART"
    assert "keep this" in resp.memories[0].memory


async def test_fine_mode_through_the_gateway(iclient: AsyncMemosClient, ingest_suite: IngestSuite, unique: str) -> None:
    user, cube = f"fine-{unique}", f"fine-{unique}"
    msgs = [
        {"role": "user", "content": "I prefer aisle seats on long flights."},
        {"role": "assistant", "content": "Noted."},
    ]
    added = await iclient.add_memories(user, [cube], msgs, mode="fine")
    assert added.effective_mode == gateway_pb2.EXTRACT_MODE_FINE
    kinds = sorted(m.memory_type for m in added.memories)
    assert kinds == [memory_pb2.MEMORY_TYPE_USER, memory_pb2.MEMORY_TYPE_PREFERENCE]
    prefs = await iclient.search_memories(user, [cube], "seat preference", include_preference=True)
    assert "aisle seats" in prefs.pref_string

    ingest_suite.llm.chat_replies = ["not json", "still not json"]
    fell_back = await iclient.add_memories(user, [cube], msgs, mode="fine")
    assert fell_back.effective_mode == gateway_pb2.EXTRACT_MODE_FAST
    assert any("fell back to fast mode" in n and "LLM_OUTPUT_INVALID" in n for n in fell_back.notices)
    assert "fell back to fast mode" in fell_back.message


async def test_a_failing_cube_rolls_back_the_earlier_ones(
    iclient: AsyncMemosClient, ingest_suite: IngestSuite, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = ingest_suite.base.memory
    real = memory.write_memories

    def faulty(cube_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cube_id.startswith("down-"):
            raise Unavailable("injected outage", reason="INJECTED_OUTAGE")
        return real(cube_id, *args, **kwargs)

    monkeypatch.setattr(memory, "write_memories", faulty)
    user, ok, down = f"rb-{unique}", f"ok-{unique}", f"down-{unique}"
    with pytest.raises(Unavailable):
        await iclient.add_memories(user, [ok, down], CONVERSATION[:2])
    assert not (await iclient.list_memories(user, ok)).memories


async def test_ingest_service_directly_parse_ingest_and_upload(ingest_suite: IngestSuite, unique: str) -> None:
    docx = make_docx([("h1", "Maintenance log"), ("p", "Replaced the terminal blocks in batches.")])
    user = f"up-{unique}"
    async with grpc.aio.insecure_channel(ingest_suite.ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)

        async def upload(data: bytes, size: int):  # type: ignore[no-untyped-def]
            yield ingest_pb2.UploadFileRequest(
                header=ingest_pb2.UploadFileHeader(user_id=user, filename="log.docx", size_bytes=size)
            )
            for i in range(0, len(data), 1000):
                yield ingest_pb2.UploadFileRequest(chunk=data[i : i + 1000])

        up = await stub.UploadFile(upload(docx, len(docx)))
        assert up.size_bytes == len(docx) and len(up.sha256) == 64
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:
            await stub.UploadFile(upload(docx, len(docx) + 1))
        assert mismatch.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        part = message_pb2.ContentPart(file=message_pb2.FilePart(file_id=up.file_id))
        msg = message_pb2.ChatMessage(role=message_pb2.ROLE_USER, content=[part])
        parsed = await stub.ParseMessages(ingest_pb2.ParseMessagesRequest(user_id=user, messages=[msg]))
        chunk = next(c for c in parsed.candidates if "file" in c.metadata.tags)
        assert "terminal blocks" in chunk.memory and chunk.metadata.sources[0].file.filename == "log.docx"

        stranger = await stub.ParseMessages(ingest_pb2.ParseMessagesRequest(user_id="someone-else", messages=[msg]))
        assert from_status_proto(stranger.part_errors[0].status).reason == "FILE_NOT_YOURS"

        stored = await stub.IngestMessages(
            ingest_pb2.IngestMessagesRequest(
                request_id=f"r-{unique}", user_id=user, cube_id=f"up-{unique}", messages=[msg]
            )
        )
        assert stored.memories and all(m.id for m in stored.memories)
        assert {m.metadata.cube_id for m in stored.memories} == {f"up-{unique}"}


async def test_the_facade_lists_part_errors_in_its_data(ingest_suite: IngestSuite, unique: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from memos.api.product_models import APIADDRequest
    from memos.client import MemosClient

    monkeypatch.setattr(server_router, "_client", MemosClient(ingest_suite.address))
    try:
        # The facade blocks; the servers run on this test's event loop.
        rsp = await asyncio.to_thread(
            server_router.add_memories,
            APIADDRequest(
                user_id=f"f-{unique}",
                writable_cube_ids=[f"f-{unique}"],
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "file", "file": {"file_data": "data:;base64,%%"}},
                        ],
                    }
                ],
                async_mode="sync",
            ),
        )
    finally:
        server_router._client.close()
    errors = [d for d in rsp.data if "error" in d]
    assert errors == [
        {
            "cube_id": "",
            "message_index": 0,
            "part_index": 1,
            "error": {"code": 3, "message": errors[0]["error"]["message"], "reason": "BAD_BASE64"},
        }
    ]
    assert any(d.get("memory", "").startswith("user: hi") for d in rsp.data)
