"""Metrics on each service's Prometheus endpoint, and logs that carry request and trace ids.

The servers run in this process on real gRPC; their ``/metrics`` endpoints are scraped over
loopback HTTP and parsed with prometheus_client's own parser, as Prometheus would read them.
(The cross-process trace test, with a real OTLP receiver, is ``tests/e2e/test_observability.py``.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from memos.client import AsyncMemosClient, InvalidArgument
from services.scheduler.app import build_queue
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.queue import Message
from services.scheduler.settings import SchedulerSettings
from shared.logs import CorrelationFilter, JsonFormatter, TextFormatter
from shared.metrics import RPC_DURATION_BUCKETS
from shared.settings import ServerSettings
from shared.telemetry import setup_tracing
from tests.conftest import free_port, start_suite, stop_suite

Sample = tuple[str, dict[str, str], float]


def scrape(address: str) -> list[Sample]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def find(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = find(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found or 'absent'}"
    return found[0][2]


def delta(samples: list[Sample], before: list[Sample], name: str, **labels: str) -> float:
    """How much a counter grew since ``before``: the provider is process-wide, so earlier tests
    in the same run may have counted calls of their own."""
    earlier = find(before, name, **labels)
    return value(samples, name, **labels) - (earlier[0][2] if earlier else 0.0)


GATEWAY = "memos.gateway.v1.GatewayService"
TEXTMEM = "memos.textmem.v1.TextMemService"


async def test_each_service_serves_rpc_and_state_metrics(tmp_path, embedder, unique) -> None:  # type: ignore[no-untyped-def]
    gw_metrics, tm_metrics, sch_metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    suite = await start_suite(
        tmp_path / "suite",
        embedder,
        textmem_overrides={"metrics_addr": tm_metrics, "metrics_stats_ttl_s": 0, "metrics_top_cubes": 2},
        metrics_addr=gw_metrics,
    )
    sch_settings = SchedulerSettings(
        listen_addr="127.0.0.1:0", data_dir=tmp_path / "sched", metrics_addr=sch_metrics, builtin_handlers=False
    )
    queue = build_queue(sch_settings)
    scheduler = build_scheduler(sch_settings, queue)
    await scheduler.start()
    try:
        assert suite.gateway.metrics_address == gw_metrics
        assert suite.textmem.metrics_address == tm_metrics
        user, big, small = f"m-{unique}", f"big-{unique}", f"small-{unique}"
        before = {a: await asyncio.to_thread(scrape, a) for a in (gw_metrics, tm_metrics, sch_metrics)}
        async with AsyncMemosClient(suite.address) as c:
            for i in range(3):
                await c.add_memories(user, [big], [{"role": "user", "content": f"fact number {i} about {unique}"}])
            await c.add_memories(user, [small], [{"role": "user", "content": "one small fact"}])
            await c.search_memories(user, [big, small], "fact")
            with pytest.raises(InvalidArgument):
                await c.search_memories(user, [big], "fact", top_k=101)
        await asyncio.to_thread(
            queue.submit, [Message(user_id=user, cube_id=big, label="mem_update", content=str(i)) for i in range(3)]
        )

        for address in (gw_metrics, tm_metrics, sch_metrics):
            samples = await asyncio.to_thread(scrape, address)
            base = before[address]

            # RPC latency per method and status code, with the documented buckets.
            search_ok = {"rpc_service": GATEWAY, "rpc_method": "SearchMemories", "rpc_grpc_status_code": "OK"}
            assert delta(samples, base, "rpc_server_call_duration_seconds_count", **search_ok) == 1
            assert delta(samples, base, "rpc_server_call_duration_seconds_sum", **search_ok) > 0
            buckets = find(samples, "rpc_server_call_duration_seconds_bucket", **search_ok)
            assert {float(s[1]["le"]) for s in buckets} == {*RPC_DURATION_BUCKETS, float("inf")}
            assert delta(samples, base, "rpc_server_call_duration_seconds_bucket", **search_ok, le="+Inf") == 1
            adds = {"rpc_service": GATEWAY, "rpc_method": "AddMemories", "rpc_grpc_status_code": "OK"}
            assert delta(samples, base, "rpc_server_call_duration_seconds_count", **adds) == 4
            # The gateway's calls to textmem are measured by textmem, under textmem's service name.
            batch = {"rpc_service": TEXTMEM, "rpc_method": "BatchSearchMemories", "rpc_grpc_status_code": "OK"}
            assert delta(samples, base, "rpc_server_call_duration_seconds_count", **batch) == 1
            assert value(samples, "rpc_server_active_requests", rpc_service=GATEWAY, rpc_method="SearchMemories") == 0

            # Errors by code and reason; an OK call is no error.
            bad = {"rpc_service": GATEWAY, "rpc_method": "SearchMemories", "rpc_grpc_status_code": "INVALID_ARGUMENT"}
            assert delta(samples, base, "memos_rpc_server_errors_total", **bad, error_reason="TOP_K_OUT_OF_RANGE") == 1
            assert delta(samples, base, "rpc_server_call_duration_seconds_count", **bad) == 1
            assert not find(samples, "memos_rpc_server_errors_total", rpc_grpc_status_code="OK")

            # textmem's state: memories by type, cubes, and only the two largest cubes one by one.
            assert sum(s[2] for s in find(samples, "memos_textmem_memories")) >= 4
            assert {s[1]["memory_type"] for s in find(samples, "memos_textmem_memories")} >= {"LongTermMemory"}
            assert value(samples, "memos_textmem_cubes") >= 2
            per_cube = find(samples, "memos_textmem_cube_memories")
            assert len(per_cube) == 2
            assert value(samples, "memos_textmem_cube_memories", cube_id=big) == 3

            # The scheduler's queue: every known label, pending and running.
            assert value(samples, "memos_scheduler_queue_depth", label="mem_update", state="pending") == 3
            assert value(samples, "memos_scheduler_queue_depth", label="mem_update", state="running") == 0
            assert value(samples, "memos_scheduler_queue_depth", label="query", state="pending") == 0
            assert value(samples, "memos_scheduler_dead_letters") == 0

            # The resource names the process; no per-instrument scope labels clutter the series.
            assert find(samples, "target_info")
            assert not any("otel_scope_name" in s[1] for s in samples)
    finally:
        await scheduler.stop(1.0)
        await stop_suite(suite)

    # A stopped server's gauges go with it; the endpoint (the process's) stays.
    samples = await asyncio.to_thread(scrape, gw_metrics)
    assert not find(samples, "memos_scheduler_queue_depth")
    assert not find(samples, "memos_textmem_cubes")


def test_metrics_addr_is_checked() -> None:
    assert ServerSettings(metrics_addr="").metrics_addr == ""
    assert ServerSettings(metrics_addr=" 0.0.0.0:9464 ").metrics_addr == "0.0.0.0:9464"
    for bad in ("9464", "host:", "host:port", "h:70000"):
        with pytest.raises(ValidationError, match="metrics_addr"):
            ServerSettings(metrics_addr=bad)


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    """What the access log writes during the test, through the handler configure_logging installs."""
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = ListHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("memos.access")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_log_lines_carry_request_and_trace_ids(suite, access_lines, unique) -> None:  # type: ignore[no-untyped-def]
    exporter = InMemorySpanExporter()
    setup_tracing("memos-tests", extra_exporter=exporter)
    async with AsyncMemosClient(suite.address) as c:
        await c.add_memories(f"l-{unique}", [f"logs-{unique}"], [{"role": "user", "content": "log me"}])
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    lines = [json.loads(line) for line in access_lines]
    (gw,) = [r for r in lines if r["method"] == f"/{GATEWAY}/AddMemories"]
    ours = [r for r in lines if r.get("trace_id") == gw["trace_id"]]
    methods = {r["method"] for r in ours}
    assert any(m.startswith("/memos.textmem.v1.") for m in methods), methods
    for rec in ours:
        # Every line of the request: its request id (propagated downstream), and the span of
        # the call it reports, which is that call's server span in the request's one trace.
        assert rec["request_id"] == gw["request_id"]
        span = spans[int(rec["span_id"], 16)]
        assert format(span.context.trace_id, "032x") == rec["trace_id"]
        assert span.name == rec["method"].lstrip("/")
    assert len(ours) == len(lines), "one request, one trace"
    # Outside a call, nothing to correlate with: no empty ids either.
    outside = logging.LogRecord("memos.test", logging.INFO, __file__, 1, "idle", None, None)
    CorrelationFilter().filter(outside)
    assert set(json.loads(JsonFormatter().format(outside))) == {"ts", "level", "logger", "msg"}


def test_text_log_format_appends_the_ids() -> None:
    record = logging.LogRecord("memos.test", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id, record.trace_id, record.span_id = "r1", "ab" * 16, "cd" * 8
    line = TextFormatter().format(record)
    assert line.endswith(f"hello [request_id=r1 trace_id={'ab' * 16} span_id={'cd' * 8}]")
