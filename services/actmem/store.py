"""Where caches live: in (device) memory under a byte budget, evicted to disk beyond it.

The least recently used caches are written to ``spill_dir`` as safetensors when
the resident bytes would exceed the budget, and read back (checksum verified)
the next time they are used, transparently for callers. A single cache larger
than the whole budget, or a spill past the disk budget, is refused with
RESOURCE_EXHAUSTED rather than evicting everything else for it.

A cube may also be held to a quota of stored bytes (``max_bytes_per_cube``), resident and spilled
together: a cache that would take the cube past it is refused with RESOURCE_EXHAUSTED (the limit,
the cube's usage and the cube in the details) and nothing is stored; deleting frees quota. A user
may be held the same way across all their cubes (``max_bytes_per_user``): a cache counts against
the user it was stored for (``CacheMeta.user_id``), and with that quota set every stored cache
must name one.

Caches handed out by :meth:`get` stay alive while the caller holds them even if
they are evicted meanwhile, so the budget bounds what the store keeps, not
short-lived copies in flight.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.actmem import codec
from services.actmem.models import KV, CacheMeta, check_user_id
from shared.errors import InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    meta: CacheMeta
    kv: KV | None  # None while evicted to disk


class CacheStore:
    def __init__(
        self,
        *,
        max_bytes: int,
        spill_dir: Path,
        max_spill_bytes: int = 0,
        device: str = "cpu",
        checksum: str = "crc32",
        max_bytes_per_cube: int = 0,
        max_bytes_per_user: int = 0,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_bytes_per_cube = max_bytes_per_cube
        self.max_bytes_per_user = max_bytes_per_user
        self.max_spill_bytes = max_spill_bytes
        self.device = device
        self.checksum = checksum
        self.spill_dir = spill_dir
        # Spilled caches belong to this process's lifetime only: what a previous run left is stale.
        shutil.rmtree(spill_dir, ignore_errors=True)
        spill_dir.mkdir(parents=True, exist_ok=True)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._resident = 0
        self._spilled = 0
        # Bytes stored per cube (resident or spilled), for the per-cube quota.
        self._cube_bytes: dict[str, int] = {}
        # Bytes stored per named user, across cubes, for the per-user quota.
        self._user_bytes: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- accounting --------------------------------------------------------

    @property
    def resident_bytes(self) -> int:
        return self._resident

    @property
    def spilled_bytes(self) -> int:
        return self._spilled

    def check_fits(self, size: int) -> None:
        """Refuses a cache that can never be resident (before receiving or computing it)."""
        if self.max_bytes and size > self.max_bytes:
            raise ResourceExhausted(
                f"a cache of {size} bytes exceeds the memory budget of {self.max_bytes} bytes (MEMOS_MAX_CACHE_BYTES)",
                reason="CACHE_BUDGET_EXCEEDED",
                metadata={"size_bytes": str(size), "max_cache_bytes": str(self.max_bytes)},
            )

    def cube_bytes(self, cube_id: str) -> int:
        """Bytes of the caches stored for the cube, resident or spilled."""
        with self._lock:
            return self._cube_bytes.get(cube_id, 0)

    def user_bytes(self, user_id: str) -> int:
        """Bytes of the caches stored for the user, in every cube, resident or spilled."""
        with self._lock:
            return self._user_bytes.get(user_id, 0)

    def check_quota(
        self, cube_id: str, size: int, replacing: Sequence[str] = (), *, user_id: str = "", user_size: int | None = None
    ) -> None:
        """Refuses caches of ``size`` bytes that would take the cube past ``max_bytes_per_cube``,
        or ``user_size`` bytes (default ``size``) that would take ``user_id`` past
        ``max_bytes_per_user`` (caches they replace, ids in ``replacing``, give their room back).
        Called before a cache is received or computed, and again by :meth:`put` under the store's
        lock, so concurrent puts cannot pass a quota together."""
        if user_id:
            check_user_id(user_id)
        if self.max_bytes_per_user:
            if not user_id:
                # A cache stored for nobody would escape the quota: with it set, the caller must say whose.
                raise InvalidArgument(
                    "user_id is required: this service holds each user to a quota of KV cache bytes"
                    " (MEMOS_MAX_KV_BYTES_PER_USER)",
                    reason="USER_ID_REQUIRED",
                    metadata={"field": "user_id"},
                )
            self._check_limit(
                f"user {user_id!r}",
                self._user_bytes,
                user_id,
                self.max_bytes_per_user,
                size if user_size is None else user_size,
                [(cube_id, c) for c in replacing],
                {"user_id": user_id, "cube_id": cube_id, "quota": "kv_bytes_per_user"},
                "MEMOS_MAX_KV_BYTES_PER_USER",
                counts=lambda meta: meta.user_id == user_id,
            )
        if self.max_bytes_per_cube:
            self._check_limit(
                f"cube {cube_id!r}",
                self._cube_bytes,
                cube_id,
                self.max_bytes_per_cube,
                size,
                [(cube_id, c) for c in replacing],
                {"cube_id": cube_id, "quota": "kv_bytes"},
                "MEMOS_MAX_KV_BYTES_PER_CUBE",
            )

    def _check_limit(
        self,
        who: str,
        usage_of: dict[str, int],
        owner: str,
        limit: int,
        size: int,
        replacing: Sequence[tuple[str, str]],
        details: dict[str, str],
        setting: str,
        counts: Callable[[CacheMeta], bool] = lambda meta: True,
    ) -> None:
        """One quota: ``owner``'s usage (less the caches in ``replacing`` that count against it:
        ``counts``) plus ``size`` must stay within ``limit``."""
        with self._lock:
            usage = usage_of.get(owner, 0)
            for key in dict.fromkeys(replacing):
                old = self._entries.get(key)
                if old is not None and counts(old.meta):
                    usage -= old.meta.size_bytes
            if size > 0 and usage + size > limit:
                raise ResourceExhausted(
                    f"{who} stores {usage} of its {limit} bytes of caches ({setting});"
                    f" a cache of {size} bytes does not fit",
                    reason="KV_QUOTA_EXCEEDED",
                    metadata={**details, "limit": str(limit), "usage": str(usage), "requested": str(size)},
                    # Only deleting caches (or a higher quota) makes room.
                    retriable=False,
                )

    def _spill_path(self, key: tuple[str, str]) -> Path:
        return self.spill_dir / key[0] / f"{key[1]}.safetensors"

    def _make_room(self, size: int, keep: tuple[str, str] | None = None) -> None:
        if not self.max_bytes:
            return
        for key in list(self._entries):
            if self._resident + size <= self.max_bytes:
                return
            entry = self._entries[key]
            if entry.kv is None or key == keep:
                continue
            self._evict(key, entry)
        if self._resident + size > self.max_bytes:
            raise ResourceExhausted(
                f"no room for {size} bytes within the memory budget", reason="CACHE_BUDGET_EXCEEDED"
            )

    def _evict(self, key: tuple[str, str], entry: _Entry) -> None:
        size = entry.meta.size_bytes
        if self.max_spill_bytes and self._spilled + size > self.max_spill_bytes:
            raise ResourceExhausted(
                f"evicting {key[1]} would exceed the disk budget of {self.max_spill_bytes} bytes (MEMOS_MAX_SPILL_BYTES)",
                reason="SPILL_BUDGET_EXCEEDED",
            )
        assert entry.kv is not None
        if not entry.meta.checksum:
            entry.meta.checksum = codec.checksum_of(entry.kv, self.checksum)
        path = self._spill_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        codec.write_file(path, entry.kv)
        entry.kv = None
        entry.meta.resident = False
        self._resident -= size
        self._spilled += size
        log.info("cache evicted to disk", extra={"cube_id": key[0], "cache_id": key[1], "size_bytes": size})

    # -- operations ----------------------------------------------------------

    def put(self, meta: CacheMeta, kv: KV) -> None:
        """Stores (or replaces) a cache; evicts others to make room."""
        key = (meta.cube_id, meta.cache_id)
        with self._lock:
            self.check_fits(meta.size_bytes)
            self.check_quota(meta.cube_id, meta.size_bytes, replacing=[meta.cache_id], user_id=meta.user_id)
            self._remove(key)
            self._make_room(meta.size_bytes)
            meta.resident = True
            self._entries[key] = _Entry(meta, kv)
            self._resident += meta.size_bytes
            self._cube_bytes[meta.cube_id] = self._cube_bytes.get(meta.cube_id, 0) + meta.size_bytes
            if meta.user_id:
                self._user_bytes[meta.user_id] = self._user_bytes.get(meta.user_id, 0) + meta.size_bytes

    def put_many(self, items: list[tuple[CacheMeta, KV]]) -> None:
        """All or nothing: on failure, the caches stored before it are removed again."""
        with self._lock:
            done: list[tuple[str, str]] = []
            try:
                for meta, kv in items:
                    self.put(meta, kv)
                    done.append((meta.cube_id, meta.cache_id))
            except BaseException:
                for key in done:
                    self._remove(key)
                raise

    def meta(self, cube_id: str, cache_id: str) -> CacheMeta:
        with self._lock:
            entry = self._entries.get((cube_id, cache_id))
            if entry is None:
                raise NotFound(
                    f"cache {cache_id} not found in cube {cube_id}",
                    reason="CACHE_NOT_FOUND",
                    metadata={"cube_id": cube_id, "cache_id": cache_id},
                )
            return entry.meta

    def get(self, cube_id: str, cache_id: str) -> tuple[CacheMeta, KV]:
        """The cache, reloaded from disk if it was evicted; marks it most recently used."""
        key = (cube_id, cache_id)
        with self._lock:
            meta = self.meta(cube_id, cache_id)
            entry = self._entries[key]
            self._entries.move_to_end(key)
            if entry.kv is None:
                self._make_room(meta.size_bytes, keep=key)
                specs = codec.expected_specs(meta.fingerprint, meta.num_tokens)
                entry.kv = codec.read_file(self._spill_path(key), specs, meta.checksum, self.device)
                self._spill_path(key).unlink(missing_ok=True)
                self._spilled -= meta.size_bytes
                self._resident += meta.size_bytes
                meta.resident = True
                log.info("cache reloaded from disk", extra={"cube_id": cube_id, "cache_id": cache_id})
            return meta, entry.kv

    def list(self, cube_id: str, user_id: str = "") -> list[CacheMeta]:
        """The cube's caches, or with ``user_id`` only those stored for that user (in every cube
        when ``cube_id`` is empty), oldest first."""
        with self._lock:
            metas = [
                e.meta
                for (cube, _), e in self._entries.items()
                if (not cube_id or cube == cube_id) and (not user_id or e.meta.user_id == user_id)
            ]
        return sorted(metas, key=lambda m: (m.created_at, m.cube_id, m.cache_id))

    def _remove(self, key: tuple[str, str]) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        _release(self._cube_bytes, key[0], entry.meta.size_bytes)
        if entry.meta.user_id:
            _release(self._user_bytes, entry.meta.user_id, entry.meta.size_bytes)
        if entry.kv is None:
            self._spill_path(key).unlink(missing_ok=True)
            self._spilled -= entry.meta.size_bytes
        else:
            self._resident -= entry.meta.size_bytes
        return True

    def delete(self, cube_id: str, cache_ids: list[str]) -> int:
        with self._lock:
            for cid in cache_ids:  # all known, or nothing deleted
                self.meta(cube_id, cid)
            return sum(self._remove((cube_id, cid)) for cid in dict.fromkeys(cache_ids))

    def delete_all(self, cube_id: str, user_id: str = "") -> list[tuple[str, str]]:
        """Deletes the cube's caches, or with ``user_id`` only those stored for that user (in every
        cube when ``cube_id`` is empty); returns the (cube, cache) keys deleted."""
        with self._lock:
            keys = [m_key for m_key, e in self._entries.items() if _selected(m_key, e.meta, cube_id, user_id)]
            return [k for k in keys if self._remove(k)]


def _release(usage: dict[str, int], owner: str, size: int) -> None:
    left = usage.get(owner, 0) - size
    if left > 0:
        usage[owner] = left
    else:
        usage.pop(owner, None)


def _selected(key: tuple[str, str], meta: CacheMeta, cube_id: str, user_id: str) -> bool:
    return (not cube_id or key[0] == cube_id) and (not user_id or meta.user_id == user_id)
