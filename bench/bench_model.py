"""Throughput of the voice tone model: windows/s of ``predict`` by batch size, precision and device.

Also measures what the design claims -- the classifier path is much cheaper
than full decoding -- as the time ratio of ``transcribe`` to ``predict`` on
the same windows, and the achieved FLOP/s (FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode``) against the machine's peak,
taken as the FLOP/s of one large square matrix product at the same threads
and precision (the most this torch build gets out of the device; a vendor's
datasheet figure would be higher and says nothing about this build). Prints a rich table and one
JSON line. "live channels" = windows/s x 2.5 s hop: how many real-time
channels one process could keep up with.

    python -m bench.bench_model [--checkpoint PATH] [--devices cpu,cuda] [--batch-sizes 1,8,32,128,256]
                                [--rate 8000]

``--rate``: windows at that rate, handed to ``predict`` as the worker hands them (8 kHz is read as it is,
other rates are resampled first): the ceiling for channels at that rate. The end-to-end benchmark's
channels are 8 kHz.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

import model
from model.config import ModelConfig, apply_overrides
from model.inference import VoiceToneModel

WINDOW_S = 5.0
AUDIO_RATE: int | None = None   # --rate: the windows' rate (None: the model's)


def predict(m: VoiceToneModel, x):
    """`predict` on windows at AUDIO_RATE."""
    return m.predict(x) if AUDIO_RATE is None else m.predict(x, sample_rate=AUDIO_RATE)


def window_rate(m: VoiceToneModel) -> int:
    return AUDIO_RATE or m.sample_rate


def windows(n: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, int(WINDOW_S * sample_rate)))).astype(np.float32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, min_time: float, max_reps: int = 50) -> float:
    """Seconds per call: one warm-up call, then repeat until ``min_time`` has passed."""
    fn()
    sync(device)
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or reps >= max_reps:
            return elapsed / reps


PEAK_N = {"cpu": 2048, "cuda": 8192}   # square matmul side: large enough to run at the device's best


def peak_precision(precision: str) -> str:
    """The matrix product a precision's rows are read against: bf16 against bf16, the rest against fp32."""
    return "bf16" if precision == "bf16" else "fp32"


def matmul_peak(device: torch.device, precision: str, min_time: float) -> float:
    """FLOP/s of an n x n by n x n matrix product (2 n^3 FLOPs) at ``precision`` (bf16 where asked;
    int8 and fp32 rows are set against the fp32 product): the peak the model's FLOP/s is read against."""
    n = PEAK_N.get(device.type, 2048)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: torch.mm(a, b), device, min_time)


def count_flops(m: VoiceToneModel, x: np.ndarray) -> int:
    """FLOPs of one eager predict (the counter cannot see inside a traced graph)."""
    jit, m.jit = m.jit, False
    try:
        with FlopCounterMode(display=False) as counter:
            predict(m, x)
    finally:
        m.jit = jit
    return int(counter.get_total_flops())


INPUTS = ("pinned", "pageable", "device")


def call_with_input(m: VoiceToneModel, x: np.ndarray, how: str):
    """``predict`` fed as the GPU worker feeds it ("pinned": host windows through the model's page-locked
    staging buffer, the default), through a plain copy from pageable memory ("pageable"), or with the
    windows already on the GPU ("device": the arithmetic alone, the ceiling that faster copies approach)."""
    if m.device.type == "cpu" or how == "pinned":
        return lambda: predict(m, x)
    if how == "pageable":
        def pageable():
            m.pinned_transfer = False
            try:
                return predict(m, x)
            finally:
                m.pinned_transfer = True
        return pageable
    if how == "device":
        on_device = torch.as_tensor(x).to(m.device)
        return lambda: predict(m, on_device)
    raise ValueError(f"unknown input mode {how!r}; choose from {', '.join(INPUTS)}")


def bench_device(make, batch_sizes: list[int], precisions: list[str], min_time: float,
                 flops_per_window: int, inputs: tuple[str, ...] = ("pinned",),
                 jits: tuple[bool, ...] = (True,)) -> list[dict]:
    """`make(precision)` loads the model at that precision (`model.load(..., precision=)`); ``jits``:
    the traced network and/or the eager one (where a precision cannot be traced, eager only)."""
    rows = []
    made: dict[int, np.ndarray] = {}   # one set of windows per batch size (4096 windows take seconds to draw)
    reference_model = make("fp32")
    check = windows(8, window_rate(reference_model), seed=2)
    reference = predict(reference_model, check)
    peaks: dict[str, float] = {}
    for precision in precisions:
        m = reference_model if precision == "fp32" else make(precision)
        peak_at = peak_precision(precision)
        if peak_at not in peaks:
            peaks[peak_at] = matmul_peak(m.device, peak_at, min_time)
        got = predict(m, check)
        # what reduced precision costs, on the same windows: sentiment and speech probabilities
        drift = float(np.abs(got[1] - reference[1]).max())
        drift_speech = float(np.abs(got[0] - reference[0]).max())
        for jit in sorted({m.use_jit(j).jit for j in jits}, reverse=True):
            m.use_jit(jit)
            for how in (inputs if m.device.type == "cuda" else ("host",)):
                for b in batch_sizes:
                    if b not in made:
                        made[b] = windows(b, window_rate(m))
                    x = made[b]
                    sec = timed(call_with_input(m, x, how), m.device, min_time)
                    rows.append({"device": m.device.type, "precision": precision, "traced": jit, "input": how,
                                 "batch": b, "windows_per_s": b / sec, "ms_per_call": sec * 1000,
                                 "gflop_per_s": flops_per_window * b / sec / 1e9,
                                 "peak_gflop_per_s": peaks[peak_at] / 1e9,
                                 "of_peak": flops_per_window * b / sec / peaks[peak_at],
                                 "max_prob_diff_vs_fp32": drift,
                                 "max_speech_diff_vs_fp32": drift_speech})
        m.use_jit(True)
    return rows


