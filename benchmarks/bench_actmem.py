"""actmem benchmarks (``make bench-actmem``): TTFT, cache transfer, dump/load, merge.

Builds (once, into models/bench-qwen3) a ~25M-parameter random Qwen3 model with
tools/tiny_model.py, starts actmem in this process behind a real loopback gRPC
server and measures through its API with the SDK's ActMemClient:

1. TTFT for a 1,000-token memory plus a ~30-token question: the memory sent as
   prompt text (prefilled every time) versus the memory's cache injected
   (Generate with cache_ids), same model, same run; median of ``--repeats``;
2. cache transfer over loopback gRPC (GetCache download, AddCache upload) and
   dump/load to disk, in GB/s, against a raw in-memory copy of the same bytes
   (``--rounds`` alternating rounds, medians; every round's figures are kept);
3. merge of 8 caches of 1,000 tokens (MergeCaches) against extracting the
   concatenated text (ExtractCache over 8,000 tokens).

Prints numbers, ratios and the issue's targets side by side and writes them to
``benchmarks/results/actmem_latest.json``. Never fails on a target. ``--only
transfer`` (or ``ttft``, ``merge``, comma-separated) runs a subset.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from memos.client.actmem import ActMemClient, EmbeddedActMem  # noqa: E402
from services.actmem.settings import ActMemSettings  # noqa: E402
from tools.tiny_model import build as build_model  # noqa: E402

WORDS = "alice likes tea and lives in paris while bob reads the graph cache every day".split()


def _text_of_tokens(client_tokenize, n: int) -> str:  # type: ignore[no-untyped-def]
    """Text that tokenizes to exactly ``n`` tokens (sentences, trimmed by tokens)."""
    text = " ".join(WORDS[i % len(WORDS)] + ("." if i % 9 == 8 else "") for i in range(n * 2))
    ids = client_tokenize(text)[:n]
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=str(REPO_ROOT / "models" / "bench-qwen3"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--memory-tokens", type=int, default=1000)
    ap.add_argument("--question-tokens", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--merge-parts", type=int, default=8)
    ap.add_argument("--size", default="bench", help="tools/tiny_model.py size of the model to build")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the transfer measures (medians reported)")
    ap.add_argument(
        "--only", default="ttft,transfer,merge", help="sections to run, comma-separated: ttft, transfer, merge"
    )
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "actmem_latest.json"))
    args = ap.parse_args()
    sections = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = sections - {"ttft", "transfer", "merge"}
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")

    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        print(f"building the benchmark model into {model_dir} ...", flush=True)
        on_gpu = args.device.startswith("cuda")
        build_model(
            model_dir,
            size=args.size,
            max_position_embeddings=32768,
            # On a GPU: draw the random weights there and save them in bfloat16 (seconds, not a minute).
            dtype="bfloat16" if on_gpu else "float32",
            init_device=args.device if on_gpu else "cpu",
        )
    work = Path(tempfile.mkdtemp(prefix="bench-actmem-"))
    settings = ActMemSettings(
        listen_addr="127.0.0.1:0",
        model_path=str(model_dir),
        device=args.device,
        dtype=args.dtype,
        data_dir=work / "data",
        dump_root=work / "dumps",
        max_cache_bytes=0,
        chunk_bytes=1024 * 1024,
        log_level="WARNING",
    )
    emb = EmbeddedActMem(settings)
    address = emb.start()
    client = ActMemClient(address, chunk_bytes=settings.chunk_bytes)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def tokenize(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def detok(ids: list[int]) -> str:
        return tok.decode(ids)

    cfg = json.loads((model_dir / "config.json").read_text())
    n_params = sum(t.numel() for f in sorted(model_dir.glob("*.safetensors")) for t in load_file(f).values())
    results: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
        "model": {
            "dir": str(model_dir),
            "params_m": round(n_params / 1e6, 1),
            **{k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim")},
        },
    }

    # 1. TTFT ---------------------------------------------------------------
    memory_text = detok(_text_of_tokens(tokenize, args.memory_tokens))
    question_text = detok(_text_of_tokens(tokenize, args.question_tokens + 200)[200:])
    mem_info = client.extract("bench", memory_text)
    results["model"]["dtype"] = mem_info.dtype  # type: ignore[index]
    if "ttft" in sections:
        results["ttft"] = _ttft(client, mem_info, memory_text, question_text, args.repeats)

    # 2. transfer -------------------------------------------------------------
    parts = []
    if sections & {"transfer", "merge"}:
        parts = [client.extract("bench", memory_text) for _ in range(args.merge_parts)]
    if "transfer" in sections:
        results["transfer"] = _transfer(client, parts, args.rounds)

    # 3. merge vs extracting the concatenation ----------------------------------
    if "merge" in sections:
        results["merge"] = _merge(client, parts, memory_text, args.merge_parts)

    client.close()
    emb.stop()
    shutil.rmtree(work, ignore_errors=True)
    _report(results, Path(args.out))


def _ttft(client: ActMemClient, mem_info, memory_text: str, question_text: str, repeats: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    question = [{"role": "user", "content": question_text}]
    prefill_msgs = [{"role": "system", "content": memory_text}, *question]

    def ttft(cache_ids: list[str], messages: list[dict]) -> tuple[float, int]:  # type: ignore[type-arg]
        out = list(client.generate("bench", cache_ids, messages, max_tokens=1))
        first = next(r for r in out if r.ttft_ms)
        return first.ttft_ms, out[-1].prompt_tokens

    ttft([], prefill_msgs)  # warm-up (allocator, kernels)
    ttft([mem_info.cache_id], question)
    pre = [ttft([], prefill_msgs) for _ in range(repeats)]
    inj = [ttft([mem_info.cache_id], question) for _ in range(repeats)]
    pre_ms, inj_ms = statistics.median(t for t, _ in pre), statistics.median(t for t, _ in inj)
    return {
        "memory_tokens": mem_info.num_tokens,
        "prompt_tokens_prefill": pre[0][1],
        "prompt_tokens_injected": inj[0][1],
        "prefill_ms": round(pre_ms, 2),
        "injected_ms": round(inj_ms, 2),
        "speedup": round(pre_ms / inj_ms, 2),
        "target_speedup_cpu": 8.0,
    }


def _transfer(client: ActMemClient, parts: list, rounds: int) -> dict:  # type: ignore[type-arg]
    """GetCache, AddCache, a raw copy of the same tensors, DumpCaches and LoadCaches of one merged
    cache, ``rounds`` times in turn (so that a busy moment of the machine hits all of them)."""
    big = client.merge("bench", [p.cache_id for p in parts], store=True)
    _, kv_local = client.get("bench", big.cache_id)  # warm-up (and the stored checksum)
    nbytes = big.size_bytes
    dump_header = type(big)()
    dump_header.CopyFrom(big)
    dump_header.cube_id = "dumpcube"
    client.delete_all("dumpcube")
    client.add(dump_header, kv_local)
    seconds: dict[str, list[float]] = {k: [] for k in ("get", "add", "copy", "dump", "load")}
    for r in range(max(1, rounds)):
        t0 = time.perf_counter()
        _, kv_local = client.get("bench", big.cache_id)
        t1 = time.perf_counter()
        client.add(big, kv_local)
        t2 = time.perf_counter()
        copies = [t.clone() for kv in kv_local for t in kv]
        t3 = time.perf_counter()
        del copies
        client.dump("dumpcube", f"big-{r}")
        t4 = time.perf_counter()
        client.load(f"dumpcube-loaded-{r}", f"big-{r}")
        t5 = time.perf_counter()
        client.delete_all(f"dumpcube-loaded-{r}")
        for key, s in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            seconds[key].append(s)

    def gbps(s: float) -> float:
        return round(nbytes / s / 1e9, 3)

    names = {"get": "grpc_download", "add": "grpc_upload", "dump": "dump", "load": "load", "copy": "raw_memory_copy"}
    out: dict[str, object] = {"cache_bytes": nbytes, "rounds": max(1, rounds)}
    for key, name in names.items():
        out[f"{name}_gbps"] = gbps(statistics.median(seconds[key]))
    out["per_round_gbps"] = {names[k]: [gbps(s) for s in v] for k, v in seconds.items()}
    out["target_gbps"] = 1.0
    return out


def _merge(client: ActMemClient, parts: list, memory_text: str, n_parts: int) -> dict:  # type: ignore[type-arg]
    big = client.merge("bench", [p.cache_id for p in parts], store=False)
    t0 = time.perf_counter()
    for _ in range(3):
        client.merge("bench", [p.cache_id for p in parts], store=False)
    merge_ms = (time.perf_counter() - t0) / 3 * 1e3
    t0 = time.perf_counter()
    concat = client.extract("bench", memory_text * n_parts)
    extract_ms = (time.perf_counter() - t0) * 1e3
    return {
        "parts": n_parts,
        "tokens": big.num_tokens,
        "merge_ms": round(merge_ms, 2),
        "extract_concatenated_ms": round(extract_ms, 2),
        "extract_tokens": concat.num_tokens,
        "speedup": round(extract_ms / merge_ms, 2),
    }


def _report(r: dict, out: Path) -> None:  # type: ignore[type-arg]
    print(f"machine: {r['machine']}")
    print(f"model:   {r['model']}")
    if "ttft" in r:
        t = r["ttft"]
        print()
        print(
            f"TTFT, {t['memory_tokens']}-token memory + question ({t['prompt_tokens_prefill']} vs {t['prompt_tokens_injected']} prompt tokens):"
        )
        print(f"  prompt prefill   {t['prefill_ms']:10.2f} ms")
        print(f"  injected cache   {t['injected_ms']:10.2f} ms")
        print(f"  speedup          {t['speedup']:10.2f} x   (target >= {t['target_speedup_cpu']} x on CPU)")
    if "transfer" in r:
        x = r["transfer"]
        print()
        print(f"cache transfer, {x['cache_bytes'] / 1e6:.1f} MB (median of {x['rounds']} rounds):")
        for k in ("grpc_download", "grpc_upload", "dump", "load", "raw_memory_copy"):
            v = x[f"{k}_gbps"]
            ratio = v / x["raw_memory_copy_gbps"]
            rounds = ", ".join(f"{g:.2f}" for g in x["per_round_gbps"][k])
            print(
                f"  {k + '_gbps':22s} {v:8.3f} GB/s   ({ratio:5.2f} of raw copy; target >= {x['target_gbps']} GB/s)  [{rounds}]"
            )
    if "merge" in r:
        m = r["merge"]
        print()
        print(f"merge of {m['parts']} caches ({m['tokens']} tokens):")
        print(f"  MergeCaches              {m['merge_ms']:10.2f} ms")
        print(f"  extract concatenated     {m['extract_concatenated_ms']:10.2f} ms  ({m['extract_tokens']} tokens)")
        print(f"  speedup                  {m['speedup']:10.2f} x")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
