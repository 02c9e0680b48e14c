"""Scheduler benchmarks (``make bench-scheduler``).

1. Throughput of submit -> handle -> ack for no-op handlers, in messages/s, through the real
   scheduler service (``python -m services.scheduler``, its own process on loopback) and the
   Python SDK's worker (``SchedulerClient.register_handlers``), on the embedded SQLite queue and
   on Redis Streams; against raw redis-py ``XADD`` / ``XREADGROUP`` / ``XACK`` of the same
   messages on the same redis-server in the same run. The producer submits batches of 100 while
   the worker handles them; the clock stops when the last one is acknowledged. Two raw
   baselines: acks pipelined per read batch (the fastest idiomatic consumer) and one ``XACK``
   round trip per message (what a per-message ack costs). Target: ours >= 0.5 of raw.
   ``--rounds`` repeats the raw baselines and ours one after the other, each round in the same
   conditions; the figures are the medians over rounds, and a ratio is the median of each round's
   ours / that round's raw (on a shared machine a single run of either swings several-fold).
2. Async add: time from an async fine add's reply to its refined memory being searchable
   (the scheduler's mem_read task done and a search finding the fine-extracted text), p50/p99,
   with 100 adds in flight at once (one user and cube each), against the suite as ``make run``
   starts it (one process per service, on loopback); the LLM is the loopback OpenAI-protocol
   fake (answers at once, so this measures the pipeline, not a model).

Each throughput run also records the CPU time per message (µs) of every process it involves:
``cpu_us_per_msg`` of the scheduler (ours only), redis-server (ours on Redis and raw) and this
process (the producer and the worker, or the raw client), over the timed window: on a machine with
few cores their sum, not one process, bounds the throughput.

Prints a table and writes ``benchmarks/results/scheduler_latest.json``; it never fails on a
target. redis-server runs with persistence off for both ours and raw (same conditions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python"), str(ROOT / "sdk" / "python")]

from tests.redis_server import start_redis, stop_redis  # noqa: E402
from tests.scheduler import procs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scheduler_latest.json"
BATCH = 100


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """CPU time (user + system) of process ``pid`` so far, in seconds; None: this process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


