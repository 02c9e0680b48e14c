"""gRPC servicer of actmem: convert, call the domain in a worker thread, convert back.

Model runs, checksums and disk I/O block, so they run in threads and the event
loop stays free for other calls and health checks. Caches cross the wire as a
header message followed by safetensors chunks of at most ``chunk_bytes``, framed
and parsed by :mod:`services.actmem.wire` (see :func:`add_to_server`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from memos.actmem.v1 import actmem_pb2, actmem_pb2_grpc
from services.actmem import codec, convert, wire
from services.actmem.memory import ActMemory
from services.actmem.models import KV, CacheMeta
from shared.errors import FailedPrecondition, InvalidArgument

# Chunks produced per worker-thread hop: amortises the hop, bounds what is buffered.
_CHUNKS_PER_HOP = 8


def _take(it: Iterator, n: int) -> list:  # type: ignore[type-arg]
    return list(itertools.islice(it, n))


def _started(events: Iterator) -> tuple[Iterator, list]:  # type: ignore[type-arg]
    # The first event is computed in the thread that validated the call: one hop less before it.
    return events, _take(events, 1)


class _Handlers:
    """Collects the generated code's method handlers instead of registering them."""

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_to_server(servicer: ActMemServicer, server: Any) -> None:
    """Registers the servicer like the generated code does, except that the cache streams'
    chunks skip protobuf (they are the bulk of every transfer; see :mod:`wire`)."""
    generated = _Handlers()
    actmem_pb2_grpc.add_ActMemServiceServicer_to_server(servicer, generated)
    handlers = generated.handlers
    for method in ("GetCache", "ComputeCache"):
        handlers[method] = grpc.unary_stream_rpc_method_handler(
            getattr(servicer, method),
            request_deserializer=handlers[method].request_deserializer,
            response_serializer=wire.serialize_response,
        )
    handlers["AddCache"] = grpc.stream_unary_rpc_method_handler(
        servicer.AddCache,
        request_deserializer=wire.request_parser(actmem_pb2.AddCacheRequest),
        response_serializer=handlers["AddCache"].response_serializer,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(generated.service, handlers),))
    server.add_registered_method_handlers(generated.service, handlers)


