"""The clock tick's instant: explicit, or now minus a lag — normalised to the chain's UTC form."""

from __future__ import annotations

import datetime as dt

import pytest

from cdr_mediation.agents.clock import tick_time

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def test_an_explicit_instant_is_normalised_to_utc_milliseconds() -> None:
    assert tick_time("2026-11-01T09:00:00.9999+01:00", None, NOW) == "2026-11-01T08:00:00.999Z"


def test_a_lag_counts_back_from_now() -> None:
    assert tick_time(None, 3 * 3600, NOW) == "2026-11-22T09:00:00.123Z"


@pytest.mark.parametrize("at, lag", [(None, None), ("2026-11-01T08:00:00Z", 60)])
def test_exactly_one_of_at_and_lag(at, lag) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        tick_time(at, lag, NOW)


def test_a_tick_far_ahead_of_the_wall_clock_is_refused_unless_allowed() -> None:
    assert tick_time("2026-11-22T13:00:00Z", None, NOW) == "2026-11-22T13:00:00.000Z"  # within the hour
    for typo in ("2062-11-22T12:00:00Z", "2026-11-23T12:00:00Z"):
        with pytest.raises(ValueError, match="allow-future"):
            tick_time(typo, None, NOW)
        assert tick_time(typo, None, NOW, allow_future=True) == typo.replace(":00Z", ":00.000Z")
