"""The ``memos`` CLI as a shell user runs it: subprocesses against a real suite on loopback.

The session suite (textmem + gateway, in-process on this event loop) answers the
commands, so each command runs in a thread (``asyncio.to_thread``) while the loop
serves. ``serve`` starts real service processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(300)

FIXTURES = Path(__file__).parent / "fixtures"


def _env(user: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MEMOS_GATEWAY_ADDR", "MEMOS_USER")}
    return {**env, "MEMOS_USER": user, "MEMOS_LOG_LEVEL": "WARNING", **extra}


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memos.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def memos(suite, user: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Runs ``memos --addr <suite> ARGS`` as ``user`` while the suite keeps serving on this loop."""
    return await asyncio.to_thread(_run, ["--addr", suite.address, *args], _env(user), stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("memos: "), lines
    return lines[0]


async def test_add_then_search_round_trip(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-cube-{unique}"
    added = await memos(suite, user, "add", "-c", cube, "I keep three beehives on my roof in Oslo")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added 1 memory to {cube}")
    found = await memos(suite, user, "search", "beehives Oslo", "-c", cube)
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0].split("\t")
    assert first[1] == cube and "three beehives" in first[2]


async def test_json_output_parses(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-cube-{unique}"
    messages = json.dumps([{"role": "user", "content": "My favourite tea is genmaicha"}])
    added = await memos(suite, user, "add", "-c", cube, "--messages", "-", "--json", stdin=messages)
    assert added.returncode == 0, added.stderr
    body = json.loads(added.stdout)
    assert len(body["memories"]) == 1 and body["memories"][0]["cube_id"] == cube and body["part_errors"] == []
    found = await memos(suite, user, "--json", "search", "which tea", "-c", cube, "-k", "3")
    data = json.loads(found.stdout)
    assert data["ranked"][0]["id"] == body["memories"][0]["memory_id"]
    assert "genmaicha" in data["ranked"][0]["memory"]
    assert data["cubes"] == [{"cube_id": cube, "total": 1, "status": None}]


async def test_cubes_lifecycle(suite, unique) -> None:  # type: ignore[no-untyped-def]
    owner, friend, cube = f"cli-{unique}", f"cli-friend-{unique}", f"cli-shared-{unique}"
    created = await memos(suite, owner, "cubes", "create", cube, "--name", "Shared notes")
    assert created.returncode == 0 and f"created cube {cube}" in created.stdout, created.stderr
    listed = json.loads((await memos(suite, owner, "cubes", "list", "--json")).stdout)
    assert {"cube_id": cube, "owner_id": owner, "name": "Shared notes", "role": "owner", "owned": True} in listed

    denied = await memos(suite, friend, "search", "notes", "-c", cube)
    assert denied.returncode == 5
    assert "CUBE_READ_DENIED" in assert_one_line_error(denied)

    shared = await memos(suite, owner, "cubes", "share", cube, friend, "--role", "reader")
    assert shared.returncode == 0 and f"shared cube {cube} with {friend} as reader" in shared.stdout
    friend_cubes = json.loads((await memos(suite, friend, "--json", "cubes", "list")).stdout)
    assert [c["role"] for c in friend_cubes if c["cube_id"] == cube] == ["reader"]
    assert (await memos(suite, friend, "search", "notes", "-c", cube)).returncode == 0

    unconfirmed = await memos(suite, owner, "cubes", "delete", cube)
    assert unconfirmed.returncode == 2 and "--yes" in assert_one_line_error(unconfirmed)
    deleted = await memos(suite, owner, "cubes", "delete", cube, "--yes")
    assert deleted.returncode == 0 and f"deleted cube {cube}" in deleted.stdout, deleted.stderr
    gone = await memos(suite, owner, "cubes", "list", "--json")
    assert cube not in [c["cube_id"] for c in json.loads(gone.stdout)]


async def test_import_jsonl_with_progress_and_summary(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-import-{unique}"
    path = FIXTURES / "conversation.jsonl"
    proc = await memos(suite, user, "import", str(path), "-c", cube, "--progress", "always", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    # 3 message lines (2 requests of at most 2), 1 conversation line, 1 message line: 4 requests, 6 messages
    assert proc.stdout.startswith(f"imported 6 messages (jsonl, 4 requests) from {path} into cube {cube}: ")
    assert "memories added, 0 part errors" in proc.stdout
    # one redraw per request ("\r" reads as a newline in text mode), ending at 100%
    bar = proc.stderr.split()
    assert proc.stderr.count("import [") == 4 and bar[-3:] == ["6/6", "messages", "100%"], proc.stderr
    summary = json.loads(
        (await memos(suite, user, "--json", "import", str(path), "-c", f"{cube}-2", "--progress", "never")).stdout
    )
    assert summary["format"] == "jsonl" and summary["messages"] == 6 and summary["memories_added"] >= 3
    found = json.loads(
        (await memos(suite, user, "--json", "search", "where am I staying in Lisbon", "-c", cube)).stdout
    )
    assert any("Pestana Palace" in m["memory"] for m in found["ranked"][:3])


async def test_import_locomo_file(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-locomo-{unique}"
    proc = await memos(suite, user, "--json", "import", str(FIXTURES / "locomo_small.json"), "-c", cube)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "locomo" and summary["messages"] == 5 and summary["requests"] == 2
    assert summary["memories_added"] >= 2 and summary["part_errors"] == []
    exported = await memos(suite, user, "export", cube)
    memories = [json.loads(line) for line in exported.stdout.splitlines()]
    sessions = {m["metadata"]["session_id"] for m in memories}
    assert sessions == {"conv-test:session_1", "conv-test:session_2"}
    text = " ".join(m["memory"] for m in memories)
    assert "shares image: a photo of a blue ceramic vase" in text and "Biscuit" in text
    roles = {s["role"] for m in memories for s in m["metadata"]["sources"]}
    assert roles == {"user", "assistant"}


async def test_export_round_trip(suite, unique, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-export-{unique}"
    texts = [f"Fact number {i}: the locker code is {1000 + i}" for i in range(5)]
    for text in texts:
        assert (await memos(suite, user, "add", "-c", cube, text)).returncode == 0
    out = tmp_path / "export.jsonl"
    proc = await memos(suite, user, "export", cube, "-o", str(out), "--page-size", "2")  # three pages
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr.strip() == f"memos: exported 5 memories from cube {cube} to {out}"
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({m["id"] for m in exported}) == 5
    assert all(m["metadata"]["cube_id"] == cube for m in exported)
    assert sorted(t for m in exported for t in texts if m["memory"].endswith(t)) == sorted(texts)
    # what was exported is what the gateway has: every id is found by search
    found = json.loads((await memos(suite, user, "--json", "search", "locker code", "-c", cube, "-k", "10")).stdout)
    assert {m["id"] for m in found["ranked"]} == {m["id"] for m in exported}


async def test_chat_prints_an_answer_from_memories(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-chat-{unique}"
    assert (await memos(suite, user, "add", "-c", cube, "I chose the 7 Days Inn for the Beijing trip")).returncode == 0
    proc = await memos(suite, user, "chat", "Which hotel did I pick?", "-c", cube, "-v")
    assert proc.returncode == 0, proc.stderr
    assert "7 Days Inn" in proc.stdout  # no LLM configured: the answer lists the retrieved memories
    assert "no LLM configured" in proc.stderr
    events = [
        json.loads(line)
        for line in (await memos(suite, user, "--json", "chat", "hotel?", "-c", cube)).stdout.splitlines()
    ]
    kinds = [next(iter(e)) for e in events]
    assert "references" in kinds and "text" in kinds and kinds[-1] == "end"
    assert events[-1]["end"]["source"] == "ANSWER_SOURCE_RETRIEVED_MEMORIES"


async def test_bad_address_is_a_usage_error() -> None:
    proc = await asyncio.to_thread(_run, ["--addr", "not-an-address", "cubes", "list"], _env("cli-bad"))
    assert proc.returncode == 2
    assert (
        assert_one_line_error(proc) == "memos: bad address 'not-an-address': expected HOST:PORT, e.g. 127.0.0.1:50051"
    )


async def test_unreachable_gateway_fails_in_one_line() -> None:
    addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["search", "anything", "-c", "c"], ["add", "-c", "c", "hello"], ["export", "c"]):
        proc = await asyncio.to_thread(_run, ["--addr", addr, *args], _env("cli-down"))
        assert proc.returncode == 3, proc.stderr
        assert assert_one_line_error(proc).startswith(f"memos: cannot reach the gateway at {addr} (")
    health = await asyncio.to_thread(_run, ["--addr", addr, "health"], _env("cli-down"))
    assert health.returncode == 3 and "UNREACHABLE" in health.stdout
    assert assert_one_line_error(health) == f"memos: gateway at {addr} is UNREACHABLE"


async def test_malformed_import_file_names_the_line(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user, cube = f"cli-{unique}", f"cli-bad-{unique}"
    path = FIXTURES / "malformed.jsonl"
    proc = await memos(suite, user, "import", str(path), "-c", cube)
    assert proc.returncode == 2
    assert assert_one_line_error(proc).startswith(f"memos: {path}:3: invalid JSON (")
    # nothing of the file was sent
    cubes = json.loads((await memos(suite, user, "--json", "cubes", "list")).stdout)
    assert cube not in [c["cube_id"] for c in cubes]


async def test_import_input_errors(suite, unique, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user = f"cli-{unique}"
    bad_role = tmp_path / "role.jsonl"
    bad_role.write_text('{"role": "user", "content": "ok"}\n\n{"role": "robot", "content": "beep"}\n')
    proc = await memos(suite, user, "import", str(bad_role), "-c", "x")
    assert proc.returncode == 2
    assert assert_one_line_error(proc) == f"memos: {bad_role}:3: messages[0] has unknown role 'robot'"
    bad_locomo = tmp_path / "locomo.json"
    bad_locomo.write_text('[{"sample_id": "s1", "conversation": {"session_1": [{"speaker": "A"}]}}]')
    proc = await memos(suite, user, "import", str(bad_locomo), "-c", "x")
    assert proc.returncode == 2
    assert "s1 session_1 turn 1" in assert_one_line_error(proc)
    missing = await memos(suite, user, "import", str(tmp_path / "nope.jsonl"), "-c", "x")
    assert missing.returncode == 2 and "cannot read" in assert_one_line_error(missing)


async def test_usage_errors_and_server_side_invalid_arguments(suite, unique) -> None:  # type: ignore[no-untyped-def]
    user = f"cli-{unique}"
    proc = await memos(suite, user, "search", "q")  # no cube
    assert proc.returncode == 2 and "--cube" in assert_one_line_error(proc)
    proc = await memos(suite, user, "search", "q", "-c", "x", "--filter", '{"colour": "red"}')
    assert proc.returncode == 2 and "UNKNOWN_FILTER_FIELD" in assert_one_line_error(proc)
    proc = await memos(suite, user, "--timeout", "-1", "cubes", "list")
    assert proc.returncode == 2 and "--timeout" in assert_one_line_error(proc)


async def test_health_of_the_gateway(suite) -> None:  # type: ignore[no-untyped-def]
    proc = await memos(suite, "cli-health", "--json", "health")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {"service": "gateway", "address": suite.address, "status": "SERVING", "detail": ""}
    ]


def test_serve_one_service_then_health_then_ctrl_c(tmp_path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    env = _env("cli-serve", MEMOS_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(
        [str(REPO_ROOT / "tools" / "memos"), "serve", "textmem", "--listen", listen],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready" in line:
                break
        assert f"memos: textmem serving on {listen}\n" in lines, "".join(lines)
        health = _run(["health", "textmem", "--target", listen], env)
        assert health.returncode == 0, health.stderr
        assert health.stdout == f"textmem\t{listen}\tSERVING\n"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "memos: textmem stopped (0)" in out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    down = _run(["health", "textmem", "--target", listen], env)
    assert down.returncode == 3 and "UNREACHABLE" in down.stdout
