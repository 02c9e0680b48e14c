"""Times at the edges of the range a Timestamp holds (shared.times)."""

from __future__ import annotations

from shared.times import to_timestamp, utc_datetime, utc_minute


def test_a_timestamp_from_float_seconds_keeps_its_value() -> None:
    ts = to_timestamp(1_700_000_000.25)
    assert (ts.seconds, ts.nanos) == (1_700_000_000, 250_000_000)
    assert to_timestamp(None) is None


def test_the_float_of_the_last_instant_of_year_9999_stays_in_range() -> None:
    # 253402300799.999999999 is 253402300800.0 as a float: one second past the last valid one.
    ts = to_timestamp(253_402_300_799 + 0.999_999_999)
    assert (ts.seconds, ts.nanos) == (253_402_300_799, 999_999_999)
    ts.ToJsonString()  # raises for an out-of-range Timestamp
    assert to_timestamp(-1e12).ToJsonString() == "0001-01-01T00:00:00Z"


def test_rendered_times_floor_to_the_second_and_clamp_to_the_datetime_range() -> None:
    assert utc_minute(253_402_300_799.999_999_999) == "9999-12-31 23:59"
    assert utc_minute(0.0) == "1970-01-01 00:00"
    assert utc_datetime(-0.5).second == 59  # floored, not rounded toward zero
    assert utc_datetime(-1e13).year == 1
