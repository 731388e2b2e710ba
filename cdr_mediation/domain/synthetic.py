"""Synthetic DLR traffic for the local job, tests and benchmarks: reproducible from a seed.

Nothing here reads the clock: the caller passes the start time, and DLR n of a given seed is
always the same document, so a test or a benchmark can be re-run byte for byte.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

OPERATORS = ("op-alpha", "op-beta", "op-gamma", "op-delta")
TENANTS = ("tenant-a", "tenant-b", "tenant-c")
SENDERS = ("BANKCO", "SHOPIFY", "TAXI", "12345")
# Share of each final status in generated traffic (cumulative draw).
STATUS_WEIGHTS = (("DELIVERED", 85), ("UNDELIVERED", 6), ("EXPIRED", 4), ("REJECTED", 3), ("UNKNOWN", 2))
ERROR_CODES = {"DELIVERED": None, "UNDELIVERED": "001", "EXPIRED": "027", "REJECTED": "00B", "UNKNOWN": "0FF"}


def _format(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def synthetic_dlrs(
    *, seed: int, start: dt.datetime, count: int | None = None, spacing_ms: int = 20,
    operators: tuple[str, ...] = OPERATORS, id_prefix: str | None = None,
) -> Iterator[dict]:
    """DLR v1 documents; `count=None` generates forever. `done_at` advances by `spacing_ms`.

    Ids are `<id_prefix>-<n>` (default prefix `dlr-<seed>`): dlr_ids are globally unique upstream,
    so runs that share a database must not share a prefix."""
    prefix = id_prefix or f"dlr-{seed}"
    rng = random.Random(seed)
    statuses = [status for status, weight in STATUS_WEIGHTS for _ in range(weight)]
    n = 0
    while count is None or n < count:
        status = rng.choice(statuses)
        done = start + dt.timedelta(milliseconds=n * spacing_ms)
        submitted = done - dt.timedelta(milliseconds=rng.randrange(500, 60_000))
        yield {
            "schema_version": 1,
            "dlr_id": f"{prefix}-{n:012d}",
            "message_id": f"msg-{prefix}-{n:012d}",
            "tenant_id": rng.choice(TENANTS),
            "operator_id": rng.choice(operators),
            "sender_id": rng.choice(SENDERS),
            # Ofcom reserves +44 7700 900000–900999 for fiction: never a real subscriber.
            "msisdn": f"+447700900{rng.randrange(1000):03d}",
            "status": status,
            "submitted_at": _format(submitted),
            "done_at": _format(done),
            "segments": rng.choice((1, 1, 1, 1, 2, 3)),
            "error_code": ERROR_CODES[status],
            "smsc_id": f"smsc-{rng.randrange(1, 4)}",
        }
        n += 1
