"""Benchmark of the pure ingest step (`apply_batch`): prints one JSON line.

    .venv/bin/python bench/bench_ingest_domain.py --dlrs 100000 --batch 500

Measures, on one core, everything the ingest agent does per DLR except Kafka and Faust: strict
parse, dedup lookup (a dict), projection with pricing, linking (JCS + SHA-256), and building the
dead letters and dedup writes. Three passes over the same DLR stream: all new, all redelivered
(dedup path), and the JCS step alone via the fast path and via the `rfc8785` reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import rfc8785

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.ingest import OperatorIngestState, apply_batch, dedup_key
from cdr_mediation.domain.pricing import load_snapshot

PRICING = {
    "format": "cdr-mediation.pricing.v1",
    "version": "bench",
    "published_at": "2026-01-01T00:00:00Z",
    "operators": {"op-a": {"currency": "EUR", "rates": [
        {"rate_id": "op-a/default/2026", "effective_from": "2026-01-01T00:00:00Z",
         "unit_price_minor": 5, "tax_rate_bp": 2000},
        {"rate_id": "op-a/tenant-7/2026", "tenant_id": "tenant-7",
         "effective_from": "2026-01-01T00:00:00Z", "unit_price_minor": 4, "tax_rate_bp": 2000},
    ]}},
}
STATUSES = ["DELIVERED"] * 7 + ["UNDELIVERED", "EXPIRED", "UNKNOWN"]


def dlr(n: int) -> bytes:
    return json.dumps({
        "schema_version": 1,
        "dlr_id": f"6f1c2a7e-0000-4000-8000-{n:012d}",
        "message_id": f"msg-{n:010d}",
        "tenant_id": "tenant-7" if n % 5 == 0 else "tenant-1",
        "operator_id": "op-a",
        "sender_id": "ACME",
        "msisdn": f"+49151{n % 10**8:08d}",
        "status": STATUSES[n % len(STATUSES)],
        "submitted_at": f"2026-04-10T10:{n // 60 % 60:02d}:{n % 60:02d}.123Z",
        "done_at": f"2026-04-10T12:{n // 60 % 60:02d}:{n % 60:02d}.456+02:00",
        "segments": 1 + n % 3,
        "error_code": None,
        "smsc_id": "smsc-fra-1",
    }).encode()


def run(dlrs: int, batch_size: int) -> dict:
    pricing = load_snapshot(json.dumps(PRICING).encode())
    stream = [dlr(n) for n in range(dlrs)]
    batches = [stream[i:i + batch_size] for i in range(0, dlrs, batch_size)]
    dedup: dict = {}
    lookup = lambda dlr_id: dedup.get(dedup_key("op-a", dlr_id))  # noqa: E731

    state = OperatorIngestState.initial("op-a")
    cdrs = []
    started = time.perf_counter()
    for offset, batch in enumerate(batches):
        outcome = apply_batch(state, batch, offset, pricing, lookup)
        for dlr_id, entry in outcome.dedup_writes.items():
            dedup[dedup_key("op-a", dlr_id)] = entry
        state = outcome.new_state
        cdrs.extend(outcome.cdrs)
    new_seconds = time.perf_counter() - started
    assert state.chain_seq == dlrs

    started = time.perf_counter()
    duplicates = 0
    for offset, batch in enumerate(batches, start=len(batches)):
        outcome = apply_batch(state, batch, offset, pricing, lookup)
        duplicates += outcome.duplicates
        state = outcome.new_state
    dup_seconds = time.perf_counter() - started
    assert duplicates == dlrs

    entries = [c.cdr.to_entry() for c in cdrs[:20_000]]
    started = time.perf_counter()
    for entry in entries:
        canonical_bytes(entry)
    fast = (time.perf_counter() - started) / len(entries)
    started = time.perf_counter()
    for entry in entries:
        rfc8785.dumps(entry)
    reference = (time.perf_counter() - started) / len(entries)

    return {
        "bench": "ingest_domain",
        "dlrs": dlrs,
        "batch_size": batch_size,
        "new_us_per_dlr": round(new_seconds / dlrs * 1e6, 2),
        "new_dlrs_per_s": round(dlrs / new_seconds),
        "redelivered_us_per_dlr": round(dup_seconds / dlrs * 1e6, 2),
        "jcs_fast_us_per_entry": round(fast * 1e6, 2),
        "jcs_reference_us_per_entry": round(reference * 1e6, 2),
        "head_hash": state.head_hash,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlrs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(run(args.dlrs, args.batch)))


if __name__ == "__main__":
    main()
