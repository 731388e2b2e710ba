"""`cdrmed reconcile` against the real PostgreSQL: a real chain of CDRs and the closes the rollup
computes from it reconcile clean; a forged revision, a doctored or missing close are reported
field by field with exit status 1; open hours and late events awaiting their correction are not
differences."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import uuid

import pytest

from cdr_mediation.agents.reconcile import reconcile_day
from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.rollup import HourRollup, RollupClosed
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.rollup_store import COLUMNS, append_closes, close_row
from tests.integration.test_rollup_store import chain, new_operator, rollup_closes, spread, tick

UTC = dt.timezone.utc
CDRMED = ["-m", "cdr_mediation.cli"]


def unique_day() -> dt.datetime:
    """A day no other test uses, so reconciling every operator of it sees only this test's."""
    return dt.datetime(2031, 1, 1, tzinfo=UTC) + dt.timedelta(days=uuid.uuid4().int % 20_000)


def reconcile_cli(stack_env: dict, repo_root, day: dt.datetime, operator_id: str | None = None,
                  *extra: str) -> tuple[int, list[dict], dict]:
    """Run `cdrmed reconcile` as an operator would: (exit status, difference lines, summary)."""
    args = [sys.executable, *CDRMED, "reconcile", "--day", day.date().isoformat(), *extra]
    if operator_id is not None:
        args += ["--operator", operator_id]
    result = subprocess.run(args, env=stack_env, cwd=repo_root, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"no output (exit {result.returncode}): {result.stderr}"
    return result.returncode, lines[:-1], lines[-1]


async def store_day(conn, operator_id: str, day: dt.datetime, *, close_all: bool = True):
    """~3 hours of a real chain (10:00-12:59, with VOIDs), stored; its closes computed by the
    rollup and stored. Returns (entries, closes, state, head)."""
    entries, head = chain(operator_id, spread(day.replace(hour=10), 3, 90), void_every=11)
    items: list = list(entries)
    if close_all:
        items.append(tick(operator_id, day.replace(hour=16)))  # closes 10, 11, 12 and the empty 13
    closes, state = rollup_closes(operator_id, items)
    assert await append_entries(conn, entries) == len(entries)
    assert await append_closes(conn, closes) == len(closes)
    return entries, closes, state, head


async def forge(conn, close: RollupClosed) -> None:
    """Insert a row as anyone with the app role could (the table is append-only: no edit in place)."""
    placeholders = ", ".join(f"${n}" for n in range(1, len(COLUMNS) + 1))
    await conn.execute(f"INSERT INTO rollup_closed ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                       *close_row(close))


async def test_reconcile_is_clean_then_fails_on_a_forged_revision(conn, stack_env, repo_root):
    operator_id, day = new_operator("rec"), unique_day()
    entries, closes, _, _ = await store_day(conn, operator_id, day)
    assert [c.hour_start for c in closes] == [format_utc(day.replace(hour=h)) for h in (10, 11, 12, 13)]

    status, differences, summary = reconcile_cli(stack_env, repo_root, day, operator_id)
    assert (status, differences) == (0, [])
    assert summary["ok"] is True and summary["differences"] == 0
    assert summary["hours_compared"] == 4 and summary["entries"] == len(entries) and summary["closes"] == 4
    (detail,) = summary["by_operator"]
    assert detail["compared_from"] == format_utc(day.replace(hour=10))
    assert detail["compared_through"] == format_utc(day.replace(hour=13))
    assert detail["open_hours"] == {} and detail["pending"] == {}

    # A forged extra revision of 11:00: one more minor unit.
    eleven = closes[1]
    delta = dataclasses.replace(
        eleven, revision=1, closed_by="correction",
        rollup=dataclasses.replace(HourRollup.empty(operator_id, eleven.hour_start, "EUR"), amount_minor=1))
    await forge(conn, delta)
    status, differences, summary = reconcile_cli(stack_env, repo_root, day, operator_id)
    assert status == 1
    assert differences == [{"operator_id": operator_id, "hour_start": eleven.hour_start, "field": "amount_minor",
                            "expected": eleven.rollup.amount_minor, "found": eleven.rollup.amount_minor + 1}]
    assert summary["ok"] is False and summary["differences"] == 1


async def test_a_doctored_or_missing_close_is_reported_field_by_field(conn):
    operator_id, day = new_operator("rec"), unique_day()
    entries, head = chain(operator_id, spread(day.replace(hour=10), 3, 60))
    closes, _ = rollup_closes(operator_id, list(entries) + [tick(operator_id, day.replace(hour=17))])
    assert len(closes) == 5  # 10, 11, 12 and the empty 13, 14
    await append_entries(conn, entries)
    ten = closes[0].rollup
    doctored = dataclasses.replace(closes[0], rollup=dataclasses.replace(
        ten, counts={**ten.counts, "DELIVERED": ten.counts["DELIVERED"] - 1,
                     "UNKNOWN": ten.counts["UNKNOWN"] + 1}))
    # 11:00 and the empty 13:00 were never stored; 14:00 (the last) was.
    await append_closes(conn, [doctored, closes[2], closes[4]])

    report = await reconcile_day(conn, day.date(), operator_id)
    found = [(d.hour_start, d.field, d.expected, d.found) for d in report.differences]
    assert found == [
        (closes[0].hour_start, "counts.DELIVERED", ten.counts["DELIVERED"], ten.counts["DELIVERED"] - 1),
        (closes[0].hour_start, "counts.UNKNOWN", ten.counts["UNKNOWN"], ten.counts["UNKNOWN"] + 1),
        (closes[1].hour_start, "presence", "present", "absent"),
        (closes[3].hour_start, "presence", "present", "absent"),  # an empty hour is closed explicitly
    ]
    assert not report.ok and report.operators[0].hours_compared == 5


async def test_late_events_reconcile_clean_once_their_correction_is_stored_and_are_pending_before(conn):
    operator_id, day = new_operator("late"), unique_day()
    entries, _, state, head = await store_day(conn, operator_id, day)
    # Late beyond the grace: 11:xx and 12:xx after 13:00 closed; 08:xx before the first closed hour.
    late, head = chain(operator_id, [day.replace(hour=11, minute=59, second=59, microsecond=999_000),
                                     day.replace(hour=12, minute=0), day.replace(hour=8, minute=30)], head)
    pending_closes, state = rollup_closes(operator_id, list(late), state)
    assert pending_closes == []  # held until the operator's next regular close
    await append_entries(conn, late)

    report = await reconcile_day(conn, day.date(), operator_id)
    assert report.ok, report.differences
    (detail,) = report.operators
    assert detail.pending == {format_utc(day.replace(hour=h)): 1 for h in (8, 11, 12)}

    # The next regular close (a tick) emits the backfill (08 and the empty 09) and the corrections.
    closes, state = rollup_closes(operator_id, [tick(operator_id, day.replace(hour=17))], state)
    kinds = [(c.hour_start[11:13], c.revision, c.closed_by) for c in closes]
    assert kinds == [("08", 0, "correction"), ("09", 0, "correction"), ("11", 1, "correction"),
                     ("12", 1, "correction"), ("14", 0, "tick")]
    await append_closes(conn, closes)

    report = await reconcile_day(conn, day.date(), operator_id)
    assert report.ok, report.differences
    (detail,) = report.operators
    assert detail.pending == {} and detail.open_hours == {}
    assert (detail.compared_from, detail.compared_through) == (format_utc(day.replace(hour=8)),
                                                               format_utc(day.replace(hour=14)))
    assert detail.hours_compared == 7


async def test_hours_after_the_last_close_are_open_not_differences(conn, stack_env, repo_root):
    operator_id, day = new_operator("open"), unique_day()
    entries, head = chain(operator_id, spread(day.replace(hour=9), 4, 40))  # 09:00-12:54
    closes, _ = rollup_closes(operator_id, list(entries))  # watermark 12:54: only 09 closes
    assert [c.hour_start for c in closes] == [format_utc(day.replace(hour=9))]
    await append_entries(conn, entries)
    await append_closes(conn, closes)
    status, differences, summary = reconcile_cli(stack_env, repo_root, day, operator_id)
    assert (status, differences) == (0, [])
    (detail,) = summary["by_operator"]
    assert detail["open_hours"] == {format_utc(day.replace(hour=h)): 10 for h in (10, 11, 12)}
    assert summary["hours_compared"] == 1 and summary["hours_open"] == 3


async def test_every_operator_of_the_day_without_operator_argument(conn, stack_env, repo_root):
    day = unique_day()
    clean, forged = sorted((new_operator("all-a"), new_operator("all-b")))
    await store_day(conn, clean, day)
    _, closes, _, _ = await store_day(conn, forged, day)
    twelve = closes[2]
    await forge(conn, dataclasses.replace(  # revision 2 without a revision 1
        twelve, revision=2, closed_by="correction",
        rollup=HourRollup.empty(forged, twelve.hour_start, "EUR")))
    status, differences, summary = reconcile_cli(stack_env, repo_root, day)
    assert status == 1
    assert differences == [{"operator_id": forged, "hour_start": twelve.hour_start, "field": "revisions",
                            "expected": [0, 1], "found": [0, 2]}]
    assert [d["operator_id"] for d in summary["by_operator"]] == [clean, forged]
    assert [d["differences"] for d in summary["by_operator"]] == [0, 1]


async def test_a_day_with_nothing_is_clean(stack_env, repo_root):
    status, differences, summary = reconcile_cli(stack_env, repo_root, unique_day())
    assert (status, differences, summary["operators"], summary["ok"]) == (0, [], 0, True)


@pytest.mark.parametrize("args", [["--day", "2026-13-01"], ["--day", "yesterday"], []])
def test_bad_arguments_exit_2(stack_env, repo_root, args):
    result = subprocess.run([sys.executable, *CDRMED, "reconcile", *args], env=stack_env, cwd=repo_root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--day" in result.stderr and result.stdout == ""
