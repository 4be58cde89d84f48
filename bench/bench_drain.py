"""The whole worker reading a backlog: what Faust, Kafka, decoding, windowing and publishing cost per frame.

`bench_ingest.py` times the worker's ingest code in process and behind a plain consumer; this one runs the
real worker process (`python -m voicetone worker`: Faust, aiokafka, the agent, the producer) on a topic
filled beforehand, and reads its segment events from the start. With `--audio silence` (the default) every
window is below the silence level, so the silence gate answers it without the model: what is measured is
the pipeline around the model, the part the target "at most 30% on top of inference" is about. With
`--audio speech` (the bundled sample calls) the model runs too, and the same windows are also put through
the model path alone in this process (`run_model`: silence gate, any resampling, `predict`, in batches of the
worker's `max_batch_size`, `inference_workers` calls at once as in the worker): the drain's windows/s against that is the end-to-end cost of everything around
the model, on the same windows, machine and batch size (the target "at least 70% of the model-only
ceiling").

Reported per run: windows/s and frames/s from the first segment to the last (frames = windows x frames per
2.5 s hop), the worker's CPU seconds over the same span per 1000 frames, and the ratio to a plain
confluent-kafka consumer reading the same topic on the same broker. Runs of each setting alternate
(`--loops asyncio,uvloop` compares the worker's event loops; any other VOICETONE_* setting can be set in
the environment).

    python -m bench.bench_drain [--channels 100] [--seconds 60] [--audio silence] [--loops asyncio,uvloop] [--repeats 2]
    python -m bench.bench_drain --model-only [--channels 100] [--seconds 30]   # the model path alone, one JSON line

`--model-only` (the sample calls, no broker, no worker) is the ceiling `bench_e2e.py --ceiling` measures
beside each live run, in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._common import OUTPUT_TOPICS, create_topics, exit_on_sigterm, load_average, machine, synthetic_frames
from bench.bench_e2e import INPUT, RATE, Targets
from bench.bench_ingest import _assignment, consume, prefill
from voicetone.broker import EmbeddedBroker
from streams.settings import Settings

WINDOW_MS, HOP_MS = Settings.model_fields["window_ms"].default, Settings.model_fields["hop_ms"].default


def expected_windows(channels: int, seconds: float) -> int:
    """Full windows per channel (no end frames: a last partial window is never cut)."""
    ms = int(seconds * 1000)
    return channels * (0 if ms < WINDOW_MS else (ms - WINDOW_MS) // HOP_MS + 1)


def segment_consumer(broker: str):
    """A consumer of the segments topic from its start, assigned before the worker starts."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": broker, "group.id": f"bench-drain-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign(_assignment(broker, OUTPUT_TOPICS[0]))
    return c


def read_segments(c, expected: int, targets: Targets, timeout: float) -> dict:
    """Segments until `expected` arrived. The span is taken from the segments' own timestamps (set by the
    worker's producer as it sends them), the worker's CPU from samples taken meanwhile, interpolated."""
    import numpy as np

    n, first_ms, last_ms = 0, float("inf"), float("-inf")   # producer timestamps of the segments
    cpu = [(time.time(), targets.cpu_seconds())]
    deadline = time.monotonic() + timeout
    while n < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} of {expected} segments within {timeout:.0f} s")
        if targets.exited():
            raise RuntimeError(targets.exited())
        for m in c.consume(num_messages=1000, timeout=0.05):
            if m.error() is None:
                n += 1
                ts = m.timestamp()[1]
                first_ms, last_ms = min(first_ms, ts), max(last_ms, ts)
        cpu.append((time.time(), targets.cpu_seconds()))
    first, last = first_ms / 1000, last_ms / 1000
    t, s = np.array([x[0] for x in cpu]), np.array([x[1] for x in cpu])
    span = last - first
    if span < 1.0:
        raise RuntimeError(f"all segments within {span:.2f} s: too little work to time; raise --seconds or --channels")
    return {"span_s": span, "cpu_s": float(np.interp(last, t, s) - np.interp(first, t, s)), "segments": n}


def model_only(frames, settings: Settings) -> dict:
    """Windows/s of the model path alone on the windows that `frames` make (cut untimed, in process), run as
    the worker runs it: `inference_workers` calls at once, torch's threads divided among them."""
    from concurrent.futures import ThreadPoolExecutor

    from model import load
    from streams.inference import run_model
    from streams.pipeline import StreamProcessor
    from streams.silence import SilenceGate
    from voicetone.worker import set_inference_threads

    threads = set_inference_threads(settings)
    model = load(settings.model_path, device=settings.device, precision=settings.precision, jit=settings.jit)
    proc = StreamProcessor(settings, model.version, model.sample_rate)
    windows = proc.ingest_many([(value, key, 0, None) for key, value in frames]).windows
    gate, size = SilenceGate(proc.config.silence_dbfs), settings.max_batch_size
    batches = [windows[i:i + size] for i in range(0, len(windows), size)]

    def run(batch):
        return run_model(model, gate, batch, [proc.rate_of(w) for w in batch])[2]

    with ThreadPoolExecutor(settings.inference_workers) as pool:
        list(pool.map(run, batches[:settings.inference_workers]))   # warm-up (and the trace)
        started, cpu0 = time.perf_counter(), time.process_time()
        skipped = sum(pool.map(run, batches))
        took, cpu_s = time.perf_counter() - started, time.process_time() - cpu0
    modelled = len(windows) - skipped
    return {"windows": len(windows), "silent": skipped, "windows_per_s": len(windows) / took, "batch": size,
            "inference_workers": settings.inference_workers, "torch_threads": threads, "seconds_timed": took,
            "cpu_s": cpu_s, "cpu_ms_per_model_window": cpu_s * 1000 / modelled if modelled else float("nan")}


