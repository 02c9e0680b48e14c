"""Client of the actmem service, and an in-process actmem for laptops and tests.

:class:`ActMemClient` speaks actmem's gRPC API, moving caches as chunked
safetensors streams in both directions (header first, checksum verified).
:class:`EmbeddedActMem` starts the real actmem server on a loopback port in a
background thread, so the embedded path goes through the same contract as a
remote one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from memos.actmem.v1 import actmem_pb2, actmem_pb2_grpc
from memos.client import _convert
from services.actmem import codec, wire
from shared.channels import blocking_channel, with_service_token
from shared.errors import InvalidArgument
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

log = logging.getLogger(__name__)

KV = list[tuple[Any, Any]]
_MAX_MESSAGE = 64 * 1024 * 1024
# How far ahead of what this client has read a server may stream (HTTP/2 flow control; gRPC's
# default is 64 KiB, grown by probing): a cache download keeps the server writing while this
# client decodes, instead of waiting for a window update per message.
_LOOKAHEAD = 16 * 1024 * 1024
_SERVICE = "/" + actmem_pb2.DESCRIPTOR.services_by_name["ActMemService"].full_name + "/"


def _prompt_fields(prompt: str | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {"text": prompt}
    return {"messages": actmem_pb2.MessageList(messages=_convert.messages_to_proto(list(prompt)))}


def decode_stream(responses: Iterator[Any]) -> tuple[actmem_pb2.CacheInfo, KV]:
    """A cache from a header-then-chunks response stream (protobuf messages, or the
    :class:`~services.actmem.wire.RawChunk` views that the client's own calls parse chunks into)."""
    first = next(responses, None)
    if first is None or first.WhichOneof("payload") != "header":
        raise InvalidArgument("the stream did not start with a header", reason="MISSING_HEADER")
    info = first.header
    specs = [codec.TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in info.tensors]
    dec = codec.PayloadDecoder(specs, info.payload_bytes, info.checksum, source=f"cache {info.cache_id}")
    for r in responses:
        dec.feed(r.chunk)
    return info, dec.finish()


class ActMemClient:
    def __init__(
        self,
        target: str,
        *,
        chunk_bytes: int = 1024 * 1024,
        timeout_s: float | None = 600.0,
        service_token: str | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        """``settings``: transport security (``MEMOS_TLS_*``) from the environment unless given."""
        self.target = target
        self._chunk = chunk_bytes
        self._timeout = timeout_s
        channel = blocking_channel(
            target,
            settings or ClientSettings(),
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.http2.lookahead_bytes", _LOOKAHEAD),
            ],
        )
        # actmem is internal to a release: callers send its service token (MEMOS_SERVICE_TOKEN).
        self._channel = with_service_token(channel, service_token)
        self.stub = actmem_pb2_grpc.ActMemServiceStub(self._channel)
        # The cache streams skip protobuf for their chunks (services/actmem/wire.py): downloads
        # read each chunk as a view of the received message, uploads send pre-framed chunks.
        # The bytes on the wire are the protobuf encoding either way.
        self._streams = {
            method: self._channel.unary_stream(
                _SERVICE + method,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=wire.request_parser(response_cls),
                _registered_method=True,
            )
            for method, request_cls, response_cls in (
                ("GetCache", actmem_pb2.GetCacheRequest, actmem_pb2.GetCacheResponse),
                ("ComputeCache", actmem_pb2.ComputeCacheRequest, actmem_pb2.ComputeCacheResponse),
            )
        }
        self._add_cache = self._channel.stream_unary(
            _SERVICE + "AddCache",
            request_serializer=wire.serialize_response,
            response_deserializer=actmem_pb2.AddCacheResponse.FromString,
            _registered_method=True,
        )

    def close(self) -> None:
        self._channel.close()

    def _unary(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _download(self, method: str, request: Any) -> tuple[actmem_pb2.CacheInfo, KV]:
        try:
            return decode_stream(iter(self._streams[method](request, timeout=self._timeout)))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # -- operations ------------------------------------------------------------

    def compute(
        self,
        cube_id: str,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[actmem_pb2.CacheInfo, KV]:
        """The cache of ``prompt``, computed by the service and not stored there."""
        req = actmem_pb2.ComputeCacheRequest(
            request_id=uuid.uuid4().hex,
            cube_id=cube_id,
            add_generation_prompt=add_generation_prompt,
            metadata=dict(metadata or {}),
            **_prompt_fields(prompt),
        )
        return self._download("ComputeCache", req)

    def extract(
        self,
        cube_id: str,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        user_id: str = "",
    ) -> actmem_pb2.CacheInfo:
        """Computes and stores the cache of ``prompt``; ``user_id``: whose KV quota it counts against."""
        req = actmem_pb2.ExtractCacheRequest(
            request_id=request_id or uuid.uuid4().hex,
            cube_id=cube_id,
            user_id=user_id,
            add_generation_prompt=add_generation_prompt,
            metadata=dict(metadata or {}),
            **_prompt_fields(prompt),
        )
        return self._unary("ExtractCache", req).cache

    def add(self, header: actmem_pb2.CacheInfo, kv: KV) -> actmem_pb2.CacheInfo:
        """Uploads ``kv``; ``header`` names the cube, id, fingerprint, text, metadata and the user
        whose KV quota it counts against."""
        specs = codec.specs_of(kv)
        info = actmem_pb2.CacheInfo()
        info.CopyFrom(header)
        del info.tensors[:]
        info.tensors.extend(actmem_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs)
        info.num_tokens = int(kv[0][0].shape[2]) if kv else 0
        info.payload_bytes = codec.payload_size(specs)
        info.checksum = codec.checksum_of(kv, "crc32")

        def requests() -> Iterator[actmem_pb2.AddCacheRequest | bytes]:
            yield actmem_pb2.AddCacheRequest(header=info)
            # Serialized AddCacheRequest chunks, framed straight from the tensors' memory.
            yield from wire.chunk_frames(codec.iter_views(kv, self._chunk))

        try:
            return self._add_cache(requests(), timeout=self._timeout).cache
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def get(self, cube_id: str, cache_id: str) -> tuple[actmem_pb2.CacheInfo, KV]:
        return self._download("GetCache", actmem_pb2.GetCacheRequest(cube_id=cube_id, cache_id=cache_id))

    def get_merged(self, cube_id: str, cache_ids: Sequence[str]) -> tuple[actmem_pb2.CacheInfo, KV]:
        return self._download("GetCache", actmem_pb2.GetCacheRequest(cube_id=cube_id, merge_ids=list(cache_ids)))

    def info(self, cube_id: str, cache_id: str) -> actmem_pb2.CacheInfo:
        req = actmem_pb2.GetCacheRequest(cube_id=cube_id, cache_id=cache_id, info_only=True)
        try:
            return next(iter(self.stub.GetCache(req, timeout=self._timeout))).header
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def list(self, cube_id: str = "", *, user_id: str = "") -> list[actmem_pb2.CacheInfo]:
        """The cube's caches; with ``user_id`` only that user's (in every cube without ``cube_id``)."""
        out: list[actmem_pb2.CacheInfo] = []
        token = ""
        while True:
            req = actmem_pb2.ListCachesRequest(cube_id=cube_id, user_id=user_id, page_token=token)
            resp = self._unary("ListCaches", req)
            out.extend(resp.caches)
            token = resp.next_page_token
            if not token:
                return out

    def merge(
        self, cube_id: str, cache_ids: Sequence[str], *, store: bool = True, user_id: str = ""
    ) -> actmem_pb2.CacheInfo:
        req = actmem_pb2.MergeCachesRequest(
            request_id=uuid.uuid4().hex, cube_id=cube_id, cache_ids=list(cache_ids), store=store, user_id=user_id
        )
        return self._unary("MergeCaches", req).cache

    def delete(self, cube_id: str, cache_ids: Sequence[str]) -> int:
        req = actmem_pb2.DeleteCachesRequest(request_id=uuid.uuid4().hex, cube_id=cube_id, cache_ids=list(cache_ids))
        return self._unary("DeleteCaches", req).deleted_count

    def delete_all(self, cube_id: str = "", *, user_id: str = "") -> int:
        """Deletes the cube's caches; with ``user_id`` only that user's (in every cube without ``cube_id``)."""
        req = actmem_pb2.DeleteAllCachesRequest(request_id=uuid.uuid4().hex, cube_id=cube_id, user_id=user_id)
        return self._unary("DeleteAllCaches", req).deleted_count

    def dump(self, cube_id: str, directory: str) -> int:
        return self._unary(
            "DumpCaches", actmem_pb2.DumpCachesRequest(cube_id=cube_id, directory=directory)
        ).dumped_count

    def load(self, cube_id: str, directory: str, *, user_id: str = "") -> list[actmem_pb2.CacheInfo]:
        """Loads a dump into the cube, for ``user_id`` (empty: the user each cache was dumped with)."""
        req = actmem_pb2.LoadCachesRequest(
            request_id=uuid.uuid4().hex, cube_id=cube_id, directory=directory, user_id=user_id
        )
        return list(self._unary("LoadCaches", req).caches)

    def generate(
        self,
        cube_id: str,
        cache_ids: Sequence[str],
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
    ) -> Iterator[actmem_pb2.GenerateResponse]:
        req = actmem_pb2.GenerateRequest(
            cube_id=cube_id,
            cache_ids=list(cache_ids),
            messages=_convert.messages_to_proto(messages),
            max_tokens=max_tokens,
            temperature=temperature,
        )
        try:
            yield from self.stub.Generate(req, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None


class EmbeddedActMem:
    """actmem in this process, on a loopback port, in its own thread and event loop."""

    def __init__(self, settings: Any, *, memory: Any = None, startup_timeout_s: float = 600.0) -> None:
        self.settings = settings
        self.memory = memory
        self.address = ""
        self._timeout = startup_timeout_s
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> str:
        if self._thread is not None:
            return self.address
        self._thread = threading.Thread(target=self._run, name="memos-actmem-embedded", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError("the embedded actmem did not start in time")
        if self._error is not None:
            raise self._error
        return self.address

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from services.actmem.app import build_server

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = build_server(self.settings, self.memory)
        await server.start()
        self.address = server.address
        self._ready.set()
        await self._stop.wait()
        await server.stop(2.0)

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # loop already closed
            pass
        self._thread.join(timeout=30)
        self._thread = None


def dump_root_relative(directory: str | Path) -> str:
    """For an embedded actmem whose dump root is ``/``: the caller's directory as a path under it."""
    return str(Path(directory).resolve()).lstrip("/")
