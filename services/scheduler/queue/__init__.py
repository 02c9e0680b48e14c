"""Task queue backends behind one interface (:class:`TaskQueue`)."""

from services.scheduler.queue.base import (
    BUILTIN_LABELS,
    Delivery,
    HeldDelivery,
    Message,
    PurgeCounts,
    QueueLimits,
    Task,
    TaskQueue,
    TaskState,
    Verdict,
)
from services.scheduler.queue.sqlite import SqliteTaskQueue

__all__ = [
    "BUILTIN_LABELS",
    "Delivery",
    "HeldDelivery",
    "Message",
    "PurgeCounts",
    "QueueLimits",
    "SqliteTaskQueue",
    "Task",
    "TaskQueue",
    "TaskState",
    "Verdict",
]
