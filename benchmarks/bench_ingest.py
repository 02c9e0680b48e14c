"""Ingest benchmarks (``make bench-ingest``).

1. Parsing throughput against the parser library called directly, in the same run:
   a 50-page pdf (pages/s; pypdf's own ``extract_text`` is the baseline), a 1 MB
   markdown file (MB/s) and a docx (python-docx's paragraph walk with each
   paragraph's style and text, the calls ours makes, is the baseline). Ours includes
   sniffing, structure-aware chunking and overlap. Target: overhead at most 20%.
   Markdown is parsed by our own code, not a library, so it is measured twice: against
   a floor (decoding and splitting on blank lines, which finds no headings and builds
   nothing per paragraph: no parser can match it; the number says how far the
   structure, units, heading paths and chunks, is from a bare split), and against
   markdown-it-py's ``parse`` (tokens only, no chunks), the markdown library a
   caller would otherwise reach for, when it is installed (rich depends on it).
2. Fast-mode add throughput through the gateway, in messages/s, with ingest
   (gateway -> ingest ParseMessages -> textmem WriteMemories) against without
   (gateway -> textmem AddMemories), each service its own process on loopback, as
   ``make run`` starts them. Target: ingest must not halve it (ratio >= 0.5).
3. Fine mode: LLM calls per added message, against an OpenAI-protocol server on
   loopback (tests/fakes), for the configured batch size and concurrency.

Prints a table and writes ``benchmarks/results/ingest_latest.json``; it never
fails on a target.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python"), str(ROOT / "sdk" / "python")]

from services.ingest import documents  # noqa: E402
from tests.ingest.helpers import make_docx, make_pdf  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ingest_latest.json"


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_of_alternating(direct, ours, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Best times of two functions run in turn, so that a load spike on a shared machine does not
    fall on one side only (as it can when every run of one side comes before the other's)."""
    d, o = [], []
    for _ in range(repeat):
        d.append(best_of(direct, 1))
        o.append(best_of(ours, 1))
    return min(d), min(o)


def sample_markdown(target_bytes: int) -> bytes:
    parts, size, k = [], 0, 0
    while size < target_bytes:
        sec = (
            f"## Section {k}\n\nDuring inspection {k} the PLC cabinet's DC 24V terminal block was checked; "
            f"edge pressure reached 2.5 bar after {k % 30} seconds. " * 3 + f"\n\n- item {k} one\n- item {k} two\n\n"
        )
        parts.append(sec)
        size += len(sec.encode())
        k += 1
    return ("# Maintenance log\n\n" + "".join(parts)).encode()


def bench_parsing(repeat: int) -> dict:
    from pypdf import PdfReader

    pages = [
        [f"Page {p} line {i}: pressure test of the PMT boot, terminal block check." for i in range(40)]
        for p in range(50)
    ]
    pdf = make_pdf(pages)
    md = sample_markdown(1024 * 1024)
    docx_bytes = make_docx(
        [("h2" if i % 10 == 0 else "p", f"Paragraph {i} about valves and terminals.") for i in range(2000)]
    )

    def pdf_direct() -> None:
        r = PdfReader(io.BytesIO(pdf))
        for page in r.pages:
            page.extract_text()

    def pdf_ours() -> None:
        units = documents.parse_document(pdf, documents.sniff(pdf, "", "x.pdf"))
        documents.chunk_units(units)

    def md_direct() -> None:
        [p for p in md.decode("utf-8").split("\n\n") if p.strip()]

    def md_ours() -> None:
        documents.chunk_units(documents.parse_document(md, documents.sniff(md, "text/markdown", "x.md")))

    def md_markdown_it() -> None:
        md_it.parse(md.decode("utf-8"))

    def docx_direct() -> None:
        import docx

        d = docx.Document(io.BytesIO(docx_bytes))
        [(p.style.name, p.text) for p in d.paragraphs]

    def docx_ours() -> None:
        documents.chunk_units(documents.parse_document(docx_bytes, documents.sniff(docx_bytes, "", "x.docx")))

    cases = [
        ("pdf_50_pages", pdf_direct, pdf_ours, "pages/s", 50, "pypdf PdfReader + extract_text per page"),
        ("markdown_1mb", md_direct, md_ours, "MB/s", len(md) / 1e6, "floor: utf-8 decode + split on blank lines"),
        ("docx_2000_paragraphs", docx_direct, docx_ours, "paragraphs/s", 2000, "python-docx: style, text"),
    ]
    try:
        from markdown_it import MarkdownIt

        md_it = MarkdownIt("commonmark")
        cases.insert(
            2,
            ("markdown_1mb_vs_markdown_it", md_markdown_it, md_ours, "MB/s", len(md) / 1e6, "markdown-it-py parse"),
        )
    except ImportError:
        pass
    out = {}
    for name, direct, ours, unit, amount, baseline in cases:
        d, o = best_of_alternating(direct, ours, repeat)
        out[name] = {
            "unit": unit,
            "baseline": baseline,
            "library": round(amount / d, 2),
            "ours": round(amount / o, 2),
            "overhead_pct": round((o / d - 1) * 100, 1),
            "target_overhead_pct": 20.0,
        }
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{address} exited with {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{address} did not start")


def conversation(n: int, seed: int) -> list[dict]:
    topics = ["hotel", "flight", "violin", "PLC cabinet", "terminal block", "pressure", "garden", "recipe"]
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"Message {seed}-{i}: let us talk about the {topics[(i + seed) % len(topics)]} "
            f"and what happened on day {i % 31} of month {seed % 12 + 1}.",
        }
        for i in range(n)
    ]


