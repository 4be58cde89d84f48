"""Amazon Chime SDK voice tone analysis notifications made from voicetone's aggregate and call events.

A consumer written for Chime SDK voice analytics (an EventBridge rule, a Lambda or SQS handler, a
Kinesis reader of ``detail.voiceToneAnalysisDetails``) takes these notifications as they are: the
envelope, ``detail`` and statuses follow the Chime SDK Developer Guide ("Understanding notifications",
"Sample voice tone analysis workflow", the ``voice_tone_analysis_status`` Glue table). The README's
integrations section has the field mapping and the differences that remain.

Per channel (``ChimeBridge.feed``):

* ``VoiceToneAnalysisSuccessful`` every ``interval_ms`` of the channel's audio (5 s, as Chime), once the
  channel has spoken, with the current (last 30 s of speech) and overall averages;
* at the channel's end, one final ``VoiceToneAnalysisCompleted`` with both averages, or
  ``VoiceToneAnalysisFailure`` (no averages) when the channel never spoke: the analysis could not be made.

Ids come from the channel's frame ``meta`` first (a key named as Chime names the field: ``taskId``,
``transactionId``, ``voiceConnectorId``, ``streamArn``, ...), then from the settings; times from the
channel's ``audio_start_ts_ms`` (its first frame's ``ts_ms``), so one channel has one start time.
The mapping itself (``notification``) is pure; the bridge only remembers, per open channel, the last
interval it notified and its start time. Sinks (Kafka, EventBridge JSON lines, Kinesis records) render
a notification as bytes.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Callable, Literal, Mapping, Optional

import orjson

from schemas.events import event_id

DETAIL_TYPE = "VoiceToneAnalysisStatus"
SERVICE_TYPE = "VoiceAnalytics"
SUCCESSFUL, FAILURE, COMPLETED = "VoiceToneAnalysisSuccessful", "VoiceToneAnalysisFailure", "VoiceToneAnalysisCompleted"
ROLES = ("AGENT", "CUSTOMER")
NO_SPEECH = "no_speech"  # the SUMMARY label of a stretch without active speech
SINKS = ("kafka", "stdout", "kinesis")
FAILURE_MESSAGE = "Voice tone analysis failed: the channel ended without speech"
#: ``detail`` fields a channel's frame ``meta`` may set (string values; ``channelId`` digits,
#: ``isCaller`` "true"/"false", ``participantRole`` AGENT/CUSTOMER; other values are ignored).
META_FIELDS = ("taskId", "callId", "transactionId", "voiceConnectorId", "mediaInsightsPipelineId", "sourceArn",
               "streamArn", "channelId", "participantRole", "isCaller", "startFragmentNumber")
_MAX_OPEN_CHANNELS = 100_000


def task_id(call_id: str, channel: str) -> str:
    """The ``taskId`` of a channel whose frames carry none: a UUIDv5 of (call, channel), the same every time,
    so a consumer can compute it (``schemas.events.event_id(call_id, channel, "voice_tone_task", 0)``)."""
    return event_id(call_id, channel, "voice_tone_task", 0)


def parse_roles(text: str) -> dict[str, str]:
    """``"agent=AGENT,customer=CUSTOMER"`` -> {channel: role}; "" -> {}. Raises ValueError, saying what is wrong."""
    roles: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        channel, sep, role = (x.strip() for x in part.partition("="))
        if not sep or not channel or role.upper() not in ROLES:
            raise ValueError(f"chime roles: {part!r} is not CHANNEL=AGENT or CHANNEL=CUSTOMER")
        if channel in roles:
            raise ValueError(f"chime roles: channel {channel!r} is given twice")
        roles[channel] = role.upper()
    return roles


@dataclass(frozen=True)
class ChimeConfig:
    """How notifications are made; every field has a ``VOICETONE_CHIME_*`` setting (``from_settings``)."""

    interval_ms: int = 5000
    roles: Mapping[str, str] = field(default_factory=dict)   # channel -> AGENT | CUSTOMER
    caller: Optional[str] = None                              # the channel that placed the call
    source: str = "aws.chime"
    account: str = ""
    region: str = ""
    voice_connector_id: Optional[str] = None
    media_insights_pipeline_id: Optional[str] = None
    scores: Literal["number", "string"] = "number"

    def __post_init__(self) -> None:
        if self.interval_ms <= 0:
            raise ValueError(f"chime interval must be positive, not {self.interval_ms / 1000:g} s")
        bad = {c: r for c, r in self.roles.items() if r not in ROLES}
        if bad:
            raise ValueError(f"chime roles must be AGENT or CUSTOMER: {bad}")
        if self.caller is not None and (not self.caller or (self.roles and self.caller not in self.roles)):
            raise ValueError(f"chime caller {self.caller!r} is not one of the channels the roles name "
                             f"({', '.join(self.roles)})")
        if self.scores not in ("number", "string"):
            raise ValueError(f"chime scores must be number or string, not {self.scores!r}")

    @classmethod
    def from_settings(cls, s, roles: Optional[str] = None, caller: Optional[str] = None,
                      interval_s: Optional[float] = None) -> "ChimeConfig":
        """From ``Settings``; the arguments (CLI flags) override their settings when given."""
        return cls(interval_ms=round(1000 * (s.chime_interval_s if interval_s is None else interval_s)),
                   roles=parse_roles(s.chime_roles if roles is None else roles),
                   caller=s.chime_caller if caller is None else caller, source=s.chime_source,
                   account=s.chime_account, region=s.chime_region, voice_connector_id=s.chime_voice_connector_id,
                   media_insights_pipeline_id=s.chime_media_insights_pipeline_id, scores=s.chime_scores)


def iso_ms(epoch_ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as Chime writes times: ``2022-08-26T17:55:15.563Z``."""
    t = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _tone(summary: dict, start_ts_ms: int, scores: str) -> dict:
    def score(label: str):
        p = round(float(summary["sentiment"][label]), 4)
        return str(p) if scores == "string" else p

    return {
        "startTime": iso_ms(start_ts_ms + summary["start_ms"]),
        "endTime": iso_ms(start_ts_ms + summary["end_ms"]),
        "beginOffsetMillis": summary["start_ms"],
        "endOffsetMillis": summary["end_ms"],
        "voiceToneLabel": summary["label"],
        "voiceToneScore": {k: score(k) for k in ("neutral", "positive", "negative")},
    }


