"""The worker's Faust app: its topics, its checkpoint table, and the consumer settings it needs.

Frames are consumed with Faust's acknowledgement switched off for the input topic (the worker commits
each partition's offset itself: `streams.recovery`), one partition fetch per Faust event: Faust turns
every fetched record into a Message, and its fetcher then awaits
``wait_first(callback(message), suspend_flow.wait())`` for each one (two tasks, an ``asyncio.wait``, a
cancellation), the conductor decodes it into an Event and the stream hands it out: about 100 CPU-us per
frame, which bound one worker process to ~10,000 frames/s (bench/bench_drain.py). For the topics named
in ``batch_topics`` the consumer made by `batching_consumer` yields one Message per partition and fetch
instead, whose ``value`` is the fetch's list of aiokafka records (the ``raw`` codec passes it through
untouched) and whose ``offset`` is the last record's, so Faust's read-offset bookkeeping stays right.
Everything else -- group membership, flow control during a rebalance, the generation check, buffer
pressure, other topics (the state table's changelog) -- is Faust's own path, unchanged.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Optional

import faust
from faust.types import TP, Message

from streams.kafka_client import BrokerUnavailable, connect
from streams.metrics import HealthState
from streams.settings import Settings

log = logging.getLogger("voicetone.worker")

#: most partition fetches ingested together; the wait is a setting (``ingest_batch_ms``)
INGEST_FETCHES_MAX = 64
#: fetches the frames topic's stream buffers before Faust pauses fetching (each up to a partition's fetch size)
FRAMES_BUFFER_FETCHES = 32


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


class FaustApp(faust.App):
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


@dataclass
class WorkerTopics:
    """The topics and the table the worker uses."""

    frames: Any                 # the input topic, one event per partition fetch
    out: dict[str, Any]         # the output topics by name: segments, aggregates, calls, dead letters
    state: Any                  # the table whose changelog holds each partition's checkpoint


def build_app(settings: Settings, partitions: int) -> tuple[FaustApp, WorkerTopics]:
    """The worker's Faust app and its topics; the caller adds the agent, tasks and rebalance handlers."""
    s = settings
    set_fetch_max_wait(s.fetch_max_wait_ms)
    app = FaustApp(
        s.app_id, broker=s.kafka_url(), broker_credentials=faust_security(s),
        value_serializer="raw", key_serializer="raw", store="memory://",
        topic_partitions=partitions, topic_replication_factor=s.replication_factor,
        broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_rebalance_timeout=s.rebalance_timeout_s, broker_commit_interval=s.commit_interval_s,
        stream_wait_empty=False, web_enabled=False, consumer_auto_offset_reset="earliest",
        table_standby_replicas=0, producer_linger_ms=5, logging_config=None,
        datadir=faust_datadir(s.app_id),
    )
    # acks=False: Faust must never commit this topic's offsets itself (its
    # gap logic was seen to commit offsets nobody acknowledged); the worker
    # commits each partition's checkpoint watermark on its own.
    frames = app.topic(s.input_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", acks=False, maxsize=FRAMES_BUFFER_FETCHES)
    app.batch_topics = frozenset({s.input_topic})   # one event per partition fetch
    out = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
           for name in (s.segments_topic, s.aggregates_topic, s.calls_topic, s.dlq_topic)}
    state = app.Table("partition-state", default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    return app, WorkerTopics(frames, out, state)


def owned_partitions(consumer, topic: str) -> Optional[set[int]]:
    """The partitions of `topic` assigned to this worker now (None if the consumer cannot say)."""
    try:
        assignment = consumer.assignment()
    except Exception:
        return None
    return {tp.partition for tp in assignment if tp.topic == topic}


def consumer_lag(consumer, topic: str, next_offset: dict[int, int]) -> dict[int, int]:
    """Frames not yet processed per owned partition of `topic` (broker high water - next offset)."""
    lags = {}
    for tp in consumer.assignment():
        if tp.topic != topic or tp.partition not in next_offset:
            continue
        try:
            hw = consumer.highwater(tp)
        except Exception:  # not known yet
            continue
        if hw is not None:
            lags[tp.partition] = max(0, hw - next_offset[tp.partition])
    return lags
