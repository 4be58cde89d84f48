"""Supervisor alert: flag a channel whose recent tone has stayed negative.

Reads aggregate events from ``sentiment.aggregates`` and fires one alert when a
channel's ``current`` label (the last 30 s of speech) is ``negative`` for N
aggregate events in a row; it re-arms once the label is anything else, so a
long angry stretch pages the supervisor once, not every 2.5 s.

    python -m examples.supervisor_alert --broker localhost:9092 [--n 3] [--alerts-topic supervisor.alerts]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Optional

import orjson


@dataclass
class _ChannelState:
    streak: int = 0
    fired: bool = False
    last_index: int = -1


class NegativeStreakDetector:
    """Pure logic, no Kafka: feed it event dicts, get back alert dicts."""

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self._channels: dict[tuple[str, str], _ChannelState] = {}

    def feed(self, event: dict) -> Optional[dict]:
        """Return an alert the first time the streak reaches n, else None.

        Redelivered aggregates (segment_index not newer than the last one seen)
        are ignored so at-least-once delivery cannot fake a streak. A ``call``
        event ends the channel and frees its state.
        """
        key = (event.get("call_id"), event.get("channel"))
        kind = event.get("type")
        if kind == "call":
            self._channels.pop(key, None)
            return None
        if kind != "aggregate":
            return None
        state = self._channels.setdefault(key, _ChannelState())
        index = event["segment_index"]
        if index <= state.last_index:
            return None
        state.last_index = index
        current = event["current"]
        if current["label"] != "negative":
            state.streak, state.fired = 0, False
            return None
        state.streak += 1
        if state.streak < self.n or state.fired:
            return None
        state.fired = True
        return {
            "type": "alert",
            "alert": "negative_streak",
            "call_id": event["call_id"],
            "channel": event["channel"],
            "streak": state.streak,
            "segment_index": index,
            "start_ms": current["start_ms"],
            "end_ms": current["end_ms"],
            "negative": current["sentiment"]["negative"],
            "source_event_id": event.get("event_id"),
            "emitted_at_ms": int(time.time() * 1000),
        }


def main(argv: Optional[list[str]] = None) -> int:
    from confluent_kafka import Consumer, Producer

    from examples._consume import run_loop
    from streams.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", default=None, help="bootstrap servers (default: VOICETONE_BROKER)")
    p.add_argument("--topic", default=None, help="aggregates topic (default: the worker's)")
    p.add_argument("--n", type=int, default=3, help="negative aggregates in a row before alerting")
    p.add_argument("--alerts-topic", default=None, help="also produce alerts to this topic")
    p.add_argument("--group", default="voicetone-supervisor-alert")
    args = p.parse_args(argv)

    settings = Settings(**({"broker": args.broker} if args.broker else {}))
    conf = settings.confluent_config()
    consumer = Consumer({**conf, "group.id": args.group, "auto.offset.reset": "latest"})
    consumer.subscribe([args.topic or settings.aggregates_topic, settings.calls_topic])
    producer = Producer(conf) if args.alerts_topic else None
    detector = NegativeStreakDetector(args.n)
    def handle(msg, event) -> None:
        alert = detector.feed(event)
        if alert is None:
            return
        line = orjson.dumps(alert)
        print(line.decode(), flush=True)
        if producer is not None:
            producer.produce(args.alerts_topic, key=alert["call_id"].encode(), value=line)
            producer.poll(0)

    run_loop(consumer, handle, producer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
