"""The portal's read API on the real stack (PostgreSQL, object-lock S3, `cdrmed portal` over
mutual TLS): CDR search with cursor pages, detail with adjustments and export file, export files
with their history, downloads verified against the lifecycle — a corrupted archive object is never
delivered complete — the audit log for admins and auditors only, and no MSISDN in the log."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import asyncpg
import pytest

from tests.integration.support.portal import portal_tls
from tests.integration.support.portal_data import EARLIER, MSISDNS, PortalData, seed
from tests.integration.support.portal_process import RunningPortal, get
from tests.integration.support.processes import eventually


@pytest.fixture(scope="module")
async def data(stack_env) -> PortalData:
    return await seed(stack_env)


@pytest.fixture(scope="module")
async def portal(stack_env, tmp_path_factory, data):
    async with RunningPortal(stack_env, tmp_path_factory.mktemp("portal-read") / "portal.log") as running:
        yield running


async def _pages(portal, tls, limit: int, **filters) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        params = {**filters, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        status, body, _ = await get(f"{portal.base}/v1/cdrs", tls, **params)
        assert status == 200, body
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_cdr_pages_follow_the_chain_and_a_cursor_keeps_its_filters(portal, data, stack_env):
    regulator = portal_tls(stack_env, "regulator")
    operator = data.operators["a"]
    pages = await _pages(portal, regulator, 5, operator_id=operator)
    assert [len(p) for p in pages] == [5, 5, 3]
    assert [item for page in pages for item in page] == data.entries  # as stored, with record_hash

    _, first, _ = await get(f"{portal.base}/v1/cdrs", regulator, operator_id=operator, limit="5")
    status, body, _ = await get(f"{portal.base}/v1/cdrs", regulator, operator_id=operator, status="DELIVERED",
                                cursor=first["next_cursor"])
    assert status == 400 and body["error"]["code"] == "bad_cursor"


async def test_search_by_msisdn_time_and_type(portal, data, stack_env):
    auditor = portal_tls(stack_env, "auditor")
    operator = data.operators["a"]
    pages = await _pages(portal, auditor, 2, operator_id=operator, msisdn=MSISDNS[1])
    found = [item for page in pages for item in page]
    assert found == [e for e in data.entries if e["msisdn"] == MSISDNS[1]] and len(found) == 6

    lower, upper = data.entries[2]["done_at"], data.entries[4]["done_at"]
    status, body, _ = await get(f"{portal.base}/v1/cdrs", auditor, operator_id=operator, to=upper,
                                **{"from": lower})
    assert status == 200 and [i["chain_seq"] for i in body["items"]] == [3, 4]  # [from, to)
    status, body, _ = await get(f"{portal.base}/v1/cdrs", auditor, operator_id=operator, record_type="VOID")
    assert [i["cdr_id"] for i in body["items"]] == [data.entries[-1]["cdr_id"]]

    async def logged() -> bool:  # the access line is written once the response is out
        return '"/v1/cdrs"' in portal.log.read_text() and "msisdn:" in portal.log.read_text()

    await eventually(logged, timeout=10, what="the access log line of the msisdn search")
    log = portal.log.read_text()
    assert not any(number.lstrip("+") in log for number in MSISDNS)


async def test_the_msisdn_search_is_an_index_range_scan_in_answer_order(stack_env, data):
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        async with conn.transaction():
            # A handful of rows would be read sequentially anyway; ask whether an ordered index path exists.
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            plan = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT * FROM cdr WHERE msisdn = $1 AND (operator_id, chain_seq) > ($2, $3::bigint) "
                "ORDER BY operator_id, chain_seq LIMIT 101", MSISDNS[0], data.operators["a"], 2)
    finally:
        await conn.close()
    assert '"Index Name": "cdr_msisdn"' in plan and '"Node Type": "Sort"' not in plan, plan


async def test_detail_names_adjustments_and_the_export_file(portal, data, stack_env):
    regulator = portal_tls(stack_env, "regulator")
    original, void = data.entries[0], data.entries[-1]
    status, body, _ = await get(f"{portal.base}/v1/cdrs/{original['cdr_id']}", regulator)
    assert status == 200, body
    assert body["entry"] == original and body["adjustments"] == [void]
    assert body["export"] == {"operator_id": data.operators["a"], "day": original["done_at"][:10],
                              "file_name": data.files["a"], "state": "BUILT"}
    status, body, _ = await get(f"{portal.base}/v1/cdrs/{void['cdr_id']}", regulator)
    assert status == 200 and body["adjustments"] == [] and body["export"] is None  # after the day closed
    status, body, _ = await get(f"{portal.base}/v1/cdrs/00000000-0000-5000-8000-000000000000", regulator)
    assert status == 404 and body["error"]["code"] == "unknown_cdr"


async def test_exports_list_and_history(portal, data, stack_env):
    regulator = portal_tls(stack_env, "regulator")
    status, body, _ = await get(f"{portal.base}/v1/exports", regulator, operator_id=data.operators["b"])
    assert status == 200 and [(i["file_name"], i["state"], i["steps"]) for i in body["items"]] == [
        (data.files["b"], "DELIVERED", 3)]
    status, body, _ = await get(f"{portal.base}/v1/exports", regulator, state="BUILT", day="2026-09-14", limit="1000")
    assert data.files["a"] in [i["file_name"] for i in body["items"]]
    status, body, _ = await get(f"{portal.base}/v1/exports/{data.operators['b']}/{EARLIER}", regulator)
    assert [s["event"] for s in body["history"]] == ["built", "signed", "delivered"]
    assert sorted(a["kind"] for a in body["archived"]) == ["checkpoint", "signature", "zip"]
    status, body, _ = await get(f"{portal.base}/v1/exports/{data.operators['b']}/2020-01-01", regulator)
    assert status == 404 and body["error"]["code"] == "unknown_export"


async def _download(portal, tls, operator_id: str, part: str) -> tuple[int, bytes, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{portal.base}/v1/exports/{operator_id}/{EARLIER}/download", params={"part": part},
                               ssl=tls, timeout=aiohttp.ClientTimeout(total=30)) as response:
            return response.status, await response.read(), dict(response.headers)


@pytest.mark.parametrize("part, suffix", [("zip", ".zip"), ("signature", ".zip.p7s"),
                                          ("checkpoint", ".checkpoint.json")])
async def test_downloads_stream_the_archived_bytes_as_recorded(portal, data, stack_env, part, suffix):
    status, body, headers = await _download(portal, portal_tls(stack_env, "auditor"), data.operators["b"], part)
    assert status == 200 and body == data.archived[part]
    assert headers["Content-Disposition"] == f'attachment; filename="{data.files["b"]}{suffix}"'
    assert headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


async def test_a_corrupted_archive_object_is_never_delivered_complete_and_is_counted(portal, data, stack_env):
    admin = portal_tls(stack_env, "admin")
    with pytest.raises(aiohttp.ClientPayloadError):
        await _download(portal, admin, data.operators["c"], "zip")
    status, metrics, _ = await get(f"{portal.base}/metrics", admin)
    assert 'cdr_portal_download_verification_failures_total{part="zip"} 1.0' in metrics
    assert "archived export bytes are not the recorded ones" in portal.log.read_text()
    status, body, _ = await _download(portal, admin, data.operators["c"], "signature")
    assert status == 200  # the other parts of the same file are intact


async def test_a_file_not_archived_yet_is_a_404(portal, data, stack_env):
    status, body, _ = await get(f"{portal.base}/v1/exports/{data.operators['a']}/2026-09-14/download",
                                portal_tls(stack_env, "regulator"), part="zip")
    assert status == 404 and body["error"]["code"] == "not_archived"


async def test_the_audit_log_is_for_admins_and_auditors(portal, data, stack_env):
    auditor = portal_tls(stack_env, "auditor")
    ref = f"operator_id:{data.operators['b']}"
    status, first, _ = await get(f"{portal.base}/v1/audit", auditor, ref=ref, limit="2")
    assert status == 200 and len(first["items"]) == 2 and first["next_cursor"]
    status, rest, _ = await get(f"{portal.base}/v1/audit", auditor, ref=ref, limit="2", cursor=first["next_cursor"])
    entries = first["items"] + rest["items"]
    assert [e["detail"]["event"] for e in entries] == ["built", "signed", "delivered"] and rest["next_cursor"] is None
    assert all(e["action"] == "export.transition" and len(e["entry_hash"]) == 64 for e in entries)
    status, body, _ = await get(f"{portal.base}/v1/audit", portal_tls(stack_env, "regulator"), ref=ref)
    assert status == 403 and body["error"]["code"] == "forbidden"
