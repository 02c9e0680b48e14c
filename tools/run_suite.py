"""Runs the memos suite as real processes on embedded defaults (``make run``).

textmem on 127.0.0.1:50052, ingest on 127.0.0.1:50053, the scheduler on
127.0.0.1:50055, the gateway on 127.0.0.1:50051 (override with MEMOS_GATEWAY_LISTEN /
MEMOS_TEXTMEM_LISTEN / MEMOS_INGEST_LISTEN / MEMOS_SCHEDULER_LISTEN). Waits for each service's health
check before starting the next; Ctrl-C or SIGTERM stops them in reverse order,
each draining its in-flight calls. The launcher lives in :mod:`memos.cli.serve`
(``memos serve`` runs the same code).
"""

from __future__ import annotations

import sys

from memos.cli.serve import ServeError, run_suite


def main() -> int:
    try:
        return run_suite()
    except ServeError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