async def add_throughput(address: str, messages: int, per_add: int, concurrency: int, tag: str) -> float:
    from memos.client import AsyncMemosClient

    client = AsyncMemosClient(address)
    try:
        await client.add_memories("bench", [f"warm-{tag}"], conversation(4, 0))
        batches = [conversation(per_add, 1000 * k + hash(tag) % 997) for k in range(messages // per_add)]
        sem = asyncio.Semaphore(concurrency)

        async def one(k: int, batch: list[dict]) -> None:
            async with sem:
                await client.add_memories("bench", [f"add-{tag}-{k % 4}"], batch, timeout=120)

        t = time.perf_counter()
        await asyncio.gather(*(one(k, b) for k, b in enumerate(batches)))
        return messages / (time.perf_counter() - t)
    finally:
        await client.close()


def bench_add(messages: int, per_add: int, concurrency: int) -> dict:
    data = tempfile.mkdtemp(prefix="memos-bench-ingest-")
    tm, ing, gw_plain, gw_ingest = (f"127.0.0.1:{free_port()}" for _ in range(4))
    env = {**os.environ, "MEMOS_DATA_DIR": data, "MEMOS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    specs = [
        ("textmem", tm, {"MEMOS_LISTEN_ADDR": tm}),
        ("ingest", ing, {"MEMOS_LISTEN_ADDR": ing, "MEMOS_TEXTMEM_ADDR": tm}),
        ("gateway", gw_plain, {"MEMOS_LISTEN_ADDR": gw_plain, "MEMOS_TEXTMEM_ADDR": tm, "MEMOS_INGEST_ADDR": ""}),
        ("gateway", gw_ingest, {"MEMOS_LISTEN_ADDR": gw_ingest, "MEMOS_TEXTMEM_ADDR": tm, "MEMOS_INGEST_ADDR": ing}),
    ]
    procs = []
    try:
        for name, addr, extra in specs:
            p = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env={**env, **extra})
            procs.append(p)
            wait_serving(addr, p)
        # Alternate, so that neither side gets the warmer store; best of two each.
        plain, via = [], []
        for r in range(2):
            plain.append(asyncio.run(add_throughput(gw_plain, messages, per_add, concurrency, f"plain{r}")))
            via.append(asyncio.run(add_throughput(gw_ingest, messages, per_add, concurrency, f"ingest{r}")))
        return {
            "messages": messages,
            "messages_per_add": per_add,
            "concurrency": concurrency,
            "without_ingest_msgs_per_s": round(max(plain), 1),
            "with_ingest_msgs_per_s": round(max(via), 1),
            "ratio": round(max(via) / max(plain), 3),
            "target_ratio": 0.5,
        }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def bench_fine(messages: int, batch: int, concurrency: int) -> dict:
    from services.ingest.models import ChatMessage, Part
    from services.ingest.pipeline import Ingestor
    from services.ingest.settings import IngestSettings
    from tests.fakes.openai_server import FakeOpenAI
    from tests.ingest.conftest import scripted_llm

    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    fake.chat_delay_s = 0.05  # a fast model's latency
    with fake.serve() as url:
        ing = Ingestor(
            IngestSettings(llm_base_url=url, llm_model="m", fine_batch_messages=batch, llm_max_concurrency=concurrency)
        )
        msgs = [ChatMessage(d["role"], [Part("text", text=d["content"])]) for d in conversation(messages, 7)]
        t = time.perf_counter()
        out = asyncio.run(ing.extract(msgs, mode="fine"))
        elapsed = time.perf_counter() - t
    return {
        "messages": messages,
        "fine_batch_messages": batch,
        "llm_max_concurrency": concurrency,
        "llm_calls": out.llm_calls,
        "llm_calls_per_message": round(out.llm_calls / messages, 3),
        "max_calls_in_flight": fake.chat_max_in_flight,
        "seconds_with_50ms_llm": round(elapsed, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--per-add", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--skip-add", action="store_true", help="only the in-process parts")
    args = ap.parse_args()
    results: dict = {"parsing": bench_parsing(args.repeat)}
    for name, r in results["parsing"].items():
        print(
            f"parse {name:28s} library {r['library']:>10} {r['unit']:12s} ours {r['ours']:>10}  overhead {r['overhead_pct']:>6}% (target <= 20%)"
        )
    results["fine"] = bench_fine(96, 8, 4)
    f = results["fine"]
    print(
        f"fine  {f['messages']} messages: {f['llm_calls']} LLM calls ({f['llm_calls_per_message']}/message), at most {f['max_calls_in_flight']} in flight"
    )
    if not args.skip_add:
        results["fast_add"] = bench_add(args.messages, args.per_add, args.concurrency)
        a = results["fast_add"]
        print(
            f"add   without ingest {a['without_ingest_msgs_per_s']} msgs/s, with ingest {a['with_ingest_msgs_per_s']} msgs/s, "
            f"ratio {a['ratio']} (target >= 0.5)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
