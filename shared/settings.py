"""Typed settings, read once at start from ``MEMOS_*`` environment variables.

Every service has one settings class deriving from :class:`ServerSettings`;
its fields are the registry of the environment variables that service reads
(``MEMOS_<FIELD NAME>``). Nothing else in a service reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator
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

    tls_cert_file: Path | None = None
    """PEM certificate (chain) of this service: its listener's server certificate and the client
    certificate it presents when calling other memos services. Set together with tls_key_file."""

    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file."""

    tls_ca_file: Path | None = None
    """PEM bundle of the CA that signs the release's certificates. Set: calls to other memos
    services use TLS and verify the server with it, and a TLS listener accepts only client
    certificates it signed. Unset: calls between services are plaintext."""

    @model_validator(mode="after")
    def _tls_pair(self) -> MemosSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self


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

    tls_serve: bool = True
    """With tls_cert_file and tls_key_file set, serve the gRPC listener over TLS. False: the listener
    stays plaintext and the files are only this service's client certificate (the gateway's
    default: its public port serves applications, not the release's services)."""

    tls_require_client_auth: bool = True
    """A TLS listener refuses clients without a certificate signed by tls_ca_file (mutual TLS), so a
    pod that is not part of the release cannot even complete a handshake. False: client
    certificates are optional (verified when presented)."""

    health_listen_addr: str = ""
    """host:port of a second, plaintext listener that serves grpc.health.v1 alone (no other service,
    no reflection): for Kubernetes' native gRPC probes, which can neither present a client
    certificate nor speak TLS. Empty: health is served on listen_addr only."""

    @field_validator("metrics_addr", "health_listen_addr")
    @classmethod
    def _host_port(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{info.field_name} must be host:port (e.g. 0.0.0.0:9464), not {v!r}")
        return v

    @model_validator(mode="after")
    def _tls_listener(self) -> ServerSettings:
        serves_tls = self.tls_serve and self.tls_cert_file is not None
        if serves_tls and self.tls_require_client_auth and self.tls_ca_file is None:
            raise ValueError("tls_require_client_auth needs tls_ca_file (the CA that signs client certificates)")
        return self

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

    tls_server_name: str = ""
    """Name to expect in the server certificate of every memos service this one calls, instead of
    the host of its address (for addresses the certificate does not name, e.g. tests dialing
    127.0.0.1). Empty: the address's host."""
