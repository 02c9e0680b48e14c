"""The shared runtime: health, reflection, request ids, tracing, graceful shutdown."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from memos.client import AsyncMemosClient
from shared import channels
from shared.channels import _service_config
from shared.context import REQUEST_ID_HEADER
from shared.server import GrpcServer
from shared.settings import ClientSettings, ServerSettings
from shared.telemetry import setup_tracing
from tests.conftest import FaultInjectingTextMemory, start_suite, stop_suite


async def test_health_and_reflection_are_served(suite) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(suite.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "memos.gateway.v1.GatewayService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        # Watch too: grpc's servicer writes it with context.write() instead of yielding, and the
        # runtime's interceptor must pass such a handler through (it answered INTERNAL once).
        watch = health.Watch(health_pb2.HealthCheckRequest(service="memos.gateway.v1.GatewayService"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def one():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = set()
        async for r in refl.ServerReflectionInfo(one()):
            services |= {s.name for s in r.list_services_response.service}
        assert "memos.gateway.v1.GatewayService" in services


async def test_request_id_is_echoed(suite) -> None:  # type: ignore[no-untyped-def]
    from memos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    async with grpc.aio.insecure_channel(suite.address) as ch:
        call = gateway_pb2_grpc.GatewayServiceStub(ch).ListCubes(
            gateway_pb2.ListCubesRequest(user_id="rid-user"), metadata=((REQUEST_ID_HEADER, "my-request-42"),)
        )
        await call
        # One response: the id leaves with it, in the trailing metadata (no write of its own).
        assert dict(await call.trailing_metadata())[REQUEST_ID_HEADER] == "my-request-42"
        # A failed call keeps it beside the error details.
        failed = gateway_pb2_grpc.GatewayServiceStub(ch).ListCubes(
            gateway_pb2.ListCubesRequest(user_id=""), metadata=((REQUEST_ID_HEADER, "my-request-43"),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await failed
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailing = dict(err.value.trailing_metadata())
        assert trailing[REQUEST_ID_HEADER] == "my-request-43" and "grpc-status-details-bin" in trailing
        # A stream's caller has it before the first message, in the initial metadata.
        stream = gateway_pb2_grpc.GatewayServiceStub(ch).ExportUserData(
            gateway_pb2.ExportUserDataRequest(user_id="rid-user"), metadata=((REQUEST_ID_HEADER, "my-request-44"),)
        )
        assert dict(await stream.initial_metadata())[REQUEST_ID_HEADER] == "my-request-44"
        stream.cancel()


async def test_one_trace_spans_gateway_and_textmem(client: AsyncMemosClient, unique: str) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("memos-tests", extra_exporter=exporter)
    await client.add_memories(f"p-{unique}", [f"trace-{unique}"], [{"role": "user", "content": "trace me"}])
    exporter.clear()
    await client.search_memories(f"p-{unique}", [f"trace-{unique}"], "trace")
    spans = exporter.get_finished_spans()
    gw = [s for s in spans if s.name == "memos.gateway.v1.GatewayService/SearchMemories"]
    tm = [s for s in spans if s.name == "memos.textmem.v1.TextMemService/BatchSearchMemories"]
    assert len(gw) == 1 and len(tm) == 1
    assert tm[0].context.trace_id == gw[0].context.trace_id
    assert tm[0].parent is not None and tm[0].parent.span_id == gw[0].context.span_id


def test_retries_are_configured_for_idempotent_methods_only() -> None:
    import json

    cfg = json.loads(_service_config(["/a.B/Get"], 4))
    (method_cfg,) = cfg["methodConfig"]
    assert method_cfg["name"] == [{"service": "a.B", "method": "Get"}]
    assert method_cfg["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert json.loads(_service_config([], 4))["methodConfig"] == []


async def test_graceful_shutdown_reports_not_serving_and_finishes_in_flight_calls(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    suite = await start_suite(tmp_path, embedder, textmem_overrides={"drain_delay_s": 0.6})
    try:
        async with AsyncMemosClient(suite.address) as c:
            await c.add_memories("sam", ["slow-shutdown"], [{"role": "user", "content": "in flight"}])
            FaultInjectingTextMemory.slow_s = 1.0
            in_flight = asyncio.create_task(c.search_memories("sam", ["slow-shutdown"], "in flight", timeout=10))
            await asyncio.sleep(0.3)  # the search is now waiting inside textmem
            stopping = asyncio.create_task(suite.textmem.stop(grace=5.0))
            async with grpc.aio.insecure_channel(suite.textmem.address) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                await asyncio.sleep(0.1)
                # During the drain delay: still answering, but NOT_SERVING ...
                resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
                await asyncio.sleep(0.8)
                # ... then the listener closes to new calls ...
                with pytest.raises(grpc.aio.AioRpcError):
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            resp = await in_flight  # ... while the call already running completes.
            assert resp.text_mem[0].status.code == 0 and resp.text_mem[0].memories
            await stopping
    finally:
        FaultInjectingTextMemory.slow_s = 2.0
        await stop_suite(suite)


def test_textmem_caps_the_blas_threads_of_its_process(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_info, threadpool_limits

    from services.textmem.app import build_memory
    from services.textmem.settings import TextMemSettings

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):  # what an unconfigured 2-core process has
        mem = build_memory(TextMemSettings(data_dir=tmp_path, log_level="WARNING", blas_threads=1), embedder=embedder)
        try:
            assert blas_threads() == {1}
        finally:
            mem.close()


async def test_an_idle_stream_outlives_the_channels_keepalive_pings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stream that sends nothing for a while (a worker's Subscribe with no work, a Watch) stays
    open while our channels ping it: gRPC's default server policy answered the third ping with
    GOAWAY "too_many_pings", ending such streams with UNAVAILABLE after two minutes. Both sides
    read the interval at start, so a short one makes that wait seconds; the client here also
    lifts its own limit on pings without data, which in production spreads the same pings over
    those two minutes."""
    monkeypatch.setattr(channels, "KEEPALIVE_TIME_MS", 500)
    server = GrpcServer("keepalive", ServerSettings(), services=[])
    await server.start()
    try:
        options = [*channels.channel_options(ClientSettings(), []), ("grpc.http2.max_pings_without_data", 0)]
        async with grpc.aio.insecure_channel(server.address, options=options) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # Ten pings' worth of silence: the read waits (no news), the stream does not end.
            pending = asyncio.ensure_future(watch.read())
            await asyncio.sleep(5.0)
            assert not pending.done() and not watch.done()
            watch.cancel()
    finally:
        await server.stop(grace=0)
