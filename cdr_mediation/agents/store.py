"""Store step: CDR batch records → PostgreSQL, idempotently, before the source offset moves on.

The commit discipline (retry the same batch while PostgreSQL is down, halt on a `ChainFork`) is
`agents/pg_sink.py`. The step runs inside the CDR-topic agent (`agents/cdr_topic.py`), first.
"""

from __future__ import annotations

from prometheus_client import Counter

from cdr_mediation.agents.pg_sink import PostgresSink, SinkReadiness
from cdr_mediation.domain.adjustment import ChainRefusal
from cdr_mediation.infra.postgres.adjustment_store import record_chain_refusal
from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_entries
from cdr_mediation.settings import Settings

STORED = Counter("cdr_store_rows_total", "CDR rows committed to PostgreSQL (new rows only)")
REDELIVERED = Counter("cdr_store_rows_already_present_total", "CDR rows delivered again and absorbed")
REFUSALS = Counter("cdr_store_adjustment_refusals_total", "Adjustment requests the chain refused, recorded for "
                   "their status", ["code"])


class StoreStep:
    def __init__(self, settings: Settings, readiness: SinkReadiness) -> None:
        self.sink = PostgresSink("cdr", settings.pg_dsn.get_secret_value(), readiness, contradiction=ChainFork)

    async def __call__(self, entries: list[tuple[dict, str]], trace_parent: str | None = None) -> None:
        """Entries go to columns as decoded: no `Cdr` objects on this path."""
        new_rows = await self.sink.commit(lambda conn: append_entries(conn, entries, trace_parent=trace_parent))
        STORED.inc(new_rows)
        REDELIVERED.inc(len(entries) - new_rows)

    async def refusal(self, refusal: ChainRefusal) -> None:
        """An adjustment request the chain refused, against its adjustment_id (idempotent)."""
        new = await self.sink.commit(lambda conn: record_chain_refusal(conn, refusal))
        REFUSALS.labels(code=refusal.code).inc(new)
