"""The worker: consumes `audio.frames`, publishes sentiment events. Wiring only.

The decisions live elsewhere, and this class connects them:

* `streams.app`: the Faust app, its topics and consumer; frames arrive one partition fetch per event;
* `streams.pipeline`: frames into windows, model results into events (no Kafka);
* `streams.inference`: windows batched, gated, run in model threads, results applied in order;
* `streams.publisher`: events sent without waiting, confirmed before any commit;
* `streams.recovery`: each partition restored from its checkpoint and processed in offset order from its
  watermark, checkpoints written and watermarks committed (Faust's acknowledgement is off for the input).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

import numpy as np

from streams.app import INGEST_FETCHES_MAX, build_app, consumer_lag, ensure_topics, owned_partitions
from streams.heap import release_free_memory
from streams.inference import Batcher, InferenceLoop
from streams.metrics import HealthState, Metrics
from streams.output import Output
from streams.pipeline import StreamProcessor
from streams.publisher import Publisher
from streams.recovery import Recovery
from streams.settings import Settings
from streams.silence import SilenceGate

log = logging.getLogger("voicetone.worker")

TRIM_AFTER_CLOSED = 200  # closed channels after which free heap memory is given back to the OS (or when idle)
#: frame bytes ingested at once: a worker catching up takes 64 full fetches (~64 MB), which as one
#: `ingest_many` cut ~1,500 windows before back-pressure could act; glibc kept the peak (a 15 s stall at
#: 150 channels: +1 GB RSS). In chunks of this size the model's queue bound holds between them.
INGEST_BYTES_MAX = 4 << 20


class Worker:
    """One Faust app plus the processor, model and recovery it drives."""

    def __init__(self, settings: Settings, model: Any = None, partitions: Optional[int] = None,
                 metrics: Optional[Metrics] = None, health: Optional[HealthState] = None):
        self.settings = s = settings
        if model is None:
            from model import load
            model = load(s.model_path, device=s.device, precision=s.precision, jit=s.jit)
        self.model = model
        self.partitions = partitions or ensure_topics(s)
        self.metrics = metrics or Metrics()
        self.health = health or HealthState(metrics=self.metrics)
        self.health.set_model_loaded()
        self.processor = StreamProcessor(s, model.version, model.sample_rate)
        self.inference = InferenceLoop(model, SilenceGate(s.silence_dbfs), Batcher(s.max_batch_size, s.max_batch_wait_ms),
                                       s.inference_workers, s.inference_nice, self.metrics, self.processor.rate_of,
                                       self._apply_results)
        self.executor = self.inference.executor
        self.app, self.topics = build_app(s, self.partitions)
        self.publisher = Publisher(s, self.topics.out, self.metrics)
        self.recovery = Recovery(s, self.metrics, self.publisher, self.topics.state,
                                 assignment=lambda: self.app.consumer.assignment(),
                                 commit_offsets=lambda offsets: self.app.consumer._commit(offsets),
                                 restore_state=self.processor.restore, ingest=self._ingest)
        self.drained = asyncio.Event()
        self.max_pending = max(4 * s.max_batch_size, 256)
        self.closed_since_trim = 0             # channels closed since free heap memory was last given back
        self.stream = None
        self._wire()

    @property
    def restored(self) -> set[int]:
        return self.recovery.restored

    @property
    def next_offset(self) -> dict[int, int]:
        return self.recovery.next_offset

    def _wire(self) -> None:
        worker, app = self, self.app

        @app.agent(self.topics.frames, name="voicetone-frames")
        async def frames(stream):
            worker.stream = stream
            async for events in stream.noack().take_events(INGEST_FETCHES_MAX, worker.settings.ingest_batch_ms / 1000):
                await worker.on_events(events)

        app.task(self.inference.run)
        app.timer(1.0)(self._housekeeping)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)

    # ------------------------------------------------------------ frames in
    def _owned_partitions(self) -> Optional[set[int]]:
        return owned_partitions(self.app.consumer, self.settings.input_topic)

    async def on_events(self, events) -> None:
        """Process each partition's frames in offset order, from the checkpoint on.

        Each event carries one partition fetch (`streams.app`). Faust does not guarantee offset order: it
        starts a partition wherever its consumer stands (not always at our committed offset) and was seen
        to deliver a partition with a jump. Frames already processed are dropped; a jump ahead is filled by
        reading the missing offsets straight from Kafka (`Recovery.refetch`), so no audio is skipped and no
        seek of Faust's consumer is needed. The frames that pass are ingested together, up to
        ``INGEST_BYTES_MAX`` at a time (between chunks the model's queue bound applies); events of a
        partition this worker no longer owns (still in the take buffer after a rebalance) are dropped:
        the new owner processes them."""
        owned = self._owned_partitions()
        batch: list[tuple[bytes, Optional[bytes], int, int]] = []
        size = 0
        for event in events:
            p = event.message.partition
            if owned is not None and p not in owned:
                continue
            for rec in event.message.value:
                if p not in self.restored:
                    await self._ingest(batch)
                    owned = self._owned_partitions()  # a rebalance may have come during the wait
                    if owned is not None and p not in owned:
                        break
                    await self.recovery.restore(p, rec.offset)
                expected = self.next_offset.get(p, rec.offset)
                if rec.offset < expected:
                    continue  # already processed (or covered by the checkpoint)
                if rec.offset > expected:
                    await self._ingest(batch)
                    await self.recovery.refetch(p, expected, rec.offset)
                    owned = self._owned_partitions()
                    if owned is not None and p not in owned:
                        break
                if p in self.restored:
                    self.next_offset[p] = rec.offset + 1
                    if not batch:   # `_ingest` empties it
                        size = 0
                    batch.append((rec.value, rec.key, p, rec.offset))
                    size += len(rec.value or b"")
                    if size >= INGEST_BYTES_MAX:
                        await self._ingest(batch)   # clears batch; waits while the model's queue is full
                        owned = self._owned_partitions()
                        if owned is not None and p not in owned:
                            break
        await self._ingest(batch)

    async def _ingest(self, batch: list) -> None:
        """Ingest consumed frames (and empty ``batch``), publish what they produced,
        then hold the consumer while too many windows wait for the model."""
        if not batch:
            return
        now = time.monotonic()
        out = self.processor.ingest_many(batch, now)
        self.metrics.frames.inc(len(batch))
        batch.clear()
        if out.duplicates:
            self.metrics.duplicate_frames.inc(out.duplicates)
        if out.gap_ms:
            self.metrics.gap_ms.inc(out.gap_ms)
            log.warning("%d ms of missing audio filled with silence", out.gap_ms)
        self._publish(out, now)
        while len(self.inference.batcher) + self._in_flight() > self.max_pending:
            self.drained.clear()
            await self.drained.wait()   # back-pressure: Kafka lag instead of memory growth

    def _in_flight(self) -> int:
        return sum(self.processor.in_flight(p) for p in list(self.processor.emitted))

    def _publish(self, out: Output, now: float) -> None:
        """Windows to the model, events to Kafka, checkpoints to recovery."""
        self.inference.add(out.windows, now)
        self.publisher.publish(out)
        for partition, state, watermark in out.checkpoints:
            self.recovery.queue_checkpoint(partition, state, watermark)
        self.closed_since_trim += len(out.calls)

    # ------------------------------------------------------------ results in
    def _apply_results(self, speech: np.ndarray, sentiment: np.ndarray, windows: list) -> None:
        out = self.processor.apply_results(windows, speech, sentiment)
        self._publish(out, time.monotonic())
        self.metrics.segments_published.inc(len(out.segments))
        for ts in out.audio_end_ts_ms:
            self.metrics.observe_publish_latency(ts)
        self.drained.set()

    # ------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        now = time.monotonic()
        lags = consumer_lag(self.app.consumer, self.settings.input_topic, self.next_offset)
        self._expire_idle(now, lags)
        for p in self.recovery.due(now):
            self._publish(self.processor.request_checkpoint(p), now)
        self.metrics.active_channels.set(self.processor.open_channels)
        self.metrics.unconfirmed_sends.set(len(self.publisher.unconfirmed))
        if self.closed_since_trim >= TRIM_AFTER_CLOSED or (self.closed_since_trim and not self.processor.open_channels):
            self.closed_since_trim = 0
            release_free_memory()  # else RSS stays at the peak of a burst of calls
        self.metrics.set_consumer_lag(lags)
        self.health.mark_progress()
        try:
            await self.recovery.commit_watermarks()
        except Exception as exc:  # retried at the next tick: commits are idempotent
            log.warning("committing watermarks failed: %s", exc)

    def _expire_idle(self, now: float, lags: dict[int, int]) -> None:
        """End idle channels, but only on partitions that are caught up: while frames wait in Kafka (a slow
        broker, a worker stalled on its producer, catching up after a restart) a channel's silence on this
        clock is the backlog's, and ending it would dead-letter the rest of its call as frames after its end
        (seen in a 30-minute soak with the embedded broker overloaded: 18,000 frames)."""
        self._publish(self.processor.expire_idle(now, hold={p for p, lag in lags.items() if lag > 0}), now)

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        try:
            await self.recovery.commit_watermarks()
        except Exception as exc:
            log.warning("committing watermarks at revocation failed: %s", exc)
        for tp in revoked:
            if tp.topic == self.settings.input_topic:
                self.processor.drop_partition(tp.partition)
                self.recovery.forget(tp.partition)
        self.health.set_revoked()

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        # Nothing to seek here: each partition's first event restores its
        # checkpoint and seeks to its watermark if the consumer started past it.
        self.health.set_assignment([tp.partition for tp in assigned if tp.topic == self.settings.input_topic])
