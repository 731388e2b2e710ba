"""The rollup read path on the real stack: `GET /v1/rollups` on the portal, open hours routed to
the worker that owns the operator's partition, closed hours from PostgreSQL (issue 4, item 5).

Two worker processes share the partitions. DLRs of four operators span five hours of event
time; clock ticks close more hours for two of them. Then, for every operator: both workers'
`/rollups/open/{operator}` give the same answer (one serves it from its table, the other
forwards it), two portals that ask the workers in opposite orders give the same answer, closed
hours are the PostgreSQL closes, open hours are the table's, and all hours add up to the CDRs
stored for the operator. Last, both workers stop, their data directories are deleted, and a
fresh worker restores every operator's rollup state exactly from the changelog.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections import defaultdict

import aiohttp
import asyncpg

from cdr_mediation.domain.cdr import format_utc, parse_utc
from cdr_mediation.domain.rollup import rollups_from_closes
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.infra.postgres.rollup_store import fetch_closes
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import expected_cdr_ids, wait_stored
from tests.integration.support.portal import portal_tls
from tests.integration.support.processes import eventually

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
GRACE = dt.timedelta(hours=2)  # CDR_ROLLUP_GRACE_S default
DLRS = 2_000
HOURS = 5
FORWARDED_HEADER = "X-Cdr-Forwarded-By"


async def _get(url: str, params: dict | None = None, headers: dict | None = None,
               tls: ssl.SSLContext | None = None) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=params, headers=headers, ssl=tls if tls is not None else True,
                               timeout=aiohttp.ClientTimeout(total=30)) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _expected_closed_through(last_event: dt.datetime, tick: dt.datetime | None) -> dt.datetime:
    """The last hour the stream closes: the watermark must reach hour end + grace."""
    watermark = max(last_event, tick) if tick else last_event
    return _hour(watermark - GRACE) - HOUR


async def _stored(run: LocalPipeline, operator_id: str, start: dt.datetime, end: dt.datetime):
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        closes = await fetch_closes(conn, operator_id=operator_id, start=start, end=end)
        cdrs = await conn.fetchval("SELECT count(*) FROM cdr WHERE operator_id = $1", operator_id)
    finally:
        await conn.close()
    return closes, cdrs


async def _closed_hours(run: LocalPipeline) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT DISTINCT operator_id, hour_start FROM rollup_closed WHERE operator_id LIKE $1",
                                f"{run.namespace}-%")
    finally:
        await conn.close()
    return {(row["operator_id"], format_utc(row["hour_start"])) for row in rows}


def _tick(run: LocalPipeline, operator_id: str, at: dt.datetime) -> None:
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--operator", operator_id,
                             "--at", at.isoformat(), "--allow-future"], env={**os.environ, **run.env}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


async def test_open_and_closed_hours_are_the_same_whichever_worker_or_portal_is_asked(stack_env, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=4, partitions=4)
    try:
        run.start("bridge", "bridge")
        workers = {}
        for name in ("worker-a", "worker-b"):
            port = free_port()
            run.start(name, "worker", CDR_WORKER_WEB_PORT=str(port))
            workers[name] = f"http://127.0.0.1:{port}"
        portals = {}
        for name, order in (("portal-ab", ["worker-a", "worker-b"]), ("portal-ba", ["worker-b", "worker-a"])):
            port = free_port()
            run.start(name, "portal", CDR_PORTAL_PORT=str(port), CDR_PORTAL_PROBE_PORT=str(free_port()),
                      CDR_WORKER_URLS=",".join(workers[worker] for worker in order))
            portals[name] = f"https://127.0.0.1:{port}"
        regulator = portal_tls(stack_env, "regulator")

        spacing_ms = HOURS * 3_600_000 // DLRS
        traffic = list(synthetic_dlrs(seed=4, start=START, count=DLRS, operators=run.operators,
                                      spacing_ms=spacing_ms, id_prefix=f"{run.namespace}-read"))
        documents = [json.dumps(d).encode() for d in traffic]
        await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
        expected = expected_cdr_ids(run, documents)
        await wait_stored(run, len(expected), timeout=240, what="all CDRs")

        # Two operators get clock ticks: one closes up to 03:00, one up to 05:00 (an empty hour).
        last_event = defaultdict(lambda: START)
        for doc in traffic:
            last_event[doc["operator_id"]] = max(last_event[doc["operator_id"]], parse_utc(doc["done_at"]))
        ticks = {run.operators[0]: START + dt.timedelta(hours=6), run.operators[1]: START + dt.timedelta(hours=8)}
        for operator_id, at in ticks.items():
            _tick(run, operator_id, at)
        closed_through = {op: _expected_closed_through(last_event[op], ticks.get(op)) for op in run.operators}
        assert format_utc(closed_through[run.operators[0]]) == "2026-11-01T03:00:00.000Z"
        assert format_utc(closed_through[run.operators[1]]) == "2026-11-01T05:00:00.000Z"
        wanted = {(op, format_utc(START + n * HOUR)) for op in run.operators
                  for n in range(int((closed_through[op] - START) / HOUR) + 1)}

        async def all_closed() -> bool:
            return wanted <= await _closed_hours(run)

        await eventually(all_closed, timeout=240, what="every expected hour closed in PostgreSQL",
                         log=run.log_path("worker-a"))
        assert await _closed_hours(run) == wanted, "an hour closed that should still be open"

        # The range: from inside the first hour (an unaligned instant) to a whole hour after the last
        # event's hour: hours 00:00 .. 06:00.
        params_from, params_to = START + dt.timedelta(minutes=30), START + 7 * HOUR
        hours = [format_utc(START + n * HOUR) for n in range(7)]
        reference: dict[str, dict] = {}
        for operator_id in run.operators:
            through = format_utc(closed_through[operator_id])

            async def workers_agree():
                answers = {name: await _get(f"{url}/rollups/open/{operator_id}") for name, url in workers.items()}
                if any(status != 200 for status, _, _ in answers.values()):
                    return None
                bodies = [body for _, body, _ in answers.values()]
                if bodies[0]["closed_through"] != through or any(body != bodies[0] for body in bodies):
                    return None
                return answers

            answers = await eventually(workers_agree, timeout=120, what=f"{operator_id}: both workers answer alike",
                                       log=run.log_path("worker-b"))
            open_state = answers["worker-a"][1]
            reference[operator_id] = _state_only(open_state)
            owner = open_state["owner"]
            assert owner in workers.values() and 0 <= open_state["partition"] < 4
            assert {headers["X-Cdr-Served-By"] for _, _, headers in answers.values()} == {owner}
            # A forwarded request that reaches a worker not owning the partition is refused, not
            # forwarded again.
            (other,) = [url for url in workers.values() if url != owner]
            status, body, _ = await _get(f"{other}/rollups/open/{operator_id}", headers={FORWARDED_HEADER: owner})
            assert status == 503 and body["error"]["code"] == "not_owner", body

            params = {"operator": operator_id, "from": params_from.isoformat(), "to": params_to.isoformat()}
            bodies = {}
            for name, url in portals.items():
                body = (await eventually(lambda: _portal_ok(url, params, regulator), timeout=60, what=f"{name} answers",
                                         log=run.log_path(name)))
                bodies[name] = body
            assert bodies["portal-ab"] == bodies["portal-ba"]
            body = bodies["portal-ab"]
            assert [h["hour_start"] for h in body["hours"]] == hours
            assert body["closed_through"] == through == open_state["closed_through"]
            assert body["watermark"] == open_state["watermark"]

            closes, cdrs = await _stored(run, operator_id, START, START + 7 * HOUR)
            merged = rollups_from_closes(closes)
            assert set(merged) == {h for h in hours if h <= through}
            total = 0
            for item in body["hours"]:
                hour = item["hour_start"]
                assert item["hour_end"] == format_utc(parse_utc(hour) + HOUR)
                if hour <= through:
                    assert item["closed"] is True, item
                    assert item["values"] == merged[hour].to_dict()
                    assert [r["revision"] for r in item["revisions"]] == [
                        c.revision for c in closes if c.hour_start == hour] == [0]
                else:
                    assert item["closed"] is False, item
                    assert item["revisions"] == []
                    in_table = open_state["open_hours"].get(hour)
                    if in_table is not None:
                        assert item["values"] == in_table
                    else:
                        assert item["values"]["records"] == 0 and item["values"]["first_chain_seq"] is None
                assert item["pending_correction"] is None
                total += item["values"]["records"] + sum(item["values"]["adjustments"].values())
            assert total == cdrs > 0, f"{operator_id}: hours add up to {total}, {cdrs} CDRs stored"
            # The empty closed hour 05:00 of the operator ticked to 08:00 is a stored revision 0.
            if operator_id == run.operators[1]:
                five = body["hours"][5]
                assert five["closed"] is True and five["values"]["records"] == 0 and five["revisions"]

        # A fresh worker with an empty data directory, alone in the group, restores every
        # operator's rollup state exactly from the changelog.
        for name in workers:
            run.kill(name, signal.SIGTERM)
            shutil.rmtree(run.work_dir / f"{name}-data", ignore_errors=True)
        fresh_port = free_port()
        run.start("worker-fresh", "worker", CDR_WORKER_WEB_PORT=str(fresh_port))
        fresh = f"http://127.0.0.1:{fresh_port}"
        for operator_id in run.operators:
            async def restored():
                status, body, _ = await _get(f"{fresh}/rollups/open/{operator_id}")
                return body if status == 200 else None

            body = await eventually(restored, timeout=120, what=f"{operator_id}: fresh worker answers",
                                    log=run.log_path("worker-fresh"))
            assert _state_only(body) == reference[operator_id], f"{operator_id}: restored state differs"

        # The real process refuses bad parameters in the one error shape.
        status, body, _ = await _get(f"{portals['portal-ab']}/v1/rollups",
                                     params={"operator": run.operators[0], "from": "2026-11-01T00:00:00Z",
                                             "to": "2026-12-03T00:00:00Z"}, tls=regulator)
        assert status == 400 and body["error"]["code"] == "bad_request" and "31 days" in body["error"]["message"]
    finally:
        run.stop_all()


def _state_only(answer: dict) -> dict:
    """A worker's answer without who served it (the state is what must be restored exactly)."""
    return {key: value for key, value in answer.items() if key not in ("owner", "partition")}


async def _portal_ok(base: str, params: dict, tls: ssl.SSLContext) -> dict | None:
    status, body, _ = await _get(f"{base}/v1/rollups", params=params, tls=tls)
    return body if status == 200 else None
