"""actmem's device check, without gRPC: the domain and backend on CUDA.

    python benchmarks/gpu_check_actmem.py [--device cuda]

1. exactness on the device (float32): a single cache reproduces full-prompt
   logits; a merge equals the re-positioned reference and not the naive concat;
2. eviction to disk and transparent reload with device-resident caches;
3. TTFT, prompt prefill versus injected cache (ActMemory.generate, bfloat16), for
   a Qwen3-0.6B-shaped random model at 1k and 6k memory tokens plus a 30-token question.

Needs only torch, transformers, safetensors and tokenizers (no gRPC stack), so
it runs on a bare GPU image.
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

from services.actmem.backends.transformers_backend import TransformersBackend  # noqa: E402
from services.actmem.memory import ActMemory  # noqa: E402
from services.actmem.store import CacheStore  # noqa: E402
from tools.tiny_model import build  # noqa: E402


def _memory(backend, work: Path, max_bytes: int = 0) -> ActMemory:  # type: ignore[no-untyped-def]
    store = CacheStore(max_bytes=max_bytes, spill_dir=work / "spill", device=backend.device)
    return ActMemory(backend, store, dump_root=work / "dumps", owns_backend=False)


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
    out = {
        "single_max_abs_diff": single,
        "merged_vs_ref_max_abs_diff": (b.next_token_logits(merged, q) - lr).abs().max().item(),
        "naive_vs_ref_max_abs_diff": (b.next_token_logits(naive, q) - lr).abs().max().item(),
    }
    # Eviction with a budget of one cache: the other goes to disk and comes back on use.
    small = _memory(b, work / "m2", max_bytes=int(m1.size_bytes * 1.2))
    a = small.extract("c", "alice likes tea and lives in paris. " * 4)
    small.extract("c", "alice likes tea and lives in paris! " * 4)
    evicted = not small.info("c", a.cache_id).resident
    _, kv = small.get("c", a.cache_id)
    out["evicted_then_reloaded_on"] = str(kv[0][0].device) if evicted else "not evicted"
    out["reloaded_equal"] = bool(torch.equal(kv[0][0], mem.get("c", m1.cache_id)[1][0][0]))
    return out


def ttft(device: str, work: Path, tokens: list[int], repeats: int, size: str) -> list[dict]:  # type: ignore[type-arg]
    b = TransformersBackend(str(build(work / size, size=size, max_position_embeddings=32768)), device=device)
    mem = _memory(b, work / "m3")
    words = "alice likes tea and lives in paris while bob reads the graph cache every day .".split()
    text_ids = b.tokenize(" ".join(words[i % len(words)] for i in range(max(tokens) * 2)))
    question = [
        {"role": "user", "content": b.tokenizer.decode(b.tokenize("what does alice drink and where " * 5)[:30])}
    ]
    rows = []
    for n in tokens:
        memory_text = b.tokenizer.decode(text_ids[:n])
        meta = mem.extract("c", memory_text)

        def first(cache_ids: list[str], messages: list[dict]) -> float:  # type: ignore[type-arg]
            events = list(mem.generate("c", cache_ids, messages, max_tokens=1))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return next(e.ttft_ms for e in events if e.ttft_ms)

        prefill_msgs = [{"role": "system", "content": memory_text}, *question]
        for _ in range(2):  # warm-up
            first([], prefill_msgs), first([meta.cache_id], question)
        pre = statistics.median(first([], prefill_msgs) for _ in range(repeats))
        inj = statistics.median(first([meta.cache_id], question) for _ in range(repeats))
        rows.append(
            {
                "memory_tokens": meta.num_tokens,
                "prefill_ms": round(pre, 2),
                "injected_ms": round(inj, 2),
                "speedup": round(pre / inj, 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", default="1000,6000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="qwen3-0.6b", help="tools/tiny_model.py size for the TTFT rows")
    ap.add_argument("--skip-exactness", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="actmem-gpu-"))
    t0 = time.time()
    result = {"device": args.device, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if not args.skip_exactness:
        result["exactness"] = exactness(args.device, work)
        print(json.dumps(result, indent=1), flush=True)
    result[f"ttft_{args.size}_shape"] = ttft(
        args.device, work, [int(x) for x in args.tokens.split(",")], args.repeats, args.size
    )
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
