"""The SFTP side of the regulator: a watcher of the drop box's `inbox/` (served by `stack/sftp.py`).

A file under a final name that the ledger does not hold yet is a delivery over SFTP. Uploads in
progress have hidden temporary names (`infra/delivery/files.temporary_name`) and are skipped, so
a file is only taken once its rename made it whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from cdr_mediation.infra.delivery.files import is_final_name

log = logging.getLogger("cdr_mediation.regulator")

# OpenSSH's internal-sftp tells nobody about a completed rename, so the directory is polled;
# 0.1 s keeps a test's wait for a receipt short at a negligible cost.
POLL_INTERVAL_S = 0.1


def new_arrivals(inbox: Path, is_known: Callable[[str], bool]) -> list[str]:
    """Names of complete files in `inbox` that are not known yet, in name order."""
    return sorted(entry.name for entry in os.scandir(inbox)
                  if is_final_name(entry.name) and not is_known(entry.name) and entry.is_file())


async def watch_inbox(inbox: Path, is_known: Callable[[str], bool], take: Callable[[str], object], *,
                      interval_s: float = POLL_INTERVAL_S) -> None:
    """Call `take(name)` once per new file until cancelled.

    `take` runs without an await between the scan and the ledger entry it makes, so the HTTPS
    API (same event loop) never takes the same file at the same time.
    """
    while True:
        try:
            arrivals = new_arrivals(inbox, is_known)
        except OSError:
            log.exception("scanning %s", inbox)
            arrivals = []
        for name in arrivals:
            try:
                take(name)
            except Exception:  # noqa: BLE001 - one bad file must not stop the regulator taking the others
                log.exception("taking %s from %s", name, inbox)
        await asyncio.sleep(interval_s)
