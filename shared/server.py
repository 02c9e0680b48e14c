"""grpc.aio server bootstrap shared by every service.

A :class:`GrpcServer` serves a service's servicers plus ``grpc.health.v1`` and
reflection, with the shared interceptors and message-size limits. Stopping it
(on SIGTERM via :func:`serve_forever`, or directly) first flips health to
NOT_SERVING, so load balancers stop sending traffic, then lets in-flight calls
finish within the grace period before cancelling them.

With the release's certificates set (shared/tls.py) the listener serves TLS and requires client
certificates. Kubernetes' native gRPC probes speak plaintext without a certificate, so such a
service can also serve ``grpc.health.v1`` alone on a plaintext port (``MEMOS_HEALTH_LISTEN_ADDR``):
it tells whether the pod serves and nothing else, like the kubelet's HTTP probes do.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import channels
from shared.interceptors import ServerCallInterceptor
from shared.metrics import serve_metrics
from shared.settings import ServerSettings
from shared.tls import server_credentials

log = logging.getLogger(__name__)


@dataclass
class ServiceBinding:
    """One gRPC service to serve: its full name and how to add it to a server."""

    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]


@dataclass
class GrpcServer:
    """A started-on-demand grpc.aio server for one memos service."""

    name: str
    settings: ServerSettings
    services: Sequence[ServiceBinding]
    on_stop: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    # Run once serving (with this server, e.g. to reach its own address), and at the start of
    # stop(), before the drain: background work that calls this server must end first, or
    # its open calls would hold the drain for the whole grace period.
    on_start: list[Callable[[GrpcServer], Awaitable[None] | None]] = field(default_factory=list)
    before_stop: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    # Whether calls must carry MEMOS_SERVICE_TOKEN (when one is set): true for the services
    # behind the gateway, false for the gateway, whose callers authenticate with API keys.
    require_service_token: bool = True

    def __post_init__(self) -> None:
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port: int = 0
        # The plaintext health-only listener (MEMOS_HEALTH_LISTEN_ADDR); 0 while there is none.
        self.health_port: int = 0
        self._health_server: grpc.aio.Server | None = None
        # Where /metrics is served ("" while MEMOS_METRICS_ADDR is empty).
        self.metrics_address = ""
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        host = self.settings.listen_addr.rsplit(":", 1)[0]
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def health_address(self) -> str:
        host = self.settings.health_listen_addr.rsplit(":", 1)[0]
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"{host}:{self.health_port}"

    async def start(self) -> int:
        s = self.settings
        if s.metrics_addr:
            # Before the listener, so the first calls are counted and a bad address fails the start.
            self.metrics_address = serve_metrics(s.metrics_addr, self.name)
        server = grpc.aio.server(
            interceptors=[ServerCallInterceptor(self.name, s.service_token if self.require_service_token else "")],
            options=[
                ("grpc.max_receive_message_length", s.max_request_bytes),
                ("grpc.max_send_message_length", s.max_response_bytes),
                ("grpc.so_reuseport", 0),
                # Our channels ping every KEEPALIVE_TIME_MS during a call; a stream that sends
                # nothing for a while must not count those as abuse (see shared/channels.py).
                ("grpc.http2.min_ping_interval_without_data_ms", channels.KEEPALIVE_TIME_MS // 2),
            ],
        )
        for svc in self.services:
            svc.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [svc.full_name for svc in self.services]
        if s.enable_reflection:
            reflection.enable_server_reflection(
                [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
            )
        credentials = server_credentials(s)
        if credentials is None:
            self.port = server.add_insecure_port(s.listen_addr)
        else:
            self.port = server.add_secure_port(s.listen_addr, credentials)
        if self.port == 0:
            raise RuntimeError(f"could not bind {s.listen_addr}")
        await server.start()
        self._server = server
        for n in ["", *names]:
            await self._health.set(n, health_pb2.HealthCheckResponse.SERVING)
        if s.health_listen_addr:
            # The same health servicer: both listeners flip to NOT_SERVING together on stop.
            health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self._health, health_server)
            self.health_port = health_server.add_insecure_port(s.health_listen_addr)
            if self.health_port == 0:
                raise RuntimeError(f"could not bind {s.health_listen_addr}")
            await health_server.start()
            self._health_server = health_server
        log.info(
            "serving",
            extra={
                "service": self.name,
                "address": self.address,
                "tls": credentials is not None,
                **({"health_address": self.health_address} if self.health_port else {}),
            },
        )
        for start_hook in self.on_start:
            started = start_hook(self)
            if inspect.isawaitable(started):
                await started
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, then drain in-flight calls for ``grace`` seconds."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.settings.grace_period_s if grace is None else grace
        for stop_hook in self.before_stop:
            stopping = stop_hook()
            if inspect.isawaitable(stopping):
                await stopping
        # Tell health watchers first; keep serving while they react, then drain.
        await self.set_serving(False)
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)
        await self._health.enter_graceful_shutdown()
        log.info("stopping", extra={"service": self.name, "grace_s": grace})
        await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
        for hook in self.on_stop:
            result = hook()
            if inspect.isawaitable(result):
                await result
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for n in ["", *(svc.full_name for svc in self.services)]:
            await self._health.set(n, status)


async def serve_forever(servers: Sequence[GrpcServer]) -> None:
    """Starts the servers and stops them gracefully on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    for srv in servers:
        await srv.start()
    await stop_requested.wait()
    await asyncio.gather(*(srv.stop() for srv in servers))
