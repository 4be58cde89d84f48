"""Peer (b): the pipeline written with Quix Streams.

As the Quix docs suggest: a StreamingDataFrame over `audio.frames` keyed by
call ID, a hopping window of 5 s every 2.5 s per key (event time = the frame's
`ts_ms`), whose aggregation gathers the frames of the window, closed with
`.final()`; then a stateful step that runs the model once per (window,
channel) and keeps each channel's running aggregate in Quix state, and the
segment / aggregate events go to their topics.

The window state is serialised as JSON by Quix, so the audio travels through
it as base64 text. Two aggregations are available: `collect` (default; Quix's
own "gather every value" collector, stored once per message) and `reduce` (a
custom reducer that appends each frame to a per-channel dict, re-serialised on
every message, the way one writes it with `.reduce`).

Window times are aligned to the epoch (Quix windows are), not to each
channel's start, so a segment's `start_ms`/`end_ms` are computed from the
first and last frame `seq` in it. No call summaries (Quix windows have no
"channel ended" hook; a user would add a separate branch for `end` frames).

Runs in its own virtual environment (quixstreams pins an older confluent-kafka):

    bench/.venv-quix/bin/python -m bench.peers.quix_app --broker 127.0.0.1:9092 [--window collect|reduce]
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile

import numpy as np
from quixstreams import Application
from quixstreams.models.serializers import Deserializer

from bench.peers.common import HOP_MS, WINDOW_MS, aggregate_event, load_model, predict_one, segment_event
from schemas.audio import decode_audio
from streams.aggregation import ChannelAggregate
import msgpack


class FrameDeserializer(Deserializer):
    """msgpack frame -> dict; audio as base64 text, since Quix state is JSON."""

    def __call__(self, value: bytes, ctx) -> dict:
        f = msgpack.unpackb(value, raw=False)
        return {"call_id": f["call_id"], "channel": f.get("channel", "0"), "seq": f["seq"],
                "rate": f["sample_rate"], "encoding": f["encoding"], "ts_ms": f.get("ts_ms", 0),
                "audio": base64.b64encode(f["audio"]).decode("ascii")}


def reduce_init(frame: dict) -> dict:
    return reduce_frame({}, frame)


def reduce_frame(acc: dict, frame: dict) -> dict:
    ch = acc.get(frame["channel"])
    if ch is None:
        ch = acc[frame["channel"]] = {"call_id": frame["call_id"], "rate": frame["rate"],
                                      "encoding": frame["encoding"], "seqs": [], "audio": []}
    ch["seqs"].append(frame["seq"])
    ch["audio"].append(frame["audio"])
    return acc


def channels_of(window: dict, mode: str) -> dict:
    """{channel: {call_id, rate, encoding, seqs, audio}} from either aggregation."""
    if mode == "reduce":
        return window["value"]
    acc: dict = {}
    for frame in window["value"]:
        reduce_frame(acc, frame)
    return acc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default=os.environ.get("VOICETONE_BROKER", "127.0.0.1:9092").split("://")[-1])
    p.add_argument("--window", choices=("collect", "reduce"), default="collect")
    p.add_argument("--group", default="quix-voicetone")
    p.add_argument("--state-dir", default=None)
    args = p.parse_args()
    m = load_model()
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="quix-state-")
    app = Application(broker_address=args.broker, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=state_dir, loglevel="WARNING",
                      # librdkafka holds a fetch up to 500 ms by default; a latency-minded user lowers
                      # it, as the voicetone worker does (fetch_max_wait_ms=50)
                      consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                                             "fetch.wait.max.ms": 50})
    frames = app.topic("audio.frames", value_deserializer=FrameDeserializer(), key_deserializer="str",
                       timestamp_extractor=lambda value, headers, ts, ts_type: value["ts_ms"] or ts)
    segments = app.topic("sentiment.segments", value_serializer="json", key_serializer="str")
    aggregates = app.topic("sentiment.aggregates", value_serializer="json", key_serializer="str")

    sdf = app.dataframe(frames)
    window = sdf.hopping_window(duration_ms=WINDOW_MS, step_ms=HOP_MS)
    window = window.collect() if args.window == "collect" else window.reduce(reduce_frame, reduce_init)
    sdf = window.final()

    def run_model(window: dict, state) -> list[dict]:
        events = []
        for channel, ch in channels_of(window, args.window).items():
            order = np.argsort(ch["seqs"])
            audio = b"".join(base64.b64decode(ch["audio"][i]) for i in order)
            samples = decode_audio(ch["encoding"], audio)
            rate = ch["rate"]
            frame_len = samples.size // len(order)
            first, last = ch["seqs"][order[0]], ch["seqs"][order[-1]]
            start_ms = first * frame_len * 1000 // rate
            end_ms = (last + 1) * frame_len * 1000 // rate
            sp, probs = predict_one(m, samples, rate)
            seg = segment_event(ch["call_id"], channel, round(start_ms / HOP_MS), start_ms, end_ms, sp, probs,
                                m.version)
            agg = ChannelAggregate.from_dict(state.get(channel)) if state.exists(channel) else ChannelAggregate()
            events.append(seg)
            events.append(aggregate_event(agg, seg))
            state.set(channel, agg.to_dict())
        return events

    events = sdf.apply(run_model, stateful=True, expand=True)
    events.filter(lambda e: e["type"] == "segment").to_topic(segments)
    events.filter(lambda e: e["type"] == "aggregate").to_topic(aggregates)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
