"""Python client of memos: typed sync and async clients over the gateway's gRPC API.

    from memos.client import MemosClient
    with MemosClient("127.0.0.1:50051") as client:
        client.add_memories("alice", ["alice_cube"], [{"role": "user", "content": "I like tea"}])
        hits = client.search_memories("alice", ["alice_cube"], "what does alice drink?")

Failures raise :class:`MemosError` subclasses (``InvalidArgument``,
``PermissionDenied``, ...) whose ``reason`` is stable and whose ``retriable``
says whether sending the same request again can help.
"""

from memos.client._async import AsyncMemosClient
from memos.client._sync import MemosClient
from memos.client.embedded import EmbeddedSuite
from shared.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MemosError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

__all__ = [
    "AsyncMemosClient",
    "DeadlineExceeded",
    "EmbeddedSuite",
    "InvalidArgument",
    "MemosClient",
    "MemosError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unavailable",
]
