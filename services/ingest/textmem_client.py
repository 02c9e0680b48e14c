"""ingest's view of textmem: WriteMemories, raising :mod:`shared.errors`."""

from __future__ import annotations

import grpc

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# Writes carry a request id, so they are safe to retry on UNAVAILABLE.
_IDEMPOTENT = ["/memos.textmem.v1.TextMemService/WriteMemories"]


class TextMemWriter:
    def __init__(self, target: str, settings: ClientSettings) -> None:
        self._target = target
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: textmem_pb2_grpc.TextMemServiceStub | None = None

    def _ensure(self) -> textmem_pb2_grpc.TextMemServiceStub:
        # Opened lazily: the channel must belong to the running event loop.
        if self._stub is None:
            self._channel = open_channel(self._target, settings=self._settings, idempotent_methods=_IDEMPOTENT)
            self._stub = textmem_pb2_grpc.TextMemServiceStub(self._channel)
        return self._stub

    async def write(
        self, request: textmem_pb2.WriteMemoriesRequest, timeout: float | None
    ) -> textmem_pb2.WriteMemoriesResponse:
        try:
            return await self._ensure().WriteMemories(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
