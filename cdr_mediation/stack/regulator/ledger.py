"""The regulator's receipts: one per file name, kept as append-only JSON-lines events.

The receiver assigns its sequence number once per file, whichever channel brought it and however
often; a test checks idempotency against this ledger. Events (received, redelivered, answered)
rather than snapshots, so a restart of the simulator replays them and loses no number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Receipt:
    """One file as the regulator holds it."""

    sequence: int  # the receiver's number for the file, assigned once
    file: str
    sha256: str
    size: int
    channel: str  # the channel of the first delivery: "sftp" | "https"
    client: str  # SFTP user or certificate CN
    received_at: str
    deliveries: int = 1  # redeliveries of the same bytes increase this, never `sequence`
    answer: str | None = None
    response: str | None = None  # NAME.ack / NAME.rap once written
    answer_error: str | None = None
    # A file the regulator returned (a RAP rejection) leaves the inbox with its signature: the
    # name is free again for the corrected file, which gets a receipt of its own.
    returned: bool = False

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Ledger:
    """Receipts by file name, backed by the events file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._receipts: dict[str, Receipt] = {}  # the latest receipt of each name
        self._received = 0
        self._rejections = 0
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self._apply(json.loads(line))

    def _apply(self, event: dict[str, Any]) -> Receipt:
        kind = event.pop("event")
        if kind == "received":
            receipt = Receipt(**event)
            self._received += 1
        else:
            if kind == "answered" and (event.get("response") or "").endswith(".rap"):
                self._rejections += 1
            current = self._receipts[event.pop("file")]
            receipt = (dataclasses.replace(current, deliveries=current.deliveries + 1) if kind == "redelivered"
                       else dataclasses.replace(current, **event))
        self._receipts[receipt.file] = receipt
        return receipt

    def _append(self, event: dict[str, Any]) -> Receipt:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(event, sort_keys=True) + "\n")
        return self._apply(dict(event))

    def get(self, file_name: str) -> Receipt | None:
        return self._receipts.get(file_name)

    def receipts(self) -> list[Receipt]:
        return sorted(self._receipts.values(), key=lambda r: r.sequence)

    def receive(self, file_name: str, sha256: str, size: int, *, channel: str, client: str) -> Receipt:
        received_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return self._append({"event": "received", "sequence": self._received + 1, "file": file_name,
                             "sha256": sha256, "size": size, "channel": channel, "client": client,
                             "received_at": received_at})

    def redelivered(self, file_name: str) -> Receipt:
        return self._append({"event": "redelivered", "file": file_name})

    def answered(self, file_name: str, *, answer: str, response: str | None, error: str | None) -> Receipt:
        return self._append({"event": "answered", "file": file_name, "answer": answer, "response": response,
                             "answer_error": error})

    def returned(self, file_name: str) -> Receipt:
        return self._append({"event": "returned", "file": file_name, "returned": True})

    def rejections_written(self) -> int:
        """How many RAP files the regulator has sent: the next one's RAP file sequence number - 1."""
        return self._rejections
