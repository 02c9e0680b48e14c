"""asyncio client; every method returns an awaitable of the sync client's result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from memos.client._base import IDEMPOTENT_METHODS, ClientMethods, auth_metadata
from memos.gateway.v1 import gateway_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings


class AsyncMemosClient(ClientMethods):
    """Talks to a memos gateway from asyncio code. Create it inside the running loop."""

    def __init__(
        self, target: str = "127.0.0.1:50051", *, settings: ClientSettings | None = None, api_key: str | None = None
    ) -> None:
        self._auth = auth_metadata(api_key)
        self._channel = open_channel(
            target, settings=settings or ClientSettings(), idempotent_methods=IDEMPOTENT_METHODS
        )
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    async def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=timeout, metadata=self._auth)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def _invoke(self, method: str, request: Any, timeout: float | None) -> Any:
        return self._call(method, request, timeout)

    def _stream(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        call = getattr(self._stub, method)(request, timeout=timeout, metadata=self._auth)

        async def events() -> AsyncIterator[Any]:
            try:
                async for event in call:
                    yield event
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
            finally:
                call.cancel()

        return events()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncMemosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
