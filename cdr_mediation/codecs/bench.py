"""`cdrmed bench codec`: throughput and memory of the streaming TAP 3.12 writer.

What is measured: the codec writing one real TAP file to a temporary directory with the
production writer (`TapFileWriter`, fsync and atomic rename included): validation, mapping,
BER encoding, spooling, the framing and the final copy. What is not: compiling the ASN.1
modules (once per process) and making the synthetic input. Records are generated in chunks
of `CHUNK` between timed sections, as a database cursor would hand them over, so input
generation neither counts as codec time nor makes memory grow with the record count.

The result has exactly the keys `records, seconds, records_per_s, peak_rss_mb`;
`peak_rss_mb` is the process's peak resident set size (ru_maxrss), input generation included.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType

from . import asn1
from .constraints import checker
from .header import FileHeader
from .tap.writer import TapFileWriter

CHUNK = 10_000
_DAY_START = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
_SECONDS_PER_DAY = 86_400
_SENDERS = [f"BRAND{n:02d}" for n in range(40)] + ["InfoSMS", "BANK-OTP", "700123", "+93700000001"]
_SMSCS = ("smsc-kbl-1", "smsc-kbl-2", "smsc-hrt-1", "smsc-mzr-1")
# Nineteen in twenty messages are delivered; the rest cycle through the other statuses.
_STATUSES = (DlrStatus.DELIVERED,) * 19 + (DlrStatus.UNDELIVERED,)


def bench_header() -> FileHeader:
    return FileHeader(
        operator_id="op-bench",
        sender="AFGAW",
        recipient="AFGRA",
        file_sequence_number=1,
        transfer_cut_off=_DAY_START + dt.timedelta(days=1),
        file_available=_DAY_START + dt.timedelta(days=1, hours=1),
        time_zone="+0430",
        currency="AFN",
        currency_exponent=2,
        tap_decimal_places=3,
    )


def _utc(seconds: int, millis: int) -> str:
    moment = _DAY_START + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


def synthetic_cdrs(start: int, count: int, total: int) -> list[Cdr]:
    """Records `start`..`start+count-1` of a day of `total` records, spread over the day.

    Deterministic (no randomness) and shaped like production: UUID-length ids, varied
    MSISDNs and senders, four SMSCs, 1 in 100 records an adjustment of the record before it.
    """
    records = []
    for seq in range(start, start + count):
        second = (seq - 1) * _SECONDS_PER_DAY // total
        millis = seq % 1000
        done_at = _utc(second, millis)
        submitted_at = _utc(max(second - 3, 0), millis)
        cdr_id = f"3f1c9a62-8b1e-4c53-9a7e-{seq:012d}"
        if seq % 100 == 0:
            record_type, ref, amount, tax = RecordType.VOID, f"3f1c9a62-8b1e-4c53-9a7e-{seq - 1:012d}", 0, 0
        else:
            record_type, ref, amount, tax = RecordType.CDR, None, 150 * (1 + seq % 3), 15 * (1 + seq % 3)
        status = _STATUSES[seq % len(_STATUSES)]
        records.append(
            Cdr(
                record_type,
                cdr_id,
                f"dlr-{seq}",
                f"msg-{seq}",
                "tenant-1",
                "op-bench",
                _SENDERS[seq % len(_SENDERS)],
                f"+9370{(seq * 7919) % 10_000_000:07d}",
                status,
                submitted_at,
                done_at,
                1 + seq % 3,
                status is DlrStatus.DELIVERED,
                150,
                amount,
                tax,
                "AFN",
                "pv-2026-11",
                None if status is DlrStatus.DELIVERED else "E042",
                _SMSCS[seq % len(_SMSCS)],
                seq,
                "0" * 64,
                ref,
            )
        )
    return records


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    start = 1
    while start <= total:
        count = min(CHUNK, total - start + 1)
        yield start, count
        start += count


def run_codec_bench(records: int, *, directory: str | os.PathLike[str] | None = None) -> dict[str, float | int]:
    """Write `records` synthetic CDRs as one TAP file; report codec time and peak memory."""
    if records < 1:
        raise ValueError("records must be >= 1")
    # One-time work of a process, not of a file: parse and compile the shipped ASN.1 modules.
    asn1.spec()
    checker()
    header = bench_header()
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="cdrmed-bench-", dir=directory) as tmp:
        path = Path(tmp) / "bench.tap"
        started = time.perf_counter()
        writer = TapFileWriter(path, header)
        seconds += time.perf_counter() - started
        try:
            for start, count in _chunks(records):
                chunk = synthetic_cdrs(start, count, records)
                started = time.perf_counter()
                writer.add_all(chunk)
                seconds += time.perf_counter() - started
                del chunk
            started = time.perf_counter()
            summary = writer.close()
            seconds += time.perf_counter() - started
        except BaseException:
            writer.abort()
            raise
        if summary.record_count != records or path.stat().st_size != summary.size:
            raise AssertionError("benchmark file does not hold what the writer reported")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
