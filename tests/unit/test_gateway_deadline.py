"""A call whose deadline passed on its way to the gateway is refused before any cube is read
(the client-side case, a deadline already passed when the call starts, is in
tests/integration/test_bad_input.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from memos.gateway.v1 import gateway_pb2
from services.gateway.core import Gateway
from services.gateway.settings import GatewaySettings
from shared.errors import DeadlineExceeded


class _NoTextMem:
    """Fails the test if the gateway reaches textmem at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"textmem was reached ({name})")


@pytest.mark.parametrize("remaining", [0.0, -0.5])
def test_a_search_whose_deadline_passed_is_refused_before_any_read(remaining: float) -> None:
    gateway = Gateway(GatewaySettings(), _NoTextMem())  # type: ignore[arg-type]
    req = gateway_pb2.SearchMemoriesRequest(user_id="u", readable_cube_ids=["c"], query="hello")
    with pytest.raises(DeadlineExceeded) as err:
        asyncio.run(gateway.search(req, remaining))
    assert err.value.reason == "DEADLINE_PASSED" and err.value.retriable
