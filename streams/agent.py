"""The Faust worker: consumes `audio.frames`, publishes sentiment events.

All decisions live in `streams.pipeline.StreamProcessor`; this module only
wires it to Kafka:

* frames are consumed with Faust's acknowledgement switched off for the
  input topic; the worker commits each partition's offset itself, only up to
  the watermark of a checkpoint already in Kafka: the oldest frame some
  future window still needs;
* frames arrive one partition fetch per Faust event (`streams.batch_consumer`);
* windows from every call this worker owns are batched (size and wait bound),
  gated and resampled on the loop, and run through the model in model threads
  (up to `inference_workers` calls at once, results applied in the order the
  batches were cut), so ingestion goes on while the model computes;
* every few seconds, per partition, a checkpoint (windower state without
  audio, plus each open channel's aggregate) is written to a changelogged
  Faust table once every event published before it is acknowledged by Kafka,
  and its watermark is committed once the checkpoint itself is acknowledged
  (`_commit_watermarks`). After a crash or a rebalance, the new owner reads
  the newest checkpoint from the changelog (up to a fence it appends, so it
  knows where the end is) and processes the partition in offset order from
  its watermark, re-reading at most the last window's audio (frames Faust
  skips are read straight from Kafka); the re-emitted segments carry the same `event_id`s
  (at-least-once, deterministic IDs).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import faust
import numpy as np
import orjson

from streams.batch_consumer import batching_consumer
from streams.batching import Batcher
from streams.heap import release_free_memory
from streams.kafka_client import BrokerUnavailable, client_config, connect
from streams.metrics import HealthState, Metrics
from streams.pipeline import Output, ProcessorConfig, StreamProcessor, model_batch_for, predict_batch
from streams.silence import SilenceGate
from voicetone.settings import Settings

log = logging.getLogger("voicetone.worker")

TRIM_AFTER_CLOSED = 200  # closed channels after which free heap memory is given back to the OS (or when idle)
FENCE_KEY = b"__voicetone_fence__"  # changelog records that mark where a restore read up to


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


def faust_datadir(app_id: str) -> str:
    """Where Faust may keep files: state lives in memory and the checkpoint topic, but
    Faust still makes a data folder, which must not litter the worker's working directory."""
    path = os.path.join(tempfile.gettempdir(), "voicetone-faust", app_id)
    os.makedirs(path, exist_ok=True)
    return path


