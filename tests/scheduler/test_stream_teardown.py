"""A streaming call whose client vanished while a response was being written (a worker killed
with kill -9 mid-stream): the server's response generator is closed (``GeneratorExit`` at its
``yield``), and the interceptor must let it close.

Found by the kill tests (fixed in shared/interceptors.py): ``_wrap_stream`` caught the
``GeneratorExit`` as an unhandled error, logs "unhandled error in .../Subscribe", awaits
``context.abort`` on the dead call (which raises ``ExecuteBatchError``), and then, in
``_Call.__exit__``, calls ``context.peer()`` on a call gRPC has already torn down, which can
segfault the whole process (grpcio 1.85.1; use after free of the peer string, cf. grpc/grpc#29927).
The scheduler process died that way in about one run in three of an in-process version of
test_kill.py. Now ``_wrap_stream`` re-raises ``GeneratorExit`` untouched (code CANCELLED, no
abort, no await) and ``context.peer()`` is read once, when the call starts.
"""

from __future__ import annotations

import logging

import grpc
import pytest

from shared.interceptors import ServerCallInterceptor


class DeadCallContext:
    """Enough of ``grpc.aio.ServicerContext``; records what the interceptor does with it."""

    def __init__(self) -> None:
        self.closed = False
        self.aborts: list[grpc.StatusCode] = []
        self.peer_after_close = 0

    async def send_initial_metadata(self, md) -> None:  # type: ignore[no-untyped-def]
        pass

    def time_remaining(self) -> None:
        return None

    def peer(self) -> str:
        if self.closed:
            self.peer_after_close += 1
        return "ipv4:127.0.0.1:1"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    async def abort(self, code, details, trailing_metadata=()):  # type: ignore[no-untyped-def]
        self.aborts.append(code)
        raise RuntimeError("Failed grpc_call_start_batch: the call is gone")  # what gRPC does here


async def test_closing_a_stream_mid_response_is_a_plain_cancel(caplog: pytest.LogCaptureFixture) -> None:
    async def behaviour(requests, context):  # type: ignore[no-untyped-def]
        while True:
            yield "response"

    ctx = DeadCallContext()
    wrapped = ServerCallInterceptor("test")._wrap_stream(
        "/memos.scheduler.v1.SchedulerService/Subscribe", (), behaviour, None, streaming=True
    )
    stream = wrapped(None, ctx)
    assert await stream.__anext__() == "response"  # suspended at the yield, as while writing
    ctx.closed = True
    with caplog.at_level(logging.ERROR):
        await stream.aclose()  # what the event loop does with the generator of a vanished call
    assert ctx.aborts == [], "aborted a call that no longer exists"
    assert ctx.peer_after_close == 0, "context.peer() on a torn-down call can segfault"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
