"""Sentiment timeline picture of a call, from segment and aggregate events.

One panel per (call, channel): speech probability and P(positive / neutral /
negative) per window at the window's mid time, with colour bands under it for
the ``current`` and ``overall`` aggregate labels (a band starts when the label
was published, i.e. at the end of the audio it covers). Uses matplotlib's
object API with the Agg canvas, so it never touches pyplot's global backend.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import sys
import time
from pathlib import Path
from typing import Iterable

import orjson

log = logging.getLogger("voicetone.report")

LABEL_COLORS = {"positive": "#2ca02c", "neutral": "#8c8c8c", "negative": "#d62728", "no_speech": "#e6e6e6"}
EVENT_TYPES = ("segment", "aggregate", "call")


def load_events(path: str | Path) -> list[dict]:
    """Read a JSONL file of events (``analyze --json`` / ``watch --json`` output).

    Lines that are not JSON objects (blank lines, log lines mixed into a capture)
    are skipped; a line that starts like an object but is malformed raises.
    """
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = orjson.loads(line)
        if obj.get("type") in EVENT_TYPES:
            events.append(obj)
    return events


def _latest_by_index(events: Iterable[dict]) -> list[dict]:
    """De-duplicate redelivered events (same segment_index) and sort by it."""
    by_index = {e["segment_index"]: e for e in events}
    return [by_index[i] for i in sorted(by_index)]


def _group(events: list[dict]) -> dict[tuple[str, str], dict[str, list[dict]]]:
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for e in events:
        if e.get("type") not in ("segment", "aggregate"):
            continue
        g = groups.setdefault((e["call_id"], e["channel"]), {"segment": [], "aggregate": []})
        g[e["type"]].append(e)
    return {k: {t: _latest_by_index(v) for t, v in g.items()} for k, g in sorted(groups.items())}


def _bands(ax, aggregates: list[dict], which: str, end_s: float) -> None:
    times = [a[which]["end_ms"] / 1000 for a in aggregates]
    for i, agg in enumerate(aggregates):
        start = times[i]
        stop = times[i + 1] if i + 1 < len(times) else max(end_s, start)
        if stop > start:
            ax.broken_barh([(start, stop - start)], (0, 1), color=LABEL_COLORS[agg[which]["label"]])
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(which, rotation=0, ha="right", va="center", fontsize=8)


def _figure(events: list[dict]):
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = _group(events)
    if not groups:
        raise ValueError("no segment or aggregate events to draw")
    end_s = max(
        max([s["end_ms"] for s in g["segment"]] + [a["overall"]["end_ms"] for a in g["aggregate"]]) / 1000
        for g in groups.values())
    fig = Figure(figsize=(11, 3.2 * len(groups)), layout="constrained")
    outer = fig.add_gridspec(len(groups) * 3, 1, height_ratios=[6, 0.6, 0.6] * len(groups))
    first = None
    for n, ((call_id, channel), g) in enumerate(groups.items()):
        ax = fig.add_subplot(outer[3 * n], sharex=first)
        first = first or ax
        segs = g["segment"]
        x = [(s["start_ms"] + s["end_ms"]) / 2000 for s in segs]
        ax.plot(x, [s["speech_probability"] for s in segs], color="black", ls="--", lw=1, label="speech")
        for label in ("positive", "neutral", "negative"):
            ax.plot(x, [s["sentiment"][label] for s in segs], color=LABEL_COLORS[label], marker=".", label=label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
        ax.set_title(f"{call_id} / {channel}", loc="left", fontsize=10)
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3)
        if n == 0:
            ax.legend(loc="upper right", ncols=4, fontsize=8)
        for k, which in enumerate(("current", "overall"), start=1):
            band = fig.add_subplot(outer[3 * n + k], sharex=first)
            _bands(band, g["aggregate"], which, end_s)
            band.tick_params(labelbottom=(which == "overall" and n == len(groups) - 1))
    first.set_xlim(0, end_s)
    fig.axes[-1].set_xlabel("time in channel (s)")
    fig.legend(handles=[Patch(color=c, label=lab) for lab, c in LABEL_COLORS.items()],
               loc="outside lower center", ncols=4, fontsize=8, title="aggregate label bands")
    return fig


def render_timeline(events: list[dict], out_path: str | Path) -> Path:
    """Write the timeline as PNG, or as a self-contained HTML page (PNG inlined) for a .html suffix."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(out_path)
    fig = _figure(events)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".html", ".htm"):
        calls = sorted({e["call_id"] for e in events if "call_id" in e})
        title = html.escape("voicetone timeline: " + ", ".join(calls))
        data = base64.b64encode(buf.getvalue()).decode()
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><img alt='sentiment timeline' src='data:image/png;base64,{data}'></body></html>\n",
            encoding="utf-8")
    else:
        out.write_bytes(buf.getvalue())
    return out


