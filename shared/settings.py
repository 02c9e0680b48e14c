"""Typed settings, read once at start from ``MEMOS_*`` environment variables.

Every service has one settings class deriving from :class:`ServerSettings`;
its fields are the registry of the environment variables that service reads
(``MEMOS_<FIELD NAME>``). Nothing else in a service reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/memos`` or ``~/.local/share/memos``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "memos"


class MemosSettings(BaseSettings):
    """Base of all settings classes: ``MEMOS_`` prefix, unknown vars ignored."""

    model_config = SettingsConfigDict(env_prefix="MEMOS_", extra="ignore", frozen=True)

    service_token: str = Field(default="", repr=False)
    """Shared secret of the release's services: sent with every call to another memos service,
    and required on every call a service receives (the gateway's public API, health and
    reflection excepted), so a pod outside the release cannot call textmem directly. Empty: off."""


class ServerSettings(MemosSettings):
    """What every gRPC server needs."""

    listen_addr: str = "127.0.0.1:0"
    """host:port to listen on; port 0 picks a free port."""

    grace_period_s: float = Field(default=10.0, ge=0.0)
    """On SIGTERM, how long in-flight calls may run before they are cancelled."""

    drain_delay_s: float = Field(default=0.0, ge=0.0)
    """On SIGTERM, how long to report NOT_SERVING while still accepting calls, so that
    load balancers and readiness probes see it before the listener closes (5 s on Kubernetes)."""

    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request message accepted; larger ones get RESOURCE_EXHAUSTED."""

    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest response message sent."""

    log_level: str = "INFO"
    """Python logging level name."""

    log_format: str = "json"
    """"json" for structured logs, "text" for humans."""

    enable_reflection: bool = True
    """Serve gRPC server reflection (grpcurl, grpcui)."""

    metrics_addr: str = ""
    """host:port to serve Prometheus metrics on (``/metrics``, OpenTelemetry instruments); empty
    disables them. Port 0 picks a free port. The Helm chart sets ``0.0.0.0:9464``."""

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, v: str) -> str:
        v = v.strip()
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"metrics_addr must be host:port (e.g. 0.0.0.0:9464), not {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class ClientSettings(MemosSettings):
    """How a service calls another one."""

    default_deadline_s: float = Field(default=30.0, gt=0.0)
    """Deadline for calls whose caller set none."""

    retry_max_attempts: int = Field(default=4, ge=1, le=5)
    """Attempts (first one included) for idempotent calls hitting UNAVAILABLE."""
