"""A textmem killed between its vector write and its graph write is repaired when it restarts.

Each test runs the write in a child process whose graph store SIGKILLs the process at the
moment named (after the vectors are written, before the graph commits), then opens the same
data directory as a restarted textmem does and checks that the two stores agree again: a vector
whose memory never reached the graph is gone from Milvus itself (not only hidden from search),
and a vector rewritten for an update that never committed matches the graph's text again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from services.textmem.app import build_memory
from services.textmem.models import ChatMessage, MemoryFilter, Part
from services.textmem.settings import TextMemSettings

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{root!r}, {gen!r}]
    from services.textmem.app import build_memory
    from services.textmem.models import ChatMessage, Memory, Part
    from services.textmem.settings import TextMemSettings

    memory = build_memory(TextMemSettings(data_dir={data!r}))
    graph = memory.graph

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if {step!r} == "seed":
        result = memory.add_messages("cube", "u", "s", [ChatMessage("user", [Part("text", text="the kept text")])])
        print(result.memories[0].id)
        memory.close()
    elif {step!r} == "add":
        graph.insert_memories = die
        memory.add_messages("cube", "u", "s", [ChatMessage("user", [Part("text", text="the orphan's text")])])
    elif {step!r} == "update":
        graph.update_memory = die
        memory.update_memory("cube", {memory_id!r}, Memory(id="", cube_id="cube", memory="a rewrite that never committed"), ["memory"])
    elif {step!r} == "delete":
        graph.delete_memories = die
        memory.delete_memories("cube", [{memory_id!r}])
    """
)


def settings(data: Path) -> TextMemSettings:
    return TextMemSettings(data_dir=data, milvus_lite_prewarm_cubes=0)


def run_child(data: Path, step: str, memory_id: str = "") -> str:
    """Runs one step in a process of its own (Milvus Lite lets one process open a file)."""
    code = CHILD.format(
        root=str(ROOT), gen=str(ROOT / "gen" / "python"), data=str(data), step=step, memory_id=memory_id
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    expected = 0 if step == "seed" else -9
    assert proc.returncode == expected, f"{step}: exit {proc.returncode}, wanted {expected}:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1] if step == "seed" else ""


def durable_ids(memory, cube: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The ids Milvus itself holds for the cube (below any in-process index)."""
    durable = getattr(memory.vectors, "durable", memory.vectors)
    return {row.id for row in durable.scan(cube)}


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path, run_child(tmp_path, "seed")


def test_vectors_of_an_add_that_never_reached_the_graph_are_removed(seeded: tuple[Path, str]) -> None:
    data, kept = seeded
    run_child(data, "add")
    memory = build_memory(settings(data))
    try:
        assert durable_ids(memory, "cube") == {kept}
        assert memory.graph.count("cube") == 1
        hits, _ = memory.search("cube", "the orphan's text", 10, MemoryFilter())
        assert [m.id for m, _ in hits] == [kept]
    finally:
        memory.close()


def test_a_vector_rewritten_for_an_uncommitted_update_matches_the_graph_again(seeded: tuple[Path, str]) -> None:
    data, kept = seeded
    run_child(data, "update", kept)
    memory = build_memory(settings(data))
    try:
        stored = memory.get("cube", kept)
        assert stored.memory.endswith("the kept text") and stored.version == 1
        [vector] = memory.vectors.get_vectors("cube", [kept]).values()
        expected = memory.embedder.embed([stored.memory])[0]
        assert float(np.dot(vector, expected)) == pytest.approx(1.0, abs=1e-4)
    finally:
        memory.close()


def test_a_delete_cut_short_is_finished_or_undone_never_half_done(seeded: tuple[Path, str]) -> None:
    data, kept = seeded
    run_child(data, "delete", kept)
    memory = build_memory(settings(data))
    try:
        in_graph = memory.graph.count("cube") == 1
        assert (kept in durable_ids(memory, "cube")) == in_graph
    finally:
        memory.close()


def test_nothing_is_pending_after_writes_that_completed(tmp_path: Path) -> None:
    memory = build_memory(settings(tmp_path))
    try:
        result = memory.add_messages("cube", "u", "s", [ChatMessage("user", [Part("text", text="one")])])
        memory.delete_memories("cube", [result.memories[0].id])
        memory.add_messages("cube", "u", "s", [ChatMessage("user", [Part("text", text="two")])])
        assert memory.graph.pending_vector_writes(before=float("inf"), limit=100) == []
    finally:
        memory.close()
