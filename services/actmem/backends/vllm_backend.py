"""The vLLM backend: caches live in a co-located vLLM server as warmed prefixes.

vLLM runs beside actmem (same pod, ``http://127.0.0.1:<port>/v1``) with automatic
prefix caching. A cache here is a token prefix: actmem tokenizes the memory with
the model's own tokenizer (read from the same local model directory the server
loads), *warms* it with a one-token completion whose prompt is exactly those
token ids, and routes every generation that uses the cache to the server that
holds it, with the prefix's token ids first, so the server's prefix cache hits.
Whether it did is read from the server's own count of cached prompt tokens
(``usage.prompt_tokens_details.cached_tokens``), never assumed.

The server must run with ``--enable-prefix-caching`` (vLLM's default) and
``--enable-prompt-tokens-details`` (else it reports no cached-token count); prefix
caching is checked at start, the cached-token count when a generation reports none. vLLM caches whole blocks of ``block_size`` tokens, so a
hit covers the prefix rounded down to a block (a prefix shorter than one block
is never cached).

There are no tensors on this side: the tensor operations of :class:`Backend`
(prefill, shift_keys, next_token_logits) raise FAILED_PRECONDITION with reason
TENSORS_UNAVAILABLE. HTTP goes through urllib, like every other model endpoint
the project calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from services.actmem.codec import NAME_TO_DTYPE
from services.actmem.models import KV, Fingerprint, GenerateEvent
from services.actmem.resolve import resolve_model
from shared.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

# Tokenized by the server and locally at start: both must agree, or prefixes would never hit.
_PROBE = "MemOS keeps activation memory: <|im_start|>user\nhello world 12345<|im_end|>\n"
_CACHE_CONFIG = re.compile(r"^vllm:cache_config_info\{(?P<labels>[^}]*)\}", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def tensors_unavailable(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{what}: this actmem runs the vLLM backend, whose caches are prefixes held by the vLLM "
        "server; there are no tensors to compute, download, upload or re-position here",
        reason="TENSORS_UNAVAILABLE",
    )


@dataclass
class WarmResult:
    server: int
    prompt_tokens: int
    cached_tokens: int  # already cached before this warm-up (what the server reported)
    ms: float


class VllmServer:
    """One OpenAI-compatible vLLM server (``base_url`` ends in ``/v1``)."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0, api_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def _request(self, url: str, body: Mapping[str, object] | None = None, timeout_s: float | None = None):  # type: ignore[no-untyped-def]
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers=self._headers, method="POST" if data else "GET")
        try:
            return urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s)  # noqa: S310 - configured URL
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:2000].decode("utf-8", "replace")
            if exc.code in (400, 422):
                raise InvalidArgument(
                    f"vLLM at {self.base_url} refused the request: {detail}",
                    reason="VLLM_BAD_REQUEST",
                    metadata={"url": url, "status": str(exc.code)},
                ) from None
            if exc.code == 429:
                raise ResourceExhausted(
                    f"vLLM at {self.base_url} is overloaded: {detail}", reason="VLLM_OVERLOADED"
                ) from None
            raise Unavailable(
                f"vLLM at {self.base_url} answered HTTP {exc.code}: {detail}",
                reason="VLLM_UNAVAILABLE",
                metadata={"url": url, "status": str(exc.code)},
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(
                f"vLLM at {self.base_url} cannot be reached ({reason})",
                reason="VLLM_UNAVAILABLE",
                metadata={"url": url},
            ) from None

    def get_json(self, path: str) -> dict:  # type: ignore[type-arg]
        with self._request(self.base_url + path) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body: Mapping[str, object], *, root: bool = False) -> dict:  # type: ignore[type-arg]
        with self._request((self.root if root else self.base_url) + path, body) as resp:
            return json.loads(resp.read())

    def metrics(self) -> str:
        try:
            with self._request(self.root + "/metrics", timeout_s=10.0) as resp:
                return resp.read().decode("utf-8", "replace")
        except Unavailable:
            return ""

    def stream(self, path: str, body: Mapping[str, object]) -> Iterator[dict]:  # type: ignore[type-arg]
        """Server-sent events of a streamed completion, as parsed JSON chunks."""
        with self._request(self.base_url + path, body) as resp:
            for raw in resp:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield json.loads(payload)


