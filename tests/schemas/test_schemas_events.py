"""Events: contract shape, deterministic IDs, JSON round trips, exported JSON Schemas."""

import argparse
import base64
import json

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import EventCodec, register_codecs
from schemas.errors import FrameError
from schemas.events import (AggregateEvent, CallEvent, DeadLetter, SegmentEvent, Sentiment, Summary, event_id,
                            make_dead_letter, parse_event, to_json)
from schemas.json_schemas import SCHEMAS, add_cli, export_json_schemas
from tests.harness import ROOT

S = Sentiment(positive=0.1, neutral=0.7, negative=0.2)
SUMMARY = Summary(start_ms=0, end_ms=30000, active_speech_ms=21000, sentiment=S, label="neutral")


def segment(**over):
    d = dict(event_id=event_id("c1", "agent", "segment", 4), call_id="c1", channel="agent", segment_index=4,
             start_ms=10000, end_ms=15000, speech_probability=0.93, sentiment=S, label="neutral",
             model_version="vt-1", emitted_at_ms=1_700_000_000_123)
    d.update(over)
    return SegmentEvent(**d)


def aggregate():
    return AggregateEvent(event_id=event_id("c1", "agent", "aggregate", 4), call_id="c1", channel="agent",
                          segment_index=4, current=SUMMARY, overall=SUMMARY, model_version="vt-1", emitted_at_ms=5)


def call():
    return CallEvent(event_id=event_id("c1", "agent", "call", 0), call_id="c1", channel="agent", overall=SUMMARY,
                     segments=12, duration_ms=31000, ended_by="idle_timeout", model_version="vt-1", emitted_at_ms=9)


def dead():
    return make_dead_letter(FrameError("key_mismatch", "k != c"), b"\x81\xa1v\x01", b"k", "audio.frames", 3, 42, 77)


EVENTS = {"segment": segment, "aggregate": aggregate, "call": call, "dead_letter": dead}


def test_segment_json_has_exactly_contract_fields():
    got = orjson.loads(to_json(segment()))
    assert set(got) == {"type", "v", "event_id", "call_id", "channel", "segment_index", "start_ms", "end_ms",
                        "speech_probability", "sentiment", "label", "model_version", "emitted_at_ms"}
    assert got["type"] == "segment" and got["v"] == 1
    assert set(got["sentiment"]) == {"positive", "neutral", "negative"}


def test_aggregate_and_call_fields():
    agg = orjson.loads(to_json(aggregate()))
    assert set(agg) == {"type", "v", "event_id", "call_id", "channel", "segment_index", "current", "overall",
                        "model_version", "emitted_at_ms", "audio_start_ts_ms", "meta"}
    assert agg["audio_start_ts_ms"] is None and agg["meta"] == {}
    assert set(agg["current"]) == {"start_ms", "end_ms", "active_speech_ms", "sentiment", "label"}
    c = orjson.loads(to_json(call()))
    assert c["type"] == "call" and c["ended_by"] == "idle_timeout" and c["segments"] == 12
    assert (c["current"], c["audio_start_ts_ms"], c["meta"]) == (None, None, {})


def test_events_without_the_later_fields_still_parse():
    """Aggregate and call events written before audio_start_ts_ms, meta and the call's current existed."""
    for ev, later in ((aggregate(), ("audio_start_ts_ms", "meta")), (call(), ("audio_start_ts_ms", "meta", "current"))):
        old = {k: v for k, v in orjson.loads(to_json(ev)).items() if k not in later}
        got = parse_event(orjson.dumps(old))
        assert got.meta == {} and got.audio_start_ts_ms is None


def test_dead_letter_keeps_raw_bytes():
    d = orjson.loads(to_json(dead()))
    assert d["type"] == "dead_letter" and d["reason"] == "key_mismatch"
    assert base64.b64decode(d["value_b64"]) == b"\x81\xa1v\x01" and base64.b64decode(d["key_b64"]) == b"k"
    assert (d["partition"], d["offset"]) == (3, 42)
    nokey = make_dead_letter(FrameError("bad_field", ""), b"", None, "t", None, None, 0)
    assert orjson.loads(to_json(nokey))["key_b64"] is None


@pytest.mark.parametrize("kind", EVENTS)
def test_round_trip(kind):
    ev = EVENTS[kind]()
    back = parse_event(to_json(ev))
    assert type(back) is type(ev) and back == ev
    assert parse_event(to_json(ev).decode()) == ev


def test_to_json_matches_pydantic_and_accepts_dicts():
    ev = aggregate()
    assert orjson.loads(to_json(ev)) == json.loads(ev.model_dump_json())
    assert to_json({"a": 1}) == b'{"a":1}'


