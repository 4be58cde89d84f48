"""Where a process's CPU goes, by pipeline part, from a py-spy raw (collapsed-stack) profile.

    python -m bench.bench_e2e --target voicetone --channels 375 --warmup 15 --measure 75 &
    sleep 40; py-spy record -p $(pgrep -f "voicetone worker" | head -1) -d 40 -r 50 --format raw \\
        --threads --nonblocking -o /tmp/live.txt
    python -m bench.pyspy_shares /tmp/live.txt [--frames-per-s 3750] [--cpu 1.31]

Each sample goes to the first part (in the order of ``PARTS``) whose pattern a frame of its stack
matches; the rest is "other" (the event loop itself, Faust's services). With the frame rate and the
process's CPU (cores) it also prints microseconds of CPU per frame for each part.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

PARTS = [
    ("model calls", r"VoiceToneModel\.predict "),
    ("resampling", r"resample_fft_rows "),
    ("ingest (decode, windowing)", r"StreamProcessor\.ingest_many |Worker\._ingest "),
    ("checkpoints and housekeeping", r"Worker\._housekeeping |request_checkpoint |_commit_watermarks "),
    ("batch assembly (gate, stacking)", r"model_batch |Worker\._run_batch "),
    ("publishing", r"Worker\._apply |Worker\._publish |AIOKafkaClient\.send |Producer|_send "),
    ("Kafka consumer thread", r"_fetch_records |Fetcher\.|AIOKafkaConsumerThread|ServiceThread\._start_thread "),
]


def shares(lines) -> tuple[int, collections.Counter]:
    patterns = [(name, re.compile(rx)) for name, rx in PARTS]
    total, counts = 0, collections.Counter()
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack:
            continue
        total += int(n)
        frames = stack.split(";")
        part = next((name for name, rx in patterns if any(rx.search(f) for f in frames)), "other")
        counts[part] += int(n)
    return total, counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile", help="py-spy record --format raw output")
    p.add_argument("--frames-per-s", type=float, help="frames the process handled per second during the profile")
    p.add_argument("--cpu", type=float, help="the process's CPU during the profile, in cores (1.31 = 131%%)")
    args = p.parse_args()
    with open(args.profile) as f:
        total, counts = shares(f)
    per_frame = args.frames_per_s and args.cpu
    print(f"{'part':34} {'share':>7}" + (f" {'µs/frame':>9}" if per_frame else ""))
    rows = {}
    for name in [n for n, _ in PARTS] + ["other"]:
        share = counts[name] / total if total else 0.0
        us = share * args.cpu / args.frames_per_s * 1e6 if per_frame else None
        rows[name] = {"share": round(share, 4), "us_per_frame": None if us is None else round(us, 1)}
        print(f"{name:34} {100 * share:6.1f}%" + (f" {us:9.1f}" if us is not None else ""))
    print(json.dumps({"samples": total, "parts": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
