"""Chains of plain CDRs for tests that need stored entries, not the pipeline that makes them."""

from __future__ import annotations

import datetime as dt
import uuid

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link


def simple_chain(operator_id: str, count: int) -> list[tuple[dict, str]]:
    """`count` linked entries of one operator, as the ingest agent emits them."""
    head, pairs = ChainHead.genesis(operator_id), []
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    for n in range(count):
        moment = format_utc(start + dt.timedelta(seconds=n))
        unlinked = Cdr(
            record_type=RecordType.CDR, cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
            dlr_id=f"{operator_id}-dlr-{n}", message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id,
            sender_id="BANKCO", msisdn="+447700900123", status=DlrStatus.DELIVERED, submitted_at=moment,
            done_at=moment, segments=1, billable=True, unit_price_minor=5, amount_minor=5, tax_minor=1,
            currency="EUR", pricing_version="p1", error_code=None, smsc_id="smsc-1", chain_seq=0,
            prev_hash="",
        )
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        head = head.advance(linked, record_hash)
    return pairs
