"""VectorStore conformance: every implementation in VECTOR_STORES passes these.

The store is shared by the tests of this module (opening Milvus Lite is slow);
each test works in cubes of its own (``new_cube``) with fresh hex memory ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pytest

from services.textmem.models import MemoryFilter
from services.textmem.stores.vector import VectorRecord, VectorStore

DIM = 8

HOSTILE = [
    'a" or 1==1 or "',
    "x') OR 1=1 --",
    'cube\\"]',
    "} RETURN n //",
    '" || cube_key != "',
    "' or cube_key like '%",
    "\\",
    "%",
    "*",
    "\x00",
    "🤖\n",
]

NewCube = Callable[..., str]


def unit(*weights: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def rec(cube: str, vector: np.ndarray, **fields: object) -> VectorRecord:
    values: dict[str, object] = dict(
        id=uuid.uuid4().hex,
        cube_id=cube,
        user_id="u",
        session_id="s",
        memory_type="LongTermMemory",
        status="activated",
        created_at=1_700_000_000.0,
    )
    values.update(fields)
    return VectorRecord(vector=vector, **values)  # type: ignore[arg-type]


def hit_ids(store: VectorStore, cube: str, vector: np.ndarray, flt: MemoryFilter | None = None, limit: int = 50):
    return [i for i, _ in store.search(cube, vector, flt or MemoryFilter(), limit)]


def test_dimension_is_exposed(vector_store: VectorStore) -> None:
    assert vector_store.dim == DIM


def test_search_returns_nearest_first_with_cosine_similarity(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    same, diagonal, orthogonal, opposite = (
        rec(cube, axis(0)),
        rec(cube, unit(1, 1)),
        rec(cube, axis(1)),
        rec(cube, -axis(0)),
    )
    vector_store.upsert([orthogonal, opposite, same, diagonal])

    # Cosine similarity does not depend on the query's length.
    hits = vector_store.search(cube, 3.0 * axis(0), MemoryFilter(), 10)

    assert [i for i, _ in hits] == [same.id, diagonal.id, orthogonal.id, opposite.id]
    assert [s for _, s in hits] == pytest.approx([1.0, 2**-0.5, 0.0, -1.0], abs=1e-4)


@pytest.mark.parametrize("hostile", ["", 'x" or 1==1 or "', "a\\"])
def test_search_many_equals_searching_each_cube(vector_store: VectorStore, new_cube: NewCube, hostile: str) -> None:
    rng = np.random.default_rng(7)
    cubes = [new_cube("many0") + hostile, new_cube("many1"), new_cube("many2")]
    # Uneven cubes: one crowded with near matches must not starve the others of their top hits.
    for n, cube in zip((30, 4, 0), cubes, strict=True):
        vector_store.upsert([rec(cube, axis(0) + 0.3 * rng.normal(size=8)) for _ in range(n)])
    other = new_cube("outsider")
    vector_store.upsert([rec(other, axis(0))])
    flt = MemoryFilter()
    many = vector_store.search_many(cubes, axis(0), flt, 5)
    assert set(many) == set(cubes)
    for cube in cubes:
        single = vector_store.search(cube, axis(0), flt, 5)
        assert [i for i, _ in many[cube]] == [i for i, _ in single]
        assert [s for _, s in many[cube]] == pytest.approx([s for _, s in single], abs=1e-5)
    assert len(many[cubes[0]]) == 5 and len(many[cubes[1]]) == 4 and many[cubes[2]] == []


def test_search_honours_the_limit(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    records = [rec(cube, unit(1, i / 10)) for i in range(6)]
    vector_store.upsert(records)
    assert hit_ids(vector_store, cube, axis(0), limit=2) == [records[0].id, records[1].id]


def test_search_of_an_empty_cube_returns_nothing(vector_store: VectorStore, new_cube: NewCube) -> None:
    assert vector_store.search(new_cube(), axis(0), MemoryFilter(), 5) == []
    assert vector_store.count(new_cube()) == 0


def test_upsert_of_nothing_is_a_no_op(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    vector_store.upsert([])
    assert vector_store.count(cube) == 0


def test_upsert_is_idempotent_and_replaces_fields(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    first = rec(cube, axis(0), memory_type="LongTermMemory", user_id="u1")
    vector_store.upsert([first])
    vector_store.upsert([first])
    assert vector_store.count(cube) == 1

    second = rec(cube, axis(2), id=first.id, memory_type="UserMemory", user_id="u2")
    vector_store.upsert([second])

    assert vector_store.count(cube) == 1
    hits = vector_store.search(cube, axis(2), MemoryFilter(), 10)
    assert [i for i, _ in hits] == [first.id]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(vector_store.get_vectors(cube, [first.id])[first.id], axis(2), atol=1e-5)
    assert hit_ids(vector_store, cube, axis(2), MemoryFilter(memory_types=("UserMemory",))) == [first.id]
    assert hit_ids(vector_store, cube, axis(2), MemoryFilter(memory_types=("LongTermMemory",))) == []
    assert hit_ids(vector_store, cube, axis(2), MemoryFilter(user_id="u2")) == [first.id]
    assert hit_ids(vector_store, cube, axis(2), MemoryFilter(user_id="u1")) == []


def test_upsert_to_archived_hides_the_vector_by_default(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    r = rec(cube, axis(0))
    vector_store.upsert([r])
    vector_store.upsert([rec(cube, axis(0), id=r.id, status="archived")])
    assert hit_ids(vector_store, cube, axis(0)) == []
    assert hit_ids(vector_store, cube, axis(0), MemoryFilter(include_archived=True)) == [r.id]


def test_get_vectors_returns_the_cubes_vectors_only(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube, other = new_cube("a"), new_cube("b")
    a, b = rec(cube, unit(1, 2, 3)), rec(cube, axis(4))
    foreign = rec(other, axis(5))
    vector_store.upsert([a, b, foreign])

    got = vector_store.get_vectors(cube, [a.id, b.id, foreign.id, uuid.uuid4().hex])

    assert set(got) == {a.id, b.id}
    np.testing.assert_allclose(got[a.id], a.vector, atol=1e-5)
    np.testing.assert_allclose(got[b.id], b.vector, atol=1e-5)
    assert got[a.id].shape == (DIM,)
    assert vector_store.get_vectors(cube, []) == {}


def test_delete_removes_vectors_from_search_count_and_get(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    keep, drop = rec(cube, axis(0)), rec(cube, unit(1, 1))
    vector_store.upsert([keep, drop])

    vector_store.delete(cube, [drop.id, uuid.uuid4().hex])

    assert hit_ids(vector_store, cube, axis(0)) == [keep.id]
    assert vector_store.count(cube) == 1
    assert vector_store.get_vectors(cube, [drop.id]) == {}
    vector_store.delete(cube, [])
    vector_store.delete(cube, [drop.id])  # twice is harmless
    assert vector_store.count(cube) == 1


def test_delete_many_ids_at_once(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube = new_cube()
    records = [rec(cube, unit(1, i / 1000)) for i in range(1100)]
    vector_store.upsert(records)
    assert vector_store.count(cube) == 1100
    vector_store.delete(cube, [r.id for r in records[:1050]])
    assert vector_store.count(cube) == 50


def test_delete_cube_removes_only_that_cube(vector_store: VectorStore, new_cube: NewCube) -> None:
    cube, other = new_cube("a"), new_cube("b")
    vector_store.upsert([rec(cube, axis(0)), rec(cube, axis(1))])
    survivor = rec(other, axis(0))
    vector_store.upsert([survivor])

    vector_store.delete_cube(cube)

    assert vector_store.count(cube) == 0
    assert hit_ids(vector_store, cube, axis(0)) == []
    assert hit_ids(vector_store, other, axis(0)) == [survivor.id]
    # The cube can be used again.
    again = rec(cube, axis(3))
    vector_store.upsert([again])
    assert hit_ids(vector_store, cube, axis(3)) == [again.id]


def test_cubes_never_see_each_others_vectors(vector_store: VectorStore, new_cube: NewCube) -> None:
    a, b = new_cube("a"), new_cube("b")
    in_a = [rec(a, axis(0)), rec(a, axis(1))]
    in_b = [rec(b, axis(0))]
    vector_store.upsert(in_a + in_b)

    assert hit_ids(vector_store, a, axis(0)) == [in_a[0].id, in_a[1].id]
    assert hit_ids(vector_store, b, axis(0), MemoryFilter(include_archived=True)) == [in_b[0].id]
    assert vector_store.count(a) == 2 and vector_store.count(b) == 1
    assert vector_store.get_vectors(b, [r.id for r in in_a]) == {}

    vector_store.delete(b, [r.id for r in in_a])
    assert vector_store.count(a) == 2


PREF = MemoryFilter(memory_types=("PreferenceMemory",))
LONG_AND_PREF = MemoryFilter(memory_types=("LongTermMemory", "PreferenceMemory"))


def test_upsert_changing_the_type_moves_the_vector(vector_store: VectorStore, new_cube: NewCube) -> None:
    """A store may keep some types apart (preferences, RoutedVectorStore): an update that changes
    a memory's type must leave it under its new type only, and once."""
    cube = new_cube()
    moving = rec(cube, axis(0), memory_type="LongTermMemory")
    pref = rec(cube, unit(1, 1), memory_type="PreferenceMemory")
    vector_store.upsert([moving, pref])
    assert hit_ids(vector_store, cube, axis(0), LONG_AND_PREF) == [moving.id, pref.id]

    vector_store.upsert([rec(cube, axis(0), id=moving.id, memory_type="PreferenceMemory")])
    assert vector_store.count(cube) == 2
    assert hit_ids(vector_store, cube, axis(0), PREF) == [moving.id, pref.id]
    assert hit_ids(vector_store, cube, axis(0)) == []
    assert hit_ids(vector_store, cube, axis(0), LONG_AND_PREF) == [moving.id, pref.id]
    assert set(vector_store.get_vectors(cube, [moving.id, pref.id])) == {moving.id, pref.id}

    vector_store.upsert([rec(cube, axis(2), id=moving.id, memory_type="UserMemory")])
    assert vector_store.count(cube) == 2
    assert hit_ids(vector_store, cube, axis(2)) == [moving.id]
    assert hit_ids(vector_store, cube, axis(2), PREF) == [pref.id]
    np.testing.assert_allclose(vector_store.get_vectors(cube, [moving.id])[moving.id], axis(2), atol=1e-5)

    vector_store.delete(cube, [moving.id, pref.id])
    assert vector_store.count(cube) == 0
    assert hit_ids(vector_store, cube, axis(0), LONG_AND_PREF) == []


