"""Blocking client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from memos.client._base import IDEMPOTENT_METHODS, ClientMethods, auth_metadata
from memos.gateway.v1 import gateway_pb2_grpc
from shared.channels import blocking_channel, channel_options
from shared.context import REQUEST_ID_HEADER, new_request_id
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings


class MemosClient(ClientMethods):
    """Talks to a memos gateway. Thread-safe; reuse one per process."""

    def __init__(
        self, target: str = "127.0.0.1:50051", *, settings: ClientSettings | None = None, api_key: str | None = None
    ) -> None:
        self._settings = settings or ClientSettings()
        self._auth = auth_metadata(api_key)
        self._channel = blocking_channel(
            target, self._settings, options=channel_options(self._settings, IDEMPOTENT_METHODS)
        )
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def _invoke(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(self._stub, method)(
                request,
                timeout=timeout if timeout is not None else self._settings.default_deadline_s,
                metadata=((REQUEST_ID_HEADER, new_request_id()), *self._auth),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _stream(self, method: str, request: Any, timeout: float | None) -> Iterator[Any]:
        call = getattr(self._stub, method)(
            request, timeout=timeout, metadata=((REQUEST_ID_HEADER, new_request_id()), *self._auth)
        )

        def events() -> Iterator[Any]:
            try:
                yield from call
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None
            finally:
                call.cancel()  # the caller stopped reading: end the call on the server too

        return events()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MemosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