class CpuMeter:
    """CPU time per message of named processes over a window (``start`` .. ``stop``)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_s(pid) for name, pid in self._pids.items()}

    def stop(self, n: int) -> dict[str, float]:
        return {name: round((cpu_s(pid) - self._start[name]) / n * 1e6, 1) for name, pid in self._pids.items()}


def settle() -> None:
    """Before a timed run: the disk synced, so that the writes of the run before (the SQLite queue
    writes ~6.6 KB per message) are not written back during this one."""
    os.sync()


def messages(n: int, user: str) -> list[dict]:
    return [
        {
            "user_id": user,
            "cube_id": f"c{i % 50}",
            "label": "mem_read",
            "content": f"message {i}",
            "item_id": f"{user}-{i}",
        }
        for i in range(n)
    ]


def bench_ours(backend: str, n: int, in_flight: int, redis_url: str, redis_pid: int, workdir: Path) -> dict:
    from memos.client.scheduler import ScheduledMessage, SchedulerClient

    settings = {"poll_interval_s": "0.2", "queue_max_pending": str(max(n, 100_000))}
    if backend == "redis":
        settings |= {"redis_url": redis_url, "redis_prefix": f"bench-{uuid.uuid4().hex[:8]}"}
    else:
        settings |= {"data_dir": str(workdir / f"sqlite-{uuid.uuid4().hex[:8]}")}
    address = f"127.0.0.1:{free_port()}"
    proc = procs.start_service(address, workdir / f"scheduler-{backend}.log", **settings)
    try:
        with SchedulerClient(address) as client:
            # Warm-up: connections, label streams, first-call costs.
            warm = f"warm-{backend}"
            client.register_handlers({"mem_read": lambda m: None}, max_in_flight=in_flight)
            client.submit_messages(messages(200, warm))
            assert client.wait_for_tasks(warm, timeout_s=120)

            user = f"bench-{backend}"
            msgs = [ScheduledMessage(**m) for m in messages(n, user)]
            pids = {"scheduler": proc.pid, "bench": None} | ({"redis": redis_pid} if backend == "redis" else {})
            cpu = CpuMeter(pids)
            settle()
            cpu.start()
            start = time.perf_counter()
            submit_done = [0.0]

            def produce() -> None:
                for k in range(0, n, BATCH):
                    client.submit_messages(msgs[k : k + BATCH])
                submit_done[0] = time.perf_counter() - start

            t = threading.Thread(target=produce)
            t.start()
            t.join()
            assert client.wait_for_tasks(user, timeout_s=600)
            elapsed = time.perf_counter() - start
            cpu_us = cpu.stop(n)
            client.stop()
    finally:
        procs.stop(proc)
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed, 1),
        "submit_s": round(submit_done[0], 3),
        "cpu_us_per_msg": cpu_us,
    }


def bench_raw(n: int, in_flight: int, redis_url: str, redis_pid: int, pipelined_acks: bool) -> dict:
    import redis

    r = redis.Redis.from_url(redis_url)
    stream, group = f"raw-{uuid.uuid4().hex[:8]}", "g"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    bodies = [json.dumps(m) for m in messages(n, "raw")]
    cpu = CpuMeter({"redis": redis_pid, "bench": None})
    settle()
    cpu.start()
    start = time.perf_counter()

    def produce() -> None:
        p = redis.Redis.from_url(redis_url)
        for k in range(0, n, BATCH):
            pipe = p.pipeline(transaction=False)
            for body in bodies[k : k + BATCH]:
                pipe.xadd(stream, {"body": body})
            pipe.execute()
        p.close()

    t = threading.Thread(target=produce)
    t.start()
    handled = 0
    while handled < n:
        got = r.xreadgroup(group, "c", {stream: ">"}, count=in_flight, block=100)
        for _s, entries in got or []:
            ids = []
            for sid, fields in entries:
                json.loads(fields[b"body"])  # the no-op handler gets the message
                ids.append(sid)
                if not pipelined_acks:
                    r.xack(stream, group, sid)
            if pipelined_acks and ids:
                pipe = r.pipeline(transaction=False)
                for sid in ids:
                    pipe.xack(stream, group, sid)
                pipe.execute()
            handled += len(entries)
    elapsed = time.perf_counter() - start
    cpu_us = cpu.stop(n)
    t.join()
    assert r.xpending(stream, group)["pending"] == 0
    r.delete(stream)
    r.close()
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed, 1),
        "cpu_us_per_msg": cpu_us,
    }


def extraction_reply(body: dict) -> str:
    """The fake LLM's extraction: one memory per user line of the conversation it was shown."""
    memories = []
    for line in body["messages"][-1]["content"].splitlines():
        index, _, rest = line.partition("] ")
        role, _, text = rest.partition(": ")
        if role == "user" and text:
            memories.append(
                {
                    "key": text[:40],
                    "memory_type": "UserMemory",
                    "value": f"The user said: {text}",
                    "source_messages": [int(index.lstrip("["))],
                }
            )
    return json.dumps({"memories": memories, "summary": ""})


