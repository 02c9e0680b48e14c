"""Processes for the scheduler's reliability tests: the service (``python -m services.scheduler``)
and remote SDK workers (:mod:`tests.scheduler.worker_proc`), each on loopback, each killable.

Every process writes its output to a file in the test's directory (never a pipe that could fill
up), and :func:`stop` is safe to call on one that is already dead.
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

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_service(address: str, log: Path, **settings: str) -> subprocess.Popen:
    """``python -m services.scheduler`` listening on ``address``; ``settings`` are MEMOS_* variables
    (without the prefix, any case). Returns once its health check says SERVING."""
    env = _env(
        MEMOS_LISTEN_ADDR=address,
        MEMOS_LOG_LEVEL="WARNING",
        MEMOS_GRACE_PERIOD_S="0",
        **{f"MEMOS_{k.upper()}": v for k, v in settings.items()},
    )
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.scheduler"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    wait_serving(address, proc, log)
    return proc


def wait_serving(address: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"scheduler at {address} did not start:\n{log.read_text()[-4000:]}")


def spawn_worker(address: str, record: Path, label: str, *, max_in_flight: int, slow: str = "") -> subprocess.Popen:
    """A worker process (the SDK's ``register_handlers``) that appends what it handles to ``record``;
    it subscribes only once :func:`release_worker` lets it."""
    log = record.with_suffix(".log")
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    args = [sys.executable, "-m", "tests.scheduler.worker_proc", address, str(record), label]
    args += ["--max-in-flight", str(max_in_flight), "--slow", slow, "--go", str(record.with_suffix(".go"))]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def release_worker(proc: subprocess.Popen, record: Path) -> None:
    """Lets a spawned worker subscribe; returns once it has (its ``ready`` line)."""
    record.with_suffix(".go").touch()
    deadline = time.monotonic() + 60
    while not (record.exists() and "ready" in record.read_text().split("\n")):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"worker did not subscribe:\n{record.with_suffix('.log').read_text()[-4000:]}")
        time.sleep(0.02)


def start_worker(address: str, record: Path, label: str, *, max_in_flight: int, slow: str = "") -> subprocess.Popen:
    proc = spawn_worker(address, record, label, max_in_flight=max_in_flight, slow=slow)
    release_worker(proc, record)
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def read_record(record: Path) -> list[tuple[str, str, int, float]]:
    """(event, item id, attempt, time) lines a worker wrote: ``start`` before its handler works,
    ``done`` after it returned."""
    out = []
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in ("start", "done"):
            out.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return out
