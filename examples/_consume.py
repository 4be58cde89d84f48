"""The poll loop every example consumer shares."""

from __future__ import annotations

import sys
from typing import Callable

import orjson


def run_loop(consumer, handle: Callable[[object, dict], None], producer=None) -> None:
    """Poll until Ctrl-C; `handle(message, event)` gets each decoded JSON event.
    Kafka errors are reported and skipped; the consumer is closed and the
    producer (if any) flushed at the end."""
    try:
        while True:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                print(f"kafka error: {msg.error()}", file=sys.stderr)
                continue
            handle(msg, orjson.loads(msg.value()))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(5)
