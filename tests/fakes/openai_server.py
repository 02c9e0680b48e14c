"""A loopback HTTP server speaking the OpenAI embeddings protocol.

The only kind of fake the project allows: an external model endpoint. It runs
the real HTTP protocol, so the production client (urllib, JSON, status codes)
is what gets tested. Embeddings are deterministic hashed bags of words, so
texts sharing words are close.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
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
