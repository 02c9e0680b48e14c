"""The gateway's view of the scheduler: submits events, raising :mod:`shared.errors`."""

from __future__ import annotations

import grpc

from memos.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from shared.channels import open_channel
from shared.grpc_errors import from_rpc_error
from shared.settings import ClientSettings

# Submits carry a request id and item ids, so the scheduler stores a retried one once; a purge
# repeated removes what is left; a listing only reads.
_IDEMPOTENT = [
    "/memos.scheduler.v1.SchedulerService/SubmitMessages",
    "/memos.scheduler.v1.SchedulerService/PurgeTasks",
    "/memos.scheduler.v1.SchedulerService/ListUserTasks",
]


class SchedulerClient:
    def __init__(self, target: str, settings: ClientSettings) -> None:
        self._channel = open_channel(target, settings=settings, idempotent_methods=_IDEMPOTENT)
        self.stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    async def submit(self, request: scheduler_pb2.SubmitMessagesRequest, timeout: float | None) -> list[str]:
        try:
            resp = await self.stub.SubmitMessages(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return list(resp.item_ids)

    async def purge(
        self, request: scheduler_pb2.PurgeTasksRequest, timeout: float | None
    ) -> scheduler_pb2.PurgeTasksResponse:
        try:
            return await self.stub.PurgeTasks(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def list_user_tasks(
        self, request: scheduler_pb2.ListUserTasksRequest, timeout: float | None
    ) -> scheduler_pb2.ListUserTasksResponse:
        try:
            return await self.stub.ListUserTasks(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()
