"""Faust's consumer, handing the frames topic over one partition fetch at a time.

Faust turns every fetched record into a Message, and its fetcher then awaits
``wait_first(callback(message), suspend_flow.wait())`` for each one (two tasks,
an ``asyncio.wait``, a cancellation), the conductor decodes it into an Event
and the stream hands it out: about 100 CPU-us per frame, which bound one
worker process to ~10,000 frames/s (bench/bench_drain.py). For the topics
named in ``batch_topics`` this consumer yields one Message per partition and
fetch instead, whose ``value`` is the fetch's list of aiokafka records (the
``raw`` codec passes it through untouched) and whose ``offset`` is the last
record's, so Faust's read-offset bookkeeping stays right. Everything else --
group membership, flow control during a rebalance, the generation check,
buffer pressure, other topics (the state table's changelog) -- is Faust's own
path, unchanged.
"""

from __future__ import annotations

import itertools
from typing import AsyncIterator, Iterable

from faust.types import TP, Message


def batch_message(tp: TP, records: list, generation_id: int) -> Message:
    """One Message carrying every record of a partition fetch (oldest first)."""
    last = records[-1]
    return Message(tp.topic, tp.partition, last.offset,
                   last.timestamp / 1000.0 if last.timestamp is not None else None,
                   last.timestamp_type, None, None, records, None,
                   0, sum(r.serialized_value_size for r in records), tp, generation_id=generation_id)


class BatchConsumerMixin:
    """Put before a Faust transport's Consumer class (see `batching_consumer`)."""

    batch_topics: frozenset = frozenset()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        # Faust's Consumer.getmany, with the records of `batch_topics` grouped per partition.
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:  # as Faust: logged, the next fetch tries again
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        app = self.app
        track_end = app.monitor.track_tp_end_offset
        batched = [(tp, recs) for tp, recs in records.items() if tp.topic in self.batch_topics and recs]
        rest = {tp: recs for tp, recs in records.items() if tp.topic not in self.batch_topics}
        pairs = iter(batched)
        if rest:
            pairs = itertools.chain(pairs, self.scheduler.iterate(rest))
        for tp, item in pairs:
            if not self.flow_active or app.consumer_generation_id != generation_id:
                return   # a rebalance began: Faust seeks back and fetches again
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                track_end(tp, self.highwater(tp))
                if tp.topic in self.batch_topics:
                    yield tp, batch_message(tp, item, generation_id)
                else:
                    yield tp, self._to_message(tp, item)


def batching_consumer(base: type, topics: Iterable[str]) -> type:
    """`base` (the transport's Consumer class) with `BatchConsumerMixin` for `topics`."""
    return type(f"Batching{base.__name__}", (BatchConsumerMixin, base), {"batch_topics": frozenset(topics)})
