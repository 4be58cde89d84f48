"""What a busy event loop does to the model thread: ``predict`` alone and beside a busy Python thread.

The worker runs the model in a thread while its event loop ingests and publishes. Eager PyTorch
gives the GIL up around every operator and must take it back after; a waiting thread gets it only
when the holder yields, at the interpreter's switch interval (5 ms by default). So a forward of a few
hundred small operators can take ~100x longer beside a busy thread (the convoy effect). The traced
network (``VoiceToneModel.jit``, the default) runs the forward in C++ with the GIL released once.
Prints, for eager and traced, with the default and a 0.5 ms switch interval, ms per ``predict`` alone
and beside the busy thread, their ratio, and one JSON line. The same for the numpy work before the
model (silence gate, stacking, 8 -> 16 kHz resampling as the worker did before it read 8 kHz as it is:
``streams.inference.model_batch`` without ``reads_rate``) on a batch of
the bundled calls' windows, done as one block and window by window: each numpy call on a large array
gives the GIL up too, which is why the worker does this work on its loop, not in the model thread.

    python -m bench.gil_convoy [--batch 8] [--reps 10] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import model


def ms_per_call(m, x, reps: int, call=None) -> float:
    call = call or (lambda: m.predict(x))
    call()   # warm-up (and the trace, on the first traced call)
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - t) / reps * 1000


def sample_windows(n: int):
    """`n` 5 s windows of the bundled 8 kHz sample calls, as the worker cuts them, and their rates."""
    from bench._common import synthetic_frames
    from streams.pipeline import StreamProcessor
    from streams.settings import ProcessorConfig

    proc = StreamProcessor(ProcessorConfig(), "probe", 16000)
    frames = synthetic_frames(max(2, n), 60, 100, 8000)
    windows = proc.ingest_many([(value, key, 0, None) for key, value in frames]).windows[:n]
    return windows, [proc.rate_of(w) for w in windows]


def beside_busy_thread(m, x, reps: int, call=None) -> float:
    stop = threading.Event()

    def busy():   # pure-Python work, as an event loop decoding frames is
        s = 0
        while not stop.is_set():
            for i in range(1000):
                s += i

    other = threading.Thread(target=busy)
    other.start()
    out: list[float] = []
    try:
        worker = threading.Thread(target=lambda: out.append(ms_per_call(m, x, reps, call)))
        worker.start()
        worker.join()
    finally:
        stop.set()
        other.join()
    return out[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = model.load(device=args.device)
    x = (0.1 * np.random.default_rng(0).standard_normal((args.batch, 5 * m.sample_rate))).astype(np.float32)
    default_interval = sys.getswitchinterval()
    rows = []
    try:
        for jit in (False, True):
            for interval in (default_interval, 0.0005):
                m.jit = jit
                sys.setswitchinterval(interval)
                alone = ms_per_call(m, x, args.reps)
                busy = beside_busy_thread(m, x, args.reps)
                rows.append({"network": "traced" if jit else "eager", "switch_interval_ms": interval * 1000,
                             "alone_ms": alone, "beside_busy_thread_ms": busy, "slowdown": busy / alone})
        from streams.inference import model_batch
        from streams.silence import SilenceGate

        windows, rates = sample_windows(args.batch)
        gate = SilenceGate()
        prep = {"gate + resample, one block": lambda: model_batch(gate, windows, rates, m.sample_rate),
                "gate + resample, window by window": lambda: [model_batch(gate, [w], [r], m.sample_rate)
                                                              for w, r in zip(windows, rates)]}
        for name, call in prep.items():
            for interval in (default_interval, 0.0005):
                sys.setswitchinterval(interval)
                alone = ms_per_call(m, None, args.reps, call)
                busy = beside_busy_thread(m, None, args.reps, call)
                rows.append({"network": name, "switch_interval_ms": interval * 1000,
                             "alone_ms": alone, "beside_busy_thread_ms": busy, "slowdown": busy / alone})
    finally:
        sys.setswitchinterval(default_interval)
    t = Table(title=f"predict, batch {args.batch}, {m.device.type}, {args.threads} torch thread(s), model {m.version}")
    for col in ("step", "switch interval ms", "alone ms", "beside a busy thread ms", "slowdown"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["network"], f"{r['switch_interval_ms']:.1f}", f"{r['alone_ms']:.1f}",
                  f"{r['beside_busy_thread_ms']:.1f}", f"{r['slowdown']:.1f}x")
    Console(stderr=True).print(t)
    print(json.dumps({"bench": "gil_convoy", "batch": args.batch, "device": m.device.type,
                      "threads": args.threads, "model_version": m.version, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
