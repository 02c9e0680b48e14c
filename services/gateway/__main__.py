"""Entry point: ``python -m services.gateway``."""

from __future__ import annotations

import asyncio

from services.gateway.app import build_server
from services.gateway.settings import GatewaySettings
from shared.logs import configure_logging
from shared.server import serve_forever
from shared.telemetry import setup_tracing


async def _main(settings: GatewaySettings) -> None:
    # The textmem channel must be created inside the running loop.
    await serve_forever([build_server(settings)])


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_format)
    setup_tracing("memos-gateway")
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
