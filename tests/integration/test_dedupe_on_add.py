"""Dedupe on add, through TextMemory on the embedded stores (SQLite, Milvus Lite, real MiniLM),
and through the gateway."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memos.client import AsyncMemosClient
from memos.client import Unavailable as ClientUnavailable
from services.textmem import dedupe as dedupe_rules
from services.textmem.app import build_memory
from services.textmem.dedupe import MERGES_KEY
from services.textmem.memory import TextMemory
from services.textmem.models import ChatMessage, Memory, MemoryFilter, Part
from services.textmem.settings import TextMemSettings
from tests.figures import report_figure

TOPICS = ["hiking", "the new job", "my sister's wedding", "a pottery class", "the garden", "a trip to Lisbon"]


def conversation(n: int, *, with_ids: bool, start: float = 1_700_000_000.0) -> list[ChatMessage]:
    """A synthetic conversation: n turns, each distinct, with times (and message ids if asked)."""
    out = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"Turn {i}: let's talk about {TOPICS[i % len(TOPICS)]}, detail number {i * 7 % 101}."
        out.append(
            ChatMessage(
                role, [Part("text", text=text)], chat_time=start + 60 * i, message_id=f"m{i}" if with_ids else ""
            )
        )
    return out


def fresh_copy(messages: list[ChatMessage], *, keep_ids: bool) -> list[ChatMessage]:
    return [
        ChatMessage(
            m.role, [Part("text", text=m.text())], chat_time=m.chat_time, message_id=m.message_id if keep_ids else ""
        )
        for m in messages
    ]


def everything(mem: TextMemory, cube: str) -> list[Memory]:
    page, cursor = mem.list(cube, MemoryFilter(include_archived=True), 1000, 0)
    assert cursor == 0
    return page


def cand(text: str, **fields: object) -> Memory:
    return Memory(id="", cube_id="", memory=text, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[TextMemory]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("dedupe")
    mem = build_memory(TextMemSettings(data_dir=data, log_level="WARNING"), embedder=embedder)
    yield mem
    mem.close()


@pytest.fixture
def cube() -> str:
    return f"dedupe-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("with_ids", [True, False], ids=["message-ids", "no-message-ids"])
def test_re_adding_the_same_messages_creates_nothing_new(memory: TextMemory, cube: str, with_ids: bool) -> None:
    messages = conversation(200, with_ids=with_ids)
    t0 = time.perf_counter()
    first = memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True))
    t1 = time.perf_counter()
    before = {m.id: m for m in everything(memory, cube)}
    assert len(before) == len(first.memories) > 60 and not first.merged_ids

    again = memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True))
    t2 = time.perf_counter()
    after = {m.id: m for m in everything(memory, cube)}
    assert after.keys() == before.keys()  # 0 new items
    assert [m.id for m in again.memories] == [m.id for m in first.memories]
    assert again.merged_ids == [m.id for m in first.memories]
    for mid, m in after.items():
        # The same messages again: nothing appended, the merge counted.
        assert [s.to_dict() for s in m.sources] == [s.to_dict() for s in before[mid].sources]
        assert m.info[MERGES_KEY] == 1
        assert m.updated_at >= before[mid].updated_at
    assert memory.vectors.count(cube) == len(before)
    report_figure(
        "dedupe",
        f"re-add of 200 messages ({'with' if with_ids else 'without'} ids): "
        f"first add {t1 - t0:.2f} s, re-add {t2 - t1:.2f} s, 0 new of {len(before)}",
    )


def test_the_same_messages_in_another_conversation_accumulate_sources(memory: TextMemory, cube: str) -> None:
    """The same words said again later are other messages: merged by wording, their sources kept."""
    first = memory.write_memories(cube, "u", "s1", [cand("The user's favourite colours are blue and green.")])
    second = memory.write_memories(
        cube, "u", "s2", [cand("The user's favorite colors are blue and green!", tags=["colour"])]
    )
    target = first.memories[0]
    assert [m.id for m in second.memories] == [target.id] and second.merged_ids == [target.id]
    merged = memory.get(cube, target.id)
    assert merged.memory == "The user's favourite colours are blue and green."  # the existing text survives
    assert "colour" in merged.tags and merged.info[MERGES_KEY] == 1
    assert len(everything(memory, cube)) == 1


def test_a_restatement_merges_and_a_changed_fact_does_not(memory: TextMemory, cube: str) -> None:
    old = memory.write_memories(cube, "u", "s", [cand("Oh, the user just adopted three cats.")]).memories[0]
    again = memory.write_memories(cube, "u", "s", [cand("The user adopted 3 cats.")])
    assert again.merged_ids == [old.id]
    changed = memory.write_memories(
        cube,
        "u",
        "s",
        [
            cand("The user adopted 4 cats."),
            cand("The user adopted three dogs."),
            cand("The user's sister adopted 3 cats."),
        ],
    )
    assert not changed.merged_ids and len({m.id for m in changed.memories}) == 3
    assert len(everything(memory, cube)) == 4


def test_an_add_that_repeats_itself_stores_once(memory: TextMemory, cube: str) -> None:
    res = memory.write_memories(
        cube, "u", "s", [cand("Remember the milk."), cand("remember the milk"), cand("Remember THE milk!")]
    )
    assert len(res.memories) == 1 and not res.merged_ids
    assert res.memories[0].info[MERGES_KEY] == 2
    assert len(everything(memory, cube)) == 1


def test_different_cubes_and_types_never_merge(memory: TextMemory, cube: str) -> None:
    other = cube + "-other"
    a = memory.write_memories(cube, "u", "s", [cand("The user lives in Lisbon.")])
    b = memory.write_memories(other, "u", "s", [cand("The user lives in Lisbon.")])
    c = memory.write_memories(cube, "u", "s", [cand("The user lives in Lisbon.", memory_type="UserMemory")])
    assert not b.merged_ids and not c.merged_ids
    assert len({a.memories[0].id, b.memories[0].id, c.memories[0].id}) == 3


def test_only_the_same_users_memories_merge(memory: TextMemory, cube: str) -> None:
    """A shared cube: bob repeating alice's words gets a memory of his own, so that erasing alice
    cannot leave her words inside his memory (or his inside hers)."""
    alice = memory.write_memories(cube, "alice", "s", [cand("The team meets on Mondays.")]).memories[0]
    exact = memory.write_memories(cube, "bob", "s", [cand("The team meets on Mondays.")])
    near = memory.write_memories(cube, "bob", "s", [cand("The team meets on mondays")])
    assert not exact.merged_ids and exact.memories[0].id != alice.id and exact.memories[0].user_id == "bob"
    # bob's restatement merges into bob's memory, never alice's.
    assert near.merged_ids == [exact.memories[0].id]
    again = memory.write_memories(cube, "alice", "s", [cand("the team meets on Mondays!")])
    assert again.merged_ids == [alice.id]


def test_working_copies_and_archived_memories_are_never_targets(memory: TextMemory, cube: str) -> None:
    original = memory.write_memories(cube, "u", "s", [cand("The user drinks green tea.")]).memories[0]
    copies, _ = memory.replace_working_memory(cube, "u", [original.id])
    # The add merges into the original, never into its working copy.
    again = memory.write_memories(cube, "u", "s", [cand("the user drinks green tea")])
    assert again.merged_ids == [original.id]
    assert memory.get(cube, copies[0].id).info.get(MERGES_KEY) is None
    # Archived: the repeat is stored anew (and not into the copy either).
    archived = Memory(**{**original.__dict__, "status": "archived"})
    memory.update_memory(cube, original.id, archived, ["metadata.status"])
    fresh = memory.write_memories(cube, "u", "s", [cand("The user drinks green tea!")])
    assert not fresh.merged_ids and fresh.memories[0].id not in (original.id, copies[0].id)


def test_replays_by_request_id_report_the_merge(memory: TextMemory, cube: str) -> None:
    messages = conversation(8, with_ids=True)
    first = memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True), request_id="r1")
    second = memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True), request_id="r2")
    replay = memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True), request_id="r2")
    assert replay.replayed and not second.replayed
    assert [m.id for m in replay.memories] == [m.id for m in second.memories] == [m.id for m in first.memories]
    assert replay.merged_ids == second.merged_ids == [m.id for m in first.memories]
    assert memory.add_messages(cube, "u", "s", fresh_copy(messages, keep_ids=True), request_id="r1").merged_ids == []


def test_a_target_deleted_meanwhile_is_planned_again(memory: TextMemory, cube: str) -> None:
    target = memory.write_memories(cube, "u", "s", [cand("The user plays chess on Sundays.")]).memories[0]
    real = memory.graph.insert_memories
    calls = 0

    def delete_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            memory.delete_memories(cube, [target.id])
        return real(*args, **kwargs)

    memory.graph.insert_memories = delete_first  # type: ignore[method-assign]
    try:
        res = memory.write_memories(cube, "u", "s", [cand("the user plays chess on sundays")])
    finally:
        del memory.graph.insert_memories
    assert calls == 2 and not res.merged_ids and res.memories[0].id != target.id
    assert [m.id for m in everything(memory, cube)] == [res.memories[0].id]
    assert memory.vectors.count(cube) == 1


def test_dedupe_off_stores_every_repeat(memory: TextMemory, cube: str) -> None:
    plain = TextMemory(memory.graph, memory.vectors, memory.embedder, dedupe=False)
    plain.write_memories(cube, "u", "s", [cand("The user likes jazz.")])
    res = plain.write_memories(cube, "u", "s", [cand("The user likes jazz.")])
    assert not res.merged_ids and len(everything(memory, cube)) == 2


# through the gateway ------------------------------------------------------------------------------------
async def test_gateway_reports_merges_and_a_roll_back_keeps_merged_memories(
    client: AsyncMemosClient, unique: str
) -> None:
    user, good, down = f"dd-{unique}", f"dd-good-{unique}", f"down-dd-{unique}"
    said = [{"role": "user", "content": "My favourite band is Radiohead."}]
    first = await client.add_memories(user, [good], said)
    assert [m.merged for m in first.memories] == [False]
    again = await client.add_memories(user, [good], said)
    assert [m.merged for m in again.memories] == [True]
    assert again.memories[0].memory_id == first.memories[0].memory_id
    assert "merged" in again.message
    # A multi-cube add that fails in its second cube rolls back the first, but never deletes
    # what the first cube already had before the add.
    with pytest.raises(ClientUnavailable):
        await client.add_memories(user, [good, down], said)
    listed = await client.list_memories(user, good)
    assert [m.id for m in listed.memories] == [first.memories[0].memory_id]


def test_concurrent_adds_of_the_same_text_store_it_once(memory: TextMemory, cube: str) -> None:
    """Adds of the same fact that race (different requests, each planned before any wrote)
    end with one live memory that counts every other add as merged into it."""
    import threading

    adders = 6
    barrier = threading.Barrier(adders)
    real_plan = dedupe_rules.plan_add
    results: list[object] = [None] * adders

    def plan_then_wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        plan = real_plan(*args, **kwargs)
        if threading.current_thread().name.startswith("adder-"):
            try:
                barrier.wait(timeout=10)  # every adder has planned before any writes
            except threading.BrokenBarrierError:
                pass  # a re-plan after a lost race: nobody waits for it
        return plan

    def add(i: int) -> None:
        results[i] = memory.write_memories(
            cube, "u", f"s{i}", [cand("The user's dentist appointment is on Friday.", session_id=f"s{i}")]
        )

    dedupe_rules.plan_add = plan_then_wait  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=add, args=(i,), name=f"adder-{i}") for i in range(adders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        dedupe_rules.plan_add = real_plan  # type: ignore[assignment]
    live = [m for m in everything(memory, cube) if m.status == "activated"]
    assert len(live) == 1, [m.memory for m in live]
    assert memory.vectors.count(cube) == 1
    assert {r.memories[0].id for r in results} == {live[0].id}  # type: ignore[attr-defined]
    assert live[0].info[MERGES_KEY] == adders - 1
