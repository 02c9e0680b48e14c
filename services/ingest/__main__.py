"""Entry point: ``python -m services.ingest``."""

from __future__ import annotations

import asyncio

from services.ingest.app import build_server
from services.ingest.settings import IngestSettings
from shared.logs import configure_logging
from shared.server import serve_forever
from shared.telemetry import setup_tracing


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level, settings.log_format)
    setup_tracing("memos-ingest")
    asyncio.run(serve_forever([build_server(settings)]))


if __name__ == "__main__":
    main()
