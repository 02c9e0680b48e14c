"""The default recipe ranks fast-mode windows (several turns per memory) without spreading score
to neighbours and sessions, and single-turn memories with it (ranking.RECIPES["windows"])."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.textmem import memory as memory_module
from services.textmem.app import build_memory
from services.textmem.memory import TextMemory
from services.textmem.models import Memory, MemoryFilter, Source
from services.textmem.settings import TextMemSettings

TURNS = [
    ("Caroline", "I adopted a dog last week, his name is Biscuit."),
    ("Melanie", "Biscuit is a lovely name! What breed is he?"),
    ("Caroline", "A beagle. He loves the park near the lake."),
    ("Melanie", "I went kayaking on that lake in June."),
    ("Caroline", "We should go together with Biscuit sometime."),
    ("Melanie", "My sister started a pottery class on Fridays."),
]


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[TextMemory]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("windows")
    mem = build_memory(TextMemSettings(data_dir=data, log_level="WARNING"), embedder=embedder)
    yield mem
    mem.close()


def _memory(turns: list[tuple[str, str]], start: int) -> Memory:
    return Memory(
        id="",
        cube_id="",
        memory="\n".join(f"{who}: {text}" for who, text in turns),
        sources=[
            Source(type="chat", role="user", content=f"{who}: {text}", message_index=start + i)
            for i, (who, text) in enumerate(turns)
        ],
    )


def _spreads(memory: TextMemory, monkeypatch: pytest.MonkeyPatch, window: int) -> int:
    cube = f"w-{uuid.uuid4().hex[:8]}"
    windows = [_memory(TURNS[i : i + window], i) for i in range(0, len(TURNS), window)]
    memory.write_memories(cube, "u", "s", windows)
    calls = 0
    real = memory_module.spread_to_neighbours

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(memory_module, "spread_to_neighbours", counting)
    hits, _ = memory.search(cube, "What is the name of Caroline's dog?", 5, MemoryFilter())
    assert "Biscuit" in hits[0][0].memory  # the same best answer either way
    return calls


def test_single_turn_memories_spread_score_to_their_neighbours(memory: TextMemory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert _spreads(memory, monkeypatch, window=1) == 1


def test_windows_of_several_turns_are_ranked_without_spreading(memory: TextMemory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert _spreads(memory, monkeypatch, window=3) == 0
