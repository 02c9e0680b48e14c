"""Blocking domain calls, run off the event loop, that a server's stop can wait for.

``asyncio.to_thread`` leaves nothing to wait on: once a server's grace period ends its calls are
cancelled, but their threads run on, and closing the stores under them is unsafe (a SQLite
connection closed from another thread in the middle of a query can crash the process).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import Unavailable

T = TypeVar("T")


class Offloader:
    """Runs blocking calls in the loop's default executor, counting those that run."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._running = 0
        self._draining = False

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread, with the caller's context variables (request id,
        trace), like ``asyncio.to_thread``; UNAVAILABLE once :meth:`drain` began."""
        call = functools.partial(self._counted, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, call)

    def _counted(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        # Counted in the thread: a call cancelled before its thread took it never runs at all.
        with self._cond:
            if self._draining:
                raise Unavailable(f"{self._name} is stopping", reason="SHUTTING_DOWN")
            self._running += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout_s: float = 10.0) -> int:
        """Refuses new calls and waits up to ``timeout_s`` for the running ones; how many still run."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._draining = True
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return self._running
