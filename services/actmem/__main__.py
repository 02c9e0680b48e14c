"""Entry point: ``python -m services.actmem``."""

from __future__ import annotations

import asyncio

from services.actmem.app import build_server
from services.actmem.settings import ActMemSettings
from shared.logs import configure_logging
from shared.server import serve_forever
from shared.telemetry import setup_tracing


def main() -> None:
    settings = ActMemSettings()
    configure_logging(settings.log_level, settings.log_format)
    setup_tracing("memos-actmem")
    server = build_server(settings)
    asyncio.run(serve_forever([server]))


if __name__ == "__main__":
    main()
