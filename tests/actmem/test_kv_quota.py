"""The per-cube KV quota (MEMOS_MAX_KV_BYTES_PER_CUBE) over real gRPC on loopback: every way of
storing a cache is refused past it with RESOURCE_EXHAUSTED and its details, stores nothing, and
deleting frees quota; concurrent stores never pass it together."""

from __future__ import annotations

import threading

import pytest

from shared.errors import ResourceExhausted

# Every cache of the tests is of this prompt, so that all have the same size.
PROMPT = "alice likes tea. " * 10


def _size(make_service) -> int:  # type: ignore[no-untyped-def]
    """Bytes of a cache of PROMPT, measured on a service without a quota."""
    return make_service().client.extract("probe", PROMPT).size_bytes


def test_storing_past_the_quota_is_refused_and_deleting_frees_it(make_service) -> None:  # type: ignore[no-untyped-def]
    one = _size(make_service)
    limit = 2 * one + one // 2
    svc = make_service(max_kv_bytes_per_cube=limit)
    c = svc.client
    a = c.extract("cube", PROMPT)
    b = c.extract("cube", PROMPT)
    assert a.size_bytes == b.size_bytes == one
    assert svc.memory.store.cube_bytes("cube") == 2 * one

    with pytest.raises(ResourceExhausted) as err:
        c.extract("cube", PROMPT)
    e = err.value
    assert e.reason == "KV_QUOTA_EXCEEDED" and not e.retriable
    assert e.metadata == {
        "cube_id": "cube",
        "quota": "kv_bytes",
        "limit": str(limit),
        "usage": str(2 * one),
        "requested": str(one),
    }
    before = [i.cache_id for i in c.list("cube")]
    assert before == [a.cache_id, b.cache_id]

    # AddCache: refused from its header, before the tensors are taken.
    computed, ckv = c.compute("cube", PROMPT)
    with pytest.raises(ResourceExhausted) as err:
        c.add(computed, ckv)
    assert err.value.reason == "KV_QUOTA_EXCEEDED"
    # MergeCaches with store; without storing, a merge takes no quota.
    with pytest.raises(ResourceExhausted):
        c.merge("cube", [a.cache_id, b.cache_id], store=True)
    merged, _ = c.get_merged("cube", [a.cache_id, b.cache_id])
    assert merged.size_bytes == 2 * one
    assert [i.cache_id for i in c.list("cube")] == before
    assert svc.memory.store.cube_bytes("cube") == 2 * one

    # LoadCaches: a dump loaded back over the same caches replaces them (their room is given
    # back); into a cube without the room it loads nothing.
    assert c.dump("cube", "both") == 2
    assert sorted(i.cache_id for i in c.load("cube", "both")) == sorted(before)
    assert svc.memory.store.cube_bytes("cube") == 2 * one
    other = c.extract("other", PROMPT)
    with pytest.raises(ResourceExhausted) as err:
        c.load("other", "both")
    assert err.value.metadata["cube_id"] == "other" and err.value.metadata["usage"] == str(one)
    assert [i.cache_id for i in c.list("other")] == [other.cache_id]

    # Deleting frees quota.
    assert c.delete("cube", [a.cache_id]) == 1
    assert svc.memory.store.cube_bytes("cube") == one
    added = c.add(computed, ckv)
    assert [i.cache_id for i in c.list("cube")] == [b.cache_id, added.cache_id]
    assert c.delete_all("cube") == 2
    assert svc.memory.store.cube_bytes("cube") == 0
    # A merge stored where there is room is stored.
    x = c.extract("fresh", PROMPT)
    assert c.merge("fresh", [x.cache_id], store=True).size_bytes == one
    assert svc.memory.store.cube_bytes("fresh") == 2 * one


def test_concurrent_stores_never_pass_the_quota(make_service) -> None:  # type: ignore[no-untyped-def]
    one = _size(make_service)
    svc = make_service(max_kv_bytes_per_cube=3 * one)
    writers, each = 4, 2
    start = threading.Barrier(writers)
    outcomes: list[str] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        start.wait()
        for i in range(each):
            try:
                # The same prompt every time: every cache is `one` bytes.
                svc.client.extract("race", PROMPT, metadata={"writer": str(n), "add": str(i)})
                outcome = "stored"
            except ResourceExhausted as exc:
                outcome = exc.reason
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    unexpected.append(exc)
                continue
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not unexpected, unexpected
    kept = svc.client.list("race")
    assert len(kept) == outcomes.count("stored") == 3
    assert outcomes.count("KV_QUOTA_EXCEEDED") == writers * each - 3
    assert svc.memory.store.cube_bytes("race") == sum(i.size_bytes for i in kept) == 3 * one
