"""A little stored data for the portal's read API, the cheapest real way: chained entries appended
with `cdr_store.append_entries`, export files moved through their lifecycle with
`export_store.record_transition` (which also writes the audit log), and archived objects put into
the stack's object-lock S3 and recorded as the exporter records them. No exporter, no Kafka.

* operator `a`: `CDRS` entries on `DAY` (msisdns alternate between two numbers) and a VOID of
  the first; its export of `DAY` is BUILT (holds them, not signed yet).
* operator `b`: its export of `EARLIER` is DELIVERED and archived, every digest as recorded.
* operator `c`: its export of `EARLIER` is DELIVERED, but the archived ZIP holds other bytes than
  the lifecycle recorded (a storage fault, or tampering): a download must not complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid

import asyncpg

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.checkpoint import CheckpointBuilder
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_archive import ArchivedKind, delivered_keys
from cdr_mediation.domain.export_lifecycle import ExportEvent
from cdr_mediation.infra.archive import archive_store
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.export_store import ensure_export, record_archived, record_transition
from cdr_mediation.settings import Settings

DAY = "2026-09-14"
EARLIER = "2026-09-13"
CDRS = 12
MSISDNS = ("+447700900111", "+447700900222")


@dataclasses.dataclass
class PortalData:
    operators: dict[str, str]  # "a" / "b" / "c" → operator_id
    entries: list[dict]  # operator a's entries (with record_hash), in chain order; the last is the VOID
    files: dict[str, str]  # "a" / "b" / "c" → file name
    archived: dict[str, bytes]  # operator b's archived parts: "zip", "signature", "checkpoint"


def _entries(operator_id: str) -> list[tuple[dict, str]]:
    head, pairs = ChainHead.genesis(operator_id), []
    start = dt.datetime.fromisoformat(f"{DAY}T08:00:00+00:00")
    for n in range(CDRS + 1):
        void = n == CDRS
        moment = format_utc(start + dt.timedelta(minutes=5 * n))
        unlinked = Cdr(
            record_type=RecordType.VOID if void else RecordType.CDR,
            cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")), dlr_id=f"{operator_id}-dlr-{n}",
            message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id, sender_id="BANKCO",
            msisdn=MSISDNS[n % 2] if not void else MSISDNS[0],
            status=DlrStatus.DELIVERED if n % 3 else DlrStatus.UNDELIVERED, submitted_at=moment, done_at=moment,
            segments=1, billable=not void and bool(n % 3), unit_price_minor=5,
            amount_minor=5 if (not void and n % 3) else 0, tax_minor=1 if (not void and n % 3) else 0,
            currency="EUR", pricing_version="p1", error_code=None, smsc_id="smsc-1", chain_seq=0, prev_hash="",
            ref_cdr_id=pairs[0][0]["cdr_id"] if void else None, ticket_ref="T-1" if void else None,
            actor="admin.example" if void else None)
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        head = head.advance(linked, record_hash)
    return pairs


def _name(operator_id: str) -> str:
    return f"CD{uuid.uuid4().hex[:5].upper()}ATRAA00001"  # unique in the table, whatever ran before


async def _export(conn, operator_id: str, day: str, pairs: list[tuple[dict, str]]):
    closed = DayClosed(operator_id, day, "tick", pairs[-1][0]["chain_seq"] if pairs else 0,
                       pairs[-1][1] if pairs else "0" * 64, f"{day}T23:59:59.999Z", 1)
    name = _name(operator_id)
    await ensure_export(conn, closed, name)
    builder = CheckpointBuilder(operator_id, day)
    for entry, record_hash in pairs:
        builder.add(entry, record_hash)
    zip_bytes = f"a ZIP of {name}".encode()
    zip_sha256 = hashlib.sha256(zip_bytes).hexdigest()
    checkpoint = builder.finish(file_name=name, file_sequence=1, cut_off=f"{day}T23:59:59.999Z",
                                data_sha256=hashlib.sha256(b"data").hexdigest())
    await record_transition(conn, operator_id, day, ExportEvent.BUILT, actor="exporter",
                            detail={"file_name": name, "zip_sha256": zip_sha256, "checkpoint": checkpoint.to_dict()})
    return name, zip_bytes, zip_sha256, checkpoint.canonical_bytes()


async def _deliver_and_archive(conn, archive, operator_id: str, name: str, parts: dict[str, bytes],
                               recorded: dict[str, bytes], zip_sha256: str) -> None:
    """SIGNED and DELIVERED steps stating the digests of `recorded`; the archive gets `parts`."""
    signature_sha256 = hashlib.sha256(recorded["signature"]).hexdigest()
    await record_transition(conn, operator_id, EARLIER, ExportEvent.SIGNED, actor="exporter",
                            detail={"profile": "ed25519", "zip_sha256": zip_sha256, "cms_sha256": signature_sha256})
    keys = delivered_keys(operator_id, EARLIER, zip_sha256, name)
    await record_transition(conn, operator_id, EARLIER, ExportEvent.DELIVERED, actor="exporter", detail={
        "channel": "sftp", "remote_name": f"{name}.zip", "sha256": zip_sha256, "size": len(recorded["zip"]),
        "outcome": "stored", "location": "drop", "archive_keys": list(keys.values()),
        "signature": {"remote_name": f"{name}.zip.p7s", "sha256": signature_sha256, "size": len(recorded["signature"]),
                      "outcome": "stored", "location": "drop"}})
    until = dt.datetime(2033, 9, 14, tzinfo=dt.timezone.utc)
    for part, kind in (("zip", ArchivedKind.ZIP), ("signature", ArchivedKind.SIGNATURE),
                       ("checkpoint", ArchivedKind.CHECKPOINT)):
        archived = await archive.put_bytes(keys[kind], parts[part], retain_until=until)
        # Recorded as the exporter records it — with the digest the lifecycle states.
        archived = dataclasses.replace(archived, sha256=hashlib.sha256(recorded[part]).hexdigest(),
                                       size=len(recorded[part]))
        await record_archived(conn, operator_id, EARLIER, zip_sha256, kind.value, archived)


async def seed(stack_env: dict[str, str]) -> PortalData:
    tag = uuid.uuid4().hex[:8]
    operators = {k: f"ptl{k}-{tag}" for k in "abc"}
    archive = archive_store(Settings.load(stack_env))
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        pairs = _entries(operators["a"])
        await append_entries(conn, pairs)
        files = {"a": (await _export(conn, operators["a"], DAY, pairs[:-1]))[0]}
        archived = {}
        for key in "bc":
            name, zip_bytes, zip_sha256, checkpoint = await _export(conn, operators[key], EARLIER, [])
            files[key] = name
            recorded = {"zip": zip_bytes, "signature": f"CMS over {name}".encode(), "checkpoint": checkpoint}
            parts = dict(recorded)
            if key == "c":
                parts["zip"] = zip_bytes[:-1] + b"!"  # same size, other bytes
            else:
                archived = recorded
            await _deliver_and_archive(conn, archive, operators[key], name, parts, recorded, zip_sha256)
        entries = [{**entry, "record_hash": record_hash} for entry, record_hash in pairs]
        return PortalData(operators, entries, files, archived)
    finally:
        await conn.close()
