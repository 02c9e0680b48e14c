"""Runs the memos suite as real processes on embedded defaults (``make run``).

textmem on 127.0.0.1:50052, ingest on 127.0.0.1:50053, the scheduler on
127.0.0.1:50055, the gateway on 127.0.0.1:50051 (override with MEMOS_GATEWAY_LISTEN /
MEMOS_TEXTMEM_LISTEN / MEMOS_INGEST_LISTEN / MEMOS_SCHEDULER_LISTEN). Waits for each service's health
check before starting the next; Ctrl-C or SIGTERM stops them in reverse order,
each draining its in-flight calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"service for {address} exited with {proc.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{address} did not become healthy in {timeout_s:.0f}s")


def main() -> int:
    textmem_addr = os.environ.get("MEMOS_TEXTMEM_LISTEN", "127.0.0.1:50052")
    ingest_addr = os.environ.get("MEMOS_INGEST_LISTEN", "127.0.0.1:50053")
    scheduler_addr = os.environ.get("MEMOS_SCHEDULER_LISTEN", "127.0.0.1:50055")
    gateway_addr = os.environ.get("MEMOS_GATEWAY_LISTEN", "127.0.0.1:50051")
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    specs = [
        ("textmem", textmem_addr, {"MEMOS_LISTEN_ADDR": textmem_addr}),
        ("ingest", ingest_addr, {"MEMOS_LISTEN_ADDR": ingest_addr, "MEMOS_TEXTMEM_ADDR": textmem_addr}),
        (
            "scheduler",
            scheduler_addr,
            {"MEMOS_LISTEN_ADDR": scheduler_addr, "MEMOS_TEXTMEM_ADDR": textmem_addr, "MEMOS_INGEST_ADDR": ingest_addr},
        ),
        (
            "gateway",
            gateway_addr,
            {
                "MEMOS_LISTEN_ADDR": gateway_addr,
                "MEMOS_TEXTMEM_ADDR": textmem_addr,
                "MEMOS_INGEST_ADDR": ingest_addr,
                "MEMOS_SCHEDULER_ADDR": scheduler_addr,
            },
        ),
    ]
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, address, env in specs:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env={**base_env, **env},
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            )
            procs.append((name, proc))
            wait_serving(address, proc)
            print(f"memos: {name} serving on {address}", flush=True)
        print(f"memos: suite ready; gateway at {gateway_addr}. Ctrl-C stops it.", flush=True)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"memos: {name} exited with {proc.returncode}; stopping the suite", flush=True)
                    stopping = True
            time.sleep(0.2)
    finally:
        code = 0
        for name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            print(f"memos: {name} stopped ({proc.returncode})", flush=True)
            code = code or (proc.returncode or 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
