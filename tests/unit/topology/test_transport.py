"""The project's consumer never commits a record a stream skipped without processing it.

Faust's stream drops a message fetched before a rebalance and acks it anyway
(faust/streams.py `_py_aiter`); with Faust's own consumer that offset would be committed before
the re-fetch processes it. These tests drive Faust's real `ConsumerMessage.ack` → consumer path
(no broker: nothing here connects) and pin the behaviour the override relies on.
"""

from __future__ import annotations

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from cdr_mediation.topology import transport

TOPIC = "probe.cdr.v1"
TP0 = TP(TOPIC, 0)


@pytest.fixture
async def consumer():
    transport.register()
    app = faust.App("probe-ack", broker=f"{transport.SCHEME}://127.0.0.1:1")
    app.topics.add(app.topic(TOPIC, key_type=bytes, value_type=bytes))
    await app.topics._update_indices()  # what the conductor does when agents subscribe
    assert app.topics.acks_enabled_for(TOPIC)
    return app.consumer


def _delivered(offset: int, *, processed: bool) -> ConsumerMessage:
    message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"op", b"{}", None)
    message.incref(1)  # one stream holds it, as the conductor counts
    if processed:
        message.tracked = True  # what the stream sets before the agent sees the event
    return message


async def test_the_consumer_is_the_projects(consumer) -> None:
    assert isinstance(consumer, transport.Consumer)


async def test_a_processed_message_is_committable(consumer) -> None:
    assert _delivered(5, processed=True).ack(consumer) is True
    assert list(consumer._acked[TP0]) == [5]
    assert consumer._new_offset(TP0) == 6


async def test_a_skipped_message_is_done_but_its_offset_is_never_committed(consumer) -> None:
    before = transport.UNPROCESSED_ACKS._value.get()
    processed, skipped, after = _delivered(5, processed=True), _delivered(6, processed=False), _delivered(7, processed=True)
    assert processed.ack(consumer) is True
    assert skipped.ack(consumer) is False
    assert skipped.acked and skipped.refcount == 0  # nothing waits for it any more
    assert after.ack(consumer) is True
    # Faust's consumer would commit 8 here; with offset 6 unprocessed the commit stops at 6.
    assert sorted(consumer._acked[TP0]) == [5, 7]
    assert consumer._new_offset(TP0) == 6
    assert transport.UNPROCESSED_ACKS._value.get() == before + 1


async def test_the_re_fetched_message_commits_once_processed(consumer) -> None:
    assert _delivered(6, processed=False).ack(consumer) is False
    assert _delivered(6, processed=True).ack(consumer) is True  # the re-fetch after the seek
    assert consumer._new_offset(TP0) == 7
