"""The whole suite in this process, for a laptop with nothing else installed.

:class:`EmbeddedSuite` starts textmem, ingest, the scheduler and the gateway as real gRPC servers on
loopback ports in a background thread (their own event loop), on the
embedded defaults (Milvus Lite, SQLite) under ``MEMOS_DATA_DIR``. Clients then
talk to it over gRPC exactly as they would to a deployed gateway: there is no
second code path that skips the contracts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

from shared.settings import default_data_dir

log = logging.getLogger(__name__)


class EmbeddedSuite:
    def __init__(self, data_dir: Path | str | None = None, *, startup_timeout_s: float = 300.0) -> None:
        self.data_dir = Path(data_dir or os.environ.get("MEMOS_DATA_DIR") or default_data_dir())
        self._timeout = startup_timeout_s
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.gateway_address = ""
        self.textmem_address = ""
        self.ingest_address = ""
        self.scheduler_address = ""

    def start(self) -> str:
        """Starts the services (once) and returns the gateway's address."""
        if self._thread is not None:
            return self.gateway_address
        self._thread = threading.Thread(target=self._run, name="memos-embedded", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError("the embedded memos suite did not start in time")
        if self._error is not None:
            raise self._error
        return self.gateway_address

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from services.gateway.app import build_server as build_gateway
        from services.gateway.settings import GatewaySettings
        from services.ingest.app import build_server as build_ingest
        from services.ingest.settings import IngestSettings
        from services.scheduler.app import build_server as build_scheduler
        from services.scheduler.settings import SchedulerSettings
        from services.textmem.app import build_server as build_textmem
        from services.textmem.settings import TextMemSettings

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        textmem = build_textmem(TextMemSettings(listen_addr="127.0.0.1:0", data_dir=self.data_dir))
        await textmem.start()
        self.textmem_address = textmem.address
        ingest = build_ingest(IngestSettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address))
        await ingest.start()
        self.ingest_address = ingest.address
        scheduler = build_scheduler(
            SchedulerSettings(
                listen_addr="127.0.0.1:0",
                data_dir=self.data_dir,
                textmem_addr=textmem.address,
                ingest_addr=ingest.address,
            )
        )
        await scheduler.start()
        self.scheduler_address = scheduler.address
        gateway = build_gateway(
            GatewaySettings(
                listen_addr="127.0.0.1:0",
                textmem_addr=textmem.address,
                ingest_addr=ingest.address,
                scheduler_addr=scheduler.address,
            )
        )
        await gateway.start()
        self.gateway_address = gateway.address
        self._ready.set()
        await self._stop.wait()
        await gateway.stop(2.0)
        await scheduler.stop(2.0)
        await ingest.stop(2.0)
        await textmem.stop(2.0)

    def stop(self) -> None:
        """Stops the services gracefully and waits for them."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # loop already closed
            pass
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> EmbeddedSuite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
