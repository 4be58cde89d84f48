"""What both peers share: frame decoding, the model call for one window, and the
contract's segment/aggregate events (same shapes and topics as voicetone).

The peers reuse voicetone's pure helpers where any user would reuse a library
(`schemas.audio.decode_audio`, the aggregate
maths in `streams.aggregation`, `schemas.events.event_id`) and the same model
(`model.load()`); everything a stream framework would do differently (buffers,
windows, batching, consumption, publishing) is in each peer.
"""

from __future__ import annotations

import logging
import os
import time

import msgpack
import numpy as np

from schemas.audio import decode_audio
from schemas.events import event_id
from streams.aggregation import ChannelAggregate, SegmentResult

LABELS = ("positive", "neutral", "negative")
SPEECH_THRESHOLD = 0.5
WINDOW_MS, HOP_MS = 5000, 2500


def load_model():
    import torch

    import model

    threads = int(os.environ.get("VOICETONE_INFERENCE_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    logging.getLogger("model.inference").setLevel(logging.ERROR)
    m = model.load(os.environ.get("VOICETONE_MODEL_PATH") or None, device=os.environ.get("VOICETONE_DEVICE", "auto"),
                   precision=os.environ.get("VOICETONE_PRECISION", "fp32"))
    m.predict(np.zeros((1, m.sample_rate * WINDOW_MS // 1000), np.float32))  # warm up
    return m


def unpack(value: bytes) -> dict:
    return msgpack.unpackb(value, raw=False)


def samples_of(frame: dict) -> np.ndarray:
    return decode_audio(frame["encoding"], frame["audio"])


def predict_one(m, samples: np.ndarray, rate: int) -> tuple[float, np.ndarray]:
    """The model on one window (batch of 1) at its own rate: `predict` reads 8 kHz as it is and resamples
    other rates itself, as its docstring offers a user."""
    speech, sentiment = m.predict(samples[None, :].astype(np.float32, copy=False), sample_rate=rate)
    return float(speech[0]), np.asarray(sentiment[0], np.float64)


def segment_event(call_id: str, channel: str, index: int, start_ms: int, end_ms: int, sp: float,
                  probs: np.ndarray, version: str) -> dict:
    p = [float(x) for x in probs / probs.sum()]
    label = "no_speech" if sp < SPEECH_THRESHOLD else LABELS[int(np.argmax(p))]
    return {"type": "segment", "v": 1, "event_id": event_id(call_id, channel, "segment", index),
            "call_id": call_id, "channel": channel, "segment_index": index, "start_ms": int(start_ms),
            "end_ms": int(end_ms), "speech_probability": sp, "sentiment": dict(zip(LABELS, p)), "label": label,
            "model_version": version, "emitted_at_ms": int(time.time() * 1000)}


def aggregate_event(agg: ChannelAggregate, seg: dict) -> dict:
    agg.add(SegmentResult(seg["segment_index"], seg["start_ms"], seg["end_ms"], seg["speech_probability"],
                          tuple(seg["sentiment"][k] for k in LABELS)))
    return {"type": "aggregate", "v": 1,
            "event_id": event_id(seg["call_id"], seg["channel"], "aggregate", seg["segment_index"]),
            "call_id": seg["call_id"], "channel": seg["channel"], "segment_index": seg["segment_index"],
            "current": agg.current(), "overall": agg.overall(), "model_version": seg["model_version"],
            "emitted_at_ms": int(time.time() * 1000)}
