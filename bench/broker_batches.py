"""Why the embedded broker falls behind in long runs: its fetch cost grows with the record *batches* it stores.

In 30-minute soaks the embedded tansu broker (memory storage) slows down after 12-20 minutes whatever
the frame size, while the worker idles at ~28% CPU. tansu keeps every produced
batch as its own stored object and never deletes one (no retention, no DeleteRecords), and a fetch costs
more the more batches a partition holds. This benchmark fills one partition in steps and times a fetch
of the last records at each step, twice: one record per batch (what a producer with a 5 ms linger sends
at ~100 frames/s per partition) and ``--per-batch`` records per batch (a longer linger). Same records,
same bytes; only the batch count differs.

    python -m bench.broker_batches [--records 200000] [--per-batch 20]

Consequence for the benchmarks: a soak must keep the stored batch count low (``bench_e2e.py
--linger-ms``), or it measures the test broker, not the worker. Apache Kafka (deploy/) stores batches
in segment files with an offset index and deletes them by retention; it has no such growth.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from bench._common import create_topics, exit_on_sigterm, machine
from voicetone.broker import EmbeddedBroker

VALUE = b"x" * 1600   # one 100 ms frame of 8 kHz 16-bit audio


def fetch_ms(url: str, topic: str, last: int, group: str) -> float:
    """Milliseconds to consume the partition's last ``last`` records."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": url, "group.id": group, "enable.auto.commit": False,
                  "log.connection.close": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, max(0, high - last))])
        t0, n = time.perf_counter(), 0
        while n < min(last, high):
            n += sum(1 for m in c.consume(500, 5) if not m.error())
        return (time.perf_counter() - t0) * 1000
    finally:
        c.close()


def fill(url: str, topic: str, per_batch: int, steps: list[int], last: int) -> list[dict]:
    """Produce up to each step's record count in batches of ``per_batch``; time a tail fetch at each."""
    from confluent_kafka import Producer

    create_topics(url, [topic], 1)
    p = Producer({"bootstrap.servers": url, "linger.ms": 1000 if per_batch > 1 else 0,
                  "batch.num.messages": per_batch, "acks": 1, "log.connection.close": False})
    rows, stored = [], 0
    for target in steps:
        t0 = time.perf_counter()
        while stored < target:
            p.produce(topic, VALUE)
            stored += 1
            if stored % 2000 == 0:
                p.flush()   # bounded queue; full batches of per_batch have gone out by now
        p.flush()
        rows.append({"records": stored, "batches": -(-stored // per_batch), "produce_s": time.perf_counter() - t0,
                     "fetch_ms": fetch_ms(url, topic, last, f"g-{topic}-{stored}")})
    return rows


def main(argv=None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--per-batch", type=int, default=20)
    p.add_argument("--last", type=int, default=2000, help="records fetched from the tail at each step")
    args = p.parse_args(argv)
    steps = sorted({max(args.last, args.records * k // 100) for k in (1, 10, 25, 50, 100)})
    console = Console(stderr=True)
    result = {"bench": "broker_batches", "machine": machine(), "args": vars(args)}
    with EmbeddedBroker() as broker:
        for label, per in (("one_per_batch", 1), ("many_per_batch", args.per_batch)):
            result[label] = fill(broker.url, f"t-{label}", per, steps, args.last)
            for r in result[label]:
                console.print(f"{label}: {r['records']} records in {r['batches']} batches: "
                              f"tail fetch {r['fetch_ms']:.0f} ms")
    one, many = result["one_per_batch"], result["many_per_batch"]
    table = Table(title=f"tansu (memory storage): fetching the last {args.last} records of one partition")
    for col in ("records stored", "fetch ms, 1 record/batch", f"fetch ms, {args.per_batch}/batch", "ratio"):
        table.add_column(col, justify="right")
    for a, b in zip(one, many):
        table.add_row(f"{a['records']:,}", f"{a['fetch_ms']:.0f}", f"{b['fetch_ms']:.0f}",
                      f"{a['fetch_ms'] / b['fetch_ms']:.1f}x")
    console.print(table)
    result["growth_one_per_batch"] = one[-1]["fetch_ms"] / one[0]["fetch_ms"]
    result["growth_many_per_batch"] = many[-1]["fetch_ms"] / many[0]["fetch_ms"]
    console.print(f"tail fetch, smallest to largest store: x{result['growth_one_per_batch']:.1f} with one record "
                  f"per batch, x{result['growth_many_per_batch']:.1f} with {args.per_batch}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
