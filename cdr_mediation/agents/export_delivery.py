"""Delivering a signed export to the regulator (SIGNED → DELIVERED): what travels, through which
channel, and what the result of an attempt means for the lifecycle.

What travels, in this order, each under its local name:

1. `NAME.zip.p7s`, the detached CMS signature of the ZIP (`docs/signing.md` §1);
2. `NAME.zip`, the export file.

The receiver takes a file as soon as it appears under its final name, so the signature goes
first: the regulator never holds a ZIP without the signature that lets it check it. The
checkpoint travels inside the ZIP (a member covered by the CMS); its raw signature
(`NAME.checkpoint.sig`) is not sent: the signed-file format put to the regulator (readiness
checklist, still to be approved) is the ZIP with a PKCS#7 detached signature, and the raw
signature stays in the SIGNED audit row (and, later, the archive) for inclusion proofs. Both
files are delivered idempotently by name and SHA-256 (`infra/delivery/files.py`), so the pair
can be sent again after a crash at any point.

`judge` (pure) turns one file's receipt or error into what the exporter does next,
`attempt_delivery` makes one pass over the parts with it, `delivered_detail` is the evidence the
DELIVERED step records, and `delivery_channel` builds the adapter `CDR_DELIVERY_METHOD` names.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Protocol

from cdr_mediation.infra.delivery import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    DeliveryReceipt,
    EndpointUnavailable,
    InvalidFileName,
)
from cdr_mediation.settings import Settings, delivery_settings


class DeliveryChannel(Protocol):
    channel: str

    async def deliver_file(self, file_name: str, path: Path) -> DeliveryReceipt: ...


def delivery_channel(settings: Settings) -> DeliveryChannel:
    """The adapter of `settings.delivery_method`, configured from the CDR_SFTP_* or CDR_HTTPS_* settings."""
    missing = [name for name, value in delivery_settings(settings) if not value]
    if missing:  # check_worker_startup refuses this first; here for callers that skip it
        raise ValueError(f"delivery over {settings.delivery_method} needs {', '.join(missing)}")
    if settings.delivery_method == "sftp":
        from cdr_mediation.infra.delivery.sftp import SftpDelivery, SftpEndpoint

        return SftpDelivery(SftpEndpoint(
            host=settings.sftp_host, port=settings.sftp_port, user=settings.sftp_user,
            client_key=settings.sftp_key_path, known_hosts=settings.sftp_known_hosts,
            remote_dir=settings.sftp_remote_dir))
    from cdr_mediation.infra.delivery.https import HttpsDelivery, HttpsEndpoint

    return HttpsDelivery(HttpsEndpoint(
        base_url=settings.https_url, ca_file=settings.https_ca_cert, client_cert=settings.https_client_cert,
        client_key=settings.https_client_key,
        client_key_passphrase=settings.https_client_key_passphrase.get_secret_value()))


@dataclasses.dataclass(frozen=True)
class OutgoingPart:
    """One file of an export's delivery: its name on both sides and the digest it must arrive with."""

    remote_name: str
    path: Path
    sha256: str


def delivery_parts(zip_path: Path, *, zip_sha256: str, cms_sha256: str) -> tuple[OutgoingPart, OutgoingPart]:
    """The signature, then the ZIP (see the module docstring for why this order)."""
    cms_path = zip_path.with_name(zip_path.name + ".p7s")
    return OutgoingPart(cms_path.name, cms_path, cms_sha256), OutgoingPart(zip_path.name, zip_path, zip_sha256)


class Next(str, enum.Enum):
    DELIVERED = "delivered"  # the receiver holds exactly these bytes: go on
    RETRY = "retry"  # stay in SIGNED and try again after `retry_delay`
    GIVE_UP = "give_up"  # a person must act; retrying only delays the alert


@dataclasses.dataclass(frozen=True)
class Verdict:
    next: Next
    kind: str | None = None  # the failure's label (metric `kind`, logs); None when delivered


def judge(result: DeliveryReceipt | DeliveryError, expected_sha256: str) -> Verdict:
    """What one delivery attempt of one file means for the export.

    STORED and ALREADY_DELIVERED are the same success: after a crash between the upload and the
    recorded step the receiver reports the bytes it already holds. A receipt for other bytes
    than the ones recorded is not a success even though the receiver accepted it: the audit row
    would claim a file the regulator does not have.
    """
    if isinstance(result, DeliveryReceipt):
        if result.sha256 != expected_sha256:
            return Verdict(Next.GIVE_UP, "digest_mismatch")
        return Verdict(Next.DELIVERED)
    if isinstance(result, EndpointUnavailable):
        kind = "unavailable"
    elif isinstance(result, AccessRefused):
        kind = "access_refused"
    elif isinstance(result, DeliveryConflict):
        kind = "conflict"
    elif isinstance(result, InvalidFileName):
        kind = "invalid_name"
    else:
        kind = "retryable" if result.retryable else "permanent"
    return Verdict(Next.RETRY if result.retryable else Next.GIVE_UP, kind)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One pass over an export's parts: all delivered, or the first part that was not and why."""

    verdict: Verdict
    receipts: tuple[DeliveryReceipt, ...]  # of the parts delivered, in order
    failed: OutgoingPart | None = None
    reason: str | None = None  # the error, or the digest mismatch; never file content

    @property
    def delivered(self) -> bool:
        return self.verdict.next is Next.DELIVERED


async def attempt_delivery(channel: DeliveryChannel, parts: Sequence[OutgoingPart]) -> Attempt:
    """Deliver `parts` in order, stopping at the first that is not delivered: the ZIP never goes
    out while its signature could not. Only delivery errors are caught; anything else is a bug."""
    receipts: list[DeliveryReceipt] = []
    for part in parts:
        try:
            result: DeliveryReceipt | DeliveryError = await channel.deliver_file(part.remote_name, part.path)
        except DeliveryError as exc:
            result = exc
        verdict = judge(result, part.sha256)
        if verdict.next is not Next.DELIVERED:
            reason = (str(result) if isinstance(result, DeliveryError)
                      else f"receiver reports sha256 {result.sha256}, expected {part.sha256}")
            return Attempt(verdict, tuple(receipts), part, reason)
        receipts.append(result)
    return Attempt(Verdict(Next.DELIVERED), tuple(receipts))


def delivered_detail(signature: DeliveryReceipt, export: DeliveryReceipt) -> dict[str, Any]:
    """The DELIVERED step's evidence: the ZIP's receipt at the top level (what the regulator's
    answer will name), the signature's beside it."""
    def part(receipt: DeliveryReceipt) -> dict[str, Any]:
        return {"remote_name": receipt.file_name, "sha256": receipt.sha256, "size": receipt.size,
                "outcome": receipt.outcome.value, "location": receipt.location}

    if signature.channel != export.channel:
        raise ValueError(f"signature went over {signature.channel}, the export over {export.channel}")
    return {"channel": export.channel, **part(export), "signature": part(signature)}
