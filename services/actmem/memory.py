"""The cache operations of actmem, free of gRPC: extract, add, get, list, merge,
delete, dump, load and generate over one model backend and one cache store."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from services.actmem import codec
from services.actmem.backends.base import Backend
from services.actmem.models import KV, CacheMeta, Fingerprint, GenerateEvent, check_id, check_user_id, kv_bytes
from services.actmem.store import CacheStore
from shared.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "memos-actmem-cache"
MANIFEST_VERSION = 1
# File types that could execute code when loaded; a dump directory may hold them but they are never read.
_NEVER_LOADED = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy", ".npz", ".joblib")

Prompt = str | Sequence[Mapping[str, str]]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _from_iso(value: object, field: str, source: str) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise codec.CorruptPayload(f"{source}: {field} is not a timestamp", metadata={"source": source}) from None


class ActMemory:
    def __init__(
        self,
        backend: Backend,
        store: CacheStore,
        *,
        dump_root: Path,
        max_prompt_tokens: int = 0,
        max_new_tokens: int = 1024,
        owns_backend: bool = True,
    ) -> None:
        self.backend = backend
        # A backend passed in by the caller (tests, benchmarks) may serve other memories too.
        self._owns_backend = owns_backend
        self.store = store
        self.dump_root = dump_root
        self.max_new_tokens = max_new_tokens
        fp = backend.fingerprint
        self.max_context = min(x for x in (max_prompt_tokens, fp.max_context, 1 << 30) if x)
        # request id -> cache id, so that a retried extract or merge returns the first result.
        self._requests: dict[tuple[str, str], str] = {}
        self._requests_lock = threading.Lock()

    @property
    def fingerprint(self) -> Fingerprint:
        return self.backend.fingerprint

    # -- helpers -------------------------------------------------------------

    def _cache_size(self, num_tokens: int) -> int:
        fp = self.fingerprint
        itemsize = codec.NAME_TO_DTYPE[fp.dtype].itemsize
        return 2 * fp.num_layers * fp.num_kv_heads * fp.head_dim * num_tokens * itemsize

    def _check_length(self, num_tokens: int, what: str) -> None:
        if num_tokens > self.max_context:
            raise InvalidArgument(
                f"{what} is {num_tokens} tokens, longer than the model's context of {self.max_context}",
                reason="PROMPT_TOO_LONG",
                metadata={"num_tokens": str(num_tokens), "max_context": str(self.max_context)},
            )

    def prompt_text(self, prompt: Prompt, add_generation_prompt: bool) -> str:
        if isinstance(prompt, str):
            return prompt
        if not prompt:
            raise InvalidArgument("messages must not be empty", reason="EMPTY_PROMPT")
        for i, m in enumerate(prompt):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InvalidArgument(f"message {i} needs a string role and content", reason="BAD_MESSAGES")
        return self.backend.render(prompt, add_generation_prompt)

    def _replayed(self, cube_id: str, request_id: str) -> CacheMeta | None:
        if not request_id:
            return None
        with self._requests_lock:
            cid = self._requests.get((cube_id, request_id))
        if cid is None:
            return None
        try:
            return self.store.meta(cube_id, cid)
        except NotFound:
            return None

    def _remember(self, cube_id: str, request_id: str, cache_id: str) -> None:
        if request_id:
            with self._requests_lock:
                if len(self._requests) > 100_000:  # bounded; old ids only lose their replay
                    self._requests.clear()
                self._requests[(cube_id, request_id)] = cache_id

    # -- operations ----------------------------------------------------------

    def compute(
        self,
        cube_id: str,
        prompt: Prompt,
        *,
        add_generation_prompt: bool = False,
        metadata: Mapping[str, str] | None = None,
        to_store: bool = False,
        user_id: str = "",
    ) -> tuple[CacheMeta, KV]:
        """Runs the model over the prompt; stores nothing. ``to_store``: the caller stores the
        result for ``user_id``, so a cache past the cube's or the user's quota is refused before
        the model runs."""
        check_id(cube_id, "cube_id")
        text = self.prompt_text(prompt, add_generation_prompt)
        ids = self.backend.tokenize(text)
        if not ids:
            raise InvalidArgument("the prompt is empty", reason="EMPTY_PROMPT")
        self._check_length(len(ids), "the prompt")
        self.store.check_fits(self._cache_size(len(ids)))
        if to_store:
            self.store.check_quota(cube_id, self._cache_size(len(ids)), user_id=user_id)
        t0 = time.perf_counter()
        kv = self.backend.prefill(ids)
        meta = CacheMeta(
            cache_id=uuid.uuid4().hex,
            cube_id=cube_id,
            fingerprint=self.fingerprint,
            source_text=text,
            num_tokens=len(ids),
            size_bytes=kv_bytes(kv),
            metadata=dict(metadata or {}),
            user_id=user_id,
        )
        log.info(
            "cache computed",
            extra={
                "cube_id": cube_id,
                "num_tokens": len(ids),
                "prefill_ms": round((time.perf_counter() - t0) * 1e3, 2),
            },
        )
        return meta, kv

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
        replay = self._replayed(cube_id, request_id)
        if replay is not None:
            return replay
        meta, kv = self.compute(
            cube_id,
            prompt,
            add_generation_prompt=add_generation_prompt,
            metadata=metadata,
            to_store=True,
            user_id=user_id,
        )
        self.store.put(meta, kv)
        self._remember(cube_id, request_id, meta.cache_id)
        return meta

    def begin_add(self, meta: CacheMeta, payload_bytes: int, checksum: str, announced: list[codec.TensorSpec]):  # type: ignore[no-untyped-def]
        """Validates an incoming cache's header; returns the decoder to feed its payload to.

        Everything that can be refused is refused here, before a byte of tensors arrives."""
        check_id(meta.cube_id, "cube_id")
        if meta.cache_id:
            check_id(meta.cache_id, "cache_id")
        else:
            meta.cache_id = uuid.uuid4().hex
        self.fingerprint.require_same(meta.fingerprint, f"cache {meta.cache_id}")
        if meta.num_tokens <= 0:
            raise InvalidArgument("num_tokens must be positive", reason="BAD_HEADER")
        self._check_length(meta.num_tokens, f"cache {meta.cache_id}")
        expected = codec.expected_specs(self.fingerprint, meta.num_tokens)
        if announced != expected:
            raise InvalidArgument(
                f"cache {meta.cache_id}: tensors do not match the model's cache layout", reason="BAD_TENSORS"
            )
        meta.size_bytes = sum(s.nbytes for s in expected)
        self.store.check_fits(meta.size_bytes)
        # Before a byte of tensors arrives; put checks again, atomically, when it is stored.
        self.store.check_quota(meta.cube_id, meta.size_bytes, replacing=[meta.cache_id], user_id=meta.user_id)
        return codec.PayloadDecoder(expected, payload_bytes, checksum, source=f"cache {meta.cache_id}")

    def add(self, meta: CacheMeta, kv: KV) -> CacheMeta:
        """Stores a received cache. ``meta.checksum``, if set, must be the checksum of the cache's
        canonical payload (verified on receipt); one in another algorithm than the store's is dropped
        and recomputed when needed."""
        if not meta.checksum.startswith(f"{self.store.checksum}:"):
            meta.checksum = ""
        if self.store.device != "cpu":
            kv = [(k.to(self.store.device), v.to(self.store.device)) for k, v in kv]
        meta.fingerprint = self.fingerprint
        meta.last_used_at = time.time()
        self.store.put(meta, kv)
        return meta

    def get(self, cube_id: str, cache_id: str) -> tuple[CacheMeta, KV]:
        meta, kv = self.store.get(cube_id, cache_id)
        meta.last_used_at = time.time()
        return meta, kv

    def info(self, cube_id: str, cache_id: str) -> CacheMeta:
        return self.store.meta(cube_id, cache_id)

    def checksum(self, meta: CacheMeta, kv: KV) -> str:
        if not meta.checksum:
            meta.checksum = codec.checksum_of(kv, self.store.checksum)
        return meta.checksum

    def list(
        self, cube_id: str, page_size: int = 0, page_token: str = "", user_id: str = ""
    ) -> tuple[list[CacheMeta], str]:
        """A page of the cube's caches, or of the user's (in every cube without ``cube_id``)."""
        self._check_selector(cube_id, user_id)
        metas = self.store.list(cube_id, user_id)
        try:
            start = int(page_token or 0)
        except ValueError:
            raise InvalidArgument("bad page_token", reason="BAD_PAGE_TOKEN") from None
        if page_size <= 0:
            page_size = 1000
        page = metas[start : start + page_size]
        nxt = str(start + page_size) if start + page_size < len(metas) else ""
        return page, nxt

    def merge_kv(self, parts: Sequence[tuple[CacheMeta, KV]]) -> KV:
        """Joins caches in order, each later segment's keys rotated to its final positions."""
        fp = self.fingerprint
        for meta, _ in parts:
            fp.require_same(meta.fingerprint, f"cache {meta.cache_id}")
        out: KV = []
        for layer in range(fp.num_layers):
            keys, values, offset = [], [], 0
            for meta, kv in parts:
                k, v = kv[layer]
                keys.append(self.backend.shift_keys(k, offset) if offset else k)
                values.append(v)
                offset += meta.num_tokens
            # cat copies, so the merged cache never aliases a stored one.
            out.append((torch.cat(keys, dim=2), torch.cat(values, dim=2)))
        return out

    def merge(
        self, cube_id: str, cache_ids: Sequence[str], *, store: bool = False, request_id: str = "", user_id: str = ""
    ) -> tuple[CacheMeta, KV | None]:
        if not cache_ids:
            raise InvalidArgument("cache_ids must name at least one cache", reason="EMPTY_CACHE_IDS")
        replay = self._replayed(cube_id, request_id) if store else None
        if replay is not None:
            return replay, None
        metas = [self.store.meta(cube_id, cid) for cid in cache_ids]  # NOT_FOUND before any work
        total = sum(m.num_tokens for m in metas)
        self._check_length(total, "the merged cache")
        if store:
            self.store.check_fits(self._cache_size(total))
            self.store.check_quota(cube_id, self._cache_size(total), user_id=user_id)
        for m in metas:
            self.fingerprint.require_same(m.fingerprint, f"cache {m.cache_id}")
        parts = [self.get(cube_id, cid) for cid in cache_ids]
        kv = self.merge_kv(parts)
        meta = CacheMeta(
            cache_id=uuid.uuid4().hex,
            cube_id=cube_id,
            fingerprint=self.fingerprint,
            source_text="".join(m.source_text for m, _ in parts),
            num_tokens=total,
            size_bytes=kv_bytes(kv),
            merged_from=list(cache_ids),
            user_id=user_id if store else "",
        )
        if store:
            self.store.put(meta, kv)
            self._remember(cube_id, request_id, meta.cache_id)
        return meta, kv

    def delete(self, cube_id: str, cache_ids: Sequence[str]) -> int:
        return self.store.delete(cube_id, list(cache_ids))

    @staticmethod
    def _check_selector(cube_id: str, user_id: str) -> None:
        if not cube_id and not user_id:
            raise InvalidArgument(
                "cube_id or user_id is required", reason="MISSING_SELECTOR", metadata={"field": "cube_id"}
            )
        if user_id:
            check_user_id(user_id)

    def delete_all(self, cube_id: str, user_id: str = "") -> int:
        """Deletes the cube's caches, or the user's (in every cube without ``cube_id``)."""
        self._check_selector(cube_id, user_id)
        return len(self.store.delete_all(cube_id, user_id))

    # -- dump and load -------------------------------------------------------

    def _directory(self, directory: str) -> Path:
        if not directory:
            raise InvalidArgument("directory is required", reason="MISSING_DIRECTORY")
        root = self.dump_root.resolve()
        target = (root / directory).resolve()
        if target != root and root not in target.parents:
            raise InvalidArgument(f"directory {directory!r} is outside the dump root", reason="DIRECTORY_OUTSIDE_ROOT")
        return target

    def _manifest(self, meta: CacheMeta) -> dict:
        specs = codec.expected_specs(meta.fingerprint, meta.num_tokens)
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "cache_id": meta.cache_id,
            "cube_id": meta.cube_id,
            "fingerprint": asdict(meta.fingerprint),
            "num_tokens": meta.num_tokens,
            "size_bytes": meta.size_bytes,
            "payload_bytes": codec.payload_size(specs),
            "checksum": meta.checksum,
            "tensors": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in specs],
            "source_text": meta.source_text,
            "created_at": _iso(meta.created_at),
            "last_used_at": _iso(meta.last_used_at),
            "merged_from": meta.merged_from,
            "metadata": meta.metadata,
            "user_id": meta.user_id,
        }

    def dump(self, cube_id: str, directory: str) -> int:
        """Writes every cache of the cube as ``<id>.safetensors`` plus ``<id>.json``."""
        target = self._directory(directory)
        target.mkdir(parents=True, exist_ok=True)
        n = 0
        for meta in self.store.list(cube_id):
            meta, kv = self.store.get(cube_id, meta.cache_id)
            self.checksum(meta, kv)
            codec.write_file(target / f"{meta.cache_id}.safetensors", kv)
            manifest = json.dumps(self._manifest(meta), ensure_ascii=False, indent=1).encode()
            tmp = target / f"{meta.cache_id}.json.tmp"
            try:
                tmp.write_bytes(manifest)
                tmp.replace(target / f"{meta.cache_id}.json")
            except OSError as exc:
                # Like the tensors' file: no partial file, and a full disk said as such.
                tmp.unlink(missing_ok=True)
                full = codec.no_space_error(exc, target / f"{meta.cache_id}.json", len(manifest))
                if full is not None:
                    raise full from None
                raise
            n += 1
        log.info("caches dumped", extra={"cube_id": cube_id, "directory": str(target), "count": n})
        return n

    def _read_manifest(self, path: Path) -> CacheMeta:
        src = path.name

        def bad(why: str) -> codec.CorruptPayload:
            return codec.CorruptPayload(f"{src}: {why}", metadata={"source": src})

        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"unreadable manifest ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise bad("not an actmem cache manifest")
        if doc.get("version") != MANIFEST_VERSION:
            raise bad(f"manifest version {doc.get('version')} is not supported")
        try:
            fp = Fingerprint(**doc["fingerprint"])
            meta = CacheMeta(
                cache_id=check_id(str(doc["cache_id"]), "cache_id"),
                cube_id=str(doc.get("cube_id", "")),
                fingerprint=fp,
                source_text=str(doc.get("source_text", "")),
                num_tokens=int(doc["num_tokens"]),
                size_bytes=int(doc["size_bytes"]),
                created_at=_from_iso(doc.get("created_at"), "created_at", src),
                last_used_at=time.time(),
                merged_from=[str(x) for x in doc.get("merged_from", [])],
                metadata={str(k): str(v) for k, v in dict(doc.get("metadata", {})).items()},
                checksum=str(doc["checksum"]),
                user_id=str(doc.get("user_id") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"incomplete manifest ({exc})") from None
        if path.stem != meta.cache_id:
            raise bad(f"names cache {meta.cache_id}, not {path.stem}")
        if meta.num_tokens <= 0 or meta.size_bytes != self._cache_size(meta.num_tokens):
            raise bad("sizes do not match the model's cache layout")
        return meta

    def load(self, cube_id: str, directory: str, user_id: str = "") -> list[CacheMeta]:
        """Reads a dump back. Only ``*.json`` manifests and the ``*.safetensors`` they name are
        read; every cache is validated before any is stored, so a bad file loads nothing. The
        caches are stored for ``user_id``, or for the user each was dumped with when it is empty."""
        check_id(cube_id, "cube_id")
        target = self._directory(directory)
        if not target.is_dir():
            raise NotFound(f"dump directory {directory!r} does not exist", reason="DIRECTORY_NOT_FOUND")
        for p in sorted(target.iterdir()):
            if p.suffix.lower() in _NEVER_LOADED:
                log.warning("ignoring a file that is never loaded", extra={"file": p.name, "directory": str(target)})
        loaded: list[tuple[CacheMeta, KV]] = []
        for manifest in sorted(target.glob("*.json")):
            meta = self._read_manifest(manifest)
            meta.user_id = user_id or meta.user_id
            self.fingerprint.require_same(meta.fingerprint, f"{manifest.name}")
            self.store.check_fits(meta.size_bytes)
            # The dump so far against the cube's quota, before this cache's tensors are read
            # (put_many checks each cache again, and takes back what it stored if one does not fit).
            self.store.check_quota(
                cube_id,
                sum(m.size_bytes for m, _ in loaded) + meta.size_bytes,
                replacing=[m.cache_id for m, _ in loaded] + [meta.cache_id],
                user_id=meta.user_id,
                user_size=sum(m.size_bytes for m, _ in loaded if m.user_id == meta.user_id) + meta.size_bytes,
            )
            specs = codec.expected_specs(self.fingerprint, meta.num_tokens)
            kv = codec.read_file(target / f"{meta.cache_id}.safetensors", specs, meta.checksum, self.store.device)
            meta.cube_id = cube_id
            meta.fingerprint = self.fingerprint
            loaded.append((meta, kv))
        self.store.put_many(loaded)
        log.info("caches loaded", extra={"cube_id": cube_id, "directory": str(target), "count": len(loaded)})
        return [m for m, _ in loaded]

    # -- generation ----------------------------------------------------------

    def generate(
        self,
        cube_id: str,
        cache_ids: Sequence[str],
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
    ) -> Iterator[GenerateEvent]:
        """Validates now (errors raise here), then returns the event stream.

        The caches are merged (or, for one, used as they are) and copied by the
        backend before the model sees them: a stored cache never grows."""
        t0 = time.perf_counter()
        max_tokens = max_tokens or min(128, self.max_new_tokens)
        if max_tokens < 0 or max_tokens > self.max_new_tokens:
            raise InvalidArgument(f"max_tokens must be between 1 and {self.max_new_tokens}", reason="BAD_MAX_TOKENS")
        if temperature < 0:
            raise InvalidArgument("temperature must not be negative", reason="BAD_TEMPERATURE")
        metas = [self.store.meta(cube_id, cid) for cid in cache_ids]
        cached = sum(m.num_tokens for m in metas)
        text = self.prompt_text(messages, add_generation_prompt=True)
        ids = self.backend.tokenize(text)
        if not ids:
            raise InvalidArgument("the prompt is empty", reason="EMPTY_PROMPT")
        self._check_length(cached + len(ids) + max_tokens, "the cached prefix plus prompt plus max_tokens")
        parts = [self.get(cube_id, cid) for cid in cache_ids]
        if len(parts) == 1:
            self.fingerprint.require_same(parts[0][0].fingerprint, f"cache {parts[0][0].cache_id}")
            prefix: KV | None = parts[0][1]
        else:
            prefix = self.merge_kv(parts) if parts else None
        return self._events(prefix, ids, max_tokens, temperature, t0, cached)

    def _events(
        self, prefix: KV | None, ids: list[int], max_tokens: int, temperature: float, t0: float, cached: int
    ) -> Iterator[GenerateEvent]:
        prompt_tokens = cached + len(ids)
        ttft = 0.0
        completion = 0
        for ev in self.backend.generate(prefix, ids, max_tokens, temperature):
            if not ttft:
                ttft = (time.perf_counter() - t0) * 1e3
                ev.ttft_ms = ttft
            completion = ev.completion_tokens
            ev.cached_tokens, ev.prompt_tokens = cached, prompt_tokens
            yield ev
        yield GenerateEvent(
            delta="",
            ttft_ms=0.0 if ttft else (time.perf_counter() - t0) * 1e3,
            done=True,
            cached_tokens=cached,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()
