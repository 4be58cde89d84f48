"""`voicetone watch`: a readable live view of the sentiment topics."""

from __future__ import annotations

import time
import uuid
from typing import Callable, Optional

import orjson

from streams.settings import Settings

COLOURS = {"positive": "green", "neutral": "yellow", "negative": "red", "no_speech": "dim"}


def format_event(ev: dict) -> str:
    """One line of rich markup for an event."""
    who = f"[bold]{ev.get('call_id')}[/]/{ev.get('channel')}"
    if ev.get("type") == "segment":
        s = ev["sentiment"]
        lab = ev["label"]
        return (f"{who} seg {ev['segment_index']:>3} {ev['start_ms'] / 1000:6.1f}-{ev['end_ms'] / 1000:5.1f}s "
                f"speech {ev['speech_probability']:.2f}  pos {s['positive']:.2f} neu {s['neutral']:.2f} "
                f"neg {s['negative']:.2f}  [{COLOURS[lab]}]{lab}[/]")
    if ev.get("type") == "aggregate":
        c, o = ev["current"], ev["overall"]
        return (f"{who}   current [{COLOURS[c['label']]}]{c['label']}[/] ({c['active_speech_ms'] / 1000:.1f}s speech)"
                f"  overall [{COLOURS[o['label']]}]{o['label']}[/]")
    if ev.get("type") == "call":
        o = ev["overall"]
        return (f"{who} [reverse] call ended ({ev['ended_by']}) [/] {ev['duration_ms'] / 1000:.1f}s, "
                f"{ev['segments']} segments, overall [{COLOURS[o['label']]}]{o['label']}[/]")
    return f"{who} {ev.get('type')}: {ev.get('reason', '')} {ev.get('detail', '')}"


def consume_events(settings: Settings, on_event: Callable[[dict], bool], from_beginning: bool = False,
                   idle_exit_s: Optional[float] = None, call_id: Optional[str] = None,
                   topics: Optional[list[str]] = None,
                   should_stop: Optional[Callable[[], bool]] = None, group_id: Optional[str] = None,
                   connect_timeout_s: float = 10.0) -> None:
    """Call `on_event` for each event until it returns False or the idle limit passes. With ``group_id``
    the consumer joins that group and commits what it has handed over (a service resumes where it stopped);
    without, it reads alone and commits nothing.

    Raises `BrokerUnavailable` when the broker does not answer within `connect_timeout_s` at the start,
    or stays unreachable that long later."""
    from confluent_kafka import Consumer

    from streams.kafka_client import BrokerWatch, client_config, connect, describe

    connect(settings, connect_timeout_s)
    broker = BrokerWatch(settings.broker_list())
    consumer = Consumer({**client_config(settings, broker),
                         "group.id": group_id or f"voicetone-watch-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest" if from_beginning else "latest",
                         "enable.auto.commit": group_id is not None, "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 1000})
    consumer.subscribe(topics or [settings.segments_topic, settings.aggregates_topic, settings.calls_topic])
    last = time.monotonic()
    try:
        while True:
            if should_stop is not None and should_stop():
                return
            msg = consumer.poll(0.5)
            down = broker.all_down_since
            if down is not None and time.monotonic() - down > connect_timeout_s:
                try:   # still down? (no callback says a broker is back)
                    consumer.list_topics(timeout=min(5.0, connect_timeout_s))
                    broker.up()
                except Exception:
                    seen = broker.worst()
                    kind = seen[0] if seen is not None and seen[0] != "transport" else "refused"
                    raise describe(kind, settings.broker_list(), seen[1] if seen else "",
                                   connect_timeout_s) from None
            if msg is None or msg.error():
                if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    return
                continue
            last = time.monotonic()
            try:
                ev = orjson.loads(msg.value())
            except orjson.JSONDecodeError:
                continue
            if call_id and ev.get("call_id") != call_id:
                continue
            if on_event(ev) is False:
                return
    finally:
        consumer.close()


def watch(settings: Settings, call_id: Optional[str] = None, as_json: bool = False, from_beginning: bool = False,
          idle_exit_s: Optional[float] = None, chime=None, connect_timeout_s: float = 10.0) -> int:
    """Print events as they arrive; with ``chime`` (a ``ChimeConfig``) the Chime notifications they make,
    as EventBridge JSON lines."""
    if chime is not None:
        from voicetone.chime import ChimeBridge, stream_sink

        bridge, write = ChimeBridge(chime), stream_sink("stdout")

        def notify(ev: dict) -> bool:
            for note in bridge.feed(ev):
                write(note)
            return True

        consume_events(settings, notify, from_beginning, idle_exit_s, call_id,
                       topics=[settings.aggregates_topic, settings.calls_topic], connect_timeout_s=connect_timeout_s)
        return 0
    from rich.console import Console

    console = Console(highlight=False)

    def show(ev: dict) -> bool:
        if as_json:
            print(orjson.dumps(ev).decode(), flush=True)
        else:
            console.print(format_event(ev))
        return True

    consume_events(settings, show, from_beginning, idle_exit_s, call_id, connect_timeout_s=connect_timeout_s)
    return 0
