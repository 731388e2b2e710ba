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

import uuid

from cdr_mediation.domain.cdr import Cdr, RecordType, format_utc
from cdr_mediation.domain.chain import UNLINKED_PREV_HASH, UNLINKED_SEQ
from cdr_mediation.domain.dlr import Dlr
from cdr_mediation.domain.pricing import PricingSnapshot, charge

CDR_ID_NAMESPACE = uuid.UUID("a05098fa-4445-546f-91dd-845195099ec1")


def cdr_id_for(dlr_id: str) -> str:
    """The CDR id of a DLR: UUIDv5 under `CDR_ID_NAMESPACE`. Same DLR id, same CDR id, forever."""
    return str(uuid.uuid5(CDR_ID_NAMESPACE, dlr_id))


def project(dlr: Dlr, pricing: PricingSnapshot) -> Cdr:
    """The unlinked CDR for a valid DLR. Raises `pricing.NoPrice` when no rate applies."""
    rate = pricing.rate_for(dlr.operator_id, dlr.tenant_id, dlr.done_at)
    money = charge(rate, dlr.status, dlr.segments)
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
        billable=money.billable,
        unit_price_minor=money.unit_price_minor,
        amount_minor=money.amount_minor,
        tax_minor=money.tax_minor,
        currency=money.currency,
        pricing_version=money.pricing_version,
        error_code=dlr.error_code,
        smsc_id=dlr.smsc_id,
        chain_seq=UNLINKED_SEQ,
        prev_hash=UNLINKED_PREV_HASH,
    )
