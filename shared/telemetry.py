"""OpenTelemetry tracing: one provider per process, W3C context across services.

Spans are always created (cheap without an exporter); they leave the process
over OTLP/gRPC only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, following the
OpenTelemetry convention rather than a memos-specific variable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def setup_tracing(service_name: str, extra_exporter: SpanExporter | None = None) -> TracerProvider:
    """Installs the process's tracer provider (once) and returns it.

    In embedded mode several services share a process, so the first caller's
    name labels the provider and each service names its own tracer.
    """
    global _provider
    if _provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _provider = current
        else:
            _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if endpoint:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
                log.info("exporting traces over OTLP", extra={"endpoint": endpoint})
            trace.set_tracer_provider(_provider)
    if extra_exporter is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        _provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
    return _provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


class _MetadataGetter:
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _MetadataGetter()


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | None):
    """The trace context a caller sent in its gRPC metadata."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    return propagate.extract(carrier, getter=_GETTER)


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata pairs."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())
