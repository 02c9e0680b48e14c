"""Checks every gateway request for values no service behind it can store or compare.

Protobuf accepts any int64 in a ``Timestamp`` and any double in a ``Struct``, but a
timestamp outside years 1..9999 (or with nanos outside 0..999,999,999) cannot be
converted, and NaN or an infinity cannot be written as JSON. Left to textmem, such a
value surfaced as INTERNAL (or a cube's INTERNAL status inside a search); here it is the
caller's INVALID_ARGUMENT, naming the field, before anything runs. The walk is generic,
so a field added to any request is covered.
"""

from __future__ import annotations

import math

from google.protobuf.message import Message

from shared.errors import InvalidArgument

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999


def check_request(request: Message) -> None:
    """Raises InvalidArgument for the first unstorable value in ``request``."""
    _walk(request, "")


def _walk(msg: Message, path: str) -> None:
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        _check_timestamp(msg, path)
        return
    if name == "google.protobuf.Value":
        kind = msg.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(msg.number_value):
            raise InvalidArgument(
                f"{path} is {msg.number_value}; numbers must be finite",
                reason="NON_FINITE_NUMBER",
                metadata={"field": path},
            )
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        sub = f"{path}.{field.name}" if path else field.name
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                for key, item in value.items():
                    _walk(item, f"{sub}[{key!r}]" if len(str(key)) <= 64 else f"{sub}[...]")
        elif field.is_repeated:
            for i, item in enumerate(value):
                _walk(item, f"{sub}[{i}]")
        else:
            _walk(value, sub)


def _check_timestamp(ts: Message, path: str) -> None:
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS or not 0 <= ts.nanos <= MAX_NANOS:
        raise InvalidArgument(
            f"{path} is not a valid timestamp (years 1 to 9999, nanos 0 to {MAX_NANOS})",
            reason="INVALID_TIMESTAMP",
            metadata={"field": path},
        )
