"""actmem over real gRPC on loopback: the operations, streaming, and every bad input of the issue."""

from __future__ import annotations

import json
import pickle
import shutil

import grpc
import pytest
import torch

from memos.actmem.v1 import actmem_pb2
from services.actmem import codec
from shared.errors import Code, FailedPrecondition, InvalidArgument, MemosError, NotFound, ResourceExhausted

MESSAGES = [
    {"role": "user", "content": "What is MemOS?"},
    {"role": "assistant", "content": "MemOS is a memory operating system for LLMs."},
]


def test_operations_end_to_end(service) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    a = c.extract("cube", MESSAGES, add_generation_prompt=True, metadata={"k": "v"})
    b = c.extract("cube", "bob reads the graph cache every day.")
    assert a.num_tokens > 0 and a.num_layers == 2 and a.metadata["k"] == "v"
    assert a.source_text.startswith("<|im_start|>user\nWhat is MemOS?") and a.source_text.endswith("assistant\n")
    assert a.fingerprint.digest == service.memory.fingerprint.digest
    assert [i.cache_id for i in c.list("cube")] == [a.cache_id, b.cache_id]
    info, kv = c.get("cube", a.cache_id)
    assert info.checksum.startswith("crc32:") and len(kv) == 2 and kv[0][0].shape == (1, 2, a.num_tokens, 16)
    assert torch.equal(kv[1][1], service.memory.get("cube", a.cache_id)[1][1][1].cpu())
    # Caches stay on the service's device (MEMOS_TEST_DEVICE); what crosses the wire lands on the CPU.
    assert service.memory.get("cube", a.cache_id)[1][0][0].device.type == torch.device(service.memory.store.device).type
    assert kv[0][0].device.type == "cpu"
    assert c.info("cube", b.cache_id).num_tokens == b.num_tokens

    merged_info, merged = c.get_merged("cube", [a.cache_id, b.cache_id])
    assert merged_info.num_tokens == a.num_tokens + b.num_tokens and merged[0][0].shape[2] == merged_info.num_tokens
    stored = c.merge("cube", [a.cache_id, b.cache_id], store=True)
    assert list(stored.merged_from) == [a.cache_id, b.cache_id] and len(c.list("cube")) == 3

    # Computing streams a cache back without storing it; adding it stores it under its id.
    computed, ckv = c.compute("cube", "carol remembers.")
    assert len(c.list("cube")) == 3
    added = c.add(computed, ckv)
    assert added.cache_id == computed.cache_id and len(c.list("cube")) == 4

    assert c.delete("cube", [stored.cache_id]) == 1
    assert c.dump("cube", "d1") == 3
    assert c.delete_all("cube") == 3 and c.list("cube") == []
    loaded = c.load("cube", "d1")
    assert sorted(i.cache_id for i in loaded) == sorted([a.cache_id, b.cache_id, computed.cache_id])
    _, back = c.get("cube", a.cache_id)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(kv, back, strict=True))


def test_chunks_are_bounded(service) -> None:  # type: ignore[no-untyped-def]
    a = service.client.extract("cube", "alice likes tea. " * 40)
    sizes = [
        len(r.chunk)
        for r in service.client.stub.GetCache(actmem_pb2.GetCacheRequest(cube_id="cube", cache_id=a.cache_id))
        if r.WhichOneof("payload") == "chunk"
    ]
    assert len(sizes) > 3 and max(sizes) <= service.settings.chunk_bytes


def test_generate_reports_ttft_and_never_mutates_the_cache(service) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    a = c.extract("cube", MESSAGES)
    before = [k.clone() for k, _ in service.memory.get("cube", a.cache_id)[1]]
    for _ in range(2):
        out = list(c.generate("cube", [a.cache_id], "Tell me more.", max_tokens=5))
        assert out[0].ttft_ms > 0 and out[-1].done
        assert out[-1].cached_tokens == a.num_tokens and out[-1].completion_tokens <= 5
    _, after = service.memory.get("cube", a.cache_id)
    assert c.info("cube", a.cache_id).num_tokens == a.num_tokens
    assert all(k.shape == k0.shape and torch.equal(k, k0) for (k, _), k0 in zip(after, before, strict=True))


