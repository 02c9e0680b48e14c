"""Service-to-service authentication with the release's shared token (MEMOS_SERVICE_TOKEN).

textmem, ingest, the scheduler and actmem refuse calls without the token (health and
reflection stay open); the gateway's public API does not ask for it (callers use API keys)
and sends it on its own calls to the services behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memos.client import AsyncMemosClient
from memos.client.scheduler import SchedulerClient
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.scheduler.app import build_server as build_scheduler
from services.scheduler.settings import SchedulerSettings
from shared.errors import Unauthenticated
from shared.grpc_errors import from_rpc_error
from shared.interceptors import SERVICE_TOKEN_HEADER
from tests.conftest import start_suite, stop_suite

pytestmark = pytest.mark.timeout(120)
TOKEN = "release-secret-3f9a"


@pytest.fixture(scope="module")
async def tokened(tmp_path_factory, embedder) -> AsyncIterator:  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("token")
    suite = await start_suite(data, embedder, {"service_token": TOKEN}, service_token=TOKEN)
    scheduler = build_scheduler(
        SchedulerSettings(listen_addr="127.0.0.1:0", data_dir=data, service_token=TOKEN, log_level="WARNING")
    )
    await scheduler.start()
    yield suite, scheduler.address
    await scheduler.stop(1.0)
    await stop_suite(suite)


async def test_textmem_refuses_calls_without_the_token(tokened) -> None:  # type: ignore[no-untyped-def]
    suite, _ = tokened
    request = textmem_pb2.ListMemoriesRequest(cube_id="any")
    async with grpc.aio.insecure_channel(suite.textmem.address) as channel:
        stub = textmem_pb2_grpc.TextMemServiceStub(channel)
        for metadata in [(), ((SERVICE_TOKEN_HEADER, "wrong"),)]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListMemories(request, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert from_rpc_error(err.value).reason == "SERVICE_TOKEN_REQUIRED"
        # With the token the call reaches the service (an empty list of an unknown cube).
        ok = await stub.ListMemories(request, metadata=((SERVICE_TOKEN_HEADER, TOKEN),))
        assert list(ok.memories) == []
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_gateway_is_public_and_carries_the_token_inward(tokened, unique) -> None:  # type: ignore[no-untyped-def]
    suite, _ = tokened
    async with AsyncMemosClient(suite.address) as c:  # no token: the gateway does not ask for one
        await c.add_memories(f"u-{unique}", [f"c-{unique}"], "the token travels with the gateway's calls")
        found = await c.search_memories(f"u-{unique}", [f"c-{unique}"], "token travels")
    assert "travels" in found.ranked[0].item.memory


async def test_sdk_clients_of_internal_services_send_the_token(tokened) -> None:  # type: ignore[no-untyped-def]
    _, scheduler = tokened

    def calls() -> None:  # the blocking SDK client, off the event loop that serves the scheduler
        with SchedulerClient(scheduler, service_token="") as outsider:
            with pytest.raises(Unauthenticated):
                outsider.list_dead_letters()
        with SchedulerClient(scheduler, service_token=TOKEN) as member:
            assert member.list_dead_letters() == ([], "")

    await asyncio.to_thread(calls)
