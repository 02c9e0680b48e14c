"""``KVCacheMemory``: MemOS's KV-cache memory over the actmem service.

With ``MEMOS_ACTMEM_ADDR`` (or the config's ``actmem_addr``) set, calls go to
that actmem, which runs the model beside its GPU. Unset, actmem starts in this
process behind a loopback gRPC server the first time a memory needs it (one
per model) and stops when the interpreter exits.

Differences from MemOS worth knowing: caches are stored as safetensors, never
pickled; ``get_cache`` re-positions later caches' rotary positions instead of
concatenating them as they are; ``dump``/``load`` write and read one
``<id>.safetensors`` plus ``<id>.json`` manifest per cache (in embedded mode in
the directory given, in remote mode relative to the service's dump root).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memos.client.actmem import KV, ActMemClient, EmbeddedActMem, dump_root_relative
from memos.configs.memory import KVCacheMemoryConfig
from memos.memories.activation.item import KVCacheItem, KVCacheRecords
from shared.errors import InvalidArgument, NotFound

_lock = threading.Lock()
_embedded: dict[tuple[str, str, str], EmbeddedActMem] = {}


def _stop_embedded() -> None:
    with _lock:
        for e in _embedded.values():
            e.stop()
        _embedded.clear()


def _embedded_address(cfg: KVCacheMemoryConfig) -> str:
    from services.actmem.settings import ActMemSettings

    llm = cfg.extractor_llm.config
    key = (llm.model_name_or_path, llm.device, llm.dtype)
    with _lock:
        emb = _embedded.get(key)
        if emb is None:
            data_dir = Path(os.environ.get("MEMOS_DATA_DIR") or Path.home() / ".local" / "share" / "memos")
            slot = re.sub(r"[^A-Za-z0-9._-]", "_", llm.model_name_or_path)[-64:]
            settings = ActMemSettings(
                listen_addr="127.0.0.1:0",
                model_path=llm.model_name_or_path,
                device=llm.device,
                dtype=llm.dtype,
                max_cache_bytes=cfg.max_cache_bytes,
                data_dir=data_dir / "actmem-embedded" / f"{slot}-{os.getpid()}",
                # The caller's own directories: dump paths are made absolute and taken relative to /.
                dump_root=Path("/"),
                log_level="WARNING",
            )
            emb = EmbeddedActMem(settings)
            emb.start()
            if not _embedded:
                atexit.register(_stop_embedded)
            _embedded[key] = emb
        return emb.address


def _to_dynamic_cache(kv: KV) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _from_dynamic_cache(cache: Any) -> KV:
    if hasattr(cache, "layers"):
        return [(layer.keys.contiguous(), layer.values.contiguous()) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # transformers 4.x
        return [(k.contiguous(), v.contiguous()) for k, v in zip(cache.key_cache, cache.value_cache, strict=True)]
    raise InvalidArgument("memory must be a transformers DynamicCache", reason="BAD_CACHE")


class KVCacheMemory:
    def __init__(self, config: KVCacheMemoryConfig) -> None:
        self.config = config
        self.cube_id = config.cube_id
        address = config.actmem_addr or os.environ.get("MEMOS_ACTMEM_ADDR", "")
        self.embedded = not address
        if self.embedded:
            address = _embedded_address(config)
        self._client = ActMemClient(address)

    def _item(self, info: Any, kv: KV) -> KVCacheItem:
        item = KVCacheItem(
            id=info.cache_id or KVCacheItem().id,
            memory=_to_dynamic_cache(kv),
            metadata=dict(info.metadata),
            records=KVCacheRecords(
                text_memories=[info.source_text],
                composed_text_memory=info.source_text,
                timestamp=datetime.fromtimestamp(info.created_at.ToNanoseconds() / 1e9, UTC),
                num_tokens=info.num_tokens,
                model=info.model,
                merged_from=list(info.merged_from),
            ),
        )
        item._header = info
        return item

    # -- MemOS's API -------------------------------------------------------------

    def extract(self, text: str | list[dict[str, Any]]) -> KVCacheItem:
        """The cache of ``text`` (a string, or chat messages rendered with the model's template).
        Not stored until :meth:`add`."""
        info, kv = self._client.compute(
            self.cube_id, text, add_generation_prompt=self.config.extractor_llm.config.add_generation_prompt
        )
        return self._item(info, kv)

    def add(self, memories: list[KVCacheItem]) -> None:
        for item in memories:
            header = item._header
            if header is None:
                raise InvalidArgument(
                    "only KVCacheItems produced by extract/get can be added (their model must be known)",
                    reason="UNKNOWN_MODEL",
                )
            from memos.actmem.v1 import actmem_pb2

            info = actmem_pb2.CacheInfo()
            info.CopyFrom(header)
            info.cache_id = item.id
            info.cube_id = self.cube_id
            info.user_id = self.config.user_id
            info.source_text = item.records.composed_text_memory
            info.metadata.clear()
            info.metadata.update({str(k): str(v) for k, v in item.metadata.items()})
            stored = self._client.add(info, _from_dynamic_cache(item.memory))
            item._header = stored

    def get(self, memory_id: str) -> KVCacheItem | None:
        try:
            info, kv = self._client.get(self.cube_id, memory_id)
        except NotFound:
            return None
        return self._item(info, kv)

    def get_by_ids(self, memory_ids: list[str]) -> list[KVCacheItem | None]:
        return [self.get(i) for i in memory_ids]

    def get_all(self) -> list[KVCacheItem]:
        items = (self.get(info.cache_id) for info in self._client.list(self.cube_id))
        return [i for i in items if i is not None]

    def get_cache(self, cache_ids: list[str]) -> Any:
        """The caches merged in order, as one DynamicCache (None for no ids)."""
        if not cache_ids:
            return None
        _, kv = self._client.get_merged(self.cube_id, cache_ids)
        return _to_dynamic_cache(kv)

    def delete(self, memory_ids: list[str]) -> None:
        self._client.delete(self.cube_id, memory_ids)

    def delete_all(self) -> None:
        self._client.delete_all(self.cube_id)

    def _directory(self, dir: str) -> str:
        return dump_root_relative(dir) if self.embedded else dir

    def dump(self, dir: str) -> None:
        if self.embedded:
            Path(dir).mkdir(parents=True, exist_ok=True)
        self._client.dump(self.cube_id, self._directory(dir))

    def load(self, dir: str) -> None:
        self._client.load(self.cube_id, self._directory(dir), user_id=self.config.user_id)

    # -- beyond MemOS --------------------------------------------------------------

    def generate(self, messages: list[dict[str, Any]] | str, cache_ids: list[str], max_tokens: int = 0) -> str:
        """Generates with the caches injected as the prompt's prefix (they are not modified)."""
        llm = self.config.extractor_llm.config
        text = "".join(
            r.delta
            for r in self._client.generate(
                self.cube_id, cache_ids, messages, max_tokens=max_tokens or llm.max_tokens, temperature=llm.temperature
            )
        )
        if llm.remove_think_prefix:
            text = re.sub(r"^\s*<think>.*?</think>\s*", "", text, flags=re.S)
        return text

    def close(self) -> None:
        self._client.close()