def test_unknown_ids_are_not_found(service) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    a = c.extract("cube", "alice")
    for call in (
        lambda: c.get("cube", "nope"),
        lambda: c.info("cube", "nope"),
        lambda: c.get_merged("cube", [a.cache_id, "nope"]),
        lambda: c.merge("cube", ["nope"]),
        lambda: c.delete("cube", [a.cache_id, "nope"]),
        lambda: list(c.generate("cube", ["nope"], "hi")),
        lambda: c.get("other-cube", a.cache_id),
    ):
        with pytest.raises(NotFound):
            call()
    assert [i.cache_id for i in c.list("cube")] == [a.cache_id]  # the failed delete deleted nothing


def test_caches_of_another_model_are_refused(service, make_memory, other_backend) -> None:  # type: ignore[no-untyped-def]
    other, _ = make_memory(backend_=other_backend)
    meta, kv = other.compute("cube", "alice likes tea.")
    from services.actmem.convert import meta_to_proto

    with pytest.raises(FailedPrecondition) as err:
        service.client.add(meta_to_proto(meta, with_payload=True), kv)
    assert err.value.reason == "MODEL_MISMATCH" and "digest" in err.value.message
    # A merge that meets a foreign cache (e.g. placed in the store behind the service's back) refuses too.
    own = service.memory.extract("cube", "bob")
    service.memory.store.put(meta, kv)
    with pytest.raises(FailedPrecondition) as err:
        service.client.merge("cube", [own.cache_id, meta.cache_id])
    assert err.value.reason == "MODEL_MISMATCH"
    # And a dump of the other model does not load.
    other.store.put(meta.copy(), kv)
    other.dump_root = service.memory.dump_root
    other.dump("cube", "foreign")
    with pytest.raises(FailedPrecondition) as err:
        service.client.load("cube2", "foreign")
    assert err.value.reason == "MODEL_MISMATCH" and service.client.list("cube2") == []


def _dump_two(service) -> tuple[list, object]:  # type: ignore[no-untyped-def]
    c = service.client
    ids = [c.extract("src", t).cache_id for t in ("alice likes tea.", "bob likes coffee.")]
    c.dump("src", "d")
    return ids, service.memory.dump_root / "d"


