"""Deleting a cube removes everything it held: a test reads every store afterwards.

The cube gets conversation memories (with sources, tags, edges and a request id),
preferences and a working memory; then its owner deletes it through the gateway. Every
table of the SQLite graph (memories, sources, tags, edges, requests, cubes, members, the
FTS index) and the vector store are searched for what it held: nothing may remain.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from memos.client import AsyncMemosClient, NotFound
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.textmem.models import MemoryFilter
from shared.channels import open_channel

pytestmark = pytest.mark.timeout(120)

MARK = "zebracorn"  # a word found nowhere else in the test data


async def test_deleting_a_cube_leaves_nothing_in_any_store(client: AsyncMemosClient, suite, unique: str) -> None:  # type: ignore[no-untyped-def]
    owner, reader, cube = f"o-{unique}", f"r-{unique}", f"gone-{unique}"
    added = await client.add_memories(
        owner,
        [cube],
        [
            {"role": "user", "content": f"My {MARK} likes apples."},
            {"role": "assistant", "content": f"Noted about the {MARK}."},
            {"role": "user", "content": f"I prefer tea, and the {MARK} prefers juice."},
            {"role": "assistant", "content": "Tea it is."},
            {"role": "user", "content": f"The {MARK} sleeps all day."},
        ],
        custom_tags=[f"tag-{MARK}"],
        request_id=f"req-{unique}",
    )
    ids = [m.memory_id for m in added.memories]
    await client.share_cube(owner, cube, reader, "reader")
    channel = open_channel(suite.textmem.address)
    try:
        await textmem_pb2_grpc.TextMemServiceStub(channel).ReplaceWorkingMemory(
            textmem_pb2.ReplaceWorkingMemoryRequest(cube_id=cube, user_id=owner, memory_ids=ids[:1])
        )
    finally:
        await channel.close()
    assert (await client.search_memories(owner, [cube], MARK)).ranked

    await client.delete_cube(owner, cube)

    with pytest.raises(NotFound):
        await client.search_memories(owner, [cube], MARK)
    db = sqlite3.connect(suite.data_dir / "graph.sqlite3")
    try:
        for table, column in [
            ("memories", "cube_id"),
            ("edges", "cube_id"),
            ("requests", "cube_id"),
            ("cubes", "cube_id"),
            ("cube_members", "cube_id"),
        ]:
            assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (cube,)).fetchone() == (0,), table
        marks = f"%{MARK}%"
        assert db.execute("SELECT COUNT(*) FROM memories WHERE memory LIKE ?", (marks,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM sources WHERE body LIKE ?", (marks,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memory_tags WHERE tag LIKE ?", (marks,)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM memories_fts WHERE memories_fts MATCH ?", (MARK,)).fetchone() == (0,)
        placeholders = ",".join("?" * len(ids))
        for table in ("sources", "memory_tags"):
            found = db.execute(f"SELECT COUNT(*) FROM {table} WHERE memory_id IN ({placeholders})", ids).fetchone()
            assert found == (0,), table
    finally:
        db.close()
    # The vector store: no vector of the cube answers any query.
    memory = suite.memory
    qvec = await asyncio.to_thread(memory.embedder.embed, [f"{MARK} apples tea sleeps"])
    hits = await asyncio.to_thread(memory.vectors.search, cube, qvec[0], MemoryFilter(include_archived=True), 50)
    assert hits == []
