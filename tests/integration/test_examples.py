"""The downstream examples' pure logic, without a broker."""

import pytest

from examples.call_scores import CallScoreStore
from examples.supervisor_alert import NegativeStreakDetector
from tests.harness.events import aggregate, call, segment


# --- supervisor_alert ------------------------------------------------------

def _labels(detector, labels, call_id="c1", channel="customer", start=0):
    return [detector.feed(aggregate(call_id, channel, start + i, lab, "neutral")) for i, lab in enumerate(labels)]


def test_streak_fires_once_at_n_and_rearms_after_non_negative():
    det = NegativeStreakDetector(n=3)
    out = _labels(det, ["negative", "negative", "negative", "negative", "neutral", "negative", "negative", "negative"])
    fired = [i for i, a in enumerate(out) if a is not None]
    assert fired == [2, 7]
    alert = out[2]
    assert alert["call_id"] == "c1" and alert["channel"] == "customer"
    assert alert["alert"] == "negative_streak" and alert["streak"] == 3 and alert["segment_index"] == 2
    assert alert["negative"] == pytest.approx(0.8)


def test_streak_is_per_channel():
    det = NegativeStreakDetector(n=2)
    assert det.feed(aggregate("c1", "agent", 0, "negative", "neutral")) is None
    assert det.feed(aggregate("c1", "customer", 0, "negative", "neutral")) is None
    assert det.feed(aggregate("c1", "agent", 1, "negative", "neutral"))["channel"] == "agent"
    assert det.feed(aggregate("c2", "agent", 0, "negative", "neutral")) is None


def test_redelivered_aggregates_do_not_extend_the_streak():
    det = NegativeStreakDetector(n=3)
    ev0 = aggregate("c1", "customer", 0, "negative", "neutral")
    ev1 = aggregate("c1", "customer", 1, "negative", "neutral")
    assert [det.feed(e) for e in (ev0, ev1, ev1, ev0)] == [None] * 4
    assert det.feed(aggregate("c1", "customer", 2, "negative", "neutral")) is not None


def test_segment_events_ignored_and_call_end_resets():
    det = NegativeStreakDetector(n=2)
    assert det.feed(segment("c1", "customer", 0, "negative")) is None
    det.feed(aggregate("c1", "customer", 0, "negative", "neutral"))
    det.feed(call("c1", "customer", "negative", 1))
    assert det.feed(aggregate("c1", "customer", 0, "negative", "neutral")) is None  # fresh state after end


def test_n_must_be_positive():
    with pytest.raises(ValueError):
        NegativeStreakDetector(n=0)


# --- call_scores -----------------------------------------------------------

def test_call_scores_upsert_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    store = CallScoreStore(url)
    assert store.write(call("c1", "agent", "positive", 10))
    assert store.write(call("c1", "customer", "negative", 8))
    assert store.write(call("c1", "customer", "negative", 8))  # replay
    assert not store.write(aggregate("c1", "agent", 0, "neutral", "neutral"))
    store.close()

    rows = CallScoreStore(url).rows()  # reopened: persisted, table creation is idempotent
    assert [(r["call_id"], r["channel"], r["label"]) for r in rows] == [
        ("c1", "agent", "positive"), ("c1", "customer", "negative")]
    cust = rows[1]
    assert cust["segments"] == 8 and cust["duration_ms"] == 7 * 2500 + 5000
    assert cust["negative"] == pytest.approx(0.8) and cust["active_speech_ms"] == cust["duration_ms"] - 1000


def test_call_scores_upsert_replaces_with_newer_summary():
    store = CallScoreStore("sqlite://")
    store.write(call("c1", "agent", "neutral", 3))
    store.write(call("c1", "agent", "positive", 4))
    rows = store.rows()
    assert len(rows) == 1 and rows[0]["label"] == "positive" and rows[0]["segments"] == 4


def test_call_scores_rejects_unknown_url():
    with pytest.raises(ValueError):
        CallScoreStore("mysql://x")


def test_fixture_events_match_the_contract_models():
    """The synthetic events these tests use must be valid contract events, or the tests prove nothing."""
    import orjson

    from schemas.events import parse_event

    for ev in (segment("c", "agent", 3, "negative"), aggregate("c", "agent", 3, "negative", "neutral"),
               call("c", "agent", "positive", 4), aggregate("c", "agent", 0, "no_speech", "no_speech")):
        assert parse_event(orjson.dumps(ev)).type == ev["type"]
