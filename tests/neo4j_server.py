"""A real Neo4j 5 Community server for the tests that need one.

``neo4j_server()`` starts one server per test process on a free loopback port
(``tools/neo4j/start.sh``: an embedded Neo4j from Maven Central, auth disabled,
data in a temporary directory), builds the launcher first if needed, and stops
it at exit. The server also stops by itself when the test process dies (it
watches our pid), so a killed run leaves nothing behind.

``MEMOS_TEST_NEO4J_URI`` (with ``MEMOS_TEST_NEO4J_USER``/``_PASSWORD``/
``_DATABASE``) points the tests at a server of your own instead. Tests WIPE
that database (``MATCH (n) DETACH DELETE n``): never point it at one holding
data you want.

Where no server can be had (no Java, no Maven, no network for the first
build), the tests that need one are skipped with the reason, or fail when
``CI`` is set, so CI never passes without having run them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO_ROOT / "tools" / "neo4j" / "start.sh"
BUILD_TIMEOUT_S = float(os.environ.get("MEMOS_TEST_NEO4J_BUILD_TIMEOUT_S", "900"))
START_TIMEOUT_S = float(os.environ.get("MEMOS_TEST_NEO4J_START_TIMEOUT_S", "180"))


@dataclass
class Neo4jServer:
    uri: str
    user: str = ""
    password: str = ""
    database: str = "neo4j"
    pid: int | None = None
    data_dir: Path | None = None
    _driver: Any = field(default=None, repr=False)

    def wipe(self) -> None:
        """Deletes every node and relationship (schema stays), for a test that needs an empty store."""
        if self._driver is None:
            from neo4j import GraphDatabase

            self._driver = GraphDatabase.driver(self.uri, auth=(self.user, self.password) if self.user else None)
        self._driver.execute_query("MATCH (n) DETACH DELETE n", database_=self.database)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None


_lock = threading.Lock()
_server: Neo4jServer | None = None
_failure: str | None = None
_built = False


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Neo4j is required in CI: {reason}", pytrace=False)
    pytest.skip(f"no Neo4j server: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_built() -> None:
    """Builds tools/neo4j/target if it is missing or stale (first time: Maven downloads Neo4j)."""
    global _built, _failure
    with _lock:
        if _built or _failure or os.environ.get("MEMOS_TEST_NEO4J_URI"):
            return
        for tool in ("java", "mvn"):
            if shutil.which(tool) is None:
                _failure = f"{tool} not found (Java 17+ and Maven build and run the test server)"
                return
        try:
            subprocess.run(
                [str(START_SCRIPT), "--build-only"],
                check=True,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as exc:
            _failure = f"building tools/neo4j failed: {(exc.stderr or exc.stdout or '')[-2000:]}"
        except subprocess.TimeoutExpired:
            _failure = f"building tools/neo4j took more than {BUILD_TIMEOUT_S:.0f}s"
        else:
            _built = True


def neo4j_server() -> Neo4jServer:
    """The test process's Neo4j server, started on first use; skips (fails under CI) if there is none."""
    global _server, _failure
    ensure_built()
    with _lock:
        if _server is None and _failure is None:
            try:
                _server = _external() or _start()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _failure = str(exc)
        if _failure is not None:
            _unavailable(_failure)
        assert _server is not None
        return _server


def _external() -> Neo4jServer | None:
    uri = os.environ.get("MEMOS_TEST_NEO4J_URI")
    if not uri:
        return None
    return Neo4jServer(
        uri,
        os.environ.get("MEMOS_TEST_NEO4J_USER", ""),
        os.environ.get("MEMOS_TEST_NEO4J_PASSWORD", ""),
        os.environ.get("MEMOS_TEST_NEO4J_DATABASE", "neo4j"),
    )


def _start() -> Neo4jServer:
    port = _free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="memos-neo4j-"))
    env = {**os.environ, "MEMOS_NEO4J_WATCH_PID": str(os.getpid()), "NEO4J_START_TIMEOUT_S": str(int(START_TIMEOUT_S))}
    started = time.monotonic()
    proc = subprocess.run(
        [str(START_SCRIPT), str(port), str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=START_TIMEOUT_S + 30,
    )
    if proc.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise RuntimeError(f"tools/neo4j/start.sh failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    pid = int((data_dir / "neo4j.pid").read_text().strip())
    server = Neo4jServer(f"bolt://127.0.0.1:{port}", pid=pid, data_dir=data_dir)
    atexit.register(stop_server)
    print(f"\nneo4j: started {server.uri} in {time.monotonic() - started:.1f}s (pid {pid})")
    return server


def stop_server() -> None:
    """Stops the server this process started (if any) and removes its data."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is None:
        return
    server.close()
    if server.pid is None:
        return
    try:
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # the data is thrown away: no need to wait for a checkpoint
        while time.monotonic() < deadline and _alive(server.pid):
            time.sleep(0.1)
        if _alive(server.pid):
            os.kill(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if server.data_dir is not None:
        shutil.rmtree(server.data_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
