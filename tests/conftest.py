"""Fixtures shared by the test tiers.

The integration suite runs the real textmem and gateway servers in-process on
ephemeral loopback ports, over real gRPC, on the embedded stores (SQLite,
Milvus Lite) and the real MiniLM embedder, loaded once per session.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memos.client import AsyncMemosClient
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.textmem.app import build_memory
from services.textmem.app import build_server as build_textmem
from services.textmem.embedders import Embedder, build_embedder
from services.textmem.memory import TextMemory
from services.textmem.settings import TextMemSettings
from shared.errors import Unavailable
from shared.server import GrpcServer


def _loopback_only(connect):  # type: ignore[no-untyped-def]
    """Wraps socket connects so that a test can reach loopback and nothing else.

    The SSRF tests feed private and public addresses to the fetcher and expect refusals; if a
    regression let one through, this turns the connection attempt into an error instead of a
    packet leaving the machine.
    """

    def guarded(sock, address, *args):  # type: ignore[no-untyped-def]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = str(address[0]).split("%", 1)[0]
            try:
                addrs = {ipaddress.ip_address(host)}
            except ValueError:
                addrs = {ipaddress.ip_address(i[4][0].split("%", 1)[0]) for i in socket.getaddrinfo(host, None)}
            if not all(
                a.is_loopback or (a.version == 6 and a.ipv4_mapped and a.ipv4_mapped.is_loopback) for a in addrs
            ):
                raise OSError(errno.ENETUNREACH, f"tests may reach loopback only, not {address[0]}")
        return connect(sock, address, *args)

    return guarded


socket.socket.connect = _loopback_only(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)  # type: ignore[method-assign]

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_FILE = Path(os.environ.get("MEMOS_SEED_FILE", REPO_ROOT.parent / "shared" / "seed" / "memos_examples.md"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultInjectingTextMemory(TextMemory):
    """The real TextMemory, with faults on demand for cubes named for them.

    Cubes whose id starts with ``slow-`` answer searches after ``slow_s``;
    ``down-`` cubes fail searches and adds with UNAVAILABLE. Everything else is untouched.
    """

    slow_s = 2.0

    def finish_search(self, cube_id, query, top_k, flt, dense, lexical=None, reads=None):  # type: ignore[no-untyped-def]
        if cube_id.startswith("slow-"):
            import time

            time.sleep(self.slow_s)
        if cube_id.startswith("down-"):
            raise Unavailable("injected outage", reason="INJECTED_OUTAGE")
        return super().finish_search(cube_id, query, top_k, flt, dense, lexical, reads)

    def add_messages(self, cube_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cube_id.startswith("down-"):
            raise Unavailable("injected outage", reason="INJECTED_OUTAGE")
        return super().add_messages(cube_id, *args, **kwargs)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The production default (ONNX Runtime; torch if it cannot run), one per test session."""
    return build_embedder(TextMemSettings())


@dataclass
class Suite:
    textmem: GrpcServer
    gateway: GrpcServer
    memory: TextMemory
    data_dir: Path

    @property
    def address(self) -> str:
        return self.gateway.address


async def start_suite(
    data_dir: Path, embedder: Embedder, textmem_overrides: dict | None = None, **gateway_overrides: object
) -> Suite:
    tm_settings = TextMemSettings(
        listen_addr="127.0.0.1:0", data_dir=data_dir, log_level="WARNING", **(textmem_overrides or {})
    )
    base = build_memory(tm_settings, embedder=embedder)
    memory = FaultInjectingTextMemory(base.graph, base.vectors, base.embedder)
    textmem = build_textmem(tm_settings, memory)
    await textmem.start()
    gw_settings = GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address, **gateway_overrides)
    gateway = build_gateway(gw_settings)
    await gateway.start()
    return Suite(textmem, gateway, memory, data_dir)


async def stop_suite(suite: Suite) -> None:
    await suite.gateway.stop(1.0)
    await suite.textmem.stop(1.0)


@pytest.fixture(scope="session")
async def suite(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> AsyncIterator[Suite]:
    s = await start_suite(tmp_path_factory.mktemp("suite"), embedder)
    yield s
    await stop_suite(s)


@pytest.fixture
async def client(suite: Suite) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(suite.address)
    yield c
    await c.close()


@pytest.fixture
def unique() -> str:
    """A fresh suffix so tests sharing the session suite never share cubes."""
    import uuid

    return uuid.uuid4().hex[:8]


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Prints the figures tests reported (tests/figures.py), so that `make test` shows them."""
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("figures reported by tests")
        for topic, line in FIGURES:
            terminalreporter.write_line(f"{topic}: {line}")
