"""Where an export's evidence lives in the object-lock archive (a contract: docs/archive.md).

One generation of an export is the ZIP bytes that were delivered; its objects share one prefix
with that ZIP's SHA-256 in it, so a corrected file issued after a rejection is archived beside the
rejected one and never over it (COMPLIANCE retention would refuse it anyway):

    exports/<operator_id>/<day>/<zip_sha256>/<NAME>.zip                  the export file
    exports/<operator_id>/<day>/<zip_sha256>/<NAME>.zip.p7s              its detached CMS signature, as delivered
    exports/<operator_id>/<day>/<zip_sha256>/<NAME>.checkpoint.json      the checkpoint (also inside the ZIP)
    exports/<operator_id>/<day>/<zip_sha256>/<NAME>.checkpoint.sig       the raw checkpoint signature
    exports/<operator_id>/<day>/<zip_sha256>/<NAME>.zip.ack | .zip.rap   the regulator's answer to it

Retention runs from the day's cut-off (`domain/retention.py`), so every attempt and every
rebuild asks for the same retain-until date.
"""

from __future__ import annotations

import enum


class ArchivedKind(str, enum.Enum):
    ZIP = "zip"
    SIGNATURE = "signature"
    CHECKPOINT = "checkpoint"
    CHECKPOINT_SIGNATURE = "checkpoint_signature"
    ANSWER = "answer"


_SUFFIXES = {
    ArchivedKind.ZIP: ".zip",
    ArchivedKind.SIGNATURE: ".zip.p7s",
    ArchivedKind.CHECKPOINT: ".checkpoint.json",
    ArchivedKind.CHECKPOINT_SIGNATURE: ".checkpoint.sig",
}


def generation_prefix(operator_id: str, day: str, zip_sha256: str) -> str:
    if len(zip_sha256) != 64 or any(c not in "0123456789abcdef" for c in zip_sha256):
        raise ValueError(f"not a lowercase SHA-256: {zip_sha256!r}")
    return f"exports/{operator_id}/{day}/{zip_sha256}/"


def delivered_keys(operator_id: str, day: str, zip_sha256: str, file_name: str) -> dict[ArchivedKind, str]:
    """The four objects of a delivered generation, by kind."""
    prefix = generation_prefix(operator_id, day, zip_sha256)
    return {kind: f"{prefix}{file_name}{suffix}" for kind, suffix in _SUFFIXES.items()}


def answer_key(operator_id: str, day: str, zip_sha256: str, answer_name: str) -> str:
    return generation_prefix(operator_id, day, zip_sha256) + answer_name


def kind_of(key: str, file_name: str) -> ArchivedKind:
    """The kind of an archived object of export `file_name`, from its key."""
    leaf = key.rsplit("/", 1)[-1]
    for kind, suffix in _SUFFIXES.items():
        if leaf == file_name + suffix:
            return kind
    if leaf in (f"{file_name}.zip.ack", f"{file_name}.zip.rap"):
        return ArchivedKind.ANSWER
    raise ValueError(f"{key} is not an archived object of {file_name}")
