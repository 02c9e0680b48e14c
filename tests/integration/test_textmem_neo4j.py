"""textmem on a real Neo4j behind the real gateway: add, search, delete, hostile ids, outages.

The suite here runs textmem with ``graph_store="neo4j"`` against the test
Neo4j server (``tests/neo4j_server.py``), reached through a loopback TCP proxy
that a test can cut to take the graph store down and restore to bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from memos.client import AsyncMemosClient, NotFound, Unavailable
from services.textmem.embedders import Embedder
from services.textmem.stores.neo4j_graph import Neo4jGraphStore
from shared.errors import Unavailable as DomainUnavailable
from shared.settings import ClientSettings
from tests.conftest import Suite, free_port, start_suite, stop_suite
from tests.neo4j_server import Neo4jServer, stop_server
from tests.neo4j_server import neo4j_server as _neo4j_server

# Means something to Cypher, Lucene, SQL and Milvus expressions all at once.
HOSTILE = "a\" or 1=1 //'} RETURN n UNION MATCH (m) DETACH DELETE m `x` $cube_id \\ *:* hotel~ "


class TcpProxy:
    """Forwards 127.0.0.1:port to the Neo4j server; ``cut()`` refuses and drops connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Closes the listener (new connections are refused) and every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="session")
def neo4j_server() -> Iterator[Neo4jServer]:
    yield _neo4j_server()
    stop_server()


@pytest.fixture(scope="module")
def proxy(neo4j_server: Neo4jServer) -> Iterator[TcpProxy]:
    p = TcpProxy(int(neo4j_server.uri.rsplit(":", 1)[1]))
    yield p
    p.cut()


@pytest.fixture(scope="module")
async def neo4j_suite(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, neo4j_server: Neo4jServer, proxy: TcpProxy
) -> AsyncIterator[Suite]:
    suite = await start_suite(
        tmp_path_factory.mktemp("neo4j-suite"),
        embedder,
        textmem_overrides={
            "graph_store": "neo4j",
            "neo4j_uri": proxy.uri,
            "neo4j_user": neo4j_server.user,
            "neo4j_password": neo4j_server.password,
            "neo4j_database": neo4j_server.database,
            # An outage becomes UNAVAILABLE after 1 s of driver retries, not the default 5 s.
            "neo4j_retry_s": 1.0,
        },
        # One attempt per hop, so an outage surfaces at once instead of after retries.
        retry_max_attempts=1,
    )
    assert isinstance(suite.memory.graph, Neo4jGraphStore)
    yield suite
    await stop_suite(suite)


@pytest.fixture
async def client(neo4j_suite: Suite) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(neo4j_suite.address, settings=ClientSettings(retry_max_attempts=1))
    yield c
    await c.close()


def cypher_count(server: Neo4jServer, query: str, **params: object) -> int:
    from neo4j import GraphDatabase

    with GraphDatabase.driver(server.uri, auth=(server.user, server.password) if server.user else None) as d:
        records, _, _ = d.execute_query(query, params, database_=server.database)
        return int(records[0]["n"])


async def test_add_search_delete_with_a_hostile_cube_id(
    client: AsyncMemosClient, neo4j_suite: Suite, neo4j_server: Neo4jServer, unique: str
) -> None:
    user = f"mallory-{unique}"
    victim, hostile = f"victim-{unique}", HOSTILE + unique
    await client.add_memories(f"victim-{unique}", [victim], [{"role": "user", "content": "the hotel secret is 4242"}])
    added = await client.add_memories(
        user,
        [hostile],
        [
            {"role": "user", "content": "I booked the 7 Days Inn hotel in Guangzhou."},
            {"role": "assistant", "content": "Noted: 7 Days Inn, Guangzhou."},
        ],
        session_id=HOSTILE,
    )
    ids = [m.memory_id for m in added.memories]
    assert ids and all(m.cube_id == hostile for m in added.memories)

    # Stored in Neo4j under the literal cube id.
    stored = await asyncio.to_thread(neo4j_suite.memory.graph.get_memories, hostile, ids)
    assert set(stored) == set(ids) and all(m.cube_id == hostile and m.session_id == HOSTILE for m in stored.values())

    resp = await client.search_memories(user, [hostile], "hotel secret 4242 Guangzhou *:* OR 1=1", top_k=10)
    bucket = resp.text_mem[0]
    assert bucket.status.code == 0 and bucket.cube_id == hostile
    assert [m.item.id for m in bucket.memories][:1] == ids[:1]
    assert all("4242" not in m.item.memory and m.item.metadata.cube_id == hostile for m in bucket.memories)
    listed = await client.list_memories(user, hostile)
    assert sorted(m.id for m in listed.memories) == sorted(ids)

    assert (await client.delete_memories(user, hostile, ids[:1])).deleted_count == 1
    assert (await client.delete_memories(user, hostile, all=True)).deleted_count == len(ids) - 1
    assert not (await client.list_memories(user, hostile)).memories
    # Hard delete: no node of the cube's memories is left in the graph, sources included.
    assert (
        cypher_count(neo4j_server, "MATCH (n:Memory|Source) WHERE n.cube_id = $c RETURN count(n) AS n", c=hostile) == 0
    )
    # Deleting the cube leaves no node of it at all (memories, sources, request records, counter, cube).
    await client.delete_cube(user, hostile)
    assert cypher_count(neo4j_server, "MATCH (n) WHERE n.cube_id = $c RETURN count(n) AS n", c=hostile) == 0
    # The victim's cube is untouched.
    victim_hits = await client.search_memories(f"victim-{unique}", [victim], "hotel secret", top_k=5)
    assert ["4242" in m.item.memory for m in victim_hits.text_mem[0].memories] == [True]