def test_mixed_type_searches_merge_by_similarity(vector_store: VectorStore, new_cube: NewCube) -> None:
    cubes = [new_cube("mix0"), new_cube("mix1"), new_cube("mix2")]
    rng = np.random.default_rng(11)
    for n, cube in zip((12, 3, 0), cubes, strict=True):
        vector_store.upsert(
            [
                rec(cube, axis(0) + 0.5 * rng.normal(size=8), memory_type=("PreferenceMemory", "LongTermMemory")[i % 2])
                for i in range(n)
            ]
        )
    for cube in cubes:
        every = vector_store.search(cube, axis(0), LONG_AND_PREF, 50)
        prefs = vector_store.search(cube, axis(0), PREF, 50)
        longs = vector_store.search(cube, axis(0), MemoryFilter(memory_types=("LongTermMemory",)), 50)
        assert {i for i, _ in every} == {i for i, _ in prefs} | {i for i, _ in longs}
        assert [s for _, s in every] == sorted((s for _, s in every), reverse=True)
        top = vector_store.search(cube, axis(0), LONG_AND_PREF, 4)
        assert [i for i, _ in top] == [i for i, _ in every[:4]]
    many = vector_store.search_many(cubes, axis(0), LONG_AND_PREF, 4)
    for cube in cubes:
        assert [i for i, _ in many[cube]] == [i for i, _ in vector_store.search(cube, axis(0), LONG_AND_PREF, 4)]
    assert [len(many[c]) for c in cubes] == [4, 3, 0]
    pref_many = vector_store.search_many(cubes, axis(0), PREF, 4)
    assert [len(pref_many[c]) for c in cubes] == [4, 2, 0]

    vector_store.delete_cube(cubes[0])
    assert vector_store.count(cubes[0]) == 0
    assert vector_store.search(cubes[0], axis(0), PREF, 4) == []
    assert vector_store.count(cubes[1]) == 3


