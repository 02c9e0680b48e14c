"""actmem benchmarks (``make bench-actmem``): TTFT, cache transfer, dump/load, merge.

Builds (once, into models/bench-qwen3) a ~25M-parameter random Qwen3 model with
tools/tiny_model.py, starts actmem as its own process (``python -m services.actmem``)
on a loopback port and measures through its API with the SDK's ActMemClient.

The service runs in a process of its own because that is how it is deployed: actmem
is a server co-located with the model, its callers are other processes. Run in the
benchmark's own process (the SDK's EmbeddedActMem: a thread and an event loop), the
service and the client would share one interpreter lock, and every transfer would
measure the two taking turns with it rather than either one (``--in-process`` does
that, for comparison).

1. TTFT for a 1,000-token memory plus a ~30-token question: the memory sent as
   prompt text (prefilled every time) versus the memory's cache injected
   (Generate with cache_ids), same model, same run; median of ``--repeats``;
2. cache transfer over loopback gRPC (GetCache download, AddCache upload) and
   dump/load to disk, in GB/s, against a raw in-memory copy of the same bytes and,
   for dump and load, against this process writing and reading the same bytes as a
   plain file in the same directory (the disk's own ceiling) in the same round.
   ``--rounds`` alternating rounds, medians; every round's figures are kept.
   Every dump, load and raw file write starts from a synced disk (``os.sync()``
   first), so one round's dirty pages are not what throttles the next: those
   figures are writes into the page cache. The "durable" lines add the fsync of
   what was written (the device's own speed), and "cold" ones read files whose
   pages were dropped from the page cache (posix_fadvise DONTNEED) first;
3. merge of 8 caches of 1,000 tokens (MergeCaches) against extracting the
   concatenated text (ExtractCache over 8,000 tokens).

Prints numbers, ratios and the issue's targets side by side and writes them to
``benchmarks/results/actmem_latest.json``. Never fails on a target. ``--only
transfer`` (or ``ttft``, ``merge``, comma-separated) runs a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from memos.client.actmem import ActMemClient, EmbeddedActMem  # noqa: E402
from services.actmem import codec  # noqa: E402
from services.actmem.settings import ActMemSettings  # noqa: E402
from shared.errors import MemosError  # noqa: E402
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
        "--warmup",
        type=int,
        default=2,
        help="untimed-in-the-medians GetCache+AddCache rounds first (their figures are reported apart)",
    )
    ap.add_argument("--chunk-bytes", type=int, default=ActMemSettings.model_fields["chunk_bytes"].default)
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="run actmem in this process (EmbeddedActMem) instead of its own: client and service share the GIL",
    )
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
        chunk_bytes=args.chunk_bytes,
        log_level="WARNING",
    )
    service = _InProcess(settings) if args.in_process else _Subprocess(settings, work / "actmem.log")
    try:
        client = ActMemClient(service.start(), chunk_bytes=settings.chunk_bytes)
        _run(args, sections, model_dir, client, settings)
        client.close()
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)


class _InProcess:
    def __init__(self, settings: ActMemSettings) -> None:
        self.emb = EmbeddedActMem(settings)

    def start(self) -> str:
        return self.emb.start()

    def stop(self) -> None:
        self.emb.stop()


class _Subprocess:
    """actmem as its own process (``python -m services.actmem``), configured like a deployment:
    through ``MEMOS_*`` environment variables."""

    def __init__(self, settings: ActMemSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        s = self.settings
        # A port free now (the service is told which, so that this process knows where to call).
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{sock.getsockname()[1]}"
        env = {
            **os.environ,
            "MEMOS_LISTEN_ADDR": address,
            "MEMOS_HEALTH_LISTEN_ADDR": "",
            "MEMOS_METRICS_ADDR": "",
            "MEMOS_MODEL_PATH": s.model_path,
            "MEMOS_DEVICE": s.device,
            "MEMOS_DTYPE": s.dtype,
            "MEMOS_DATA_DIR": str(s.data_dir),
            "MEMOS_DUMP_ROOT": str(s.resolved_dump_root),
            "MEMOS_MAX_CACHE_BYTES": str(s.max_cache_bytes),
            "MEMOS_CHUNK_BYTES": str(s.chunk_bytes),
            "MEMOS_LOG_LEVEL": s.log_level,
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.actmem"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
            )
        probe = ActMemClient(address, timeout_s=5.0)
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    probe.list("bench-probe")
                    return address
                except MemosError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        tail = self.log_path.read_text(errors="replace")[-4000:]
                        raise RuntimeError(f"actmem did not start (exit code {self.proc.poll()}):\n{tail}") from None
                    time.sleep(0.2)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the service's own graceful stop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _run(
    args: argparse.Namespace, sections: set[str], model_dir: Path, client: ActMemClient, settings: ActMemSettings
) -> None:
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
            "service": "in-process (EmbeddedActMem)" if args.in_process else "own process (python -m services.actmem)",
            "chunk_bytes": settings.chunk_bytes,
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
        results["transfer"] = _transfer(client, parts, args.rounds, settings.resolved_dump_root, args.warmup)

    # 3. merge vs extracting the concatenation ----------------------------------
    if "merge" in sections:
        results["merge"] = _merge(client, parts, memory_text, args.merge_parts)

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


# Raw file writes and reads go in pieces of this size (what the service's dump writes in, too).
_FILE_CHUNK = 8 * 1024 * 1024


def _raw_write(path: Path, kv: list, size: int) -> tuple[float, float]:  # type: ignore[type-arg]
    """Seconds to write the cache's payload as a plain file (space reserved first, like a dump),
    then to fsync it: the disk's ceiling for a dump, measured by this process."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # a filesystem that cannot reserve space: written all the same, like a dump
            pass
        for view in codec.iter_views(kv, _FILE_CHUNK):
            while view:
                view = view[os.write(fd, view) :]
        t1 = time.perf_counter()
        os.fsync(fd)
        return t1 - t0, time.perf_counter() - t0
    finally:
        os.close(fd)


