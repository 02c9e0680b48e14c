"""Gateway benchmarks (``make bench``): search latency, fan-out, add throughput, memory.

Starts textmem and the gateway as separate processes on loopback ports (as
``make run`` does, on the embedded defaults: Milvus Lite and SQLite under a
temporary data directory), loads a corpus made from the LoCoMo conversations,
and measures through the gateway's gRPC API with the async SDK:

1. search latency (p50/p90/p99) on one cube of ``--memories`` memories, at
   concurrency 1 and 8, with a distinct query per request so every request
   pays for its query embedding (a separate row repeats queries to show the
   query-cache hit path, another calls textmem directly);
2. fan-out: one search over ``--cubes`` cubes of ``--fanout-memories`` each
   against the same search over one of those cubes (ratio of latencies);
3. fast-mode add throughput (messages/s) end to end, against the embedder's
   own throughput on the very window texts the adds produced, measured in
   this process with textmem's embedder settings, in rounds that alternate
   with the adds while the suite is idle;
4. the suite's memory: the sums of the resident and proportional set sizes of
   the textmem and gateway processes and all their child processes (Milvus
   Lite 3 runs inside textmem, so today there are none), after loading the
   main cube and at the end.

The bulk load goes through textmem's WriteMemories (one LoCoMo turn per
memory) by default: on a 2-core machine, fast-mode adds of the same number of
memories embed 4-turn windows and take about four times as long
(``--load-via gateway`` does that). Every row also shows how much CPU other
processes used meanwhile, since that skews the numbers on a shared machine.

It prints numbers, ratios and the issue's targets side by side and writes
them to ``benchmarks/results/latest.json``. It never fails on a target: the
exit status is non-zero only when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo10.json"
RESULTS_PATH = ROOT / "benchmarks" / "results" / "latest.json"
USER = "bench-user"
MAIN_CUBE = "bench-main"
ADD_CUBE = "bench-add"
TOP_K = 10
CALL_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 900.0
WARMUP_QUERIES = 5
CYCLE_SHIFT_S = 400 * 86400  # each pass over the corpus is moved 400 days later, so its texts differ

TARGETS = {
    "search_p50_ms": 20.0,
    "fanout_ratio": 1.5,
    "add_ratio": 0.8,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# corpus ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    speaker: str
    role: str
    text: str
    chat_time: float | None


def _parse_session_time(value: str) -> float | None:
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return dt.datetime.strptime(value.strip(), fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    return None


class Corpus:
    """LoCoMo turns as chat messages and as single-turn memories, cycled as often as needed."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.turns: list[Turn] = []
        questions: list[str] = []
        for sample in data:
            conv = sample["conversation"]
            speaker_a = conv.get("speaker_a", "")
            sessions = sorted(
                (int(m.group(1)), k)
                for k in conv
                if (m := re.fullmatch(r"session_(\d+)", k)) and isinstance(conv[k], list)
            )
            for n, key in sessions:
                base = _parse_session_time(str(conv.get(f"session_{n}_date_time", "")))
                for i, turn in enumerate(conv[key]):
                    text = str(turn.get("text", "")).strip()
                    if turn.get("blip_caption"):
                        text += f" [shares image: {turn['blip_caption']}]"
                    if not text:
                        continue
                    role = "user" if turn.get("speaker") == speaker_a else "assistant"
                    # Turns of a session a minute apart, so that windows carry distinct times.
                    when = None if base is None else base + 60 * i
                    self.turns.append(Turn(str(turn.get("speaker", role)), role, text, when))
            questions.extend(str(q["question"]).strip() for q in sample.get("qa", []) if q.get("question"))
        if not self.turns:
            raise SystemExit(f"no turns found in {path}")
        self.n_questions = len(set(questions))
        rng = random.Random(20240501)
        pool = list(dict.fromkeys(q for q in questions if q))
        rng.shuffle(pool)
        # Past the questions: the first words of turns, as a user would recall them.
        extra = list(dict.fromkeys(" ".join(t.text.split()[:12]) for t in self.turns))
        rng.shuffle(extra)
        seen = set(pool)
        pool.extend(q for q in extra if q not in seen)
        self._queries = pool
        self._next_query = 0

    def _at(self, i: int) -> tuple[Turn, float | None]:
        turn = self.turns[i % len(self.turns)]
        cycle = i // len(self.turns)
        when = None if turn.chat_time is None else turn.chat_time + cycle * CYCLE_SHIFT_S
        return turn, when

    def message(self, i: int) -> dict[str, Any]:
        turn, when = self._at(i)
        msg: dict[str, Any] = {"role": turn.role, "content": turn.text}
        if when is not None:
            msg["chat_time"] = when
        return msg

    def memory(self, i: int) -> tuple[str, Turn, float | None]:
        """A single-turn memory: ``Speaker (date): text`` plus the turn as its source."""
        turn, when = self._at(i)
        date = dt.datetime.fromtimestamp(when, tz=dt.UTC).strftime("%Y-%m-%d") if when is not None else "undated"
        return f"{turn.speaker} ({date}): {turn.text}", turn, when

    def take_queries(self, n: int) -> list[str]:
        """``n`` queries never handed out before (so none is in textmem's query-embedding cache)."""
        if self._next_query + n > len(self._queries):
            raise SystemExit(f"the corpus has only {len(self._queries)} distinct queries; ask for fewer")
        out = self._queries[self._next_query : self._next_query + n]
        self._next_query += n
        return out


