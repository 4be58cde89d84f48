"""Crash recovery on the Kafka side: where each owned partition resumes, and what may be committed.

Every few seconds, per partition, the pipeline takes a checkpoint (`streams.checkpoint`: windower state
without audio, plus each open channel's aggregate). `Recovery` writes it to the changelog of a Faust table
once every event published before it is acknowledged by Kafka, and commits its watermark (the oldest
frame some future window still needs) once the checkpoint itself is acknowledged (`commit_watermarks`).
After a crash or a rebalance, the new owner reads the newest checkpoint from the changelog, up to a fence
it appends so it knows where the end is (`latest_checkpoint`), and processes the partition in offset order
from its watermark, re-reading at most the last window's audio; frames Faust skips are read straight from
Kafka (`refetch`). The re-emitted segments carry the same `event_id`s (at-least-once, deterministic IDs).

`Recovery` is handed what it needs from the worker: the publisher (to confirm sends), the state table,
the consumer's assignment and offset commit, and two callbacks: `restore_state(partition, state, now)`
(the pipeline adopts a checkpoint) and `ingest(batch)` (frames read back from Kafka go through the
worker's ingestion like consumed ones).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Optional

import orjson

from streams.kafka_client import client_config
from streams.metrics import Metrics
from streams.publisher import Publisher
from streams.settings import Settings

log = logging.getLogger("voicetone.worker")

FENCE_KEY = b"__voicetone_fence__"  # changelog records that mark where a restore read up to


def state_key(partition: int) -> bytes:
    """The changelog key of `partition`'s checkpoint."""
    return f"p{partition}".encode()


