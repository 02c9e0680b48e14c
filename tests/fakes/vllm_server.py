"""A loopback HTTP server speaking the parts of vLLM's OpenAI-compatible API that actmem uses.

Like ``openai_server.FakeOpenAI``, a stand-in for an external model endpoint
over the real HTTP protocol (urllib, JSON, server-sent events). It models what
actmem relies on in vLLM: automatic prefix caching in whole blocks (a prompt's
leading full blocks already seen are "cached", at least one token is always
computed, least recently used blocks are evicted beyond ``capacity_blocks``),
``usage.prompt_tokens_details.cached_tokens`` (only with
``report_cached_tokens``, as ``--enable-prompt-tokens-details`` does), streamed
completions with a final usage chunk, ``/tokenize``, ``/v1/models`` and the
``vllm:cache_config_info`` metric. Completions are deterministic words.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeVllm:
    def __init__(
        self,
        tokenize: Callable[[str], list[int]],
        *,
        model: str = "tiny",
        block_size: int = 16,
        max_model_len: int = 4096,
        capacity_blocks: int = 1024,
    ) -> None:
        self.tokenize = tokenize
        self.model = model
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.capacity_blocks = capacity_blocks
        self.prefix_caching = True
        self.report_cached_tokens = True
        self.requests: list[dict] = []  # type: ignore[type-arg]
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    # -- the prefix cache ------------------------------------------------------

    def _chain(self, ids: Sequence[int]) -> list[bytes]:
        """Hash of each full block, chained through its predecessors (as vLLM's block hashes are)."""
        out, h = [], b""
        for start in range(0, len(ids) - len(ids) % self.block_size, self.block_size):
            h = hashlib.sha256(h + json.dumps(list(ids[start : start + self.block_size])).encode()).digest()
            out.append(h)
        return out

    def _serve_prompt(self, ids: Sequence[int]) -> int:
        """Cached tokens for this prompt; then its full blocks are cached (most recent last)."""
        chain = self._chain(ids)
        with self._lock:
            hit = 0
            if self.prefix_caching:
                for h in chain:
                    if h not in self._blocks:
                        break
                    hit += 1
                for h in chain:
                    self._blocks[h] = None
                    self._blocks.move_to_end(h)
                while len(self._blocks) > self.capacity_blocks:
                    self._blocks.popitem(last=False)
        # At least the last prompt token is always computed.
        return min(hit * self.block_size, ((len(ids) - 1) // self.block_size) * self.block_size)

    def evict_all(self) -> None:
        """What a server restart (or cache pressure) does to every warmed prefix."""
        with self._lock:
            self._blocks.clear()

    def completions(self, path: str = "/v1/completions") -> list[dict]:  # type: ignore[type-arg]
        return [r["body"] for r in self.requests if r["path"] == path]

    # -- the protocol ---------------------------------------------------------

    def _usage(self, prompt: int, cached: int, completion: int) -> dict:  # type: ignore[type-arg]
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached} if self.report_cached_tokens else None,
        }

    def _completion(self, body: dict) -> tuple[list[str], dict]:  # type: ignore[type-arg]
        prompt = body["prompt"]
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if len(ids) + int(body.get("max_tokens") or 16) > self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens plus max_tokens exceeds {self.max_model_len}")
        cached = self._serve_prompt(ids)
        words = [f" w{(sum(ids) + i) % 97}" for i in range(int(body.get("max_tokens") or 16))]
        return words, self._usage(len(ids), cached, len(words))

    def _metrics(self) -> bytes:
        return (
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{block_size="{self.block_size}",cache_dtype="auto",'
            f'enable_prefix_caching="{self.prefix_caching}",num_gpu_blocks="{self.capacity_blocks}"}} 1.0\n'
        ).encode()

    @contextmanager
    def serve(self) -> Iterator[str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append({"path": self.path, "body": None})
                if self.path == "/v1/models":
                    data = [{"id": fake.model, "object": "model", "max_model_len": fake.max_model_len}]
                    self._send(200, json.dumps({"object": "list", "data": data}).encode())
                elif self.path == "/metrics":
                    self._send(200, fake._metrics(), "text/plain")
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body})
                if self.path == "/tokenize":
                    tokens = fake.tokenize(body["prompt"])
                    payload = {"tokens": tokens, "count": len(tokens), "max_model_len": fake.max_model_len}
                    self._send(200, json.dumps(payload).encode())
                    return
                if self.path != "/v1/completions":
                    self._send(404, b"{}")
                    return
                if body.get("model") != fake.model:
                    self._send(404, json.dumps({"error": {"message": f"model {body.get('model')}"}}).encode())
                    return
                try:
                    words, usage = fake._completion(body)
                except ValueError as exc:
                    self._send(400, json.dumps({"error": {"message": str(exc)}}).encode())
                    return
                if not body.get("stream"):
                    choice = {"index": 0, "text": "".join(words), "finish_reason": "length"}
                    self._send(
                        200, json.dumps({"object": "text_completion", "choices": [choice], "usage": usage}).encode()
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for w in words:
                    chunk = {"object": "text_completion", "choices": [{"index": 0, "text": w}], "usage": None}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                if (body.get("stream_options") or {}).get("include_usage"):
                    self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()
