"""Starts ``make run``'s launcher (tools/run_suite.py) on free loopback ports for e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT, free_port


def launch_suite(data_dir: Path, drop: tuple[str, ...] = (), **extra_env: str) -> tuple[str, subprocess.Popen, str]:
    """Runs the suite as processes, without the ``drop`` variables; returns the gateway address,
    the launcher and its start-up output."""
    gateway = f"127.0.0.1:{free_port()}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in drop},
        "MEMOS_DATA_DIR": str(data_dir),
        "MEMOS_GATEWAY_LISTEN": gateway,
        "MEMOS_TEXTMEM_LISTEN": f"127.0.0.1:{free_port()}",
        "MEMOS_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
        "MEMOS_SCHEDULER_LISTEN": f"127.0.0.1:{free_port()}",
        "MEMOS_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tools" / "run_suite.py")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "suite ready" in line:
            break
    startup = "".join(lines)
    assert "suite ready" in startup, startup
    return gateway, proc, startup
