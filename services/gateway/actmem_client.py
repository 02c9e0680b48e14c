"""The gateway's view of actmem: the descriptions of a cube's KV caches (never their tensors), for
exports, and the deletion of a cube's caches, for erasure; raising :mod:`shared.errors`."""

from __future__ import annotations

import grpc

from memos.actmem.v1 import actmem_pb2, actmem_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# A read, and a deletion that removes what is left when repeated: both safe to retry.
_IDEMPOTENT = ["/memos.actmem.v1.ActMemService/ListCaches", "/memos.actmem.v1.ActMemService/DeleteAllCaches"]


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

    async def delete_all_caches(
        self, request: actmem_pb2.DeleteAllCachesRequest, timeout: float | None
    ) -> actmem_pb2.DeleteAllCachesResponse:
        try:
            return await self.stub.DeleteAllCaches(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
