"""The downstream examples' pure logic, without a broker."""

from datetime import datetime

import pytest

from examples.call_scores import CallScoreStore
from examples.chime_bridge import to_chime_voice_tone
from examples.supervisor_alert import NegativeStreakDetector
from tests._event_factory import aggregate, call, segment


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


# --- chime_bridge ----------------------------------------------------------

def test_chime_mapping_of_an_aggregate():
    ev = aggregate("call-7", "customer", 14, "negative", "neutral")  # end_ms = 40 s
    note = to_chime_voice_tone(ev, caller_channel="customer", channel_start_ms=1_700_000_000_000)
    assert note["detail-type"] == "VoiceToneAnalysisStatus"
    assert note["id"] == ev["event_id"]
    d = note["detail"]
    assert d["detailStatus"] == "VoiceToneAnalysisSuccessful"
    assert d["callId"] == "call-7" and d["isCaller"] is True
    cur = d["voiceToneAnalysisDetails"]["currentAverageVoiceTone"]
    ovr = d["voiceToneAnalysisDetails"]["overallAverageVoiceTone"]
    assert cur["voiceToneLabel"] == "negative" and ovr["voiceToneLabel"] == "neutral"
    assert set(cur["voiceToneScore"]) == {"neutral", "positive", "negative"}
    assert cur["voiceToneScore"]["negative"] == pytest.approx(0.8)
    assert (cur["beginOffsetMillis"], cur["endOffsetMillis"]) == (10_000, 40_000)
    start = datetime.fromisoformat(cur["startTime"].replace("Z", "+00:00")).timestamp()
    end = datetime.fromisoformat(ovr["endTime"].replace("Z", "+00:00")).timestamp()
    assert (start, end) == (1_700_000_010.0, 1_700_000_040.0)


def test_chime_is_caller_false_for_agent_and_estimated_start():
    ev = aggregate("c", "agent", 0, "positive", "positive")
    note = to_chime_voice_tone(ev)
    assert note["detail"]["isCaller"] is False and note["detail"]["participantRole"] == "AGENT"
    ovr = note["detail"]["voiceToneAnalysisDetails"]["overallAverageVoiceTone"]
    # without channel_start_ms the end of the audio is placed at the publish time
    assert ovr["endTime"] == note["time"]


def test_chime_call_summary_is_completed_and_no_speech_is_failure():
    done = to_chime_voice_tone(call("c", "customer", "positive", 5))
    assert done["detail"]["detailStatus"] == "VoiceToneAnalysisCompleted"
    assert list(done["detail"]["voiceToneAnalysisDetails"]) == ["overallAverageVoiceTone"]
    silent = to_chime_voice_tone(aggregate("c", "customer", 0, "no_speech", "no_speech"))
    assert silent["detail"]["detailStatus"] == "VoiceToneAnalysisFailure"
    assert "voiceToneAnalysisDetails" not in silent["detail"]
    with pytest.raises(ValueError):
        to_chime_voice_tone(segment("c", "customer", 0, "neutral"))


def test_fixture_events_match_the_contract_models():
    """The synthetic events these tests use must be valid contract events, or the tests prove nothing."""
    import orjson

    from schemas.events import parse_event

    for ev in (segment("c", "agent", 3, "negative"), aggregate("c", "agent", 3, "negative", "neutral"),
               call("c", "agent", "positive", 4), aggregate("c", "agent", 0, "no_speech", "no_speech")):
        assert parse_event(orjson.dumps(ev)).type == ev["type"]
