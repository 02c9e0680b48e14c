"""The servicer's shortcuts past protobuf objects: a submit stores each request's ``ScheduleMessage``
as received (filled in where the queue would fill it), and a batch of deliveries is written out as
the ``SubscribeResponse`` encoding; both must match what building them field by field gives."""

from __future__ import annotations

import time

import pytest

from memos.scheduler.v1 import scheduler_pb2
from services.scheduler.queue import Delivery, Message, codec
from services.scheduler.servicer import _deliveries_wire, messages_from_request


def test_submitted_bodies_are_the_messages_as_the_queue_would_encode_them() -> None:
    req = scheduler_pb2.SubmitMessagesRequest()
    req.messages.add(user_id="u", cube_id="c", label="add", content="plain")  # nothing filled in
    full = req.messages.add(
        item_id="i2", user_id="u", cube_id="c", label="add", content="é ✓", session_id="s", trace_id="t", priority=-3
    )
    full.timestamp.FromMicroseconds(1_700_000_000_250_000)
    full.info.update({"k": [1, "v"], "n": {"x": None}})
    now = time.time()
    messages, bodies = messages_from_request(
        scheduler_pb2.SubmitMessagesRequest.FromString(req.SerializeToString()).messages, now
    )
    first, second = messages
    # now, in whole microseconds as stored (within 1 µs of now: not a tolerance to compare with, as
    # the float's own rounding can take the difference past it)
    assert len(first.item_id) == 32 and first.timestamp == int(now * 1e6) / 1e6 and first.info == {}
    assert second == Message(
        user_id="u",
        cube_id="c",
        label="add",
        content="é ✓",
        item_id="i2",
        session_id="s",
        timestamp=1_700_000_000.25,
        trace_id="t",
        info={"k": [1, "v"], "n": {"x": None}},
        priority=-3,
    )
    for m, body in zip(messages, bodies, strict=True):
        assert codec.decode(body) == m
        assert body == codec.encode(m)
        assert scheduler_pb2.ScheduleMessage.FromString(body).HasField("info")  # present, as always


def test_prepared_copies_are_encoded_again() -> None:
    given = [Message(user_id="u", cube_id="c", label="add", item_id="a", timestamp=1.0)]
    prepared = [Message(user_id="u", cube_id="c", label="add", item_id="a", timestamp=2.0)]
    assert codec.bodies_for(given, given, [b"kept"]) == [b"kept"]
    assert codec.bodies_for(given, prepared, [b"stale"]) == [codec.encode(prepared[0])]
    assert codec.bodies_for(given, prepared, None) == [codec.encode(prepared[0])]


@pytest.mark.parametrize("id_len", [1, 126, 300])
@pytest.mark.parametrize("content_len", [0, 100, 20_000])
def test_deliveries_written_out_match_the_response_built_item_by_item(id_len: int, content_len: int) -> None:
    body = codec.encode(Message(user_id="u", cube_id="c", label="add", content="x" * content_len, item_id="i"))
    deliveries = [
        Delivery("d" * id_len + f"/{k:016x}", body, attempt) for k, attempt in enumerate([1, 2, 127, 128, 5000])
    ]
    built = scheduler_pb2.SubscribeResponse()
    for d in deliveries:
        built.deliveries.add(delivery_id=d.delivery_id, attempt=d.attempt).message.MergeFromString(d.body)
    wire = _deliveries_wire(deliveries)
    assert wire == built.SerializeToString()
    assert scheduler_pb2.SubscribeResponse.FromString(wire) == built