def set_fetch_max_wait(max_wait_ms: int) -> None:
    """Faust creates its consumer with a hard-coded fetch_max_wait_ms=1500; a
    broker holds an empty fetch that long, which put a ~0.5-1.5 s floor under
    end-to-end latency at low rates (bench/bench_e2e.py). Replace that one
    argument for every consumer this process creates. (A larger
    fetch_min_bytes was measured too and did not pay: docs/benchmarks.md.)"""
    import faust.transport.drivers.aiokafka as driver

    base = getattr(driver, "_voicetone_base_consumer", driver.aiokafka.AIOKafkaConsumer)

    class ShortFetchConsumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            if "fetch_max_wait_ms" in kwargs:
                kwargs["fetch_max_wait_ms"] = max_wait_ms
            super().__init__(*args, **kwargs)

    driver._voicetone_base_consumer = base
    driver.aiokafka.AIOKafkaConsumer = ShortFetchConsumer


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's niceness by `nice` (Linux threads have their own; elsewhere, or without
    permission, the thread keeps its priority)."""
    if not nice:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:
        log.debug("could not lower the inference thread's priority: %s", exc)


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> int:
    """Create missing topics; return the input topic's partition count.

    The state table's changelog must have as many partitions as the input, so
    the worker reads the real count instead of trusting a setting. Raises
    `BrokerUnavailable` (one line: what is wrong and the likely fix) when the
    broker cannot be used within `timeout_s` or the topics cannot be created.
    """
    wanted = [settings.input_topic, settings.segments_topic, settings.aggregates_topic,
              settings.calls_topic, settings.dlq_topic]
    meta = connect(settings, timeout_s, need_topics=wanted, create=True, partitions=settings.topic_partitions,
                   replication=settings.replication_factor)
    return len(meta.topics[settings.input_topic].partitions)


def wait_for_broker(settings: Settings, health: Optional[HealthState] = None, attempt_s: float = 10.0,
                    max_backoff_s: float = 30.0, sleep=time.sleep) -> int:
    """`ensure_topics` until the broker answers: one line per failed attempt, waits doubling from 1 s up to
    `max_backoff_s`, and `health` not ready with the reason meanwhile. A problem that waiting cannot fix
    (credentials, TLS, no right to create the topics) is raised."""
    backoff = 1.0
    while True:
        try:
            partitions = ensure_topics(settings, attempt_s)
        except BrokerUnavailable as exc:
            if not exc.retry:
                if health is not None:
                    health.set_not_ready(str(exc))
                raise
            if health is not None:
                health.set_waiting(str(exc))
            log.warning("%s; trying again in %.0f s", exc, backoff)
            sleep(backoff)
            backoff = min(max_backoff_s, backoff * 2)
            continue
        if health is not None:
            health.set_waiting(None)
        return partitions


#: most partition fetches (events of `streams.batch_consumer`) ingested together; the wait is a setting
INGEST_FETCHES_MAX = 64
#: fetches the frames topic's stream buffers before Faust pauses fetching (each up to a partition's fetch size)
FRAMES_BUFFER_FETCHES = 32
#: frame bytes ingested at once: a worker catching up takes 64 full fetches (~64 MB), which as one
#: `ingest_many` cut ~1,500 windows before back-pressure could act; glibc kept the peak (a 15 s stall at
#: 150 channels: +1 GB RSS). In chunks of this size the model's queue bound holds between them.
INGEST_BYTES_MAX = 4 << 20


class _App(faust.App):
    """Faust's app without its Monitor sensor, which records statistics for every message and stream event
    (for Faust's web views, which the worker turns off; its own metrics are in streams/metrics.py), and with
    a consumer that hands over `batch_topics` one partition fetch per event: Faust's per-message path had
    bound the worker to ~10,000 frames/s by the GIL (bench/bench_drain.py)."""

    batch_topics: frozenset = frozenset()   # topics whose records arrive one partition fetch per event

    def on_init_dependencies(self):
        deps = super().on_init_dependencies()
        self.sensors.remove(self.monitor)   # +23% frames/s draining a backlog (docs/benchmarks.md)
        return deps

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        # With no sensor left Faust's per-sensor state is an empty dict, which it takes for a missing one and
        # warns about twice per rebalance; a placeholder keeps the log for real problems.
        self._rebalancing_sensor_state = self._rebalancing_sensor_state or {"no sensors": None}

    def _new_consumer(self):
        self.transport.Consumer = batching_consumer(type(self.transport).Consumer, self.batch_topics)
        return super()._new_consumer()


def _predict_timed(model, batch):
    """`predict_batch` in a model thread, and the CPU time that thread spent on it (torch runs a call's
    operators in the calling thread when it has one intra-op thread, the worker's default on CPU)."""
    started = time.thread_time()
    answers = predict_batch(model, batch)
    return answers, time.thread_time() - started


class Worker:
    """One Faust app plus the processor, batcher and model it drives."""

    def __init__(self, settings: Settings, model: Any = None, partitions: Optional[int] = None,
                 metrics: Optional[Metrics] = None, health: Optional[HealthState] = None):
        self.settings = settings
        if model is None:
            from model import load
            model = load(settings.model_path, device=settings.device, precision=settings.precision,
                         jit=settings.jit)
        self.model = model
        self.partitions = partitions or ensure_topics(settings)
        self.processor = StreamProcessor(ProcessorConfig.from_settings(settings), model.version, model.sample_rate)
        self.batcher: Batcher = Batcher(settings.max_batch_size, settings.max_batch_wait_ms)
        self.gate = SilenceGate(self.processor.config.silence_dbfs)  # as the offline runner builds it
        self.executor = ThreadPoolExecutor(max_workers=settings.inference_workers, thread_name_prefix="voicetone-infer",
                                           initializer=lower_thread_priority, initargs=(settings.inference_nice,))
        self.to_commit: dict[int, tuple[bytes, Optional[int]]] = {}  # partition -> (checkpoint, watermark)
        self.unconfirmed: list[tuple] = []     # (topic, key, value, future) sent but not yet acknowledged
        self.closed_since_trim = 0             # channels closed since free heap memory was last given back
        self.restored: set[int] = set()
        self.next_offset: dict[int, int] = {}  # partition -> offset of the next frame to process
        self.last_checkpoint: dict[int, float] = {}
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.max_pending = max(4 * settings.max_batch_size, 256)
        self.metrics = metrics or Metrics()
        self.health = health or HealthState(metrics=self.metrics)
        self.health.set_model_loaded()
        self.stream = None
        self.app = self._build_app()

    # ------------------------------------------------------------ app
    def _build_app(self) -> faust.App:
        s = self.settings
        set_fetch_max_wait(s.fetch_max_wait_ms)
        app = _App(
            s.app_id, broker=s.kafka_url(), broker_credentials=faust_security(s),
            value_serializer="raw", key_serializer="raw", store="memory://",
            topic_partitions=self.partitions, topic_replication_factor=s.replication_factor,
            broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=s.heartbeat_interval_s,
            broker_rebalance_timeout=s.rebalance_timeout_s, broker_commit_interval=s.commit_interval_s,
            stream_wait_empty=False, web_enabled=False, consumer_auto_offset_reset="earliest",
            table_standby_replicas=0, producer_linger_ms=5, logging_config=None,
            datadir=faust_datadir(s.app_id),
        )
        # acks=False: Faust must never commit this topic's offsets itself (its
        # gap logic was seen to commit offsets nobody acknowledged); the worker
        # commits each partition's checkpoint watermark on its own.
        self.frames_topic = app.topic(s.input_topic, key_type=bytes, value_type=bytes,
                                      key_serializer="raw", value_serializer="raw", acks=False,
                                      maxsize=FRAMES_BUFFER_FETCHES)
        app.batch_topics = frozenset({s.input_topic})   # one event per partition fetch: streams/batch_consumer.py
        self.out_topics = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
                           for name in (s.segments_topic, s.aggregates_topic, s.calls_topic, s.dlq_topic)}
        self.state = app.Table("partition-state", default=None, partitions=self.partitions,
                               key_type=bytes, value_type=bytes)
        worker = self

        @app.agent(self.frames_topic, name="voicetone-frames")
        async def frames(stream):
            worker.stream = stream
            async for events in stream.noack().take_events(INGEST_FETCHES_MAX, s.ingest_batch_ms / 1000):
                await worker.on_events(events)

        app.task(self._inference_loop)
        app.timer(1.0)(self._housekeeping)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        return app

    # ------------------------------------------------------------ ingest
    def _latest_checkpoint(self, partition: int, timeout_s: float = 30.0) -> Optional[bytes]:
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

        topic = self.state.changelog_topic.get_topic_name()
        fence = uuid.uuid4().hex.encode()
        producer = Producer(client_config(self.settings))
        producer.produce(topic, key=FENCE_KEY, value=fence, partition=partition)
        if producer.flush(timeout_s) > 0:
            raise TimeoutError(f"could not append a fence to {topic}[{partition}]")
        c = self._side_consumer()
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            start = max(lo, hi - 64)  # an under-reported end only makes us read more
            key = self._state_key(partition)
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

    def _side_consumer(self, group_id: Optional[str] = None):
        """A plain consumer that never joins the group, for reads the Faust consumer must not do."""
        from confluent_kafka import Consumer

        return Consumer({**client_config(self.settings), "group.id": group_id or f"{self.settings.app_id}-side",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})

    def _start_without_checkpoint(self, partition: int) -> int:
        """Where a partition with no checkpoint starts: the group's committed
        offset if there is one (the changelog was lost), else its first offset.
        Not where Faust's consumer happens to start: it was seen to start a
        newly assigned, never committed partition at its end."""
        from confluent_kafka import TopicPartition

        tp = TopicPartition(self.settings.input_topic, partition)
        c = self._side_consumer(group_id=self.settings.app_id)
        try:
            [committed] = c.committed([tp], timeout=15)
            if committed.offset >= 0:
                return committed.offset
            lo, _ = c.get_watermark_offsets(tp, timeout=15)
            return lo
        finally:
            c.close()

    def _read_input(self, partition: int, start: int, end: int, max_records: int = 2000,
                    timeout_s: float = 30.0) -> list[tuple]:
        """Input frames of `partition` from offset `start` up to `end` (exclusive),
        at most `max_records` of them, as (offset, key, value).

        Reaching `end` is known by position, so offsets that hold no record
        (transaction markers) do not make it wait forever."""
        from confluent_kafka import TopicPartition

        c = self._side_consumer()
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

    async def _retrying(self, what: str, fn, *args):
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

    async def _restore(self, partition: int, first_offset: int) -> None:
        """Adopt the partition's newest checkpoint; processing goes on from its
        watermark, or, with no checkpoint, from the group's committed offset or
        the partition's first offset (never from `first_offset`, where Faust
        happened to start)."""
        raw = await self._retrying(f"partition {partition}: reading its checkpoint", self._latest_checkpoint,
                                   partition)
        state = orjson.loads(raw) if raw else None
        start = state.get("watermark") if state else None
        if state:
            self.processor.restore(partition, state, time.monotonic())
            log.info("partition %d: resumed from checkpoint (watermark %s, first offset delivered %d)",
                     partition, start, first_offset)
        if start is None:
            start = await self._retrying(f"partition {partition}: reading its committed offset",
                                         self._start_without_checkpoint, partition)
            if start > 0:
                log.warning("partition %d: no checkpoint; starting at offset %d", partition, start)
        self.next_offset[partition] = start
        self.restored.add(partition)

    @staticmethod
    def _state_key(partition: int) -> bytes:
        return f"p{partition}".encode()

    async def on_events(self, events) -> None:
        """Process each partition's frames in offset order, from the checkpoint on.

        Each event carries one partition fetch (``streams.batch_consumer``).
        Faust does not guarantee offset order: it starts a partition wherever its
        consumer stands (not always at our committed offset) and was seen to
        deliver a partition with a jump. Frames already processed are dropped;
        a jump ahead is filled by reading the missing offsets straight from
        Kafka, so no audio is skipped and no seek of Faust's consumer is needed.
        The frames that pass are ingested together, up to ``INGEST_BYTES_MAX`` at
        a time (``ingest_many``: in-order frames of a channel are decoded and
        windowed as one run; between chunks the model's queue bound applies); events of a
        partition this worker no longer owns (still in the take buffer after a
        rebalance) are dropped: the new owner processes them."""
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
                    await self._restore(p, rec.offset)
                expected = self.next_offset.get(p, rec.offset)
                if rec.offset < expected:
                    continue  # already processed (or covered by the checkpoint)
                if rec.offset > expected:
                    await self._ingest(batch)
                    await self._refetch(p, expected, rec.offset)
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

    def _owned_partitions(self) -> Optional[set[int]]:
        """The input partitions assigned to this worker now (None if the consumer cannot say)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return None
        topic = self.settings.input_topic
        return {tp.partition for tp in assignment if tp.topic == topic}

    async def _refetch(self, p: int, expected: int, offset: int) -> None:
        """Read the frames [expected, offset) that Faust skipped straight from Kafka, in order."""
        self.metrics.refetched_frames.inc(offset - expected)
        log.warning("partition %d: got offset %d, expected %d: reading the %d frames between from Kafka",
                    p, offset, expected, offset - expected)
        while p in self.restored and self.next_offset[p] < offset:
            start = self.next_offset[p]
            missing = await self._retrying(f"partition {p}: reading offsets {start}-{offset}",
                                           self._read_input, p, start, offset)
            if p not in self.restored:
                return  # revoked meanwhile: the new owner redoes it
            if not missing:
                break  # nothing but markers left before offset
            self.next_offset[p] = missing[-1][0] + 1
            await self._ingest([(value, key, p, o) for o, key, value in missing])

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
                self._send(t, key, orjson.dumps(ev))
        for partition, state, watermark in out.checkpoints:
            self._commit_checkpoint(partition, state, watermark)
        self.closed_since_trim += len(out.calls)

    def _commit_checkpoint(self, partition: int, state: dict, watermark: Optional[int]) -> None:
        """Queue the checkpoint; `_commit_watermarks` writes it once every
        event published before it is in Kafka, then commits its watermark."""
        if partition not in self.restored:
            return  # revoked meanwhile
        self.to_commit[partition] = (orjson.dumps(state), watermark)

    def _send(self, topic, key: Optional[bytes], value: bytes) -> None:
        """Publish without waiting; the send is confirmed before the next commit."""
        self.unconfirmed.append((topic, key, value, topic.send_soon(key=key, value=value)))

    async def _confirm_sent(self, timeout_s: float = 30.0) -> bool:
        """Wait until Kafka has acknowledged everything sent so far; re-send
        what failed. True when all of it is confirmed.

        Faust's own `producer.flush()` is not enough: its buffer flush gives
        up after 0.1 s without progress, so on a busy machine it returned with
        events and checkpoints still queued, and the offset commit that
        followed went out before them (a crash then lost those events and
        left an older checkpoint behind a newer committed offset)."""
        batch, self.unconfirmed = self.unconfirmed, []
        if not batch:
            return True
        await asyncio.wait([fut for *_, fut in batch], timeout=timeout_s)
        ok = True
        for topic, key, value, fut in batch:
            if not fut.done():
                self.unconfirmed.append((topic, key, value, fut))
                ok = False
            elif fut.exception() is not None:
                self.metrics.publish_errors.inc()
                log.warning("publishing to %s failed (%s); sending it again", topic.get_topic_name(),
                            fut.exception())
                self._send(topic, key, value)
                ok = False
        return ok

    async def _commit_watermarks(self) -> None:
        """Write each partition's newest checkpoint and commit its watermark.

        Order matters: (1) every event published before the checkpoint is
        confirmed by Kafka; (2) the checkpoint is written and confirmed;
        (3) its watermark is committed. So any checkpoint a new owner can read
        (the newest, which may be newer than the committed offset if we die
        before (3)) has all its events published, and the committed offset
        never passes audio that the newest checkpoint still needs."""
        if not await self._confirm_sent() or not self.to_commit:
            return  # not everything is in Kafka yet: the checkpoints wait for the next tick
        pending, self.to_commit = self.to_commit, {}
        owned = {tp.partition: tp for tp in self.app.consumer.assignment()
                 if tp.topic == self.settings.input_topic and tp.partition in self.restored}
        pending = {p: v for p, v in pending.items() if p in owned}
        if not pending:
            return
        changelog = self.state.changelog_topic
        for partition, (value, _) in pending.items():
            key = self._state_key(partition)
            self.state.data[key] = value
            self.unconfirmed.append((changelog, key, value, self.state.send_changelog(partition, key, value)))
        if not await self._confirm_sent():
            for p, v in pending.items():  # retried at the next tick unless a newer one came meanwhile
                self.to_commit.setdefault(p, v)
            return
        offsets = {owned[p]: watermark for p, (_, watermark) in pending.items() if watermark is not None}
        if offsets:
            await self.app.consumer._commit(offsets)
            log.debug("committed checkpoint watermarks %s", {tp.partition: o for tp, o in offsets.items()})

    # ------------------------------------------------------------ inference
    async def _run_batch(self, batch) -> tuple[np.ndarray, np.ndarray, list]:
        """Run one batch; on failure split it, and skip single windows that fail. The gate and any
        resampling run here on the loop, only `predict` in a model thread (`streams.pipeline.ModelBatch`);
        8 kHz windows go to the model as they are, and a model on a GPU resamples other rates itself."""
        loop = asyncio.get_running_loop()
        rates = [self.processor.rate_of(w) for w in batch]
        started = time.perf_counter()
        try:
            cut = model_batch_for(self.model, self.gate, batch, rates)
            answers, cpu_s = await loop.run_in_executor(self.executor, _predict_timed, self.model, cut)
            self.metrics.inference_cpu_seconds.inc(cpu_s)
            speech, sentiment, skipped = cut.merge(answers)
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
        if skipped:
            self.metrics.windows_silent.inc(skipped)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.windows.inc(len(batch))
        return speech, sentiment, batch

    async def _inference_loop(self) -> None:
        """Cut batches and run up to `inference_workers` of them at once; apply their results in the
        order the batches were cut (a channel's windows are cut in order, so its segments and running
        aggregate stay in window order whichever call finishes first)."""
        running: deque[asyncio.Future] = deque()
        try:
            while True:
                while running and running[0].done():
                    self._apply(*running.popleft().result())
                workers = self.settings.inference_workers
                waiters: list[asyncio.Future] = [f for f in running if not f.done()]
                # finished calls behind a slower one wait to be applied; at most `workers` of them
                free = min(workers - len(waiters), 2 * workers - len(running))
                batches = self.batcher.take_ready(time.monotonic(), free) if free > 0 else []
                for batch in batches:
                    running.append(asyncio.ensure_future(self._run_batch(batch)))
                if batches:
                    continue
                timeout = None
                if free > 0:   # room for another batch: also wake for new windows or the oldest's wait bound
                    deadline = self.batcher.next_deadline()
                    self.wakeup.clear()
                    waiters.append(asyncio.ensure_future(self.wakeup.wait()))
                    timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if free > 0:
                        waiters[-1].cancel()
        finally:
            for fut in running:   # stopping: nobody will apply them (the next owner redoes their windows)
                fut.cancel()

    def _apply(self, speech: np.ndarray, sentiment: np.ndarray, windows: list) -> None:
        out = self.processor.apply_results(windows, speech, sentiment)
        self._publish(out, time.monotonic())
        self.metrics.segments_published.inc(len(out.segments))
        for ts in out.audio_end_ts_ms:
            self.metrics.observe_publish_latency(ts)
        self.drained.set()

    # ------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        now = time.monotonic()
        lags = self._consumer_lag()
        self._expire_idle(now, lags)
        for p in list(self.restored):
            if now - self.last_checkpoint.get(p, 0.0) >= self.settings.commit_interval_s / 2:
                self.last_checkpoint[p] = now
                self._publish(self.processor.request_checkpoint(p), now)
        self.metrics.active_channels.set(self.processor.open_channels)
        self.metrics.unconfirmed_sends.set(len(self.unconfirmed))
        if self.closed_since_trim >= TRIM_AFTER_CLOSED or (self.closed_since_trim and not self.processor.open_channels):
            self.closed_since_trim = 0
            release_free_memory()  # else RSS stays at the peak of a burst of calls
        self.metrics.set_consumer_lag(lags)
        self.health.mark_progress()
        try:
            await self._commit_watermarks()
        except Exception as exc:  # retried at the next tick: commits are idempotent
            log.warning("committing watermarks failed: %s", exc)

    def _expire_idle(self, now: float, lags: dict[int, int]) -> None:
        """End idle channels, but only on partitions that are caught up: while frames wait in Kafka (a slow
        broker, a worker stalled on its producer, catching up after a restart) a channel's silence on this
        clock is the backlog's, and ending it would dead-letter the rest of its call as frames after its end
        (seen in a 30-minute soak with the embedded broker overloaded: 18,000 frames)."""
        self._publish(self.processor.expire_idle(now, hold={p for p, lag in lags.items() if lag > 0}), now)

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
                self.next_offset.pop(tp.partition, None)
        self.health.set_revoked()

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        # Nothing to seek here: each partition's first event restores its
        # checkpoint and seeks to its watermark if the consumer started past it.
        self.health.set_assignment([tp.partition for tp in assigned if tp.topic == self.settings.input_topic])
