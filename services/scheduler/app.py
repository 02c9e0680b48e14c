"""Assembles the scheduler from its settings: queue, servicer, server."""

from __future__ import annotations

from memos.scheduler.v1 import scheduler_pb2_grpc
from services.scheduler.builtin import BuiltinHandlers
from services.scheduler.queue import QueueLimits, SqliteTaskQueue, TaskQueue
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.settings import SchedulerSettings
from shared.metrics import SCHEDULER_DEAD_LETTERS, SCHEDULER_QUEUE_DEPTH, Reading
from shared.server import GrpcServer, ServiceBinding

SERVICE_NAME = "memos.scheduler.v1.SchedulerService"


def build_queue(settings: SchedulerSettings) -> TaskQueue:
    limits = QueueLimits(
        max_pending=settings.queue_max_pending,
        max_attempts=settings.queue_max_attempts,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_content_bytes=settings.max_content_bytes,
        max_batch=settings.max_messages_per_submit,
        task_retention_s=settings.task_retention_s,
        dead_letter_retention_s=settings.dead_letter_retention_s,
    )
    queue: TaskQueue
    if settings.redis_url:
        # Imported here: only deployments on Redis need the client.
        from services.scheduler.queue.redis_streams import RedisTaskQueue

        queue = RedisTaskQueue(settings.redis_url, limits, prefix=settings.redis_prefix)
    else:
        queue = SqliteTaskQueue(settings.data_dir / "scheduler.sqlite3", limits)
    for label in settings.extra_labels:
        queue.register_label(label)
    return queue


def build_server(settings: SchedulerSettings, queue: TaskQueue | None = None) -> GrpcServer:
    queue = queue or build_queue(settings)
    servicer = SchedulerServicer(
        queue,
        poll_interval_s=settings.poll_interval_s,
        max_in_flight=settings.max_in_flight_per_worker,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_wait_s=settings.wait_for_tasks_max_s,
        lookahead=settings.queue_lookahead,
    )
    server = GrpcServer(
        name="scheduler",
        settings=settings,
        services=[
            ServiceBinding(
                SERVICE_NAME, lambda s: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, s)
            )
        ],
        on_stop=[queue.aclose],
    )
    if settings.metrics_addr:
        _observe_queue(server, queue)
    if settings.builtin_handlers and settings.textmem_addr:
        builtin = BuiltinHandlers(
            settings.textmem_addr,
            settings,
            ingest_addr=settings.ingest_addr,
            top_k=settings.working_memory_top_k,
            capacity=settings.working_memory_capacity,
            concurrency=settings.builtin_concurrency,
        )
        server.on_start.append(lambda srv: builtin.start(srv.address))
        server.before_stop.append(builtin.stop)
    return server


def _observe_queue(server: GrpcServer, queue: TaskQueue) -> None:
    """Queue depth and dead letters as gauges, read from the queue at scrape time."""
    depth = Reading(queue.depth)
    dead = Reading(queue.dead_letter_count)

    def depth_points():  # type: ignore[no-untyped-def]
        for label, (pending, running) in sorted(depth().items()):
            yield pending, {"label": label, "state": "pending"}
            yield running, {"label": label, "state": "running"}

    removers = [
        SCHEDULER_QUEUE_DEPTH.add(depth_points),
        SCHEDULER_DEAD_LETTERS.add(lambda: [(dead(), {})]),
    ]
    # Before queue.close: a scrape must not read a closed queue.
    server.on_stop[:0] = [*removers, depth.close, dead.close]
