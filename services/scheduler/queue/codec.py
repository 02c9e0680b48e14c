"""How the queues store a message's body: the API's ``ScheduleMessage`` wire format (protobuf).

A delivery's body goes into a Subscribe response as it is (one C-level merge of bytes), instead
of being parsed into a :class:`Message` and written back field by field: on a worker stream that
was most of the scheduler's own cost per message. Earlier versions stored JSON (``to_json``);
such bodies are still read (a JSON object starts with ``{``, which no ``ScheduleMessage``
encoding does: it would be field 15 as a group, and the message has neither).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf import json_format

from memos.scheduler.v1 import scheduler_pb2
from services.scheduler.queue.base import Message

_ScheduleMessage = scheduler_pb2.ScheduleMessage


def encode(m: Message) -> bytes:
    p = _ScheduleMessage(
        item_id=m.item_id,
        user_id=m.user_id,
        cube_id=m.cube_id,
        session_id=m.session_id,
        label=m.label,
        content=m.content,
        trace_id=m.trace_id,
        priority=m.priority,
    )
    micros = int(m.timestamp * 1e6)
    p.timestamp.seconds, p.timestamp.nanos = micros // 1_000_000, micros % 1_000_000 * 1000
    if m.info:
        p.info.update(m.info)
    else:
        p.info.SetInParent()  # present and empty, as the service always sent it
    return p.SerializeToString()


def bodies_for(given: Sequence[Message], prepared: Sequence[Message], bodies: Sequence[bytes] | None) -> list[bytes]:
    """The stored form of each of ``prepared`` (what :meth:`TaskQueue.prepare` made of ``given``):
    ``bodies[i]`` when the caller had it already (the service stores each request's
    ``ScheduleMessage`` as it was received, with its item id and timestamp filled in), encoded here
    when there is none or when ``prepare`` had to fill the message in (then it is a new object)."""
    if bodies is None:
        return [encode(m) for m in prepared]
    return [b if p is g else encode(p) for g, p, b in zip(given, prepared, bodies, strict=True)]


def is_legacy(body: bytes | str) -> bool:
    """Whether ``body`` was stored as JSON by an earlier version."""
    return isinstance(body, str) or body[:1] == b"{"


def normalize(body: bytes | str) -> bytes:
    """The ``ScheduleMessage`` encoding of a stored body, whichever way it was stored."""
    return encode(Message.from_json(json.loads(body))) if is_legacy(body) else body  # type: ignore[return-value]


def decode(body: bytes | str) -> Message:
    if is_legacy(body):
        return Message.from_json(json.loads(body))
    p = _ScheduleMessage.FromString(body)
    ts = p.timestamp
    return Message.from_json(
        {
            "user_id": p.user_id,
            "cube_id": p.cube_id,
            "label": p.label,
            "content": p.content,
            "item_id": p.item_id,
            "session_id": p.session_id,
            "timestamp": (ts.seconds * 1_000_000 + ts.nanos // 1000) / 1e6,
            "trace_id": p.trace_id,
            "info": json_format.MessageToDict(p.info) if p.info.fields else {},
            "priority": p.priority,
        }
    )
