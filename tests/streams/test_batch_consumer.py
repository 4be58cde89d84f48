"""The consumer that hands the frames topic over one partition fetch per event (streams/app.py)."""

import asyncio
from types import SimpleNamespace

from faust.types import TP

from streams.app import batching_consumer


class FakeFaustConsumer:
    """What `BatchConsumerMixin.getmany` uses of Faust's Consumer."""

    def __init__(self, records, active=None):
        self.records, self.active = records, active
        self.app = SimpleNamespace(consumer_generation_id=1, monitor=SimpleNamespace(track_tp_end_offset=self._track))
        self.should_stop, self.flow_active, self._buffered_partitions = False, True, set()
        self.tracked, self.seeks = [], 0
        self.scheduler = SimpleNamespace(iterate=lambda recs: ((tp, r) for tp, rs in recs.items() for r in rs))

    def _track(self, tp, highwater):
        self.tracked.append((tp, highwater))

    async def _wait_next_records(self, timeout):
        return self.records, self.active

    async def perform_seek(self):
        self.seeks += 1

    def highwater(self, tp):
        return 1000 + tp.partition

    def _to_message(self, tp, record):
        return ("message", tp.topic, tp.partition, record.offset)


def rec(offset, size=10):
    return SimpleNamespace(offset=offset, key=b"k", value=b"v" * size, timestamp=1_000_000 + offset,
                           timestamp_type=0, serialized_value_size=size)


def collect(consumer, on_item=None):
    async def run():
        out = []
        async for tp, msg in consumer.getmany(timeout=1.0):
            out.append((tp, msg))
            if on_item:
                on_item(consumer, len(out))
        return out
    return asyncio.run(run())


Consumer = batching_consumer(FakeFaustConsumer, ["frames"])
F0, F1, CL = TP("frames", 0), TP("frames", 1), TP("state-changelog", 0)


def test_frames_come_as_one_message_per_partition_fetch_and_other_topics_per_record():
    c = Consumer({F0: [rec(5), rec(6), rec(7, size=3)], F1: [rec(0)], CL: [rec(40), rec(41)]})
    out = collect(c)
    frames = [(tp, m) for tp, m in out if tp.topic == "frames"]
    assert [(tp, m.offset, [r.offset for r in m.value]) for tp, m in frames] == [(F0, 7, [5, 6, 7]), (F1, 0, [0])]
    m = frames[0][1]
    assert (m.topic, m.partition, m.tp, m.key, m.generation_id) == ("frames", 0, F0, None, 1)
    assert m.serialized_value_size == 23 and m.timestamp == (1_000_000 + 7) / 1000.0
    assert [m for tp, m in out if tp == CL] == [("message", "state-changelog", 0, 40), ("message", "state-changelog", 0, 41)]
    assert c.tracked == [(F0, 1000), (F1, 1001), (CL, 1000), (CL, 1000)]
    assert type(c).__name__ == "BatchingFakeFaustConsumer" and type(c).batch_topics == frozenset({"frames"})


def test_inactive_partitions_are_skipped_unless_buffered():
    c = Consumer({F0: [rec(1)], F1: [rec(2)], CL: [rec(3)]}, active={F0})
    c._buffered_partitions = {CL}
    assert [tp for tp, _ in collect(c)] == [F0, CL]


def test_a_rebalance_stops_the_fetch_and_a_suspended_flow_seeks_back():
    def new_generation(consumer, n):
        consumer.app.consumer_generation_id += 1

    c = Consumer({F0: [rec(1)], F1: [rec(2)], CL: [rec(3)]})
    assert [tp for tp, _ in collect(c, on_item=new_generation)] == [F0]

    def suspend(consumer, n):
        consumer.flow_active = False

    c = Consumer({F0: [rec(1)], F1: [rec(2)]})
    assert [tp for tp, _ in collect(c, on_item=suspend)] == [F0]
    c = Consumer({F0: [rec(1)]})
    c.flow_active = False
    assert collect(c) == [] and c.seeks == 1
    c = Consumer(None)
    assert collect(c) == [] and c.seeks == 0
