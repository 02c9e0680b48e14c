"""Message bodies as the queues store them: the ScheduleMessage encoding, and JSON bodies left by
earlier versions (a queue upgraded with messages in it) still delivered and read whole."""

from __future__ import annotations

import json

from memos.scheduler.v1 import scheduler_pb2
from services.scheduler.queue import Message, TaskQueue, TaskState, Verdict, codec


def _store_legacy_body(q: TaskQueue, item_id: str, m: Message) -> None:
    """Rewrites a stored body as an earlier version wrote it (JSON of Message.to_json)."""
    body = json.dumps(m.to_json())
    if hasattr(q, "_db"):
        q._db.execute("UPDATE tasks SET body = ? WHERE item_id = ?", (body, item_id))  # type: ignore[attr-defined]
    else:
        q._r.hset(q._k("t", item_id), "body", body)  # type: ignore[attr-defined]


def _msg(**kw) -> Message:  # type: ignore[no-untyped-def]
    base = {"user_id": "u", "cube_id": "c", "label": "add", "content": "hello ü😀", "info": {"k": ["v", 2.5]}}
    return Message(**{**base, **kw})


def test_a_delivery_carries_the_wire_format(open_queue) -> None:
    q = open_queue()
    [item] = q.submit([_msg(item_id="a1", session_id="s", trace_id="t", priority=4, timestamp=1700000000.25)])
    [d] = q.receive(["add"], 5)
    p = scheduler_pb2.ScheduleMessage.FromString(d.body)
    assert (p.item_id, p.user_id, p.cube_id, p.label, p.content) == (item, "u", "c", "add", "hello ü😀")
    assert (p.session_id, p.trace_id, p.priority, p.timestamp.seconds, p.timestamp.nanos) == (
        "s",
        "t",
        4,
        1700000000,
        250000000,
    )
    assert dict(p.info) == {"k": ["v", 2.5]} and d.message == _msg(
        item_id="a1", session_id="s", trace_id="t", priority=4, timestamp=1700000000.25
    )


def test_bodies_stored_as_json_by_earlier_versions_are_still_served(open_queue) -> None:
    q = open_queue()
    m = _msg(item_id="old1", timestamp=1700000000.5)
    q.submit([m, _msg(item_id="new1", cube_id="c2")])
    _store_legacy_body(q, "old1", m)
    assert q.get_task("old1").message == m
    got = {d.message.item_id: d for d in q.receive(["add"], 5)}
    assert set(got) == {"old1", "new1"}
    old = got["old1"]
    # Sent on as the wire format, like any other body: what a worker stream copies into a response.
    assert not codec.is_legacy(old.body) and codec.decode(old.body) == m
    assert q.answer_many([Verdict(d.delivery_id) for d in got.values()]) == []
    assert q.get_task("old1").state == TaskState.DONE and q.get_task("old1").message == m
