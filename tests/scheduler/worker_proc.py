"""A remote worker process for the kill tests (started by :func:`tests.scheduler.procs.start_worker`).

    python -m tests.scheduler.worker_proc ADDRESS RECORD LABEL [--max-in-flight N] [--slow CONTENT] [--go PATH]

Handles LABEL through the SDK's ``register_handlers`` and appends one line per event to RECORD
(``start ITEM ATTEMPT`` when the handler begins, ``done ITEM ATTEMPT`` when it returns, so
before the ack is sent). The first attempt of the message whose content is CONTENT sleeps
for an hour: the test kills the process while it does. With ``--go``, it starts (imports,
channel) at once but subscribes only when PATH exists, so a test can start its workers while
the scheduler starts. Writes ``ready`` once subscribed, then runs until killed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from memos.client.scheduler import ScheduledMessage, SchedulerClient


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("record")
    p.add_argument("label")
    p.add_argument("--max-in-flight", type=int, default=1)
    p.add_argument("--slow", default="")
    p.add_argument("--go", default="")
    args = p.parse_args()
    # O_APPEND writes straight to the kernel: a SIGKILL loses none of the lines written.
    fd = os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def handle(msg: ScheduledMessage) -> None:
        os.write(fd, f"start {msg.item_id} {msg.attempt} {time.time():.6f}\n".encode())
        if args.slow and msg.content == args.slow and msg.attempt == 1:
            time.sleep(3600)
        os.write(fd, f"done {msg.item_id} {msg.attempt} {time.time():.6f}\n".encode())

    client = SchedulerClient(args.address)
    while args.go and not os.path.exists(args.go):
        time.sleep(0.01)
    worker = client.register_handlers({args.label: handle}, max_in_flight=args.max_in_flight, wait_s=30)
    if not worker.subscribed.is_set():
        raise SystemExit(f"could not subscribe: {worker.error}")
    os.write(fd, b"ready\n")
    threading.Event().wait()


if __name__ == "__main__":
    main()
