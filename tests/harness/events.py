"""Event dicts in the contract's shapes (CONTRACT.md, "Events"), for tests that need no model or broker."""

from __future__ import annotations

HOP_MS = 2500
WINDOW_MS = 5000

_PROBS = {
    "positive": {"positive": 0.7, "neutral": 0.2, "negative": 0.1},
    "neutral": {"positive": 0.15, "neutral": 0.7, "negative": 0.15},
    "negative": {"positive": 0.05, "neutral": 0.15, "negative": 0.8},
    "no_speech": {"positive": 1 / 3, "neutral": 1 / 3, "negative": 1 / 3},
}


def summary(label: str, start_ms: int, end_ms: int, active_ms: int | None = None) -> dict:
    return {
        "start_ms": start_ms, "end_ms": end_ms,
        "active_speech_ms": end_ms - start_ms if active_ms is None else active_ms,
        "sentiment": dict(_PROBS[label]), "label": label,
    }


def segment(call_id: str, channel: str, index: int, label: str, speech: float = 0.9) -> dict:
    start = index * HOP_MS
    return {
        "type": "segment", "v": 1, "event_id": f"{call_id}:{channel}:segment:{index}",
        "call_id": call_id, "channel": channel, "segment_index": index,
        "start_ms": start, "end_ms": start + WINDOW_MS, "speech_probability": speech,
        "sentiment": dict(_PROBS[label]), "label": label, "model_version": "test-1",
        "emitted_at_ms": 1_700_000_000_000 + start + WINDOW_MS + 300,
    }


def aggregate(call_id: str, channel: str, index: int, current: str, overall: str) -> dict:
    end = index * HOP_MS + WINDOW_MS
    return {
        "type": "aggregate", "v": 1, "event_id": f"{call_id}:{channel}:aggregate:{index}",
        "call_id": call_id, "channel": channel, "segment_index": index,
        "current": summary(current, max(0, end - 30_000), end),
        "overall": summary(overall, 0, end),
        "model_version": "test-1", "emitted_at_ms": 1_700_000_000_000 + end + 300,
    }


def call(call_id: str, channel: str, label: str, segments: int) -> dict:
    end = (segments - 1) * HOP_MS + WINDOW_MS
    return {
        "type": "call", "v": 1, "event_id": f"{call_id}:{channel}:call:{segments}",
        "call_id": call_id, "channel": channel, "overall": summary(label, 0, end, active_ms=end - 1000),
        "segments": segments, "duration_ms": end, "ended_by": "end", "model_version": "test-1",
        "emitted_at_ms": 1_700_000_000_000 + end + 500,
    }
