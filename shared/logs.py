"""Structured logging: one JSON object a line, with the request id and trace context when known.

Every record logged while a call is being served carries ``request_id`` (the call's
``x-request-id``), ``trace_id`` and ``span_id`` (its OpenTelemetry span, 32 and 16 hex
digits as in W3C ``traceparent``), so a log line leads to its trace and back.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

from shared.context import current_request_id

_CORRELATION = ("request_id", "trace_id", "span_id")
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


def correlation_ids() -> dict[str, str]:
    """The current request id and trace context (keys absent when unknown)."""
    out: dict[str, str] = {}
    rid = current_request_id()
    if rid:
        out["request_id"] = rid
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        out["trace_id"] = format(ctx.trace_id, "032x")
        out["span_id"] = format(ctx.span_id, "016x")
    return out


class CorrelationFilter(logging.Filter):
    """Stamps records with :func:`correlation_ids` where it is still known: at logging time."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in correlation_ids().items():
            if not getattr(record, key, None):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Records that bypassed the handler's filter (formatted directly) still get the ids.
        for key, value in correlation_ids().items():
            out.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_") and (value or key not in _CORRELATION):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For humans: the usual line, then the ids when a call is being served."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in _CORRELATION if getattr(record, k, None))
        return f"{line} [{ids}]" if ids else line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Sets up the root logger once; later calls only change the level."""
    root = logging.getLogger()
    root.setLevel(level)
    if getattr(configure_logging, "_done", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.handlers[:] = [handler]
    configure_logging._done = True  # type: ignore[attr-defined]
