"""Cache chunks on the wire without protobuf's copies of their bytes.

A cache crosses gRPC as a header message followed by messages whose only field
is ``bytes chunk``. Going through protobuf, each chunk would be copied into a
message, serialized (a second copy) and, on receipt, parsed and read back out
(two more): more time than the rest of a transfer. A chunk message's encoding is
simply the field's tag, the length as a varint and the bytes, so chunks are
framed here with one copy of the data and parsed with none, and everything else
(headers, and any message not shaped like a lone chunk) still goes through
protobuf. The bytes on the wire are exactly the protobuf encoding: clients need
nothing special. The SDK's client (memos.client.actmem) uses the same framing and
parsing for its side of the streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from memos.actmem.v1 import actmem_pb2

_LENGTH_DELIMITED = 2


def _chunk_tag(message_cls: Any) -> bytes:
    number = message_cls.DESCRIPTOR.fields_by_name["chunk"].number
    return _varint((number << 3) | _LENGTH_DELIMITED)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# The streamed messages share their layout; a frame built for one is valid for all three.
_TAG = _chunk_tag(actmem_pb2.GetCacheResponse)
if not _TAG == _chunk_tag(actmem_pb2.ComputeCacheResponse) == _chunk_tag(actmem_pb2.AddCacheRequest):
    raise ImportError("the chunk fields of actmem's streamed messages no longer share one field number")


def chunk_frame(data: bytes | memoryview) -> bytes:
    """The serialized chunk message (GetCacheResponse, ComputeCacheResponse or AddCacheRequest)
    carrying ``data``, built with a single copy of it."""
    return b"".join((_TAG, _varint(len(data)), data))


def chunk_frames(views: Iterator[memoryview]) -> Iterator[bytes]:
    for view in views:
        yield chunk_frame(view)


def serialize_response(message: Any) -> bytes:
    """Serializer of the cache streams' chunked side (the service's responses, the SDK's
    uploads): chunk frames are already serialized, anything else is a protobuf message."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


class RawChunk:
    """A chunk message parsed without copying its bytes: ``chunk`` is a view of the received
    message. Answers ``WhichOneof`` like the protobuf message it stands for."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: memoryview) -> None:
        self.chunk = chunk

    def WhichOneof(self, oneof: str) -> str:  # noqa: N802 - protobuf's name
        return "chunk"


def _lone_chunk(raw: bytes) -> memoryview | None:
    """The bytes of ``raw`` if it encodes exactly one chunk field and nothing else."""
    if not raw.startswith(_TAG):
        return None
    length, shift, pos = 0, 0, len(_TAG)
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return memoryview(raw)[pos:] if pos + length == len(raw) else None
    return None


def request_parser(message_cls: Any) -> Callable[[bytes], Any]:
    """Deserializer of a cache stream's chunked side (the service's uploads, the SDK's
    downloads): lone chunks become :class:`RawChunk`s, anything else is parsed by protobuf
    (and fails like protobuf when malformed)."""

    def parse(raw: bytes) -> Any:
        view = _lone_chunk(raw)
        if view is not None:
            return RawChunk(view)
        return message_cls.FromString(raw)

    return parse
