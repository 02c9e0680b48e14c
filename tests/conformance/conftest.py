"""Fixtures of the store conformance suites.

Every implementation of a store interface runs the same tests: the fixtures
below are parametrized over a registry of factories. To add an implementation
add one entry to the registry. A factory gets the test's request (to reach
session fixtures such as a server) and an empty directory. One that needs a
server skips when none can be had, and fails under CI (see
``tests/neo4j_server.py``), so a developer without Java still gets a green run
while CI always runs every backend.

Graph stores are made fresh for every test: a SQLite file is cheap; the Neo4j
server is started once per session and wiped before each test (the suite
relies on fixed cube ids such as "A", so it needs an empty store). Vector
stores are slow to open (Milvus Lite starts a server), so one is opened per
module and the tests keep apart by using fresh cube ids and memory ids
(``new_cube`` and hex UUID memory ids), never by relying on an empty store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.textmem.stores.exact_index import ExactIndexVectorStore
from services.textmem.stores.graph import GraphStore
from services.textmem.stores.milvus_vector import MilvusVectorStore
from services.textmem.stores.neo4j_graph import Neo4jGraphStore
from services.textmem.stores.routed_vector import RoutedVectorStore
from services.textmem.stores.sqlite_graph import SqliteGraphStore
from services.textmem.stores.vector import VectorStore
from tests.neo4j_server import Neo4jServer, ensure_built, stop_server
from tests.neo4j_server import neo4j_server as _neo4j_server

VECTOR_DIM = 8


def _sqlite_graph(request: pytest.FixtureRequest, tmp: Path) -> GraphStore:
    return SqliteGraphStore(tmp / "graph.sqlite3")


def _sqlite_graph_fts5(request: pytest.FixtureRequest, tmp: Path) -> GraphStore:
    # Lexical search straight from FTS5, as deployments that turn the in-process copies off get it.
    return SqliteGraphStore(tmp / "graph.sqlite3", lexical_index=False)


def _neo4j_graph(request: pytest.FixtureRequest, tmp: Path) -> GraphStore:
    server: Neo4jServer = request.getfixturevalue("neo4j_server")
    server.wipe()
    return Neo4jGraphStore(server.uri, server.user, server.password, server.database)


def _milvus_lite(tmp: Path) -> VectorStore:
    return MilvusVectorStore(str(tmp / "m.db"), "conf", VECTOR_DIM)


def _exact_index_over_milvus_lite(tmp: Path) -> VectorStore:
    return ExactIndexVectorStore(MilvusVectorStore(str(tmp / "m.db"), "conf", VECTOR_DIM))


def _approximate_index_over_milvus_lite(tmp: Path) -> VectorStore:
    # Every cube gets the approximate index at once (built inline): the suite's searches all go
    # through its candidates and the exact rescoring, its upkeep through every write and delete.
    durable = MilvusVectorStore(str(tmp / "m.db"), "conf", VECTOR_DIM)
    return ExactIndexVectorStore(durable, background=False, approximate_min_rows=1)


def _routed_milvus_lite(tmp: Path) -> VectorStore:
    # As textmem wires it: preferences in a second collection of the same Milvus.
    main, prefs = (MilvusVectorStore(str(tmp / "m.db"), name, VECTOR_DIM) for name in ("conf", "conf_preferences"))
    return RoutedVectorStore(main, prefs)


def _routed_exact_index_over_milvus_lite(tmp: Path) -> VectorStore:
    main, prefs = (
        ExactIndexVectorStore(MilvusVectorStore(str(tmp / "m.db"), name, VECTOR_DIM))
        for name in ("conf", "conf_preferences")
    )
    return RoutedVectorStore(main, prefs)


# name -> factory(test request, empty directory) -> store. Add implementations here.
GRAPH_STORES: dict[str, Callable[[pytest.FixtureRequest, Path], GraphStore]] = {
    "sqlite": _sqlite_graph,
    "sqlite-fts5": _sqlite_graph_fts5,
    "neo4j": _neo4j_graph,
}
VECTOR_STORES: dict[str, Callable[[Path], VectorStore]] = {
    "milvus-lite": _milvus_lite,
    "exact-index+milvus-lite": _exact_index_over_milvus_lite,
    "approximate-index+milvus-lite": _approximate_index_over_milvus_lite,
    "routed+milvus-lite": _routed_milvus_lite,
    "routed+exact-index+milvus-lite": _routed_exact_index_over_milvus_lite,
}


@pytest.fixture(scope="session")
def neo4j_server() -> Iterator[Neo4jServer]:
    """A real Neo4j 5 Community on loopback, one per session (skips, or fails under CI, if none)."""
    yield _neo4j_server()
    stop_server()


def _uses_neo4j(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("graph_store") == "neo4j"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Build the Neo4j launcher (first time: a Maven download) while collecting, so that the
    # build does not count against the first test's timeout.
    if any(_uses_neo4j(item) for item in items):
        ensure_built()


@pytest.fixture(params=sorted(GRAPH_STORES))
def graph_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    store = GRAPH_STORES[request.param](request, tmp_path)
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
