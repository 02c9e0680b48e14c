"""Times as the services carry and render them.

A ``google.protobuf.Timestamp`` reaches domain code as float seconds, and a float rounds the last
instants of year 9999 (still a valid Timestamp) up to 10000-01-01, which neither a Timestamp nor a
:class:`datetime` may hold: both directions clamp to the range they share.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import overload

from google.protobuf import timestamp_pb2

# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the first and last whole seconds a Timestamp holds.
_FIRST_SECOND = -62_135_596_800
_LAST_SECOND = 253_402_300_799


@overload
def to_timestamp(seconds: float) -> timestamp_pb2.Timestamp: ...
@overload
def to_timestamp(seconds: None) -> None: ...
def to_timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp ``seconds`` after the epoch (``None`` stays ``None``), clamped to the valid range."""
    if seconds is None:
        return None
    # Whole seconds and the fraction apart: seconds * 1e9 as one float is off by up to ~100 ns today.
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos == 10**9:
        whole, nanos = whole + 1, 0
    if whole > _LAST_SECOND:
        return timestamp_pb2.Timestamp(seconds=_LAST_SECOND, nanos=10**9 - 1)
    if whole < _FIRST_SECOND:
        return timestamp_pb2.Timestamp(seconds=_FIRST_SECOND)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def utc_datetime(seconds: float) -> datetime:
    """The UTC time ``seconds`` after the epoch, floored to the second, within 0001-01-01..9999-12-31."""
    return datetime.fromtimestamp(min(max(math.floor(seconds), _FIRST_SECOND), _LAST_SECOND), tz=UTC)


def utc_minute(seconds: float) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC: how a message's time is written in front of its text."""
    return utc_datetime(seconds).strftime("%Y-%m-%d %H:%M")
