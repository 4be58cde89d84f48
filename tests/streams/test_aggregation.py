"""Aggregation: new-audio accounting, 30 s active-speech rule, weights, replay."""

from __future__ import annotations

import json
import math

import pytest

from streams.aggregation import ChannelAggregate, InvalidSegment, SegmentResult

POS, NEU, NEG = (0.8, 0.15, 0.05), (0.1, 0.8, 0.1), (0.05, 0.15, 0.8)


def seg(i, prob=0.9, sent=NEU, hop=2500, win=5000):
    return SegmentResult(i, i * hop, i * hop + win, prob, sent)


def probs(s):
    return [s["sentiment"][k] for k in ("positive", "neutral", "negative")]


def test_empty_aggregate_is_no_speech_uniform():
    a = ChannelAggregate()
    for s in (a.current(), a.overall()):
        assert s["label"] == "no_speech" and s["active_speech_ms"] == 0
        assert probs(s) == pytest.approx([1 / 3] * 3)


def test_new_audio_counts_overlap_once():
    a = ChannelAggregate()
    a.add(seg(0))  # first segment: its whole 5 s
    assert a.overall()["active_speech_ms"] == 5000
    a.add(seg(1))  # [2.5, 7.5): only 2.5 s is new
    assert a.overall()["active_speech_ms"] == 7500
    a.add(SegmentResult(2, 5000, 8200, 0.9, NEU))  # short last window: 0.7 s new
    o = a.overall()
    assert (o["start_ms"], o["end_ms"], o["active_speech_ms"]) == (0, 8200, 8200)


def test_silence_excluded_and_threshold_inclusive():
    a = ChannelAggregate(speech_threshold=0.5)
    a.add(seg(0, prob=0.2, sent=POS))
    assert a.overall()["label"] == "no_speech" and a.overall()["active_speech_ms"] == 0
    a.add(seg(1, prob=0.5, sent=NEG))  # exactly at the threshold counts as speech
    o = a.overall()
    assert o["active_speech_ms"] == 2500 and o["label"] == "negative"
    assert probs(o) == pytest.approx(NEG)  # the silent positive segment has no weight


def test_weighting_by_active_ms_times_speech_prob():
    a = ChannelAggregate()
    a.add(SegmentResult(0, 0, 1000, 1.0, (1.0, 0.0, 0.0)))  # weight 1000
    a.add(SegmentResult(1, 1000, 4000, 0.6, (0.0, 0.0, 1.0)))  # weight 3000 * 0.6 = 1800
    p = probs(a.overall())
    assert p == pytest.approx([1000 / 2800, 0.0, 1800 / 2800])
    assert sum(p) == pytest.approx(1.0) and a.overall()["label"] == "negative"


def test_unnormalised_model_output_still_sums_to_one():
    a = ChannelAggregate()
    a.add(SegmentResult(0, 0, 5000, 0.9, (2.0, 1.0, 1.0)))
    assert probs(a.overall()) == pytest.approx([0.5, 0.25, 0.25])


def test_current_goes_back_until_30s_of_active_speech_with_silence_interleaved():
    a = ChannelAggregate(current_speech_ms=30000)
    a.add(seg(0, sent=NEG))  # 5 s active, negative
    for i in range(1, 40):
        silent = i % 3 == 0
        a.add(seg(i, prob=0.1 if silent else 0.9, sent=POS if not silent else NEG))
    # walk back from the newest: each speech segment adds 2.5 s, silent ones 0
    need, start = 0, None
    for i in range(39, 0, -1):
        if i % 3:
            need += 2500
        if need >= 30000:
            start = i * 2500
            break
    c = a.current()
    assert c["active_speech_ms"] == 30000 and (c["start_ms"], c["end_ms"]) == (start, 39 * 2500 + 5000)
    assert c["label"] == "positive" and probs(c) == pytest.approx(POS)
    o = a.overall()
    assert o["start_ms"] == 0 and o["active_speech_ms"] == 5000 + 2500 * sum(1 for i in range(1, 40) if i % 3)
    assert probs(o)[2] > probs(c)[2]  # the early negative speech still counts overall


def test_current_before_30s_covers_everything():
    a = ChannelAggregate()
    for i in range(4):
        a.add(seg(i, sent=POS if i < 2 else NEG))
    assert a.current() == a.overall()


def test_current_is_silent_run_when_recent_audio_is_silence():
    a = ChannelAggregate(current_speech_ms=5000)
    a.add(seg(0, sent=POS))
    for i in range(1, 200):
        a.add(seg(i, prob=0.0))
    c = a.current()
    assert c["label"] == "positive" and c["active_speech_ms"] == 5000 and c["start_ms"] == 0
    assert len(a.to_dict()["recent"]) == 2  # one speech entry, one merged silent run


def test_memory_bounded_over_long_call():
    a = ChannelAggregate()
    for i in range(5000):
        a.add(seg(i, prob=0.9 if i % 5 else 0.1, sent=(POS, NEU, NEG)[i % 3]))
    assert len(a.to_dict()["recent"]) <= 2 * (30000 // 2500 + 1)
    assert a.segments == 5000


def test_replayed_indices_are_ignored():
    a, b = ChannelAggregate(), ChannelAggregate()
    for i in range(10):
        assert a.add(seg(i, sent=POS if i % 2 else NEG))
        b.add(seg(i, sent=POS if i % 2 else NEG))
    for i in (9, 3, 0):
        assert a.add(seg(i, sent=NEU)) is False
    assert a.to_dict() == b.to_dict()


def test_round_trip_through_json_then_continue():
    a = ChannelAggregate(current_speech_ms=10000, speech_threshold=0.4)
    for i in range(12):
        a.add(seg(i, prob=(0.3, 0.7, 0.95)[i % 3], sent=(POS, NEU, NEG)[i % 3]))
    b = ChannelAggregate.from_dict(json.loads(json.dumps(a.to_dict())))
    assert (b.current(), b.overall(), b.last_index) == (a.current(), a.overall(), a.last_index)
    for x in (a, b):
        x.add(seg(12, sent=POS))
    assert b.to_dict() == a.to_dict()
    with pytest.raises(ValueError):
        ChannelAggregate.from_dict({"v": 99})


@pytest.mark.parametrize("bad,reason", [
    (SegmentResult(0, 0, 5000, math.nan, NEU), "bad_speech_prob"),
    (SegmentResult(0, 0, 5000, 1.5, NEU), "bad_speech_prob"),
    (SegmentResult(0, 5000, 0, 0.9, NEU), "bad_times"),
    (SegmentResult(0, 0, 5000, 0.9, (0.0, 0.0, 0.0)), "bad_sentiment"),
    (SegmentResult(0, 0, 5000, 0.9, (0.5, -0.1, 0.6)), "bad_sentiment"),
    (SegmentResult(0, 0, 5000, 0.9, (0.5, 0.5)), "bad_sentiment"),
])
def test_invalid_segments_raise_with_reason_and_leave_state(bad, reason):
    a = ChannelAggregate()
    with pytest.raises(InvalidSegment) as e:
        a.add(bad)
    assert e.value.reason == reason and a.last_index == -1
