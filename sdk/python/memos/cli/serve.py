"""Runs memos services as real processes: the launcher behind ``make run`` and ``memos serve``.

``run_suite()`` starts textmem (127.0.0.1:50052), ingest (:50053), the scheduler (:50055) and
the gateway (127.0.0.1:50051), overridable with MEMOS_TEXTMEM_LISTEN / MEMOS_INGEST_LISTEN /
MEMOS_SCHEDULER_LISTEN / MEMOS_GATEWAY_LISTEN. It waits for each service's health check before
starting the next; Ctrl-C or SIGTERM stops them in reverse order, each draining its in-flight
calls. ``run_service()`` does the same for one service (actmem included).

It prints one line per event on stdout, which scripts and tests read:
``memos: <name> serving on <addr>``, ``memos: suite ready; gateway at <addr>. ...`` and
``memos: <name> stopped (<returncode>)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[4]

# Services `make run` starts, in start order, with their default listen addresses.
SUITE = ("textmem", "ingest", "scheduler", "gateway")
SERVICES = (*SUITE, "actmem")
DEFAULT_LISTEN = {
    "gateway": "127.0.0.1:50051",
    "textmem": "127.0.0.1:50052",
    "ingest": "127.0.0.1:50053",
    "actmem": "127.0.0.1:50054",
    "scheduler": "127.0.0.1:50055",
}


class ServeError(Exception):
    """A service could not be started (it exited, or never became healthy)."""


def listen_address(name: str, environ: Mapping[str, str] | None = None) -> str:
    """Where ``name`` listens when started by this launcher: MEMOS_<NAME>_LISTEN or the default."""
    env = os.environ if environ is None else environ
    return env.get(f"MEMOS_{name.upper()}_LISTEN") or DEFAULT_LISTEN[name]


def wait_serving(
    address: str,
    proc: subprocess.Popen,
    timeout_s: float = 300.0,
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Waits until ``address`` answers its health check with SERVING; False when cancelled first."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if cancelled():
                return False
            if proc.poll() is not None:
                raise ServeError(f"service for {address} exited with {proc.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise ServeError(f"{address} did not become healthy in {timeout_s:.0f}s")


def suite_specs(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, dict[str, str]]]:
    """(name, listen address, extra environment) for each service of the suite, in start order."""
    addr = {name: listen_address(name, environ) for name in SUITE}
    env = os.environ if environ is None else environ
    # One metrics port per service (MEMOS_<NAME>_METRICS): a shared MEMOS_METRICS_ADDR would make
    # the four processes fight over one port.
    metrics = {name: {"MEMOS_METRICS_ADDR": env.get(f"MEMOS_{name.upper()}_METRICS", "")} for name in SUITE}
    specs = [
        ("textmem", addr["textmem"], {"MEMOS_LISTEN_ADDR": addr["textmem"]}),
        ("ingest", addr["ingest"], {"MEMOS_LISTEN_ADDR": addr["ingest"], "MEMOS_TEXTMEM_ADDR": addr["textmem"]}),
        (
            "scheduler",
            addr["scheduler"],
            {
                "MEMOS_LISTEN_ADDR": addr["scheduler"],
                "MEMOS_TEXTMEM_ADDR": addr["textmem"],
                "MEMOS_INGEST_ADDR": addr["ingest"],
            },
        ),
        (
            "gateway",
            addr["gateway"],
            {
                "MEMOS_LISTEN_ADDR": addr["gateway"],
                "MEMOS_TEXTMEM_ADDR": addr["textmem"],
                "MEMOS_INGEST_ADDR": addr["ingest"],
                "MEMOS_SCHEDULER_ADDR": addr["scheduler"],
            },
        ),
    ]
    return [(name, address, {**metrics[name], **extra}) for name, address, extra in specs]


def run(specs: Sequence[tuple[str, str, Mapping[str, str]]], *, ready_line: str | None = None) -> int:
    """Starts each ``(name, address, env)`` as ``python -m services.<name>`` and runs until Ctrl-C/SIGTERM
    or until one exits; then stops them in reverse order. Returns the first non-zero exit status, else 0.

    Raises :class:`ServeError` (after stopping what was started) when a service fails to come up.
    """
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, address, env in specs:
            if stopping:
                break
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env={**base_env, **env},
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            )
            procs.append((name, proc))
            if not wait_serving(address, proc, cancelled=lambda: stopping):
                break
            print(f"memos: {name} serving on {address}", flush=True)
        if ready_line and not stopping:
            print(ready_line, flush=True)
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def run_suite() -> int:
    """``make run``: the whole suite on embedded defaults."""
    specs = suite_specs()
    gateway = specs[-1][1]
    return run(specs, ready_line=f"memos: suite ready; gateway at {gateway}. Ctrl-C stops it.")


def run_service(name: str, listen: str | None = None) -> int:
    """One service on its own; its other settings (the addresses of the services it calls) come from
    the environment as usual (``MEMOS_TEXTMEM_ADDR`` and so on)."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    address = listen or listen_address(name)
    return run([(name, address, {"MEMOS_LISTEN_ADDR": address})], ready_line=f"memos: {name} ready. Ctrl-C stops it.")
