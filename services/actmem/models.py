"""Domain types of actmem: model fingerprints, cache descriptions, tensors."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

import torch

from shared.errors import FailedPrecondition, InvalidArgument

# A cache is a list of (keys, values) per layer, each [batch=1, kv_heads, tokens, head_dim].
KV = list[tuple[torch.Tensor, torch.Tensor]]

# Cube and cache ids become file names in dumps and spill directories.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(value: str, field_name: str) -> str:
    if not _ID.match(value or "") or ".." in value:
        raise InvalidArgument(
            f"{field_name} must be 1-128 characters of letters, digits, '.', '_' or '-' (got {value!r})",
            reason=f"BAD_{field_name.upper()}",
            metadata={"field": field_name},
        )
    return value


def check_user_id(value: str) -> str:
    """A user id names whose quota a cache counts against; it is only ever a key and JSON, so any
    printable text up to 256 characters will do (the gateway's user ids are not restricted to
    :func:`check_id`'s alphabet)."""
    if len(value) > 256 or not value.isprintable():
        raise InvalidArgument(
            "user_id must be at most 256 printable characters", reason="BAD_USER_ID", metadata={"field": "user_id"}
        )
    return value


@dataclass(frozen=True)
class Fingerprint:
    """The model a cache is valid for; everything but ``name`` must match."""

    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    rope_json: str
    digest: str
    max_context: int

    def differences(self, other: Fingerprint) -> list[str]:
        fields = ("num_layers", "num_kv_heads", "head_dim", "dtype", "rope_json", "digest")
        return [
            f"{f}: {getattr(other, f)!r} != {getattr(self, f)!r}"
            for f in fields
            if getattr(self, f) != getattr(other, f)
        ]

    def require_same(self, other: Fingerprint, what: str) -> None:
        diff = self.differences(other)
        if diff:
            raise FailedPrecondition(
                f"{what} was computed by another model ({other.name or 'unnamed'}) than {self.name}: "
                + "; ".join(diff),
                reason="MODEL_MISMATCH",
                metadata={"expected_model": self.name, "got_model": other.name, "differences": "; ".join(diff)},
            )


@dataclass
class CacheMeta:
    """Everything known about a cache except its tensors."""

    cache_id: str
    cube_id: str
    fingerprint: Fingerprint
    source_text: str
    num_tokens: int
    size_bytes: int
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    merged_from: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    # Filled lazily: the checksum needs a pass over the payload.
    checksum: str = ""
    resident: bool = True
    # The user whose KV quota the cache counts against ("": none named).
    user_id: str = ""

    @property
    def num_layers(self) -> int:
        return self.fingerprint.num_layers

    def copy(self, **changes: object) -> CacheMeta:
        return replace(self, merged_from=list(self.merged_from), metadata=dict(self.metadata), **changes)


def kv_bytes(kv: KV) -> int:
    return sum(k.nelement() * k.element_size() + v.nelement() * v.element_size() for k, v in kv)


def kv_tokens(kv: KV) -> int:
    return int(kv[0][0].shape[2]) if kv else 0


@dataclass
class GenerateEvent:
    """One step of a generation: a text delta, and on the first one the TTFT."""

    delta: str
    ttft_ms: float = 0.0
    done: bool = False
    cached_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