def _ids(event: dict, cfg: ChimeConfig) -> dict:
    """The ids in ``detail``: the channel's frame meta first, then the settings; left out when neither has one."""
    meta, channel = event.get("meta") or {}, event["channel"]
    ids: dict = {
        "taskId": meta.get("taskId") or task_id(event["call_id"], channel),
        "callId": meta.get("callId") or event["call_id"],
        "transactionId": meta.get("transactionId") or event["call_id"],
    }
    for key, default in (("voiceConnectorId", cfg.voice_connector_id),
                         ("mediaInsightsPipelineId", cfg.media_insights_pipeline_id),
                         ("sourceArn", None), ("streamArn", None), ("startFragmentNumber", None)):
        if meta.get(key) or default:
            ids[key] = meta.get(key) or default
    channel_id = meta.get("channelId", channel)
    if channel_id.isdigit():
        ids["channelId"] = int(channel_id)
    role = meta.get("participantRole", "").upper()
    role = role if role in ROLES else cfg.roles.get(channel)
    if role:
        ids["participantRole"] = role
    is_caller = meta.get("isCaller", "").lower()
    if is_caller in ("true", "false"):
        ids["isCaller"] = is_caller == "true"
    elif cfg.caller is not None:
        ids["isCaller"] = channel == cfg.caller
    return ids


def notification(status: str, event: dict, cfg: ChimeConfig, start_ts_ms: int, index: int = 0,
                 current: Optional[dict] = None) -> dict:
    """One Chime notification (EventBridge envelope and ``detail``) for an aggregate or call event.

    ``start_ts_ms``: wall-clock time of the channel's audio offset 0; ``index``: which interval of the
    channel it reports (the id is a UUIDv5 of call, channel, status and index, so a replay repeats it);
    ``current``: the current average (left out when None)."""
    detail: dict = {"detailStatus": status}
    if status == FAILURE:
        detail["statusMessage"] = FAILURE_MESSAGE
    else:
        details = {} if current is None else {"currentAverageVoiceTone": _tone(current, start_ts_ms, cfg.scores)}
        details["overallAverageVoiceTone"] = _tone(event["overall"], start_ts_ms, cfg.scores)
        detail["voiceToneAnalysisDetails"] = details
    detail = {**_ids(event, cfg), **detail}
    return {
        "version": "0",
        "id": event_id(event["call_id"], event["channel"], f"chime:{status}", index),
        "detail-type": DETAIL_TYPE,
        "service-type": SERVICE_TYPE,
        "source": cfg.source,
        "account": cfg.account,
        "time": iso_ms(event["emitted_at_ms"]),
        "region": cfg.region,
        "resources": [],
        "detail": detail,
    }


@dataclass
class _Channel:
    start_ts_ms: int
    interval: int = 0                    # the last interval notified (0: none yet)
    current: Optional[dict] = None       # the last aggregate's current, for a call event without one