def _cached_tokens(usage: Mapping[str, object] | None) -> int | None:
    details = (usage or {}).get("prompt_tokens_details")
    if not isinstance(details, dict) or details.get("cached_tokens") is None:
        return None
    return int(details["cached_tokens"])


class VllmBackend:
    """Backend over one or more co-located vLLM servers serving the same model."""

    caches_on_server = True
    device = "vllm"

    def __init__(
        self,
        model_path: str,
        urls: Sequence[str],
        *,
        served_model: str = "",
        timeout_s: float = 60.0,
        startup_timeout_s: float = 0.0,
        api_key: str = "",
    ) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if not urls:
            raise FailedPrecondition(
                "the vLLM backend needs the server's URL (MEMOS_VLLM_URL, e.g. http://127.0.0.1:8000/v1)",
                reason="VLLM_NOT_CONFIGURED",
            )
        path = resolve_model(model_path)
        # The same directory the co-located server loads: prompts are tokenized here, once,
        # and sent as token ids, so the server sees exactly the prefix that was warmed.
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise FailedPrecondition(f"the tokenizer of {model_path} has no chat template", reason="NO_CHAT_TEMPLATE")
        self.servers = [VllmServer(u, timeout_s=timeout_s, api_key=api_key) for u in urls]
        models = [self._wait_for_models(s, startup_timeout_s) for s in self.servers]
        self.served_model = served_model or models[0][0]
        max_lens = set()
        for server, (_, entries) in zip(self.servers, models, strict=True):
            entry = entries.get(self.served_model)
            if entry is None:
                raise FailedPrecondition(
                    f"vLLM at {server.base_url} serves {sorted(entries)}, not {self.served_model}",
                    reason="VLLM_MODEL_MISMATCH",
                )
            max_lens.add(int(entry.get("max_model_len") or 0))
        self.block_size = self._check_cache_config()
        for server in self.servers:
            self._check_tokenizer(server)
        self.fingerprint = self._fingerprint(path, min(max_lens))
        log.info(
            "vLLM backend ready",
            extra={
                "model": self.served_model,
                "servers": [s.base_url for s in self.servers],
                "block_size": self.block_size,
                "max_model_len": self.fingerprint.max_context,
            },
        )

    # -- start-up checks ---------------------------------------------------------

    @staticmethod
    def _wait_for_models(server: VllmServer, startup_timeout_s: float) -> tuple[str, dict[str, dict]]:  # type: ignore[type-arg]
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                data = server.get_json("/models").get("data") or []
                break
            except Unavailable:
                # Same pod: the server may still be loading the model when actmem starts.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
        entries = {str(m.get("id")): m for m in data if isinstance(m, dict)}
        if not entries:
            raise FailedPrecondition(f"vLLM at {server.base_url} serves no model", reason="VLLM_MODEL_MISMATCH")
        return next(iter(entries)), entries

    def _check_cache_config(self) -> int:
        """The servers' KV block size, after checking that prefix caching is on (from /metrics)."""
        sizes = set()
        for server in self.servers:
            m = _CACHE_CONFIG.search(server.metrics())
            if m is None:
                log.warning("vLLM exports no cache_config_info; assuming block size 16", extra={"url": server.root})
                sizes.add(16)
                continue
            labels = dict(_LABEL.findall(m.group("labels")))
            if labels.get("enable_prefix_caching", "True").lower() != "true":
                raise FailedPrecondition(
                    f"vLLM at {server.base_url} runs without prefix caching; start it with --enable-prefix-caching",
                    reason="VLLM_PREFIX_CACHING_OFF",
                )
            sizes.add(int(labels.get("block_size") or 16))
        return max(sizes)

    def _check_tokenizer(self, server: VllmServer) -> None:
        mine = self.tokenize(_PROBE)
        try:
            theirs = server.post_json(
                "/tokenize", {"model": self.served_model, "prompt": _PROBE, "add_special_tokens": False}, root=True
            ).get("tokens")
        except (Unavailable, InvalidArgument):
            log.warning("vLLM's /tokenize is not available; tokenizer agreement unchecked", extra={"url": server.root})
            return
        if theirs != mine:
            raise FailedPrecondition(
                f"vLLM at {server.base_url} tokenizes differently from {self.served_model}'s local tokenizer; "
                "actmem and the server must load the same model directory",
                reason="VLLM_TOKENIZER_MISMATCH",
            )

    def _fingerprint(self, path: Path, max_model_len: int) -> Fingerprint:
        cfg_text = (path / "config.json").read_text(encoding="utf-8")
        cfg = json.loads(cfg_text)
        cfg = cfg.get("text_config", cfg)
        h = hashlib.sha256(b"vllm-prefix\0" + cfg_text.encode())
        for name in ("tokenizer.json", "tokenizer_config.json"):
            f = path / name
            if f.is_file():
                h.update(f.read_bytes())
        heads = int(cfg.get("num_attention_heads") or 1)
        rope = cfg.get("rope_parameters") or {
            "rope_type": "default",
            "rope_theta": cfg.get("rope_theta", 10000.0),
        }
        dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
        return Fingerprint(
            name=self.served_model,
            num_layers=int(cfg.get("num_hidden_layers") or 0),
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg.get("hidden_size") or 0) // heads),
            dtype=dtype if dtype in NAME_TO_DTYPE else "bfloat16",
            rope_json=json.dumps(rope, sort_keys=True, default=str),
            digest=h.hexdigest()[:32],
            max_context=max_model_len or int(cfg.get("max_position_embeddings") or 0),
        )

    # -- prompts (the Backend interface) -------------------------------------------

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def cached_part(self, num_tokens: int) -> int:
        """How many tokens of a warmed prefix of ``num_tokens`` the server can hold: whole blocks only."""
        return (num_tokens // self.block_size) * self.block_size

    # -- tensors: not here ------------------------------------------------------------

    def prefill(self, token_ids: Sequence[int], position_offset: int = 0) -> KV:
        raise tensors_unavailable("prefill")

    def shift_keys(self, keys: torch.Tensor, offset: int) -> torch.Tensor:
        raise tensors_unavailable("re-positioning keys")

    def next_token_logits(self, prefix: KV | None, token_ids: Sequence[int]) -> torch.Tensor:
        raise tensors_unavailable("logits")

    # -- the server ---------------------------------------------------------------

    def warm(self, token_ids: Sequence[int], server: int) -> WarmResult:
        """Puts ``token_ids`` into the server's prefix cache: a one-token completion of exactly them."""
        t0 = time.perf_counter()
        body = {"model": self.served_model, "prompt": list(token_ids), "max_tokens": 1, "temperature": 0.0}
        usage = self.servers[server].post_json("/completions", body).get("usage") or {}
        return WarmResult(
            server=server,
            prompt_tokens=int(usage.get("prompt_tokens") or len(token_ids)),
            cached_tokens=_cached_tokens(usage) or 0,
            ms=(time.perf_counter() - t0) * 1e3,
        )

    def stream(
        self, token_ids: Sequence[int], max_tokens: int, temperature: float, server: int
    ) -> Iterator[GenerateEvent]:
        """Streams a completion of ``token_ids``; the last event (``done``) carries the server's usage.

        ``cached_tokens`` of that event is -1 when the server does not report it."""
        body = {
            "model": self.served_model,
            "prompt": list(token_ids),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": False},
        }
        completion = 0
        usage: dict = {}  # type: ignore[type-arg]
        for chunk in self.servers[server].stream("/completions", body):
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = choice.get("text") or ""
                if text:
                    completion += 1
                    yield GenerateEvent(delta=text, completion_tokens=completion)
        cached = _cached_tokens(usage)
        yield GenerateEvent(
            delta="",
            done=True,
            cached_tokens=-1 if cached is None else cached,
            prompt_tokens=int(usage.get("prompt_tokens") or len(token_ids)),
            completion_tokens=int(usage.get("completion_tokens") or completion),
        )

    def generate(
        self, prefix: KV | None, token_ids: Sequence[int], max_tokens: int, temperature: float
    ) -> Iterator[GenerateEvent]:
        """Generation without a cache (the Backend interface): the prompt alone, on the first server."""
        if prefix:
            raise tensors_unavailable("generation from a tensor cache")
        return self.stream(token_ids, max_tokens, temperature, 0)

    def close(self) -> None:
        self.servers = []
