"""Client channels between services: deadlines, retries, propagation.

Retries are configured in gRPC's own service config, so they happen below the
application and respect the call's deadline. Only methods the caller declares
idempotent are retried (reads, and mutations that always carry a request id),
and only on UNAVAILABLE: the one code that means the request did not run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import grpc

from shared.interceptors import SERVICE_TOKEN_HEADER, ClientCallInterceptor
from shared.settings import ClientSettings, MemosSettings
from shared.tls import channel_credentials, channel_tls_options


def _service_config(idempotent_methods: Iterable[str], max_attempts: int) -> str:
    names = []
    for full in idempotent_methods:
        service, _, method = full.lstrip("/").rpartition("/")
        names.append({"service": service, "method": method})
    config: dict = {"methodConfig": []}
    if names and max_attempts > 1:
        config["methodConfig"].append(
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    return json.dumps(config)


# How often a channel pings its server while a call is open, so that a dead peer or a dropped
# connection ends a long call (a worker's idle Subscribe, a slow Chat) instead of hanging it.
# Servers accept pings this often (shared/server.py): gRPC's default server policy allows one per
# 5 minutes when it sends nothing, and answers more with GOAWAY "too_many_pings", which ended every
# idle stream with UNAVAILABLE after two minutes.
KEEPALIVE_TIME_MS = 30_000


def channel_options(
    settings: ClientSettings, idempotent_methods: Iterable[str], max_message_bytes: int = 64 * 1024 * 1024
) -> list[tuple[str, object]]:
    """Channel options shared by the async (service) and sync (SDK) channels."""
    return [
        ("grpc.service_config", _service_config(idempotent_methods, settings.retry_max_attempts)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def open_channel(
    target: str,
    *,
    settings: ClientSettings | None = None,
    idempotent_methods: Iterable[str] = (),
    max_message_bytes: int = 64 * 1024 * 1024,
) -> grpc.aio.Channel:
    """A grpc.aio channel to another memos service: TLS with this service's client certificate when
    ``MEMOS_TLS_CA_FILE`` is set (shared/tls.py), plaintext otherwise.

    ``idempotent_methods`` are full method names ("/pkg.Service/Method").
    """
    settings = settings or ClientSettings()
    return raw_channel(
        target,
        settings,
        options=channel_options(settings, idempotent_methods, max_message_bytes),
        interceptors=[ClientCallInterceptor(settings.default_deadline_s, settings.service_token)],
    )


def raw_channel(
    target: str,
    settings: MemosSettings,
    *,
    options: Sequence[tuple[str, object]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel with the release's transport security and only the given options and
    interceptors (no default deadline, no retries): for long-lived streams."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=list(interceptors))
    return grpc.aio.secure_channel(
        target,
        credentials,
        options=[*options, *channel_tls_options(settings)],
        interceptors=list(interceptors),
    )


def blocking_channel(
    target: str, settings: MemosSettings, *, options: Sequence[tuple[str, object]] = ()
) -> grpc.Channel:
    """The blocking twin of :func:`raw_channel`, for SDK clients (the gateway client, scheduler
    workers, actmem): TLS with the settings' CA and client certificate when ``MEMOS_TLS_CA_FILE``
    is set, plaintext otherwise. A worker outside the release presents a certificate of the
    release's CA to reach a scheduler that requires mutual TLS."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, credentials, options=[*options, *channel_tls_options(settings)])


def method_names(service_descriptor) -> list[str]:  # type: ignore[no-untyped-def]
    """Full method names of a service descriptor, for ``idempotent_methods``."""
    return [f"/{service_descriptor.full_name}/{m.name}" for m in service_descriptor.methods]


class _AddMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call of a blocking channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._md = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        class Details(grpc.ClientCallDetails):
            pass

        new = Details()
        new.method, new.timeout, new.credentials = details.method, details.timeout, details.credentials
        new.wait_for_ready, new.compression = details.wait_for_ready, details.compression
        new.metadata = [*(details.metadata or ()), *self._md]
        return new

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request_iterator)


def with_service_token(channel: grpc.Channel, token: str | None = None) -> grpc.Channel:
    """A blocking channel that sends the release's service token (``MEMOS_SERVICE_TOKEN`` when
    ``token`` is None): for SDK clients of internal services (scheduler workers, actmem)."""
    token = os.environ.get("MEMOS_SERVICE_TOKEN", "") if token is None else token
    if not token:
        return channel
    return grpc.intercept_channel(channel, _AddMetadata(((SERVICE_TOKEN_HEADER, token),)))