# filters ------------------------------------------------------------------------------
FILTER_DATA = {
    "long": dict(memory_type="LongTermMemory", user_id="u1", session_id="s1", created_at=1000.0),
    "pref": dict(memory_type="PreferenceMemory", user_id="u1", session_id="s1", created_at=2000.0),
    "user": dict(memory_type="UserMemory", user_id="u2", session_id="s2", created_at=3000.0),
    "archived": dict(status="archived", user_id="u1", session_id="s1", created_at=4000.0),
    "resolving": dict(memory_type="WorkingMemory", status="resolving", user_id="u3", created_at=5000.5),
}

FILTER_CASES = [
    ("default", MemoryFilter(), {"long", "user", "resolving"}),
    ("include_archived", MemoryFilter(include_archived=True), {"long", "user", "resolving", "archived"}),
    ("preferences", MemoryFilter(memory_types=("PreferenceMemory",)), {"pref"}),
    ("two types", MemoryFilter(memory_types=("UserMemory", "LongTermMemory")), {"long", "user"}),
    ("archived type", MemoryFilter(memory_types=("LongTermMemory",), include_archived=True), {"long", "archived"}),
    ("user", MemoryFilter(user_id="u2"), {"user"}),
    ("user+type", MemoryFilter(user_id="u1", memory_types=("PreferenceMemory",)), {"pref"}),
    ("session", MemoryFilter(session_id="s1"), {"long"}),
    ("session archived", MemoryFilter(session_id="s1", include_archived=True), {"long", "archived"}),
    ("unknown user", MemoryFilter(user_id="nobody"), set()),
    ("after is inclusive", MemoryFilter(created_after=3000.0), {"user", "resolving"}),
    ("before is exclusive", MemoryFilter(created_before=3000.0), {"long"}),
    ("range", MemoryFilter(created_after=1000.0, created_before=5000.0), {"long", "user"}),
    ("fractional after", MemoryFilter(created_after=5000.5), {"resolving"}),
    ("fractional before", MemoryFilter(created_before=5000.5, memory_types=("WorkingMemory",)), set()),
]


