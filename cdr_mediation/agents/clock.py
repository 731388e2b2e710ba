"""The explicit clock of idle operators: clock-tick records on the CDR topic.

Hours close by event time (docs/rollups.md), so an operator that sends nothing for hours would
keep its last hours open forever. A tick says "no entry of this operator will be earlier than
`at` from now on, except as a late event". It is a record of the CDR topic, keyed by the
operator like its CDRs, so it takes a fixed place in the operator's stream: a replay of the
topic closes the same hours at the same point. The wall clock is read only here, when a tick is
made (`cdrmed clock tick --lag-s N` = now minus N seconds); once written, it is data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from cdr_mediation.codecs.records import encode_clock_tick
from cdr_mediation.domain.cdr import format_utc, parse_utc
from cdr_mediation.domain.rollup import ClockTick


# A tick closes every hour up to it, and once in the topic it cannot be taken back: a typo'd
# year would close hundreds of thousands of empty hours and make every real event after it late.
MAX_AHEAD = dt.timedelta(hours=1)


def tick_time(at: str | None, lag_s: float | None, now: dt.datetime, *, allow_future: bool = False) -> str:
    """`at` (any ISO 8601 instant with an offset) or `now - lag_s`, as a `format_utc` string.

    An instant more than `MAX_AHEAD` after `now` is refused unless `allow_future` (a replay of
    recorded time, say, on a machine whose clock is behind)."""
    if (at is None) == (lag_s is None):
        raise ValueError("give exactly one of --at and --lag-s")
    moment = parse_utc(at) if at is not None else now - dt.timedelta(seconds=lag_s)
    if moment > now + MAX_AHEAD and not allow_future:
        raise ValueError(f"{format_utc(moment)} is more than {MAX_AHEAD} after now ({format_utc(now)}); "
                         "a tick closes every hour before it for good (--allow-future if this is intended)")
    return format_utc(moment)


async def publish_ticks(bootstrap: str, topic: str, ticks: Sequence[ClockTick]) -> None:
    """Write the ticks to the CDR topic and return once Kafka acknowledged them all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=tick.operator_id.encode(), value=encode_clock_tick(tick))
                   for tick in ticks]
        for future in futures:
            await future
    finally:
        await producer.stop()
