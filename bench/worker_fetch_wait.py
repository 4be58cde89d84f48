"""`voicetone worker` with a shorter Kafka fetch wait: an experiment, not a fix.

Faust creates its aiokafka group consumer with a hard-coded
``fetch_max_wait_ms=1500`` (faust/transport/drivers/aiokafka.py). The embedded
broker (tansu) holds a fetch for that long when no data is waiting, so at low
rates frames reach the worker up to 1.5 s late (about 450 ms median delivery
delay measured). This launcher replaces that one argument
(BENCH_FETCH_MAX_WAIT_MS, default 50) and runs the unchanged worker, so
bench_e2e can show what the fix would buy (`--target voicetone-fetch`).
"""

from __future__ import annotations

import os
import sys

import faust.transport.drivers.aiokafka as driver

_Consumer = driver.aiokafka.AIOKafkaConsumer


class _ShortFetchConsumer(_Consumer):
    def __init__(self, *args, **kwargs):
        if "fetch_max_wait_ms" in kwargs:
            kwargs["fetch_max_wait_ms"] = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "50"))
        super().__init__(*args, **kwargs)


driver.aiokafka.AIOKafkaConsumer = _ShortFetchConsumer

if __name__ == "__main__":
    from voicetone.cli import main

    sys.exit(main(["worker", *sys.argv[1:]]))
