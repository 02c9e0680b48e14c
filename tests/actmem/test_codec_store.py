"""Unit tests: the safetensors stream codec and the budgeted cache store."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from services.actmem import codec
from services.actmem.models import CacheMeta, Fingerprint
from services.actmem.store import CacheStore
from shared.errors import FailedPrecondition, NotFound, ResourceExhausted

FP = Fingerprint("m", 2, 2, 8, "float32", "{}", "d", 4096)


def _kv(tokens: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> list:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(1, 2, tokens, 8, generator=g).to(dtype), torch.randn(1, 2, tokens, 8, generator=g).to(dtype))
        for _ in range(2)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_stream_roundtrip_in_small_chunks(dtype: torch.dtype) -> None:
    kv = _kv(10, dtype)
    specs = codec.specs_of(kv)
    chunks = list(codec.iter_payload(kv, 100))
    assert max(len(c) for c in chunks) <= 100 or len(chunks[0]) == len(codec.encode_header(specs))
    assert all(len(c) <= 100 for c in chunks[1:])
    dec = codec.PayloadDecoder(specs, codec.payload_size(specs), codec.checksum_of(kv, "sha256"))
    for c in chunks:
        # Feed in odd-sized pieces: chunk boundaries must not matter.
        for i in range(0, len(c), 37):
            dec.feed(c[i : i + 37])
    out = dec.finish()
    assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(kv, out, strict=True))


def test_files_are_plain_safetensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = _kv(5)
    codec.write_file(tmp_path / "c.safetensors", kv)
    tensors = load_file(tmp_path / "c.safetensors")
    assert torch.equal(tensors["layers.1.values"], kv[1][1])
    back = codec.read_file(tmp_path / "c.safetensors", codec.specs_of(kv), codec.checksum_of(kv, "crc32"))
    assert torch.equal(back[0][0], kv[0][0])


def test_truncated_corrupted_or_mislabelled_payloads_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = _kv(5)
    specs, checksum = codec.specs_of(kv), codec.checksum_of(kv, "crc32")
    path = tmp_path / "c.safetensors"
    codec.write_file(path, kv)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(FailedPrecondition, match="truncated|bytes on disk"):
        codec.read_file(path, specs, checksum)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(FailedPrecondition, match="checksum"):
        codec.read_file(path, specs, checksum)
    path.write_bytes(data)
    with pytest.raises(FailedPrecondition):  # a cache of another shape
        codec.read_file(path, codec.specs_of(_kv(6)), checksum)
    dec = codec.PayloadDecoder(specs, codec.payload_size(specs), checksum)
    with pytest.raises(FailedPrecondition, match="more than"):
        dec.feed(data + b"x")
    dec = codec.PayloadDecoder(specs, codec.payload_size(specs), checksum)
    dec.feed(data[:100])
    with pytest.raises(FailedPrecondition, match="truncated"):
        dec.finish()


def _meta(cid: str, kv: list) -> CacheMeta:  # type: ignore[type-arg]
    return CacheMeta(cid, "cube", FP, "text", int(kv[0][0].shape[2]), sum(k.nbytes + v.nbytes for k, v in kv))


def test_store_evicts_lru_to_disk_and_reloads_transparently(tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = _meta("a", _kv(10)).size_bytes
    store = CacheStore(max_bytes=2 * one, spill_dir=tmp_path / "spill")
    kvs = {cid: _kv(10, seed=i) for i, cid in enumerate("abc")}
    for cid, kv in kvs.items():
        store.put(_meta(cid, kv), kv)
    # "a" was least recently used: it went to disk, the others stayed.
    assert [m.resident for m in store.list("cube")] == [False, True, True]
    assert store.resident_bytes == 2 * one and store.spilled_bytes == one
    assert (tmp_path / "spill" / "cube" / "a.safetensors").exists()
    meta, kv = store.get("cube", "a")
    assert meta.resident and torch.equal(kv[1][0], kvs["a"][1][0])
    # Reloading "a" evicted "b", the least recently used now.
    assert not store.meta("cube", "b").resident
    assert store.delete("cube", ["b"]) == 1
    assert store.spilled_bytes == 0 and not (tmp_path / "spill" / "cube" / "b.safetensors").exists()
    with pytest.raises(NotFound):
        store.get("cube", "b")


def test_store_refuses_a_cache_larger_than_the_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = _kv(10)
    store = CacheStore(max_bytes=_meta("a", kv).size_bytes - 1, spill_dir=tmp_path / "spill")
    with pytest.raises(ResourceExhausted) as err:
        store.put(_meta("a", kv), kv)
    assert err.value.reason == "CACHE_BUDGET_EXCEEDED"
    assert store.list("cube") == []


def test_store_delete_of_unknown_ids_deletes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = CacheStore(max_bytes=0, spill_dir=tmp_path / "spill")
    kv = _kv(3)
    store.put(_meta("a", kv), kv)
    with pytest.raises(NotFound):
        store.delete("cube", ["a", "missing"])
    assert [m.cache_id for m in store.list("cube")] == ["a"]
