"""``MemoryConfigFactory``: MemOS's memory configuration, validated.

    MemoryConfigFactory(backend="kv_cache", config={"extractor_llm": {"backend": "huggingface",
        "config": {"model_name_or_path": "models/tiny-qwen3", "max_tokens": 32}}})

Unknown fields are refused rather than ignored, so a typo cannot silently
change behaviour.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HFLLMConfig(_Strict):
    """A Hugging Face causal LM run by actmem's transformers backend."""

    model_name_or_path: str
    """Local directory, or a model name found in the local Hugging Face cache (never downloaded)."""
    max_tokens: int = Field(default=1024, ge=1)
    """Default max_tokens of generations."""
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    add_generation_prompt: bool = True
    """End extracted prompts with the assistant's turn opener (what MemOS does)."""
    remove_think_prefix: bool = False
    """Strip a leading <think>...</think> block from generated text."""
    device: str = "cpu"
    """Embedded mode only: torch device of the model ("cpu", "cuda")."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Embedded mode only: model and cache dtype."""


class LLMConfigFactory(_Strict):
    backend: Literal["huggingface", "vllm"]
    config: HFLLMConfig


class KVCacheMemoryConfig(_Strict):
    extractor_llm: LLMConfigFactory
    memory_filename: str = "activation_memory.safetensors"
    """Accepted for MemOS compatibility; dumps are one safetensors file plus manifest per cache."""
    cube_id: str = "default"
    """actmem cube the caches live in."""
    actmem_addr: str = ""
    """Remote actmem (host:port); MEMOS_ACTMEM_ADDR when empty; in-process actmem when both are empty."""
    user_id: str = ""
    """The user the caches are stored for: their bytes count against that user's KV quota on a
    service that sets one (MEMOS_MAX_KV_BYTES_PER_USER, which then requires it)."""
    max_cache_bytes: int = Field(default=2 * 1024**3, ge=0)
    """Embedded mode only: resident cache budget (LRU eviction to disk beyond it)."""


_CONFIGS: dict[str, type[BaseModel]] = {"kv_cache": KVCacheMemoryConfig}


class MemoryConfigFactory(_Strict):
    backend: Literal["kv_cache"]
    config: Any = Field(default_factory=dict)

    @model_validator(mode="after")
    def _typed_config(self) -> MemoryConfigFactory:
        cls = _CONFIGS[self.backend]
        if not isinstance(self.config, cls):
            self.config = cls.model_validate(self.config)
        return self
