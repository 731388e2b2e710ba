"""`GET /v1/rollups` (portal/rollups.py): range parsing, merging stored closes with the table's open
state, the worker fallback order and the one error shape — without Kafka or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from cdr_mediation.domain.rollup import ClockTick, HourRollup, OperatorRollupState, apply_entries, merge
from cdr_mediation.portal.app import create_portal
from cdr_mediation.portal.rollups import (
    ApiError,
    RollupQuery,
    RollupSources,
    hours_overlapping,
    parse_query,
    parse_worker_urls,
    rollups_response,
    state_from_worker,
)
from cdr_mediation.stack.process import free_port
from tests.unit.domain.test_rollup import OP, Chain, at, hour

UTC = dt.timezone.utc


def q(**params: str) -> RollupQuery:
    return parse_query({"operator": OP, **params})


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- parameters ---------------------------------------------------------------------------------


def test_hour_aligned_range_lists_from_inclusive_to_exclusive() -> None:
    query = q(**{"from": "2026-04-10T06:00:00Z", "to": "2026-04-10T09:00:00Z"})
    assert query.hours == [hour(6), hour(7), hour(8)]
    assert (query.start, query.end) == (instant("2026-04-10T06:00:00Z"), instant("2026-04-10T09:00:00Z"))


@pytest.mark.parametrize("start, end, hours", [
    ("2026-04-10T06:30:00Z", "2026-04-10T08:00:00Z", [6, 7]),
    ("2026-04-10T06:59:59.999Z", "2026-04-10T07:00:00.001Z", [6, 7]),
    ("2026-04-10T06:00:00Z", "2026-04-10T06:00:00.001Z", [6]),
    ("2026-04-10T06:15:00Z", "2026-04-10T06:45:00Z", [6]),
    ("2026-04-10T06:30:00Z", "2026-04-10T08:00:00.001Z", [6, 7, 8]),
])
def test_unaligned_instants_list_every_hour_overlapping_the_range(start, end, hours) -> None:
    assert q(**{"from": start, "to": end}).hours == [hour(h) for h in hours]


def test_offsets_are_instants_in_utc_including_a_plus_sign_decoded_as_a_space() -> None:
    expected = [hour(6), hour(7)]
    assert q(**{"from": "2026-04-10T08:00:00+02:00", "to": "2026-04-10T10:00+02:00"}).hours == expected
    # An unencoded "+" in a query string arrives as a space.
    assert q(**{"from": "2026-04-10T08:00:00 02:00", "to": "2026-04-10T10:00:00 0200"}).hours == expected
    assert q(**{"from": "2026-04-10T01:00:00-05:00", "to": "2026-04-10T08:00:00.000000Z"}).hours == expected


def test_thirty_one_days_is_the_longest_range() -> None:
    query = q(**{"from": "2026-04-01T00:00:00Z", "to": "2026-05-02T00:00:00Z"})
    assert len(query.hours) == 31 * 24
    with pytest.raises(ApiError, match="longer than 31 days") as raised:
        q(**{"from": "2026-04-01T00:00:00Z", "to": "2026-05-02T00:00:00.001Z"})
    assert raised.value.status == 400 and raised.value.code == "bad_request"


@pytest.mark.parametrize("params, message", [
    ({"operator": OP, "from": "2026-04-10T06:00:00Z"}, "missing parameter\\(s\\) to"),
    ({"from": "2026-04-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}, "missing parameter\\(s\\) operator"),
    ({"operator": "", "from": "", "to": ""}, "missing parameter\\(s\\) operator, from, to"),
    ({"operator": "op a", "from": "2026-04-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}, "not an operator id"),
    ({"operator": "x" * 65, "from": "2026-04-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}, "not an operator id"),
    ({"operator": OP, "from": "2026-04-10T06:00:00", "to": "2026-04-10T07:00:00Z"}, "from=.* has no UTC offset"),
    ({"operator": OP, "from": "2026-04-10", "to": "2026-04-11T00:00:00Z"}, "from=.* has no UTC offset"),
    ({"operator": OP, "from": "2026-04-10T06:00:00Z", "to": "yesterday"}, "to='yesterday' is not an ISO 8601"),
    ({"operator": OP, "from": "2026-13-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}, "from=.* is not an ISO"),
    ({"operator": OP, "from": "2026-04-10T07:00:00Z", "to": "2026-04-10T07:00:00Z"}, "must be before to"),
    ({"operator": OP, "from": "2026-04-10T08:00:00Z", "to": "2026-04-10T07:00:00Z"}, "must be before to"),
    ({"operator": OP, "from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:30:00Z"}, "beyond the year 9999"),
    ({"operator": OP, "form": "2026-04-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}, "unknown parameter\\(s\\) form"),
])
def test_bad_or_missing_parameters_are_a_400_saying_which(params, message) -> None:
    with pytest.raises(ApiError, match=message) as raised:
        parse_query(params)
    assert (raised.value.status, raised.value.code) == (400, "bad_request")


def test_a_repeated_parameter_is_refused() -> None:
    params = MultiDict([("operator", OP), ("operator", "op-b"), ("from", "2026-04-10T06:00:00Z"),
                        ("to", "2026-04-10T07:00:00Z")])
    with pytest.raises(ApiError, match="operator given more than once"):
        parse_query(params)


def test_hours_overlapping_crosses_days() -> None:
    hours = hours_overlapping(instant("2026-04-10T22:10:00Z"), instant("2026-04-11T01:00:00Z"))
    assert hours == [hour(22), hour(23), hour(0, day=11)]


def test_worker_urls_setting_is_split_and_trimmed() -> None:
    assert parse_worker_urls("http://a:1/, http://b:2") == ("http://a:1", "http://b:2")
    assert parse_worker_urls("") == () and parse_worker_urls(None) == ()
    assert parse_worker_urls(["http://a:1"]) == ("http://a:1",)


# --- merging closed and open hours --------------------------------------------------------------


def scenario():
    """One operator (grace 2 h): hours 06 and 07 closed, 06 with a correction revision and one more
    late event pending; 08 has no events; 09 open. Returns (closes, state, number of CDRs)."""
    chain = Chain()
    first = [chain.cdr(at(6, 10)), chain.cdr(at(6, 50), status="UNDELIVERED"), chain.cdr(at(7, 30), segments=2),
             chain.cdr(at(9, 15))]  # 09:15 closes 06
    late = [chain.cdr(at(6, 20))]  # after 06 closed: pending correction
    tick = [ClockTick(OP, at(10, 0))]  # closes 07: emits 06 revision 1, then 07
    later = [chain.cdr(at(6, 30), status="EXPIRED")]  # pending again
    closes = []
    state = OperatorRollupState.initial(OP)
    for items in (first, late, tick, later):
        step = apply_entries(state, items)
        closes += step.closed
        state = step.new_state
    assert [(c.hour_start, c.revision) for c in closes] == [(hour(6), 0), (hour(6), 1), (hour(7), 0)]
    assert state.closed_through == hour(7) and list(state.open_hours) == [hour(9)]
    assert list(state.pending_corrections) == [hour(6)]
    return closes, state, 6


def test_closed_hours_come_from_the_closes_and_open_hours_from_the_table() -> None:
    closes, state, cdrs = scenario()
    query = q(**{"from": "2026-04-10T05:30:00Z", "to": "2026-04-10T10:30:00Z"})
    body = rollups_response(query, closes, state)
    assert body["operator_id"] == OP and body["from"] == "2026-04-10T05:30:00.000Z"
    assert body["to"] == "2026-04-10T10:30:00.000Z"
    assert (body["watermark"], body["closed_through"]) == (at(10, 0), hour(7))
    by_hour = {h["hour_start"]: h for h in body["hours"]}
    assert list(by_hour) == [hour(h) for h in (5, 6, 7, 8, 9, 10)]
    assert all(h["hour_end"] == hour(int(h["hour_start"][11:13]) + 1) for h in body["hours"])

    # 05: before the operator's first hour, closed by the stream, nothing stored.
    assert by_hour[hour(5)] == {"hour_start": hour(5), "hour_end": hour(6), "closed": True, "values": None,
                                "revisions": [], "pending_correction": None}
    six = by_hour[hour(6)]
    assert six["closed"] is True
    assert six["values"] == merge(closes[:2]).to_dict()
    assert six["values"]["records"] == 3
    assert [(r["revision"], r["closed_by"]) for r in six["revisions"]] == [(0, "event"), (1, "correction")]
    assert [r["values"] for r in six["revisions"]] == [closes[0].rollup.to_dict(), closes[1].rollup.to_dict()]
    assert six["revisions"][0]["chain_head_seq"] == closes[0].chain_head_seq
    assert six["pending_correction"] == state.pending_corrections[hour(6)].to_dict()
    assert six["pending_correction"]["counts"]["EXPIRED"] == 1
    assert by_hour[hour(7)]["closed"] is True and by_hour[hour(7)]["values"] == closes[2].rollup.to_dict()
    # 08: after closed_through, no events yet: open and empty.
    assert by_hour[hour(8)]["closed"] is False
    assert by_hour[hour(8)]["values"] == HourRollup.empty(OP, hour(8), "EUR").to_dict()
    assert by_hour[hour(9)] == {"hour_start": hour(9), "hour_end": hour(10), "closed": False,
                                "values": state.open_hours[hour(9)].to_dict(), "revisions": [],
                                "pending_correction": None}
    assert by_hour[hour(10)]["closed"] is False and by_hour[hour(10)]["values"]["records"] == 0

    total = sum(h["values"]["records"] for h in body["hours"] if h["values"])
    total += sum(h["pending_correction"]["records"] for h in body["hours"] if h["pending_correction"])
    assert total == cdrs
    json.dumps(body)  # JSON as is


def test_a_close_not_yet_stored_is_closed_without_values() -> None:
    closes, state, _ = scenario()
    body = rollups_response(q(**{"from": "2026-04-10T07:00:00Z", "to": "2026-04-10T08:00:00Z"}), closes[:2], state)
    assert body["hours"] == [{"hour_start": hour(7), "hour_end": hour(8), "closed": True, "values": None,
                              "revisions": [], "pending_correction": None}]


def test_a_stored_close_wins_over_an_open_hour_the_table_still_holds() -> None:
    chain = Chain()
    step = apply_entries(OperatorRollupState.initial(OP), [chain.cdr(at(6, 10)), chain.cdr(at(8, 59))])
    assert step.closed == () and hour(6) in step.new_state.open_hours
    closing = apply_entries(step.new_state, [ClockTick(OP, at(9, 0))])
    # The close is stored, the table read happened before the state write: PostgreSQL wins.
    body = rollups_response(q(**{"from": "2026-04-10T06:00:00Z", "to": "2026-04-10T07:00:00Z"}),
                            list(closing.closed), step.new_state)
    (six,) = body["hours"]
    assert six["closed"] is True and six["values"] == closing.closed[0].rollup.to_dict()
    assert [r["revision"] for r in six["revisions"]] == [0]


def test_an_operator_nobody_has_seen_has_open_empty_hours() -> None:
    body = rollups_response(q(**{"from": "2026-04-10T06:00:00Z", "to": "2026-04-10T08:00:00Z"}), [],
                            OperatorRollupState.initial(OP))
    assert [(h["closed"], h["values"]["records"], h["values"]["currency"]) for h in body["hours"]] == [
        (False, 0, None), (False, 0, None)]
    assert body["watermark"] is None and body["closed_through"] is None


def test_closes_outside_the_range_or_of_another_operator_are_left_out() -> None:
    closes, state, _ = scenario()
    body = rollups_response(q(**{"from": "2026-04-10T07:00:00Z", "to": "2026-04-10T08:00:00Z"}), closes, state)
    assert [h["hour_start"] for h in body["hours"]] == [hour(7)]
    assert body["hours"][0]["values"] == closes[2].rollup.to_dict()


def test_a_worker_answer_is_checked_before_use() -> None:
    _, state, _ = scenario()
    answer = {**state.to_dict(), "partition": 3, "owner": "http://127.0.0.1:1"}
    assert state_from_worker(answer, OP) == state
    with pytest.raises(ValueError, match="not 'op-b'"):
        state_from_worker(answer, "op-b")
    with pytest.raises(ValueError, match="lacks"):
        state_from_worker({"operator_id": OP}, OP)
    with pytest.raises(ValueError, match="not a rollup state"):
        state_from_worker({**answer, "open_hours": {hour(9): {"counts": {}}}}, OP)
    with pytest.raises(ValueError, match="not a JSON object"):
        state_from_worker([answer], OP)


# --- the handler --------------------------------------------------------------------------------


async def _fake_worker(answers: dict[str, tuple[int, dict]]) -> TestServer:
    async def handle(request: web.Request) -> web.Response:
        status, body = answers[request.match_info["operator"]]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/rollups/open/{operator}", handle)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
def stored_closes(monkeypatch):
    """PostgreSQL replaced by a list of closes (fetch_closes is tested against the real database)."""
    held: list = []

    async def closes(self, query):
        return [c for c in held if c.operator_id == query.operator_id]

    monkeypatch.setattr(RollupSources, "closes", closes)
    return held


def REGULATOR(request):  # noqa: N802 - a constant-like stand-in for a verified client certificate
    return {"organizationalUnitName": ["regulator"], "commonName": ["unit-test"]}


async def _portal(worker_urls) -> TestClient:
    client = TestClient(TestServer(create_portal({}, pg_dsn="postgresql://unused@127.0.0.1:1/x",
                                                 worker_urls=worker_urls, subject_of=REGULATOR)))
    await client.start_server()
    return client


async def test_the_handler_skips_a_worker_that_is_down_and_merges(stored_closes) -> None:
    closes, state, _ = scenario()
    stored_closes.extend(closes)
    rebalancing = {"error": {"code": "rebalancing", "message": "partition 3 is being rebalanced"}}
    busy = await _fake_worker({OP: (503, rebalancing)})
    good = await _fake_worker({OP: (200, {**state.to_dict(), "partition": 3, "owner": "x"})})
    down = f"http://127.0.0.1:{free_port()}"
    client = await _portal(",".join([down, str(busy.make_url("")), str(good.make_url(""))]))
    try:
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z",
                                                           "to": "2026-04-10T10:00:00Z"})
        assert response.status == 200
        body = await response.json()
        query = q(**{"from": "2026-04-10T06:00:00Z", "to": "2026-04-10T10:00:00Z"})
        assert body == rollups_response(query, closes, state)
    finally:
        await client.close()
        await busy.close()
        await good.close()


async def test_no_worker_answering_is_a_503_naming_each(stored_closes) -> None:
    busy = await _fake_worker({OP: (503, {"error": {"code": "rebalancing", "message": "moving"}})})
    down = f"http://127.0.0.1:{free_port()}"
    client = await _portal([down, str(busy.make_url(""))])
    try:
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z",
                                                           "to": "2026-04-10T07:00:00Z"})
        assert response.status == 503
        error = (await response.json())["error"]
        assert error["code"] == "workers_unavailable"
        assert down in error["message"] and "HTTP 503 rebalancing: moving" in error["message"]
    finally:
        await client.close()
        await busy.close()


async def test_errors_have_one_json_shape() -> None:
    client = await _portal("")
    try:
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z"})
        assert response.status == 400
        assert await response.json() == {"error": {"code": "bad_request", "message": (
            "missing parameter(s) to: GET /v1/rollups?operator=<id>&from=<instant>&to=<instant>")}}
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z",
                                                           "to": "2026-04-10T07:00:00Z"})
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "not_configured"
    finally:
        await client.close()


async def test_a_malformed_worker_answer_is_a_502(stored_closes) -> None:
    odd = await _fake_worker({OP: (200, {"operator_id": OP})})
    client = await _portal([str(odd.make_url(""))])
    try:
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z",
                                                           "to": "2026-04-10T07:00:00Z"})
        assert response.status == 502 and (await response.json())["error"]["code"] == "bad_worker_response"
    finally:
        await client.close()
        await odd.close()


async def test_postgres_down_is_a_503(monkeypatch) -> None:
    _, state, _ = scenario()
    good = await _fake_worker({OP: (200, {**state.to_dict(), "partition": 0, "owner": "x"})})
    client = TestClient(TestServer(create_portal({}, pg_dsn=f"postgresql://cdr@127.0.0.1:{free_port()}/cdr",
                                                 worker_urls=[str(good.make_url(""))], subject_of=REGULATOR)))
    await client.start_server()
    try:
        response = await client.get("/v1/rollups", params={"operator": OP, "from": "2026-04-10T06:00:00Z",
                                                           "to": "2026-04-10T07:00:00Z"})
        assert response.status == 503 and (await response.json())["error"]["code"] == "database_unavailable"
    finally:
        await client.close()
        await good.close()


def test_create_portal_still_takes_probes_alone() -> None:
    app = create_portal({})
    assert "/v1/rollups" in {resource.canonical for resource in app.router.resources()}
