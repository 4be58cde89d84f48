"""The Faust worker: consumes `audio.frames`, publishes sentiment events.

All decisions live in `streams.pipeline.StreamProcessor`; this module only
wires it to Kafka:

* frames are consumed with acknowledgement held back (`noack`) and acked in
  offset order, only up to the partition's low watermark: the oldest frame
  some future window still needs. Faust commits the highest contiguous acked
  offset, so the committed offset never passes audio that is still needed;
* windows from every call this worker owns are batched (size and wait bound)
  and run through the model in a worker thread, so ingestion goes on while the
  model computes;
* every few seconds, per partition, a checkpoint (windower state without
  audio, plus each open channel's aggregate) is written to a changelogged
  Faust table before the frames below its watermark are acked. Faust flushes
  the producer before it commits offsets, so a committed offset always has its
  checkpoint (and every event published before it) in Kafka. After a crash or
  a rebalance, the new owner restores the checkpoint and re-reads from the
  committed offset: at most the last window's audio, and the re-emitted
  segments carry the same `event_id`s (at-least-once, deterministic IDs).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import faust
import numpy as np
import orjson

from streams.batching import Batcher
from streams.metrics import HealthState, Metrics
from streams.pipeline import Output, ProcessorConfig, StreamProcessor, prepare_batch
from voicetone.settings import Settings

log = logging.getLogger("voicetone.worker")


def faust_security(settings: Settings):
    """Faust credentials from the settings (TLS and/or SASL PLAIN/SCRAM)."""
    import ssl

    proto = settings.security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = None
    if proto.endswith("SSL"):
        ctx = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if proto.startswith("SASL"):
        mech = settings.sasl_mechanism
        if mech == "PLAIN":
            return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                         ssl_context=ctx)
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                     ssl_context=ctx, mechanism=mech)
    return faust.SSLCredentials(ctx)


def set_fetch_max_wait(ms: int) -> None:
    """Faust creates its consumer with a hard-coded fetch_max_wait_ms=1500; a
    broker holds an empty fetch that long, which put a ~0.5-1.5 s floor under
    end-to-end latency at low rates (bench/bench_e2e.py). Replace that one
    argument for every consumer this process creates."""
    import faust.transport.drivers.aiokafka as driver

    base = getattr(driver, "_voicetone_base_consumer", driver.aiokafka.AIOKafkaConsumer)

    class ShortFetchConsumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            if "fetch_max_wait_ms" in kwargs:
                kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    driver._voicetone_base_consumer = base
    driver.aiokafka.AIOKafkaConsumer = ShortFetchConsumer


def ensure_topics(settings: Settings) -> int:
    """Create missing topics; return the input topic's partition count.

    The state table's changelog must have as many partitions as the input, so
    the worker reads the real count instead of trusting a setting.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.confluent_config())
    meta = admin.list_topics(timeout=15)
    wanted = [settings.input_topic, settings.segments_topic, settings.aggregates_topic,
              settings.calls_topic, settings.dlq_topic]
    missing = [t for t in wanted if t not in meta.topics]
    if missing:
        futures = admin.create_topics([NewTopic(t, settings.topic_partitions, settings.replication_factor)
                                       for t in missing])
        for topic, fut in futures.items():
            try:
                fut.result(15)
            except Exception as exc:  # created concurrently by another worker
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        meta = admin.list_topics(timeout=15)
    return len(meta.topics[settings.input_topic].partitions)