def transcribe_ratio(m: VoiceToneModel, batch: int, min_time: float) -> dict:
    x = windows(batch, m.sample_rate, seed=1)   # transcribe takes the model's rate
    t_pred = timed(lambda: m.predict(x), m.device, min_time)
    t_dec = timed(lambda: m.transcribe(x), m.device, min_time, max_reps=3)
    chars = float(np.mean([len(text) for _, text in m.transcribe(x)]))
    return {"batch": batch, "predict_ms": t_pred * 1000, "transcribe_ms": t_dec * 1000,
            "ratio": t_dec / t_pred, "mean_chars_decoded": chars}


def _loader(checkpoint: str | None, overrides: list[str] | None, device: str):
    """precision -> model: the checkpoint, or with ``overrides`` an untrained network of its config changed so."""
    if not overrides:
        return lambda prec: model.load(checkpoint, device=device, precision=prec)
    cfg = apply_overrides(ModelConfig.from_dict(model.load(checkpoint, device="cpu").config.to_dict()), overrides)
    return lambda prec: VoiceToneModel.untrained(cfg, device=device).set_precision(prec).use_jit(True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="model checkpoint (default: model.load()'s default)")
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when unavailable")
    p.add_argument("--batch-sizes", default="1,8,32,128,256")
    p.add_argument("--precisions", default="fp32,bf16,int8", help="int8 runs on CPU only")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--ratio-batch", type=int, default=8)
    p.add_argument("--inputs", default="pinned", help=f"CUDA only, comma list of: {', '.join(INPUTS)}")
    p.add_argument("--jit", default="on", help="comma list of on (the traced network, predict's default), off (eager)")
    p.add_argument("--cpu-max-batch", type=int, default=None,
                   help="windows per forward on CPU (predict splits larger batches; 0: one forward; "
                        "default: the model's, VoiceToneModel.cpu_max_batch)")
    p.add_argument("--untrained-set", action="append", metavar="KEY=VALUE",
                   help="time an UNTRAINED network of the checkpoint's architecture with this ModelConfig field "
                        "changed (repeatable): what a wider or deeper encoder would cost before training one")
    p.add_argument("--rate", type=int, default=None,
                   help="the windows' sample rate (default: the model's); 8000 = the end-to-end benchmark's channels")
    args = p.parse_args(argv)
    global AUDIO_RATE
    AUDIO_RATE = args.rate
    if args.cpu_max_batch is not None:
        VoiceToneModel.cpu_max_batch = args.cpu_max_batch
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")
    console = Console(stderr=True)
    results, ratios, flops = [], {}, None
    for dev in args.devices.split(","):
        if dev == "cuda" and not torch.cuda.is_available():
            console.print("[yellow]CUDA not available: skipping cuda[/]")
            continue
        load = _loader(args.checkpoint, args.untrained_set, dev)
        m = load("fp32")
        if flops is None:
            flops = count_flops(m, windows(1, window_rate(m)))
        console.print(f"[bold]{dev}[/]: model {m.version}, {flops / 1e9:.3f} GFLOP per 5 s window")
        wanted = [p for p in precisions if not (p == "int8" and dev != "cpu")]  # int8: CPU only
        results += bench_device(load,
                                batch_sizes, wanted, args.min_time, flops, tuple(args.inputs.split(",")),
                                tuple(j == "on" for j in args.jit.split(",")))
        ratios[dev] = transcribe_ratio(m, args.ratio_batch, args.min_time)
    chunk = VoiceToneModel.cpu_max_batch
    table = Table(title=f"voicetone predict throughput (5 s windows at {AUDIO_RATE or m.sample_rate} Hz; on CPU "
                        + (f"forwards of at most {chunk} windows)" if chunk else "one forward per batch)"))
    for col in ("device", "precision", "traced", "input", "batch", "windows/s", "ms/call", "GFLOP/s", "of peak",
                "live channels", "max |dp| vs fp32"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r["device"], r["precision"], "yes" if r["traced"] else "no", r["input"], str(r["batch"]), f"{r['windows_per_s']:.1f}",
                      f"{r['ms_per_call']:.1f}", f"{r['gflop_per_s']:.1f}", f"{r['of_peak']:.1%}",
                      f"{r['windows_per_s'] * 2.5:.0f}", f"{r['max_prob_diff_vs_fp32']:.1e}")
    console.print(table)
    for dev in dict.fromkeys(r["device"] for r in results):
        seen = {peak_precision(r["precision"]): r["peak_gflop_per_s"]
                for r in results if r["device"] == dev}
        at = f" at {torch.get_num_threads()} threads" if dev == "cpu" else ""
        console.print(f"{dev}: peak = one {PEAK_N.get(dev, 2048)}^2 matrix product{at}: " + ", ".join(f"{p} {g:,.0f} GFLOP/s" for p, g in seen.items()))
    for dev, r in ratios.items():
        console.print(f"{dev}: transcribe/predict time ratio {r['ratio']:.1f}x at batch {r['batch']} "
                      f"({r['transcribe_ms']:.0f} ms vs {r['predict_ms']:.0f} ms, {r['mean_chars_decoded']:.0f} chars decoded)")
    print(json.dumps({"model_version": m.version, "threads": torch.get_num_threads(), "rate": window_rate(m),
                      "cpu_max_batch": VoiceToneModel.cpu_max_batch,
                      "gflop_per_window": flops / 1e9, "results": results, "transcribe_vs_predict": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
