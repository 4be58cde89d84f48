"""What the stream processor hands its caller: windows for the model, events to publish, checkpoints to
write; and the events themselves, built as the `schemas.events` models (the one definition of each event,
from which its JSON Schema is exported) with the values the pipeline computed."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from schemas.errors import FrameError
from schemas.events import AggregateEvent, CallEvent, DeadLetter, SegmentEvent, Sentiment, Summary, event_id, \
    make_dead_letter
from streams.aggregation import LABELS, NO_SPEECH, SPEECH_THRESHOLD, InvalidSegment
from streams.channels import ChannelState, Key
from streams.checkpoint import Checkpoint
from streams.settings import ProcessorConfig
from streams.windowing import Window


@dataclass
class Output:
    """What one call into the processor produced; the caller publishes it."""

    windows: list[Window] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    segments: list[SegmentEvent] = field(default_factory=list)
    aggregates: list[AggregateEvent] = field(default_factory=list)
    calls: list[CallEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    audio_end_ts_ms: list[int] = field(default_factory=list)  # wall time each segment's audio ended
    duplicates: int = 0
    gap_ms: int = 0

    def extend(self, other: "Output") -> None:
        for f in ("windows", "checkpoints", "segments", "aggregates", "calls", "dead_letters"):
            getattr(self, f).extend(getattr(other, f))
        self.duplicates += other.duplicates
        self.gap_ms += other.gap_ms


def _summary(s: dict) -> Summary:
    """`streams.aggregation.summary`'s dict (a fresh one) as the model."""
    s["sentiment"] = Sentiment.trusted(s["sentiment"])
    return Summary.trusted(s)


def segment_event(w: Window, sp: float, probs: np.ndarray, model_version: str, now_ms: int) -> SegmentEvent:
    total = float(probs.sum())
    p = [float(x) / total for x in probs]
    label = NO_SPEECH if sp < SPEECH_THRESHOLD else LABELS[int(np.argmax(p))]
    return SegmentEvent.trusted({
        "type": "segment", "v": 1, "event_id": event_id(w.call_id, w.channel, "segment", w.index),
        "call_id": w.call_id, "channel": w.channel, "segment_index": w.index,
        "start_ms": int(w.start_ms), "end_ms": int(w.end_ms), "speech_probability": sp,
        "sentiment": Sentiment.trusted(dict(zip(LABELS, p))), "label": label,
        "model_version": model_version, "emitted_at_ms": now_ms,
    })


def aggregate_event(w: Window, ch: ChannelState, model_version: str, now_ms: int) -> AggregateEvent:
    return AggregateEvent.trusted({
        "type": "aggregate", "v": 1, "event_id": event_id(w.call_id, w.channel, "aggregate", w.index),
        "call_id": w.call_id, "channel": w.channel, "segment_index": w.index,
        "current": _summary(ch.aggregate.current()), "overall": _summary(ch.aggregate.overall()),
        "model_version": model_version, "emitted_at_ms": now_ms,
        "audio_start_ts_ms": ch.ts_origin_ms, "meta": ch.meta,
    })


def call_event(ckey: Key, ch: ChannelState, model_version: str, now_ms: int) -> CallEvent:
    call_id, channel = ckey
    return CallEvent.trusted({
        "type": "call", "v": 1, "event_id": event_id(call_id, channel, "call", 0),
        "call_id": call_id, "channel": channel, "overall": _summary(ch.aggregate.overall()),
        "segments": ch.aggregate.segments, "duration_ms": int(ch.duration_ms),
        "ended_by": ch.ended_by or "end", "model_version": model_version, "emitted_at_ms": now_ms,
        "current": _summary(ch.aggregate.current()), "audio_start_ts_ms": ch.ts_origin_ms, "meta": ch.meta,
    })


def frame_dead_letter(err: FrameError, value: bytes, key: Optional[bytes], partition: int, offset: Optional[int],
                      config: ProcessorConfig, now_ms: int) -> DeadLetter:
    """A dead letter for a refused input frame, its value cut to ``dlq_max_value_bytes``."""
    cap = config.dlq_max_value_bytes
    if len(value) > cap:  # a multi-MB frame must not make a dead letter the broker refuses
        err = FrameError(err.reason, f"{err.detail} [value truncated: first {cap} of {len(value)} bytes kept]")
        value = value[:cap]
    return make_dead_letter(err, value, key, config.input_topic, partition, offset, now_ms)


def model_output_dead_letter(w: Window, err: InvalidSegment, input_topic: str, now_ms: int) -> DeadLetter:
    """A dead letter for a window the model gave no usable answer for: which call, channel and window lost
    its segment (the key is the call ID, as on the input topic)."""
    where = f"call {w.call_id!r} channel {w.channel!r} window {w.index} ({w.start_ms}-{w.end_ms} ms): "
    return DeadLetter.trusted({
        "type": "dead_letter", "v": 1, "reason": f"model_output_{err.reason}", "detail": (where + str(err))[:1000],
        "topic": input_topic, "partition": None, "offset": None,
        "key_b64": base64.b64encode(w.call_id.encode()).decode(), "value_b64": "", "received_at_ms": now_ms,
    })
