"""actmem's operations when the caches live in a vLLM server as warmed prefixes.

The same operations as :class:`ActMemory` (and the same gRPC service), over
:class:`VllmBackend`. A cache is the token ids of its text; actmem keeps them
(and the cache's description) and the server keeps the keys and values:

- **Extract** tokenizes, warms the prefix on one server (the one holding the
  fewest warmed tokens) and records that route.
- **Generate** sends the caches' token ids, then the rendered messages, as one
  token prompt to the server the route names, so the server's prefix cache
  hits; the hit is read from the server's reported cached-token count. A miss
  (the server evicted the prefix, or restarted) is logged, counted and followed
  by a re-warm, so the next call hits again. Generation never changes a stored
  cache: the prefix is read, never extended.
- **Merge** is the concatenation of the parts' token ids: vLLM computes the
  merged prefix with full attention across the parts, so nothing about it is
  approximate (unlike a merge of separately computed tensors).
- **Delete** forgets the caches and every route through them: later generations
  naming them get NOT_FOUND, and nothing is routed or re-warmed for them again
  (the server's own LRU reclaims the blocks).
- **Dump/Load** write and read JSON manifests holding the token ids (no
  tensors); loading re-warms.
- Tensors (ComputeCache, GetCache, AddCache) are FAILED_PRECONDITION with reason
  TENSORS_UNAVAILABLE.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from services.actmem import codec
from services.actmem.backends.vllm_backend import VllmBackend, tensors_unavailable
from services.actmem.memory import ActMemory, Prompt, _from_iso, _iso
from services.actmem.models import KV, CacheMeta, Fingerprint, GenerateEvent, check_id
from services.actmem.store import CacheStore
from shared.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

PREFIX_MANIFEST_FORMAT = "memos-actmem-prefix"
PREFIX_MANIFEST_VERSION = 1

RouteKey = tuple[str, tuple[str, ...]]  # (cube id, cache ids in order)


class PrefixMemory(ActMemory):
    backend: VllmBackend

    def __init__(
        self,
        backend: VllmBackend,
        store: CacheStore,
        *,
        dump_root: Path,
        max_prompt_tokens: int = 0,
        max_new_tokens: int = 1024,
        owns_backend: bool = True,
        rewarm_interval_s: float = 0.0,
    ) -> None:
        super().__init__(
            backend,  # type: ignore[arg-type]
            store,
            dump_root=dump_root,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            owns_backend=owns_backend,
        )
        self._ids: dict[tuple[str, str], list[int]] = {}
        self._routes: dict[RouteKey, int] = {}
        self._warmed_tokens = [0] * len(backend.servers)
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self._stop = threading.Event()
        self._rewarmer: threading.Thread | None = None
        if rewarm_interval_s > 0:
            self._rewarmer = threading.Thread(
                target=self._rewarm_loop, args=(rewarm_interval_s,), name="actmem-rewarm", daemon=True
            )
            self._rewarmer.start()

    # -- routing ------------------------------------------------------------------

    def routes(self, cube_id: str) -> dict[tuple[str, ...], int]:
        """The cube's routes: cache ids (in order) -> index of the server holding that prefix."""
        with self._lock:
            return {ids: s for (cube, ids), s in self._routes.items() if cube == cube_id}

    def token_ids(self, cube_id: str, cache_id: str) -> list[int]:
        self.store.meta(cube_id, cache_id)  # NOT_FOUND with the usual reason
        with self._lock:
            return list(self._ids[(cube_id, cache_id)])

    def _pick_server(self) -> int:
        with self._lock:
            return min(range(len(self._warmed_tokens)), key=lambda i: self._warmed_tokens[i])

    def _warm(self, key: RouteKey, ids: Sequence[int], server: int) -> None:
        res = self.backend.warm(ids, server)
        with self._lock:
            fresh = key not in self._routes
            self._routes[key] = server
            if fresh:
                self._warmed_tokens[server] += len(ids)
        log.info(
            "prefix warmed",
            extra={
                "cube_id": key[0],
                "cache_ids": list(key[1]),
                "server": server,
                "num_tokens": len(ids),
                "already_cached": res.cached_tokens,
                "warm_ms": round(res.ms, 2),
            },
        )

    def _drop_routes(self, keys: set[tuple[str, str]]) -> None:
        with self._lock:
            for rk in [rk for rk in self._routes if any((rk[0], cid) in keys for cid in rk[1])]:
                tokens = sum(len(self._ids.get((rk[0], cid), ())) for cid in rk[1])
                server = self._routes.pop(rk)
                self._warmed_tokens[server] = max(0, self._warmed_tokens[server] - tokens)
            for key in keys:
                self._ids.pop(key, None)

    def rewarm(self, cube_id: str | None = None) -> int:
        """Warms every routed prefix again (of one cube, or all); returns how many."""
        with self._lock:
            todo = [
                (rk, s, [t for cid in rk[1] for t in self._ids.get((rk[0], cid), ())])
                for rk, s in self._routes.items()
                if cube_id is None or rk[0] == cube_id
            ]
        n = 0
        for rk, server, ids in todo:
            with self._lock:
                if rk not in self._routes:  # deleted meanwhile
                    continue
            if ids:
                self.backend.warm(ids, server)
                n += 1
        return n

    def _rewarm_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                n = self.rewarm()
                log.debug("prefixes re-warmed", extra={"count": n})
            except Exception as exc:  # noqa: BLE001 - a background refresh must not die
                log.warning("re-warming prefixes failed", extra={"error": str(exc)})

    # -- operations --------------------------------------------------------------

    def compute(self, cube_id: str, prompt: Prompt, **_: object) -> tuple[CacheMeta, KV]:
        raise tensors_unavailable("ComputeCache")

    def begin_add(self, meta: CacheMeta, payload_bytes: int, checksum: str, announced):  # type: ignore[no-untyped-def]
        raise tensors_unavailable("AddCache")

    def add(self, meta: CacheMeta, kv: KV) -> CacheMeta:
        raise tensors_unavailable("AddCache")

    def get(self, cube_id: str, cache_id: str) -> tuple[CacheMeta, KV]:
        self.store.meta(cube_id, cache_id)  # an unknown id is still NOT_FOUND
        raise tensors_unavailable("GetCache")

    def _new_meta(self, cube_id: str, text: str, num_tokens: int, **fields: object) -> CacheMeta:
        # size_bytes 0: the keys and values are in the server, not in this process.
        return CacheMeta(
            cache_id=uuid.uuid4().hex,
            cube_id=cube_id,
            fingerprint=self.fingerprint,
            source_text=text,
            num_tokens=num_tokens,
            size_bytes=0,
            **fields,  # type: ignore[arg-type]
        )

    def _store(self, meta: CacheMeta, ids: list[int], server: int) -> None:
        key = (meta.cube_id, meta.cache_id)
        with self._lock:
            self._ids[key] = ids
        try:
            self._warm((meta.cube_id, (meta.cache_id,)), ids, server)
            self.store.put(meta, [])
        except BaseException:
            self._drop_routes({key})
            raise

    def extract(
        self,
        cube_id: str,
        prompt: Prompt,
        *,
        add_generation_prompt: bool = False,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        user_id: str = "",
    ) -> CacheMeta:
        """``user_id`` is recorded on the cache (the caches live in the vLLM server: no quota here)."""
        check_id(cube_id, "cube_id")
        replay = self._replayed(cube_id, request_id)
        if replay is not None:
            return replay
        text = self.prompt_text(prompt, add_generation_prompt)
        ids = self.backend.tokenize(text)
        if not ids:
            raise InvalidArgument("the prompt is empty", reason="EMPTY_PROMPT")
        self._check_length(len(ids), "the prompt")
        meta = self._new_meta(cube_id, text, len(ids), metadata=dict(metadata or {}), user_id=user_id)
        self._store(meta, ids, self._pick_server())
        self._remember(cube_id, request_id, meta.cache_id)
        return meta

    def merge(
        self, cube_id: str, cache_ids: Sequence[str], *, store: bool = False, request_id: str = "", user_id: str = ""
    ) -> tuple[CacheMeta, KV | None]:
        if not cache_ids:
            raise InvalidArgument("cache_ids must name at least one cache", reason="EMPTY_CACHE_IDS")
        replay = self._replayed(cube_id, request_id) if store else None
        if replay is not None:
            return replay, None
        metas = [self.store.meta(cube_id, cid) for cid in cache_ids]
        for m in metas:
            self.fingerprint.require_same(m.fingerprint, f"cache {m.cache_id}")
        total = sum(m.num_tokens for m in metas)
        self._check_length(total, "the merged cache")
        meta = self._new_meta(
            cube_id,
            "".join(m.source_text for m in metas),
            total,
            merged_from=list(cache_ids),
            user_id=user_id if store else "",
        )
        if store:
            ids = [t for cid in cache_ids for t in self.token_ids(cube_id, cid)]
            with self._lock:
                server = self._routes.get((cube_id, (cache_ids[0],)), self._pick_server())
            self._store(meta, ids, server)
            self._remember(cube_id, request_id, meta.cache_id)
        return meta, None

    def delete(self, cube_id: str, cache_ids: Sequence[str]) -> int:
        n = self.store.delete(cube_id, list(cache_ids))  # all known, or nothing deleted
        self._drop_routes({(cube_id, cid) for cid in cache_ids})
        return n

    def delete_all(self, cube_id: str, user_id: str = "") -> int:
        self._check_selector(cube_id, user_id)
        keys = self.store.delete_all(cube_id, user_id)
        self._drop_routes(set(keys))
        return len(keys)

    # -- dump and load --------------------------------------------------------------

    def dump(self, cube_id: str, directory: str) -> int:
        """Writes every cache of the cube as ``<id>.json``: its description and token ids."""
        target = self._directory(directory)
        target.mkdir(parents=True, exist_ok=True)
        n = 0
        for meta in self.store.list(cube_id):
            doc = {
                "format": PREFIX_MANIFEST_FORMAT,
                "version": PREFIX_MANIFEST_VERSION,
                "cache_id": meta.cache_id,
                "cube_id": meta.cube_id,
                "fingerprint": asdict(meta.fingerprint),
                "num_tokens": meta.num_tokens,
                "token_ids": self.token_ids(cube_id, meta.cache_id),
                "source_text": meta.source_text,
                "created_at": _iso(meta.created_at),
                "merged_from": meta.merged_from,
                "metadata": meta.metadata,
            }
            tmp = target / f"{meta.cache_id}.json.tmp"
            tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            tmp.replace(target / f"{meta.cache_id}.json")
            n += 1
        return n

    def _read_prefix_manifest(self, path: Path) -> tuple[CacheMeta, list[int]]:
        src = path.name

        def bad(why: str) -> codec.CorruptPayload:
            return codec.CorruptPayload(f"{src}: {why}", metadata={"source": src})

        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"unreadable manifest ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != PREFIX_MANIFEST_FORMAT:
            raise bad("not a vLLM prefix manifest (tensor dumps cannot be loaded into the vLLM backend)")
        if doc.get("version") != PREFIX_MANIFEST_VERSION:
            raise bad(f"manifest version {doc.get('version')} is not supported")
        try:
            ids = [int(t) for t in doc["token_ids"]]
            meta = CacheMeta(
                cache_id=check_id(str(doc["cache_id"]), "cache_id"),
                cube_id=str(doc.get("cube_id", "")),
                fingerprint=Fingerprint(**doc["fingerprint"]),
                source_text=str(doc.get("source_text", "")),
                num_tokens=int(doc["num_tokens"]),
                size_bytes=0,
                created_at=_from_iso(doc.get("created_at"), "created_at", src),
                merged_from=[str(x) for x in doc.get("merged_from", [])],
                metadata={str(k): str(v) for k, v in dict(doc.get("metadata", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"incomplete manifest ({exc})") from None
        if path.stem != meta.cache_id:
            raise bad(f"names cache {meta.cache_id}, not {path.stem}")
        if meta.num_tokens <= 0 or len(ids) != meta.num_tokens:
            raise bad("token count does not match its token ids")
        return meta, ids

    def load(self, cube_id: str, directory: str, user_id: str = "") -> list[CacheMeta]:
        """Reads prefix manifests back and warms them; all are validated before any is stored."""
        check_id(cube_id, "cube_id")
        target = self._directory(directory)
        if not target.is_dir():
            raise NotFound(f"dump directory {directory!r} does not exist", reason="DIRECTORY_NOT_FOUND")
        loaded = []
        for manifest in sorted(target.glob("*.json")):
            meta, ids = self._read_prefix_manifest(manifest)
            self.fingerprint.require_same(meta.fingerprint, manifest.name)
            self._check_length(meta.num_tokens, f"cache {meta.cache_id}")
            meta.cube_id, meta.fingerprint = cube_id, self.fingerprint
            meta.user_id = user_id or meta.user_id
            loaded.append((meta, ids))
        done: list[tuple[str, str]] = []
        try:
            for meta, ids in loaded:
                self._store(meta, ids, self._pick_server())
                done.append((cube_id, meta.cache_id))
        except BaseException:
            self.store.delete(cube_id, [cid for _, cid in done])
            self._drop_routes(set(done))
            raise
        return [m for m, _ in loaded]

    # -- generation --------------------------------------------------------------

    def generate(
        self,
        cube_id: str,
        cache_ids: Sequence[str],
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
    ) -> Iterator[GenerateEvent]:
        t0 = time.perf_counter()
        max_tokens = max_tokens or min(128, self.max_new_tokens)
        if max_tokens < 0 or max_tokens > self.max_new_tokens:
            raise InvalidArgument(f"max_tokens must be between 1 and {self.max_new_tokens}", reason="BAD_MAX_TOKENS")
        if temperature < 0:
            raise InvalidArgument("temperature must not be negative", reason="BAD_TEMPERATURE")
        metas = [self.store.meta(cube_id, cid) for cid in cache_ids]
        for m in metas:
            self.fingerprint.require_same(m.fingerprint, f"cache {m.cache_id}")
        prefix = [t for cid in cache_ids for t in self.token_ids(cube_id, cid)]
        ids = self.backend.tokenize(self.prompt_text(messages, add_generation_prompt=True))
        if not ids:
            raise InvalidArgument("the prompt is empty", reason="EMPTY_PROMPT")
        self._check_length(len(prefix) + len(ids) + max_tokens, "the cached prefix plus prompt plus max_tokens")
        key: RouteKey = (cube_id, tuple(cache_ids))
        if not cache_ids:
            server = self._pick_server()
        else:
            with self._lock:
                server = self._routes.get(key, -1)
                first = self._routes.get((cube_id, (cache_ids[0],)), 0)
            if server < 0:
                # A combination never generated from: warm the concatenation once, then it is routed.
                self._warm(key, prefix, first)
                server = first
        return self._events(key, prefix, ids, max_tokens, temperature, server, t0)

    def _events(
        self,
        key: RouteKey,
        prefix: list[int],
        ids: list[int],
        max_tokens: int,
        temperature: float,
        server: int,
        t0: float,
    ) -> Iterator[GenerateEvent]:
        ttft = 0.0
        for ev in self.backend.stream(prefix + ids, max_tokens, temperature, server):
            if ev.done:
                expected = self.backend.cached_part(len(prefix))
                hit = ev.cached_tokens >= expected
                if key[1]:
                    self._account(key, prefix, server, ev.cached_tokens, expected, hit)
                ev.cached_tokens = max(0, ev.cached_tokens)  # -1: the server did not say
                ev.ttft_ms = 0.0 if ttft else (time.perf_counter() - t0) * 1e3
                yield ev
                return
            if not ttft:
                ttft = (time.perf_counter() - t0) * 1e3
                ev.ttft_ms = ttft
            yield ev

    def _account(self, key: RouteKey, prefix: list[int], server: int, cached: int, expected: int, hit: bool) -> None:
        if cached < 0:
            log.warning(
                "vLLM reports no cached-token count; start it with --enable-prompt-tokens-details",
                extra={"server": server},
            )
            return
        with self._lock:
            if hit:
                self.hits += 1
                return
            self.misses += 1
        log.warning(
            "prefix cache miss; re-warming",
            extra={
                "cube_id": key[0],
                "cache_ids": list(key[1]),
                "server": server,
                "cached_tokens": cached,
                "expected_tokens": expected,
            },
        )
        with self._lock:
            routed = key in self._routes
        if routed:  # not deleted meanwhile
            self.backend.warm(prefix, server)

    def close(self) -> None:
        self._stop.set()
        super().close()
