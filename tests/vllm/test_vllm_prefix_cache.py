"""actmem's vLLM backend against a real vLLM server (CPU build): the prefix it warms is
what the server's prefix cache serves, by the server's own count of cached tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memos.client.actmem import ActMemClient, EmbeddedActMem
from services.actmem.app import build_memory
from services.actmem.prefix_memory import PrefixMemory
from services.actmem.settings import ActMemSettings
from shared.errors import NotFound
from tests.vllm.conftest import BLOCK_SIZE, SERVED_NAME

# Startup of the server is paid by the first test.
pytestmark = pytest.mark.timeout(900)

MEMORY = "alice likes tea and lives in paris. bob reads the graph cache every day. " * 4
QUESTION = [{"role": "user", "content": "what does alice drink?"}]


@pytest.fixture
def settings(vllm_server, tmp_path: Path) -> ActMemSettings:  # type: ignore[no-untyped-def]
    return ActMemSettings(
        listen_addr="127.0.0.1:0",
        backend="vllm",
        model_path=str(vllm_server.model_dir),
        vllm_url=vllm_server.url,
        vllm_startup_timeout_s=0,
        vllm_timeout_s=300,
        data_dir=tmp_path / "data",
        dump_root=tmp_path / "dumps",
        log_level="WARNING",
    )


@pytest.fixture
def memory(settings: ActMemSettings) -> Iterator[PrefixMemory]:
    mem = build_memory(settings)
    assert isinstance(mem, PrefixMemory)
    yield mem
    mem.close()


def test_the_server_is_checked_at_start(memory: PrefixMemory) -> None:
    assert memory.backend.served_model == SERVED_NAME
    assert memory.backend.block_size == BLOCK_SIZE  # read from the server's cache_config_info
    assert memory.fingerprint.max_context == 512  # the server's max_model_len


def test_warm_then_generate_hits_the_prefix(memory: PrefixMemory) -> None:
    meta = memory.extract("c", MEMORY)
    assert meta.num_tokens >= 2 * BLOCK_SIZE
    events = list(memory.generate("c", [meta.cache_id], QUESTION, max_tokens=4))
    done = events[-1]
    expected = (meta.num_tokens // BLOCK_SIZE) * BLOCK_SIZE
    assert done.done and done.cached_tokens >= expected > 0, (done.cached_tokens, expected)
    assert done.prompt_tokens > meta.num_tokens and events[0].ttft_ms > 0
    assert memory.hits == 1 and memory.misses == 0


def test_a_cold_prompt_is_not_a_hit(memory: PrefixMemory) -> None:
    """The counter is real: a prompt nobody warmed gets (almost) nothing from the cache."""
    other = "carol remembers the answer tomorrow, in london, with coffee. " * 4
    events = list(memory.generate("c", [], [{"role": "user", "content": other}], max_tokens=2))
    assert events[-1].cached_tokens < BLOCK_SIZE


def test_generation_does_not_mutate_stored_items(memory: PrefixMemory) -> None:
    meta = memory.extract("c", MEMORY)
    before = memory.token_ids("c", meta.cache_id)
    for _ in range(2):
        list(memory.generate("c", [meta.cache_id], QUESTION, max_tokens=4))
    assert memory.token_ids("c", meta.cache_id) == before
    assert memory.info("c", meta.cache_id).num_tokens == meta.num_tokens
    assert [m.cache_id for m in memory.list("c")[0]] == [meta.cache_id]


def test_delete_evicts_routing(memory: PrefixMemory) -> None:
    a = memory.extract("c", MEMORY)
    b = memory.extract("c", "bob likes coffee and reads every day. " * 4)
    list(memory.generate("c", [a.cache_id, b.cache_id], QUESTION, max_tokens=2))
    assert set(memory.routes("c")) == {(a.cache_id,), (b.cache_id,), (a.cache_id, b.cache_id)}
    assert memory.delete("c", [a.cache_id]) == 1
    assert set(memory.routes("c")) == {(b.cache_id,)}
    with pytest.raises(NotFound):
        list(memory.generate("c", [a.cache_id], QUESTION, max_tokens=2))


def test_through_the_grpc_service(settings: ActMemSettings) -> None:
    emb = EmbeddedActMem(settings)
    client = ActMemClient(emb.start())
    try:
        a = client.extract("c", MEMORY)
        out = list(client.generate("c", [a.cache_id], "what does alice drink?", max_tokens=3))
        assert out[-1].done and out[-1].cached_tokens >= (a.num_tokens // BLOCK_SIZE) * BLOCK_SIZE > 0
        merged = client.merge("c", [a.cache_id, a.cache_id], store=True)
        out = list(client.generate("c", [merged.cache_id], "and bob?", max_tokens=2))
        assert out[-1].cached_tokens >= (merged.num_tokens // BLOCK_SIZE) * BLOCK_SIZE
    finally:
        client.close()
        emb.stop()
