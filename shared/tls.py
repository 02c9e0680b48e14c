"""TLS between memos services, from the certificate files named in the settings.

One CA signs the release's certificates. A listener serves its certificate and (by default)
requires a client certificate signed by that CA; a channel to another service verifies the
server with the CA and presents this service's certificate. The files are PEM, as a Kubernetes
``kubernetes.io/tls`` Secret (cert-manager) mounts them: ``tls.crt``, ``tls.key``, ``ca.crt``.

The listener re-reads the files when they change (cert-manager renews them in place, and the
kubelet swaps a mounted Secret's files atomically), so renewal needs no restart. Channels read
them once: gRPC fixes a channel's credentials when it is created, and a renewed client
certificate takes effect on the pod's next start (renew well before expiry, as cert-manager
does at two thirds of the lifetime).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from shared.settings import ClientSettings, MemosSettings, ServerSettings

log = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise RuntimeError(f"the TLS {what} {path} is not PEM")
    return data


def channel_credentials(settings: MemosSettings) -> grpc.ChannelCredentials | None:
    """Credentials of a channel to another memos service; None when the release runs plaintext."""
    if settings.tls_ca_file is None:
        return None
    cert = key = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        cert, key = _read(settings.tls_cert_file, "certificate"), _read(settings.tls_key_file, "key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file, "CA bundle"), private_key=key, certificate_chain=cert
    )


def channel_tls_options(settings: MemosSettings) -> list[tuple[str, object]]:
    """The server-name override of a TLS channel, when the settings give one."""
    name = settings.tls_server_name if isinstance(settings, ClientSettings) else ""
    return [("grpc.ssl_target_name_override", name)] if name and settings.tls_ca_file is not None else []


class _ReloadingCertificates:
    """Fetcher for :func:`grpc.dynamic_ssl_server_credentials`: gRPC calls it before each new
    connection's handshake; it returns a new configuration when the files changed, else None."""

    RECHECK_S = 5.0  # a stat of three files at most this often, not per connection

    def __init__(self, settings: ServerSettings) -> None:
        assert settings.tls_cert_file is not None and settings.tls_key_file is not None
        self._paths = [p for p in (settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file) if p]
        self._settings = settings
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._mtimes()
        self.initial = self._load()

    def _mtimes(self) -> tuple[float, ...]:
        try:
            return tuple(p.stat().st_mtime for p in self._paths)
        except OSError:
            return ()

    def _load(self) -> grpc.ServerCertificateConfiguration:
        s = self._settings
        assert s.tls_cert_file is not None and s.tls_key_file is not None
        pair = (_read(s.tls_key_file, "key"), _read(s.tls_cert_file, "certificate"))
        ca = _read(s.tls_ca_file, "CA bundle") if s.tls_ca_file is not None else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.RECHECK_S:
                return None
            self._checked = now
            stamp = self._mtimes()
            if not stamp or stamp == self._stamp:
                return None
            try:
                config = self._load()
            except RuntimeError:
                # Mid-rotation (key written, certificate not yet) or broken: keep serving the
                # previous pair, and look again at the next recheck.
                log.warning("TLS files changed but cannot be loaded; keeping the previous certificate", exc_info=True)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded", extra={"cert_file": str(self._settings.tls_cert_file)})
            return config


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """Credentials of a service's listener; None when it serves plaintext."""
    if not settings.tls_serve or settings.tls_cert_file is None:
        return None
    fetcher = _ReloadingCertificates(settings)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=settings.tls_require_client_auth
    )
