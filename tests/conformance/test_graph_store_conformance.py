"""GraphStore conformance: every implementation in GRAPH_STORES passes these."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.textmem.models import Cube, Edge, Memory, MemoryFilter, Source
from services.textmem.stores.graph import GraphStore
from shared.errors import AlreadyExists, MemosError, NotFound

# Strings that mean something to SQL, FTS5, Cypher, Lucene or Milvus expressions.
HOSTILE_IDS = [
    'a" or 1==1 or "',
    "x') OR 1=1 --",
    'cube\\"]',
    "} RETURN n //",
    "' OR ''='",
    "%",
    "_",
    "*",
    ".*",
    "cube\\",
    "`n` MATCH (m) DETACH DELETE m",
    "$cube_id",
    "{cube_id: 'victim'}",
    'cube_key != "" or "',
    "victim\x00",
    "vïctim 🤖\nnew line",
]

# Queries full of FTS5 (and Lucene) syntax; each must be taken as plain words.
HOSTILE_QUERIES = [
    '"',
    '""',
    '"hotel',
    "hotel*",
    "*",
    "NEAR(hotel inn)",
    "NEAR(hotel, 2)",
    "hotel OR",
    "OR",
    "AND",
    "NOT hotel",
    "inn AND NOT hotel",
    "-hotel",
    "+hotel -inn",
    "memory:hotel",
    "memories_fts:hotel",
    "{memory}: hotel",
    "(hotel",
    "hotel)",
    "((()))",
    "^hotel",
    "hotel~2",
    "hotel\\",
    "'; DROP TABLE memories; --",
    "hotel\x00inn",
    ":",
    "-",
]


def mem(cube: str, text: str = "plain memory text", **fields: object) -> Memory:
    fields.setdefault("id", uuid.uuid4().hex)
    return Memory(cube_id=cube, memory=text, **fields)  # type: ignore[arg-type]


def ids_of(memories: list[Memory]) -> list[str]:
    return [m.id for m in memories]


def lexical_ids(
    store: GraphStore, cube: str, query: str, flt: MemoryFilter | None = None, limit: int = 50
) -> list[str]:
    return [i for i, _ in store.search_lexical(cube, query, flt or MemoryFilter(), limit)]


def list_all(store: GraphStore, cube: str, flt: MemoryFilter | None = None, limit: int = 1000) -> list[str]:
    page, cursor = store.list_memories(cube, flt or MemoryFilter(), limit)
    assert cursor == 0
    return ids_of(page)


# round trip ---------------------------------------------------------------------------
def full_memory(cube: str) -> Memory:
    sources = [
        Source(type="chat", role="user", message_index=0, message_id="m0", chat_time=1_700_000_000.25, content="hi"),
        Source(
            type="file",
            role="user",
            message_index=1,
            message_id="m1",
            file={"file_id": "f1", "filename": "report.pdf", "chunk_index": 2, "chunk_total": 5},
        ),
        Source(type="image", role="user", message_index=1, message_id="m1", image_url="https://example.com/a.png"),
        Source(type="audio", role="user", message_index=1, message_id="m1"),
        Source(
            type="tool_call",
            role="assistant",
            message_index=2,
            message_id="m2",
            content='{"q": "weather"}',
            tool_call_id="call_1",
            tool_name="search",
        ),
        Source(
            type="tool_result", role="tool", message_index=3, message_id="m3", content="sunny", tool_call_id="call_1"
        ),
        Source(type="system", role="system", message_index=4, message_id="m4", content="be brief"),
    ]
    # More than ten, so an order kept as text ("10" < "2") would show.
    sources += [Source(role="user", message_index=i, message_id=f"m{i}", content=f"turn {i}") for i in range(5, 14)]
    return Memory(
        id=uuid.uuid4().hex,
        cube_id=cube,
        memory="user: hi\nassistant: hello there",
        user_id="alice",
        session_id="s-1",
        memory_type="UserMemory",
        status="resolving",
        key="greeting",
        tags=["zeta", "alpha", "mode:fast"],
        sources=sources,
        background="small talk",
        confidence=0.25,
        info={"n": 1, "f": 2.5, "s": "é ✓", "nested": {"list": [1, "x", None, True]}, "empty": {}},
        created_at=1_700_000_000.123456,
        updated_at=1_700_000_001.654321,
        event_time=1_700_000_000.25,
        version=3,
    )


def test_insert_then_get_round_trips_every_field(graph_store: GraphStore) -> None:
    full = full_memory("c")
    bare = Memory(id=uuid.uuid4().hex, cube_id="c", memory="bare", created_at=5.0, updated_at=5.0)
    graph_store.insert_memories("c", [full, bare])

    got = graph_store.get_memories("c", [full.id, bare.id])

    assert got == {full.id: full, bare.id: bare}
    assert [s.message_index for s in got[full.id].sources] == [s.message_index for s in full.sources]
    assert got[full.id].tags == ["zeta", "alpha", "mode:fast"]
    assert got[bare.id].event_time is None and got[bare.id].sources == [] and got[bare.id].info == {}


def test_get_ignores_unknown_and_repeated_ids(graph_store: GraphStore) -> None:
    m = mem("c")
    graph_store.insert_memories("c", [m])
    assert graph_store.get_memories("c", [m.id, "missing", m.id]) == {m.id: m}
    assert graph_store.get_memories("c", []) == {}


def test_get_many_ids_at_once(graph_store: GraphStore) -> None:
    memories = [mem("c", f"memory {i}") for i in range(1200)]
    graph_store.insert_memories("c", memories)
    got = graph_store.get_memories("c", [m.id for m in memories])
    assert set(got) == {m.id for m in memories}


# cube scoping -------------------------------------------------------------------------
def test_memories_of_one_cube_are_invisible_and_untouchable_from_another(graph_store: GraphStore) -> None:
    a1, a2 = mem("A", "apple orchard harvest"), mem("A", "apple pie recipe")
    graph_store.insert_memories("A", [a1, a2], [Edge("A", a1.id, a2.id, "FOLLOWS")])
    b1 = mem("B", "banana bread")
    graph_store.insert_memories("B", [b1])

    assert graph_store.get_memories("B", [a1.id, a2.id]) == {}
    assert list_all(graph_store, "B") == [b1.id]
    assert lexical_ids(graph_store, "B", "apple orchard") == []
    assert graph_store.neighbours("B", a1.id, "FOLLOWS") == []
    assert graph_store.count("B") == 1
    assert graph_store.delete_memories("B", [a1.id, a2.id]) == []
    with pytest.raises(NotFound):
        graph_store.update_memory(dataclasses.replace(a1, cube_id="B", memory="overwritten"))
    assert sorted(graph_store.delete_cube_memories("B")) == [b1.id]

    assert graph_store.get_memories("A", [a1.id, a2.id]) == {a1.id: a1, a2.id: a2}
    assert graph_store.neighbours("A", a1.id, "FOLLOWS") == [a2.id]
    assert lexical_ids(graph_store, "A", "orchard") == [a1.id]


def test_insert_of_a_memory_of_another_cube_is_refused_and_rolled_back(graph_store: GraphStore) -> None:
    ok, stray = mem("A", "first"), mem("B", "stray")
    with pytest.raises(ValueError):
        graph_store.insert_memories("A", [ok, stray], request_id="r1")
    assert graph_store.get_memories("A", [ok.id]) == {}
    assert graph_store.get_memories("B", [stray.id]) == {}
    assert graph_store.memory_ids_for_request("A", "r1") is None
    assert lexical_ids(graph_store, "A", "first") == []
    # Nothing of the failed attempt blocks a retry.
    graph_store.insert_memories("A", [ok], request_id="r1")
    assert graph_store.memory_ids_for_request("A", "r1") == [ok.id]


def test_edges_across_cubes_are_never_stored(graph_store: GraphStore) -> None:
    x = mem("A")
    graph_store.insert_memories("A", [x])
    y = mem("B")
    try:
        graph_store.insert_memories("B", [y], [Edge("B", y.id, x.id, "FOLLOWS"), Edge("B", x.id, y.id, "FOLLOWS")])
    except (ValueError, MemosError):
        pass  # refusing the insert is as good as dropping the edge
    assert graph_store.neighbours("A", x.id, "FOLLOWS") == []
    assert graph_store.neighbours("B", y.id, "FOLLOWS") == []
    assert graph_store.neighbours("B", x.id, "FOLLOWS") == []


# idempotency records ------------------------------------------------------------------
def test_request_id_records_the_ids_in_order(graph_store: GraphStore) -> None:
    ms = [mem("A", f"m {i}") for i in range(3)]
    graph_store.insert_memories("A", ms, request_id="req-1")
    assert graph_store.memory_ids_for_request("A", "req-1") == ids_of(ms)
    assert graph_store.memory_ids_for_request("A", "req-2") is None
    assert graph_store.memory_ids_for_request("B", "req-1") is None


def test_a_forgotten_request_id_can_be_used_again_in_its_cube_only(graph_store: GraphStore) -> None:
    graph_store.insert_memories("A", [mem("A", "first try")], request_id="req-1")
    graph_store.insert_memories("B", [mem("B", "other cube")], request_id="req-1")
    assert graph_store.forget_request("A", "req-1") is True
    assert graph_store.forget_request("A", "req-1") is False  # nothing left to forget
    assert graph_store.memory_ids_for_request("A", "req-1") is None
    assert graph_store.memory_ids_for_request("B", "req-1") is not None
    again = mem("A", "second try")
    graph_store.insert_memories("A", [again], request_id="req-1")
    assert graph_store.memory_ids_for_request("A", "req-1") == [again.id]


def test_insert_without_request_id_records_nothing(graph_store: GraphStore) -> None:
    graph_store.insert_memories("A", [mem("A")])
    assert graph_store.memory_ids_for_request("A", "") is None


def test_duplicate_request_id_raises_already_exists_and_writes_nothing(graph_store: GraphStore) -> None:
    first = mem("A", "original words")
    graph_store.insert_memories("A", [first], request_id="req-1")
    second, third = mem("A", "zebra crossing"), mem("A", "yak shaving")

    with pytest.raises(AlreadyExists):
        graph_store.insert_memories(
            "A", [second, third], [Edge("A", first.id, second.id, "FOLLOWS")], request_id="req-1"
        )

    assert graph_store.get_memories("A", [second.id, third.id]) == {}
    assert graph_store.count("A") == 1
    assert graph_store.memory_ids_for_request("A", "req-1") == [first.id]
    assert graph_store.neighbours("A", first.id, "FOLLOWS") == []
    assert lexical_ids(graph_store, "A", "zebra yak") == []
    # The rolled-back ids are free again.
    graph_store.insert_memories("A", [second])
    assert graph_store.get_memories("A", [second.id]) == {second.id: second}


def test_same_request_id_in_two_cubes_is_two_records(graph_store: GraphStore) -> None:
    a, b = mem("A"), mem("B")
    graph_store.insert_memories("A", [a], request_id="req")
    graph_store.insert_memories("B", [b], request_id="req")
    assert graph_store.memory_ids_for_request("A", "req") == [a.id]
    assert graph_store.memory_ids_for_request("B", "req") == [b.id]


# listing ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "limit"), [(7, 3), (6, 3), (3, 3), (1, 5), (0, 3), (5, 1)])
def test_list_pages_cover_every_memory_exactly_once_in_insertion_order(
    graph_store: GraphStore, n: int, limit: int
) -> None:
    expected = []
    for i in range(n):
        m = mem("A", f"memory {i}")
        graph_store.insert_memories("A", [m])
        expected.append(m.id)
        graph_store.insert_memories("B", [mem("B", f"noise {i}")])  # interleaved rows of another cube

    seen: list[str] = []
    after = 0
    for _ in range(n + 2):
        page, cursor = graph_store.list_memories("A", MemoryFilter(), limit, after)
        assert len(page) <= limit
        assert page or n == 0, "a cursor led to an empty page: the last full page must return cursor 0"
        assert all(m.cube_id == "A" for m in page)
        seen += ids_of(page)
        if cursor == 0:
            break
        assert len(page) == limit
        after = cursor
    else:
        pytest.fail("the cursor never reached the end")
    assert seen == expected


def test_list_pages_apply_the_filter_on_every_page(graph_store: GraphStore) -> None:
    expected = []
    for i in range(9):
        archived = i % 3 == 0
        m = mem("A", f"memory {i}", status="archived" if archived else "activated")
        graph_store.insert_memories("A", [m])
        if not archived:
            expected.append(m.id)
    seen: list[str] = []
    after = 0
    while True:
        page, after = graph_store.list_memories("A", MemoryFilter(), 2, after)
        seen += ids_of(page)
        if not after:
            break
    assert seen == expected


def test_list_returns_full_memories(graph_store: GraphStore) -> None:
    m = full_memory("A")
    graph_store.insert_memories("A", [m])
    page, _ = graph_store.list_memories("A", MemoryFilter(memory_types=("UserMemory",)), 10)
    assert page == [m]


# filters ----------------------------------------------------------------------------
FILTER_DATA = {
    "long": dict(memory_type="LongTermMemory", user_id="u1", session_id="s1", tags=["t1", "t2"], created_at=1000.0),
    "pref": dict(memory_type="PreferenceMemory", user_id="u1", session_id="s1", created_at=2000.0),
    "user": dict(memory_type="UserMemory", user_id="u2", session_id="s2", tags=["t2"], created_at=3000.0),
    "archived": dict(status="archived", user_id="u1", session_id="s1", tags=["t1"], created_at=4000.0),
    "resolving": dict(memory_type="WorkingMemory", status="resolving", user_id="u3", created_at=5000.0),
}

FILTER_CASES = [
    ("default", MemoryFilter(), {"long", "user", "resolving"}),
    ("include_archived", MemoryFilter(include_archived=True), {"long", "user", "resolving", "archived"}),
    ("preferences", MemoryFilter(memory_types=("PreferenceMemory",)), {"pref"}),
    ("two types", MemoryFilter(memory_types=("UserMemory", "LongTermMemory")), {"long", "user"}),
    ("user", MemoryFilter(user_id="u2"), {"user"}),
    ("user+type", MemoryFilter(user_id="u1", memory_types=("PreferenceMemory",)), {"pref"}),
    ("session", MemoryFilter(session_id="s1"), {"long"}),
    ("session archived", MemoryFilter(session_id="s1", include_archived=True), {"long", "archived"}),
    ("one tag", MemoryFilter(tags=("t2",)), {"long", "user"}),
    ("all tags", MemoryFilter(tags=("t1", "t2")), {"long"}),
    ("unknown tag", MemoryFilter(tags=("t3",)), set()),
    ("unknown user", MemoryFilter(user_id="nobody"), set()),
    ("after is inclusive", MemoryFilter(created_after=3000.0), {"user", "resolving"}),
    ("before is exclusive", MemoryFilter(created_before=3000.0), {"long"}),
    ("range", MemoryFilter(created_after=1000.0, created_before=5000.0), {"long", "user"}),
    ("fractional bounds", MemoryFilter(created_after=999.999, created_before=1000.001), {"long"}),
]


@pytest.fixture
def filter_memories(graph_store: GraphStore) -> dict[str, str]:
    """name -> id of FILTER_DATA memories in cube "F"; each text has the word 'shared'."""
    ids = {}
    for name, fields in FILTER_DATA.items():
        m = mem("F", f"shared words about {name}", **fields)
        graph_store.insert_memories("F", [m])
        ids[name] = m.id
    # Same shape in another cube, to catch filters that forget the cube.
    for name, fields in FILTER_DATA.items():
        graph_store.insert_memories("G", [mem("G", f"shared words about {name}", **fields)])
    return ids


@pytest.mark.parametrize(("flt", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_filters_select_the_same_memories_in_list_count_and_lexical_search(
    graph_store: GraphStore, filter_memories: dict[str, str], flt: MemoryFilter, expected: set[str]
) -> None:
    names = {v: k for k, v in filter_memories.items()}
    assert {names[i] for i in list_all(graph_store, "F", flt)} == expected
    assert graph_store.count("F", flt) == len(expected)
    assert {names[i] for i in lexical_ids(graph_store, "F", "shared words", flt)} == expected


def test_count_without_filter_counts_every_memory_of_the_cube(
    graph_store: GraphStore, filter_memories: dict[str, str]
) -> None:
    assert graph_store.count("F") == len(FILTER_DATA)
    assert graph_store.count("nothing-here") == 0


# lexical search ---------------------------------------------------------------------------
DOCS = {
    "music": "My sister Mei is a violinist in the Shanghai Symphony Orchestra.",
    "hotel": "I booked a room at the 7 Days Inn hotel in Guangzhou for the summer.",
    "weather": "We talked about the rainy weather in spring.",
}


@pytest.fixture
def docs(graph_store: GraphStore) -> dict[str, str]:
    ids = {}
    for name, text in DOCS.items():
        m = mem("L", text)
        graph_store.insert_memories("L", [m])
        ids[name] = m.id
    return ids


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("Which hotel did I book in Guangzhou?", "hotel"),
        ("violin orchestra sister", "music"),
        ("VIOLINIST shanghai", "music"),
        ("what was the weather like", "weather"),
    ],
)
def test_lexical_search_ranks_the_matching_memory_first(
    graph_store: GraphStore, docs: dict[str, str], query: str, best: str
) -> None:
    hits = graph_store.search_lexical("L", query, MemoryFilter(), 10)
    assert hits, query
    assert hits[0][0] == docs[best]
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("query", ["xylophone quasar", "", "   ", "?!...", "--", "🤖"])
def test_lexical_search_without_matching_words_returns_nothing(
    graph_store: GraphStore, docs: dict[str, str], query: str
) -> None:
    assert graph_store.search_lexical("L", query, MemoryFilter(), 10) == []


def test_lexical_search_honours_the_limit(graph_store: GraphStore) -> None:
    graph_store.insert_memories("L", [mem("L", f"common word number {i}") for i in range(10)])
    assert len(graph_store.search_lexical("L", "common word", MemoryFilter(), 4)) == 4


def test_lexical_search_with_only_stopwords_still_searches(graph_store: GraphStore) -> None:
    m = mem("L", "to be or not to be")
    graph_store.insert_memories("L", [m])
    assert lexical_ids(graph_store, "L", "to be") == [m.id]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_lexical_search_treats_query_syntax_as_plain_words(
    graph_store: GraphStore, docs: dict[str, str], query: str
) -> None:
    hits = lexical_ids(graph_store, "L", query)
    assert set(hits) <= set(docs.values())
    if "hotel" in query.lower():
        # "NOT hotel", "-hotel" and the like must not exclude it: operators are words here.
        assert docs["hotel"] in hits
    assert graph_store.count("L") == len(DOCS)


def test_lexical_search_finds_operator_words_in_memories(graph_store: GraphStore) -> None:
    m = mem("L", "NEAR the AND gate OR the NOT gate")
    graph_store.insert_memories("L", [m])
    assert lexical_ids(graph_store, "L", "NEAR") == [m.id]
    assert lexical_ids(graph_store, "L", "gate AND") == [m.id]


# update -----------------------------------------------------------------------------------
def test_update_replaces_text_and_metadata_and_keeps_sources(graph_store: GraphStore) -> None:
    old = full_memory("U")
    old.status = "activated"
    old.memory = "alpha bravo"
    graph_store.insert_memories("U", [old])
    new = dataclasses.replace(
        old,
        memory="charlie delta",
        memory_type="LongTermMemory",
        status="activated",
        key="new key",
        tags=["fresh"],
        background="new background",
        confidence=0.75,
        info={"edited": True},
        updated_at=old.updated_at + 100,
        version=old.version + 1,
        sources=[],
    )

    graph_store.update_memory(new)

    got = graph_store.get_memories("U", [old.id])[old.id]
    assert got == dataclasses.replace(new, sources=old.sources)
    assert lexical_ids(graph_store, "U", "alpha bravo") == []
    assert lexical_ids(graph_store, "U", "charlie") == [old.id]
    assert list_all(graph_store, "U", MemoryFilter(tags=(old.tags[0],))) == []
    assert list_all(graph_store, "U", MemoryFilter(tags=("fresh",))) == [old.id]
    assert list_all(graph_store, "U", MemoryFilter(memory_types=("UserMemory",))) == []


def test_update_to_archived_hides_the_memory_by_default(graph_store: GraphStore) -> None:
    m = mem("U", "soon archived")
    graph_store.insert_memories("U", [m])
    graph_store.update_memory(dataclasses.replace(m, status="archived", version=2))
    assert list_all(graph_store, "U") == []
    assert lexical_ids(graph_store, "U", "archived") == []
    assert list_all(graph_store, "U", MemoryFilter(include_archived=True)) == [m.id]


def test_update_of_a_missing_memory_raises_not_found(graph_store: GraphStore) -> None:
    with pytest.raises(NotFound):
        graph_store.update_memory(mem("U", id="does-not-exist"))
    assert graph_store.count("U") == 0


# delete -----------------------------------------------------------------------------------
def test_delete_removes_memories_with_their_sources_and_edges(graph_store: GraphStore) -> None:
    a, b, c = mem("D", "alpha"), mem("D", "bravo", sources=[Source(content="src")]), mem("D", "charlie")
    edges = [Edge("D", a.id, b.id, "FOLLOWS"), Edge("D", b.id, c.id, "FOLLOWS"), Edge("D", a.id, c.id, "RELATED")]
    graph_store.insert_memories("D", [a, b, c], edges)

    assert graph_store.delete_memories("D", [b.id, "missing", b.id]) == [b.id]

    assert graph_store.get_memories("D", [b.id]) == {}
    assert graph_store.neighbours("D", a.id, "FOLLOWS") == []
    assert graph_store.neighbours("D", c.id, "FOLLOWS") == []
    assert graph_store.neighbours("D", b.id, "FOLLOWS") == []
    assert graph_store.neighbours("D", a.id, "RELATED") == [c.id]
    assert lexical_ids(graph_store, "D", "bravo") == []
    assert graph_store.count("D") == 2
    assert graph_store.delete_memories("D", [b.id]) == []
    # Nothing of the deleted memory lingers under its id.
    graph_store.insert_memories("D", [mem("D", "reborn", id=b.id)])
    assert graph_store.get_memories("D", [b.id])[b.id].sources == []
    assert graph_store.neighbours("D", b.id, "FOLLOWS") == []


def test_delete_returns_only_the_ids_that_existed(graph_store: GraphStore) -> None:
    ms = [mem("D") for _ in range(3)]
    graph_store.insert_memories("D", ms)
    assert sorted(graph_store.delete_memories("D", [ms[0].id, ms[2].id, "nope"])) == sorted([ms[0].id, ms[2].id])
    assert graph_store.delete_memories("D", []) == []
    assert list_all(graph_store, "D") == [ms[1].id]


def test_delete_cube_memories_empties_only_that_cube(graph_store: GraphStore) -> None:
    a = [mem("A", f"apple {i}") for i in range(3)]
    graph_store.insert_memories("A", a, [Edge("A", a[0].id, a[1].id, "FOLLOWS")], request_id="r")
    b = [mem("B", f"apple {i}") for i in range(2)]
    graph_store.insert_memories("B", b, [Edge("B", b[0].id, b[1].id, "FOLLOWS")])

    assert sorted(graph_store.delete_cube_memories("A")) == sorted(ids_of(a))

    assert graph_store.count("A") == 0
    assert list_all(graph_store, "A", MemoryFilter(include_archived=True)) == []
    assert lexical_ids(graph_store, "A", "apple") == []
    assert graph_store.neighbours("A", a[0].id, "FOLLOWS") == []
    assert graph_store.get_memories("B", ids_of(b)) == {m.id: m for m in b}
    assert graph_store.neighbours("B", b[0].id, "FOLLOWS") == [b[1].id]
    assert graph_store.delete_cube_memories("A") == []


# neighbours -------------------------------------------------------------------------------
def test_neighbours_follow_edges_of_one_type_in_both_directions(graph_store: GraphStore) -> None:
    a, b, c, d = (mem("N", name) for name in "abcd")
    edges = [Edge("N", a.id, b.id, "FOLLOWS"), Edge("N", c.id, a.id, "FOLLOWS"), Edge("N", a.id, d.id, "RELATED")]
    graph_store.insert_memories("N", [a, b, c, d], edges)
    assert sorted(graph_store.neighbours("N", a.id, "FOLLOWS")) == sorted([b.id, c.id])
    assert graph_store.neighbours("N", b.id, "FOLLOWS") == [a.id]
    assert graph_store.neighbours("N", a.id, "RELATED") == [d.id]
    assert graph_store.neighbours("N", d.id, "RELATED") == [a.id]
    assert graph_store.neighbours("N", a.id, "OTHER") == []
    assert graph_store.neighbours("N", "missing", "FOLLOWS") == []


def test_neighbours_many_answers_each_id_as_neighbours_does(graph_store: GraphStore) -> None:
    a, b, c, d = (mem("N", name) for name in "abcd")
    other = mem("O", "other cube")
    edges = [Edge("N", a.id, b.id, "FOLLOWS"), Edge("N", c.id, a.id, "FOLLOWS"), Edge("N", a.id, d.id, "RELATED")]
    graph_store.insert_memories("N", [a, b, c, d], edges)
    graph_store.insert_memories("O", [other])
    ids = [a.id, b.id, d.id, a.id, "missing", other.id]
    many = graph_store.neighbours_many("N", ids, "FOLLOWS")
    assert set(many) == set(ids)
    for mid in ids:
        assert sorted(many[mid]) == sorted(graph_store.neighbours("N", mid, "FOLLOWS"))
    assert sorted(many[a.id]) == sorted([b.id, c.id])
    assert many[d.id] == [] and many["missing"] == [] and many[other.id] == []
    assert graph_store.neighbours_many("N", [], "FOLLOWS") == {}


def test_repeated_edges_are_stored_once(graph_store: GraphStore) -> None:
    a, b = mem("N"), mem("N")
    graph_store.insert_memories("N", [a, b], [Edge("N", a.id, b.id, "FOLLOWS")] * 2)
    assert graph_store.neighbours("N", a.id, "FOLLOWS") == [b.id]


# cubes ------------------------------------------------------------------------------------
def test_cube_registry_lifecycle(graph_store: GraphStore) -> None:
    cube = Cube("team", "alice", "The Team", members={"bob": "reader"}, created_at=1_700_000_000.5)
    assert graph_store.create_cube(cube) == cube
    assert graph_store.get_cube("team") == cube
    assert graph_store.get_cube("missing") is None

    with pytest.raises(AlreadyExists):
        graph_store.create_cube(Cube("team", "mallory", "hijack"))
    assert graph_store.get_cube("team") == cube

    assert [c.cube_id for c in graph_store.list_cubes("alice")] == ["team"]
    assert [c.cube_id for c in graph_store.list_cubes("bob")] == ["team"]
    assert graph_store.list_cubes("carol") == []

    updated = graph_store.set_member("team", "carol", "writer")
    assert updated.members == {"bob": "reader", "carol": "writer"}
    assert graph_store.set_member("team", "bob", "writer").members == {"bob": "writer", "carol": "writer"}
    assert graph_store.set_member("team", "bob", "").members == {"carol": "writer"}
    assert graph_store.set_member("team", "nobody", "").members == {"carol": "writer"}
    assert graph_store.get_cube("team").members == {"carol": "writer"}  # type: ignore[union-attr]
    assert graph_store.list_cubes("bob") == []
    assert [c.cube_id for c in graph_store.list_cubes("carol")] == ["team"]

    with pytest.raises(NotFound):
        graph_store.set_member("missing", "bob", "reader")
    assert graph_store.get_cube("missing") is None

    graph_store.delete_cube("team")
    assert graph_store.get_cube("team") is None
    assert graph_store.list_cubes("alice") == []
    assert graph_store.list_cubes("carol") == []
    graph_store.delete_cube("team")  # deleting twice is harmless

    again = graph_store.create_cube(Cube("team", "dave", created_at=2.0))
    assert graph_store.get_cube("team") == again
    assert again.members == {}


def test_list_cubes_lists_owned_and_shared_cubes_once(graph_store: GraphStore) -> None:
    graph_store.create_cube(Cube("c1", "alice"))
    graph_store.create_cube(Cube("c2", "bob", members={"alice": "writer"}))
    graph_store.create_cube(Cube("c3", "bob"))
    graph_store.create_cube(Cube("c4", "alice", members={"alice": "reader"}))  # odd, but listed once
    assert sorted(c.cube_id for c in graph_store.list_cubes("alice")) == ["c1", "c2", "c4"]
    assert sorted(c.cube_id for c in graph_store.list_cubes("bob")) == ["c2", "c3"]


def test_deleting_a_cube_record_keeps_other_cubes(graph_store: GraphStore) -> None:
    graph_store.create_cube(Cube("keep", "alice", members={"bob": "reader"}))
    graph_store.create_cube(Cube("drop", "alice", members={"bob": "reader"}))
    graph_store.delete_cube("drop")
    assert [c.cube_id for c in graph_store.list_cubes("bob")] == ["keep"]
    assert graph_store.get_cube("keep").members == {"bob": "reader"}  # type: ignore[union-attr]


# hostile identifiers ------------------------------------------------------------------
@pytest.fixture
def victim(graph_store: GraphStore) -> Memory:
    m = mem("victim", "secret payload of the victim", user_id="victim", session_id="victim", tags=["victim"])
    graph_store.insert_memories("victim", [m], request_id="victim")
    graph_store.create_cube(Cube("victim", "victim", members={"friend": "reader"}))
    return m


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_are_stored_and_found_literally(graph_store: GraphStore, victim: Memory, hostile: str) -> None:
    m = mem(hostile, "hostile payload", id=hostile, user_id=hostile, session_id=hostile, tags=[hostile])
    graph_store.insert_memories(hostile, [m], request_id=hostile)

    assert graph_store.get_memories(hostile, [hostile, victim.id]) == {hostile: m}
    assert list_all(graph_store, hostile) == [hostile]
    assert graph_store.count(hostile) == 1
    assert lexical_ids(graph_store, hostile, "payload") == [hostile]
    assert graph_store.memory_ids_for_request(hostile, hostile) == [hostile]
    for flt in (MemoryFilter(user_id=hostile), MemoryFilter(session_id=hostile), MemoryFilter(tags=(hostile,))):
        assert list_all(graph_store, hostile, flt) == [hostile]
        assert list_all(graph_store, "victim", flt) == []
        assert graph_store.count(hostile, flt) == 1


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_never_reach_another_cube(graph_store: GraphStore, victim: Memory, hostile: str) -> None:
    assert graph_store.get_memories(hostile, [victim.id]) == {}
    assert graph_store.get_memories("victim", [hostile]) == {}
    assert list_all(graph_store, hostile, MemoryFilter(include_archived=True)) == []
    assert graph_store.count(hostile) == 0
    assert lexical_ids(graph_store, hostile, "secret payload victim") == []
    assert graph_store.memory_ids_for_request(hostile, "victim") is None
    assert graph_store.memory_ids_for_request("victim", hostile) is None
    assert graph_store.delete_memories(hostile, [victim.id, hostile]) == []
    assert graph_store.delete_memories("victim", [hostile]) == []
    with pytest.raises(NotFound):
        graph_store.update_memory(dataclasses.replace(victim, cube_id=hostile, memory="pwned"))
    with pytest.raises(NotFound):
        graph_store.update_memory(dataclasses.replace(victim, id=hostile, memory="pwned"))
    assert graph_store.delete_cube_memories(hostile) == []
    assert graph_store.neighbours(hostile, victim.id, "FOLLOWS") == []

    assert graph_store.get_memories("victim", [victim.id]) == {victim.id: victim}
    assert graph_store.memory_ids_for_request("victim", "victim") == [victim.id]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_cube_ids_in_the_registry(graph_store: GraphStore, victim: Memory, hostile: str) -> None:
    assert graph_store.get_cube(hostile) is None
    assert graph_store.list_cubes(hostile) == []
    cube = Cube(hostile, hostile, hostile, members={hostile: "writer"})
    graph_store.create_cube(cube)
    assert graph_store.get_cube(hostile) == cube
    assert [c.cube_id for c in graph_store.list_cubes(hostile)] == [hostile]
    with pytest.raises(NotFound):
        graph_store.set_member(hostile + "x", "friend", "writer")
    graph_store.set_member(hostile, "friend", "")
    graph_store.delete_cube(hostile)
    assert graph_store.get_cube(hostile) is None
    assert graph_store.get_cube("victim") == Cube(
        "victim",
        "victim",
        "",
        {"friend": "reader"},
        graph_store.get_cube("victim").created_at,  # type: ignore[union-attr]
    )


# concurrency ----------------------------------------------------------------------------
def test_concurrent_retries_of_one_request_store_exactly_one_batch(graph_store: GraphStore) -> None:
    attempts = [mem("R", f"attempt {i}") for i in range(8)]
    barrier = threading.Barrier(len(attempts))

    def attempt(m: Memory) -> str:
        barrier.wait()
        try:
            graph_store.insert_memories("R", [m], request_id="same-request")
        except AlreadyExists:
            return "duplicate"
        return m.id

    with ThreadPoolExecutor(len(attempts)) as pool:
        outcomes = list(pool.map(attempt, attempts))

    winners = [o for o in outcomes if o != "duplicate"]
    assert len(winners) == 1
    assert graph_store.memory_ids_for_request("R", "same-request") == winners
    assert list_all(graph_store, "R") == winners


def test_writes_of_one_thread_are_visible_to_others(graph_store: GraphStore) -> None:
    m = mem("T", "written elsewhere")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(graph_store.insert_memories, "T", [m]).result()
    assert graph_store.get_memories("T", [m.id]) == {m.id: m}
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lexical_ids, graph_store, "T", "elsewhere").result() == [m.id]
