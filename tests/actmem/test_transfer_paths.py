"""The copy-saving transfer paths: chunk frames and their parsing (wire.py), payload views,
files read straight into tensors, and checksums kept from a verified upload."""

from __future__ import annotations

import pytest
import torch
from google.protobuf.message import DecodeError

from memos.actmem.v1 import actmem_pb2
from services.actmem import codec, wire
from shared.errors import FailedPrecondition


def _kv(tokens: int = 10, seed: int = 0) -> list:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 2, tokens, 8, generator=g), torch.randn(1, 2, tokens, 8, generator=g)) for _ in range(2)]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
def test_chunk_frames_are_the_protobuf_encoding(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = wire.chunk_frame(memoryview(data))
    for cls in (actmem_pb2.GetCacheResponse, actmem_pb2.ComputeCacheResponse, actmem_pb2.AddCacheRequest):
        assert frame == cls(chunk=data).SerializeToString()
        parsed = cls.FromString(frame)
        assert parsed.WhichOneof("payload") == "chunk" and parsed.chunk == data


def test_serialize_response_passes_frames_and_serializes_messages() -> None:
    header = actmem_pb2.GetCacheResponse(header=actmem_pb2.CacheInfo(cache_id="c"))
    assert wire.serialize_response(header) == header.SerializeToString()
    frame = wire.chunk_frame(b"abc")
    assert wire.serialize_response(frame) is frame


def test_lone_chunks_are_parsed_without_protobuf_and_the_rest_with_it() -> None:
    parse = wire.request_parser(actmem_pb2.AddCacheRequest)
    chunk = parse(actmem_pb2.AddCacheRequest(chunk=b"x" * 1000).SerializeToString())
    assert isinstance(chunk, wire.RawChunk)
    assert chunk.WhichOneof("payload") == "chunk" and bytes(chunk.chunk) == b"x" * 1000

    header = parse(actmem_pb2.AddCacheRequest(header=actmem_pb2.CacheInfo(cache_id="c")).SerializeToString())
    assert isinstance(header, actmem_pb2.AddCacheRequest) and header.WhichOneof("payload") == "header"

    # Anything but exactly one chunk field is protobuf's to parse: here two chunks (the last wins).
    two = wire.chunk_frame(b"first") + wire.chunk_frame(b"second")
    parsed = parse(two)
    assert isinstance(parsed, actmem_pb2.AddCacheRequest) and parsed.chunk == b"second"

    # A length that runs past the end is malformed, as protobuf says.
    with pytest.raises(DecodeError):
        parse(wire.chunk_frame(b"abcdef")[:-1])


def test_payload_views_are_the_payload_without_copies() -> None:
    kv = _kv()
    views = list(codec.iter_views(kv, 100))
    assert b"".join(bytes(v) for v in views) == b"".join(codec.iter_payload(kv, 100))
    assert all(v.readonly for v in views)
    # A tensor's chunks show the tensor's own memory.
    first = views[1]
    assert first.obj is not None and bytes(first) == kv[0][0].reshape(-1).view(torch.uint8).numpy()[:100].tobytes()


def _decoder(kv, checksum: str | None = None) -> codec.PayloadDecoder:  # type: ignore[no-untyped-def]
    specs = codec.specs_of(kv)
    return codec.PayloadDecoder(specs, codec.payload_size(specs), checksum or codec.checksum_of(kv, "crc32"))


def test_files_are_read_straight_into_tensors_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = _kv(33)
    path = tmp_path / "c.safetensors"
    codec.write_file(path, kv)
    with open(path, "rb", buffering=0) as f:
        dec = _decoder(kv)
        dec.fill(f.readinto, chunk_bytes=100)
    back = dec.finish()
    assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(kv, back, strict=True))

    data = path.read_bytes()
    for damaged, why in ((data[:-5], "truncated"), (data + b"x", "more than"), (data[:-1] + b"\0", "checksum")):
        path.write_bytes(damaged)
        with pytest.raises(FailedPrecondition, match=why):
            with open(path, "rb", buffering=0) as f:
                dec = _decoder(kv)
                dec.fill(f.readinto)
            dec.finish()


def test_only_a_canonical_payload_lends_its_checksum() -> None:
    kv = _kv()
    dec = _decoder(kv)
    for chunk in codec.iter_payload(kv, 64):
        dec.feed(chunk)
    dec.finish()
    assert dec.canonical_checksum == codec.checksum_of(kv, "crc32")

    # Same tensors, another (valid) header: its checksum is not that of this service's encoding.
    header = codec.encode_header(codec.specs_of(kv))
    other = header.replace(b'"producer":"memos-actmem"', b'"producer":"someone-else"')
    assert len(other) == len(header) and other != header
    payload = other + b"".join(codec.iter_payload(kv, 1 << 20))[len(header) :]
    c = codec.Checksum("crc32")
    c.update(payload)
    specs = codec.specs_of(kv)
    dec = codec.PayloadDecoder(specs, codec.payload_size(specs), c.value())
    dec.feed(payload)
    back = dec.finish()
    assert torch.equal(back[1][1], kv[1][1])
    assert dec.canonical_checksum == ""


def test_an_upload_keeps_its_verified_checksum(service) -> None:  # type: ignore[no-untyped-def]
    info, kv = service.client.compute("cube", "alice likes tea. " * 20)
    header = actmem_pb2.CacheInfo()
    header.CopyFrom(info)
    header.cube_id, header.cache_id = "cube", "up"
    service.client.add(header, kv)
    stored = service.memory.info("cube", "up")
    assert stored.checksum == codec.checksum_of(kv, "crc32")
    _, back = service.client.get("cube", "up")
    assert all(torch.equal(a.cpu(), b) for (a, _), (b, _) in zip(kv, back, strict=True))


def test_an_upload_checksum_in_another_algorithm_is_recomputed(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(checksum="sha256")
    info, kv = service.client.compute("cube", "bob reads the graph. " * 20)
    header = actmem_pb2.CacheInfo()
    header.CopyFrom(info)
    header.cube_id, header.cache_id = "cube", "up"
    service.client.add(header, kv)  # the SDK uploads with crc32
    assert service.memory.info("cube", "up").checksum == ""
    got, back = service.client.get("cube", "up")
    assert got.checksum == codec.checksum_of(kv, "sha256")
    assert torch.equal(back[0][0], kv[0][0])


def test_cpu_attention_reads_grouped_heads_with_the_stock_result() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from services.actmem.backends.transformers_backend import _sdpa_attention

    class Layer(torch.nn.Module):
        num_key_value_groups = 2
        is_causal = True

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, n, 16, generator=g) for h, n in ((4, 5), (2, 12), (2, 12)))
    # The first step after an injected cache: 5 new tokens after 7 cached ones.
    mask = torch.ones(5, 12, dtype=torch.bool).tril(7)[None, None]
    for m in (mask, None):
        ours, _ = _sdpa_attention(Layer(), q, k, v, m, scaling=0.25)
        stock, _ = sdpa_attention_forward(Layer(), q, k, v, m, scaling=0.25)
        assert torch.allclose(ours, stock, atol=1e-6, rtol=0)
