"""One trace per request across processes, exported over OTLP to a real receiver; metrics and logs.

textmem, ingest, the scheduler and the gateway run as separate processes (``python -m
services.<name>``, as their images start them), each exporting spans over OTLP/gRPC
(``OTEL_EXPORTER_OTLP_ENDPOINT``, the OpenTelemetry SDK's own exporter) to a collector's
trace service that this test serves on loopback, and each serving Prometheus metrics on its
own ``MEMOS_METRICS_ADDR``. An add and a chat through the gateway must each come back as one
trace whose spans, from every service the request went through, link child to parent; each
process's ``/metrics`` must show what it did; the gateway's log lines must name the trace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from memos.client import MemosClient
from tests.conftest import REPO_ROOT, free_port
from tests.integration.test_observability import find, scrape, value

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The trace half of an OpenTelemetry collector's OTLP/gRPC receiver, keeping what it gets."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 - the proto's name
        got = []
        for rs in request.resource_spans:
            attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            attrs.get("service.name", ""),
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.kind,
                        )
                    )
        with self._lock:
            self._spans += got
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait_trace(self, root_name: str, services: set[str], timeout_s: float = 30.0) -> list[Span]:
        """The spans of the one trace rooted at ``root_name``, once every service reported its part."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            roots = [s for s in spans if s.name == root_name]
            if len(roots) == 1:
                trace = [s for s in spans if s.trace_id == roots[0].trace_id]
                if services <= {s.service for s in trace}:
                    time.sleep(0.5)  # a straggler batch of the same trace
                    return [s for s in self.spans() if s.trace_id == roots[0].trace_id]
            assert len(roots) <= 1, f"{root_name} twice: {roots}"
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete trace for {root_name} in {timeout_s}s: {spans}")
            time.sleep(0.1)


@dataclass
class Suite:
    gateway: str
    metrics: dict[str, str]
    logs: dict[str, Path]
    collector: Collector


SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def _wait_serving(address: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{address} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{address} did not become healthy in {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    collector = Collector()
    receiver = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    otlp_port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()

    root = tmp_path_factory.mktemp("observed")
    names = ["textmem", "ingest", "scheduler", "gateway"]
    listen = {n: f"127.0.0.1:{free_port()}" for n in names}
    metrics = {n: f"127.0.0.1:{free_port()}" for n in names}
    logs = {n: root / f"{n}.log" for n in names}
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMOS_", "OTEL_"))},
        "PYTHONUNBUFFERED": "1",
        "MEMOS_DATA_DIR": str(root / "data"),
        "MEMOS_LOG_LEVEL": "INFO",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave each process within a moment
        "MEMOS_TEXTMEM_ADDR": listen["textmem"],
        "MEMOS_INGEST_ADDR": listen["ingest"],
        "MEMOS_SCHEDULER_ADDR": listen["scheduler"],
    }
    procs: list[subprocess.Popen] = []
    try:
        for name in names:
            env = {**base, "MEMOS_LISTEN_ADDR": listen[name], "MEMOS_METRICS_ADDR": metrics[name]}
            with logs[name].open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
                )
            procs.append(proc)
            _wait_serving(listen[name], proc, logs[name])
        yield Suite(listen["gateway"], metrics, logs, collector)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        receiver.stop(0)


def _check_links(trace: list[Span], root_name: str) -> dict[str, Span]:
    """One root (the gateway's server span); every other span's parent is a span of the trace."""
    by_id = {s.span_id: s for s in trace}
    assert len(by_id) == len(trace), "span ids are unique"
    roots = [s for s in trace if not s.parent_id]
    assert [(r.service, r.name, r.kind) for r in roots] == [("memos-gateway", root_name, SERVER_KIND)]
    for s in trace:
        assert not s.parent_id or s.parent_id in by_id, f"{s} has a parent outside its trace"
    return by_id


