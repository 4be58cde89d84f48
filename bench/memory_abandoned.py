"""Memory of abandoned calls: RSS while N channels are open and after they expire.

The worker's state for a channel is its `StreamProcessor` entry; a call that
starts and never sends `end` is closed by the idle timeout. This drives the
processor in-process (no broker, no model: abandoned calls never fill a
window) for several rounds of N calls, each sending a few 100 ms frames, and
prints RSS at the start, with every channel open, and after expiry, per round.
Flat "after" figures across rounds mean nothing leaks; "open - start" divided
by N is the cost of one open channel.

    python -m bench.memory_abandoned --calls 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import json

import numpy as np

from schemas.audio import encode_audio
from schemas.frames import encode_frame
from streams.heap import release_free_memory
from streams.pipeline import StreamProcessor
from streams.settings import ProcessorConfig


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def frame(call: str, seq: int, rate: int, audio: bytes) -> bytes:
    return encode_frame({"v": 1, "call_id": call, "channel": "0", "seq": seq, "sample_rate": rate,
                         "encoding": "pcm_s16le", "audio": audio})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=5, help="100 ms frames each abandoned call sends")
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--no-trim", dest="trim", action="store_false",
                    help="do not give free heap memory back after expiry (the worker does)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    audio = encode_audio("pcm_s16le", (0.1 * rng.standard_normal(args.rate // 10)).astype(np.float32))
    p = StreamProcessor(ProcessorConfig(idle_timeout_s=1.0, max_active_channels=args.calls + 1), "bench")
    start = rss_mb()
    rows = []
    offset = 0
    for r in range(args.rounds):
        for i in range(args.calls):
            call = f"r{r}-call-{i:06d}"
            for seq in range(args.frames):
                p.ingest(frame(call, seq, args.rate, audio), call.encode(), 0, offset, now=float(r * 10))
                offset += 1
        open_channels = p.open_channels
        opened = rss_mb()
        out = p.expire_idle(now=float(r * 10 + 5))
        gc.collect()
        kept = rss_mb()
        if args.trim:
            release_free_memory()  # what the worker does after expiring many channels
        after = rss_mb()
        rows.append({"round": r + 1, "open_channels": open_channels, "summaries": len(out.calls),
                     "rss_open_mb": round(opened, 1), "rss_expired_mb": round(kept, 1),
                     "rss_after_mb": round(after, 1),
                     "kb_per_open_channel": round(1024 * (opened - start) / max(1, open_channels), 1)})
    print(f"{'round':>5} {'open':>7} {'summaries':>9} {'RSS open MB':>12} {'expired MB':>11} {'trimmed MB':>11} "
          f"{'KB/channel':>10}")
    for row in rows:
        print(f"{row['round']:>5} {row['open_channels']:>7} {row['summaries']:>9} {row['rss_open_mb']:>12} "
              f"{row['rss_expired_mb']:>11} {row['rss_after_mb']:>11} {row['kb_per_open_channel']:>10}")
    print(f"RSS at start {start:.1f} MB; after the last round {rows[-1]['rss_after_mb']} MB "
          f"({rows[-1]['rss_after_mb'] / start:.2f}x start)")
    print(json.dumps({"bench": "memory_abandoned", "calls": args.calls, "rate": args.rate, "frames": args.frames,
                      "trim": args.trim,
                      "rss_start_mb": round(start, 1), "rounds": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
