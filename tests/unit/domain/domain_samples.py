"""Sample pricing snapshot and DLRs shared by the domain tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link

PRICING_DOC: dict[str, Any] = {
    "format": "cdr-mediation.pricing.v1",
    "version": "2026-02-15.1",
    "published_at": "2026-02-15T09:00:00Z",
    "operators": {
        "op-a": {
            "currency": "EUR",
            "rates": [
                {"rate_id": "op-a/default/2026-01", "effective_from": "2026-01-01T00:00:00Z",
                 "unit_price_minor": 5, "tax_rate_bp": 2000},
                {"rate_id": "op-a/default/2026-07", "effective_from": "2026-07-01T02:00:00+02:00",
                 "unit_price_minor": 6, "tax_rate_bp": 2100},
                {"rate_id": "op-a/tenant-7/2026-03", "tenant_id": "tenant-7",
                 "effective_from": "2026-03-01T00:00:00Z", "unit_price_minor": 4,
                 "tax_rate_bp": 2000},
            ],
        },
        "op-b": {
            "currency": "USD",
            "rates": [
                {"rate_id": "op-b/default/2026", "effective_from": "2026-01-01T00:00:00Z",
                 "unit_price_minor": 7, "tax_rate_bp": 0},
            ],
        },
        "op-late": {
            "currency": "EUR",
            "rates": [
                {"rate_id": "op-late/default/2027", "effective_from": "2027-01-01T00:00:00Z",
                 "unit_price_minor": 3, "tax_rate_bp": 2000},
            ],
        },
    },
}

BASE_DLR: dict[str, Any] = {
    "schema_version": 1,
    "dlr_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "message_id": "msg-000001",
    "tenant_id": "tenant-1",
    "operator_id": "op-a",
    "sender_id": "ACME",
    "msisdn": "+4915123456789",
    "status": "DELIVERED",
    "submitted_at": "2026-04-10T10:15:00.123Z",
    "done_at": "2026-04-10T10:15:03.456Z",
    "segments": 1,
    "error_code": None,
    "smsc_id": "smsc-fra-1",
}


def dlr_doc(**changes: Any) -> dict[str, Any]:
    """BASE_DLR with `changes` applied; a value of `...` deletes the field."""
    doc = dict(BASE_DLR)
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


CHAIN_START = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


def chain_rows(operator_id: str, count: int, *, minutes: list[int] | None = None) -> list[dict]:
    """`count` linked entries as stored rows (entry + record_hash), done_at CHAIN_START + n minutes."""
    head, rows = ChainHead.genesis(operator_id), []
    for n in range(count):
        moment = format_utc(CHAIN_START + dt.timedelta(minutes=minutes[n] if minutes else n))
        unlinked = Cdr(
            record_type=RecordType.CDR, cdr_id=f"cdr-{operator_id}-{n}", dlr_id=f"dlr-{n}", message_id=f"m-{n}",
            tenant_id="tenant-a", operator_id=operator_id, sender_id="BANKCO", msisdn="+447700900123",
            status=DlrStatus.DELIVERED, submitted_at=moment, done_at=moment, segments=1, billable=True,
            unit_price_minor=5, amount_minor=5, tax_minor=1, currency="EUR", pricing_version="p1", error_code=None,
            smsc_id="smsc-1", chain_seq=0, prev_hash="")
        linked, record_hash = link(head, unlinked)
        rows.append({**linked.to_entry(), "record_hash": record_hash})
        head = head.advance(linked, record_hash)
    return rows
