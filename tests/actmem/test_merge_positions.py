"""Caches reproduce what the model computes: exactly for one cache, and for a merge
exactly the re-positioned reference (which naive concatenation is not)."""

from __future__ import annotations

import torch

from services.actmem.models import CacheMeta

SEG1 = "alice likes tea and lives in paris. " * 4
SEG2 = "bob reads the graph cache every day. " * 3
SEG3 = "carol remembers the answer tomorrow. " * 2
QUESTION = "what does alice drink?"


def _cat(*kvs):  # type: ignore[no-untyped-def]
    return [
        (torch.cat([kv[i][0] for kv in kvs], 2), torch.cat([kv[i][1] for kv in kvs], 2)) for i in range(len(kvs[0]))
    ]


def test_single_cache_reproduces_full_prompt_logits(backend) -> None:  # type: ignore[no-untyped-def]
    prefix, question = backend.tokenize(SEG1 + SEG2), backend.tokenize(QUESTION)
    full = backend.next_token_logits(None, prefix + question)
    injected = backend.next_token_logits(backend.prefill(prefix), question)
    assert torch.allclose(full, injected, atol=1e-5, rtol=0), (full - injected).abs().max()


def test_merged_cache_equals_repositioned_reference_not_naive_concat(make_memory) -> None:  # type: ignore[no-untyped-def]
    memory, _ = make_memory()
    backend = memory.backend
    segs = [backend.tokenize(s) for s in (SEG1, SEG2, SEG3)]
    question = backend.tokenize(QUESTION)
    # Reference: every segment computed on its own, at its final positions.
    offsets = [0, len(segs[0]), len(segs[0]) + len(segs[1])]
    reference = _cat(*(backend.prefill(s, position_offset=o) for s, o in zip(segs, offsets, strict=True)))
    # What actmem merges: caches extracted separately, each starting at position 0.
    metas = [memory.extract("c", s) for s in (SEG1, SEG2, SEG3)]
    stored = [memory.get("c", m.cache_id)[1] for m in metas]
    before = [[k.clone() for k, _ in kv] for kv in stored]
    merged_meta, merged = memory.merge("c", [m.cache_id for m in metas])
    naive = _cat(*stored)

    ref_logits = backend.next_token_logits(reference, question)
    merged_logits = backend.next_token_logits(merged, question)
    naive_logits = backend.next_token_logits(naive, question)
    assert torch.allclose(merged_logits, ref_logits, atol=1e-4, rtol=0), (merged_logits - ref_logits).abs().max()
    assert not torch.allclose(naive_logits, ref_logits, atol=1e-2, rtol=0)
    assert merged_meta.num_tokens == sum(len(s) for s in segs)
    assert merged_meta.merged_from == [m.cache_id for m in metas]
    # Merging never changes the stored caches.
    for kv, keys in zip(stored, before, strict=True):
        assert all(torch.equal(k, k0) for (k, _), k0 in zip(kv, keys, strict=True))


def test_single_cache_from_memory_matches_reference(make_memory) -> None:  # type: ignore[no-untyped-def]
    memory, _ = make_memory()
    meta = memory.extract("c", SEG1 + SEG2)
    assert isinstance(meta, CacheMeta) and meta.num_tokens == len(memory.backend.tokenize(SEG1 + SEG2))
    _, kv = memory.get("c", meta.cache_id)
    q = memory.backend.tokenize(QUESTION)
    full = memory.backend.next_token_logits(None, memory.backend.tokenize(SEG1 + SEG2) + q)
    assert torch.allclose(memory.backend.next_token_logits(kv, q), full, atol=1e-5, rtol=0)
