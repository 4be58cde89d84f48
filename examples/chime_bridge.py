"""Chime bridge: republish voicetone events as Amazon Chime SDK voice tone analysis notifications.

Consumers written for Chime SDK call analytics (EventBridge / SQS / Lambda
handlers reading ``detail.voiceToneAnalysisDetails``) can then run on voicetone
unchanged. Field mapping, aggregate event -> notification:

    detail-type                                  "VoiceToneAnalysisStatus"
    service-type                                 "VoiceAnalytics"
    source                                       ``source`` argument ("voicetone"; "aws.chime" to match
                                                 existing EventBridge rules)
    id                                           event_id (deterministic, so replays de-duplicate)
    time                                         emitted_at_ms as ISO 8601 UTC
    detail.detailStatus                          "VoiceToneAnalysisSuccessful" (aggregate),
                                                 "VoiceToneAnalysisCompleted" (call summary, final),
                                                 "VoiceToneAnalysisFailure" when the label is no_speech
    detail.taskId                                "voicetone-<call_id>-<channel>"
    detail.callId, detail.transactionId          call_id
    detail.isCaller                              channel == caller_channel
    detail.participantRole                       "CUSTOMER" for the caller channel, else "AGENT"
    detail.voiceToneAnalysisDetails
      .currentAverageVoiceTone                   event["current"]   (most recent 30 s of speech)
      .overallAverageVoiceTone                   event["overall"]   (whole channel so far)
        .startTime / .endTime                    channel_start_ms + start_ms / end_ms, ISO 8601 UTC
        .beginOffsetMillis / .endOffsetMillis    start_ms / end_ms (offsets from the channel's start)
        .voiceToneLabel                          label
        .voiceToneScore.{neutral,positive,negative}  sentiment probabilities (JSON numbers; AWS's
                                                 example prints them as strings, float() reads both)

A call summary carries only ``overall``, so its Completed notification has no
``currentAverageVoiceTone``. voicetone events hold offsets, not wall-clock
times: pass ``channel_start_ms`` (epoch ms of the channel's first sample, e.g.
the first frame's ts_ms) for exact times; without it the start is estimated as
``emitted_at_ms - overall.end_ms``, which is late by the processing latency.

    python -m examples.chime_bridge --broker localhost:9092 [--caller-channel customer] [--out-topic chime.voicetone]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Optional

import orjson

DETAIL_TYPE = "VoiceToneAnalysisStatus"
LABELS = ("neutral", "positive", "negative")


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _tone(summary: dict, channel_start_ms: int) -> dict:
    return {
        "startTime": _iso(channel_start_ms + summary["start_ms"]),
        "endTime": _iso(channel_start_ms + summary["end_ms"]),
        "beginOffsetMillis": summary["start_ms"],
        "endOffsetMillis": summary["end_ms"],
        "voiceToneLabel": summary["label"],
        "voiceToneScore": {k: round(float(summary["sentiment"][k]), 4) for k in LABELS},
    }


def to_chime_voice_tone(event: dict, caller_channel: str = "customer", channel_start_ms: Optional[int] = None,
                        source: str = "voicetone", account: str = "", region: str = "") -> dict:
    """Map an aggregate (or call summary) event to a Chime SDK voice tone notification; see module doc."""
    kind = event.get("type")
    if kind not in ("aggregate", "call"):
        raise ValueError(f"expected an aggregate or call event, got type={kind!r}")
    overall = event["overall"]
    if channel_start_ms is None:
        channel_start_ms = event["emitted_at_ms"] - overall["end_ms"]
    is_caller = event["channel"] == caller_channel
    detail: dict = {
        "taskId": f"voicetone-{event['call_id']}-{event['channel']}",
        "callId": event["call_id"],
        "transactionId": event["call_id"],
        "isCaller": is_caller,
        "participantRole": "CUSTOMER" if is_caller else "AGENT",
    }
    if overall["label"] == "no_speech":
        detail["detailStatus"] = "VoiceToneAnalysisFailure"
        detail["statusMessage"] = "No speech detected on this channel yet"
    else:
        details = {"overallAverageVoiceTone": _tone(overall, channel_start_ms)}
        if kind == "aggregate":
            details["currentAverageVoiceTone"] = _tone(event["current"], channel_start_ms)
        detail["detailStatus"] = "VoiceToneAnalysisSuccessful" if kind == "aggregate" else "VoiceToneAnalysisCompleted"
        detail["voiceToneAnalysisDetails"] = details
    return {
        "version": "0",
        "id": event["event_id"],
        "detail-type": DETAIL_TYPE,
        "service-type": "VoiceAnalytics",
        "source": source,
        "account": account,
        "time": _iso(event["emitted_at_ms"]),
        "region": region,
        "resources": [],
        "detail": detail,
    }


def main(argv: Optional[list[str]] = None) -> int:
    from confluent_kafka import Consumer, Producer

    from examples._consume import run_loop
    from voicetone.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", default=None, help="bootstrap servers (default: VOICETONE_BROKER)")
    p.add_argument("--caller-channel", default="customer", help="channel name that is the caller (isCaller)")
    p.add_argument("--source", default="voicetone", help='notification "source" ("aws.chime" for existing rules)')
    p.add_argument("--out-topic", default=None, help="produce notifications here (else print them)")
    p.add_argument("--group", default="voicetone-chime-bridge")
    args = p.parse_args(argv)

    settings = Settings(**({"broker": args.broker} if args.broker else {}))
    conf = settings.confluent_config()
    consumer = Consumer({**conf, "group.id": args.group, "auto.offset.reset": "latest"})
    consumer.subscribe([settings.aggregates_topic, settings.calls_topic])
    producer = Producer(conf) if args.out_topic else None
    def handle(msg, event) -> None:
        value = orjson.dumps(to_chime_voice_tone(event, args.caller_channel, source=args.source))
        if producer is None:
            print(value.decode(), flush=True)
        else:
            producer.produce(args.out_topic, key=msg.key(), value=value)
            producer.poll(0)

    run_loop(consumer, handle, producer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