class Worker:
    """One Faust app plus the processor, batcher and model it drives."""

    def __init__(self, settings: Settings, model: Any = None, partitions: Optional[int] = None):
        self.settings = settings
        if model is None:
            from model import load
            model = load(settings.model_path, device=settings.device)
        self.model = model
        self.partitions = partitions or ensure_topics(settings)
        self.processor = StreamProcessor(ProcessorConfig.from_settings(settings), model.version, model.sample_rate)
        self.batcher: Batcher = Batcher(settings.max_batch_size, settings.max_batch_wait_ms)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicetone-infer")
        self.to_commit: dict[int, int] = {}    # partition -> watermark whose checkpoint is written
        self.restored: set[int] = set()
        self.rewound: dict[int, tuple[int, float]] = {}  # partition -> (offset sought back to, when)
        self.next_offset: dict[int, int] = {}  # partition -> offset of the next frame to process
        self.last_checkpoint: dict[int, float] = {}
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.max_pending = max(4 * settings.max_batch_size, 256)
        self.metrics = Metrics()
        self.health = HealthState(metrics=self.metrics)
        self.health.set_model_loaded()
        self.stream = None
        self.app = self._build_app()

    # ------------------------------------------------------------ app
    def _build_app(self) -> faust.App:
        s = self.settings
        set_fetch_max_wait(s.fetch_max_wait_ms)
        app = faust.App(
            s.app_id, broker=s.kafka_url(), broker_credentials=faust_security(s),
            value_serializer="raw", key_serializer="raw", store="memory://",
            topic_partitions=self.partitions, topic_replication_factor=s.replication_factor,
            broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=s.heartbeat_interval_s,
            broker_rebalance_timeout=s.rebalance_timeout_s, broker_commit_interval=s.commit_interval_s,
            stream_wait_empty=False, web_enabled=False, consumer_auto_offset_reset="earliest",
            table_standby_replicas=0, producer_linger_ms=5, logging_config=None,
        )
        # acks=False: Faust must never commit this topic's offsets itself (its
        # gap logic was seen to commit offsets nobody acknowledged); the worker
        # commits each partition's checkpoint watermark on its own.
        self.frames_topic = app.topic(s.input_topic, key_type=bytes, value_type=bytes,
                                      key_serializer="raw", value_serializer="raw", acks=False)
        self.out_topics = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
                           for name in (s.segments_topic, s.aggregates_topic, s.calls_topic, s.dlq_topic)}
        self.state = app.Table("partition-state", default=None, partitions=self.partitions,
                               key_type=bytes, value_type=bytes)
        worker = self

        @app.agent(self.frames_topic, name="voicetone-frames")
        async def frames(stream):
            worker.stream = stream
            async for event in stream.noack().events():
                await worker.on_event(event)

        app.task(self._inference_loop)
        app.timer(1.0)(self._housekeeping)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        return app

    # ------------------------------------------------------------ ingest
    def _latest_checkpoint(self, partition: int) -> Optional[bytes]:
        """The newest checkpoint of `partition`, read straight from the changelog.

        Only this partition's key is ever written to its changelog partition,
        so its last message is the newest checkpoint. Reading it here, rather
        than trusting the table's local copy, guarantees the state matches the
        committed offset even if the table's own recovery stopped short (it
        trusts the broker's high watermark)."""
        from confluent_kafka import Consumer, TopicPartition

        topic = self.state.changelog_topic.get_topic_name()
        c = Consumer({**self.settings.confluent_config(), "group.id": f"{self.settings.app_id}-restore",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if hi <= lo:
                return None
            # The reported high watermark is not trusted to be the end (the
            # embedded tansu broker was seen to under-report it by ~10%): read
            # from a little before it up to the real end and keep the last one.
            c.assign([TopicPartition(topic, partition, max(lo, hi - 64))])
            last, quiet_since = None, time.monotonic()
            while time.monotonic() - quiet_since < 1.0:
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                quiet_since = time.monotonic()
                if msg.value():
                    last = msg.value()
            return last
        finally:
            c.close()

    async def _restore(self, partition: int, first_offset: int) -> bool:
        """Adopt the partition's newest checkpoint. Returns False when the
        consumer started past the checkpoint's watermark (offsets committed
        beyond what the checkpoint covers): it is then sought back to the
        watermark and the frames read so far are dropped, to be read again."""
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.run_in_executor(None, self._latest_checkpoint, partition)
        except Exception as exc:  # broker hiccup: fall back to the table's local copy
            log.warning("partition %d: reading the changelog failed (%s); using the table", partition, exc)
            raw = self.state.data.get(self._state_key(partition))
        state = orjson.loads(raw) if raw else None
        watermark = state.get("watermark") if state else None
        if watermark is not None and first_offset > watermark:
            log.warning("partition %d: committed offset %d is past the checkpoint's watermark %d: "
                        "seeking back so no audio is skipped", partition, first_offset, watermark)
            await self._rewind(partition, watermark)
        if state:
            self.processor.restore(partition, state, time.monotonic())
            log.info("partition %d: resumed from checkpoint (watermark %s)", partition, watermark)
        if watermark is not None:
            self.next_offset.setdefault(partition, watermark)
        self.restored.add(partition)
        return partition not in self.rewound

    async def _rewind(self, partition: int, offset: int) -> None:
        """Seek the input partition back; frames until `offset` comes again are dropped."""
        tp = next(tp for tp in self.app.consumer.assignment()
                  if tp.topic == self.settings.input_topic and tp.partition == partition)
        await self.app.consumer.seek(tp, offset)
        self.rewound[partition] = (offset, time.monotonic())

    def _in_sequence(self, partition: int, offset: int) -> Optional[int]:
        """None if `offset` is the next one to process, else where to rewind to
        (-1: already processed, drop it). Faust was seen to deliver a
        partition's messages with a jump (and to commit offsets nobody acked);
        processing a jump would silently skip audio, so we read it again."""
        rewound = self.rewound.get(partition)
        if rewound is not None:
            target, since = rewound
            if offset == target:
                del self.rewound[partition]
                return None
            if time.monotonic() - since > 5.0:  # the seek did not take: ask again
                return target
            return -1
        expected = self.next_offset.get(partition)
        if expected is None or offset == expected:
            return None
        return -1 if offset < expected else expected

    @staticmethod
    def _state_key(partition: int) -> bytes:
        return f"p{partition}".encode()

    async def on_event(self, event) -> None:
        msg = event.message
        p = msg.partition
        if p not in self.restored:
            await self._restore(p, msg.offset)
        rewind = self._in_sequence(p, msg.offset)
        if rewind is not None:
            if rewind >= 0:
                log.warning("partition %d: got offset %d, expected %d: reading again from %d",
                            p, msg.offset, rewind, rewind)
                await self._rewind(p, rewind)
            return
        self.next_offset[p] = msg.offset + 1
        now = time.monotonic()
        out = self.processor.ingest(msg.value, msg.key, p, msg.offset, now)
        self.metrics.frames.inc()
        if out.duplicates:
            self.metrics.duplicate_frames.inc(out.duplicates)
        if out.gap_ms:
            self.metrics.gap_ms.inc(out.gap_ms)
            log.warning("partition %d offset %d: %d ms of missing audio filled with silence", p, msg.offset,
                        out.gap_ms)
        self._publish(out, now)
        while len(self.batcher) + self._in_flight() > self.max_pending:
            self.drained.clear()
            await self.drained.wait()   # back-pressure: Kafka lag instead of memory growth

    def _in_flight(self) -> int:
        return sum(self.processor.in_flight(p) for p in list(self.processor.emitted))

    def _publish(self, out: Output, now: float) -> None:
        s = self.settings
        for w in out.windows:
            self.batcher.add(w, now)
        if out.windows:
            self.wakeup.set()
        for topic, events in ((s.segments_topic, out.segments), (s.aggregates_topic, out.aggregates),
                              (s.calls_topic, out.calls), (s.dlq_topic, out.dead_letters)):
            t = self.out_topics[topic]
            for ev in events:
                key = ev.get("call_id")
                if ev.get("type") == "dead_letter":
                    key = ev.get("key_b64") and base64.b64decode(ev["key_b64"])
                    self.metrics.dead_letters.labels(reason=ev["reason"]).inc()
                    log.warning("dead letter: %s: %s", ev["reason"], ev["detail"][:200])
                elif isinstance(key, str):
                    key = key.encode()
                t.send_soon(key=key, value=orjson.dumps(ev))
        for partition, state, watermark in out.checkpoints:
            self._commit_checkpoint(partition, state, watermark)

    def _commit_checkpoint(self, partition: int, state: dict, watermark: Optional[int]) -> None:
        """Persist the checkpoint; its watermark is committed once the producer
        has flushed it (see `_commit_watermarks`)."""
        if partition not in self.restored:
            return  # revoked meanwhile
        key = self._state_key(partition)
        value = orjson.dumps(state)
        self.state.data[key] = value
        self.state.send_changelog(partition, key, value)
        if watermark is not None:
            self.to_commit[partition] = watermark

    async def _commit_watermarks(self) -> None:
        """Commit each partition's newest checkpointed watermark, after the
        checkpoint and every event published before it are in Kafka."""
        if not self.to_commit:
            return
        pending, self.to_commit = self.to_commit, {}
        offsets = {tp: pending[tp.partition] for tp in self.app.consumer.assignment()
                   if tp.topic == self.settings.input_topic and tp.partition in pending
                   and tp.partition in self.restored}
        if not offsets:
            return
        await self.app.producer.flush()
        await self.app.consumer._commit(offsets)

    # ------------------------------------------------------------ inference
    def _infer(self, windows, rates):
        audio, lengths = prepare_batch(windows, rates, self.model.sample_rate)
        return self.model.predict(audio, lengths)

    async def _run_batch(self, batch) -> tuple[np.ndarray, np.ndarray, list]:
        """Run one batch; on failure split it, and skip single windows that fail."""
        loop = asyncio.get_running_loop()
        rates = [self.processor.rate_of(w) for w in batch]
        started = time.perf_counter()
        try:
            speech, sentiment = await loop.run_in_executor(self.executor, self._infer, batch, rates)
        except Exception as exc:  # out of memory, bad input to the network...
            kind = type(exc).__name__
            self.metrics.inference_errors.labels(kind=kind).inc()
            if len(batch) == 1:
                log.error("inference failed for %s/%s window %d: %s", batch[0].call_id, batch[0].channel,
                          batch[0].index, exc)
                return np.array([np.nan], np.float32), np.full((1, 3), np.nan, np.float32), batch
            half = len(batch) // 2
            a = await self._run_batch(batch[:half])
            b = await self._run_batch(batch[half:])
            return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), batch
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.windows.inc(len(batch))
        return speech, sentiment, batch

    async def _inference_loop(self) -> None:
        while True:
            now = time.monotonic()
            batches = self.batcher.take_ready(now)
            if not batches:
                deadline = self.batcher.next_deadline()
                self.wakeup.clear()
                timeout = None if deadline is None else max(0.0, deadline - now)
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=timeout if timeout is not None else 1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            for batch in batches:
                speech, sentiment, windows = await self._run_batch(batch)
                out = self.processor.apply_results(windows, speech, sentiment)
                self._publish(out, time.monotonic())
                self.metrics.segments_published.inc(len(out.segments))
                for ts in out.audio_end_ts_ms:
                    self.metrics.observe_publish_latency(ts)
                self.drained.set()

    # ------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        now = time.monotonic()
        self._publish(self.processor.expire_idle(now), now)
        for p in list(self.restored):
            if now - self.last_checkpoint.get(p, 0.0) >= self.settings.commit_interval_s / 2:
                self.last_checkpoint[p] = now
                self._publish(self.processor.request_checkpoint(p), now)
        self.metrics.active_channels.set(self.processor.open_channels)
        self.metrics.set_consumer_lag(self._consumer_lag())
        self.health.mark_progress()
        try:
            await self._commit_watermarks()
        except Exception as exc:  # retried at the next tick: commits are idempotent
            log.warning("committing watermarks failed: %s", exc)

    def _consumer_lag(self) -> dict[int, int]:
        """Frames not yet processed per owned partition (broker high water - next offset)."""
        lags = {}
        for tp in self.app.consumer.assignment():
            if tp.topic != self.settings.input_topic or tp.partition not in self.next_offset:
                continue
            try:
                hw = self.app.consumer.highwater(tp)
            except Exception:  # not known yet
                continue
            if hw is not None:
                lags[tp.partition] = max(0, hw - self.next_offset[tp.partition])
        return lags

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        try:
            await self._commit_watermarks()
        except Exception as exc:
            log.warning("committing watermarks at revocation failed: %s", exc)
        for tp in revoked:
            if tp.topic == self.settings.input_topic:
                self.processor.drop_partition(tp.partition)
                self.to_commit.pop(tp.partition, None)
                self.restored.discard(tp.partition)
                self.rewound.pop(tp.partition, None)
                self.next_offset.pop(tp.partition, None)
        self.health.set_revoked()

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        # Make the committed offset of each input partition its checkpoint's
        # watermark before Faust seeks to "committed": Faust was seen to commit
        # offsets past what was acked, which would skip audio on resume.
        loop = asyncio.get_running_loop()
        rewind = {}
        for tp in assigned:
            if tp.topic != self.settings.input_topic or tp.partition in self.restored:
                continue
            try:
                raw = await loop.run_in_executor(None, self._latest_checkpoint, tp.partition)
            except Exception as exc:
                log.warning("partition %d: could not read its checkpoint at assignment: %s", tp.partition, exc)
                continue
            watermark = orjson.loads(raw).get("watermark") if raw else None
            if watermark is not None:
                rewind[tp] = watermark
        if rewind:
            try:
                await self.app.consumer._commit(rewind)
                log.info("committed checkpoint watermarks %s", {tp.partition: o for tp, o in rewind.items()})
            except Exception as exc:
                log.warning("could not commit checkpoint watermarks: %s", exc)
        self.health.set_assignment([tp.partition for tp in assigned if tp.topic == self.settings.input_topic])
