"""Settings of the scheduler service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import ClientSettings, ServerSettings, default_data_dir


class SchedulerSettings(ServerSettings, ClientSettings):
    listen_addr: str = "127.0.0.1:50055"
    """host:port to listen on."""

    data_dir: Path = Field(default_factory=default_data_dir)
    """Root of the embedded queue (data_dir/scheduler.sqlite3) when no Redis is configured."""

    redis_url: str = ""
    """Redis (Streams) queue, e.g. redis://127.0.0.1:6379/0; empty uses the embedded SQLite queue."""

    redis_prefix: str = "memos:sched"
    """Prefix of every Redis key of the queue (several deployments may share one Redis)."""

    queue_max_pending: int = Field(default=100_000, ge=1)
    """Messages pending or running at once; a submit past it gets RESOURCE_EXHAUSTED."""

    queue_max_attempts: int = Field(default=5, ge=1, le=1000)
    """Deliveries of a failing message before it is dead-lettered."""

    queue_lookahead: bool = True
    """Redis queue: when a worker stream gets a group's head, also lease the group's next message and
    send it the moment the head is acked (the worker does not wait for Redis in between). One
    message per group goes ahead of the queue's order, never past a waiting message of higher
    priority. False: strict queue order (priority, then submission) across groups."""

    visibility_timeout_s: float = Field(default=60.0, gt=0.0)
    """How long a worker may hold a message without ack or nack before it is redelivered."""

    task_retention_s: float = Field(default=7 * 24 * 3600.0, gt=0.0)
    """How long a done task (with its message body) is kept after it finished, for GetTask and to
    make resubmitting its item id a no-op; then it is purged. Without a bound the queue's store (the
    SQLite file, Redis memory) grows with every message ever handled, and bodies hold user content."""

    dead_letter_retention_s: float = Field(default=30 * 24 * 3600.0, gt=0.0)
    """How long a dead-lettered or failed task is kept (for ListDeadLetters, ReplayDeadLetters and a
    look at its error) before it is purged; longer than ``task_retention_s``: an operator needs time
    to notice, fix and replay."""

    wait_for_tasks_max_s: float = Field(default=3600.0, gt=0.0)
    """Longest one WaitForTasks call waits, whatever its timeout or deadline (the reply says
    ``capped`` when this ended it)."""

    max_content_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest content of one message (UTF-8 bytes)."""

    max_messages_per_submit: int = Field(default=10_000, ge=1)
    """Messages one SubmitMessages may carry."""

    max_in_flight_per_worker: int = Field(default=256, ge=1)
    """Upper bound of a subscription's max_in_flight."""

    poll_interval_s: float = Field(default=0.2, gt=0.0)
    """How often an idle subscription looks for due work besides being woken by submits
    (leases that ran out, work submitted through another replica)."""

    extra_labels: list[str] = Field(default_factory=list)
    """User-defined labels accepted from the start (JSON list), besides those workers register."""

    textmem_addr: str = ""
    """Where textmem listens, for the built-in handlers (working memory); empty disables them."""

    ingest_addr: str = ""
    """Where ingest listens, for the built-in ``mem_read`` handler (refines async adds with fine
    extraction); empty: async adds keep their fast memories."""

    builtin_handlers: bool = True
    """Run the built-in ``query``, ``mem_update`` and ``mem_read`` handlers (as a fallback worker: a worker that
    subscribes to one of these labels takes it over, on this replica)."""

    builtin_concurrency: int = Field(default=8, ge=1, le=256)
    """Messages the built-in handlers work on at once (each mostly waits on textmem, ingest or an LLM)."""

    working_memory_top_k: int = Field(default=5, ge=1, le=100)
    """Memories a ``mem_update`` retrieves for the query before the earlier working memory."""

    working_memory_capacity: int = Field(default=20, ge=1, le=1000)
    """Most WorkingMemory items a ``mem_update`` keeps per cube (textmem bounds it too)."""