async def test_graph_store_down_gives_unavailable_and_writes_nothing(
    client: AsyncMemosClient, neo4j_suite: Suite, proxy: TcpProxy, unique: str
) -> None:
    user, cube = f"ursula-{unique}", f"outage-{unique}"
    first = await client.add_memories(user, [cube], [{"role": "user", "content": "the first note survives"}])
    proxy.cut()
    try:
        with pytest.raises(Unavailable) as err:
            await client.add_memories(
                user, [cube], [{"role": "user", "content": "a zebra note during the outage"}], request_id=f"r-{unique}"
            )
        assert err.value.retriable
        # The gateway checks access in the (down) cube registry first, unless it still caches
        # the cube: then the search itself fails, for this cube's bucket only.
        try:
            resp = await client.search_memories(user, [cube], "first note", top_k=5)
        except Unavailable as exc:
            assert exc.retriable
        else:
            assert resp.text_mem[0].status.code == 14  # UNAVAILABLE
        with pytest.raises(DomainUnavailable):
            await asyncio.to_thread(neo4j_suite.memory.graph.count, cube)
    finally:
        proxy.restore()

    # Nothing of the failed add was kept: neither in the graph nor in the vector store.
    listed = await client.list_memories(user, cube)
    assert [m.id for m in listed.memories] == [m.memory_id for m in first.memories]
    hits = await client.search_memories(user, [cube], "zebra outage", top_k=10)
    assert all("zebra" not in m.item.memory for m in hits.text_mem[0].memories)
    assert await asyncio.to_thread(neo4j_suite.memory.vectors.count, cube) == len(first.memories)

    # The retry with the same request id succeeds once; a second retry replays it.
    retried = await client.add_memories(
        user, [cube], [{"role": "user", "content": "a zebra note during the outage"}], request_id=f"r-{unique}"
    )
    again = await client.add_memories(
        user, [cube], [{"role": "user", "content": "a zebra note during the outage"}], request_id=f"r-{unique}"
    )
    assert [m.memory_id for m in again.memories] == [m.memory_id for m in retried.memories]
    assert len((await client.list_memories(user, cube)).memories) == len(first.memories) + len(retried.memories)


async def test_missing_and_hostile_memory_ids_are_not_found_and_change_nothing(
    client: AsyncMemosClient, unique: str
) -> None:
    user, cube = f"victor-{unique}", f"errors-{unique}"
    added = await client.add_memories(user, [cube], [{"role": "user", "content": "something to keep"}])
    for bad_id in ("missing", "x' OR 1=1 //", '") DETACH DELETE n //', "*"):
        with pytest.raises(NotFound):
            await client.update_memory(user, cube, bad_id, memory="pwned")
        with pytest.raises(NotFound):
            await client.get_memory(user, cube, bad_id)
        assert (await client.delete_memories(user, cube, [bad_id])).deleted_count == 0
    listed = await client.list_memories(user, cube)
    assert [(m.id, m.memory) for m in listed.memories] == [(m.memory_id, m.memory) for m in added.memories]


def test_a_store_on_a_server_that_is_not_there_is_unavailable() -> None:
    with pytest.raises(DomainUnavailable) as err:
        Neo4jGraphStore(f"bolt://127.0.0.1:{free_port()}", retry_time_s=0.5, connection_timeout_s=1.0)
    assert err.value.retriable and err.value.reason == "GRAPH_STORE_UNAVAILABLE"
