"""A real redis-server (Debian's package) on a free loopback port, for tests.

:func:`start_redis` runs it in a temporary directory, with persistence off unless asked
(``appendonly=True`` gives the durability tests an AOF with ``appendfsync always``).
Without the binary, tests skip, or fail when the environment variable CI is set, so CI
always runs the Redis backend.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen
    appendonly: bool

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def restart(self) -> None:
        """Starts a new server on the same port and directory (the AOF is replayed)."""
        self.stop()
        self.process = _spawn(self.port, self.directory, self.appendonly)
        _wait_ready(self.port, self.process)


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def require_redis() -> str:
    binary = redis_binary()
    if binary is None:
        msg = "redis-server is not installed (apt-get install redis-server, or tools/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return binary


def _spawn(port: int, directory: Path, appendonly: bool) -> subprocess.Popen:
    args = [
        require_redis(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    args += ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not become ready")


def start_redis(appendonly: bool = False) -> RedisServer:
    require_redis()
    directory = Path(tempfile.mkdtemp(prefix="memos-redis-"))
    port = _free_port()
    process = _spawn(port, directory, appendonly)
    _wait_ready(port, process)
    return RedisServer(port, directory, process, appendonly)


def stop_redis(server: RedisServer) -> None:
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
