"""The vLLM backend against loopback fakes of vLLM's HTTP API (tests/fakes/vllm_server.py):
warm, route, verify the prefix hit from the server's cached-token count, re-warm after
a miss, delete forgets routes. The same checks against a real vLLM are in tests/vllm."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from memos.client.actmem import ActMemClient, EmbeddedActMem
from services.actmem.app import build_memory
from services.actmem.backends.vllm_backend import VllmBackend
from services.actmem.prefix_memory import PrefixMemory
from services.actmem.settings import ActMemSettings
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.fakes.vllm_server import FakeVllm

MEMORY = "alice likes tea and lives in paris. bob reads the graph cache every day. " * 3
QUESTION = [{"role": "user", "content": "what does alice drink?"}]


@pytest.fixture(scope="module")
def tokenize(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    return lambda text: list(tok(text, add_special_tokens=False)["input_ids"])


class Rig:
    def __init__(self, tiny_model_dir: Path, tmp_path: Path, fakes: list[FakeVllm], urls: list[str]) -> None:
        self.fakes = fakes
        self.settings = ActMemSettings(
            listen_addr="127.0.0.1:0",
            backend="vllm",
            model_path=str(tiny_model_dir),
            vllm_url=",".join(urls),
            vllm_startup_timeout_s=0,
            data_dir=tmp_path / "data",
            dump_root=tmp_path / "dumps",
            log_level="WARNING",
        )
        memory = build_memory(self.settings)
        assert isinstance(memory, PrefixMemory)
        self.memory: PrefixMemory = memory


@pytest.fixture
def make_rig(tiny_model_dir: Path, tmp_path: Path, tokenize) -> Iterator:  # type: ignore[no-untyped-def, type-arg]
    with ExitStack() as stack:

        def make(servers: int = 1, **fake_kw: object) -> Rig:
            fakes = [FakeVllm(tokenize, **fake_kw) for _ in range(servers)]  # type: ignore[arg-type]
            urls = [stack.enter_context(f.serve()) for f in fakes]
            rig = Rig(tiny_model_dir, tmp_path, fakes, urls)
            stack.callback(rig.memory.close)
            return rig

        yield make


def _run(memory: PrefixMemory, cube: str, ids: list[str]):  # type: ignore[no-untyped-def]
    events = list(memory.generate(cube, ids, QUESTION, max_tokens=4))
    return events, events[-1]


def test_warm_then_generate_hits_the_prefix(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    mem, fake = rig.memory, rig.fakes[0]
    meta = mem.extract("c", MEMORY)
    ids = mem.token_ids("c", meta.cache_id)
    assert meta.num_tokens == len(ids) > fake.block_size and meta.size_bytes == 0
    warm = fake.completions()[-1]
    assert warm["prompt"] == ids and warm["max_tokens"] == 1  # the warm-up is exactly the prefix
    events, done = _run(mem, "c", [meta.cache_id])
    sent = fake.completions()[-1]
    assert sent["prompt"][: len(ids)] == ids and sent["stream"]  # routed: prefix first, as token ids
    assert done.done and done.cached_tokens == (len(ids) // fake.block_size) * fake.block_size > 0
    assert done.prompt_tokens == len(sent["prompt"]) and events[0].ttft_ms > 0
    assert "".join(e.delta for e in events) and mem.hits == 1 and mem.misses == 0


def test_generation_never_changes_the_stored_cache(make_rig) -> None:  # type: ignore[no-untyped-def]
    mem = make_rig().memory
    meta = mem.extract("c", MEMORY)
    before = mem.token_ids("c", meta.cache_id)
    for _ in range(3):
        _run(mem, "c", [meta.cache_id])
    assert mem.token_ids("c", meta.cache_id) == before
    assert mem.info("c", meta.cache_id).num_tokens == meta.num_tokens and len(mem.list("c")[0]) == 1


def test_an_evicted_prefix_is_a_reported_miss_then_rewarmed(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    mem, fake = rig.memory, rig.fakes[0]
    meta = mem.extract("c", MEMORY)
    fake.evict_all()  # the server restarted, or needed the blocks
    _, done = _run(mem, "c", [meta.cache_id])
    assert done.cached_tokens == 0 and mem.misses == 1
    assert fake.completions()[-1]["max_tokens"] == 1  # re-warmed right after
    _, done = _run(mem, "c", [meta.cache_id])
    assert done.cached_tokens > 0 and mem.hits == 1


def test_merge_is_the_concatenated_prefix_and_combinations_are_warmed_once(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    mem, fake = rig.memory, rig.fakes[0]
    a, b = mem.extract("c", MEMORY), mem.extract("c", "carol remembers the answer tomorrow. " * 4)
    merged, kv = mem.merge("c", [a.cache_id, b.cache_id], store=True)
    assert kv is None and merged.merged_from == [a.cache_id, b.cache_id]
    both = mem.token_ids("c", a.cache_id) + mem.token_ids("c", b.cache_id)
    assert mem.token_ids("c", merged.cache_id) == both and fake.completions()[-1]["prompt"] == both
    warms = len(fake.completions())
    _, done = _run(mem, "c", [b.cache_id, a.cache_id])  # never warmed in this order: warmed now
    assert len(fake.completions()) == warms + 2 and done.cached_tokens > 0
    _run(mem, "c", [b.cache_id, a.cache_id])
    assert len(fake.completions()) == warms + 3  # routed now, no second warm-up
    assert (b.cache_id, a.cache_id) in mem.routes("c")


def test_delete_evicts_routing(make_rig) -> None:  # type: ignore[no-untyped-def]
    mem = make_rig().memory
    a, b = mem.extract("c", MEMORY), mem.extract("c", "bob likes coffee. " * 5)
    _run(mem, "c", [a.cache_id, b.cache_id])
    assert set(mem.routes("c")) == {(a.cache_id,), (b.cache_id,), (a.cache_id, b.cache_id)}
    assert mem.delete("c", [a.cache_id]) == 1
    assert set(mem.routes("c")) == {(b.cache_id,)}
    with pytest.raises(NotFound):
        _run(mem, "c", [a.cache_id])
    with pytest.raises(NotFound):
        mem.delete("c", [b.cache_id, a.cache_id])  # unknown id: nothing deleted
    assert set(mem.routes("c")) == {(b.cache_id,)}
    assert mem.rewarm("c") == 1
    assert mem.delete_all("c") == 1 and mem.routes("c") == {}


def test_caches_are_spread_over_replicas_and_generation_follows_them(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig(servers=2)
    mem = rig.memory
    metas = [mem.extract("c", f"memory number {i}. " * 8) for i in range(4)]
    servers = {m.cache_id: mem.routes("c")[(m.cache_id,)] for m in metas}
    assert sorted(servers.values()) == [0, 0, 1, 1]
    for m in metas:
        before = [len(f.completions()) for f in rig.fakes]
        _, done = _run(mem, "c", [m.cache_id])
        after = [len(f.completions()) for f in rig.fakes]
        assert [y - x for x, y in zip(before, after, strict=True)] == [int(i == servers[m.cache_id]) for i in range(2)]
        assert done.cached_tokens > 0


def test_dump_and_load_keep_token_ids_and_rewarm(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    mem, fake = rig.memory, rig.fakes[0]
    a = mem.extract("c", MEMORY, metadata={"k": "v"})
    assert mem.dump("c", "d") == 1
    fake.evict_all()
    (loaded,) = mem.load("c2", "d")
    assert loaded.cache_id == a.cache_id and loaded.metadata == {"k": "v"}
    assert mem.token_ids("c2", a.cache_id) == mem.token_ids("c", a.cache_id)
    _, done = _run(mem, "c2", [a.cache_id])
    assert done.cached_tokens > 0 and mem.misses == 0  # load warmed it
    (mem.dump_root / "d" / f"{a.cache_id}.json").write_text('{"format": "memos-actmem-cache"}')
    with pytest.raises(FailedPrecondition):
        mem.load("c3", "d")
    assert mem.list("c3")[0] == []


def test_tensor_operations_are_refused(make_rig) -> None:  # type: ignore[no-untyped-def]
    mem = make_rig().memory
    a = mem.extract("c", MEMORY)
    for call in (lambda: mem.get("c", a.cache_id), lambda: mem.compute("c", "x"), lambda: mem.add(a, [])):
        with pytest.raises(FailedPrecondition) as err:
            call()
        assert err.value.reason == "TENSORS_UNAVAILABLE"
    with pytest.raises(NotFound):
        mem.get("c", "nope")


def test_prompts_beyond_the_servers_context_are_invalid(make_rig) -> None:  # type: ignore[no-untyped-def]
    mem = make_rig(max_model_len=64).memory
    with pytest.raises(InvalidArgument) as err:
        mem.extract("c", MEMORY * 3)
    assert err.value.reason == "PROMPT_TOO_LONG"


def test_start_refuses_servers_that_cannot_serve_prefixes(make_rig, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    rig.fakes[0].prefix_caching = False
    with pytest.raises(FailedPrecondition) as err:
        VllmBackend(str(tiny_model_dir), [rig.settings.vllm_url])
    assert err.value.reason == "VLLM_PREFIX_CACHING_OFF"
    rig = make_rig()
    rig.fakes[0].tokenize = lambda text: [1, 2, 3]
    with pytest.raises(FailedPrecondition) as err:
        VllmBackend(str(tiny_model_dir), [rig.settings.vllm_url])
    assert err.value.reason == "VLLM_TOKENIZER_MISMATCH"
    with pytest.raises(FailedPrecondition) as err:
        VllmBackend(str(tiny_model_dir), [rig.settings.vllm_url], served_model="other")
    assert err.value.reason == "VLLM_MODEL_MISMATCH"


def test_a_server_without_prompt_token_details_is_not_counted_as_a_miss(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    rig.fakes[0].report_cached_tokens = False
    meta = rig.memory.extract("c", MEMORY)
    _, done = _run(rig.memory, "c", [meta.cache_id])
    assert done.cached_tokens == 0 and rig.memory.misses == 0 and rig.memory.hits == 0


def test_the_grpc_service_over_the_vllm_backend(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    emb = EmbeddedActMem(rig.settings, memory=rig.memory)
    client = ActMemClient(emb.start())
    try:
        a = client.extract("c", [{"role": "user", "content": MEMORY}], add_generation_prompt=False)
        assert a.num_tokens > 0 and [i.cache_id for i in client.list("c")] == [a.cache_id]
        out = list(client.generate("c", [a.cache_id], "what does alice drink?", max_tokens=3))
        assert out[0].ttft_ms > 0 and out[-1].done and out[-1].cached_tokens > 0
        assert client.merge("c", [a.cache_id, a.cache_id], store=True).num_tokens == 2 * a.num_tokens
        with pytest.raises(FailedPrecondition) as err:
            client.get("c", a.cache_id)
        assert err.value.reason == "TENSORS_UNAVAILABLE"
        with pytest.raises(FailedPrecondition):
            client.get_merged("c", [a.cache_id])
        assert client.delete("c", [a.cache_id]) == 1
        with pytest.raises(NotFound):
            list(client.generate("c", [a.cache_id], "hi"))
    finally:
        client.close()
        emb.stop()
