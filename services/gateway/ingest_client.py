"""The gateway's view of ingest: typed calls that raise :mod:`shared.errors`."""

from __future__ import annotations

import grpc

from memos.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# Parsing stores nothing, so it is safe to retry on UNAVAILABLE.
_IDEMPOTENT = ["/memos.ingest.v1.IngestService/ParseMessages"]


class IngestClient:
    def __init__(self, target: str, settings: ClientSettings) -> None:
        self._channel = open_channel(target, settings=settings, idempotent_methods=_IDEMPOTENT)
        self.stub = ingest_pb2_grpc.IngestServiceStub(self._channel)

    async def parse(
        self, request: ingest_pb2.ParseMessagesRequest, timeout: float | None
    ) -> ingest_pb2.ParseMessagesResponse:
        try:
            return await self.stub.ParseMessages(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
