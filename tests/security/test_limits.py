"""Per-user rate limits at the gateway: unit behaviour of the bucket, and over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memos.client import AsyncMemosClient
from services.gateway.limits import RateLimiter
from shared.errors import ResourceExhausted
from tests.conftest import start_suite, stop_suite

pytestmark = pytest.mark.timeout(120)


def test_bucket_admits_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    for _ in range(3):
        limiter.check("u", now=100.0)
    with pytest.raises(ResourceExhausted) as err:
        limiter.check("u", now=100.0)
    assert err.value.reason == "RATE_LIMITED" and err.value.retriable
    assert err.value.metadata["limit_per_s"] == "2" and float(err.value.metadata["retry_after_s"]) == pytest.approx(0.5)
    limiter.check("other", now=100.0)  # users do not share a bucket
    limiter.check("u", now=100.5)  # half a second buys one call at 2/s
    with pytest.raises(ResourceExhausted):
        limiter.check("u", now=100.5)


def test_idle_buckets_are_forgotten() -> None:
    limiter = RateLimiter(rate_per_s=10.0, burst=1, max_users=2)
    for i in range(3):
        limiter.check(f"u{i}", now=float(i))
    assert len(limiter._buckets) <= 2


@pytest.fixture(scope="module")
async def limited(tmp_path_factory, embedder) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    suite = await start_suite(tmp_path_factory.mktemp("limits"), embedder, rate_limit_per_user=0.5, rate_limit_burst=3)
    yield suite.address
    await stop_suite(suite)


async def test_the_gateway_limits_each_user(limited: str, unique: str) -> None:
    async with AsyncMemosClient(limited) as c:
        for _ in range(3):
            await c.list_cubes(f"busy-{unique}")
        with pytest.raises(ResourceExhausted) as err:
            await c.list_cubes(f"busy-{unique}")
        assert err.value.reason == "RATE_LIMITED" and err.value.metadata["burst"] == "3"
        await c.list_cubes(f"calm-{unique}")  # another user is not affected
