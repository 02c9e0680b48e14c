"""Load test (``make bench-load``): mixed traffic from N concurrent clients for a fixed time.

Starts the suite as ``make run`` does (one process per service, on loopback, a fresh data
directory), seeds a few cubes, then for each concurrency level holds that many clients busy
for ``--seconds`` with a mix of searches (70%), adds (20%) and lists (10%), each client its
own user and cube plus a cube shared by all. Prints throughput, p50/p99 and error counts per
RPC and level, and the saturation point: the first level whose throughput is less than 10%
above the previous one's (more clients then only add latency). Writes
``benchmarks/results/load_latest.json``. Never fails on a number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "gen" / "python", ROOT / "sdk" / "python"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from memos.client import AsyncMemosClient  # noqa: E402
from shared.errors import MemosError  # noqa: E402
from tests.e2e.launcher import launch_suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "load_latest.json"
WORDS = "apple river stone cloud piano garden lamp ocean forest candle mirror window train violin".split()
MIX = [("SearchMemories", 0.7), ("AddMemories", 0.2), ("ListMemories", 0.1)]


def sentence(rng: random.Random) -> str:
    return "I remember the " + " ".join(rng.choice(WORDS) for _ in range(6)) + "."


async def client_loop(
    address: str, i: int, until: float, stats: dict, shared_cube: str, owner: str, rng: random.Random
) -> None:
    user, cube = f"load-user-{i}", f"load-cube-{i}"
    async with AsyncMemosClient(address) as c:
        await c.add_memories(user, [cube], sentence(rng))
        while time.monotonic() < until:
            r, acc, method = rng.random(), 0.0, MIX[-1][0]
            for name, share in MIX:
                acc += share
                if r < acc:
                    method = name
                    break
            start = time.perf_counter()
            try:
                if method == "SearchMemories":
                    await c.search_memories(user, [cube, shared_cube], " ".join(rng.sample(WORDS, 3)), top_k=5)
                elif method == "AddMemories":
                    await c.add_memories(user, [cube], sentence(rng))
                else:
                    await c.list_memories(user, cube, page_size=20)
                stats[method]["latencies"].append(time.perf_counter() - start)
            except MemosError as err:
                stats[method]["errors"][err.code.name] += 1


def summarize(stats: dict, seconds: float) -> dict:
    out = {}
    for method, s in stats.items():
        lat = sorted(s["latencies"])
        n = len(lat)
        out[method] = {
            "ok": n,
            "per_s": round(n / seconds, 1),
            "p50_ms": round(lat[n // 2] * 1000, 1) if n else None,
            "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 1) if n else None,
            "errors": dict(s["errors"]),
        }
    return out


async def run_level(address: str, clients: int, seconds: float, shared_cube: str, owner: str) -> dict:
    stats: dict = defaultdict(lambda: {"latencies": [], "errors": defaultdict(int)})
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(client_loop(address, i, until, stats, shared_cube, owner, random.Random(i)) for i in range(clients))
    )
    per_rpc = summarize(stats, seconds)
    total = sum(r["ok"] for r in per_rpc.values())
    return {"clients": clients, "seconds": seconds, "total_per_s": round(total / seconds, 1), "rpcs": per_rpc}


async def main_async(address: str, levels: list[int], seconds: float) -> list[dict]:
    owner, shared_cube = "load-owner", "load-shared"
    async with AsyncMemosClient(address) as c:
        rng = random.Random(0)
        for _ in range(20):
            await c.add_memories(owner, [shared_cube], sentence(rng))
        for i in range(max(levels)):
            await c.share_cube(owner, shared_cube, f"load-user-{i}", "reader")
    return [await run_level(address, n, seconds, shared_cube, owner) for n in levels]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,4,16,64", help="concurrent clients, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each level runs")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    data = Path(tempfile.mkdtemp(prefix="memos-bench-load-"))
    gateway, proc, _ = launch_suite(data)
    load_start = os.getloadavg()
    try:
        results = asyncio.run(main_async(gateway, levels, args.seconds))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    saturation = None
    for prev, cur in zip(results, results[1:], strict=False):
        if cur["total_per_s"] < prev["total_per_s"] * 1.10:
            saturation = prev["clients"]
            break
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": load_start},
        "mix": dict(MIX),
        "levels": results,
        "saturation_clients": saturation,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmixed load, {args.seconds:g}s per level (search 70%, add 20%, list 10%), suite as processes")
    print(f"{'clients':>8} {'rpc':<16}{'ok/s':>8}{'p50 ms':>9}{'p99 ms':>9}  errors")
    for level in results:
        for method, r in sorted(level["rpcs"].items()):
            print(
                f"{level['clients']:>8} {method:<16}{r['per_s']:>8}{r['p50_ms'] or '-':>9}{r['p99_ms'] or '-':>9}"
                f"  {r['errors'] or '-'}"
            )
        print(f"{level['clients']:>8} {'(all)':<16}{level['total_per_s']:>8}")
    print(
        f"saturation: {saturation} clients (throughput grows <10% beyond)"
        if saturation
        else "saturation: not reached at these levels"
    )
    print(f"load average at start: {load_start}; wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