def fetch_events(call_id: str, settings, idle_s: float = 15.0, connect_timeout_s: float = 10.0) -> list[dict]:
    """Read the segments and aggregates topics from the beginning, keeping one call's events.

    Stops when every partition reaches the end it had when we started (a
    snapshot, so a live call does not keep us reading forever) *and* a poll
    comes back empty, so that what the client has already fetched is drained
    too (the embedded broker was seen to report a high watermark of 1 for a
    partition holding 4 records: stopping at the watermark read 1 of them).
    The end is judged by the consumer's position, so that offsets with no
    message (transaction markers, compaction) count as read. ``idle_s`` with no progress is only a safety
    net against a broker that stops answering; one that does not answer at first raises `BrokerUnavailable`
    after `connect_timeout_s`.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from streams.kafka_client import client_config, connect

    connect(settings, connect_timeout_s)
    consumer = Consumer({**client_config(settings), "group.id": f"voicetone-report-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        topics = [settings.segments_topic, settings.aggregates_topic]
        meta = consumer.list_topics(timeout=10)
        assignment, remaining = [], {}
        for topic in topics:
            if topic not in meta.topics:
                continue
            for p in meta.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                    remaining[(topic, p)] = high
        if not assignment:
            return []
        consumer.assign(assignment)
        events, last = [], time.monotonic()
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                for tp in consumer.position([TopicPartition(t, p) for t, p in remaining]):
                    if tp.offset >= remaining[(tp.topic, tp.partition)]:  # an unknown position is negative
                        remaining.pop((tp.topic, tp.partition))
                        last = time.monotonic()
                if not remaining:
                    break
                continue
            last = time.monotonic()
            if msg.key() is not None and msg.key().decode("utf-8", "replace") != call_id:
                continue
            event = orjson.loads(msg.value())
            if event.get("call_id") == call_id:
                events.append(event)
        if remaining:
            log.warning("report: no progress for %.0f s; %d partition(s) not read to their end: %s", idle_s,
                        len(remaining), ", ".join(f"{t}[{p}]" for t, p in sorted(remaining)))
        return events
    finally:
        consumer.close()


def _run(args: argparse.Namespace) -> int:
    if args.events:
        events = [e for e in load_events(args.events) if e.get("call_id") == args.call_id]
    else:
        from streams.settings import Settings

        from voicetone.cli import tool_logging

        settings = Settings(**({"broker": args.broker} if args.broker else {}))
        tool_logging(settings)
        events = fetch_events(args.call_id, settings, connect_timeout_s=args.connect_timeout)
    if not any(e["type"] in ("segment", "aggregate") for e in events):
        print(f"no segment or aggregate events for call {args.call_id!r}", file=sys.stderr)
        return 1
    out = render_timeline(events, args.out or f"{args.call_id}-timeline.png")
    print(out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Mount ``voicetone report CALL_ID [--events FILE | --broker URL] [--out FILE]``."""
    p = subparsers.add_parser("report", help="draw a call's sentiment timeline (PNG or HTML)",
                              description="Draw a call's sentiment timeline from a JSONL event file or the broker.")
    p.add_argument("call_id", metavar="CALL_ID")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--events", metavar="FILE", help="JSONL events, as printed by analyze/watch --json")
    src.add_argument("--broker", metavar="URL", help="read the segments/aggregates topics from the beginning "
                                                      "(default broker: VOICETONE_BROKER)")
    p.add_argument("--out", metavar="FILE", help="output .png or .html (default: CALL_ID-timeline.png)")
    from voicetone.cli import add_connect_timeout
    add_connect_timeout(p)
    p.set_defaults(func=_run)
    return p