def run_once(loop: str, frames, args, expected: int, tag: str) -> dict:
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=str(logdir / f"broker-{tag}.log")).start()
    targets = None
    try:
        create_topics(broker.url, [INPUT, *OUTPUT_TOPICS], args.partitions)
        prefill(broker.url, INPUT, frames, args.partitions)
        plain = consume(broker.url, INPUT, len(frames), ingest=False)["fps"]
        reader = segment_consumer(broker.url)
        try:
            os.environ["VOICETONE_EVENT_LOOP"] = loop
            targets = Targets.start("voicetone", 1, broker.url, args.partitions, logdir, tag)
            r = read_segments(reader, expected, targets, args.timeout)
        finally:
            reader.close()
    finally:
        if targets is not None:
            targets.stop()
        broker.stop()
    hop_frames = HOP_MS // args.frame_ms
    wps = (r["segments"] - args.channels) / r["span_s"]     # after each channel's first window, one per hop
    fps = wps * hop_frames
    return {"loop": loop, "windows_per_s": wps, "frames_per_s": fps, "plain_consumer_fps": plain,
            "ratio_vs_plain": fps / plain, "worker_cpu_pct": 100 * r["cpu_s"] / r["span_s"],
            "worker_cpu_ms_per_1k_frames": 1e6 * r["cpu_s"] / (fps * r["span_s"]), **r}


def main(argv=None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per channel")
    p.add_argument("--frame-ms", type=int, default=100, help="must divide 2500")
    p.add_argument("--audio", choices=("silence", "speech"), default="silence")
    p.add_argument("--loops", default="asyncio,uvloop", help="event loops to compare, alternated")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600.0, help="longest a run may take to publish every window")
    p.add_argument("--logdir", default="/tmp/voicetone-bench-drain")
    p.add_argument("--model-only", action="store_true",
                   help="only the model path alone on the sample calls' windows (VOICETONE_* settings): one JSON line")
    args = p.parse_args(argv)
    if HOP_MS % args.frame_ms:
        p.error("--frame-ms must divide 2500")
    console = Console(stderr=True, width=150)
    per_channel = int(args.seconds * 1000 / args.frame_ms)
    if args.model_only:
        frames = synthetic_frames(args.channels, per_channel, args.frame_ms, RATE)
        print(json.dumps({"bench": "model-only", "machine": machine(), "channels": args.channels,
                          "seconds": args.seconds, **model_only(frames, Settings())}))
        return 0
    frames = synthetic_frames(args.channels, per_channel, args.frame_ms, RATE, silent=args.audio == "silence")
    expected = expected_windows(args.channels, args.seconds)
    load_before = load_average()
    runs, ceilings = [], []
    for i in range(args.repeats):
        if args.audio == "speech":
            ceilings.append(model_only(frames, Settings()))
            console.print(f"  model path alone on the same windows: {ceilings[-1]['windows_per_s']:7,.0f} windows/s "
                          f"({ceilings[-1]['silent']} of {ceilings[-1]['windows']} silent, batch {ceilings[-1]['batch']})")
        for loop in args.loops.split(","):
            r = run_once(loop, frames, args, expected, f"{loop[:2]}{i}")
            runs.append(r)
            console.print(f"  {loop:8s} {r['frames_per_s']:9,.0f} frames/s  {r['windows_per_s']:7,.0f} windows/s  "
                          f"worker {r['worker_cpu_pct']:4.0f}% CPU, {r['worker_cpu_ms_per_1k_frames']:6.1f} CPU-ms per "
                          f"1000 frames  plain consumer {r['plain_consumer_fps']:9,.0f} frames/s")
    ceiling = max((c["windows_per_s"] for c in ceilings), default=None)
    t = Table(title=f"the worker draining a backlog: {args.channels} channels x {args.seconds:.0f} s, {args.frame_ms} ms "
                    f"frames, {args.audio}; {len(frames):,} frames, {expected:,} windows; load avg before {load_before}, "
                    f"{machine()['cpus']} CPUs")
    columns = ["event loop", "runs", "frames/s (best)", "windows/s (best)", "vs plain consumer (best)",
               "worker CPU-ms per 1000 frames (each run)"]
    if ceiling:
        columns.append(f"vs model path alone ({ceiling:,.0f} windows/s, best)")
    for c in columns:
        t.add_column(c, justify="right")
    for loop in args.loops.split(","):
        rs = [r for r in runs if r["loop"] == loop]
        best = max(rs, key=lambda r: r["frames_per_s"])
        row = [loop, str(len(rs)), f"{best['frames_per_s']:,.0f}", f"{best['windows_per_s']:,.0f}",
               f"{best['ratio_vs_plain']:.1%}", ", ".join(f"{r['worker_cpu_ms_per_1k_frames']:.0f}" for r in rs)]
        t.add_row(*row, *([f"{best['windows_per_s'] / ceiling:.0%}"] if ceiling else []))
    console.print(t)
    print(json.dumps({"bench": "drain", "machine": {**machine(), "loadavg_before": load_before},
                      "args": vars(args), "frames": len(frames), "expected_windows": expected, "runs": runs,
                      "model_only": ceilings, "vs_model_only": {
                          loop: max(r["windows_per_s"] for r in runs if r["loop"] == loop) / ceiling
                          for loop in args.loops.split(",")} if ceiling else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
