"""Per-cube quotas: how many memories a cube may hold, and how many bytes of memory text.

What counts, in both stores alike:

* every memory of the cube whatever its status (archived ones are stored too), except
  WorkingMemory copies: those are bounded on their own (``working_memory_capacity``), and a
  replace stores the new set before it deletes the old one, which a full cube must still be able
  to do;
* bytes are the UTF-8 size of the memories' text: what is embedded, indexed and returned.
  Sources are not counted: a fast-mode memory's text renders the very messages its sources keep,
  and a deduped re-add only appends sources to a memory with the same text, which must never be
  refused. The versions kept by updates are not counted either.

The check is made where the write happens, in the graph store's transaction (the stores serialise
a cube's inserts there), so concurrent adds cannot overshoot; TextMemory checks first too, to
refuse before embedding and writing vectors. Only growth is refused: an add that stores nothing
counted (everything merged into existing memories, working-memory copies) or an update that does
not grow the text passes even in a cube over its quota (one lowered since, say).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.textmem.models import Memory
from shared.errors import ResourceExhausted

# Memories of this type are not counted (see the module's docstring).
UNCOUNTED_TYPE = "WorkingMemory"


def text_bytes(text: str) -> int:
    """What a memory's text counts against the byte quota: its UTF-8 size."""
    return len(text.encode("utf-8", "surrogatepass"))


def counted(m: Memory) -> bool:
    return m.memory_type != UNCOUNTED_TYPE


@dataclass(frozen=True)
class CubeUsage:
    """What a cube holds, counted as the quotas count it."""

    memories: int = 0
    bytes: int = 0

    @staticmethod
    def of(memories: Iterable[Memory]) -> CubeUsage:
        kept = [m for m in memories if counted(m)]
        return CubeUsage(len(kept), sum(text_bytes(m.memory) for m in kept))


def update_growth(old_type: str, old_text: str, new: Memory) -> CubeUsage:
    """What replacing a memory (of ``old_type`` with ``old_text``) by ``new`` adds to the usage
    (negative where it frees)."""
    before = CubeUsage(1, text_bytes(old_text)) if old_type != UNCOUNTED_TYPE else CubeUsage()
    after = CubeUsage.of([new])
    return CubeUsage(after.memories - before.memories, after.bytes - before.bytes)


@dataclass(frozen=True)
class CubeQuota:
    """Limits per cube; 0 means no limit."""

    max_memories: int = 0
    max_bytes: int = 0

    @property
    def enabled(self) -> bool:
        return self.max_memories > 0 or self.max_bytes > 0

    def check(self, cube_id: str, usage: CubeUsage, adding: CubeUsage) -> None:
        """Raises ResourceExhausted (nothing is to be written) if ``usage`` grown by ``adding``
        would pass a limit. A dimension that does not grow is never refused."""
        if self.max_memories and adding.memories > 0 and usage.memories + adding.memories > self.max_memories:
            raise _exceeded(cube_id, "memories", self.max_memories, usage.memories, adding.memories)
        if self.max_bytes and adding.bytes > 0 and usage.bytes + adding.bytes > self.max_bytes:
            raise _exceeded(cube_id, "bytes", self.max_bytes, usage.bytes, adding.bytes)


# quota -> (reason, setting that sets it)
_QUOTAS = {
    "memories": ("CUBE_MEMORY_QUOTA_EXCEEDED", "MEMOS_MAX_MEMORIES_PER_CUBE"),
    "bytes": ("CUBE_BYTES_QUOTA_EXCEEDED", "MEMOS_MAX_BYTES_PER_CUBE"),
}


def _exceeded(cube_id: str, quota: str, limit: int, usage: int, adding: int) -> ResourceExhausted:
    reason, setting = _QUOTAS[quota]
    unit = "memories" if quota == "memories" else "bytes of memory text"
    return ResourceExhausted(
        f"cube {cube_id!r} holds {usage} of its {limit} {unit} ({setting}); this write would add {adding}",
        reason=reason,
        metadata={
            "cube_id": cube_id,
            "quota": quota,
            "limit": str(limit),
            "usage": str(usage),
            "requested": str(adding),
        },
        # Not retriable as such: only deleting memories (or a higher quota) makes room.
        retriable=False,
    )