@pytest.fixture
def filter_cube(vector_store: VectorStore, new_cube: NewCube) -> tuple[str, dict[str, str]]:
    cube, twin = new_cube("f"), new_cube("twin")
    ids = {}
    for name, fields in FILTER_DATA.items():
        r = rec(cube, unit(1, 0.1 * len(ids)), **fields)
        ids[name] = r.id
        vector_store.upsert([r, rec(twin, unit(1, 0.1 * len(ids)), **fields)])
    return cube, ids


@pytest.mark.parametrize(("flt", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_search_filters(
    vector_store: VectorStore, filter_cube: tuple[str, dict[str, str]], flt: MemoryFilter, expected: set[str]
) -> None:
    cube, ids = filter_cube
    names = {v: k for k, v in ids.items()}
    assert {names[i] for i in hit_ids(vector_store, cube, axis(0), flt)} == expected


@pytest.mark.parametrize(
    ("created_at", "flt", "found"),
    [
        (1000.0004, MemoryFilter(created_before=1000.0006), True),
        (1000.0004, MemoryFilter(created_after=1000.0006), False),
    ],
    ids=["before", "after"],
)
def test_time_filters_are_as_precise_as_the_filter(
    vector_store: VectorStore, new_cube: NewCube, created_at: float, flt: MemoryFilter, found: bool
) -> None:
    cube = new_cube()
    r = rec(cube, axis(0), created_at=created_at)
    vector_store.upsert([r])
    assert hit_ids(vector_store, cube, axis(0), flt) == ([r.id] if found else [])


# hostile identifiers --------------------------------------------------------------------
@pytest.mark.parametrize("hostile", HOSTILE)
def test_cube_ids_differing_by_expression_syntax_stay_apart(
    vector_store: VectorStore, new_cube: NewCube, hostile: str
) -> None:
    victim = new_cube("victim")
    attackers = [victim + hostile, hostile + victim, victim + hostile + victim]
    secret = rec(victim, axis(0))
    vector_store.upsert([secret])
    own = {c: rec(c, axis(1)) for c in attackers}
    vector_store.upsert(list(own.values()))

    for cube, r in own.items():
        assert hit_ids(vector_store, cube, axis(0), MemoryFilter(include_archived=True)) == [r.id]
        assert vector_store.count(cube) == 1
        assert vector_store.get_vectors(cube, [secret.id]) == {}
        vector_store.delete(cube, [secret.id])
        vector_store.delete_cube(cube)
        assert vector_store.count(cube) == 0

    assert hit_ids(vector_store, victim, axis(0)) == [secret.id]
    assert vector_store.count(victim) == 1


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_user_and_session_ids_filter_literally(
    vector_store: VectorStore, new_cube: NewCube, hostile: str
) -> None:
    cube = new_cube()
    plain = rec(cube, axis(0), user_id="alice", session_id="s")
    odd = rec(cube, axis(0), user_id=hostile, session_id=hostile)
    vector_store.upsert([plain, odd])
    assert hit_ids(vector_store, cube, axis(0), MemoryFilter(user_id=hostile)) == [odd.id]
    assert hit_ids(vector_store, cube, axis(0), MemoryFilter(session_id=hostile)) == [odd.id]
    assert hit_ids(vector_store, cube, axis(0), MemoryFilter(user_id="alice")) == [plain.id]


@pytest.mark.parametrize("hostile", [*HOSTILE, "ABCDEF12", "deadbeef" + "0" * 60])
def test_hostile_memory_ids_are_refused_or_literal(vector_store: VectorStore, new_cube: NewCube, hostile: str) -> None:
    """Memory ids are textmem's hex UUIDs; a store may refuse others (ValueError), never misread them."""
    cube = new_cube()
    bystanders = [rec(cube, axis(0)), rec(cube, axis(1))]
    vector_store.upsert(bystanders)

    try:
        vector_store.upsert([rec(cube, axis(2), id=hostile)])
        stored = True
    except ValueError:
        stored = False
    try:
        got = vector_store.get_vectors(cube, [hostile, bystanders[0].id])
        assert set(got) <= {hostile, bystanders[0].id}
        assert (hostile in got) == stored
    except ValueError:
        pass
    try:
        vector_store.delete(cube, [hostile])
    except ValueError:
        pass

    assert vector_store.count(cube) in (2, 3)
    assert set(vector_store.get_vectors(cube, [r.id for r in bystanders])) == {r.id for r in bystanders}
    assert {r.id for r in bystanders} <= set(hit_ids(vector_store, cube, axis(0)))