def test_add_is_one_trace_across_gateway_ingest_and_textmem(suite: Suite) -> None:
    with MemosClient(suite.gateway) as c:
        c.add_memories("otel-user", ["otel-cube"], [{"role": "user", "content": "I moved to Lisbon in May."}])
    root_name = "memos.gateway.v1.GatewayService/AddMemories"
    trace = suite.collector.wait_trace(root_name, {"memos-gateway", "memos-ingest", "memos-textmem"})
    by_id = _check_links(trace, root_name)
    (gateway,) = [s for s in trace if s.name == root_name]
    ingest = [s for s in trace if s.service == "memos-ingest"]
    textmem = [s for s in trace if s.service == "memos-textmem"]
    assert ingest and textmem
    for s in ingest + textmem:
        # Each downstream call is a SERVER span of the service that served it, child of its caller's span.
        assert s.kind == SERVER_KIND
        assert s.name.startswith({"memos-ingest": "memos.ingest.v1.", "memos-textmem": "memos.textmem.v1."}[s.service])
        assert by_id[s.parent_id].service != s.service, f"{s} is not the child of a caller in another service"
    assert all(by_id[s.parent_id] == gateway for s in ingest)
    assert any(s.name.startswith("memos.textmem.v1.TextMemService/") for s in textmem)

    # The gateway's access log line for the add carries the same trace id and its span id.
    lines = [json.loads(line) for line in suite.logs["gateway"].read_text().splitlines() if line.startswith("{")]
    (line,) = [r for r in lines if r.get("method") == f"/{root_name}"]
    assert line["trace_id"] == gateway.trace_id and line["span_id"] == gateway.span_id and line["request_id"]
    textmem_lines = [
        json.loads(raw)
        for raw in suite.logs["textmem"].read_text().splitlines()
        if raw.startswith("{") and gateway.trace_id in raw
    ]
    assert textmem_lines and all(r["request_id"] == line["request_id"] for r in textmem_lines)


def test_chat_trace_reaches_the_scheduler(suite: Suite) -> None:
    with MemosClient(suite.gateway) as c:
        c.add_memories("otel-chat", ["otel-chat-cube"], [{"role": "user", "content": "My cat is called Miso."}])
        events = list(c.chat("otel-chat", "What is my cat called?", readable_cube_ids=["otel-chat-cube"]))
    assert events
    root_name = "memos.gateway.v1.GatewayService/Chat"
    trace = suite.collector.wait_trace(root_name, {"memos-gateway", "memos-textmem", "memos-scheduler"})
    by_id = _check_links(trace, root_name)
    (submit,) = [s for s in trace if s.service == "memos-scheduler"]
    assert submit.name == "memos.scheduler.v1.SchedulerService/SubmitMessages"
    assert by_id[submit.parent_id].name == root_name


def test_every_process_serves_its_metrics(suite: Suite) -> None:
    with MemosClient(suite.gateway) as c:
        c.add_memories("otel-m", ["otel-m-cube"], [{"role": "user", "content": "Metrics, please."}])
        c.search_memories("otel-m", ["otel-m-cube"], "metrics")
    gw = scrape(suite.metrics["gateway"])
    ok = {"rpc_service": "memos.gateway.v1.GatewayService", "rpc_grpc_status_code": "OK"}
    assert value(gw, "rpc_server_call_duration_seconds_count", rpc_method="SearchMemories", **ok) >= 1
    assert find(gw, "target_info", service_name="memos-gateway")
    # Each process shows its own calls only: the gateway serves no textmem method.
    assert not find(gw, "rpc_server_call_duration_seconds_count", rpc_service="memos.textmem.v1.TextMemService")

    ing = scrape(suite.metrics["ingest"])
    assert find(ing, "target_info", service_name="memos-ingest")
    assert find(ing, "rpc_server_call_duration_seconds_count", rpc_service="memos.ingest.v1.IngestService")

    tm = scrape(suite.metrics["textmem"])
    assert find(tm, "target_info", service_name="memos-textmem")
    assert sum(s[2] for s in find(tm, "memos_textmem_memories")) >= 1
    assert value(tm, "memos_textmem_cube_memories", cube_id="otel-m-cube") >= 1
    assert value(tm, "memos_textmem_cubes") >= 1

    sch = scrape(suite.metrics["scheduler"])
    assert find(sch, "target_info", service_name="memos-scheduler")
    for label in ("query", "mem_update", "mem_read"):
        for state in ("pending", "running"):
            assert value(sch, "memos_scheduler_queue_depth", label=label, state=state) >= 0
    # The built-in handlers' worker stream is an open call.
    assert value(sch, "rpc_server_active_requests", rpc_service="memos.scheduler.v1.SchedulerService",
                 rpc_method="Subscribe") >= 1  # fmt: skip
