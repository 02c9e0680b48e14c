"""Interceptors that every server and client channel gets.

Server side, :class:`ServerCallInterceptor` wraps each handler so that every
call has a request id (from ``x-request-id`` or generated, echoed back), runs
in a SERVER span joined to the caller's trace, is access-logged once with its
outcome and duration, and reports failures in the one error model: a
:class:`shared.errors.MemosError` becomes its status with an ``ErrorInfo``; any
other exception becomes INTERNAL with the request id, never a bare traceback.

Client side, :class:`ClientCallInterceptor` propagates the request id and the
trace context and sets a default deadline on calls that have none.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from shared.context import REQUEST_ID_HEADER, current_request_id, new_request_id, reset_request_id, set_request_id
from shared.errors import Code, DeadlineExceeded, Internal, InvalidArgument, MemosError, Unauthenticated
from shared.grpc_errors import grpc_code, trailing_metadata_for
from shared.metrics import RPC_ACTIVE, RPC_DURATION, RPC_ERRORS, rpc_attributes
from shared.telemetry import extract_context, inject_metadata

access_log = logging.getLogger("memos.access")
log = logging.getLogger(__name__)

# Calls that are too frequent and too boring to log at INFO.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


SERVICE_TOKEN_HEADER = "x-memos-service-token"
# Open without the service token: probes and tooling carry none.
_TOKEN_EXEMPT = ("/grpc.health.v1.", "/grpc.reflection.")


class ServerCallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service_name: str, service_token: str = "") -> None:
        self._tracer = trace.get_tracer(f"memos.{service_name}")
        self._token = service_token

    async def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        metadata = tuple(details.invocation_metadata or ())
        # The wrapper decodes requests itself (the handlers are registered without a request
        # deserializer), so bytes that are not the method's message get INVALID_ARGUMENT with a
        # reason instead of grpcio's bare UNKNOWN "Exception deserializing request!".
        decode = handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, handler.unary_unary, decode, streaming=False),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, handler.unary_stream, decode, streaming=False),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, metadata, handler.stream_unary, decode, streaming=True),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, metadata, handler.stream_stream, decode, streaming=True),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(
        self, method: str, metadata: tuple, behavior: Callable[..., Any], decode: Any, *, streaming: bool
    ) -> Callable[..., Any]:
        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self._tracer, method, metadata, context)
            with call:
                try:
                    await call.begin(unary_response=True)
                    self._check_token(method, metadata)
                    return await behavior(_decoded(request_or_iterator, decode, streaming), context)
                except BaseException as exc:  # noqa: BLE001 - translated, then re-raised
                    await call.fail(exc)

        return wrapped

    def _wrap_stream(
        self, method: str, metadata: tuple, behavior: Callable[..., Any], decode: Any, *, streaming: bool
    ) -> Callable[..., Any]:
        async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(self._tracer, method, metadata, context)
            with call:
                try:
                    await call.begin(unary_response=False)
                    self._check_token(method, metadata)
                    responses = behavior(_decoded(request_or_iterator, decode, streaming), context)
                    if hasattr(responses, "__aiter__"):
                        async for response in responses:
                            yield response
                    else:
                        # A handler that writes its responses with context.write() and returns
                        # nothing (grpc's own HealthServicer.Watch does): a coroutine to await.
                        await responses
                except GeneratorExit:
                    # The client went away mid-stream and gRPC closed this generator: nothing
                    # to tell anyone, and awaiting on the torn-down call is not allowed.
                    call.code, call.reason = Code.CANCELLED, "CANCELLED"
                    raise
                except BaseException as exc:  # noqa: BLE001
                    await call.fail(exc)

        return wrapped

    def _check_token(self, method: str, metadata: tuple) -> None:
        if not self._token or method.startswith(_TOKEN_EXEMPT):
            return
        sent = next((v for k, v in metadata if k == SERVICE_TOKEN_HEADER and isinstance(v, str)), "")
        if not hmac.compare_digest(sent.encode(), self._token.encode()):
            raise Unauthenticated(
                "calls to this service need the release's service token", reason="SERVICE_TOKEN_REQUIRED"
            )


def _decode_one(raw: Any, decode: Any) -> Any:
    if decode is None or not isinstance(raw, bytes | bytearray | memoryview):
        return raw
    try:
        return decode(bytes(raw))
    except Exception as exc:  # noqa: BLE001 - DecodeError, RecursionError (nesting), ...
        raise InvalidArgument(
            "the request is not a valid message of this method",
            reason="MALFORMED_REQUEST",
            metadata={"error": type(exc).__name__},
        ) from None


async def _decode_all(raws: AsyncIterator[Any], decode: Any) -> AsyncIterator[Any]:
    async for raw in raws:
        yield _decode_one(raw, decode)


def _decoded(request_or_iterator: Any, decode: Any, streaming: bool) -> Any:
    if decode is None:
        return request_or_iterator
    if streaming:
        return _decode_all(request_or_iterator, decode)
    return _decode_one(request_or_iterator, decode)


# Error text and details go out in trailing metadata, which peers cap (16 KiB by default): an error
# that quotes a huge caller input must still arrive as itself, not as RESOURCE_EXHAUSTED.
_MAX_ERROR_TEXT = 1024


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"


def _bounded(err: MemosError) -> MemosError:
    if len(err.message) <= _MAX_ERROR_TEXT and all(len(v) <= _MAX_ERROR_TEXT for v in err.metadata.values()):
        return err
    clipped = copy.copy(err)
    clipped.message = _clip(err.message)
    clipped.metadata = {k[:128]: _clip(v) for k, v in err.metadata.items()}
    return clipped


class _Call:
    """Bookkeeping of one server call: request id, span, metrics, access log line."""

    def __init__(self, tracer: trace.Tracer, method: str, metadata: tuple, context: grpc.aio.ServicerContext):
        self.method = method
        self.context = context
        md = {k: v for k, v in metadata if isinstance(v, str)}
        self.request_id = md.get(REQUEST_ID_HEADER) or new_request_id()
        self._parent = extract_context(metadata)
        self._tracer = tracer
        self._start = time.perf_counter()
        self.code = Code.OK
        self.reason = ""
        # What begin() put into the trailing metadata, kept there when the call fails.
        self._trailing: tuple[tuple[str, str], ...] = ()
        # Read now: after a client vanishes, the call's peer may be freed before __exit__ runs.
        self.peer = context.peer()

    def __enter__(self) -> _Call:
        self._rid_token = set_request_id(self.request_id)
        self._ctx_token = otel_context.attach(self._parent)
        self._span_cm = self._tracer.start_as_current_span(
            self.method.lstrip("/"), kind=trace.SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        )
        self.span = self._span_cm.__enter__()
        self.span.set_attribute("rpc.system", "grpc")
        self.span.set_attribute("memos.request_id", self.request_id)
        self._attrs = rpc_attributes(self.method)
        RPC_ACTIVE.add(1, self._attrs)
        return self

    async def begin(self, *, unary_response: bool) -> None:
        # The request id goes back to the caller. A call with one response carries it in its
        # trailing metadata, which leaves with the response and the status in one write; sending
        # initial metadata ahead of the response costs a write and a wakeup of its own on both
        # ends (~0.4 ms a hop, measured). It also keeps the call retriable: gRPC commits a call,
        # and stops retrying it, once initial metadata arrived, so sending it first had turned off
        # every retry policy of shared/channels.py for errors a server answers with (a test
        # shows it). A stream's caller gets it at once, before any message.
        if unary_response:
            self._trailing = ((REQUEST_ID_HEADER, self.request_id),)
            self.context.set_trailing_metadata(self._trailing)
        else:
            await self.context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline had passed before it started", reason="DEADLINE_PASSED")

    async def fail(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.code, self.reason = Code.CANCELLED, "CANCELLED"
            raise exc
        if isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError":
            # Already aborted by the handler itself: keep what it said.
            code = self.context.code()
            self.code = Code(code.value[0]) if isinstance(code, grpc.StatusCode) else Code.UNKNOWN
            raise exc
        if isinstance(exc, MemosError):
            err = exc
        else:
            log.exception("unhandled error in %s", self.method)
            err = Internal(
                f"internal error; quote request id {self.request_id} when reporting it",
                reason="INTERNAL",
                metadata={"request_id": self.request_id, "exception": type(exc).__name__},
            )
        err = _bounded(err)
        self.code, self.reason = err.code, err.reason
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, err.reason))
        await self.context.abort(
            grpc_code(err.code), err.message, trailing_metadata=trailing_metadata_for(err) + self._trailing
        )

    def __exit__(self, *exc_info: Any) -> None:
        elapsed_s = time.perf_counter() - self._start
        RPC_ACTIVE.add(-1, self._attrs)
        outcome = {**self._attrs, "rpc.grpc.status_code": self.code.name}
        RPC_DURATION.record(elapsed_s, outcome)
        if self.code != Code.OK:
            RPC_ERRORS.add(1, {**outcome, "error.reason": self.reason or self.code.name})
        self.span.set_attribute("rpc.grpc.status_code", int(self.code))
        level = logging.DEBUG if self.method.startswith(_QUIET_PREFIXES) else logging.INFO
        if self.code not in (Code.OK, Code.CANCELLED) and self.code >= Code.INTERNAL:
            level = logging.WARNING
        try:
            # Logged while the span is still current, so the line carries its trace and span ids.
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "rpc",
                    extra={
                        "method": self.method,
                        "code": self.code.name,
                        "reason": self.reason,
                        "duration_ms": round(elapsed_s * 1000, 2),
                        "peer": self.peer,
                    },
                )
        finally:
            self._span_cm.__exit__(None, None, None)
            otel_context.detach(self._ctx_token)
            reset_request_id(self._rid_token)


def _with_metadata(
    details: grpc.aio.ClientCallDetails, default_timeout: float, service_token: str = ""
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if service_token:
        metadata[SERVICE_TOKEN_HEADER] = service_token
    if REQUEST_ID_HEADER not in metadata:
        metadata.add(REQUEST_ID_HEADER, current_request_id() or new_request_id())
    for key, value in inject_metadata():
        metadata[key] = value
    timeout = details.timeout if details.timeout is not None else default_timeout
    return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


class ClientCallInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, default_timeout_s: float, service_token: str = "") -> None:
        self._timeout = default_timeout_s
        self._token = service_token

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(_with_metadata(client_call_details, self._timeout, self._token), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(_with_metadata(client_call_details, self._timeout, self._token), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await continuation(_with_metadata(client_call_details, self._timeout, self._token), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await continuation(_with_metadata(client_call_details, self._timeout, self._token), request_iterator)
