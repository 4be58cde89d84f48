"""Ingest throughput: audio frames/s through the worker's ingest path, and against the broker.

Two parts, for 20 ms, 100 ms and 500 ms frames (8 kHz pcm_s16le, the bundled
sample calls looped over many concurrent channels):

* in process, no Kafka: ``decode_frame`` alone, then the worker's ingest path
  (decode, validation, per-channel buffer, window assembly: what the Faust agent
  does with consumed messages, minus the model): ``StreamProcessor.ingest_many``
  on batches of up to 2000 frames (the agent's take buffer, full when it reads a
  backlog), on batches of one frame per channel (what a worker at real time
  gets: live, a fetch holds about one frame per channel), and for reference
  ``StreamProcessor.ingest`` one frame at a time;
* on the embedded broker (tansu), one pre-filled topic per frame size, read by
  (a) a plain confluent-kafka consumer that only reads the messages (the
  ceiling), and (b) a confluent-kafka consumer feeding each batch it reads into
  ``StreamProcessor.ingest_many``. The ratio b/a has a target of >= 50% at
  100 ms frames. For reference, the same plain read with aiokafka, the
  client Faust (and so the worker) consumes with.

"audio x real time" = seconds of audio taken per second of wall time: the
number of live channels that ingest alone could keep up with.

    python -m bench.bench_ingest [--seconds 60] [--channels 100] [--frame-ms 20,100,500]
                                 [--no-broker] [--partitions 8]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from rich.console import Console
from rich.table import Table

from bench._common import create_topics, exit_on_sigterm, load_average, machine, synthetic_frames
from schemas.frames import decode_frame
from streams.kafka_client import produce
from streams.pipeline import StreamProcessor
from streams.settings import ProcessorConfig

RATE = 8000


def frames_for(frame_ms: int, seconds: float, channels: int) -> list[tuple[bytes, bytes]]:
    return synthetic_frames(channels, max(1, int(seconds * 1000 / frame_ms)), frame_ms, RATE)


def processor() -> StreamProcessor:
    return StreamProcessor(ProcessorConfig(), "bench", 16000)


BATCH = 2000  # frames ingested together (the agent takes up to 64 partition fetches at once, ~this many when behind)


def _ingest_batches(messages, batch: int) -> tuple[float, int]:
    """Seconds and windows of one fresh processor ingesting ``messages`` ``batch`` at a time."""
    proc = processor()
    t0 = time.perf_counter()
    windows = sum(len(proc.ingest_many(messages[i:i + batch], 0.0).windows) for i in range(0, len(messages), batch))
    return time.perf_counter() - t0, windows


def bench_in_process(frames, channels: int, repeats: int = 1) -> dict:
    t0 = time.perf_counter()
    for key, value in frames:
        decode_frame(value, key)
    t_decode = time.perf_counter() - t0
    messages = [(value, key, 0, offset) for offset, (key, value) in enumerate(frames)]
    best, best_live, best_one = float("inf"), float("inf"), float("inf")
    windows = {}
    for _ in range(repeats):
        t, windows["backlog"] = _ingest_batches(messages, BATCH)
        best = min(best, t)
        t, windows["live"] = _ingest_batches(messages, channels)
        best_live = min(best_live, t)
        proc = processor()
        t0 = time.perf_counter()
        windows["one by one"] = sum(len(proc.ingest(value, key, 0, offset, 0.0).windows)
                                    for value, key, _, offset in messages)
        best_one = min(best_one, time.perf_counter() - t0)
    if len(set(windows.values())) != 1:
        raise RuntimeError(f"the ingest paths cut different numbers of windows: {windows}")
    return {"decode_fps": len(frames) / t_decode, "ingest_fps": len(frames) / best,
            "ingest_live_batches_fps": len(frames) / best_live,
            "ingest_one_by_one_fps": len(frames) / best_one, "windows": windows["backlog"]}


def prefill(broker: str, topic: str, frames, partitions: int) -> None:
    from confluent_kafka import Producer

    create_topics(broker, [topic], partitions)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 500_000, "compression.type": "none"})
    for key, value in frames:
        produce(p, topic, key, value)
        p.poll(0)
    left = p.flush(60)
    if left:
        raise RuntimeError(f"{left} frames not delivered to {topic}")


def _assignment(broker: str, topic: str):
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition
    from confluent_kafka.admin import AdminClient

    parts = AdminClient({"bootstrap.servers": broker}).list_topics(topic, timeout=20).topics[topic].partitions
    return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)]


def consume(broker: str, topic: str, expected: int, ingest: bool, timeout: float = 120.0) -> dict:
    """Read `expected` messages from the start of every partition (explicit
    assignment: no group join, no prefetch during one). frames/s from the
    first message to the last."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker, "group.id": f"bench-ingest-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.max.messages.kbytes": 262_144})
    proc = processor() if ingest else None
    n, nbytes, start = 0, 0, None
    c.assign(_assignment(broker, topic))
    deadline = time.monotonic() + timeout
    try:
        while n < expected and time.monotonic() < deadline:
            msgs = c.consume(num_messages=BATCH, timeout=0.5)
            if start is None and msgs:
                start = time.perf_counter()
            if proc is None:
                for m in msgs:
                    if m.error() is None:
                        nbytes += len(m.value())
                        n += 1
            else:
                batch = [(m.value(), m.key(), m.partition(), m.offset()) for m in msgs if m.error() is None]
                proc.ingest_many(batch, time.monotonic())
                n += len(batch)
        elapsed = time.perf_counter() - start
    finally:
        c.close()
    if n < expected:
        raise RuntimeError(f"read {n} of {expected} messages from {topic} in {timeout:.0f} s")
    return {"fps": n / elapsed, "messages": n}


