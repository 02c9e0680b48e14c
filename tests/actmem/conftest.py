"""Fixtures of the actmem tests: a tiny random Qwen3 model built offline, its backend
(loaded once), and actmem servers on loopback ports over real gRPC.

``MEMOS_TEST_DEVICE=cuda`` (or ``cuda:<n>``) runs the same tests with the model and
the resident caches on a GPU; the default is ``cpu``. The tests' backends are float32
on every device: the exactness tolerances are float32 ones (bfloat16 is what
``benchmarks/gpu_check_actmem.py`` and ``bench_actmem.py`` measure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos.client.actmem import ActMemClient, EmbeddedActMem
from services.actmem.app import build_memory
from services.actmem.backends.transformers_backend import TransformersBackend
from services.actmem.memory import ActMemory
from services.actmem.settings import ActMemSettings
from tools.tiny_model import build as build_tiny_model

# Validated like the service's own MEMOS_DEVICE (cpu, cuda, cuda:<n>).
DEVICE = ActMemSettings(model_path="unused", device=os.environ.get("MEMOS_TEST_DEVICE", "cpu")).device


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, other weights: caches of one are not valid for the other."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-other"), seed=1)


@pytest.fixture(scope="session")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(str(tiny_model_dir), device=DEVICE, dtype="float32")


@pytest.fixture(scope="session")
def other_backend(other_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(str(other_model_dir), device=DEVICE, dtype="float32")


MemoryFactory = Callable[..., tuple[ActMemory, ActMemSettings]]


@pytest.fixture
def make_memory(tmp_path: Path, backend: TransformersBackend) -> MemoryFactory:
    """A fresh ActMemory (own store, dump root) over the shared backend."""

    def make(backend_: TransformersBackend | None = None, **overrides: object) -> tuple[ActMemory, ActMemSettings]:
        settings = ActMemSettings(
            listen_addr="127.0.0.1:0",
            model_path="unused",
            data_dir=tmp_path / "data",
            dump_root=tmp_path / "dumps",
            log_level="WARNING",
            **{"chunk_bytes": 4096, **overrides},
        )
        return build_memory(settings, backend=backend_ or backend), settings

    return make


class Service:
    def __init__(self, memory: ActMemory, settings: ActMemSettings) -> None:
        self.memory = memory
        self.settings = settings
        self.embedded = EmbeddedActMem(settings, memory=memory)
        self.address = self.embedded.start()
        self.client = ActMemClient(self.address, chunk_bytes=settings.chunk_bytes)

    def stop(self) -> None:
        self.client.close()
        self.embedded.stop()


@pytest.fixture
def service(make_memory: MemoryFactory) -> Iterator[Service]:
    """actmem over real gRPC on a loopback port (small chunks, so streams have many)."""
    s = Service(*make_memory())
    yield s
    s.stop()


@pytest.fixture
def make_service(make_memory: MemoryFactory) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def make(**overrides: object) -> Service:
        s = Service(*make_memory(**overrides))
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