class Recovery:
    """Restore, refetch, and the checkpoint-then-commit sequence of the partitions this worker owns."""

    def __init__(self, settings: Settings, metrics: Metrics, publisher: Publisher, table: Any,
                 assignment: Callable[[], set], commit_offsets: Callable[[dict], Awaitable[Any]],
                 restore_state: Callable[[int, dict, float], None], ingest: Callable[[list], Awaitable[None]]):
        self.settings, self.metrics, self.publisher, self.table = settings, metrics, publisher, table
        self.assignment, self.commit_offsets = assignment, commit_offsets
        self.restore_state, self.ingest = restore_state, ingest
        self.restored: set[int] = set()        # partitions whose checkpoint was adopted
        self.next_offset: dict[int, int] = {}  # partition -> offset of the next frame to process
        self.to_commit: dict[int, tuple[bytes, Optional[int]]] = {}  # partition -> (checkpoint, watermark)
        self.last_checkpoint: dict[int, float] = {}

    # ------------------------------------------------------------ restore
    def latest_checkpoint(self, partition: int, timeout_s: float = 30.0) -> Optional[bytes]:
        """The newest checkpoint of `partition`, read straight from the changelog.

        Only this partition's key (and fences) is ever written to its changelog
        partition. To know where the changelog really ends, a fence record with
        a fresh nonce is appended first and the partition is read until that
        fence comes back: neither the broker's reported high watermark (the
        embedded tansu broker under-reports it) nor a quiet period (a busy
        machine can take longer than any fixed pause to deliver the first
        fetch) tells the end reliably. Raises TimeoutError if the fence does
        not come back in time."""
        from confluent_kafka import Producer, TopicPartition

        topic = self.table.changelog_topic.get_topic_name()
        fence = uuid.uuid4().hex.encode()
        producer = Producer(client_config(self.settings))
        producer.produce(topic, key=FENCE_KEY, value=fence, partition=partition)
        if producer.flush(timeout_s) > 0:
            raise TimeoutError(f"could not append a fence to {topic}[{partition}]")
        c = self.side_consumer()
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            start = max(lo, hi - 64)  # an under-reported end only makes us read more
            key = state_key(partition)
            deadline = time.monotonic() + timeout_s
            while True:
                c.assign([TopicPartition(topic, partition, start)])
                last = None
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"fence not read back from {topic}[{partition}] in {timeout_s} s")
                    msg = c.poll(0.2)
                    if msg is None or msg.error():
                        continue
                    if msg.key() == FENCE_KEY and msg.value() == fence:
                        log.debug("partition %d: changelog read from %d to the fence at %d", partition, start,
                                  msg.offset())
                        break
                    if msg.key() == key and msg.value():
                        last = msg.value()
                if last is not None or start <= lo:
                    return last
                # only fences since `start` (a crash loop before any checkpoint): look further back
                start = max(lo, start - 1024)
        finally:
            c.close()

    def side_consumer(self, group_id: Optional[str] = None):
        """A plain consumer that never joins the group, for reads the Faust consumer must not do."""
        from confluent_kafka import Consumer

        return Consumer({**client_config(self.settings), "group.id": group_id or f"{self.settings.app_id}-side",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})

    def start_without_checkpoint(self, partition: int) -> int:
        """Where a partition with no checkpoint starts: the group's committed
        offset if there is one (the changelog was lost), else its first offset.
        Not where Faust's consumer happens to start: it was seen to start a
        newly assigned, never committed partition at its end."""
        from confluent_kafka import TopicPartition

        tp = TopicPartition(self.settings.input_topic, partition)
        c = self.side_consumer(group_id=self.settings.app_id)
        try:
            [committed] = c.committed([tp], timeout=15)
            if committed.offset >= 0:
                return committed.offset
            lo, _ = c.get_watermark_offsets(tp, timeout=15)
            return lo
        finally:
            c.close()

    def read_input(self, partition: int, start: int, end: int, max_records: int = 2000,
                    timeout_s: float = 30.0) -> list[tuple]:
        """Input frames of `partition` from offset `start` up to `end` (exclusive),
        at most `max_records` of them, as (offset, key, value).

        Reaching `end` is known by position, so offsets that hold no record
        (transaction markers) do not make it wait forever."""
        from confluent_kafka import TopicPartition

        c = self.side_consumer()
        try:
            c.assign([TopicPartition(self.settings.input_topic, partition, start)])
            got, deadline = [], time.monotonic() + timeout_s
            while len(got) < max_records:
                msg = c.poll(0.2)
                if msg is not None and not msg.error():
                    if msg.offset() >= end:
                        break
                    if msg.offset() >= start:
                        got.append((msg.offset(), msg.key(), msg.value()))
                        continue
                [pos] = c.position([TopicPartition(self.settings.input_topic, partition)])
                if pos.offset >= end:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"input partition {partition}: offsets {start}-{end} not read in {timeout_s} s")
            return got
        finally:
            c.close()

    async def retrying(self, what: str, fn, *args):
        """Run a blocking Kafka read off the event loop until it succeeds: the
        partition waits rather than go on without its state or its audio."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await loop.run_in_executor(None, fn, *args)
            except Exception as exc:
                attempt += 1
                self.metrics.restore_errors.inc()
                log.warning("%s failed (attempt %d): %s", what, attempt, exc)
                await asyncio.sleep(min(10.0, float(attempt)))

    async def restore(self, partition: int, first_offset: int) -> None:
        """Adopt the partition's newest checkpoint; processing goes on from its
        watermark, or, with no checkpoint, from the group's committed offset or
        the partition's first offset (never from `first_offset`, where Faust
        happened to start)."""
        raw = await self.retrying(f"partition {partition}: reading its checkpoint", self.latest_checkpoint,
                                   partition)
        state = orjson.loads(raw) if raw else None
        start = state.get("watermark") if state else None
        if state:
            self.restore_state(partition, state, time.monotonic())
            log.info("partition %d: resumed from checkpoint (watermark %s, first offset delivered %d)",
                     partition, start, first_offset)
        if start is None:
            start = await self.retrying(f"partition {partition}: reading its committed offset",
                                         self.start_without_checkpoint, partition)
            if start > 0:
                log.warning("partition %d: no checkpoint; starting at offset %d", partition, start)
        self.next_offset[partition] = start
        self.restored.add(partition)

    async def refetch(self, p: int, expected: int, offset: int) -> None:
        """Read the frames [expected, offset) that Faust skipped straight from Kafka, in order."""
        self.metrics.refetched_frames.inc(offset - expected)
        log.warning("partition %d: got offset %d, expected %d: reading the %d frames between from Kafka",
                    p, offset, expected, offset - expected)
        while p in self.restored and self.next_offset[p] < offset:
            start = self.next_offset[p]
            missing = await self.retrying(f"partition {p}: reading offsets {start}-{offset}",
                                           self.read_input, p, start, offset)
            if p not in self.restored:
                return  # revoked meanwhile: the new owner redoes it
            if not missing:
                break  # nothing but markers left before offset
            self.next_offset[p] = missing[-1][0] + 1
            await self.ingest([(value, key, p, o) for o, key, value in missing])

    # ------------------------------------------------------------ checkpoint, then commit
    def due(self, now: float) -> list[int]:
        """The restored partitions whose next checkpoint is due (every half commit interval)."""
        due = [p for p in self.restored if now - self.last_checkpoint.get(p, 0.0) >= self.settings.commit_interval_s / 2]
        for p in due:
            self.last_checkpoint[p] = now
        return due

    def queue_checkpoint(self, partition: int, state: dict, watermark: Optional[int]) -> None:
        """Queue a completed checkpoint; `commit_watermarks` writes it once every
        event published before it is in Kafka, then commits its watermark."""
        if partition not in self.restored:
            return  # revoked meanwhile
        self.to_commit[partition] = (orjson.dumps(state), watermark)

    async def commit_watermarks(self) -> None:
        """Write each partition's newest checkpoint and commit its watermark.

        Order matters: (1) every event published before the checkpoint is
        confirmed by Kafka; (2) the checkpoint is written and confirmed;
        (3) its watermark is committed. So any checkpoint a new owner can read
        (the newest, which may be newer than the committed offset if we die
        before (3)) has all its events published, and the committed offset
        never passes audio that the newest checkpoint still needs."""
        if not await self.publisher.confirm() or not self.to_commit:
            return  # not everything is in Kafka yet: the checkpoints wait for the next tick
        pending, self.to_commit = self.to_commit, {}
        owned = {tp.partition: tp for tp in self.assignment()
                 if tp.topic == self.settings.input_topic and tp.partition in self.restored}
        pending = {p: v for p, v in pending.items() if p in owned}
        if not pending:
            return
        changelog = self.table.changelog_topic
        for partition, (value, _) in pending.items():
            key = state_key(partition)
            self.table.data[key] = value
            self.publisher.track(changelog, key, value, self.table.send_changelog(partition, key, value))
        if not await self.publisher.confirm():
            for p, v in pending.items():  # retried at the next tick unless a newer one came meanwhile
                self.to_commit.setdefault(p, v)
            return
        offsets = {owned[p]: watermark for p, (_, watermark) in pending.items() if watermark is not None}
        if offsets:
            await self.commit_offsets(offsets)
            log.debug("committed checkpoint watermarks %s", {tp.partition: o for tp, o in offsets.items()})

    def forget(self, partition: int) -> None:
        """A revoked partition: its new owner resumes from the changelog."""
        self.to_commit.pop(partition, None)
        self.restored.discard(partition)
        self.next_offset.pop(partition, None)