def consume_aiokafka(broker: str, topic: str, expected: int, timeout: float = 120.0) -> dict:
    """The same plain read with aiokafka, the client under Faust (the worker's real ceiling)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict:
        c = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None,
                             max_partition_fetch_bytes=10_485_760, fetch_max_bytes=52_428_800)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
            if not tps:
                await c._client.force_metadata_update()
                tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            n, start = 0, None
            deadline = time.monotonic() + timeout
            while n < expected and time.monotonic() < deadline:
                batches = await c.getmany(timeout_ms=500, max_records=2000)
                if start is None and batches:
                    start = time.perf_counter()
                for records in batches.values():
                    for r in records:
                        n += 1 if r.value is not None else 0
            elapsed = time.perf_counter() - start
        finally:
            await c.stop()
        if n < expected:
            raise RuntimeError(f"aiokafka read {n} of {expected} messages from {topic}")
        return {"fps": n / elapsed}

    return asyncio.run(run())


def main(argv=None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per channel (default 60)")
    p.add_argument("--channels", type=int, default=100, help="concurrent channels (default 100)")
    p.add_argument("--frame-ms", default="20,100,500")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="repeats of each measurement, alternated (best kept)")
    p.add_argument("--no-broker", action="store_true", help="in-process part only")
    p.add_argument("--broker", help="use this broker instead of starting the embedded one")
    args = p.parse_args(argv)
    console = Console(stderr=True, width=150)
    sizes = [int(x) for x in args.frame_ms.split(",")]
    load_before = load_average()
    results = []
    broker = None
    try:
        url = args.broker
        if not args.no_broker and url is None:
            from voicetone.broker import EmbeddedBroker
            broker = EmbeddedBroker().start()
            url = broker.url
            console.print(f"embedded broker on {url}")
        for ms in sizes:
            frames = frames_for(ms, args.seconds, args.channels)
            audio_s = len(frames) * ms / 1000
            r = {"frame_ms": ms, "frames": len(frames), "bytes_per_frame": len(frames[0][1])}
            r.update(bench_in_process(frames, args.channels, args.repeats))
            if url:
                topic = f"bench.ingest.{ms}ms.{uuid.uuid4().hex[:6]}"
                t0 = time.perf_counter()
                prefill(url, topic, frames, args.partitions)
                r["prefill_fps"] = len(frames) / (time.perf_counter() - t0)
                # alternated and repeated, best kept: one read is at the mercy of a broker hiccup
                plain, ingest = [], []
                for _ in range(args.repeats):
                    plain.append(consume(url, topic, len(frames), ingest=False)["fps"])
                    ingest.append(consume(url, topic, len(frames), ingest=True)["fps"])
                r["plain_consumer_fps"], r["consumer_ingest_fps"] = max(plain), max(ingest)
                r["plain_consumer_runs_fps"], r["consumer_ingest_runs_fps"] = plain, ingest
                r["aiokafka_plain_fps"] = consume_aiokafka(url, topic, len(frames))["fps"]
                r["ratio_vs_plain"] = r["consumer_ingest_fps"] / r["plain_consumer_fps"]
            r["ingest_audio_x_realtime"] = r["ingest_fps"] * ms / 1000
            results.append(r)
            console.print(f"{ms} ms frames done ({audio_s:.0f} s of audio)")
    finally:
        if broker is not None:
            broker.stop()
    t = Table(title=f"ingest throughput, frames/s (8 kHz pcm_s16le, {args.channels} channels; "
                    f"load avg {load_before} on {machine()['cpus']} CPUs)")
    cols = ["frame", "bytes", "decode only", "ingest (in process)", "1 frame/channel a call", "one by one",
            "audio x real time"]
    if not args.no_broker:
        cols += ["plain consumer", "consumer + ingest", "ratio", "aiokafka plain"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in results:
        row = [f"{r['frame_ms']} ms", str(r["bytes_per_frame"]), f"{r['decode_fps']:,.0f}", f"{r['ingest_fps']:,.0f}",
               f"{r['ingest_live_batches_fps']:,.0f}", f"{r['ingest_one_by_one_fps']:,.0f}", f"{r['ingest_audio_x_realtime']:,.0f}"]
        if "plain_consumer_fps" in r:
            row += [f"{r['plain_consumer_fps']:,.0f}", f"{r['consumer_ingest_fps']:,.0f}", f"{r['ratio_vs_plain']:.0%}",
                    f"{r['aiokafka_plain_fps']:,.0f}"]
        t.add_row(*row)
    console.print(t)
    console.print("target: consumer + ingest >= 50% of the plain consumer at 100 ms frames")
    print(json.dumps({"bench": "ingest", "machine": {**machine(), "loadavg_before": load_before},
                      "channels": args.channels, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
