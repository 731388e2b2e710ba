"""How long evidence is kept, and which CDRs have left the hot window (pure; docs/archive.md).

Retention is computed from a cut-off that belongs to the data — a day's TAP cut-off (the end of
its UTC day, `export_config.day_cut_off`) or, for a cold segment, the cut-off of the day of its
newest `done_at` — never from the moment the upload happens. So the retain-until date of an
object is a function of its content: an upload retried after a crash, a rebuild years later and
the read-back check all compute the same date, and COMPLIANCE retention (which can never be
shortened) is never set to a date that a second attempt would contradict.

The hot window is counted in whole UTC calendar months: `hot_window_start` is the first instant
of the month `months` before the current one, so rows move to the cold tier a month at a time
(one segment per operator per month when the job runs daily) and PostgreSQL always holds at
least `months` full months.
"""

from __future__ import annotations

import datetime as dt

_UTC = dt.timezone.utc
_SECOND = dt.timedelta(seconds=1)


def retain_until(cut_off: dt.datetime, retention_days: int) -> dt.datetime:
    """`cut_off` + `retention_days` days, in UTC, rounded *up* to a whole second.

    S3 keeps retain-until dates at second precision; rounding up (never down) keeps the object
    at least as long as asked. A naive datetime is refused: its instant would depend on the
    machine's time zone."""
    if cut_off.tzinfo is None or cut_off.utcoffset() is None:
        raise ValueError("cut_off must be timezone-aware")
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    until = cut_off.astimezone(_UTC) + dt.timedelta(days=retention_days)
    if until.microsecond:
        until = until.replace(microsecond=0) + _SECOND
    return until


def hot_window_start(now: dt.datetime, months: int) -> dt.datetime:
    """The first instant (UTC) of the month `months` before the month of `now`.

    Entries whose `done_at` is before it are old enough for the cold tier. With
    ``now = 2026-11-22`` and 13 months: 2025-10-01T00:00Z."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if months < 1:
        raise ValueError(f"the hot window must be at least one month, not {months}")
    utc = now.astimezone(_UTC)
    index = utc.year * 12 + (utc.month - 1) - months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=_UTC)
