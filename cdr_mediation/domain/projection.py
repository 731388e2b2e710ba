"""DLR -> CDR: a pure, deterministic mapping (no clock, no randomness, no I/O).

`project(dlr, pricing)` returns an *unlinked* CDR (``chain_seq = 0``, ``prev_hash = ""``);
`chain.link` places it in the operator's chain. Keeping the two apart means the chain rules live
in one place for CDRs and, later, adjustments.

Field mapping (see docs/chain.md §3):

* ``cdr_id`` = UUIDv5(`CDR_ID_NAMESPACE`, UTF-8 bytes of ``dlr_id``), lowercase hyphenated — any
  language's UUIDv5 reproduces it. The namespace is itself UUIDv5(NAMESPACE_URL,
  ``"urn:cdr-mediation:cdr-id:v1"``), frozen here as a literal.
* identifiers, msisdn, status, segments, error_code, smsc_id: copied from the DLR;
* ``submitted_at`` / ``done_at``: `format_utc` (UTC, milliseconds, ``Z``);
* money: `pricing.charge` with the rate in force at ``done_at``;
* ``record_type`` = CDR; ``ref_cdr_id``, ``ticket_ref``, ``actor`` = null (adjustments only).
"""

from __future__ import annotations

import hashlib
import uuid

from cdr_mediation.domain.cdr import Cdr, RecordType, format_utc
from cdr_mediation.domain.chain import UNLINKED_PREV_HASH, UNLINKED_SEQ
from cdr_mediation.domain.dlr import Dlr
from cdr_mediation.domain.pricing import PricingSnapshot, amounts

CDR_ID_NAMESPACE = uuid.UUID("a05098fa-4445-546f-91dd-845195099ec1")
_NAMESPACE_BYTES = CDR_ID_NAMESPACE.bytes


def cdr_id_for(dlr_id: str) -> str:
    """The CDR id of a DLR: UUIDv5 under `CDR_ID_NAMESPACE`. Same DLR id, same CDR id, forever.

    RFC 9562 §5.5 spelled out (SHA-1 of namespace ‖ name, first 16 bytes, version 5, variant
    10) instead of `uuid.uuid5`, whose UUID object round trip (bytes → int → str) is most of
    the cost on this hot path; tests/unit/domain/test_hot_path.py holds the two equal."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + dlr_id.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def project(dlr: Dlr, pricing: PricingSnapshot, *, chain_seq: int = UNLINKED_SEQ,
            prev_hash: str = UNLINKED_PREV_HASH) -> Cdr:
    """The unlinked CDR for a valid DLR. Raises `pricing.NoPrice` when no rate applies.

    `chain_seq` / `prev_hash` place the CDR directly where `chain.link` would (the values of
    `chain.next_position`): the ingest hot path then builds one entry instead of two."""
    rate = pricing.rate_for(dlr.operator_id, dlr.tenant_id, dlr.done_at)
    billable, amount, tax = amounts(rate, dlr.status, dlr.segments)  # = charge(rate, …), see pricing
    return Cdr(
        record_type=RecordType.CDR,
        cdr_id=cdr_id_for(dlr.dlr_id),
        dlr_id=dlr.dlr_id,
        message_id=dlr.message_id,
        tenant_id=dlr.tenant_id,
        operator_id=dlr.operator_id,
        sender_id=dlr.sender_id,
        msisdn=dlr.msisdn,
        status=dlr.status,
        submitted_at=format_utc(dlr.submitted_at),
        done_at=format_utc(dlr.done_at),
        segments=dlr.segments,
        billable=billable,
        unit_price_minor=rate.unit_price_minor,
        amount_minor=amount,
        tax_minor=tax,
        currency=rate.currency,
        pricing_version=rate.rate_id,
        error_code=dlr.error_code,
        smsc_id=dlr.smsc_id,
        chain_seq=chain_seq,
        prev_hash=prev_hash,
    )