class ActMemServicer(actmem_pb2_grpc.ActMemServiceServicer):
    def __init__(self, memory: ActMemory, chunk_bytes: int) -> None:
        self._mem = memory
        self._chunk = chunk_bytes

    async def _stream(self, meta: CacheMeta, kv: KV, response_cls) -> AsyncIterator:  # type: ignore[no-untyped-def]
        await asyncio.to_thread(self._mem.checksum, meta, kv)
        yield response_cls(header=convert.meta_to_proto(meta, with_payload=True))
        # Already serialized chunk messages: one copy of the tensors' bytes each (wire.py).
        frames = wire.chunk_frames(codec.iter_views(kv, self._chunk))
        while batch := await asyncio.to_thread(_take, frames, _CHUNKS_PER_HOP):
            for frame in batch:
                yield frame

    async def ExtractCache(self, request, context):  # type: ignore[no-untyped-def]
        prompt = convert.prompt_from_proto(request)
        meta = await asyncio.to_thread(
            self._mem.extract,
            request.cube_id,
            prompt,
            add_generation_prompt=request.add_generation_prompt,
            metadata=dict(request.metadata),
            request_id=request.request_id,
            user_id=request.user_id,
        )
        return actmem_pb2.ExtractCacheResponse(cache=convert.meta_to_proto(meta))

    async def ComputeCache(self, request, context):  # type: ignore[no-untyped-def]
        prompt = convert.prompt_from_proto(request)
        meta, kv = await asyncio.to_thread(
            self._mem.compute,
            request.cube_id,
            prompt,
            add_generation_prompt=request.add_generation_prompt,
            metadata=dict(request.metadata),
        )
        async for resp in self._stream(meta, kv, actmem_pb2.ComputeCacheResponse):
            yield resp

    async def AddCache(self, request_iterator, context):  # type: ignore[no-untyped-def]
        it = request_iterator.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            first = None
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("the first message must be the header", reason="MISSING_HEADER")
        meta, specs, payload_bytes, checksum = convert.header_from_proto(first.header)
        decoder = await asyncio.to_thread(self._mem.begin_add, meta, payload_bytes, checksum, specs)
        # Chunks go straight into the preallocated tensors; if the stream breaks off
        # (cancelled, truncated, bad checksum) nothing has been stored.
        async for req in it:
            if req.WhichOneof("payload") != "chunk":
                raise InvalidArgument("only chunks may follow the header", reason="UNEXPECTED_HEADER")
            decoder.feed(req.chunk)
        # Waits for the checksum's last stripes (computed on a pool while the chunks came in).
        kv = await asyncio.to_thread(decoder.finish)
        # Kept when it is also the checksum of this service's own encoding (else recomputed on demand).
        meta.checksum = decoder.canonical_checksum
        meta = await asyncio.to_thread(self._mem.add, meta, kv)
        return actmem_pb2.AddCacheResponse(cache=convert.meta_to_proto(meta))

    async def GetCache(self, request, context):  # type: ignore[no-untyped-def]
        if request.merge_ids:
            meta, kv = await asyncio.to_thread(self._mem.merge, request.cube_id, list(request.merge_ids))
        elif request.info_only:
            meta = await asyncio.to_thread(self._mem.info, request.cube_id, request.cache_id)
            yield actmem_pb2.GetCacheResponse(header=convert.meta_to_proto(meta))
            return
        else:
            if not request.cache_id:
                raise InvalidArgument("cache_id or merge_ids is required", reason="MISSING_CACHE_ID")
            meta, kv = await asyncio.to_thread(self._mem.get, request.cube_id, request.cache_id)
        if kv is None:  # a backend whose caches hold no tensors here (vLLM)
            raise FailedPrecondition(
                "merged caches have no tensors on this backend; use MergeCaches", reason="TENSORS_UNAVAILABLE"
            )
        async for resp in self._stream(meta, kv, actmem_pb2.GetCacheResponse):
            yield resp

    async def ListCaches(self, request, context):  # type: ignore[no-untyped-def]
        metas, nxt = await asyncio.to_thread(
            self._mem.list, request.cube_id, request.page_size, request.page_token, request.user_id
        )
        return actmem_pb2.ListCachesResponse(caches=[convert.meta_to_proto(m) for m in metas], next_page_token=nxt)

    async def MergeCaches(self, request, context):  # type: ignore[no-untyped-def]
        meta, _ = await asyncio.to_thread(
            self._mem.merge,
            request.cube_id,
            list(request.cache_ids),
            store=request.store,
            request_id=request.request_id,
            user_id=request.user_id,
        )
        return actmem_pb2.MergeCachesResponse(cache=convert.meta_to_proto(meta))

    async def DeleteCaches(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self._mem.delete, request.cube_id, list(request.cache_ids))
        return actmem_pb2.DeleteCachesResponse(deleted_count=n)

    async def DeleteAllCaches(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self._mem.delete_all, request.cube_id, request.user_id)
        return actmem_pb2.DeleteAllCachesResponse(deleted_count=n)

    async def DumpCaches(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self._mem.dump, request.cube_id, request.directory)
        return actmem_pb2.DumpCachesResponse(dumped_count=n)

    async def LoadCaches(self, request, context):  # type: ignore[no-untyped-def]
        metas = await asyncio.to_thread(self._mem.load, request.cube_id, request.directory, request.user_id)
        return actmem_pb2.LoadCachesResponse(caches=[convert.meta_to_proto(m) for m in metas])

    async def Generate(self, request, context):  # type: ignore[no-untyped-def]
        messages = convert.messages_from_proto(request.messages)
        events, batch = await asyncio.to_thread(
            lambda: _started(
                self._mem.generate(
                    request.cube_id,
                    list(request.cache_ids),
                    messages,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                )
            )
        )
        try:
            while batch:
                ev = batch[0]
                yield actmem_pb2.GenerateResponse(
                    delta=ev.delta,
                    ttft_ms=ev.ttft_ms,
                    done=ev.done,
                    cached_tokens=ev.cached_tokens,
                    prompt_tokens=ev.prompt_tokens,
                    completion_tokens=ev.completion_tokens,
                )
                batch = await asyncio.to_thread(_take, events, 1)
        finally:
            try:
                events.close()  # type: ignore[attr-defined]
            except ValueError:  # still running in its worker thread (call cancelled); it ends there
                pass
