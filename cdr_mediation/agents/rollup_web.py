"""The worker's read of open rollups: ``GET /rollups/open/{operator}`` on Faust's web server.

The portal asks any worker; the answer comes from the one worker that owns the operator's
partition of the `rollup-state` table, whichever worker the request reaches (issue 4, item 5).

Routing. The rollup agent writes an operator's state to the table partition of the CDR record it
processed, and the CDR topic is keyed by the RAW operator_id bytes (default Kafka partitioner,
murmur2). Faust's own `table_route` / `app.router.key_store(table, key)` would hash the table's
JSON-serialised key (``b'"op1"'``) instead and may name another partition, so it is not used.
We ask the assignor directly with the raw bytes, on the table's changelog topic:
``app.assignor.key_store(<rollup-state changelog>, operator.encode())`` — the URL of the worker
actively assigned that changelog partition. (`key_store` only knows changelog topics: its map is
built from the changelog distribution, so asking it about the CDR topic itself raises KeyError;
the changelog has the CDR topic's partition count and Faust assigns co-partitioned topics
together, so changelog partition p and CDR partition p have the same owner.)

* Owner is this worker, not rebalancing, partition active here: answer from the local table.
* Owner is another worker: forward the request there once, marked with `FORWARDED_HEADER`, and
  pass its answer through (status and body). Unreachable owner: 503 ``owner_unreachable``.
* A forwarded request that lands on a worker that does not own the partition (a rebalance moved
  it meanwhile): 503 ``not_owner`` — never a second hop, so requests cannot loop.
* No assignment yet / rebalancing / table recovering: 503 ``rebalancing``.

The body is the same on every worker (nothing in it says which worker was asked): the
operator's `OperatorRollupState.to_dict()` — open hours, pending corrections, closed-through
marker, watermark, … — plus ``partition`` and ``owner``. Errors are
``{"error": {"code": ..., "message": ...}}`` like the portal's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
import faust
from faust.types import TP

from cdr_mediation.domain.dlr import PATTERNS
from cdr_mediation.settings import Settings
from cdr_mediation.tables.rollup import ROLLUP_TABLE, RollupTableView

log = logging.getLogger(__name__)

PATH = "/rollups/open/{operator}"
# Set on a forwarded request (value: the forwarding worker's URL); a request carrying it is
# answered locally or refused, never forwarded again.
FORWARDED_HEADER = "X-Cdr-Forwarded-By"
SERVED_BY_HEADER = "X-Cdr-Served-By"
FORWARD_TIMEOUT_S = 10.0

_OPERATOR = re.compile(PATTERNS["operator_id"])


class Unavailable(Exception):
    """The owner of the operator's partition cannot be determined or cannot answer right now."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def open_state_body(state_dict: dict[str, Any], partition: int, owner: str) -> dict[str, Any]:
    """The answer: the operator's table value plus where it lives."""
    return {**state_dict, "partition": partition, "owner": owner}


class OpenRollups:
    """Locates the owner of an operator's table partition and reads or forwards."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    @property
    def table(self):
        return self.app.tables[ROLLUP_TABLE.name]

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    @property
    def me(self) -> str:
        return str(self.app.conf.canonical_url)

    async def locate(self, operator_id: str) -> tuple[int, str]:
        """(partition, owner URL) of the operator's state, from the current assignment."""
        app, topic, key = self.app, self.changelog_topic, operator_id.encode()
        partition: int | None = None
        try:
            try:
                partition = app.producer.key_partition(topic, key).partition
            except TypeError:
                # The producer has no metadata for the changelog yet (nothing written to it since
                # start): fetch it once, then hash. Same partitioner as every keyed send.
                await app.producer._ensure_producer().partitions_for(topic)
                partition = app.producer.key_partition(topic, key).partition
            owner = str(app.assignor.key_store(topic, key))
        except KeyError:
            raise Unavailable("rebalancing", f"no worker is assigned partition {partition} of the rollup table yet "
                                             "(the workers are joining or rebalancing); retry") from None
        except Exception as exc:  # noqa: BLE001 - producer not started, metadata timeout, ...
            raise Unavailable("rebalancing", f"this worker cannot locate the operator's partition yet: {exc}") from None
        return partition, owner

    def local_ready(self, partition: int) -> bool:
        app = self.app
        return (not app.rebalancing and not getattr(app, "in_recovery", False)
                and app.assignor.is_active(TP(self.changelog_topic, partition)))

    def read_local(self, operator_id: str, partition: int) -> dict[str, Any]:
        state = RollupTableView(self.table).state(operator_id)
        return open_state_body(state.to_dict(), partition, self.me)

    async def forward(self, owner: str, operator_id: str) -> tuple[int, bytes]:
        url = f"{owner.rstrip('/')}/rollups/open/{operator_id}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as session:
                async with session.get(url, headers={FORWARDED_HEADER: self.me}) as response:
                    return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable("owner_unreachable",
                              f"the worker owning the operator's partition ({owner}) did not answer: "
                              f"{exc.__class__.__name__} {exc}".rstrip()) from None


def register(app: faust.App, settings: Settings) -> OpenRollups:
    """Add the page to the worker's web server (the rollup agent and its table must be registered)."""
    reader = OpenRollups(app, settings)

    @app.page(PATH, name="rollups-open")
    async def open_rollups(web, request, operator: str):
        if not _OPERATOR.fullmatch(operator):
            return web.json(error_body("bad_request", f"operator {operator!r} is not an operator id "
                                                      f"({PATTERNS['operator_id']})"), status=400)
        forwarded_by = request.headers.get(FORWARDED_HEADER)
        try:
            partition, owner = await reader.locate(operator)
            if owner == reader.me:
                if not reader.local_ready(partition):
                    raise Unavailable("rebalancing", f"partition {partition} of the rollup table is being "
                                                     "rebalanced or restored on this worker; retry")
                return web.json(reader.read_local(operator, partition), headers={SERVED_BY_HEADER: reader.me})
            if forwarded_by is not None:
                raise Unavailable("not_owner", f"request forwarded by {forwarded_by} reached {reader.me}, which does "
                                               f"not own partition {partition} of the rollup table (owner now: "
                                               f"{owner}; a rebalance is moving it); retry")
            status, body = await reader.forward(owner, operator)
            return web.bytes(body, content_type="application/json", status=status,
                             headers={SERVED_BY_HEADER: owner})
        except Unavailable as exc:
            log.info("open rollups unavailable", extra={"operator_id": operator, "code": exc.code,
                                                         "detail": exc.message})
            return web.json(error_body(exc.code, exc.message), status=503)
        except Exception as exc:  # noqa: BLE001 - one JSON error shape, never an HTML 500
            log.exception("open rollups failed", extra={"operator_id": operator})
            return web.json(error_body("internal", f"{exc.__class__.__name__}: {exc}"), status=500)

    return reader