def _raw_read(path: Path, into: np.ndarray) -> float:  # type: ignore[type-arg]
    """Seconds to read a file into memory allocated beforehand: the disk's ceiling for a load."""
    view = memoryview(into)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        got = 0
        while n := f.readinto(view[got : got + _FILE_CHUNK]):
            got += n
    return time.perf_counter() - t0


def _fsync_tree(directory: Path) -> None:
    """Makes what was written under ``directory`` durable (fsync of any descriptor of a file
    writes all of its dirty pages), the directory entries included."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_cached(path: Path) -> None:
    """Drops a file's (clean) pages from the page cache, so that the next read goes to the disk;
    this file's only: no privileges needed, and nothing of anyone else's is evicted."""
    paths = list(path.iterdir()) if path.is_dir() else [path]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# What each figure is compared with (the same bytes, the same round, no service in between).
_REFERENCE = {
    "grpc_download": "raw_memory_copy",
    "grpc_upload": "raw_memory_copy",
    "dump": "raw_file_write",
    "dump_durable": "raw_file_write_durable",
    "load": "raw_file_read",
    "load_cold": "raw_file_read_cold",
}


def _transfer(client: ActMemClient, parts: list, rounds: int, dump_root: Path, warmup: int) -> dict:  # type: ignore[type-arg]
    """GetCache, AddCache, a raw copy of the same tensors, DumpCaches and LoadCaches of one merged
    cache and a raw write and read of the same bytes as a file in the dump directory, ``rounds``
    times in turn (so that a busy moment of the machine hits all of them).

    Every disk measure starts from a synced disk (``os.sync()``): dirty pages left by the round
    before would otherwise throttle it to the device's write speed. The plain dump and write
    figures are then writes into the page cache; the durable ones include the fsync that puts
    the bytes on the device. Loads and reads are timed warm (the file still in the page cache,
    as right after a dump) and cold (its pages dropped first: the device's read speed).

    ``warmup`` download and upload rounds go first, apart: the first transfers of a process
    fault in the memory they receive into (and its allocator grows its heap); the rounds
    measure a warm client and service, as they are in production, and the warm-up figures
    are kept.

    On the VMs this runs on, memory makes the figures swing more than code does: the balloon
    returns freed guest memory to the host within seconds (free page reporting), and a page
    touched again after that is backed anew at ~0.5 GB/s against 5-10 GB/s for one still
    backed. Every transfer receives into new memory, so a round (or a whole run, on a fresh
    VM) that lands on such pages runs at a third of its speed. Compare runs of one boot."""
    big = client.merge("bench", [p.cache_id for p in parts], store=True)
    _, kv_local = client.get("bench", big.cache_id)  # warm-up (and the stored checksum)
    nbytes = big.size_bytes
    payload = codec.payload_size(codec.specs_of(kv_local))
    read_buf = np.empty(payload, dtype=np.uint8)
    read_buf.fill(0)  # faulted in once, not in the timed reads
    dump_header = type(big)()
    dump_header.CopyFrom(big)
    dump_header.cube_id = "dumpcube"
    client.delete_all("dumpcube")
    client.add(dump_header, kv_local)
    keys = (
        "grpc_download",
        "grpc_upload",
        "raw_memory_copy",
        "dump",
        "raw_file_write",
        "dump_durable",
        "raw_file_write_durable",
        "load",
        "raw_file_read",
        "load_cold",
        "raw_file_read_cold",
    )
    seconds: dict[str, list[float]] = {k: [] for k in keys}
    warm: dict[str, list[float]] = {"grpc_download": [], "grpc_upload": []}
    for _ in range(warmup):
        t0 = time.perf_counter()
        _, kv_local = client.get("bench", big.cache_id)
        t1 = time.perf_counter()
        client.add(big, kv_local)
        warm["grpc_download"].append(t1 - t0)
        warm["grpc_upload"].append(time.perf_counter() - t1)
    for r in range(max(1, rounds)):
        t0 = time.perf_counter()
        _, kv_local = client.get("bench", big.cache_id)
        t1 = time.perf_counter()
        client.add(big, kv_local)
        t2 = time.perf_counter()
        copies = [t.clone() for kv in kv_local for t in kv]
        t3 = time.perf_counter()
        del copies
        seconds["grpc_download"].append(t1 - t0)
        seconds["grpc_upload"].append(t2 - t1)
        seconds["raw_memory_copy"].append(t3 - t2)

        raw = dump_root / f"raw-{r}.safetensors"
        os.sync()
        written, durable = _raw_write(raw, kv_local, payload)
        seconds["raw_file_write"].append(written)
        seconds["raw_file_write_durable"].append(durable)

        os.sync()
        t0 = time.perf_counter()
        client.dump("dumpcube", f"big-{r}")
        t1 = time.perf_counter()
        _fsync_tree(dump_root / f"big-{r}")
        t2 = time.perf_counter()
        seconds["dump"].append(t1 - t0)
        seconds["dump_durable"].append(t2 - t0)

        os.sync()
        t0 = time.perf_counter()
        client.load(f"dumpcube-loaded-{r}", f"big-{r}")
        seconds["load"].append(time.perf_counter() - t0)
        client.delete_all(f"dumpcube-loaded-{r}")
        seconds["raw_file_read"].append(_raw_read(raw, read_buf))

        _drop_cached(dump_root / f"big-{r}")
        t0 = time.perf_counter()
        client.load(f"dumpcube-loaded-{r}", f"big-{r}")
        seconds["load_cold"].append(time.perf_counter() - t0)
        client.delete_all(f"dumpcube-loaded-{r}")
        _drop_cached(raw)
        seconds["raw_file_read_cold"].append(_raw_read(raw, read_buf))

        raw.unlink()
        shutil.rmtree(dump_root / f"big-{r}")

    def gbps(s: float) -> float:
        return round(nbytes / s / 1e9, 3)

    out: dict[str, object] = {"cache_bytes": nbytes, "rounds": max(1, rounds)}
    for key in keys:
        out[f"{key}_gbps"] = gbps(statistics.median(seconds[key]))
    out["per_round_gbps"] = {k: [gbps(s) for s in v] for k, v in seconds.items()}
    out["warmup_gbps"] = {k: [gbps(s) for s in v] for k, v in warm.items()}
    out["references"] = _REFERENCE
    out["target_gbps"] = 1.0
    out["notes"] = (
        "each disk measure starts after os.sync(); dump and raw_file_write are writes into the page cache, "
        "*_durable adds the fsync of the written files; load and raw_file_read read files still in the page "
        "cache, *_cold ones files whose pages were dropped first (posix_fadvise DONTNEED)"
    )
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
        print(f"cache transfer, {x['cache_bytes'] / 1e6:.1f} MB (median of {x['rounds']} rounds; [every round]):")
        print(
            "  (disk measures start after os.sync(); dump and raw file write land in the page cache, durable adds"
            " their fsync; load and raw file read read it, cold ones the device after the pages were dropped)"
        )
        for k in x["per_round_gbps"]:
            v = x[f"{k}_gbps"]
            rounds = ", ".join(f"{g:.2f}" for g in x["per_round_gbps"][k])
            if k in x["references"]:
                ref = x["references"][k]
                vs = f"{v / x[ref + '_gbps']:5.2f} of {ref.replace('_', ' ')}"
                if ref != "raw_memory_copy":
                    vs += f", {v / x['raw_memory_copy_gbps']:4.2f} of raw memory copy"
                note = f"({vs}; target >= {x['target_gbps']} GB/s)"
            else:
                note = "(reference)"
            print(f"  {k + '_gbps':28s} {v:8.3f} GB/s   {note}  [{rounds}]")
        for k, v in x.get("warmup_gbps", {}).items():
            if v:
                print(f"  ({k} of the {len(v)} warm-up rounds before them: {', '.join(f'{g:.2f}' for g in v)} GB/s)")
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