class ChimeBridge:
    """Turns one stream of voicetone events (in each channel's order) into Chime notifications."""

    def __init__(self, config: Optional[ChimeConfig] = None) -> None:
        self.config = config or ChimeConfig()
        self._channels: dict[tuple[str, str], _Channel] = {}
        # channels whose final notification went out: the aggregate and call topics are read together, and a
        # backlog can hand over a channel's call event before its last aggregates; the final event stays final
        self._ended: dict[tuple[str, str], None] = {}

    def _channel(self, event: dict) -> _Channel:
        key = (event["call_id"], event["channel"])
        ch = self._channels.get(key)
        if ch is None:
            start = event.get("audio_start_ts_ms")
            if start is None:  # frames without ts_ms: the start as the first event seen places it, once
                start = max(0, event["emitted_at_ms"] - event["overall"]["end_ms"])
            if len(self._channels) >= _MAX_OPEN_CHANNELS:  # channels whose call event never came
                del self._channels[next(iter(self._channels))]
            ch = self._channels[key] = _Channel(start)
        return ch

    def feed(self, event: dict) -> list[dict]:
        """The notifications an event gives: none, or one. Segment events and dead letters give none."""
        kind = event.get("type")
        if kind not in ("aggregate", "call") or (event["call_id"], event["channel"]) in self._ended:
            return []
        if kind == "aggregate":
            ch = self._channel(event)
            ch.current = event["current"]
            interval = event["overall"]["end_ms"] // self.config.interval_ms
            if interval <= ch.interval:
                return []
            ch.interval = interval
            if event["overall"]["label"] == NO_SPEECH:
                return []  # nothing to report yet; Chime sends no per-interval failure
            return [notification(SUCCESSFUL, event, self.config, ch.start_ts_ms, interval, event["current"])]
        ch = self._channel(event)
        key = (event["call_id"], event["channel"])
        del self._channels[key]
        if len(self._ended) >= _MAX_OPEN_CHANNELS:
            del self._ended[next(iter(self._ended))]
        self._ended[key] = None
        if event["overall"]["label"] == NO_SPEECH:  # the channel never spoke
            return [notification(FAILURE, event, self.config, ch.start_ts_ms)]
        # a call event from before calls carried `current`, whose aggregates went unseen, has none to give
        current = event.get("current") or ch.current
        return [notification(COMPLETED, event, self.config, ch.start_ts_ms, current=current)]


# ------------------------------------------------------------------ sinks

def eventbridge_line(note: dict) -> bytes:
    """The notification as EventBridge delivers it: one JSON object."""
    return orjson.dumps(note)


def kinesis_record(note: dict) -> bytes:
    """A Kinesis ``PutRecords`` entry: the JSON notification base64-encoded in ``Data``, partitioned by call
    (``transactionId``). Lines of these, gathered into ``Records``, are ``aws kinesis put-records`` input."""
    return orjson.dumps({"Data": base64.b64encode(orjson.dumps(note)).decode("ascii"),
                         "PartitionKey": note["detail"]["transactionId"]})


def stream_sink(fmt: Literal["stdout", "kinesis"] = "stdout", out: Optional[IO[str]] = None) -> Callable[[dict], None]:
    """A sink writing one line per notification: EventBridge JSON (``stdout``) or a Kinesis record."""
    render = kinesis_record if fmt == "kinesis" else eventbridge_line

    def write(note: dict) -> None:
        print(render(note).decode(), file=out or sys.stdout, flush=True)

    return write


def run_bridge(settings, config: ChimeConfig, sink: str = "kafka", topic: Optional[str] = None,
               group: str = "voicetone-chime", from_beginning: bool = False,
               idle_exit_s: Optional[float] = None, call_id: Optional[str] = None,
               connect_timeout_s: float = 10.0) -> int:
    """Consume the aggregate and call topics and publish Chime notifications to ``sink`` until stopped;
    `BrokerUnavailable` when the broker does not answer within ``connect_timeout_s``."""
    if sink not in SINKS:
        raise ValueError(f"chime sink must be one of {', '.join(SINKS)}, not {sink!r}")
    from voicetone.watch import consume_events

    bridge = ChimeBridge(config)
    producer, errors = None, []
    if sink == "kafka":
        from confluent_kafka import Producer

        from streams.kafka_client import client_config

        # its log goes through Python logging, rate-limited, like every client of the tools
        producer = Producer(client_config(settings, **{"enable.idempotence": True}))
        out_topic = topic or settings.chime_topic

        def on_delivery(err, _msg) -> None:
            if err is not None:
                errors.append(str(err))

        def write(note: dict) -> None:
            producer.produce(out_topic, key=note["detail"]["transactionId"].encode(), value=eventbridge_line(note),
                             on_delivery=on_delivery)
            producer.poll(0)
    else:
        write = stream_sink(sink)

    def on_event(event: dict) -> bool:
        for note in bridge.feed(event):
            write(note)
        return True

    try:
        consume_events(settings, on_event, from_beginning, idle_exit_s, call_id,
                       topics=[settings.aggregates_topic, settings.calls_topic], group_id=group,
                       connect_timeout_s=connect_timeout_s)
    finally:
        if producer is not None and (producer.flush(30) or errors):
            raise RuntimeError(f"Chime notifications not delivered to Kafka: {errors[:3] or 'flush timed out'}")
    return 0
