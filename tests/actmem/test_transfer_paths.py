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


# -- checksums beside the transfer: stripes on a pool, combined -------------------------------------


@pytest.mark.parametrize(("len1", "len2"), [(0, 0), (0, 9), (9, 0), (1, 1), (1000, 12_345), (70_000, 3), (5, 1 << 20)])
def test_crc32_combine_is_the_crc_of_the_concatenation(len1: int, len2: int) -> None:
    import random
    import zlib

    rng = random.Random(len1 * 31 + len2)
    a, b = rng.randbytes(len1), rng.randbytes(len2)
    assert codec.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_is_zlibs_whichever_library_computes_it() -> None:
    import zlib

    data = bytes(range(256)) * 1024  # large enough for the fast path, where there is one
    assert codec.crc32(data) == zlib.crc32(data)
    assert codec.crc32(memoryview(data)[7:], 99) == zlib.crc32(data[7:], 99)


def test_checksums_mixing_pool_pieces_and_inline_updates_are_the_whole_payloads(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import zlib

    # Small thresholds: every path (pool, inline, waiting for the oldest piece) is taken.
    monkeypatch.setattr(codec, "_POOL_MIN", 1000)
    monkeypatch.setattr(codec, "_MAX_PENDING", 5000)
    pieces = [bytes([i]) * n for i, n in enumerate([10, 4000, 3, 2500, 2500, 999, 1000, 7, 6000])]
    whole = b"".join(pieces)
    for algorithm, want in (
        ("crc32", f"crc32:{zlib.crc32(whole):08x}"),
        ("sha256", "sha256:" + hashlib.sha256(whole).hexdigest()),
    ):
        c = codec.Checksum(algorithm)
        for i, piece in enumerate(pieces):
            if i % 3 == 2:
                c.update(piece)
            else:
                c.update_later(memoryview(piece))
        assert c.value() == want
        assert c.value() == want  # asking twice changes nothing
    assert codec.Checksum("crc32").value() == f"crc32:{zlib.crc32(b''):08x}"


def _big_kv() -> list:  # type: ignore[type-arg]
    # More than two checksum stripes, with tensors that do not line up with them.
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(1, 3, 1001, 64, generator=g), torch.randn(1, 3, 1001, 64, generator=g)) for _ in range(6)]


def test_large_payloads_are_checked_in_stripes_whatever_the_chunking() -> None:
    import zlib

    kv = _big_kv()
    specs = codec.specs_of(kv)
    payload = b"".join(codec.iter_payload(kv, 1 << 20))
    assert len(payload) > 2 * codec.CRC_STRIPE
    checksum = f"crc32:{zlib.crc32(payload):08x}"
    assert codec.checksum_of(kv, "crc32") == checksum
    for step in (1 << 20, 777_777, len(payload)):
        dec = codec.PayloadDecoder(specs, len(payload), checksum)
        for i in range(0, len(payload), step):
            dec.feed(memoryview(payload)[i : i + step])
        back = dec.finish()
        assert all(
            torch.equal(a, b) for pair, got in zip(kv, back, strict=True) for a, b in zip(pair, got, strict=True)
        )
    # One flipped bit in a middle stripe is found.
    damaged = bytearray(payload)
    damaged[len(payload) // 2] ^= 0x10
    dec = codec.PayloadDecoder(specs, len(payload), checksum)
    dec.feed(bytes(damaged))
    with pytest.raises(FailedPrecondition, match="checksum"):
        dec.finish()


def test_large_files_are_read_in_stripes_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = _big_kv()
    specs, checksum = codec.specs_of(kv), codec.checksum_of(kv, "crc32")
    path = tmp_path / "big.safetensors"
    codec.write_file(path, kv)
    back = codec.read_file(path, specs, checksum)
    assert all(torch.equal(a, b) for pair, got in zip(kv, back, strict=True) for a, b in zip(pair, got, strict=True))
    data = bytearray(path.read_bytes())
    data[-(codec.CRC_STRIPE + 5)] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match="checksum"):
        codec.read_file(path, specs, checksum)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_received_tensors_are_ordinary_writable_tensors(dtype: str) -> None:
    for shape in ((1, 2, 3, 8), (1, 2, 0, 8)):
        t = codec.empty_tensor(codec.TensorSpec("layers.0.keys", dtype, shape))
        assert t.shape == shape and t.dtype == codec.ST_TO_TORCH[dtype] and t.is_contiguous()
        t.fill_(1.5)
        assert bool((t == 1.5).all())


def test_the_sdk_reads_downloaded_chunks_without_protobuf(service) -> None:  # type: ignore[no-untyped-def]
    info = service.client.extract("cube", "alice likes tea. " * 20)
    responses = list(
        service.client._streams["GetCache"](actmem_pb2.GetCacheRequest(cube_id="cube", cache_id=info.cache_id))
    )
    assert responses[0].WhichOneof("payload") == "header"
    assert len(responses) > 2 and all(isinstance(r, wire.RawChunk) for r in responses[1:])
    assert sum(len(r.chunk) for r in responses[1:]) == responses[0].header.payload_bytes