# processes and their memory ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _kb_field(path: str, field: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_memory(pid: int, label: str) -> dict[str, Any] | None:
    rss = _kb_field(f"/proc/{pid}/status", "VmRSS")
    if rss is None:
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    pss = _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")
    return {
        "pid": pid,
        "role": label,
        "comm": comm,
        "rss_mib": rss / 1024,
        "pss_mib": None if pss is None else pss / 1024,
    }


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _machine_busy_s() -> float:
    """CPU-seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


async def settle(suite: Suite, max_s: float = 120.0, window_s: float = 1.0, busy_below: float = 0.03) -> float:
    """Waits until the suite's processes use under ``busy_below`` of a core over ``window_s``
    (at most ``max_s``); returns the seconds waited. After a bulk load textmem still has work
    of its own (Milvus Lite seals what was written, the per-cube copies catch up): searches
    measured during it would time that work, not a search."""
    started = time.perf_counter()
    while True:
        before = sum(_proc_cpu_s(p) for p in suite.pids())
        await asyncio.sleep(window_s)
        used = sum(_proc_cpu_s(p) for p in suite.pids()) - before
        waited = time.perf_counter() - started
        if used / window_s < busy_below or waited >= max_s:
            return waited


class CpuMeter:
    """How much CPU the machine spent outside this benchmark (the suite, its children and this process)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids

    def snapshot(self) -> tuple[float, float, float]:
        ours = sum(_proc_cpu_s(p) for p in self._pids())
        return time.perf_counter(), _machine_busy_s(), ours

    @staticmethod
    def other_pct(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        """Share of the machine's capacity used by other processes between two snapshots, in percent."""
        wall = b[0] - a[0]
        if wall <= 0:
            return 0.0
        other = max((b[1] - a[1]) - (b[2] - a[2]), 0.0)
        return 100.0 * other / (wall * (os.cpu_count() or 1))


def wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service for {address} exited with {proc.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{address} did not become healthy in {timeout_s:.0f}s")


class Suite:
    """textmem and the gateway as child processes, on fresh loopback ports and a given data directory."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.textmem_addr = f"127.0.0.1:{free_port()}"
        self.gateway_addr = f"127.0.0.1:{free_port()}"

    def start(self) -> float:
        # Inherited MEMOS_* settings and OTLP exporters are dropped: the suite runs on its defaults, talks to loopback only.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MEMOS_", "OTEL_EXPORTER_"))}
        base.update(PYTHONUNBUFFERED="1", MEMOS_LOG_LEVEL="WARNING", MEMOS_LOG_FORMAT="text")
        specs = [
            (
                "textmem",
                self.textmem_addr,
                {"MEMOS_LISTEN_ADDR": self.textmem_addr, "MEMOS_DATA_DIR": str(self.data_dir)},
            ),
            (
                "gateway",
                self.gateway_addr,
                {"MEMOS_LISTEN_ADDR": self.gateway_addr, "MEMOS_TEXTMEM_ADDR": self.textmem_addr},
            ),
        ]
        t0 = time.perf_counter()
        for name, address, env in specs:
            out = (self.log_dir / f"{name}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env={**base, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append((name, proc))
            try:
                wait_serving(address, proc)
            except RuntimeError:
                self.print_logs()
                raise
            log(f"{name} serving on {address} (pid {proc.pid})")
        return time.perf_counter() - t0

    def pids(self) -> list[int]:
        out = [os.getpid(), *descendants(os.getpid())]
        return list(dict.fromkeys(out))

    def memory(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for name, proc in self.procs:
            for pid, label in [(proc.pid, name), *((d, f"{name} child") for d in descendants(proc.pid))]:
                row = process_memory(pid, label)
                if row is not None:
                    rows.append(row)
        total_rss = sum(r["rss_mib"] for r in rows)
        have_pss = all(r["pss_mib"] is not None for r in rows)
        total_pss = sum(r["pss_mib"] for r in rows) if have_pss else None
        return {"total_rss_mib": total_rss, "total_pss_mib": total_pss, "processes": rows}

    def print_logs(self, lines: int = 30) -> None:
        for name, _ in self.procs:
            path = self.log_dir / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                print(f"--- last lines of {name}'s log ---", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            # Children (Milvus Lite's server) are remembered first, to end any the service leaves behind.
            kids = [(pid, st[1]) for pid in descendants(proc.pid) if (st := _proc_stat(pid)) is not None]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop in 30s; killing it")
                    proc.kill()
                    proc.wait()
            for pid, started in kids:
                st = _proc_stat(pid)
                if st is not None and st[1] == started:
                    log(f"{name} left child process {pid} running; ending it")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        self.procs.clear()


# measurement helpers -----------------------------------------------------------------------------------------


async def timed_calls(
    fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any], concurrency: int
) -> tuple[list[float], float, list[Any]]:
    """Runs ``fn`` over ``items`` with ``concurrency`` callers; per-call latencies (s), wall time, results."""
    it = iter(items)
    latencies: list[float] = []
    results: list[Any] = []

    async def worker() -> None:
        for item in it:
            t0 = time.perf_counter()
            res = await fn(item)
            latencies.append(time.perf_counter() - t0)
            results.append(res)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0, results


def latency_stats(latencies: Sequence[float], wall_s: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000.0
    return {
        "n": len(latencies),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "qps": len(latencies) / wall_s if wall_s > 0 else 0.0,
    }


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


class Progress:
    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.t0 = time.perf_counter()
        self._next = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now >= self._next or self.done >= self.total:
            rate = self.done / max(now - self.t0, 1e-9)
            log(f"  {self.label}: {self.done:,}/{self.total:,} {self.unit} ({rate:.1f}/s)")
            self._next = now + 15.0


# the benchmark -----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, corpus: Corpus, suite: Suite) -> None:
        from memos.client import AsyncMemosClient
        from memos.textmem.v1 import textmem_pb2_grpc

        self.args = args
        self.corpus = corpus
        self.suite = suite
        self.client = AsyncMemosClient(suite.gateway_addr)
        self.tm_channel = grpc.aio.insecure_channel(
            suite.textmem_addr,
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
        )
        self.textmem = textmem_pb2_grpc.TextMemServiceStub(self.tm_channel)
        self.next_index = 0  # next unused position in the (cycled) corpus
        self.meter = CpuMeter(suite.pids)

    def take_indices(self, n: int) -> range:
        r = range(self.next_index, self.next_index + n)
        self.next_index += n
        return r

    async def close(self) -> None:
        await self.client.close()
        await self.tm_channel.close()

    # loading ----------------------------------------------------------------
    async def load_cube(self, cube_id: str, n: int, label: str) -> dict[str, Any]:
        if self.args.load_via == "gateway":
            return await self._load_via_gateway(cube_id, n, label)
        return await self._load_via_textmem(cube_id, n, label)

    async def _load_via_textmem(self, cube_id: str, n: int, label: str) -> dict[str, Any]:
        """Single-turn memories through textmem's WriteMemories (embedded there), after creating the cube."""
        from memos.common.v1 import memory_pb2
        from memos.textmem.v1 import textmem_pb2

        await self.client.create_cube(USER, cube_id, timeout=CALL_TIMEOUT_S)
        candidates = []
        for i in self.take_indices(n):
            text, turn, when = self.corpus.memory(i)
            source = memory_pb2.Source(type=memory_pb2.SOURCE_TYPE_CHAT, role=turn.role, content=turn.text)
            if when is not None:
                source.chat_time.CopyFrom(_ts(when))
            candidates.append(
                textmem_pb2.MemoryCandidate(
                    memory=text,
                    metadata=memory_pb2.MemoryMetadata(
                        memory_type=memory_pb2.MEMORY_TYPE_LONG_TERM, key=text[:80], tags=["bench"], sources=[source]
                    ),
                )
            )
        progress = Progress(label, n, "memories")

        async def write(batch: Sequence[Any]) -> int:
            req = textmem_pb2.WriteMemoriesRequest(
                request_id=uuid.uuid4().hex, cube_id=cube_id, user_id=USER, session_id="bench", candidates=batch
            )
            resp = await self.textmem.WriteMemories(req, timeout=LOAD_TIMEOUT_S)
            progress.add(len(resp.memories))
            return len(resp.memories)

        _, wall, written = await timed_calls(write, chunks(candidates, self.args.load_batch), 2)
        return {"cube_id": cube_id, "memories": sum(written), "seconds": wall, "per_s": sum(written) / wall}

    async def _load_via_gateway(self, cube_id: str, n: int, label: str) -> dict[str, Any]:
        """Fast-mode adds through the gateway, sized so that the windows come to ``n`` memories."""
        from services.textmem.settings import TextMemSettings
        from services.textmem.windowing import window_bounds

        size = TextMemSettings.model_fields["window_size"].default
        overlap = TextMemSettings.model_fields["window_overlap"].default
        step = size - overlap
        per_add = 100  # windows per add request
        requests = []
        left = n
        while left > 0:
            w = min(per_add, left)
            m = size + (w - 1) * step
            assert len(window_bounds(m, size, overlap)) == w
            requests.append([self.corpus.message(i) for i in self.take_indices(m)])
            left -= w
        progress = Progress(label, n, "memories")

        async def add(messages: list[dict[str, Any]]) -> int:
            resp = await self.client.add_memories(USER, [cube_id], messages, timeout=LOAD_TIMEOUT_S)
            progress.add(len(resp.memories))
            return len(resp.memories)

        _, wall, written = await timed_calls(add, requests, 2)
        return {"cube_id": cube_id, "memories": sum(written), "seconds": wall, "per_s": sum(written) / wall}

    # searching --------------------------------------------------------------
    async def search_row(
        self, name: str, cubes: list[str], per_cube: int, concurrency: int, queries: list[str], direct: bool = False
    ) -> dict[str, Any]:
        from memos.textmem.v1 import textmem_pb2

        failures = 0
        empty = 0

        async def via_gateway(q: str) -> None:
            nonlocal failures, empty
            resp = await self.client.search_memories(USER, cubes, q, top_k=TOP_K, timeout=CALL_TIMEOUT_S)
            failures += sum(1 for b in resp.text_mem if b.status.code != 0)
            empty += not resp.ranked

        async def via_textmem(q: str) -> None:
            nonlocal empty
            req = textmem_pb2.SearchMemoriesRequest(cube_id=cubes[0], query=q, top_k=TOP_K)
            resp = await self.textmem.SearchMemories(req, timeout=CALL_TIMEOUT_S)
            empty += not resp.memories

        fn = via_textmem if direct else via_gateway
        warm = queries[:WARMUP_QUERIES]
        measured = queries[WARMUP_QUERIES:]
        await timed_calls(fn, warm, min(concurrency, len(warm)))
        failures = empty = 0
        before = self.meter.snapshot()
        latencies, wall, _ = await timed_calls(fn, measured, concurrency)
        other = CpuMeter.other_pct(before, self.meter.snapshot())
        row = {
            "name": name,
            "cubes": len(cubes),
            "memories_per_cube": per_cube,
            "concurrency": concurrency,
            **latency_stats(latencies, wall),
            "cube_failures": failures,
            "empty_results": empty,
            "other_cpu_pct": other,
        }
        log(
            f"  {name}: cubes={len(cubes)} conc={concurrency} n={row['n']} "
            f"p50={row['p50_ms']:.1f}ms p99={row['p99_ms']:.1f}ms qps={row['qps']:.1f} (other processes: {other:.0f}% CPU)"
        )
        return row

    def fresh_queries(self) -> list[str]:
        return self.corpus.take_queries(self.args.queries + WARMUP_QUERIES)

    # adding -----------------------------------------------------------------
    async def add_throughput(self, embedder: Any) -> dict[str, Any]:
        """Fast-mode adds through the gateway, in rounds; after each round the embedder in this process
        embeds that round's windows (the suite idle). Interleaving keeps other load on the machine from
        landing on one side of the ratio only."""
        per, reqs, conc, rounds = (
            self.args.add_batch,
            self.args.add_requests,
            self.args.add_concurrency,
            max(1, min(self.args.add_rounds, self.args.add_requests)),
        )
        batches = [[self.corpus.message(i) for i in self.take_indices(per)] for _ in range(reqs + 1)]

        async def add(messages: list[dict[str, Any]]) -> list[str]:
            resp = await self.client.add_memories(USER, [ADD_CUBE], messages, timeout=LOAD_TIMEOUT_S)
            return [m.memory for m in resp.memories]

        warm_windows = await add(batches[0])  # creates the cube, warms the path
        embedder.embed(warm_windows)
        own = CpuMeter(lambda: [os.getpid()])
        totals = {k: 0.0 for k in ("gw_s", "grouped_s", "one_call_s", "gw_other", "emb_other")}
        latencies: list[float] = []
        per_round: list[dict[str, Any]] = []
        n_windows = 0
        for r in range(rounds):
            chunk = batches[1:][r * reqs // rounds : (r + 1) * reqs // rounds]
            before = self.meter.snapshot()
            lat, wall, windows = await timed_calls(add, chunk, conc)
            gw_other = CpuMeter.other_pct(before, self.meter.snapshot())
            latencies += lat
            before = own.snapshot()
            t0 = time.perf_counter()
            for g in windows:  # one call per request, as textmem embeds a request's windows
                embedder.embed(g)
            grouped = time.perf_counter() - t0
            t0 = time.perf_counter()
            embedder.embed([w for g in windows for w in g])
            one_call = time.perf_counter() - t0
            emb_other = CpuMeter.other_pct(before, own.snapshot())
            msgs = per * len(chunk)
            n_windows += sum(len(g) for g in windows)
            for k, v in (
                ("gw_s", wall),
                ("grouped_s", grouped),
                ("one_call_s", one_call),
                ("gw_other", gw_other * wall),
                ("emb_other", emb_other * (grouped + one_call)),
            ):
                totals[k] += v
            per_round.append(
                {
                    "messages": msgs,
                    "gateway_messages_per_s": msgs / wall,
                    "embedder_per_request_messages_per_s": msgs / grouped,
                    "ratio_vs_per_request": grouped / wall,
                    "ratio_vs_one_call": one_call / wall,
                    "gateway_other_cpu_pct": gw_other,
                    "embedder_other_cpu_pct": emb_other,
                }
            )
            log(
                f"  round {r + 1}/{rounds}: gateway {msgs / wall:.1f} msg/s (other CPU {gw_other:.0f}%), "
                f"embedder {msgs / grouped:.1f} msg/s per request, {msgs / one_call:.1f} in one call "
                f"(other CPU {emb_other:.0f}%)"
            )
        messages = per * reqs
        gateway = {
            "messages": messages,
            "messages_per_request": per,
            "requests": reqs,
            "concurrency": conc,
            "rounds": rounds,
            "windows": n_windows,
            "seconds": totals["gw_s"],
            "messages_per_s": messages / totals["gw_s"],
            "windows_per_s": n_windows / totals["gw_s"],
            "request_p50_ms": float(np.percentile(np.asarray(latencies) * 1000, 50)),
            "other_cpu_pct": totals["gw_other"] / totals["gw_s"],
        }
        emb = {
            "messages": messages,
            "windows": n_windows,
            "per_request_seconds": totals["grouped_s"],
            "per_request_messages_per_s": messages / totals["grouped_s"],
            "one_call_seconds": totals["one_call_s"],
            "one_call_messages_per_s": messages / totals["one_call_s"],
            "other_cpu_pct": totals["emb_other"] / (totals["grouped_s"] + totals["one_call_s"]),
        }
        return {
            "gateway": gateway,
            "embedder": emb,
            "rounds": per_round,
            "ratio_vs_per_request": gateway["messages_per_s"] / emb["per_request_messages_per_s"],
            "ratio_vs_one_call": gateway["messages_per_s"] / emb["one_call_messages_per_s"],
            "median_round_ratio_vs_per_request": float(np.median([x["ratio_vs_per_request"] for x in per_round])),
            "median_round_ratio_vs_one_call": float(np.median([x["ratio_vs_one_call"] for x in per_round])),
            "warm_windows": len(warm_windows),
        }


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def search_breakdown(
    data_dir: Path, embedder: Any, cube_id: str, fan_cubes: list[str], queries: list[str], fan_queries: list[str]
) -> dict[str, Any]:
    """Times each step of TextMemory.search in this process on the suite's stores (the suite is stopped).

    Then runs one search per fan-out cube for each of ``fan_queries``, one after the other and in as many
    threads as cubes (as textmem's servicer does with asyncio.to_thread), to show how much of a fan-out
    overlaps.
    """
    from concurrent.futures import ThreadPoolExecutor

    from services.textmem.app import build_memory
    from services.textmem.memory import rrf_fuse
    from services.textmem.models import MemoryFilter
    from services.textmem.settings import TextMemSettings
    from services.textmem.stores.sqlite_graph import SqliteGraphStore

    # The suite's defaults (the suite ran without MEMOS_* variables), on its data directory.
    settings = TextMemSettings.model_construct(data_dir=data_dir, listen_addr="127.0.0.1:0")
    mem = build_memory(settings, embedder=embedder)
    try:
        flt = MemoryFilter()
        depth = TOP_K * 3
        names = ["embed query", "vector search", "lexical (bm25)", "rrf fuse", "hydrate (sqlite)", "count (sqlite)"]
        steps: dict[str, list[float]] = {k: [] for k in [*names, "sum of the steps", "fts5 bm25 (for comparison)"]}
        # The same full-text query answered by SQLite's FTS5 index instead of the per-cube copies
        # (MEMOS_SQLITE_LEXICAL_INDEX=false), timed beside the steps, not counted in their sum.
        fts5 = SqliteGraphStore(settings.data_dir / "graph.sqlite3", lexical_index=False)
        for i, q in enumerate(queries):
            t = [time.perf_counter()]
            qvec = embedder.embed([q])[0]
            t.append(time.perf_counter())
            dense = mem.vectors.search(cube_id, qvec, flt, depth)
            t.append(time.perf_counter())
            lexical = mem.graph.search_lexical(cube_id, q, flt, depth)
            t.append(time.perf_counter())
            fused = rrf_fuse([[x for x, _ in dense], [x for x, _ in lexical]])
            t.append(time.perf_counter())
            mem.graph.get_memories(cube_id, [x for x, _ in fused[:depth]])
            t.append(time.perf_counter())
            mem.graph.count(cube_id, flt)
            t.append(time.perf_counter())
            t_fts5 = time.perf_counter()
            fts5.search_lexical(cube_id, q, flt, depth)
            t_fts5 = time.perf_counter() - t_fts5
            if i < WARMUP_QUERIES:
                continue
            for k, a, b in zip(names, t, t[1:], strict=False):
                steps[k].append(b - a)
            steps["sum of the steps"].append(t[-1] - t[0])
            steps["fts5 bm25 (for comparison)"].append(t_fts5)
        fts5.close()
        out: dict[str, Any] = {
            "cube_id": cube_id,
            "vectors_in_cube": mem.vectors.count(cube_id),
            "steps": {
                k: {"p50_ms": float(np.percentile(v, 50) * 1000), "mean_ms": float(np.mean(v) * 1000)}
                for k, v in steps.items()
            },
        }
        if fan_cubes and fan_queries:
            # Query vectors first (cached in the service too), so only the per-cube work is compared.
            vecs = {q: embedder.embed([q])[0] for q in fan_queries}
            sequential: list[float] = []
            threaded: list[float] = []
            with ThreadPoolExecutor(len(fan_cubes)) as pool:
                for q in fan_queries:
                    t0 = time.perf_counter()
                    for c in fan_cubes:
                        mem.vectors.search(c, vecs[q], flt, depth)
                        mem.graph.search_lexical(c, q, flt, depth)
                    sequential.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    list(
                        pool.map(
                            lambda c, q=q: (
                                mem.vectors.search(c, vecs[q], flt, depth),
                                mem.graph.search_lexical(c, q, flt, depth),
                            ),
                            fan_cubes,
                        )
                    )
                    threaded.append(time.perf_counter() - t0)
            out["fanout"] = {
                "cubes": len(fan_cubes),
                "queries": len(fan_queries),
                "sequential_p50_ms": float(np.percentile(sequential, 50) * 1000),
                "threaded_p50_ms": float(np.percentile(threaded, 50) * 1000),
            }
            search_many = getattr(mem.vectors, "search_many", None)
            if search_many is not None:  # one vector-store call for all the cubes, where the store has it
                batched: list[float] = []
                for q in fan_queries:
                    t0 = time.perf_counter()
                    search_many(fan_cubes, vecs[q], flt, depth)
                    batched.append(time.perf_counter() - t0)
                out["fanout"]["milvus_search_many_p50_ms"] = float(np.percentile(batched, 50) * 1000)
        return out
    finally:
        mem.close()


# report ------------------------------------------------------------------------------------------------------


def fmt_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def report(res: dict[str, Any]) -> str:
    out: list[str] = []
    m = res["machine"]
    cfg = res["config"]
    out += [
        "",
        *title_lines(res, "gateway"),
        f"load average at start {m['loadavg_start']}, at end {m['loadavg_end']}; "
        "'other CPU' columns: share of the machine used by processes outside the benchmark during that row",
        f"corpus: {res['corpus']['file']}: {res['corpus']['turns']:,} turns, {res['corpus']['questions']:,} questions "
        "(queries: its questions, then the first words of turns; each query is used in one row only unless 'cached')",
        "",
        "Loading (suite started in {:.1f}s)".format(res["startup_s"]),
    ]
    out.append(
        fmt_table(
            ["cube", "memories", "via", "seconds", "memories/s"],
            [[x["cube_id"], x["memories"], x["via"], x["seconds"], x["per_s"]] for x in res["loads"]],
        )
    )
    out += [
        "",
        f"Search latency (ms, measured by the client, query embedding included; top_k={TOP_K}; "
        f"{WARMUP_QUERIES} warm-up queries per row not counted)",
    ]
    out.append(
        fmt_table(
            ["path", "cubes", "mem/cube", "conc", "n", "p50", "p90", "p99", "mean", "max", "qps", "other CPU %"],
            [
                [
                    r["name"],
                    r["cubes"],
                    r["memories_per_cube"],
                    r["concurrency"],
                    r["n"],
                    r["p50_ms"],
                    r["p90_ms"],
                    r["p99_ms"],
                    r["mean_ms"],
                    r["max_ms"],
                    r["qps"],
                    r["other_cpu_pct"],
                ]
                for r in res["search"]
            ],
        )
    )
    bad = [r for r in res["search"] if r["cube_failures"] or r["empty_results"]]
    for r in bad:
        out.append(
            f"  note: {r['name']} conc {r['concurrency']}: {r['cube_failures']} failed cube searches, {r['empty_results']} empty results"
        )
    out += ["", f"Fan-out: one search over {cfg['cubes']} cubes vs the same search over one of them"]
    out.append(
        fmt_table(
            [
                "comparison",
                "conc",
                "1-cube p50",
                f"{cfg['cubes']}-cube p50",
                "p50 ratio",
                "1-cube p99",
                f"{cfg['cubes']}-cube p99",
                "p99 ratio",
                "target",
            ],
            [
                [
                    f["comparison"],
                    f["concurrency"],
                    f["one_p50_ms"],
                    f["many_p50_ms"],
                    f["p50_ratio"],
                    f["one_p99_ms"],
                    f["many_p99_ms"],
                    f["p99_ratio"],
                    f"p50 <= {TARGETS['fanout_ratio']:g}x",
                ]
                for f in res["fanout"]
            ],
        )
    )
    add = res["add"]
    g, e = add["gateway"], add["embedder"]
    out += [
        "",
        f"Fast-mode add throughput: {g['requests']} AddMemories of {g['messages_per_request']} messages, "
        f"{g['concurrency']} in flight, into a new cube; textmem makes windows of {add['window_size']} messages "
        f"overlapping by {add['window_overlap']} and embeds each request's windows in one call",
        f"  embedder rows: textmem's embedder (built from its default settings) in this process, on the exact "
        f"window texts the adds stored, in {g['rounds']} rounds alternating with the adds while the suite is idle",
    ]
    out.append(
        fmt_table(
            [
                "path",
                "messages",
                "windows",
                "seconds",
                "msg/s",
                "windows/s",
                "gateway / this",
                "median of rounds",
                "other CPU %",
            ],
            [
                [
                    "gateway AddMemories, end to end",
                    g["messages"],
                    g["windows"],
                    g["seconds"],
                    g["messages_per_s"],
                    g["windows_per_s"],
                    "",
                    "",
                    g["other_cpu_pct"],
                ],
                [
                    "embedder, one call per request",
                    e["messages"],
                    e["windows"],
                    e["per_request_seconds"],
                    e["per_request_messages_per_s"],
                    e["windows"] / e["per_request_seconds"],
                    add["ratio_vs_per_request"],
                    add["median_round_ratio_vs_per_request"],
                    e["other_cpu_pct"],
                ],
                [
                    "embedder, all windows in one call",
                    e["messages"],
                    e["windows"],
                    e["one_call_seconds"],
                    e["one_call_messages_per_s"],
                    e["windows"] / e["one_call_seconds"],
                    add["ratio_vs_one_call"],
                    add["median_round_ratio_vs_one_call"],
                    "",
                ],
            ],
        )
    )
    out += [
        "",
        "Suite memory (textmem + gateway + their child processes; RSS sums count shared pages twice, PSS does not)",
    ]
    mem_rows = []
    for snap in res["memory"]:
        mem_rows.append([snap["when"], "total", "", snap["total_rss_mib"], snap["total_pss_mib"] or 0.0])
        for p in snap["processes"]:
            mem_rows.append(["", p["role"], f"{p['comm']} {p['pid']}", p["rss_mib"], p["pss_mib"] or 0.0])
    out.append(fmt_table(["when", "process", "comm pid", "RSS MiB", "PSS MiB"], mem_rows))
    b = res.get("breakdown")
    if b:
        out += [
            "",
            f"Where a one-cube search's time goes: TextMemory's steps timed in this process on cube {b['cube_id']}, "
            f"suite stopped, {b['vectors_in_cube']:,} vectors in that cube, {res['collection_vectors']:,} in the collection (ms)",
        ]
        out.append(fmt_table(["step", "p50", "mean"], [[k, v["p50_ms"], v["mean_ms"]] for k, v in b["steps"].items()]))
        f = b.get("fanout")
        if f:
            out.append(
                f"  {f['cubes']} cubes' milvus + fts searches for one query (vector given): one after the other "
                f"p50 {f['sequential_p50_ms']:.1f} ms, in {f['cubes']} threads p50 {f['threaded_p50_ms']:.1f} ms "
                f"({f['queries']} queries)"
            )
            if "milvus_search_many_p50_ms" in f:
                out.append(
                    f"  the vector store's search_many over the {f['cubes']} cubes (one call): "
                    f"p50 {f['milvus_search_many_p50_ms']:.1f} ms"
                )
    out += ["", "Summary against the issue's targets (informational: the run never fails on them)"]
    out.append(fmt_table(["measure", "measured", "target", ""], res["summary"]))
    out.append("")
    return "\n".join(out)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (uncommitted changes are measured too)."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "changed_files": changed}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo locomo10.json (never copied into the repo)")
    p.add_argument("--memories", type=int, default=10_000, help="memories in the main cube")
    p.add_argument("--queries", type=int, default=200, help="measured queries per search row")
    p.add_argument("--cubes", type=int, default=8, help="cubes in the fan-out search")
    p.add_argument("--fanout-memories", type=int, default=500, help="memories in each fan-out cube")
    p.add_argument(
        "--fanout-concurrency", type=int, nargs="+", default=[1], help="concurrencies of the fan-out comparison"
    )
    p.add_argument(
        "--load-via",
        choices=["textmem", "gateway"],
        default="textmem",
        help="bulk load: textmem WriteMemories of single-turn memories, or gateway fast-mode adds (~4x slower)",
    )
    p.add_argument("--load-batch", type=int, default=250, help="memories per WriteMemories request in the bulk load")
    p.add_argument("--add-requests", type=int, default=16, help="AddMemories requests in the throughput run")
    p.add_argument("--add-batch", type=int, default=40, help="messages per AddMemories request")
    p.add_argument("--add-concurrency", type=int, default=4, help="AddMemories requests in flight")
    p.add_argument(
        "--add-rounds", type=int, default=4, help="rounds of adds, each followed by the embedder on its windows"
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the in-process timing of the search steps")
    p.add_argument("--keep-data", action="store_true", help="keep the data directory (its path is printed)")
    p.add_argument("--output", type=Path, default=RESULTS_PATH, help="where the JSON results go")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 500 memories, 30 queries, 100 per fan-out cube, 8 adds in 2 rounds (explicit flags still win)",
    )
    args = p.parse_args(argv)
    if args.quick:
        given = list(argv if argv is not None else sys.argv[1:])
        for flag, value in (
            ("--memories", 500),
            ("--queries", 30),
            ("--fanout-memories", 100),
            ("--add-requests", 8),
            ("--add-rounds", 2),
        ):
            if not any(a == flag or a.startswith(flag + "=") for a in given):
                setattr(args, flag[2:].replace("-", "_"), value)
    return args


LOAD_VIA = {
    "textmem": "textmem WriteMemories, single-turn memories",
    "gateway": "gateway AddMemories, fast mode",
}


async def run(args: argparse.Namespace, corpus: Corpus, suite: Suite, res: dict[str, Any]) -> Any:
    """Everything measured against the running suite; returns the embedder it loaded in this process."""
    bench = Bench(args, corpus, suite)
    try:
        via = LOAD_VIA[args.load_via]
        log(f"loading {args.memories:,} memories into {MAIN_CUBE} via {via}")
        load = await bench.load_cube(MAIN_CUBE, args.memories, f"load {MAIN_CUBE}")
        res["loads"].append({**load, "via": via})
        res["memory"].append({"when": f"after loading {load['memories']:,} memories", **suite.memory()})
        log(f"suite RSS after the main load: {res['memory'][-1]['total_rss_mib']:.0f} MiB")
        res["settled_s"] = {"after main load": round(await settle(suite), 1)}
        log(f"suite idle {res['settled_s']['after main load']} s after the load")

        log("search latency on the main cube")
        main = [MAIN_CUBE]
        n = args.memories
        c1_queries = bench.fresh_queries()
        res["search"].append(await bench.search_row("gateway", main, n, 1, c1_queries))
        res["search"].append(await bench.search_row("gateway", main, n, 8, bench.fresh_queries()))
        res["search"].append(await bench.search_row("gateway, cached query", main, n, 1, c1_queries))
        res["search"].append(await bench.search_row("textmem direct", main, n, 1, bench.fresh_queries(), direct=True))

        cubes = [f"bench-fan-{i}" for i in range(args.cubes)]
        res["fanout_cubes"] = cubes
        log(f"loading {args.cubes} fan-out cubes of {args.fanout_memories:,} memories")
        for c in cubes:
            load = await bench.load_cube(c, args.fanout_memories, f"load {c}")
            res["loads"].append({**load, "via": via})
        res["settled_s"]["after fan-out loads"] = round(await settle(suite), 1)
        log(f"suite idle {res['settled_s']['after fan-out loads']} s after the loads")

        log("fan-out")
        per = args.fanout_memories
        for conc in args.fanout_concurrency:
            one = await bench.search_row("gateway, fan-out cubes", cubes[:1], per, conc, bench.fresh_queries())
            many = await bench.search_row("gateway, fan-out cubes", cubes, per, conc, bench.fresh_queries())
            res["search"] += [one, many]
            res["fanout"].append(
                {
                    "comparison": f"{args.cubes} x {per:,} vs 1 x {per:,}",
                    "concurrency": conc,
                    "one_p50_ms": one["p50_ms"],
                    "many_p50_ms": many["p50_ms"],
                    "p50_ratio": many["p50_ms"] / one["p50_ms"],
                    "one_p99_ms": one["p99_ms"],
                    "many_p99_ms": many["p99_ms"],
                    "p99_ratio": many["p99_ms"] / one["p99_ms"],
                }
            )

        log("loading textmem's embedder in this process, for the add-throughput comparison")
        from services.textmem.embedders import build_embedder
        from services.textmem.settings import TextMemSettings

        t0 = time.perf_counter()
        # Built as textmem builds it from its defaults: same model, device, batch size and torch threads.
        embedder = build_embedder(TextMemSettings.model_construct())
        log(f"  loaded in {time.perf_counter() - t0:.1f}s")
        log(
            f"fast-mode add throughput: {args.add_requests} x {args.add_batch} messages, {args.add_concurrency} in flight,"
            f" in {args.add_rounds} rounds"
        )
        res["add"] = await bench.add_throughput(embedder)
        res["add"]["window_size"] = TextMemSettings.model_fields["window_size"].default
        res["add"]["window_overlap"] = TextMemSettings.model_fields["window_overlap"].default
        return embedder
    finally:
        await bench.close()


def summarize(args: argparse.Namespace, res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    t_p50 = TARGETS["search_p50_ms"]
    for conc in (1, 8):
        r = next(r for r in res["search"] if r["name"] == "gateway" and r["concurrency"] == conc)
        rows.append(
            [
                f"search p50, 1 cube x {args.memories:,}, conc {conc}",
                f"{r['p50_ms']:.1f} ms",
                f"<= {t_p50:g} ms",
                verdict(r["p50_ms"] <= t_p50),
            ]
        )
        rows.append([f"search p99, 1 cube x {args.memories:,}, conc {conc}", f"{r['p99_ms']:.1f} ms", "", ""])
    for f in res["fanout"]:
        rows.append(
            [
                f"fan-out p50 ratio, {f['comparison']}, conc {f['concurrency']}",
                f"{f['p50_ratio']:.2f}x ({f['many_p50_ms']:.0f} / {f['one_p50_ms']:.0f} ms)",
                f"<= {TARGETS['fanout_ratio']:g}x",
                verdict(f["p50_ratio"] <= TARGETS["fanout_ratio"]),
            ]
        )
    add = res["add"]
    gw, emb = add["gateway"], add["embedder"]
    rows.append(
        [
            "add msg/s / embedder msg/s (embedder grouped per request)",
            f"{add['ratio_vs_per_request']:.2f} ({gw['messages_per_s']:.1f} / {emb['per_request_messages_per_s']:.1f};"
            f" rounds' median {add['median_round_ratio_vs_per_request']:.2f})",
            f">= {TARGETS['add_ratio']:g}",
            verdict(add["ratio_vs_per_request"] >= TARGETS["add_ratio"]),
        ]
    )
    rows.append(
        [
            "add msg/s / embedder msg/s (embedder, one call)",
            f"{add['ratio_vs_one_call']:.2f} ({gw['messages_per_s']:.1f} / {emb['one_call_messages_per_s']:.1f};"
            f" rounds' median {add['median_round_ratio_vs_one_call']:.2f})",
            f">= {TARGETS['add_ratio']:g}",
            verdict(add["ratio_vs_one_call"] >= TARGETS["add_ratio"]),
        ]
    )
    after = res["memory"][1]
    rows.append(
        [
            f"suite memory {after['when']}",
            f"RSS {after['total_rss_mib']:.0f} MiB, PSS {after['total_pss_mib'] or 0:.0f} MiB",
            "(no target)",
            "",
        ]
    )
    return rows


def title_lines(res: dict[str, Any], bench: str) -> list[str]:
    """The first lines of a report: which benchmark, on what machine, at which commit."""
    m = res["machine"]
    changed = res["code"]["changed_files"]
    return [
        f"memos {bench} benchmark - {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}",
        "code: commit {}{}".format(
            res["code"]["commit"] or "?",
            f" plus uncommitted changes to {len(changed)} tracked files" if changed else "",
        ),
    ]


def run_header(args: argparse.Namespace, corpus: Corpus, targets: dict[str, float]) -> dict[str, Any]:
    """What every benchmark's JSON starts with: when, on what machine and code, with which
    arguments and corpus, against which targets."""
    return {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "loadavg_start": loadavg(),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "output"},
        "code": code_version(),
        "corpus": {"file": args.data.name, "turns": len(corpus.turns), "questions": corpus.n_questions},
        "targets": targets,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.exists():
        print(f"dataset not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    corpus = Corpus(args.data)
    log(f"corpus: {len(corpus.turns):,} turns from {args.data}")
    res: dict[str, Any] = {
        **run_header(args, corpus, TARGETS),
        "loads": [],
        "search": [],
        "fanout": [],
        "memory": [],
    }
    if os.getloadavg()[0] > 0.5:
        log(f"note: load average is {loadavg()} before the run; other work on this machine skews the numbers")
    tmp = Path(tempfile.mkdtemp(prefix="memos-bench-"))
    data_dir = tmp / "data"
    try:
        suite = Suite(data_dir, tmp)
        try:
            log(f"starting textmem and the gateway (data under {data_dir})")
            res["startup_s"] = suite.start()
            res["memory"].append({"when": "idle after start", **suite.memory()})
            try:
                embedder = asyncio.run(run(args, corpus, suite, res))
            except Exception:
                suite.print_logs()
                raise
            res["memory"].append({"when": "end of run", **suite.memory()})
        finally:
            suite.stop()

        if not args.no_breakdown:
            log(f"timing the steps of a search on {MAIN_CUBE} in this process")
            res["breakdown"] = search_breakdown(
                data_dir,
                embedder,
                MAIN_CUBE,
                res.get("fanout_cubes", []),
                corpus.take_queries(min(args.queries, 100) + WARMUP_QUERIES),
                corpus.take_queries(min(args.queries, 20)),
            )

        res["collection_vectors"] = (
            sum(x["memories"] for x in res["loads"]) + res["add"]["warm_windows"] + res["add"]["gateway"]["windows"]
        )
        res["summary"] = summarize(args, res)
        res["machine"]["loadavg_end"] = loadavg()
        res["elapsed_s"] = time.perf_counter() - t_start
        print(report(res))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(res, indent=2) + "\n")
        log(f"results written to {args.output}; the run took {res['elapsed_s'] / 60:.1f} min")
    finally:
        if args.keep_data:
            log(f"data kept under {data_dir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
