"""Every memory one user wrote, across cubes, a page at a time: the read side of data rights
(the gateway's ExportUserData), as :meth:`TextMemory.delete_user_data` is the erasing side.

Built on the GraphStore's existing reads (the cubes holding a user's memories, a cube's listing
filtered by user, a memory's history), so every store implementation serves it as it is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from services.textmem.models import MEMORY_TYPES, Memory, MemoryFilter
from services.textmem.stores.graph import GraphStore
from shared.errors import InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


@dataclass
class UserMemory:
    memory: Memory
    # The versions updates replaced, newest first.
    history: list[Memory] = field(default_factory=list)


@dataclass(frozen=True)
class _Position:
    """Where a listing stands: the cube it is in (cubes go in id order) and the cube's cursor."""

    cube_id: str = ""
    after: int = 0


def _encode(pos: _Position) -> str:
    return base64.urlsafe_b64encode(json.dumps({"cube": pos.cube_id, "after": pos.after}).encode()).decode()


def _decode(token: str) -> _Position:
    if not token:
        return _Position()
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
        cube_id, after = value["cube"], value["after"]
        if type(cube_id) is not str or not cube_id or type(after) is not int or after < 0:
            raise ValueError
        return _Position(cube_id, after)
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not one this service issued", reason="BAD_PAGE_TOKEN", metadata={"field": "page_token"}
        ) from None


def list_user_memories(
    graph: GraphStore, user_id: str, page_size: int = 0, page_token: str = ""
) -> tuple[list[UserMemory], str]:
    """A page of the user's memories (every type and status, with history) and the next page's
    token ("" when none): cube by cube in cube id order, each cube's in insertion order."""
    if not user_id or not user_id.strip():
        raise InvalidArgument("user_id is required", reason="MISSING_USER_ID", metadata={"field": "user_id"})
    page_size = page_size or DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 1 and {MAX_PAGE_SIZE}",
            reason="PAGE_SIZE_OUT_OF_RANGE",
            metadata={"field": "page_size"},
        )
    pos = _decode(page_token)
    everything = MemoryFilter(memory_types=MEMORY_TYPES, user_id=user_id, include_archived=True)
    # Read afresh on every page: a cube the token names may have lost the user's last memory
    # since (it is then simply past), and cubes after it are found wherever they sort.
    cubes = [c for c in graph.user_memory_cubes(user_id) if c >= pos.cube_id]
    out: list[UserMemory] = []
    for cube_id in cubes:
        after = pos.after if cube_id == pos.cube_id else 0
        while True:
            want = page_size - len(out)
            page, after = graph.list_memories(cube_id, everything, want, after)
            # Only updated memories have history (version > 1): the rest cost no extra read.
            out.extend(UserMemory(m, graph.memory_history(cube_id, m.id) if m.version > 1 else []) for m in page)
            if len(out) == page_size:
                # The cube's cursor after this page; 0 (the cube is done) moves on to the next cube.
                if after:
                    return out, _encode(_Position(cube_id, after))
                nxt = [c for c in cubes if c > cube_id]
                return out, _encode(_Position(nxt[0], 0)) if nxt else ""
            if not after:
                break
    return out, ""