def bench_async_add(adds: int, workdir: Path) -> dict:
    import asyncio
    import signal

    import grpc

    from memos.client import AsyncMemosClient
    from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
    from tests.e2e.launcher import launch_suite
    from tests.fakes.openai_server import FakeOpenAI

    llm = FakeOpenAI()
    llm.chat_default = extraction_reply

    async def run(gateway: str, scheduler: str) -> list[float]:
        channel = grpc.aio.insecure_channel(scheduler)
        tasks = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        try:
            async with AsyncMemosClient(gateway) as c:
                await c.add_memories("warm", ["warm"], "warm up the embedder", mode="fine", async_mode="sync")

                async def one(i: int) -> float:
                    user, word = f"user{i}", f"kiwi{i}x{uuid.uuid4().hex[:6]}"
                    resp = await c.add_memories(
                        user, [f"{user}-cube"], f"My locker code word is {word}.", mode="fine", async_mode="async"
                    )
                    replied = time.perf_counter()
                    assert len(resp.task_ids) == 1, list(resp.notices)
                    (task_id,) = resp.task_ids
                    while True:
                        task = (await tasks.GetTask(scheduler_pb2.GetTaskRequest(item_id=task_id))).task
                        if task.state == scheduler_pb2.TASK_STATE_DONE:
                            break
                        assert task.state in (scheduler_pb2.TASK_STATE_PENDING, scheduler_pb2.TASK_STATE_RUNNING), task
                        await asyncio.sleep(0.2)  # 100 pollers at 50 Hz would be most of the load
                    found = await c.search_memories(user, [f"{user}-cube"], word, top_k=3)
                    assert found.ranked[0].item.memory == f"The user said: My locker code word is {word}."
                    return time.perf_counter() - replied

                return list(await asyncio.gather(*(one(i) for i in range(adds))))
        finally:
            await channel.close()

    scheduler = f"127.0.0.1:{free_port()}"
    with llm.serve() as url:
        # The suite as make run starts it: one process per service.
        gateway, proc, _ = launch_suite(
            workdir / "async-add",
            MEMOS_SCHEDULER_LISTEN=scheduler,
            MEMOS_LLM_BASE_URL=url,
            MEMOS_LLM_MODEL="bench",
        )
        try:
            latencies = sorted(asyncio.run(run(gateway, scheduler)))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {"adds_in_flight": adds, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(latencies[-1] * 1000, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 20,000: a round of ours lasts ~1.5 s on a fast VM; with 5,000 (0.35 s) one scheduling
    # hiccup moved a round's ratio by a third.
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--in-flight", type=int, default=32, help="worker max_in_flight (raw: XREADGROUP COUNT)")
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--async-adds", type=int, default=100, help="async fine adds in flight at once (0: skip)")
    ap.add_argument("--rounds", type=int, default=3, help="raw and ours run one after the other this many times")
    args = ap.parse_args()

    server = start_redis()
    workdir = Path(tempfile.mkdtemp(prefix="memos-bench-sched-"))
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": os.getloadavg()},
        "config": {
            "messages": args.messages,
            "in_flight": args.in_flight,
            "submit_batch": BATCH,
            "rounds": args.rounds,
        },
    }
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
        results["machine"]["redis"] = redis_version
        backends = args.backends.split(",")
        rounds: list[dict] = []
        for _ in range(max(1, args.rounds)):
            one = {
                "raw_redis_pipelined_acks": bench_raw(
                    args.messages, args.in_flight, server.url, server.process.pid, pipelined_acks=True
                ),
                "raw_redis_ack_per_message": bench_raw(
                    args.messages, args.in_flight, server.url, server.process.pid, pipelined_acks=False
                ),
            }
            for backend in backends:
                ours = bench_ours(backend, args.messages, args.in_flight, server.url, server.process.pid, workdir)
                ours["ratio_to_raw"] = round(ours["msgs_per_s"] / one["raw_redis_pipelined_acks"]["msgs_per_s"], 3)
                ours["ratio_to_raw_ack_per_message"] = round(
                    ours["msgs_per_s"] / one["raw_redis_ack_per_message"]["msgs_per_s"], 3
                )
                one[f"scheduler_{backend}"] = ours
            rounds.append(one)
        for key in rounds[0]:
            results[key] = {
                field: statistics.median(r[key][field] for r in rounds)
                for field in rounds[0][key]
                if field not in ("messages", "cpu_us_per_msg")
            } | {
                "messages": args.messages,
                "cpu_us_per_msg": {
                    name: statistics.median(r[key]["cpu_us_per_msg"][name] for r in rounds)
                    for name in rounds[0][key]["cpu_us_per_msg"]
                },
            }
        results["rounds"] = rounds
        raw, raw_each = results["raw_redis_pipelined_acks"], results["raw_redis_ack_per_message"]
        if args.async_adds:
            results["async_add_latency"] = bench_async_add(args.async_adds, workdir)
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        stop_redis(server)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nscheduler throughput, {args.messages} no-op messages, in flight {args.in_flight}, submit batches of {BATCH}"
        f" (medians of {len(results['rounds'])} rounds)"
    )
    print(f"{'path':<40}{'msgs/s':>12}{'seconds':>10}{'vs raw':>10}{'vs raw/ack':>12}")
    rows = [("raw redis-py, acks pipelined", raw, None), ("raw redis-py, XACK per message", raw_each, None)]
    rows += [(f"scheduler + SDK worker, {b}", results[f"scheduler_{b}"], b) for b in args.backends.split(",")]
    for name, r, b in rows:
        ratio = f"{r['ratio_to_raw']:.3f}" if b else ""
        ratio2 = f"{r['ratio_to_raw_ack_per_message']:.3f}" if b else ""
        print(f"{name:<40}{r['msgs_per_s']:>12.1f}{r['seconds']:>10.2f}{ratio:>10}{ratio2:>12}")
    for name, r, _b in rows:
        print(f"  CPU µs per message, {name}: " + ", ".join(f"{k} {v}" for k, v in r["cpu_us_per_msg"].items()))
    for b in args.backends.split(","):
        print(f"{b} vs raw, per round: {[r[f'scheduler_{b}']['ratio_to_raw'] for r in results['rounds']]}")
    print("target: scheduler >= 0.5 of raw (not enforced)")
    if args.async_adds:
        a = results["async_add_latency"]
        print(
            f"async fine add, reply -> refined memory searchable, {a['adds_in_flight']} in flight:"
            f" p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms, max {a['max_ms']} ms"
        )
    print(f"load average start/end: {results['machine']['load_avg_start']} / {results['machine']['load_avg_end']}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
