"""A loopback HTTP server speaking the OpenAI embeddings and chat-completions protocols.

The only kind of fake the project allows: an external model endpoint. It runs
the real HTTP protocol, so the production client (urllib, JSON, status codes)
is what gets tested. Embeddings are deterministic hashed bags of words, so
texts sharing words are close. Chat completions answer with the contents the
test queued in ``chat_replies`` (in order), else with ``chat_default(body)``;
with ``stream: true`` as server-sent events, a chunk per word.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def bag_of_words_vector(text: str, dim: int) -> list[float]:
    v = np.zeros(dim, dtype=np.float32)
    for word in text.lower().split():
        h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
        v[h % dim] += 1.0
    return v.tolist()


class FakeOpenAI:
    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.requests: list[dict] = []
        self.fail_with: int | None = None  # an HTTP status to answer with instead
        self.wrong_dim = False
        self.chat_replies: list[str] = []
        self.chat_default: Callable[[dict], str] = lambda body: json.dumps({"memories": [], "summary": ""})
        self.chat_delay_s = 0.0
        self._lock = threading.Lock()
        self.chat_in_flight = 0
        self.chat_max_in_flight = 0

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def _chat(self, body: dict) -> bytes:
        content = self._chat_content(body)
        return json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
        ).encode()

    def _chat_stream(self, body: dict) -> Iterator[bytes]:
        """The reply as server-sent events, one chunk per word (as a streaming server sends them)."""
        content = self._chat_content(body)
        words = content.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word + (" " if i < len(words) - 1 else "")}
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def _chat_content(self, body: dict) -> str:
        with self._lock:
            self.chat_in_flight += 1
            self.chat_max_in_flight = max(self.chat_max_in_flight, self.chat_in_flight)
            content = self.chat_replies.pop(0) if self.chat_replies else None
        try:
            if self.chat_delay_s:
                time.sleep(self.chat_delay_s)
            if content is None:
                content = self.chat_default(body)
        finally:
            with self._lock:
                self.chat_in_flight -= 1
        return content

    @contextmanager
    def serve(self) -> Iterator[str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if fake.fail_with:
                    self.send_response(fake.fail_with)
                    self.end_headers()
                    return
                if self.path == "/v1/chat/completions" and body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for chunk in fake._chat_stream(body):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    return
                if self.path == "/v1/chat/completions":
                    payload = fake._chat(body)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if self.path != "/v1/embeddings":
                    self.send_response(404)
                    self.end_headers()
                    return
                dim = fake.dim + (1 if fake.wrong_dim else 0)
                data = [
                    {"object": "embedding", "index": i, "embedding": bag_of_words_vector(t, dim)}
                    for i, t in enumerate(body["input"])
                ]
                data.reverse()  # the protocol orders by "index", not by position
                payload = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()
