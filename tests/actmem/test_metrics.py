"""actmem's cache bytes on its Prometheus endpoint, by tier, as caches come, spill and go."""

from __future__ import annotations

from tests.conftest import free_port
from tests.integration.test_observability import find, scrape, value


def test_cache_bytes_by_tier(make_service) -> None:  # type: ignore[no-untyped-def]
    one = make_service().client.extract("cube", "alice likes tea. " * 10).size_bytes
    metrics = f"127.0.0.1:{free_port()}"
    svc = make_service(max_cache_bytes=int(one * 1.5), metrics_addr=metrics)
    c = svc.client
    samples = scrape(metrics)
    assert value(samples, "memos_actmem_cache_bytes", tier="memory") == 0
    assert value(samples, "memos_actmem_cache_bytes", tier="disk") == 0

    a = c.extract("cube", "alice likes tea. " * 10)
    b = c.extract("cube", "bobby likes tea. " * 10)  # evicts a to disk
    samples = scrape(metrics)
    assert value(samples, "memos_actmem_cache_bytes", tier="memory") == b.size_bytes
    assert value(samples, "memos_actmem_cache_bytes", tier="disk") == a.size_bytes == one
    ok = {"rpc_service": "memos.actmem.v1.ActMemService", "rpc_method": "ExtractCache", "rpc_grpc_status_code": "OK"}
    assert value(samples, "rpc_server_call_duration_seconds_count", **ok) >= 2

    c.delete("cube", [a.cache_id])
    samples = scrape(metrics)
    assert value(samples, "memos_actmem_cache_bytes", tier="disk") == 0
    svc.stop()
    assert not find(scrape(metrics), "memos_actmem_cache_bytes")
