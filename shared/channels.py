"""Client channels between services: deadlines, retries, propagation.

Retries are configured in gRPC's own service config, so they happen below the
application and respect the call's deadline. Only methods the caller declares
idempotent are retried (reads, and mutations that always carry a request id),
and only on UNAVAILABLE: the one code that means the request did not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import grpc

from shared.interceptors import ClientCallInterceptor
from shared.settings import ClientSettings


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


def channel_options(
    settings: ClientSettings, idempotent_methods: Iterable[str], max_message_bytes: int = 64 * 1024 * 1024
) -> list[tuple[str, object]]:
    """Channel options shared by the async (service) and sync (SDK) channels."""
    return [
        ("grpc.service_config", _service_config(idempotent_methods, settings.retry_max_attempts)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def open_channel(
    target: str,
    *,
    settings: ClientSettings | None = None,
    idempotent_methods: Iterable[str] = (),
    max_message_bytes: int = 64 * 1024 * 1024,
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to another memos service.

    ``idempotent_methods`` are full method names ("/pkg.Service/Method").
    """
    settings = settings or ClientSettings()
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(settings, idempotent_methods, max_message_bytes),
        interceptors=[ClientCallInterceptor(settings.default_deadline_s)],
    )


def method_names(service_descriptor) -> list[str]:  # type: ignore[no-untyped-def]
    """Full method names of a service descriptor, for ``idempotent_methods``."""
    return [f"/{service_descriptor.full_name}/{m.name}" for m in service_descriptor.methods]
