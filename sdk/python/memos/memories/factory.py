"""``MemoryFactory.from_config``: the memory object a ``MemoryConfigFactory`` describes."""

from __future__ import annotations

from typing import Any

from memos.configs.memory import MemoryConfigFactory


class MemoryFactory:
    @classmethod
    def from_config(cls, config_factory: MemoryConfigFactory) -> Any:
        if config_factory.backend == "kv_cache":
            from memos.memories.activation.kv import KVCacheMemory

            return KVCacheMemory(config_factory.config)
        raise ValueError(f"unsupported memory backend {config_factory.backend!r}")
