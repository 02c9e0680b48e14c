"""The OpenAI-compatible embedder against a loopback server speaking that protocol."""

from __future__ import annotations

import numpy as np
import pytest

from services.textmem.embedders import OpenAIEmbedder, build_embedder
from services.textmem.settings import TextMemSettings
from shared.errors import InvalidArgument, Unavailable
from tests.conftest import free_port
from tests.fakes.openai_server import FakeOpenAI


def test_batches_orders_and_normalises() -> None:
    fake = FakeOpenAI(dim=16)
    with fake.serve() as url:
        emb = OpenAIEmbedder(url, "mini", 16, api_key="k", batch_size=2)
        texts = ["red apple", "green apple", "blue sky", "red apple pie", "sky"]
        out = emb.embed(texts)
    assert out.shape == (5, 16)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert [len(r["body"]["input"]) for r in fake.requests] == [2, 2, 1]
    assert fake.requests[0]["auth"] == "Bearer k" and fake.requests[0]["body"]["model"] == "mini"
    # Order follows "index" even though the server lists them reversed.
    assert out[0] @ out[3] > out[0] @ out[2]


def test_server_errors_are_unavailable_and_input_errors_invalid() -> None:
    fake = FakeOpenAI()
    with fake.serve() as url:
        emb = OpenAIEmbedder(url, "mini", 16)
        fake.fail_with = 503
        with pytest.raises(Unavailable) as err:
            emb.embed(["x"])
        assert err.value.retriable
        fake.fail_with = 413
        with pytest.raises(InvalidArgument):
            emb.embed(["x"])


def test_wrong_dimension_is_reported() -> None:
    fake = FakeOpenAI()
    fake.wrong_dim = True
    with fake.serve() as url, pytest.raises(Unavailable) as err:
        OpenAIEmbedder(url, "mini", 16).embed(["x"])
    assert err.value.reason == "EMBEDDING_DIMENSION_MISMATCH"


def test_unreachable_endpoint_is_unavailable() -> None:
    emb = OpenAIEmbedder(f"http://127.0.0.1:{free_port()}/v1", "mini", 16, timeout_s=2)
    with pytest.raises(Unavailable) as err:
        emb.embed(["x"])
    assert err.value.reason == "EMBEDDER_UNAVAILABLE"


def test_settings_select_the_openai_embedder() -> None:
    fake = FakeOpenAI(dim=16)
    with fake.serve() as url:
        emb = build_embedder(TextMemSettings(embedder="openai", embedding_url=url, embedding_dim=16))
        assert isinstance(emb, OpenAIEmbedder) and emb.embed(["a"]).shape == (1, 16)
    with pytest.raises(InvalidArgument):
        build_embedder(TextMemSettings(embedder="openai", embedding_url=""))
