"""Retain-until dates and the hot window: functions of the data, never of the upload moment."""

from __future__ import annotations

import datetime as dt

import pytest

from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.retention import hot_window_start, retain_until

UTC = dt.timezone.utc


def test_retention_runs_from_the_cut_off():
    cut_off = day_cut_off("2026-11-21")  # 2026-11-22T00:00Z
    # 2557 days = 7 calendar years here (2028 and 2032 are leap years).
    assert retain_until(cut_off, 2557) == dt.datetime(2033, 11, 22, tzinfo=UTC)


def test_the_same_cut_off_gives_the_same_date_in_any_offset():
    plus_five = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert retain_until(dt.datetime(2026, 11, 22, 5, 30, tzinfo=plus_five), 10) == dt.datetime(2026, 12, 2,
                                                                                              tzinfo=UTC)


def test_a_fraction_of_a_second_rounds_up_never_down():
    assert retain_until(dt.datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC), 1) == dt.datetime(2026, 1, 2, 0, 0, 1,
                                                                                           tzinfo=UTC)


@pytest.mark.parametrize("cut_off, days", [(dt.datetime(2026, 1, 1), 1), (dt.datetime(2026, 1, 1, tzinfo=UTC), 0)])
def test_naive_cut_offs_and_empty_retention_are_refused(cut_off, days):
    with pytest.raises(ValueError):
        retain_until(cut_off, days)


@pytest.mark.parametrize("now, months, start", [
    (dt.datetime(2026, 11, 22, 13, 5, tzinfo=UTC), 13, dt.datetime(2025, 10, 1, tzinfo=UTC)),
    (dt.datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 1, dt.datetime(2025, 12, 1, tzinfo=UTC)),
    (dt.datetime(2026, 12, 31, 23, 59, tzinfo=UTC), 12, dt.datetime(2025, 12, 1, tzinfo=UTC)),
    (dt.datetime(2026, 3, 15, tzinfo=UTC), 26, dt.datetime(2024, 1, 1, tzinfo=UTC)),
    # 00:30 on 1 December at +01:00 is still November in UTC.
    (dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))), 13,
     dt.datetime(2025, 10, 1, tzinfo=UTC)),
])
def test_the_hot_window_starts_at_a_whole_utc_month(now, months, start):
    assert hot_window_start(now, months) == start


def test_the_hot_window_is_stable_within_a_month():
    starts = {hot_window_start(dt.datetime(2026, 11, day, tzinfo=UTC), 13) for day in range(1, 31)}
    assert starts == {dt.datetime(2025, 10, 1, tzinfo=UTC)}


def test_the_hot_window_needs_an_aware_now_and_a_month():
    with pytest.raises(ValueError):
        hot_window_start(dt.datetime(2026, 11, 22), 13)
    with pytest.raises(ValueError):
        hot_window_start(dt.datetime(2026, 11, 22, tzinfo=UTC), 0)