def test_event_id_deterministic_and_unambiguous():
    a = event_id("c1", "agent", "segment", 4)
    assert a == event_id("c1", "agent", "segment", 4)
    others = [event_id("c1", "agent", "segment", 5), event_id("c1", "agent", "aggregate", 4),
              event_id("c1", "customer", "segment", 4), event_id("c2", "agent", "segment", 4),
              # parts that a naive "c1:agent" join would confuse
              event_id("c1:agent", "", "segment", 4), event_id("c1", "agent:segment", "", 4)]
    assert len({a, *others}) == 1 + len(others)
    # Pinned: IDs must not change between releases, or de-duplication breaks across an upgrade.
    assert a == "8bf247bc-7b76-512e-a133-8ff5606da543"


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.text(max_size=6), st.text(max_size=6), st.sampled_from(["segment", "aggregate", "call"]),
                 st.integers(0, 10**6)),
       st.tuples(st.text(max_size=6), st.text(max_size=6), st.sampled_from(["segment", "aggregate", "call"]),
                 st.integers(0, 10**6)))
def test_event_id_injective(p, q):
    assert (event_id(*p) == event_id(*q)) == (p == q)


@pytest.mark.parametrize("bad", [
    dict(sentiment=Sentiment.model_construct(positive=0.5, neutral=0.5, negative=0.5)),
    dict(label="happy"), dict(speech_probability=1.5), dict(start_ms=-1), dict(segment_index="4"),
])
def test_invalid_segments_refused(bad):
    with pytest.raises(ValueError):
        SegmentEvent.model_validate({**segment().model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v)
                                                                   for k, v in bad.items()}})


def test_sentiment_must_sum_to_one():
    with pytest.raises(ValueError):
        Sentiment(positive=0.3, neutral=0.3, negative=0.3)
    Sentiment(positive=0.3334, neutral=0.3333, negative=0.3333)


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "malformed_json"), (b"[1]", "not_a_map"), (b'{"type": "weird"}', "unknown_type"),
    (b'{"v": 1}', "unknown_type"), (b'{"type": "segment"}', "missing_field"),
    (orjson.dumps({**orjson.loads(to_json(segment())), "extra": 1}), "unknown_field"),
    (orjson.dumps({**orjson.loads(to_json(segment())), "label": "meh"}), "bad_field"),
    (orjson.dumps({**orjson.loads(to_json(segment())), "v": 2}), "bad_field"),
])
def test_parse_event_errors(raw, reason):
    with pytest.raises(FrameError) as e:
        parse_event(raw)
    assert e.value.reason == reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_parse_event_fuzz(raw):
    try:
        parse_event(raw)
    except FrameError:
        pass


def test_faust_event_codec_round_trip():
    register_codecs()
    from faust.serializers import codecs
    codec = codecs.get_codec("vt_json")
    assert isinstance(codec, EventCodec)
    for make in EVENTS.values():
        ev = make()
        assert codec.loads(codec.dumps(ev)) == ev


# --- exported JSON Schemas -----------------------------------------------------

SCHEMA_OF = {"segment": "segment-event", "aggregate": "aggregate-event", "call": "call-event",
             "dead_letter": "dead-letter"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("schemas")
    paths = export_json_schemas(out)
    assert sorted(p.name for p in paths) == sorted(SCHEMAS)
    return {p.name: json.loads(p.read_text()) for p in paths}


@pytest.mark.parametrize("kind", EVENTS)
def test_events_validate_against_exported_schema(exported, kind):
    schema = exported[f"{SCHEMA_OF[kind]}.schema.json"]
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    good = orjson.loads(to_json(EVENTS[kind]()))
    v.validate(good)
    assert not v.is_valid({**good, "unexpected": 1})
    assert not v.is_valid({k: x for k, x in good.items() if k != "type"})
    assert not v.is_valid({**good, "type": "other"})


def test_audio_frame_schema(exported):
    schema = exported["audio-frame.schema.json"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == {"v", "call_id", "seq", "sample_rate", "encoding", "audio"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["audio"]["x-msgpack-type"] == "bin"
    assert schema["properties"]["encoding"]["enum"] == ["pcm_s16le", "mulaw", "alaw", "f32le"]
    v = jsonschema.Draft202012Validator(schema)
    frame = {"v": 1, "call_id": "c", "seq": 0, "sample_rate": 16000, "encoding": "mulaw", "audio": b"\xff"}
    assert v.is_valid(frame)
    assert not v.is_valid({**frame, "sample_rate": 4000})
    assert not v.is_valid({**frame, "v": 2})


def test_committed_schemas_are_current(exported):
    """schemas/json/ must be regenerated (voicetone schemas export) when a model changes."""
    committed = ROOT / "schemas" / "json"
    for name, schema in exported.items():
        assert json.loads((committed / name).read_text()) == schema, f"{name} is stale"


def test_cli_export(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["schemas", "export", "--out", str(tmp_path / "x")])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted(SCHEMAS)
    assert "audio-frame.schema.json" in capsys.readouterr().out
