"""The Go and TypeScript clients compile and their quickstart examples run against a real gateway.

Each example creates two cubes, adds a conversation to both, searches both and decodes the
``ErrorInfo`` of a deliberately bad call; it exits non-zero when anything is off. The suite is
the session one (in-process gateway and textmem on loopback), so the examples run as
subprocesses driven from the event loop the servers live on.

Needs go, node and npm, and the tools ``tools/gen_clients.sh --tools`` installs (``make setup``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, Suite

GO_DIR = REPO_ROOT / "clients" / "go"
TS_DIR = REPO_ROOT / "clients" / "ts"
BUILD_TIMEOUT_S = 240
RUN_TIMEOUT_S = 90


def _tool(name: str, fallback: str | None = None) -> str:
    found = shutil.which(name) or (fallback if fallback and os.access(fallback, os.X_OK) else None)
    if not found:
        pytest.fail(f"{name} is not installed; the polyglot client tests need it")
    return found


async def _start(*argv: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def _finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str]:
    """Waits for a command without blocking the loop the suite serves on; returns (exit code, output)."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, f"timed out after {timeout}s\n" + out.decode(errors="replace")
    return proc.returncode or 0, out.decode(errors="replace")


class Builds:
    """Both quickstarts, compiling in the background (while the suite starts)."""

    def __init__(self, go: asyncio.subprocess.Process, ts: asyncio.subprocess.Process, go_binary: Path) -> None:
        self._procs = {"go": go, "ts": ts}
        self._commands = {
            "go": [str(go_binary)],
            "ts": [_tool("node"), str(TS_DIR / "dist" / "examples" / "quickstart.js")],
        }
        self._results: dict[str, tuple[int, str]] = {}

    async def command(self, language: str) -> list[str]:
        if language not in self._results:
            self._results[language] = await _finish(self._procs[language], BUILD_TIMEOUT_S)
        rc, out = self._results[language]
        assert rc == 0, f"building the {language} quickstart failed:\n{out}"
        return self._commands[language]


@pytest.fixture(scope="module")
async def builds(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Builds]:
    go = _tool("go", "/usr/local/go/bin/go")
    npm = _tool("npm")
    if not (TS_DIR / "node_modules" / ".bin" / "protoc-gen-ts_proto").exists():
        pytest.fail("clients/ts/node_modules is missing; run tools/gen_clients.sh --tools (make setup)")
    binary = tmp_path_factory.mktemp("go") / "quickstart-go"
    go_build = await _start(go, "build", "-o", str(binary), "./examples/quickstart", cwd=GO_DIR)
    # Generates src/gen from protos/ with buf, then runs tsc.
    ts_build = await _start(npm, "run", "--silent", "build", cwd=TS_DIR)
    yield Builds(go_build, ts_build, binary)
    for proc in (go_build, ts_build):  # tests deselected or failed early: no stray compilers
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


@pytest.mark.parametrize("language", ["go", "ts"])
async def test_quickstart_example_runs_against_the_gateway(builds: Builds, suite: Suite, language: str) -> None:
    # builds comes first: the compilers run while the suite starts.
    command = await builds.command(language)
    suffix = uuid.uuid4().hex[:8]
    user = f"{language}-user-{suffix}"
    proc = await _start(
        *command,
        "--addr",
        suite.address,
        "--user",
        user,
        "--suffix",
        suffix,
        cwd=REPO_ROOT,
    )
    rc, out = await _finish(proc, RUN_TIMEOUT_S)
    assert rc == 0, f"{language} quickstart exited {rc}:\n{out}"
    # Both cubes were created, written and searched, each with its own hits.
    for cube in (f"travel-{suffix}", f"work-{suffix}"):
        assert f"cube {cube} owner={user}" in out, out
        hits = [line for line in out.splitlines() if line.startswith(f"hit cube={cube} ")]
        assert hits and any("7 Days Inn" in line for line in hits), out
    # The deliberately bad call's google.rpc.Status was decoded down to its ErrorInfo.
    assert "reason=CUBE_NOT_FOUND domain=memos.dev" in out, out
    assert f"no-such-cube-{suffix}" in out, out
    assert out.rstrip().endswith("quickstart: ok"), out

    # What the example wrote is there for every client: the Python SDK reads it back.
    from memos.client import AsyncMemosClient

    async with AsyncMemosClient(suite.address) as py:
        res = await py.search_memories(user, [f"travel-{suffix}"], "Which hotel did I pick?")
    assert any("7 Days Inn" in m.item.memory for m in res.ranked)
