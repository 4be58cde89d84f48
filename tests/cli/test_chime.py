"""voicetone.chime: Amazon Chime SDK voice tone analysis notifications, checked against the developer guide."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import orjson
import pytest

from schemas.wav import write_wav
from tests.harness.events import aggregate, call, segment
from tests.harness.offline import EnergyModel, frames, run, tone
from voicetone.chime import (COMPLETED, FAILURE, SUCCESSFUL, ChimeBridge, ChimeConfig, iso_ms, kinesis_record,
                             parse_roles, stream_sink, task_id)
from voicetone.cli import main
from streams.settings import Settings

# --- the guide's bodies ---------------------------------------------------------------------------------------
# "Understanding notifications", Voice tone analysis events: the typical event, placeholders filled in as printed.
GUIDE_SUCCESSFUL = json.loads("""{
  "detail-type": "VoiceToneAnalysisStatus",
  "service-type": "VoiceAnalytics",
  "source": "aws.chime",
  "account": "216539279014",
  "time": "2022-08-26T17:55:15.563441Z",
  "region": "us-east-1",
  "detail": {
    "taskId": "uuid",
    "detailStatus": "VoiceToneAnalysisSuccessful",
    "voiceToneAnalysisDetails": {
      "currentAverageVoiceTone": {
          "startTime": "2022-08-26T17:55:15.563Z",
          "endTime": "2022-08-26T17:55:45.720Z",
          "voiceToneLabel": "neutral",
          "voiceToneScore": {"neutral": "0.83", "positive": "0.13", "negative": "0.04"}
      },
      "overallAverageVoiceTone": {
          "startTime": "2022-08-26T16:23:13.344Z",
          "endTime": "2022-08-26T17:55:45.720Z",
          "voiceToneLabel": "positive",
          "voiceToneScore": {"neutral": "0.25", "positive": "0.65", "negative": "0.1"}
      }
    },
    "startFragmentNumber": "01234567890123456789",
    "mediaInsightsPipelineId": "87654321-33ca-4dc6-9cdf-abcde6612345",
    "sourceArn": "arn:aws:chime:us-east-1:111122223333:media-pipeline/87654321-33ca-4dc6-9cdf-abcde6612345",
    "streamArn": "arn:aws:kinesisvideo:us-east-1:111122223333:stream/my-stream/0123456789012",
    "channelId": 0
  },
  "version": "0",
  "id": "Id-f928dfe3-f44b-4965-8a17-612f9fb92d59"
}""")
# "Sample voice tone analysis workflow", step 11: the final notification carries the current average for the
# last 30 seconds plus the average of the entire call; the status list names it VoiceToneAnalysisCompleted.
GUIDE_COMPLETED = {**GUIDE_SUCCESSFUL, "detail": {**GUIDE_SUCCESSFUL["detail"], "detailStatus": COMPLETED}}
# The status list: Failure means the analysis could not be made (no talking, poor audio), so no tone details;
# the voice_tone_analysis_status Glue table gives statusMessage, the task's success or failure.
GUIDE_FAILURE = {**GUIDE_SUCCESSFUL, "detail": {
    **{k: v for k, v in GUIDE_SUCCESSFUL["detail"].items() if k != "voiceToneAnalysisDetails"},
    "detailStatus": FAILURE, "statusMessage": "..."}}
# Every detail field the guide documents for voice tone analysis notifications: the example above, the Glue
# table (voice_tone_analysis_status), and callId, which the voice API notifications carry to find the call by.
DOCUMENTED_DETAIL = {"taskId", "detailStatus", "voiceToneAnalysisDetails", "startFragmentNumber",
                     "mediaInsightsPipelineId", "sourceArn", "streamArn", "channelId", "isCaller", "transactionId",
                     "voiceConnectorId", "participantRole", "statusMessage", "callId"}
DOCUMENTED_TONE = {"startTime", "endTime", "beginOffsetMillis", "endOffsetMillis", "voiceToneLabel", "voiceToneScore"}
SCORE_LEAF = "voiceToneScore."

T0 = 1_767_605_400_000  # 2026-01-05T09:30:00Z
IDS = {"taskId": "task-7", "transactionId": "tx-7", "voiceConnectorId": "vc-1", "streamArn": "arn:stream/s",
       "mediaInsightsPipelineId": "mip-1", "sourceArn": "arn:aws:chime:us-east-1:1:media-pipeline/mip-1",
       "startFragmentNumber": "0123"}


def shape(x, path: str = "") -> dict[str, type]:
    """Every path of a JSON value with its JSON type (objects by their keys, lists as a whole)."""
    if isinstance(x, dict):
        out = {path: dict} if path else {}
        for k, v in x.items():
            out.update(shape(v, f"{path}.{k}" if path else k))
        return out
    return {path: float if isinstance(x, (int, float)) and not isinstance(x, bool) else type(x)}


def with_ids(ev: dict, start: int = T0, **meta) -> dict:
    return {**ev, "audio_start_ts_ms": start, "meta": {**IDS, "channelId": "0", **meta}}


def notes_for(events, **cfg) -> list[dict]:
    bridge = ChimeBridge(ChimeConfig(**cfg))
    return [n for ev in events for n in bridge.feed(ev)]


def speaking_channel(n: int = 10, channel: str = "customer", **meta) -> list[dict]:
    events = [with_ids(aggregate("c", channel, i, "negative", "neutral"), **meta) for i in range(n)]
    end = with_ids(call("c", channel, "neutral", n), **meta)
    return events + [{**end, "current": events[-1]["current"]}]


def silent_channel(n: int = 20, channel: str = "agent") -> list[dict]:
    events = [with_ids(aggregate("c", channel, i, "no_speech", "no_speech")) for i in range(n)]
    return events + [with_ids(call("c", channel, "no_speech", n))]


# --- shape against the guide -----------------------------------------------------------------------------------

@pytest.mark.parametrize("status, guide", [(SUCCESSFUL, GUIDE_SUCCESSFUL), (COMPLETED, GUIDE_COMPLETED),
                                           (FAILURE, GUIDE_FAILURE)])
def test_each_status_has_the_guides_keys_types_and_nesting(status, guide):
    events = silent_channel() if status == FAILURE else speaking_channel()
    as_strings = [n for n in notes_for(events, scores="string", account="1", region="us-east-1")
                  if n["detail"]["detailStatus"] == status]
    assert as_strings, f"no {status} notification"
    want = shape(guide)
    for note in as_strings:
        got = shape(note)
        assert {p: got.get(p) for p in want} == want  # every documented path, with the guide's type
        assert set(note["detail"]) <= DOCUMENTED_DETAIL
        for tone in note["detail"].get("voiceToneAnalysisDetails", {}).values():
            assert set(tone) == DOCUMENTED_TONE
    # the default writes the scores as JSON numbers; nothing else differs from the guide's types
    numbers = [n for n in notes_for(events) if n["detail"]["detailStatus"] == status]
    for note in numbers:
        got = shape(note)
        differ = {p for p in want if got.get(p) != want[p]}
        assert all(SCORE_LEAF in p for p in differ) and all(got[p] is float for p in differ)
        assert (len(differ) == 6) == (status != FAILURE)


def test_the_final_event_has_both_averages_and_the_one_before_current():
    events = speaking_channel(12)
    notes = notes_for(events)
    assert [n["detail"]["detailStatus"] for n in notes][-1] == COMPLETED
    final = notes[-1]["detail"]["voiceToneAnalysisDetails"]
    assert set(final) == {"currentAverageVoiceTone", "overallAverageVoiceTone"}
    cur = events[-1]["current"]
    assert (final["currentAverageVoiceTone"]["beginOffsetMillis"], final["currentAverageVoiceTone"]["endOffsetMillis"]) \
        == (cur["start_ms"], cur["end_ms"])
    assert final["overallAverageVoiceTone"]["voiceToneLabel"] == "neutral"


def test_a_channel_that_never_speaks_ends_on_failure_and_nothing_else():
    notes = notes_for(silent_channel())
    assert [n["detail"]["detailStatus"] for n in notes] == [FAILURE]
    assert "voiceToneAnalysisDetails" not in notes[0]["detail"] and notes[0]["detail"]["statusMessage"]


def test_a_channel_silent_at_first_notifies_once_it_speaks_and_every_interval_after():
    evs = []
    for i in range(12):
        ev = aggregate("c", "customer", i, "neutral", "neutral")
        if i < 5:
            ev["overall"] = {**ev["overall"], "active_speech_ms": 0, "label": "no_speech"}
        evs.append(with_ids(ev))
    notes = notes_for(evs)
    # end_ms 5000, 7500, ..., 32500, speech from 17500 on: the 5 s boundaries reached with speech are 20, 25, 30 s
    assert [n["detail"]["voiceToneAnalysisDetails"]["overallAverageVoiceTone"]["endOffsetMillis"] for n in notes] \
        == [20000, 25000, 30000]
    assert {n["detail"]["detailStatus"] for n in notes} == {SUCCESSFUL}
    every = notes_for(evs, interval_ms=2500)
    assert len(every) == 7  # each aggregate with speech


# --- through the real processor --------------------------------------------------------------------------------

def test_from_frames_to_notifications_ids_times_and_statuses():
    """A speaking channel and a silent one of one call, through StreamProcessor and the bridge."""
    agent = frames("call-1", "0", tone(23.0, 300), ts_start_ms=T0, meta={"transactionId": "tx-1", "streamArn": "s"})
    silent = frames("call-1", "1", np.zeros(16000 * 12, np.float32), ts_start_ms=T0 + 400)
    events = run(agent + silent, EnergyModel())
    cfg = ChimeConfig(roles={"0": "AGENT", "1": "CUSTOMER"}, caller="1", voice_connector_id="vc-9")
    bridge = ChimeBridge(cfg)
    notes = [n for ev in events for n in bridge.feed(ev)]
    by = {ch: [n for n in notes if n["detail"]["channelId"] == int(ch)] for ch in ("0", "1")}
    assert [n["detail"]["detailStatus"] for n in by["0"]] == [SUCCESSFUL] * 4 + [COMPLETED]
    assert [n["detail"]["detailStatus"] for n in by["1"]] == [FAILURE]
    for n in by["0"]:
        d = n["detail"]
        assert (d["transactionId"], d["streamArn"], d["voiceConnectorId"]) == ("tx-1", "s", "vc-9")
        assert (d["taskId"], d["callId"]) == (task_id("call-1", "0"), "call-1")
        assert (d["participantRole"], d["isCaller"]) == ("AGENT", False)
        tones = d["voiceToneAnalysisDetails"]
        assert tones["overallAverageVoiceTone"]["startTime"] == iso_ms(T0)  # one start time per channel
        for t in tones.values():
            assert t["startTime"] == iso_ms(T0 + t["beginOffsetMillis"])
            assert t["endTime"] == iso_ms(T0 + t["endOffsetMillis"])
    assert [n["detail"]["voiceToneAnalysisDetails"]["overallAverageVoiceTone"]["endOffsetMillis"]
            for n in by["0"][:4]] == [5000, 10000, 15000, 20000]
    assert (by["1"][0]["detail"]["participantRole"], by["1"][0]["detail"]["isCaller"]) == ("CUSTOMER", True)
    assert len({n["id"] for n in notes}) == len(notes)
    again = ChimeBridge(cfg)
    assert [n["id"] for ev in events for n in again.feed(ev)] == [n["id"] for n in notes]  # a replay repeats them


def test_without_frame_times_one_start_per_channel_from_the_first_event():
    evs = [aggregate("c", "agent", i, "neutral", "neutral") for i in range(10)]
    for i, ev in enumerate(evs):
        ev["emitted_at_ms"] += 37 * i  # the processing delay varies per event
    starts = {n["detail"]["voiceToneAnalysisDetails"]["overallAverageVoiceTone"]["startTime"]
              for n in notes_for(evs)}
    assert starts == {iso_ms(evs[0]["emitted_at_ms"] - evs[0]["overall"]["end_ms"])}


# --- ids and roles -------------------------------------------------------------------------------------------

def test_meta_ids_pass_through_and_win_over_the_settings():
    ev = with_ids(aggregate("c", "customer", 2, "neutral", "neutral"), participantRole="agent", isCaller="true")
    [n] = notes_for([ev], roles={"customer": "CUSTOMER"}, caller="customer", voice_connector_id="other")
    d = n["detail"]
    assert {k: d[k] for k in IDS} == IDS and d["channelId"] == 0
    assert (d["participantRole"], d["isCaller"]) == ("AGENT", True)


def test_without_ids_call_id_stands_in_and_unknown_fields_are_left_out():
    [n] = notes_for([aggregate("c9", "customer", 2, "neutral", "neutral")], roles={})
    d = n["detail"]
    assert (d["taskId"], d["callId"], d["transactionId"]) == (task_id("c9", "customer"), "c9", "c9")
    for absent in ("voiceConnectorId", "streamArn", "channelId", "participantRole", "isCaller",
                   "mediaInsightsPipelineId", "sourceArn", "startFragmentNumber"):
        assert absent not in d
    assert n["source"] == "aws.chime" and n["version"] == "0" and n["resources"] == []


def test_roles_and_config_errors_are_clear():
    assert parse_roles("0=AGENT, 1=customer") == {"0": "AGENT", "1": "CUSTOMER"}
    assert parse_roles("") == {}
    for bad, msg in (("0=BOSS", "not CHANNEL=AGENT"), ("0", "not CHANNEL=AGENT"), ("0=AGENT,0=CUSTOMER", "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_roles(bad)
    with pytest.raises(ValueError, match="not one of the channels"):
        ChimeConfig(roles={"agent": "AGENT"}, caller="1")
    with pytest.raises(ValueError, match="positive"):
        ChimeConfig(interval_ms=0)
    cfg = ChimeConfig.from_settings(Settings(chime_roles="a=AGENT,b=CUSTOMER", chime_caller="b"), interval_s=2.5)
    assert (cfg.interval_ms, cfg.roles, cfg.caller) == (2500, {"a": "AGENT", "b": "CUSTOMER"}, "b")


def test_segments_and_dead_letters_give_nothing():
    assert notes_for([segment("c", "agent", 0, "neutral"), {"type": "dead_letter", "reason": "x"}]) == []


# --- sinks and the command line --------------------------------------------------------------------------------

def test_sinks_write_eventbridge_json_and_kinesis_records():
    [note] = notes_for([with_ids(aggregate("c", "agent", 2, "neutral", "neutral"))])
    out = io.StringIO()
    stream_sink("stdout", out)(note)
    stream_sink("kinesis", out)(note)
    line_eb, line_k = out.getvalue().splitlines()
    assert json.loads(line_eb) == note
    rec = json.loads(line_k)
    assert set(rec) == {"Data", "PartitionKey"} and rec["PartitionKey"] == "tx-7"
    assert json.loads(base64.b64decode(rec["Data"])) == note
    assert orjson.loads(kinesis_record(note)) == rec


def test_cli_options_need_chime_and_bad_values_are_refused(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 16000, np.zeros(16000, np.float32))
    assert main(["analyze", str(tmp_path / "a.wav"), "--chime-roles", "0=AGENT"]) == 2
    assert "go with --chime" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "a.wav"), "--chime", "--chime-caller", "1"]) == 2
    assert "not one of the channels" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "a.wav"), "--chime", "--start-time", "yesterday"]) == 2
    assert "neither ISO 8601" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "a.wav"), "--meta", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_analyze_chime_prints_notifications(tmp_path, capsys):
    rate = 16000
    t = np.arange(int(rate * 11)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), np.zeros_like(t)]).astype(np.float32)
    write_wav(tmp_path / "call-5.wav", rate, stereo)
    assert main(["analyze", str(tmp_path / "call-5.wav"), "--json", "--chime", "--chime-roles", "0=AGENT,1=CUSTOMER",
                 "--chime-caller", "1", "--start-time", "2026-01-05T09:30:00Z", "--meta", "transactionId=tx-5"]) == 0
    notes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert notes and all(n["detail-type"] == "VoiceToneAnalysisStatus" for n in notes)
    final = {n["detail"]["channelId"]: n["detail"] for n in notes}
    assert {d["transactionId"] for d in final.values()} == {"tx-5"}
    assert (final[1]["detailStatus"], final[1]["isCaller"], final[1]["participantRole"]) == (FAILURE, True, "CUSTOMER")
    assert final[0]["detailStatus"] in (COMPLETED, FAILURE)  # the model decides whether a tone is speech
    starts = {tone["startTime"] for n in notes for tone in n["detail"].get("voiceToneAnalysisDetails", {}).values()
              if tone["beginOffsetMillis"] == 0}
    assert starts <= {"2026-01-05T09:30:00.000Z"}


@pytest.mark.broker
def test_bridge_publishes_to_kafka(broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.harness.live import collect, unique_settings
    from voicetone.chime import run_bridge

    settings = unique_settings(broker.url, chime_topic=f"chime-{id(broker)}-{np.random.randint(1 << 30)}")
    conf = settings.confluent_config()
    admin = AdminClient(conf)
    for fut in admin.create_topics([NewTopic(t, 2, 1) for t in (settings.aggregates_topic, settings.calls_topic,
                                                                 settings.chime_topic)]).values():
        fut.result(timeout=20)
    producer = Producer(conf)

    def publish(events):
        for ev in events:
            topic = settings.aggregates_topic if ev["type"] == "aggregate" else settings.calls_topic
            producer.produce(topic, key=ev["call_id"].encode(), value=orjson.dumps(ev))
        assert producer.flush(20) == 0

    *aggregates, end = speaking_channel(6)
    publish(aggregates)
    assert run_bridge(settings, ChimeConfig(), from_beginning=True, idle_exit_s=8) == 0
    publish([end])  # a restarted bridge goes on from its group's committed offsets: no aggregate twice
    assert run_bridge(settings, ChimeConfig(), from_beginning=True, idle_exit_s=8) == 0
    got = collect(settings, [settings.chime_topic], lambda evs: len(evs) >= 4, timeout_s=30)
    assert [n["detail"]["detailStatus"] for n in got] == [SUCCESSFUL] * 3 + [COMPLETED]
    assert {n["_key"] for n in got} == {b"tx-7"}
    final = got[-1]["detail"]["voiceToneAnalysisDetails"]
    assert set(final) == {"currentAverageVoiceTone", "overallAverageVoiceTone"}
    assert final["overallAverageVoiceTone"]["startTime"] == iso_ms(T0)


def test_an_aggregate_read_after_its_channels_final_event_gives_nothing():
    *aggregates, end = speaking_channel(8)
    notes = notes_for([end] + aggregates)
    assert [n["detail"]["detailStatus"] for n in notes] == [COMPLETED]
