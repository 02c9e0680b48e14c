"""Entry point: ``python -m services.scheduler``."""

from __future__ import annotations

import asyncio

from services.scheduler.app import build_server
from services.scheduler.settings import SchedulerSettings
from shared.logs import configure_logging
from shared.server import serve_forever
from shared.telemetry import setup_tracing


def main() -> None:
    settings = SchedulerSettings()
    configure_logging(settings.log_level, settings.log_format)
    setup_tracing("memos-scheduler")
    server = build_server(settings)
    asyncio.run(serve_forever([server]))


if __name__ == "__main__":
    main()
