"""actmem's device check, without gRPC: the domain and backend on CUDA.

    python benchmarks/gpu_check_actmem.py [--device cuda] [--sizes qwen3-0.6b,qwen3-1.7b] [--out FILE]

1. exactness on the device (float32): a single cache reproduces full-prompt
   logits; a merge equals the re-positioned reference and not the naive concat;
   extract -> dump -> load gives back the same tensors, on the device;
2. eviction to disk and transparent reload with device-resident caches;
3. TTFT, prompt prefill versus injected cache (ActMemory.generate, bfloat16 on CUDA),
   for Qwen3-shaped random models (tools/tiny_model.py sizes) at 1k and 6k memory
   tokens plus a 30-token question;
4. moving the largest of those caches: device -> host copy, safetensors
   serialisation as GetCache streams it, the checksum, decoding as AddCache
   receives it, dump to and load from disk (back onto the device), in GB/s, next
   to a raw host memory copy of the same bytes.

Needs only torch, transformers, safetensors and tokenizers (no gRPC stack), so
it runs on a bare GPU image. Prints JSON; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from services.actmem import codec  # noqa: E402
from services.actmem.backends.transformers_backend import TransformersBackend  # noqa: E402
from services.actmem.memory import ActMemory  # noqa: E402
from services.actmem.models import KV  # noqa: E402
from services.actmem.store import CacheStore  # noqa: E402
from tools.tiny_model import build  # noqa: E402


def _memory(backend, work: Path, max_bytes: int = 0) -> ActMemory:  # type: ignore[no-untyped-def]
    store = CacheStore(max_bytes=max_bytes, spill_dir=work / "spill", device=backend.device)
    return ActMemory(backend, store, dump_root=work / "dumps", owns_backend=False)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def exactness(device: str, work: Path) -> dict:  # type: ignore[type-arg]
    b = TransformersBackend(str(build(work / "tiny", seed=0)), device=device, dtype="float32")
    seg1, seg2 = b.tokenize("alice likes tea and lives in paris. " * 4), b.tokenize("bob reads the graph. " * 3)
    q = b.tokenize("what does alice drink?")
    full = b.next_token_logits(None, seg1 + seg2 + q)
    single = (b.next_token_logits(b.prefill(seg1 + seg2), q) - full).abs().max().item()
    mem = _memory(b, work / "m1")
    m1, m2 = mem.extract("c", "alice likes tea and lives in paris. " * 4), mem.extract("c", "bob reads the graph. " * 3)
    _, merged = mem.merge("c", [m1.cache_id, m2.cache_id])
    ref = [
        (torch.cat([a[0], c[0]], 2), torch.cat([a[1], c[1]], 2))
        for a, c in zip(b.prefill(seg1), b.prefill(seg2, position_offset=len(seg1)), strict=True)
    ]
    naive = [
        (torch.cat([a[0], c[0]], 2), torch.cat([a[1], c[1]], 2))
        for a, c in zip(mem.get("c", m1.cache_id)[1], mem.get("c", m2.cache_id)[1], strict=True)
    ]
    lr = b.next_token_logits(ref, q)
    out: dict[str, object] = {
        "single_max_abs_diff": single,
        "merged_vs_ref_max_abs_diff": (b.next_token_logits(merged, q) - lr).abs().max().item(),
        "naive_vs_ref_max_abs_diff": (b.next_token_logits(naive, q) - lr).abs().max().item(),
        "merged_cache_device": str(merged[0][0].device),
    }
    # Extract -> dump -> load into another cube: same tensors, back on the device.
    assert mem.dump("c", "roundtrip") == 2
    loaded = {m.cache_id: m for m in mem.load("c2", "roundtrip")}
    same = True
    for meta in (m1, m2):
        _, kv_a = mem.get("c", meta.cache_id)
        _, kv_b = mem.get("c2", meta.cache_id)
        same = same and all(
            torch.equal(ka, kb) and torch.equal(va, vb) for (ka, va), (kb, vb) in zip(kv_a, kv_b, strict=True)
        )
        same = same and loaded[meta.cache_id].num_tokens == meta.num_tokens
    out["dump_load_roundtrip_equal"] = same
    out["loaded_cache_device"] = str(mem.get("c2", m1.cache_id)[1][0][0].device)
    # Eviction with a budget of one cache: the other goes to disk and comes back on use.
    small = _memory(b, work / "m2", max_bytes=int(m1.size_bytes * 1.2))
    a = small.extract("c", "alice likes tea and lives in paris. " * 4)
    small.extract("c", "alice likes tea and lives in paris! " * 4)
    evicted = not small.info("c", a.cache_id).resident
    _, kv = small.get("c", a.cache_id)
    out["evicted_then_reloaded_on"] = str(kv[0][0].device) if evicted else "not evicted"
    out["reloaded_equal"] = bool(torch.equal(kv[0][0], mem.get("c", m1.cache_id)[1][0][0]))
    out["passed"] = bool(
        single <= 1e-4
        and out["merged_vs_ref_max_abs_diff"] <= 1e-3  # type: ignore[operator]
        and out["naive_vs_ref_max_abs_diff"] > 1e-2  # type: ignore[operator]
        and same
        and evicted
        and out["reloaded_equal"]
    )
    return out


def _model(device: str, work: Path, size: str) -> TransformersBackend:
    on_gpu = device.startswith("cuda")
    t0 = time.perf_counter()
    path = build(
        work / size,
        size=size,
        max_position_embeddings=32768,
        dtype="bfloat16" if on_gpu else "float32",
        init_device=device if on_gpu else "cpu",
    )
    backend = TransformersBackend(str(path), device=device)  # dtype auto: bfloat16 on CUDA
    n = sum(p.numel() for p in backend.model.parameters())
    print(f"{size}: {n / 1e6:.0f}M parameters, built and loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return backend


def ttft(b: TransformersBackend, work: Path, tokens: list[int], repeats: int) -> tuple[list[dict], KV]:  # type: ignore[type-arg]
    """TTFT rows, and the cache of the longest memory (for the transfer measures)."""
    device = b.device
    mem = _memory(b, work)
    words = "alice likes tea and lives in paris while bob reads the graph cache every day .".split()
    text_ids = b.tokenize(" ".join(words[i % len(words)] for i in range(max(tokens) * 2)))
    question = [
        {"role": "user", "content": b.tokenizer.decode(b.tokenize("what does alice drink and where " * 5)[:30])}
    ]
    rows = []
    biggest: KV = []
    for n in tokens:
        memory_text = b.tokenizer.decode(text_ids[:n])
        meta = mem.extract("c", memory_text)

        def first(cache_ids: list[str], messages: list[dict]) -> float:  # type: ignore[type-arg]
            events = list(mem.generate("c", cache_ids, messages, max_tokens=1))
            _sync(device)
            return next(e.ttft_ms for e in events if e.ttft_ms)

        prefill_msgs = [{"role": "system", "content": memory_text}, *question]
        for _ in range(2):  # warm-up
            first([], prefill_msgs), first([meta.cache_id], question)
        pre = [first([], prefill_msgs) for _ in range(repeats)]
        inj = [first([meta.cache_id], question) for _ in range(repeats)]
        rows.append(
            {
                "memory_tokens": meta.num_tokens,
                "cache_mb": round(meta.size_bytes / 1e6, 1),
                "prefill_ms": round(statistics.median(pre), 2),
                "injected_ms": round(statistics.median(inj), 2),
                "prefill_ms_min_max": [round(min(pre), 2), round(max(pre), 2)],
                "injected_ms_min_max": [round(min(inj), 2), round(max(inj), 2)],
                "speedup": round(statistics.median(pre) / statistics.median(inj), 2),
            }
        )
        print(f"  {rows[-1]}", flush=True)
        biggest = mem.get("c", meta.cache_id)[1]
    return rows, biggest


def transfer(kv: KV, device: str, work: Path) -> dict:  # type: ignore[type-arg]
    """GB/s of each step a cache takes between the device, the wire format and the disk."""
    nbytes = sum(t.nbytes for pair in kv for t in pair)
    specs = codec.specs_of(kv)
    gbps = lambda s: round(nbytes / s / 1e9, 3)  # noqa: E731
    out: dict[str, object] = {"cache_bytes": nbytes, "device": str(kv[0][0].device)}

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        fn()  # warm-up (allocator, page cache)
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    host: list[torch.Tensor] = []

    def d2h() -> None:
        host.clear()
        host.extend(t.to("cpu") for pair in kv for t in pair)

    out["device_to_host_gbps"] = gbps(timed(d2h))
    out["raw_host_copy_gbps"] = gbps(timed(lambda: [t.clone() for t in host]))

    def serialize() -> None:
        for _ in codec.iter_payload(kv, 1024 * 1024):
            pass

    out["serialize_gbps"] = gbps(timed(serialize))
    checksum = codec.checksum_of(kv, "crc32")
    out["checksum_crc32_gbps"] = gbps(timed(lambda: codec.checksum_of(kv, "crc32")))
    chunks = list(codec.iter_payload(kv, 1024 * 1024))

    def decode() -> None:
        dec = codec.PayloadDecoder(specs, codec.payload_size(specs), checksum)
        for c in chunks:
            dec.feed(c)
        back = dec.finish()
        if device != "cpu":
            for k, v in back:
                k.to(device), v.to(device)

    out["deserialize_to_device_gbps"] = gbps(timed(decode))
    chunks.clear()
    path = work / "transfer.safetensors"
    out["dump_gbps"] = gbps(timed(lambda: codec.write_file(path, kv)))
    loaded: list[KV] = []
    out["load_to_device_gbps"] = gbps(timed(lambda: loaded.append(codec.read_file(path, specs, checksum, device))))
    out["load_equal"] = all(
        torch.equal(a, b) for pa, pb in zip(kv, loaded[-1], strict=True) for a, b in zip(pa, pb, strict=True)
    )
    path.unlink(missing_ok=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", default="1000,6000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--sizes", default="qwen3-0.6b", help="tools/tiny_model.py sizes for the TTFT rows, comma-separated"
    )
    ap.add_argument("--skip-exactness", action="store_true")
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="actmem-gpu-"))
    t0 = time.time()
    result: dict[str, object] = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    import transformers

    result["transformers"] = transformers.__version__

    def save() -> None:
        text = json.dumps(result, indent=1)
        print(text, flush=True)
        if args.out:
            Path(args.out).write_text(text)

    if not args.skip_exactness:
        result["exactness"] = exactness(args.device, work)
        save()
    tokens = [int(x) for x in args.tokens.split(",")]
    for size in args.sizes.split(","):
        backend = _model(args.device, work, size)
        rows, biggest = ttft(backend, work / f"m-{size}", tokens, args.repeats)
        result[f"ttft_{size}_shape"] = rows
        if size == args.sizes.split(",")[0]:
            result[f"transfer_{size}_{rows[-1]['memory_tokens']}_tokens"] = transfer(biggest, args.device, work)
        del biggest
        backend.close()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        save()
    result["wall_s"] = round(time.time() - t0, 1)
    save()


if __name__ == "__main__":
    main()
