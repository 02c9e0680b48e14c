"""The transformers backend: the model runs in this process (CPU or CUDA).

Works for any causal LM with a chat template whose layers all use full
attention and whose keys carry rotary embeddings in the rotate_half layout
(Llama, Qwen2/2.5/3, Mistral without sliding window, Gemma...). Caches are the
installed transformers' ``DynamicCache`` (5.x: ``cache.layers[i].keys/values``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import torch

from services.actmem import rope
from services.actmem.codec import DTYPE_NAMES, NAME_TO_DTYPE
from services.actmem.models import KV, Fingerprint, GenerateEvent
from services.actmem.resolve import resolve_model
from shared.errors import FailedPrecondition

log = logging.getLogger(__name__)

# The attention this backend runs on CPU (registered with transformers below).
CPU_ATTENTION = "memos_actmem_sdpa"


def _sdpa_attention(  # type: ignore[no-untyped-def]
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs
):
    """transformers' sdpa attention, except for a multi-token query under a mask over grouped
    key/value heads on CPU: the first step of every generation after an injected cache. There
    transformers repeats each key and value head for its query heads (a copy of the whole cache,
    every layer, before the first token); SDPA reads them grouped instead (``enable_gqa``), with
    the same result."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        attention_mask is None
        or query.shape[2] == 1
        or getattr(module, "num_key_value_groups", 1) <= 1
        or query.device.type != "cpu"
        or any(kwargs.get(k) is not None for k in ("position_bias", "softcap"))
        or kwargs.get("output_attentions")
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def _register_cpu_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _sdpa_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)


def _rope_parameters(cfg) -> dict:  # type: ignore[no-untyped-def]
    params = getattr(cfg, "rope_parameters", None)
    if params:
        # Some configs hold one dict per layer type; full attention is what we cache.
        if "full_attention" in params and isinstance(params["full_attention"], dict):
            params = params["full_attention"]
        return dict(params)
    out = {"rope_type": "default", "rope_theta": getattr(cfg, "rope_theta", 10000.0)}
    scaling = getattr(cfg, "rope_scaling", None)
    if scaling:
        out.update(scaling)
    return out


def weights_digest(model: torch.nn.Module, config_json: str) -> str:
    """Config plus a sample of every tensor: tells apart two checkpoints of one architecture
    (two random seeds, a fine-tune) in milliseconds, without hashing gigabytes."""
    h = hashlib.sha256(config_json.encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        sample = p.detach().reshape(-1)[:64].to("cpu", torch.float32).contiguous()
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


class TransformersBackend:
    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str = "auto", torch_threads: int = 0) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = resolve_model(model_path)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FailedPrecondition(
                f"device {device} requested but CUDA is not available here", reason="DEVICE_UNAVAILABLE"
            )
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "bfloat16"
        torch_dtype = NAME_TO_DTYPE[dtype]
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise FailedPrecondition(f"the tokenizer of {model_path} has no chat template", reason="NO_CHAT_TEMPLATE")
        attention: dict[str, str] = {}
        if device == "cpu":
            _register_cpu_attention()
            attention["attn_implementation"] = CPU_ATTENTION
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype, **attention)
        self.model = model.to(device).eval()
        self.device = device
        cfg = self.model.config.get_text_config(decoder=True)
        layer_types = getattr(cfg, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            # A sliding-window layer keeps only the last window of keys; merging and
            # re-positioning such caches is not what the model would compute.
            raise FailedPrecondition(
                f"{model_path} has non-full-attention layers ({sorted(set(layer_types))}); only full-attention models are supported",
                reason="UNSUPPORTED_MODEL",
            )
        rotary = next((m for n, m in self.model.named_modules() if n.endswith("rotary_emb")), None)
        if rotary is None or not hasattr(rotary, "inv_freq"):
            raise FailedPrecondition(
                f"{model_path} has no rotary embedding to re-position caches with", reason="UNSUPPORTED_MODEL"
            )
        # The frequencies for the original context: "dynamic" rope updates inv_freq in place.
        self._inv_freq = getattr(rotary, "original_inv_freq", rotary.inv_freq).detach().clone()
        rope_params = _rope_parameters(cfg)
        self.rope_type = str(rope_params.get("rope_type", "default"))
        self.exact_shift = self.rope_type in rope.EXACT_ROPE_TYPES
        num_heads = cfg.num_attention_heads
        config_json = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        self.fingerprint = Fingerprint(
            name=str(model_path),
            num_layers=int(cfg.num_hidden_layers),
            num_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or num_heads),
            head_dim=int(getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads),
            dtype=DTYPE_NAMES[torch_dtype],
            rope_json=json.dumps(rope_params, sort_keys=True, default=str),
            digest=weights_digest(self.model, config_json),
            max_context=int(getattr(cfg, "max_position_embeddings", 0) or 0),
        )
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos = eos_ids
        # transformers 5.2x renamed the forward argument past_key_values to cache.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # One forward at a time: torch already uses every core for one, and a
        # model is not safe to run from two threads on every device.
        self._lock = threading.Lock()
        log.info(
            "model loaded",
            extra={
                "model": str(model_path),
                "path": str(path),
                "device": device,
                "dtype": dtype,
                "layers": self.fingerprint.num_layers,
                "rope_type": self.rope_type,
                "load_s": round(time.perf_counter() - t0, 3),
            },
        )

    # -- prompts ---------------------------------------------------------

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tokenize(self, text: str) -> list[int]:
        # Rendered chat text already holds its special tokens; raw text gets none added,
        # so that a cache followed by more text tokenizes like the pieces it came from.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- caches ----------------------------------------------------------

    def _dynamic_cache(self, prefix: KV | None):  # type: ignore[no-untyped-def]
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in zip(cache.layers, prefix or (), strict=False):
            # The stored tensors themselves, not copies (a copy of the whole cache before the
            # first token): a DynamicLayer appends by concatenating into new tensors, so the
            # forward pass only reads these and a stored cache never changes (tests check it).
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        return cache

    def prefill(self, token_ids: Sequence[int], position_offset: int = 0) -> KV:
        n = len(token_ids)
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        pos = torch.arange(position_offset, position_offset + n, device=self.device).unsqueeze(0)
        cache = self._dynamic_cache(None)
        with self._lock, torch.inference_mode():
            self.model(input_ids=ids, position_ids=pos, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def shift_keys(self, keys: torch.Tensor, offset: int) -> torch.Tensor:
        return rope.shift_keys(keys, offset, self._inv_freq)

    def next_token_logits(self, prefix: KV | None, token_ids: Sequence[int]) -> torch.Tensor:
        cache = self._dynamic_cache(prefix)
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            out = self.model(input_ids=ids, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float().cpu()

    def generate(
        self, prefix: KV | None, token_ids: Sequence[int], max_tokens: int, temperature: float
    ) -> Iterator[GenerateEvent]:
        cache = self._dynamic_cache(prefix)
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        generated: list[int] = []
        text = ""
        for _ in range(max_tokens):
            # The lock is taken per step, so that an abandoned stream never holds the model.
            with self._lock, torch.inference_mode():
                logits = self.model(input_ids=ids, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1).logits[
                    0, -1
                ]
                if temperature > 0:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1).item())
                else:
                    token = int(torch.argmax(logits).item())
            if token in self._eos:
                break
            generated.append(token)
            new_text = self.tokenizer.decode(generated, skip_special_tokens=True)
            yield GenerateEvent(delta=new_text[len(text) :], completion_tokens=len(generated))
            text = new_text
            ids = torch.tensor([[token]], dtype=torch.long, device=self.device)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
