"""The per-user KV quota (MEMOS_MAX_KV_BYTES_PER_USER) over real gRPC on loopback: a user's caches
count against it in every cube they are stored in, by every way of storing one; past it the store
is refused with RESOURCE_EXHAUSTED and its details and nothing is stored; a storing request that
names no user is refused while the quota is on; the user travels through dump and load."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidArgument, ResourceExhausted

PROMPT = "bob walks his dog at noon. " * 6


def _size(make_service) -> int:  # type: ignore[no-untyped-def]
    """Bytes of a cache of PROMPT, measured on a service without quotas."""
    return make_service().client.extract("probe", PROMPT).size_bytes


def test_a_users_caches_count_across_cubes(make_service, tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = _size(make_service)
    limit = 2 * one + one // 2
    svc = make_service(max_kv_bytes_per_user=limit)
    c, store = svc.client, svc.memory.store

    # No user named: refused before the model runs, nothing stored.
    with pytest.raises(InvalidArgument) as bad:
        c.extract("a", PROMPT)
    assert bad.value.reason == "USER_ID_REQUIRED" and bad.value.metadata["field"] == "user_id"
    assert c.list("a") == []

    # Two caches in two cubes use up u's quota; the third, in a third cube, is refused.
    first = c.extract("a", PROMPT, user_id="u")
    c.extract("b", PROMPT, user_id="u")
    assert first.user_id == "u" and c.list("a")[0].user_id == "u"
    assert store.user_bytes("u") == 2 * one
    with pytest.raises(ResourceExhausted) as err:
        c.extract("c", PROMPT, user_id="u")
    e = err.value
    assert e.reason == "KV_QUOTA_EXCEEDED" and not e.retriable
    assert e.metadata == {
        "user_id": "u",
        "cube_id": "c",
        "quota": "kv_bytes_per_user",
        "limit": str(limit),
        "usage": str(2 * one),
        "requested": str(one),
    }
    assert c.list("c") == []
    # Another user is not held to u's usage, in the same cube.
    c.extract("c", PROMPT, user_id="v")
    assert store.user_bytes("v") == one

    # AddCache (from its header), MergeCaches with store: refused for u, stored for w.
    computed, kv = c.compute("c", PROMPT)
    computed.user_id = "u"
    with pytest.raises(ResourceExhausted):
        c.add(computed, kv)
    with pytest.raises(ResourceExhausted):
        c.merge("a", [first.cache_id], store=True, user_id="u")
    computed.user_id = "w"
    assert c.add(computed, kv).user_id == "w"
    assert c.merge("a", [first.cache_id], store=True, user_id="w").user_id == "w"
    assert store.user_bytes("w") == 2 * one and store.user_bytes("u") == 2 * one

    # The dump records the user; loading keeps it (refused: u is full) or gives the caches to another.
    assert c.dump("a", "a-dump") == 2
    manifests = {json.loads(p.read_text())["user_id"] for p in (tmp_path / "dumps" / "a-dump").glob("*.json")}
    assert manifests == {"u", "w"}
    with pytest.raises(ResourceExhausted):
        c.load("d", "a-dump")
    assert c.list("d") == []
    loaded = c.load("d", "a-dump", user_id="x")
    assert {i.user_id for i in loaded} == {"x"} and store.user_bytes("x") == 2 * one

    # Deleting frees the user's quota, whichever cube the cache was in.
    assert c.delete("a", [first.cache_id]) == 1
    assert store.user_bytes("u") == one
    assert c.extract("c", PROMPT, user_id="u").user_id == "u"
    assert c.delete_all("c") == 3  # u's, v's and w's
    assert (store.user_bytes("u"), store.user_bytes("v"), store.user_bytes("w")) == (one, 0, one)


def test_user_ids_are_checked(make_service) -> None:  # type: ignore[no-untyped-def]
    c = make_service().client  # no quota: a user is optional, but a named one must be sane
    with pytest.raises(InvalidArgument) as bad:
        c.extract("a", PROMPT, user_id="bad\nid")
    assert bad.value.reason == "BAD_USER_ID"
    with pytest.raises(InvalidArgument):
        c.extract("a", PROMPT, user_id="u" * 257)
    assert c.list("a") == []
    assert c.extract("a", PROMPT, user_id="alice@example.org").user_id == "alice@example.org"


def test_the_kv_cache_memory_facade_stores_for_its_user(make_service) -> None:  # type: ignore[no-untyped-def]
    from memos.configs.memory import MemoryConfigFactory
    from memos.memories.factory import MemoryFactory

    svc = make_service(max_kv_bytes_per_user=10**9)

    def facade(**extra: str):  # type: ignore[no-untyped-def]
        config = {
            "extractor_llm": {"backend": "huggingface", "config": {"model_name_or_path": "served-model"}},
            "cube_id": "facade",
            "actmem_addr": svc.address,
            **extra,
        }
        return MemoryFactory.from_config(MemoryConfigFactory(backend="kv_cache", config=config))

    mem = facade(user_id="carol")
    item = mem.extract(PROMPT)
    mem.add([item])
    assert [i.user_id for i in svc.client.list("facade")] == ["carol"]
    assert svc.memory.store.user_bytes("carol") > 0
    # Without a user, a quota-holding service refuses to store (and says why).
    anonymous = facade()
    with pytest.raises(InvalidArgument) as bad:
        anonymous.add([anonymous.extract(PROMPT)])
    assert bad.value.reason == "USER_ID_REQUIRED"


def test_a_users_caches_are_listed_and_deleted_across_cubes(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service()
    c = svc.client
    mine = [c.extract("a", PROMPT, user_id="u").cache_id, c.extract("b", PROMPT, user_id="u").cache_id]
    theirs = c.extract("b", PROMPT, user_id="v").cache_id
    nobodys = c.extract("b", PROMPT).cache_id
    assert [i.cache_id for i in c.list(user_id="u")] == mine
    assert [i.cache_id for i in c.list("b", user_id="u")] == mine[1:]
    # Neither selector: refused, nothing deleted.
    with pytest.raises(InvalidArgument) as bad:
        c.delete_all()
    assert bad.value.reason == "MISSING_SELECTOR"
    assert c.delete_all(user_id="u") == 2
    assert c.list(user_id="u") == [] and svc.memory.store.user_bytes("u") == 0
    assert sorted(i.cache_id for i in c.list("b")) == sorted([theirs, nobodys])
