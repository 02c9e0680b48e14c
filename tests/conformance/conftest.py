"""Fixtures of the store conformance suites.

Every implementation of a store interface runs the same tests: the fixtures
below are parametrized over a registry of factories. To add an implementation
(e.g. a Neo4j GraphStore), add one entry to the registry; a factory that needs
a server should ``pytest.skip`` when none is configured, so the suite still
passes on a machine without it::

    def _neo4j(tmp: Path) -> GraphStore:
        uri = os.environ.get("MEMOS_TEST_NEO4J_URI") or pytest.skip("no Neo4j server")
        store = Neo4jGraphStore(uri, database=f"conf{uuid.uuid4().hex[:8]}")
        return store

    GRAPH_STORES["neo4j"] = _neo4j

Graph stores are made fresh for every test (a SQLite file is cheap). Vector
stores are slow to open (Milvus Lite starts a server), so one is opened per
module and the tests keep apart by using fresh cube ids and memory ids
(``new_cube`` and hex UUID memory ids), never by relying on an empty store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.textmem.stores.graph import GraphStore
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from services.textmem.stores.vector import VectorStore

VECTOR_DIM = 8


def _sqlite_graph(tmp: Path) -> GraphStore:
    return SqliteGraphStore(tmp / "graph.sqlite3")


def _milvus_lite(tmp: Path) -> VectorStore:
    return MilvusVectorStore(str(tmp / "m.db"), "conf", VECTOR_DIM)


# name -> factory(empty directory) -> store. Add implementations here.
GRAPH_STORES: dict[str, Callable[[Path], GraphStore]] = {
    "sqlite": _sqlite_graph,
}
VECTOR_STORES: dict[str, Callable[[Path], VectorStore]] = {
    "milvus-lite": _milvus_lite,
}


@pytest.fixture(params=sorted(GRAPH_STORES))
def graph_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    store = GRAPH_STORES[request.param](tmp_path)
    yield store
    store.close()


@pytest.fixture(scope="module", params=sorted(VECTOR_STORES))
def vector_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    store = VECTOR_STORES[request.param](tmp_path_factory.mktemp(f"vec-{request.param}"))
    yield store
    store.close()


@pytest.fixture
def new_cube() -> Callable[[str], str]:
    """Makes cube ids no other test uses: ``new_cube("a")`` -> ``"a-<hex>"``."""
    run = uuid.uuid4().hex[:12]
    return lambda name="cube": f"{name}-{run}"
