"""The worker against the real embedded broker: two concurrent calls of known
length in, exactly the contract's events out; bad frames to the DLQ."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from schemas.audio import encode_audio
from schemas.events import event_id, parse_event
from schemas.frames import encode_frame
from tests.harness.live import collect, produce, running_worker, unique_settings

pytestmark = pytest.mark.broker

RATE = 16000
FRAME_MS = 100


def call_frames(call_id: str, channel: str, seconds: float, seed: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    step = RATE * FRAME_MS // 1000
    n = -(-audio.size // step)
    return [(call_id.encode(), encode_frame({
        "v": 1, "call_id": call_id, "channel": channel, "seq": i, "sample_rate": RATE, "encoding": "pcm_s16le",
        "audio": encode_audio("pcm_s16le", audio[i * step:(i + 1) * step]), "end": i == n - 1}))
        for i in range(n)]


def expected_windows(seconds: float) -> list[tuple[int, int, int]]:
    """(index, start_ms, end_ms) by the contract: 5 s windows every 2.5 s, a
    shorter last window when at least 1 s of new audio is left."""
    total = int(seconds * 1000)
    out, k = [], 0
    while k * 2500 + 5000 <= total:
        out.append((k, k * 2500, k * 2500 + 5000))
        k += 1
    start = k * 2500
    if total - start >= 1000 and (not out or total > out[-1][2]):
        out.append((k, start, total))
    return out


def interleave(*calls):
    out = []
    for i in range(max(len(c) for c in calls)):
        out.extend(c[i] for c in calls if i < len(c))
    return out


def test_two_calls_and_bad_frames(broker, tmp_path):
    s = unique_settings(broker.url, max_batch_wait_ms=20)
    a = call_frames("call-a", "agent", 12.0, 1)
    b = call_frames("call-b", "customer", 7.3, 2)
    bad = [
        (b"call-x", b"\xc1not msgpack"),
        (b"call-a", msgpack.packb({"v": 1, "call_id": "call-a"})),                       # missing fields
        (b"other", encode_frame({"v": 1, "call_id": "call-y", "channel": "0", "seq": 0, "sample_rate": RATE,
                                 "encoding": "pcm_s16le", "audio": b"\0\0"})),            # key != call_id
        (b"call-z", msgpack.packb({"v": 1, "call_id": "call-z", "channel": "0", "seq": 0, "sample_rate": 96000,
                                   "encoding": "pcm_s16le", "audio": b"\0\0"})),          # absurd rate
    ]
    messages = interleave(a, b)
    messages[10:10] = bad
    expect = {("call-a", "agent"): expected_windows(12.0), ("call-b", "customer"): expected_windows(7.3)}
    total_segments = sum(len(v) for v in expect.values())

    from streams.app import ensure_topics
    ensure_topics(s)
    with running_worker(s, tmp_path / "worker.log") as worker:
        produce(s, messages)
        events = collect(s, [s.segments_topic, s.aggregates_topic, s.calls_topic, s.dlq_topic],
                         lambda evs: sum(e["type"] == "call" for e in evs) >= 2
                         and sum(e["type"] == "dead_letter" for e in evs) >= len(bad)
                         and sum(e["type"] == "segment" for e in evs) >= total_segments
                         # the topics arrive in no order relative to each other: wait for the aggregates too
                         and sum(e["type"] == "aggregate" for e in evs) >= total_segments,
                         timeout_s=150, alive=worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker.log"], "the worker must not litter its directory"

    by_type = {t: [e for e in events if e["type"] == t] for t in ("segment", "aggregate", "call", "dead_letter")}
    for ev in events:  # every event matches the contract's schema
        parse_event(orjson.dumps({k: v for k, v in ev.items() if not k.startswith("_")}))
    for (call, channel), windows in expect.items():
        segs = sorted((e for e in by_type["segment"] if e["call_id"] == call), key=lambda e: e["segment_index"])
        assert [(e["segment_index"], e["start_ms"], e["end_ms"]) for e in segs] == windows
        assert all(e["channel"] == channel and e["_key"] == call.encode() for e in segs)
        aggs = [e for e in by_type["aggregate"] if e["call_id"] == call]
        assert sorted(e["segment_index"] for e in aggs) == [w[0] for w in windows]  # one per segment
        calls = [e for e in by_type["call"] if e["call_id"] == call]
        assert len(calls) == 1 and calls[0]["segments"] == len(windows) and calls[0]["ended_by"] == "end"
        assert calls[0]["duration_ms"] == windows[-1][2]
        for e in segs:
            assert e["event_id"] == event_id(call, channel, "segment", e["segment_index"])
            assert abs(sum(e["sentiment"].values()) - 1) < 1e-5
    ids = [e["event_id"] for e in by_type["segment"] + by_type["aggregate"] + by_type["call"]]
    assert len(ids) == len(set(ids)), "event IDs must be unique"
    reasons = sorted(e["reason"] for e in by_type["dead_letter"])
    assert reasons == sorted(["malformed_msgpack", "missing_field", "key_mismatch", "bad_sample_rate"])
    assert all(e["topic"] == s.input_topic and e["offset"] is not None for e in by_type["dead_letter"])
