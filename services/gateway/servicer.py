"""GatewayService servicer: authenticates the caller, then hands the call to :class:`Gateway`
with the call's remaining time."""

from __future__ import annotations

from memos.gateway.v1 import gateway_pb2_grpc
from services.gateway.auth import Authenticator
from services.gateway.chat import ChatService
from services.gateway.core import Gateway
from services.gateway.export import UserDataExport
from services.gateway.limits import RateLimiter
from services.gateway.validation import check_request


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        gateway: Gateway,
        chat: ChatService,
        auth: Authenticator | None = None,
        limiter: RateLimiter | None = None,
        export: UserDataExport | None = None,
    ) -> None:
        self._gw = gateway
        self._chat = chat
        self._export = export or UserDataExport(gateway)
        self._auth = auth or Authenticator(None)
        self._limiter = limiter or RateLimiter(0, 1)

    async def _admit(self, request, context) -> None:  # type: ignore[no-untyped-def]
        """Who is calling (API key or JWT), whether they are within their request rate, and whether
        the request's values can be stored at all (timestamps in range, finite numbers)."""
        # Awaited in the handler's own task, so the principal it sets is the handler's.
        await self._auth.authenticate(context.invocation_metadata())
        self._limiter.check(request.user_id)
        check_request(request)

    async def AddMemories(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.add(request, context.time_remaining())

    async def SearchMemories(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.search(request, context.time_remaining())

    async def GetMemory(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.get(request, context.time_remaining())

    async def ListMemories(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.list(request, context.time_remaining())

    async def UpdateMemory(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.update(request, context.time_remaining())

    async def DeleteMemories(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.delete(request, context.time_remaining())

    async def CreateCube(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.create_cube(request, context.time_remaining())

    async def ListCubes(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.list_cubes(request, context.time_remaining())

    async def ShareCube(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.share_cube(request, context.time_remaining())

    async def DeleteCube(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.delete_cube(request, context.time_remaining())

    async def DeleteUserData(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        return await self._gw.delete_user_data(request, context.time_remaining())

    async def ExportUserData(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        async for record in self._export.export(request, context.time_remaining()):
            yield record

    async def Chat(self, request, context):  # type: ignore[no-untyped-def]
        await self._admit(request, context)
        async for event in self._chat.chat(request, context.time_remaining()):
            yield event
