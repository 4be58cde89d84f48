"""Peer (a): the pipeline as a straightforward Faust agent, one event at a time.

What a Faust user would write first: an agent over `audio.frames` that keeps
a per-(call, channel) buffer of decoded audio, cuts 5 s windows every 2.5 s,
runs the model once per window (batch of 1, in a thread pool so the event
loop keeps heartbeating), and publishes the contract's segment and aggregate
events. No batching across calls. On the channel's `end` frame a shorter last
window (>= 1 s of new audio) and a call summary are published.

    python -m bench.peers.faust_naive --broker 127.0.0.1:9092 [--partitions 8]

Settings from the environment as for the worker: VOICETONE_MODEL_PATH, VOICETONE_PRECISION,
VOICETONE_DEVICE, VOICETONE_INFERENCE_THREADS, and the consumer-group timings
VOICETONE_SESSION_TIMEOUT_S, _HEARTBEAT_INTERVAL_S, _REBALANCE_TIMEOUT_S, _COMMIT_INTERVAL_S, and the
broker fetch wait VOICETONE_FETCH_MAX_WAIT_MS (50, as the worker's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np
import orjson

from bench.peers.common import (HOP_MS, WINDOW_MS, aggregate_event, load_model, predict_one,
                                samples_of, segment_event, unpack)
from streams.app import faust_datadir, set_fetch_max_wait
from streams.aggregation import ChannelAggregate
from schemas.events import event_id


class ChannelBuffer:
    """Decoded audio of one channel since the start of its next window."""

    def __init__(self, rate: int):
        self.rate = rate
        self.win = rate * WINDOW_MS // 1000
        self.hop = rate * HOP_MS // 1000
        self.chunks: list[np.ndarray] = []
        self.buffered = 0
        self.index = 0          # next window's index; it starts at index * hop samples
        self.total = 0          # samples received
        self.agg = ChannelAggregate()

    def add(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.chunks.append(samples)
        self.buffered += samples.size
        self.total += samples.size
        out = []
        while self.buffered >= self.win:
            audio = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
            out.append((self.index, audio[:self.win]))
            rest = audio[self.hop:]
            self.chunks, self.buffered = [rest], rest.size
            self.index += 1
        return out

    def last(self) -> list[tuple[int, np.ndarray]]:
        """The shorter last window, if it holds >= 1 s and audio no window covered."""
        covered = (self.index - 1) * self.hop + self.win if self.index else 0
        if self.buffered >= self.rate and self.total > covered:
            return [(self.index, np.concatenate(self.chunks))]
        return []


def build_app(broker: str, partitions: int) -> faust.App:
    env = os.environ.get
    # the same 50 ms fetch wait as the voicetone worker: Faust hard-codes 1500 ms, which alone put
    # this peer's p50 at ~550-650 ms and decided its capacity at the 1 s bound (docs/benchmarks.md)
    set_fetch_max_wait(int(env("VOICETONE_FETCH_MAX_WAIT_MS", "50")))
    app = faust.App(
        "faust-naive", broker=f"kafka://{broker}", value_serializer="raw", key_serializer="raw",
        store="memory://", topic_partitions=partitions, web_enabled=False,
        datadir=faust_datadir("faust-naive"), consumer_auto_offset_reset="earliest",
        broker_session_timeout=float(env("VOICETONE_SESSION_TIMEOUT_S", "60")),
        broker_heartbeat_interval=float(env("VOICETONE_HEARTBEAT_INTERVAL_S", "3")),
        broker_rebalance_timeout=float(env("VOICETONE_REBALANCE_TIMEOUT_S", "60")),
        broker_commit_interval=float(env("VOICETONE_COMMIT_INTERVAL_S", "2")),
        producer_linger_ms=5, logging_config=None,
    )
    frames = app.topic("audio.frames", key_type=bytes, value_type=bytes)
    segments = app.topic("sentiment.segments", key_serializer="raw", value_serializer="raw")
    aggregates = app.topic("sentiment.aggregates", key_serializer="raw", value_serializer="raw")
    calls = app.topic("sentiment.calls", key_serializer="raw", value_serializer="raw")
    m = load_model()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    buffers: dict[tuple[str, str], ChannelBuffer] = {}

    async def emit(key: bytes, call_id: str, channel: str, buf: ChannelBuffer, windows) -> None:
        loop = asyncio.get_running_loop()
        for index, audio in windows:
            sp, probs = await loop.run_in_executor(pool, predict_one, m, audio, buf.rate)
            start_ms = index * HOP_MS
            seg = segment_event(call_id, channel, index, start_ms, start_ms + audio.size * 1000 // buf.rate,
                                sp, probs, m.version)
            agg = aggregate_event(buf.agg, seg)
            await segments.send(key=key, value=orjson.dumps(seg))
            await aggregates.send(key=key, value=orjson.dumps(agg))

    @app.agent(frames)
    async def process(stream):
        async for key, value in stream.items():
            try:
                f = unpack(value)
                samples = samples_of(f)
            except Exception as exc:  # a bad frame must not stop the agent
                print(f"skipping bad frame: {exc}", file=sys.stderr)
                continue
            ckey = (f["call_id"], f.get("channel", "0"))
            buf = buffers.get(ckey)
            if buf is None:
                buf = buffers[ckey] = ChannelBuffer(f["sample_rate"])
            await emit(key, ckey[0], ckey[1], buf, buf.add(samples))
            if f.get("end"):
                await emit(key, ckey[0], ckey[1], buf, buf.last())
                del buffers[ckey]
                summary = {"type": "call", "v": 1, "event_id": event_id(ckey[0], ckey[1], "call", 0),
                           "call_id": ckey[0], "channel": ckey[1], "overall": buf.agg.overall(),
                           "segments": buf.agg.segments, "duration_ms": buf.total * 1000 // buf.rate,
                           "ended_by": "end", "model_version": m.version}
                await calls.send(key=key, value=orjson.dumps(summary))

    return app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default=os.environ.get("VOICETONE_BROKER", "127.0.0.1:9092").split("://")[-1])
    p.add_argument("--partitions", type=int, default=8)
    args = p.parse_args()
    app = build_app(args.broker, args.partitions)
    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
