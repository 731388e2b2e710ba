"""A TAP file written in two parts at once, with the bytes of the one-pass writer.

A large export is built by two processes (`agents/export_part.py`): this one writes records
1 … k, a helper writes k+1 … n into a file of call events (`TapPartWriter`), and
`TapFileWriter.append_part` puts that file after its own events. Each record's bytes depend on
the records before it only through the codes handed out in first-met order (recording
entities, UTC offsets), so the helper starts with the codes records 1 … k hand out
(`code_tables_met`, from the SMSCs and UTC minutes those records meet, in order). With the same
codes and the same records, every part encodes exactly as the one-pass writer would, and the
totals and NetworkInfo are sums and unions in order: the file is byte-identical (the tests
compare it on every split).

The writer that takes the part checks that the part started where its own records ended
(`PartMismatch` otherwise), so a wrong start cannot give a wrong file, only a refusal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..header import FileHeader
from .writer import CodeTables, RecordEncoderName, TapBatchEncoder, TapFileWriter, TapPart


def code_tables_met(header: FileHeader, smsc_ids: Iterable[str], minutes: Iterable[str]) -> CodeTables:
    """The codes a writer has handed out after records that met these SMSC ids and these UTC
    minutes ("YYYY-MM-DDThh:mm", each record's deposit before its completion), each list in
    first-met order."""
    encoder = TapBatchEncoder(header)
    for smsc_id in smsc_ids:
        encoder.mapper.meet_smsc(smsc_id)
    for minute in minutes:
        try:
            encoder.clock.meet_minute(minute)
        except ValueError as exc:
            raise ValueError(f"UTC minute {minute!r}: {exc}") from None
    return encoder.tables()


class TapPartWriter(TapFileWriter):
    """Writes the call events of a later part of a file to `events_path` (no framing):

        with TapPartWriter(events_path, header, tables=start, index_base=k) as writer:
            writer.add_all(records)            # records k+1 … in chain order
        part = writer.part                     # for TapFileWriter.append_part

    Leaving the block with an exception removes the events file.
    """

    def __init__(self, events_path: str | os.PathLike[str], header: FileHeader, *, tables: CodeTables,
                 index_base: int, record_encoder: RecordEncoderName = "fast") -> None:
        self._events_path = Path(events_path)
        self._start_tables = tables
        self._index_base = index_base
        self.part: TapPart | None = None
        super().__init__(events_path, header, record_encoder=record_encoder, tables=tables, index_base=index_base)

    def _open_spool(self, spool_dir: str | os.PathLike[str] | None) -> BinaryIO:
        # Named: the process that writes the file reads it by its name.
        return open(self._events_path, "wb")

    def close(self) -> TapPart:  # type: ignore[override]
        if self.part is not None:
            return self.part
        if self._spool is None:
            raise ValueError("writer was aborted")
        try:
            if self._pending:
                self._write_pending(self._pending_size)
            self._spool.flush()
        except BaseException:
            self.abort()
            raise
        self._release_spool()
        encoder = self._encoder
        totals = encoder.totals
        self.part = TapPart(str(self._events_path), self._events_size, self._index_base, self._start_tables,
                            encoder.tables(), totals.count, totals.total_charge, totals.total_tax, totals.earliest,
                            totals.latest, totals.first_chain_seq, totals.last_chain_seq)
        return self.part

    def abort(self) -> None:
        super().abort()
        self._events_path.unlink(missing_ok=True)
