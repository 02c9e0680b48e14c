"""A client of any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp, OpenAI, ...).

Shared by ingest (fine-mode extraction) and the gateway (chat). It speaks plain
HTTP with urllib, so no SDK is needed in the images. Calls run in worker threads
and are bounded by a semaphore (one per process and use). Failures map to the
domain errors: unreachable or 5xx is UNAVAILABLE (retriable), a slow endpoint
DEADLINE_EXCEEDED, an answer of the wrong shape :class:`LLMOutputError`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from shared.errors import DeadlineExceeded, MemosError, Unavailable


class LLMOutputError(MemosError):
    """The model answered, but not with what was asked for."""

    default_reason = "LLM_OUTPUT_INVALID"


@contextmanager
def _endpoint_errors(timeout_s: float) -> Iterator[None]:
    try:
        yield
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"LLM endpoint failed: HTTP {exc.code}", reason="LLM_UNAVAILABLE") from None
    except TimeoutError:
        raise DeadlineExceeded(f"LLM call took longer than {timeout_s:g}s", reason="LLM_TIMEOUT") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"LLM endpoint unreachable: {exc}", reason="LLM_UNAVAILABLE") from None
    except json.JSONDecodeError:
        raise LLMOutputError("the LLM endpoint answered with a body that is not JSON") from None


class ChatClient:
    """Chat completions, whole (:meth:`complete`) or streamed (:meth:`stream`)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        timeout_s: float = 60.0,
        max_tokens: int = 2048,
        temperature: float = 0.0,
        semaphore: asyncio.Semaphore | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self._timeout = timeout_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._semaphore = semaphore or asyncio.Semaphore(4)
        # The endpoint is operator configuration: no proxy from the environment, no SSRF checks.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.calls = 0

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return urllib.request.Request(self._url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def _body(self, messages: list[dict[str, Any]], max_tokens: int | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self._temperature,
            "max_tokens": max_tokens or self._max_tokens,
        }

    def _post(self, body: dict[str, Any]) -> str:
        with _endpoint_errors(self._timeout), self._opener.open(self._request(body), timeout=self._timeout) as resp:
            payload = json.loads(resp.read())
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMOutputError("the LLM endpoint's answer has no choices[0].message.content") from None
        if not isinstance(content, str):
            raise LLMOutputError("the LLM's message content is not text")
        return content

    async def complete(
        self, messages: list[dict[str, Any]], *, json_output: bool = False, tally: list[int] | None = None
    ) -> str:
        body = self._body(messages, None)
        if json_output:
            body["response_format"] = {"type": "json_object"}
        async with self._semaphore:
            self.calls += 1
            if tally is not None:
                tally.append(1)
            return await asyncio.to_thread(self._post, body)

    def complete_blocking(self, messages: list[dict[str, Any]], *, json_output: bool = False) -> str:
        """:meth:`complete` for code that already runs on a worker thread (textmem's domain).

        Not bounded by the client's semaphore, which belongs to an event loop: the caller
        bounds concurrency (a thread semaphore)."""
        body = self._body(messages, None)
        if json_output:
            body["response_format"] = {"type": "json_object"}
        self.calls += 1
        return self._post(body)

    async def stream(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None) -> AsyncIterator[str]:
        """The answer's text as it arrives (server-sent events, ``stream: true``).

        The HTTP response is read by a worker thread that hands each delta to the event
        loop; closing the iterator early (the caller went away) stops the reading.
        """
        body = self._body(messages, max_tokens)
        body["stream"] = True
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        def pump() -> None:
            try:
                with (
                    _endpoint_errors(self._timeout),
                    self._opener.open(self._request(body), timeout=self._timeout) as resp,
                ):
                    for raw in resp:
                        if stop.is_set():
                            return
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        try:
                            delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                        except (KeyError, IndexError, TypeError, AttributeError):
                            raise LLMOutputError("a streamed chunk has no choices[0].delta") from None
                        if delta:
                            put("delta", delta)
                put("end", None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                put("error", exc)

        async with self._semaphore:
            self.calls += 1
            reader = loop.run_in_executor(None, pump)
            try:
                while True:
                    kind, value = await events.get()
                    if kind == "delta":
                        yield value
                    elif kind == "end":
                        return
                    else:
                        raise value
            finally:
                stop.set()
                # The thread ends at its next chunk (or its timeout); do not wait for it here.
                reader.add_done_callback(lambda f: f.exception())
