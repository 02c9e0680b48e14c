"""Assembles actmem from its settings: backend, cache store, domain, servicer, server."""

from __future__ import annotations

from memos.actmem.v1 import actmem_pb2
from services.actmem.backends.base import Backend
from services.actmem.memory import ActMemory
from services.actmem.servicer import ActMemServicer, add_to_server
from services.actmem.settings import ActMemSettings
from services.actmem.store import CacheStore
from shared.errors import Unimplemented
from shared.metrics import ACTMEM_CACHE_BYTES
from shared.server import GrpcServer, ServiceBinding

SERVICE_NAME = actmem_pb2.DESCRIPTOR.services_by_name["ActMemService"].full_name


def build_backend(settings: ActMemSettings) -> Backend:
    if settings.backend == "transformers":
        from services.actmem.backends.transformers_backend import TransformersBackend

        return TransformersBackend(
            settings.model_path, device=settings.device, dtype=settings.dtype, torch_threads=settings.torch_threads
        )
    if settings.backend == "vllm":
        from services.actmem.backends.vllm_backend import VllmBackend

        return VllmBackend(  # type: ignore[return-value]
            settings.model_path,
            settings.vllm_urls,
            served_model=settings.vllm_model,
            timeout_s=settings.vllm_timeout_s,
            startup_timeout_s=settings.vllm_startup_timeout_s,
            api_key=settings.vllm_api_key,
        )
    raise Unimplemented(f"backend {settings.backend!r} is not available", reason="BACKEND_UNAVAILABLE")


def build_memory(settings: ActMemSettings, backend: Backend | None = None) -> ActMemory:
    owns_backend = backend is None
    backend = backend or build_backend(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if getattr(backend, "caches_on_server", False):
        # vLLM: the caches are prefixes in the server; only their descriptions are kept here.
        from services.actmem.prefix_memory import PrefixMemory

        dump_root = settings.resolved_dump_root
        dump_root.mkdir(parents=True, exist_ok=True)
        return PrefixMemory(
            backend,  # type: ignore[arg-type]
            CacheStore(max_bytes=0, spill_dir=settings.data_dir / "spill"),
            dump_root=dump_root,
            max_prompt_tokens=settings.max_prompt_tokens,
            max_new_tokens=settings.max_new_tokens,
            owns_backend=owns_backend,
            rewarm_interval_s=settings.vllm_rewarm_interval_s,
        )
    store = CacheStore(
        max_bytes=settings.max_cache_bytes,
        max_spill_bytes=settings.max_spill_bytes,
        spill_dir=settings.data_dir / "spill",
        device=backend.device,
        checksum=settings.checksum,
        max_bytes_per_cube=settings.max_kv_bytes_per_cube,
        max_bytes_per_user=settings.max_kv_bytes_per_user,
    )
    dump_root = settings.resolved_dump_root
    dump_root.mkdir(parents=True, exist_ok=True)
    return ActMemory(
        backend,
        store,
        dump_root=dump_root,
        max_prompt_tokens=settings.max_prompt_tokens,
        max_new_tokens=settings.max_new_tokens,
        owns_backend=owns_backend,
    )


def build_server(settings: ActMemSettings, memory: ActMemory | None = None) -> GrpcServer:
    memory = memory or build_memory(settings)
    servicer = ActMemServicer(memory, settings.chunk_bytes)
    server = GrpcServer(
        name="actmem",
        settings=settings,
        services=[
            ServiceBinding(SERVICE_NAME, lambda s: add_to_server(servicer, s)),
        ],
        on_stop=[memory.close],
    )
    if settings.metrics_addr:
        store = memory.store
        remove = ACTMEM_CACHE_BYTES.add(
            lambda: [(store.resident_bytes, {"tier": "memory"}), (store.spilled_bytes, {"tier": "disk"})]
        )
        server.on_stop.insert(0, remove)
    return server
