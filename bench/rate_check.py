"""8 kHz audio read as it is against resampled to 16 kHz first: does the model answer the same?

The worker hands 8 kHz windows (telephone audio) to the model as they are, and the log-mel front end reads
them on the 16 kHz model's frequency grid (`model.features.LogMel.rate_plan`) instead of FFT-resampling
every window to 16 kHz on the event loop first. The two differ only in the mel
bands above 4 kHz (empty at 8 kHz; window leakage after resampling). This puts a held-out set through both
paths: each clip is brought down to 8 kHz (`schemas.resample.resample`, as a phone line delivers it), cut
into the evaluation's 5 s / 2.5 s windows, and scored by each path; clip answers combine windows as
`voicetone evaluate` does (``--rate 12000``: the other rate this model reads as it is). Reported: how often the two paths agree, unweighted accuracy of each with the
exact McNemar p of their disagreements, per condition, speech presence on the non-speech clips, and the
largest probability difference per clip.

    python -m bench.rate_check data/synth/test.jsonl [--limit N] [--checkpoint PATH] [--rate 8000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from rich.console import Console
from rich.progress import track
from rich.table import Table

import model
from model.data.dataset import AudioCache
from model.data.manifest import read_manifest
from model.evaluate import combine_windows, paired_comparison, window_starts
from schemas.resample import resample_fft_rows
from streams.stacking import stack_windows

N_BOOT = 1000   # bootstrap resamples of the paired UA interval


def clip_windows(x: np.ndarray, rate: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation's 5 s / 2.5 s windows of a clip, zero-padded into one block, and their lengths."""
    return stack_windows([x[s:s + 5 * rate] for s in window_starts(len(x), 5 * rate, 5 * rate // 2)])


def _paired(y, a, b) -> dict:
    """`model.evaluate.paired_comparison` (UA of each path, McNemar p, paired interval) under this script's names."""
    r = paired_comparison(y, a, b, N_BOOT)
    return {"clips": r["clips"], "ua_resampled": r["ua_a"], "ua_as_is": r["ua_b"], "mcnemar_p": r["mcnemar_p"],
            "ci95_as_is_minus_resampled": r["ci95"], "agreement": float((a == b).mean())}


def summarize(y, a, b, cond, sp_a, sp_b, diffs) -> dict:
    speech = y >= 0
    overall = _paired(y[speech], a[speech], b[speech])
    out = {**overall, "clips": int(len(y)), "speech_clips": overall["clips"],
           "max_prob_diff_median": float(np.median(diffs)), "max_prob_diff_p95": float(np.percentile(diffs, 95)),
           "max_prob_diff_max": float(np.max(diffs)), "by_condition": {}}
    for c in sorted(set(cond[speech])):
        s = speech & (cond == c)
        out["by_condition"][c] = _paired(y[s], a[s], b[s])
    if (~speech).any():
        out["no_speech_resampled"] = float((sp_a[~speech] < 0.5).mean())
        out["no_speech_as_is"] = float((sp_b[~speech] < 0.5).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", help="held-out manifest (JSON lines), e.g. data/synth/test.jsonl")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one)")
    p.add_argument("--limit", type=int, help="the first N clips only")
    p.add_argument("--rate", type=int, default=8000, help="the rate the clips are brought down to (default 8000)")
    args = p.parse_args(argv)
    rate_in = args.rate
    console = Console(stderr=True)
    m = model.load(args.checkpoint)
    if rate_in == m.sample_rate or not m.reads_rate(rate_in):
        p.error(f"this model's front end does not read {rate_in} Hz as it is")
    entries = read_manifest(args.manifest)[: args.limit]
    clips = AudioCache(rate_in, max_bytes=0)   # each clip (its span) read, made mono and brought to rate_in once
    y, a, b, cond, sp_a, sp_b, diffs = [], [], [], [], [], [], []
    secs = {"resampled": 0.0, "as_is": 0.0}
    for e in track(entries, description="clips", console=console, disable=not console.is_terminal):
        block, lengths = clip_windows(clips.segment(e), rate_in)
        t0 = time.perf_counter()
        up = resample_fft_rows(block, rate_in, m.sample_rate)
        ra = m.predict(up, np.minimum(-(-lengths * m.sample_rate // rate_in), up.shape[1]))
        t1 = time.perf_counter()
        rb = m.predict(block, lengths, sample_rate=rate_in)
        secs["resampled"] += t1 - t0
        secs["as_is"] += time.perf_counter() - t1
        (pa_sp, pa), (pb_sp, pb) = combine_windows(*ra), combine_windows(*rb)
        y.append(e.label_index)
        a.append(int(np.argmax(pa)))
        b.append(int(np.argmax(pb)))
        sp_a.append(pa_sp)
        sp_b.append(pb_sp)
        diffs.append(float(np.abs(pa - pb).max()))
        cond.append(str((e.group or {}).get("condition", "?")))
    r = summarize(np.array(y), np.array(a), np.array(b), np.array(cond), np.array(sp_a), np.array(sp_b), diffs)
    r.update(manifest=args.manifest, model_version=m.version, seconds=secs, rate=rate_in)
    t = Table(title=f"{args.manifest}: {rate_in} Hz clips, resampled to {m.sample_rate} Hz first vs read as they are "
                    f"({r['speech_clips']} speech clips)")
    for col in ("condition", "clips", "UA resampled", "UA as is", "agreement"):
        t.add_column(col, justify="right")
    for c, v in r["by_condition"].items():
        t.add_row(c, str(v["clips"]), f"{v['ua_resampled']:.3f}", f"{v['ua_as_is']:.3f}", f"{v['agreement']:.1%}")
    t.add_row("all", str(r["speech_clips"]), f"{r['ua_resampled']:.3f}", f"{r['ua_as_is']:.3f}", f"{r['agreement']:.1%}")
    console.print(t)
    console.print(f"McNemar p {r['mcnemar_p']:.2f}; largest probability difference per clip: median "
                  f"{r['max_prob_diff_median']:.4f}, p95 {r['max_prob_diff_p95']:.4f}, max {r['max_prob_diff_max']:.4f}; "
                  f"no_speech on non-speech clips: {r.get('no_speech_resampled', float('nan')):.1%} / "
                  f"{r.get('no_speech_as_is', float('nan')):.1%}; model time {secs['resampled']:.1f} s / {secs['as_is']:.1f} s")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
