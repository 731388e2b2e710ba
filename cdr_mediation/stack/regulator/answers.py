"""The regulator's answer files: `NAME.ack` (acceptance) and `NAME.rap` (a RAP 1.05 return).

They are written into the drop box's `outbox/`, where the exporter fetches them over SFTP, and
listed by the HTTPS API (`GET /v1/responses`), so both channels see the same answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from cdr_mediation.infra.delivery.files import parse_response_name
from cdr_mediation.infra.file_digest import file_sha256_and_size
from cdr_mediation.stack.regulator.ledger import Receipt
from cdr_mediation.stack.regulator.script import RejectionTerms

ACK_FORMAT = "cdr-mediation.regulator-ack.v1"


def ack_document(receipt: Receipt, *, now: dt.datetime) -> bytes:
    """The simulator's acceptance of a file (the regulator's real ACK format is still to be agreed)."""
    return json.dumps({
        "format": ACK_FORMAT, "file": receipt.file, "sha256": receipt.sha256, "size": receipt.size,
        "receipt_sequence": receipt.sequence, "received_at": receipt.received_at,
        "acknowledged_at": now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def rejection_file(terms: RejectionTerms, *, file_name: str, sha256: str, rap_sequence_number: int,
                   now: dt.datetime) -> bytes:
    """A RAP 1.05 ReturnBatch returning the whole file (FatalReturn) with the terms' error codes.

    TD.32 names the returned file only by its TAP file sequence number; `file=` and `sha256=` in
    the return's operator items also name it for a reader who only has names.
    """
    from cdr_mediation.codecs.rap import (
        DateTimeLong,
        ErrorDetail,
        FatalReturn,
        RapBatchControl,
        encode_rap,
        return_batch,
    )

    stamp = DateTimeLong.of(now, dt.timezone.utc)
    control = RapBatchControl(terms.sender, terms.recipient, rap_sequence_number, stamp, stamp,
                              test_data=terms.test_data)
    returned = FatalReturn(terms.file_sequence_number,
                           transfer_batch_error=tuple(ErrorDetail(code) for code in terms.errors),
                           operator_spec=(f"file={file_name}", f"sha256={sha256}"))
    return encode_rap(return_batch(control, (returned,)))


def write_atomically(path: Path, data: bytes) -> None:
    """Readers (an SFTP client, GET /v1/responses) see the whole file or none of it."""
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    staged.write_bytes(data)
    os.replace(staged, path)


file_digest = file_sha256_and_size  # (SHA-256 hex, size) of a received file


def list_responses(outbox: Path, file_name: str | None) -> list[dict[str, Any]]:
    """The answer files in `outbox` (only those to `file_name` if given), by name, with digests."""
    listed = []
    for path in sorted(outbox.iterdir()):
        parsed = parse_response_name(path.name)
        if parsed is None or (file_name is not None and parsed[0] != file_name):
            continue
        sha256, size = file_digest(path)
        listed.append({"name": path.name, "file": parsed[0], "kind": parsed[1].value, "sha256": sha256, "size": size})
    return listed
