"""The seed's examples 1 and 3, verbatim, against the suite as real processes.

The code blocks are read from the MemOS examples file itself (not copied into
the repository), written to files, and run with a plain ``python``:
- against ``make run``'s launcher (textmem and gateway processes), via
  MEMOS_GATEWAY_ADDR, which is how a deployed suite is used;
- with nothing set, where the facade starts the suite in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from examples.seed_blocks import python_blocks
from tests.conftest import SEED_FILE
from tests.e2e.launcher import launch_suite

pytestmark = pytest.mark.e2e

# Block numbers of the seed's Python code blocks (example 2 has two blocks).
EXAMPLE_1, EXAMPLE_3 = 1, 4


@pytest.fixture(scope="module")
def seed_blocks() -> list[str]:
    if not SEED_FILE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"seed file missing at {SEED_FILE}")
        pytest.skip(f"seed file not found at {SEED_FILE} (set MEMOS_SEED_FILE)")
    return python_blocks(SEED_FILE.read_text(encoding="utf-8"))


def run_example(code: str, tmp_path: Path, env: dict[str, str], name: str) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def search_data(stdout: str) -> dict:
    """The JSON the example prints after 'search_rsp:'."""
    tail = stdout.rsplit("search_rsp:", 1)[1]
    return json.loads(tail.strip())


def texts(data: dict, cube_id: str) -> list[str]:
    (bucket,) = [b for b in data["text_mem"] if b["cube_id"] == cube_id]
    return [m["memory"] for m in bucket["memories"]]


@pytest.fixture(scope="module")
def running_suite(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    gateway, proc, _ = launch_suite(tmp_path_factory.mktemp("suite-data"))
    yield gateway, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_example_1_against_the_running_suite(seed_blocks, running_suite, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gateway, _ = running_suite
    out = run_example(seed_blocks[EXAMPLE_1 - 1], tmp_path, {**os.environ, "MEMOS_GATEWAY_ADDR": gateway}, "example_1")
    assert "add_memories rsp" in out
    assert "stored with fast mode" in out  # fine mode without an LLM says so
    data = search_data(out)
    found = texts(data, "cube_test_user_1")
    assert found and "7 Days Inn" in found[0]
    assert [b["cube_id"] for b in data["pref_mem"]] == ["cube_test_user_1"]


def test_example_3_searches_both_cubes(seed_blocks, running_suite, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gateway, _ = running_suite
    out = run_example(seed_blocks[EXAMPLE_3 - 1], tmp_path, {**os.environ, "MEMOS_GATEWAY_ADDR": gateway}, "example_3")
    data = search_data(out)
    assert [b["cube_id"] for b in data["text_mem"]] == ["cube_test_user_3_1", "cube_test_user_3_2"]
    assert "7 Days Inn" in texts(data, "cube_test_user_3_1")[0]
    assert "I love you" in texts(data, "cube_test_user_3_2")[0]


def test_suite_stops_cleanly_on_ctrl_c(running_suite) -> None:  # type: ignore[no-untyped-def]
    _, proc = running_suite
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "gateway stopped (0)" in out and "textmem stopped (0)" in out


def test_example_1_embedded_with_nothing_configured(seed_blocks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "MEMOS_GATEWAY_ADDR"}
    env["MEMOS_DATA_DIR"] = str(tmp_path / "data")
    out = run_example(seed_blocks[EXAMPLE_1 - 1], tmp_path, env, "example_1_embedded")
    assert "7 Days Inn" in texts(search_data(out), "cube_test_user_1")[0]
    assert (tmp_path / "data" / "graph.sqlite3").exists()
