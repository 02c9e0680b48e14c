"""The blocking client, and textmem running on an OpenAI-compatible embedder end to end."""

from __future__ import annotations

import asyncio

import pytest

from memos.client import MemosClient, PermissionDenied
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.textmem.app import build_server as build_textmem
from services.textmem.settings import TextMemSettings
from tests.fakes.openai_server import FakeOpenAI


def _sync_session(address: str, unique: str) -> None:
    with MemosClient(address) as c:
        added = c.add_memories(
            f"sync-{unique}", [f"sync-cube-{unique}"], [{"role": "user", "content": "I keep bees in Oslo"}]
        )
        assert len(added.memories) == 1
        hits = c.search_memories(f"sync-{unique}", [f"sync-cube-{unique}"], "bees Oslo")
        assert hits.text_mem[0].memories[0].item.memory.endswith("I keep bees in Oslo")
        with pytest.raises(PermissionDenied):
            c.search_memories(f"other-{unique}", [f"sync-cube-{unique}"], "bees")


async def test_sync_client(suite, unique) -> None:  # type: ignore[no-untyped-def]
    # The suite runs on this event loop; the blocking client must run elsewhere.
    await asyncio.to_thread(_sync_session, suite.address, unique)


async def test_suite_on_an_openai_compatible_embedder(tmp_path, unique) -> None:  # type: ignore[no-untyped-def]
    fake = FakeOpenAI(dim=32)
    with fake.serve() as url:
        tm = build_textmem(
            TextMemSettings(
                listen_addr="127.0.0.1:0",
                data_dir=tmp_path,
                embedder="openai",
                embedding_url=url,
                embedding_model="fake-embed",
                embedding_dim=32,
                log_level="WARNING",
            )
        )
        await tm.start()
        gw = build_gateway(GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=tm.address))
        await gw.start()
        try:
            await asyncio.to_thread(_sync_session, gw.address, unique)
            assert any(r["body"]["model"] == "fake-embed" for r in fake.requests)
        finally:
            await gw.stop(1)
            await tm.stop(1)
