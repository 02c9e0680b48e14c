"""The gateway's view of actmem: reads the descriptions of a cube's KV caches (never their tensors),
raising :mod:`shared.errors`."""

from __future__ import annotations

import grpc

from memos.actmem.v1 import actmem_pb2, actmem_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# Reads only: safe to retry.
_IDEMPOTENT = ["/memos.actmem.v1.ActMemService/ListCaches"]


class ActMemClient:
    def __init__(self, target: str, settings: ClientSettings) -> None:
        self._channel = open_channel(target, settings=settings, idempotent_methods=_IDEMPOTENT)
        self.stub = actmem_pb2_grpc.ActMemServiceStub(self._channel)

    async def list_caches(
        self, request: actmem_pb2.ListCachesRequest, timeout: float | None
    ) -> actmem_pb2.ListCachesResponse:
        try:
            return await self.stub.ListCaches(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
