"""The seed's example 5 (memory scheduling), verbatim: custom handlers, add, five chats.

It registers handlers for ``query`` and ``mem_update``, adds a conversation with
``add_handler``, chats five times through ``chat_stream_playground`` and stops the
scheduler. Every chat must reach the custom query handler (which re-submits the
message as ``mem_update``), the update handler must retrieve memories, and every
answer must be non-empty and drawn from the conversation (no LLM is configured, so
the answer is made of retrieved memories, marked as such).

Run twice: with nothing configured (the facade starts the suite in-process) and
against ``make run``'s processes, with the handlers in the example's process reached
over the scheduler's Subscribe stream.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from examples.seed_blocks import python_blocks
from tests.conftest import SEED_FILE, free_port
from tests.e2e.launcher import launch_suite

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLE_5 = 6  # block number: example 2 has two blocks
QUESTIONS = [
    "What's my dog's name again?",
    "Can you remind me what breed Max is?",
    "What treats does Max like?",
    "Where did I say I live?",
    "What food should I avoid due to allergy?",
]
# What each answer must contain: the fact the question asks for.
EXPECTED = ["Max", "golden retriever", "peanut butter", "Central Park", "nuts"]


@pytest.fixture(scope="module")
def example_5() -> str:
    if not SEED_FILE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"seed file missing at {SEED_FILE}")
        pytest.skip(f"seed file not found at {SEED_FILE} (set MEMOS_SEED_FILE)")
    block = python_blocks(SEED_FILE.read_text(encoding="utf-8"))[EXAMPLE_5 - 1]
    assert "chat_stream_playground" in block and "register_handlers" in block
    return block


def run(code: str, tmp_path: Path, env: dict[str, str]) -> str:
    # The example puts three folders up on sys.path; give it a path that has them.
    script = tmp_path / "examples" / "mem_scheduler" / "example_5.py"
    script.parent.mkdir(parents=True)
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500
    )
    assert proc.returncode == 0, f"example 5 failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def answers(stdout: str) -> list[str]:
    """The text after each 'Answer:' up to the next chat (or the end)."""
    parts = re.split(r"^Answer: ", stdout, flags=re.M)[1:]
    return [p.split("===== Chat Start =====")[0].strip() for p in parts]


def check_output(stdout: str) -> None:
    handled = re.findall(r"^\[scheduler\] User input query: (.*)$", stdout, flags=re.M)
    assert sorted(handled) == sorted(QUESTIONS), stdout[-3000:]
    retrieved = re.findall(r"^\[scheduler\] Retrieved memory: (.+)$", stdout, flags=re.M)
    # top_k=2 per mem_update, one mem_update per query.
    assert len(retrieved) == 2 * len(QUESTIONS), stdout[-3000:]
    got = answers(stdout)
    assert len(got) == len(QUESTIONS), stdout[-3000:]
    for answer, fact in zip(got, EXPECTED, strict=True):
        assert answer and fact in answer, (fact, answer)
        assert answer.startswith("No language model is configured")  # marked as retrieved memories


def test_example_5_embedded_with_nothing_configured(example_5: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MEMOS_GATEWAY_ADDR", "MEMOS_SCHEDULER_ADDR")}
    env.update(MEMOS_DATA_DIR=str(tmp_path / "data"), MEMOS_LOG_LEVEL="WARNING")
    check_output(run(example_5, tmp_path, env))
    assert (tmp_path / "data" / "scheduler.sqlite3").exists()


def test_example_5_against_the_running_suite(example_5: str, tmp_path: Path) -> None:
    scheduler = f"127.0.0.1:{free_port()}"
    gateway, proc, _ = launch_suite(tmp_path / "suite-data", MEMOS_SCHEDULER_LISTEN=scheduler)
    try:
        env = {**os.environ, "MEMOS_GATEWAY_ADDR": gateway, "MEMOS_SCHEDULER_ADDR": scheduler}
        check_output(run(example_5, tmp_path, env))
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "scheduler stopped (0)" in out
