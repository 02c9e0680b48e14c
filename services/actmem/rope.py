"""Re-positioning cached keys: rotary embeddings are rotations, so a shift is exact.

A key cached at position ``p`` is ``R(p)·k`` where ``R`` rotates each pair of
dimensions ``(i, i + d/2)`` (the "rotate_half" layout of Llama, Qwen, Mistral)
by ``p·inv_freq[i]``. Moving it to ``p + δ`` multiplies it by ``R(δ)``: one
rotation per segment, no model run. Values carry no position and stay as they
are. For Qwen3 the key norm (k_norm) comes before the rotation, so it is
untouched by the shift.

What stays approximate after a merge is not the positions but the attention:
a later segment's keys and values were computed without seeing the earlier
segments (each segment attended only to itself), which a single prefill of the
concatenated text would not do. The merged cache is exactly the cache of
"segments computed separately at their final positions", nothing more.

Rope types whose frequencies do not depend on the sequence length (default,
linear, llama3, yarn) are shifted exactly; "dynamic" and "longrope" change
their frequencies with the length, so for them the shift uses the frequencies
of the short context and is approximate (``exact_shift`` says which).
"""

from __future__ import annotations

import torch

EXACT_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def shift_keys(keys: torch.Tensor, offset: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """``keys`` ([..., tokens, head_dim], rotate_half layout) moved ``offset`` positions later.

    Computed in float64 and cast back, so the result is as close to the keys a
    prefill at the final positions produces as the cache dtype allows. The
    attention scaling some rope types fold into cos/sin is not applied again:
    it is already in the cached keys, and a shift is a pure rotation."""
    if offset == 0:
        return keys.clone()
    angle = offset * inv_freq.to(device=keys.device, dtype=torch.float64)
    emb = torch.cat((angle, angle), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    k = keys.to(torch.float64)
    return (k * cos + rotate_half(k) * sin).to(keys.dtype)
