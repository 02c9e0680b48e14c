"""Preferences without an LLM, end to end: a fast add through the gateway and an ingest service that has
no LLM configured, then SearchMemories with and without include_preference, on the session's textmem."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memos.client import AsyncMemosClient
from memos.common.v1 import memory_pb2
from memos.gateway.v1 import gateway_pb2
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.app import build_server as build_ingest
from services.ingest.settings import IngestSettings
from tests.conftest import Suite

TRIP = [
    {"role": "user", "content": "下个月我要去上海参加一个行业会议，会场在国家会展中心。"},
    {"role": "assistant", "content": "好的，需要我帮你看看住宿吗？"},
    {"role": "user", "content": "我更喜欢靠近会场的酒店，最好走路就能到。"},
    {"role": "assistant", "content": "明白了。I prefer to suggest chain hotels, by the way."},
    {"role": "user", "content": "Also, I'm allergic to feather pillows."},
]


@pytest.fixture(scope="module")
async def offline(suite: Suite) -> AsyncIterator[str]:
    """A gateway whose adds go through an ingest service without an LLM; yields its address."""
    ingest = build_ingest(
        IngestSettings(listen_addr="127.0.0.1:0", textmem_addr=suite.textmem.address, log_level="WARNING")
    )
    await ingest.start()
    gateway = build_gateway(
        GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=suite.textmem.address, ingest_addr=ingest.address)
    )
    await gateway.start()
    yield gateway.address
    await gateway.stop(1.0)
    await ingest.stop(1.0)


@pytest.fixture
async def oclient(offline: str) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(offline)
    yield c
    await c.close()


async def test_a_fast_add_without_an_llm_gives_pref_mem_and_pref_string(oclient: AsyncMemosClient, unique: str) -> None:
    user, cube, other = f"pref-{unique}", f"trip-{unique}", f"trip2-{unique}"
    added = await oclient.add_memories(user, [cube, other], TRIP, session_id="s1")
    assert added.effective_mode == gateway_pb2.EXTRACT_MODE_FAST and not added.part_errors
    prefs = sorted((m.cube_id, m.memory) for m in added.memories if m.memory_type == memory_pb2.MEMORY_TYPE_PREFERENCE)
    assert prefs == sorted(
        (c, p) for c in (cube, other) for p in ("更喜欢靠近会场的酒店", "is allergic to feather pillows")
    )  # the assistant's "I prefer …" is not the user's preference

    found = await oclient.search_memories(user, [cube], "酒店 住宿 偏好", include_preference=True, pref_top_k=1)
    assert [b.cube_id for b in found.pref_mem] == [cube]  # scoped to the cube asked for
    (top,) = found.pref_mem[0].memories  # pref_top_k honoured
    item = top.item
    assert item.memory == "更喜欢靠近会场的酒店"
    assert item.metadata.memory_type == memory_pb2.MEMORY_TYPE_PREFERENCE
    assert {"preference:explicit", "preference:like", "extractor:rules"} <= set(item.metadata.tags)
    assert item.metadata.info["preference_type"] == "explicit"
    assert item.metadata.user_id == user and item.metadata.session_id == "s1"
    (src,) = item.metadata.sources
    assert (src.role, src.message_index, src.content) == ("user", 2, "我更喜欢靠近会场的酒店")
    assert found.pref_string.startswith("User preferences:") and "更喜欢靠近会场的酒店" in found.pref_string
    assert all(m.item.metadata.memory_type != memory_pb2.MEMORY_TYPE_PREFERENCE for m in found.text_mem[0].memories)

    both = await oclient.search_memories(user, [cube], "hotel pillows allergy", include_preference=True, pref_top_k=5)
    assert sorted(m.item.memory for m in both.pref_mem[0].memories) == [
        "is allergic to feather pillows",
        "更喜欢靠近会场的酒店",
    ]
    assert "is allergic to feather pillows" in both.pref_string

    without = await oclient.search_memories(user, [cube], "酒店 住宿 偏好", include_preference=False, top_k=20)
    assert not without.pref_mem and not without.pref_string
    assert without.text_mem[0].memories  # the conversation itself is there
    assert all(
        m.item.metadata.memory_type != memory_pb2.MEMORY_TYPE_PREFERENCE
        and "extractor:rules" not in m.item.metadata.tags
        for b in without.text_mem
        for m in b.memories
    )
    assert all(m.item.metadata.memory_type != memory_pb2.MEMORY_TYPE_PREFERENCE for m in without.ranked)
