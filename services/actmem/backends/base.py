"""What the cache domain needs from a model, whatever runs it.

Two kinds of backend implement it. The transformers backend holds the model in
this process: caches are tensors, and every method works. The vLLM backend
(``caches_on_server = True``) talks to a co-located vLLM server whose prefix
cache holds the keys and values: it renders, tokenizes and generates, but its
tensor methods (prefill, shift_keys, next_token_logits) raise
FAILED_PRECONDITION, and actmem runs its operations through
:class:`services.actmem.prefix_memory.PrefixMemory` (warm, route, verify hits)
instead of :class:`services.actmem.memory.ActMemory`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch

from services.actmem.models import KV, Fingerprint, GenerateEvent


class Backend(Protocol):
    fingerprint: Fingerprint
    device: str

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        """The prompt text of ``messages`` under the model's chat template."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def prefill(self, token_ids: Sequence[int], position_offset: int = 0) -> KV:
        """Runs the model over ``token_ids`` (alone, at positions from ``position_offset``)
        and returns its KV cache."""
        ...

    def shift_keys(self, keys: torch.Tensor, offset: int) -> torch.Tensor:
        """Cached keys moved ``offset`` positions later (exact for rotary embeddings)."""
        ...

    def next_token_logits(self, prefix: KV | None, token_ids: Sequence[int]) -> torch.Tensor:
        """Logits after ``token_ids`` following ``prefix`` (which is not modified)."""
        ...

    def generate(
        self, prefix: KV | None, token_ids: Sequence[int], max_tokens: int, temperature: float
    ) -> Iterator[GenerateEvent]:
        """Streams the continuation of ``prefix`` + ``token_ids``; never modifies ``prefix``."""
        ...

    def close(self) -> None: ...