@pytest.mark.parametrize(
    "damage",
    [
        "truncate_tensors",
        "flip_tensor_byte",
        "garbage_header",
        "truncate_manifest",
        "manifest_wrong_shape",
        "missing_tensors",
    ],
)
def test_corrupted_dumps_load_nothing_and_leave_others_alone(service, damage: str) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    keep = c.extract("cube", "carol stays.")
    ids, d = _dump_two(service)
    st, mf = d / f"{ids[1]}.safetensors", d / f"{ids[1]}.json"
    data = st.read_bytes()
    if damage == "truncate_tensors":
        st.write_bytes(data[: len(data) // 2])
    elif damage == "flip_tensor_byte":
        st.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    elif damage == "garbage_header":
        st.write_bytes(b"\xff" * 16 + data[16:])
    elif damage == "truncate_manifest":
        mf.write_text(mf.read_text()[:50])
    elif damage == "manifest_wrong_shape":
        doc = json.loads(mf.read_text())
        doc["num_tokens"] += 1
        mf.write_text(json.dumps(doc))
    else:
        st.unlink()
    with pytest.raises(FailedPrecondition) as err:
        c.load("cube", "d")
    assert err.value.reason == "CORRUPT_CACHE" and ids[1] in err.value.message
    assert [i.cache_id for i in c.list("cube")] == [keep.cache_id]  # nothing loaded, the rest untouched
    assert c.get("cube", keep.cache_id)[0].num_tokens == keep.num_tokens


class _Exploit:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_pickle_files_in_a_dump_are_never_loaded(service, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    ids, d = _dump_two(service)
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Exploit(str(marker)))
    for name in ("activation_memory.pickle", "cache.pkl", "kv.pt", "model.bin"):
        (d / name).write_bytes(payload)
    assert sorted(i.cache_id for i in c.load("cube", "d")) == sorted(ids)
    assert not marker.exists()
    # A pickle disguised as a cache's safetensors file is refused, not unpickled.
    (d / f"{ids[0]}.safetensors").write_bytes(payload)
    with pytest.raises(FailedPrecondition):
        c.load("cube2", "d")
    assert not marker.exists() and c.list("cube2") == []


def test_dump_paths_never_escape_the_root(service) -> None:  # type: ignore[no-untyped-def]
    for bad in ("../outside", "/etc", "a/../../b"):
        with pytest.raises(InvalidArgument):
            service.client.dump("cube", bad)


def _upload_requests(service, text: str, *, stop_after: int, fail: bool):  # type: ignore[no-untyped-def]
    from services.actmem.convert import meta_to_proto

    meta, kv = service.memory.compute("up", text)
    meta.checksum = codec.checksum_of(kv, "crc32")
    header = meta_to_proto(meta, with_payload=True)
    chunks = list(codec.iter_payload(kv, 1024))
    assert len(chunks) > stop_after + 1

    def gen():  # type: ignore[no-untyped-def]
        yield actmem_pb2.AddCacheRequest(header=header)
        for ch in chunks[:stop_after]:
            yield actmem_pb2.AddCacheRequest(chunk=ch)
        if fail:
            raise RuntimeError("client went away mid-stream")

    return gen()


def test_a_stream_that_stops_midway_stores_nothing(service) -> None:  # type: ignore[no-untyped-def]
    stub = service.client.stub
    # The client dies mid-stream: the call is cancelled.
    with pytest.raises(grpc.RpcError) as err:
        stub.AddCache(_upload_requests(service, "alice likes tea. " * 30, stop_after=3, fail=True))
    assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    # The stream ends early but cleanly: refused as truncated.
    with pytest.raises(grpc.RpcError) as err:
        stub.AddCache(_upload_requests(service, "alice likes tea. " * 30, stop_after=3, fail=False))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "truncated" in err.value.details()
    assert service.client.list("up") == []


def test_budget_evicts_to_disk_and_refuses_what_can_never_fit(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service()
    one = svc.client.extract("cube", "alice likes tea. " * 10).size_bytes
    small = make_service(max_cache_bytes=int(one * 1.5))
    c = small.client
    a = c.extract("cube", "alice likes tea. " * 10)
    b = c.extract("cube", "bobby likes tea. " * 10)
    assert [i.resident for i in c.list("cube")] == [False, True]  # a was evicted to disk
    _, kv = c.get("cube", a.cache_id)  # and comes back transparently
    assert kv[0][0].shape[2] == a.num_tokens and [i.resident for i in c.list("cube")] == [True, False]
    assert b.cache_id
    with pytest.raises(ResourceExhausted) as err:
        c.extract("cube", "alice likes tea. " * 30)
    assert err.value.reason == "CACHE_BUDGET_EXCEEDED"


def test_prompts_longer_than_the_context_are_invalid(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(max_prompt_tokens=64)
    c = svc.client
    with pytest.raises(InvalidArgument) as err:
        c.extract("cube", "alice likes tea. " * 40)
    assert err.value.reason == "PROMPT_TOO_LONG"
    a = c.extract("cube", "alice likes tea. " * 5)
    with pytest.raises(InvalidArgument):
        c.merge("cube", [a.cache_id] * 6)
    with pytest.raises(InvalidArgument):
        list(c.generate("cube", [a.cache_id], "hello " * 10, max_tokens=40))


def test_bad_requests_are_invalid(service) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    for call in (
        lambda: c.extract("", "x"),
        lambda: c.extract("bad/cube", "x"),
        lambda: c.extract("cube", ""),
        lambda: c.merge("cube", []),
    ):
        with pytest.raises(MemosError) as err:
            call()
        assert err.value.code == Code.INVALID_ARGUMENT


def test_dump_directory_keeps_manifest_fields(service) -> None:  # type: ignore[no-untyped-def]
    ids, d = _dump_two(service)
    doc = json.loads((d / f"{ids[0]}.json").read_text())
    assert doc["format"] == "memos-actmem-cache" and doc["checksum"].startswith("crc32:")
    assert set(doc["fingerprint"]) >= {"name", "num_layers", "num_kv_heads", "head_dim", "dtype", "rope_json", "digest"}
    assert doc["source_text"] == "alice likes tea." and doc["num_tokens"] > 0 and doc["created_at"]
    shutil.rmtree(d)
    with pytest.raises(NotFound):
        service.client.load("cube", "d")
