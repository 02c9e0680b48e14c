"""The gateway's view of textmem: typed calls that raise :mod:`shared.errors`.

Keeps gRPC details (stubs, AioRpcError) out of the gateway's logic.
"""

from __future__ import annotations

import grpc

from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from shared.channels import method_names, open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# Every textmem mutation the gateway sends carries a request id, so all of
# textmem's methods are safe to retry on UNAVAILABLE.
_IDEMPOTENT = [
    *method_names(textmem_pb2.DESCRIPTOR.services_by_name["TextMemService"]),
    *method_names(textmem_pb2.DESCRIPTOR.services_by_name["CubeService"]),
]


class TextMemClient:
    def __init__(self, target: str, settings: ClientSettings) -> None:
        self._channel = open_channel(target, settings=settings, idempotent_methods=_IDEMPOTENT)
        self.memories = textmem_pb2_grpc.TextMemServiceStub(self._channel)
        self.cubes = textmem_pb2_grpc.CubeServiceStub(self._channel)

    async def call(self, method, request, timeout: float | None = None):  # type: ignore[no-untyped-def]
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
