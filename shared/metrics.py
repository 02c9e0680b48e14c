"""OpenTelemetry metrics with a Prometheus scrape endpoint, one provider per process.

Instruments are created here, at import, on the OpenTelemetry API: until
:func:`setup_metrics` installs the SDK's provider they record nothing and cost
next to nothing, so code may use them whether or not metrics are enabled. A
service enables them with ``MEMOS_METRICS_ADDR`` (``host:port``); its
:class:`shared.server.GrpcServer` then installs the provider and serves
``/metrics`` on that address in Prometheus' text format (the
``prometheus_client`` HTTP server, a daemon thread).

Several services in one process (the embedded suite, the tests) share one
provider, so one endpoint shows them all; RPC metrics tell them apart by
``rpc_service``. Gauges read their service's state at scrape time through
*sources* that a server adds when it is built and removes when it stops
(:class:`GaugeSources`), so a stopped server's numbers disappear with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

_METER = metrics.get_meter("memos")

# Seconds; from a cache hit (sub-millisecond) to a fine-mode add with an LLM (tens of seconds).
RPC_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

RPC_DURATION = _METER.create_histogram(
    "rpc.server.call.duration",
    unit="s",
    description="Duration of server calls, by service, method and gRPC status code (streams: until they end).",
    explicit_bucket_boundaries_advisory=RPC_DURATION_BUCKETS,
)
RPC_ERRORS = _METER.create_counter(
    "memos.rpc.server.errors",
    unit="{error}",
    description="Server calls that ended with a status other than OK, by method, code and ErrorInfo reason.",
)
RPC_ACTIVE = _METER.create_up_down_counter(
    "rpc.server.active_requests",
    unit="{request}",
    description="Server calls in progress (open streams included), by service and method.",
)


def rpc_attributes(method: str) -> dict[str, str]:
    """``/pkg.Service/Method`` as OpenTelemetry's RPC attributes."""
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


Point = tuple[float, Mapping[str, str]]
T = TypeVar("T")


class GaugeSources:
    """One observable gauge fed by the sources of the servers running in this process.

    A source is a callable returning ``(value, attributes)`` points; it runs at scrape
    time, in the scraping thread, so it must be thread-safe and quick. A source that
    raises is logged and skipped; the others still report.
    """

    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name = name
        self._sources: dict[int, Callable[[], Iterable[Point]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        _METER.create_observable_gauge(name, callbacks=[self._observe], unit=unit, description=description)

    def add(self, source: Callable[[], Iterable[Point]]) -> Callable[[], None]:
        """Registers a source; returns the function that removes it (for ``on_stop``)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._sources[key] = source

        def remove() -> None:
            with self._lock:
                self._sources.pop(key, None)

        return remove

    def points(self) -> list[Point]:
        with self._lock:
            sources = list(self._sources.values())
        out: list[Point] = []
        for source in sources:
            try:
                out.extend(source())
            except Exception:  # noqa: BLE001 - one broken source must not hide the others
                log.warning("metrics source for %s failed", self.name, exc_info=True)
        return out

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(attrs)) for value, attrs in self.points()]


class Reading(Generic[T]):
    """A value read for gauges: on one dedicated thread, at most once per ``ttl_s``.

    Scrapes arrive on a new thread each (and may overlap); a store whose connections are
    per thread (SQLite) would open one per scrape. Here every read runs on the same worker
    thread, one at a time, and a read younger than ``ttl_s`` is reused, which bounds what
    scraping costs a store however often and however concurrently it happens.
    """

    def __init__(self, read: Callable[[], T], ttl_s: float = 0.0, timeout_s: float = 10.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._read = read
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memos-metrics")
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = float("-inf")

    def __call__(self) -> T:
        with self._lock:
            if time.monotonic() - self._at >= self._ttl or self._value is None:
                self._value = self._pool.submit(self._read).result(timeout=self._timeout)
                self._at = time.monotonic()
            return self._value

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


SCHEDULER_QUEUE_DEPTH = GaugeSources(
    "memos.scheduler.queue.depth",
    "{task}",
    "Open tasks in the scheduler's queue, by label and state (pending: waiting for a worker; running: leased).",
)
SCHEDULER_DEAD_LETTERS = GaugeSources(
    "memos.scheduler.dead_letters", "{task}", "Dead-lettered tasks waiting for a replay or an operator."
)
ACTMEM_CACHE_BYTES = GaugeSources(
    "memos.actmem.cache.bytes",
    "By",
    "Bytes of KV caches held by actmem, by tier (memory: resident on the model's device or host; disk: spilled).",
)
TEXTMEM_MEMORIES = GaugeSources(
    "memos.textmem.memories", "{memory}", "Memories stored in textmem's graph, by memory type."
)
TEXTMEM_CUBES = GaugeSources("memos.textmem.cubes", "{cube}", "Cubes registered in textmem.")
TEXTMEM_CUBE_MEMORIES = GaugeSources(
    "memos.textmem.cube.memories",
    "{memory}",
    "Memories of each of the largest cubes (MEMOS_METRICS_TOP_CUBES of them; bounds the series count).",
)


# -- the provider and the endpoint ---------------------------------------------

_lock = threading.Lock()
_provider: Any = None
_endpoints: dict[str, tuple[Any, threading.Thread, str]] = {}


def setup_metrics(service_name: str, extra_readers: Sequence[Any] = ()) -> Any:
    """Installs the process's meter provider with a Prometheus reader (once) and returns it.

    ``extra_readers`` (e.g. the SDK's ``InMemoryMetricReader`` in tests) count only on
    the first call, which creates the provider.
    """
    global _provider
    with _lock:
        if _provider is None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource

            _provider = MeterProvider(
                metric_readers=[PrometheusMetricReader(scope_info_enabled=False), *extra_readers],
                resource=Resource.create({"service.name": f"memos-{service_name}"}),
            )
            metrics.set_meter_provider(_provider)
        return _provider


def serve_metrics(addr: str, service_name: str = "memos") -> str:
    """Serves ``/metrics`` on ``addr`` (``host:port``; port 0 picks one); returns the bound address.

    Idempotent per address: services of one process that name the same address share
    one endpoint.
    """
    setup_metrics(service_name)
    with _lock:
        if addr in _endpoints:
            return _endpoints[addr][2]
        from prometheus_client import start_http_server

        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        httpd, thread = start_http_server(int(port), addr=host)
        bound_port = httpd.server_port
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        bound = f"[{shown}]:{bound_port}" if ":" in shown else f"{shown}:{bound_port}"
        _endpoints[addr] = (httpd, thread, bound)
    log.info("serving metrics", extra={"service": service_name, "metrics_address": bound})
    return bound


def stop_metrics_endpoints() -> None:
    """Closes every endpoint this process serves (tests; a service's ends with its process)."""
    with _lock:
        endpoints = list(_endpoints.values())
        _endpoints.clear()
    for httpd, thread, _ in endpoints:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
