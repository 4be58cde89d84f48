"""What the silence gate skips, and what it costs in speech-presence accuracy.

On an evaluation manifest (default: the generated held-out set), every clip is
cut into 5 s windows every 2.5 s as `voicetone evaluate` does; for each
threshold, the share of speech and non-speech windows the gate would answer
without the model, and the window-level speech-presence accuracy (window
label = its clip's) with the model alone and with the gate in front of it.
Then the share of windows skipped on the bundled sample calls (the
end-to-end benchmark's load), channel by channel, at the service's windowing,
and the wall time of the worker's whole logic (`OfflineRunner`: decode, windows,
gate, model, events) on that load with the gate on and off.

    python -m bench.silence_gate [--manifest data/synth/test.jsonl] [--thresholds -65,-55,-45]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from rich.console import Console
from rich.table import Table

import model
from bench._common import sample_audio, synthetic_frames
from model.data.dataset import AudioCache
from model.data.manifest import read_manifest
from model.evaluate import SAMPLE_RATE, _run_windows, window_starts
from streams.offline import OfflineRunner
from streams.settings import ProcessorConfig
from streams.silence import loudest_frame_dbfs

WINDOW_S, HOP_S = 5.0, 2.5


def levels_of(clips: list[np.ndarray], rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(owning clip, loudest-frame dBFS) of every window, in `_run_windows`' order."""
    wn, hn = int(WINDOW_S * rate), int(HOP_S * rate)
    owner, level = [], []
    for c, audio in enumerate(clips):
        for s in window_starts(len(audio), wn, hn):
            owner.append(c)
            level.append(loudest_frame_dbfs(audio[s:s + wn], rate))
    return np.array(owner), np.array(level)


def offline_time(m, threshold: float, channels: int, seconds: float) -> dict:
    """Best of two runs of the worker's logic over the e2e load (100 ms frames, 8 kHz)."""
    import time

    frames = synthetic_frames(channels, int(seconds * 10), 100, 8000)
    best, r = float("inf"), None
    for _ in range(2):
        r = OfflineRunner(m, ProcessorConfig(silence_dbfs=threshold), max_batch_size=64)
        t0 = time.perf_counter()
        r.feed(frames)
        events = r.finish()
        best = min(best, time.perf_counter() - t0)
    segments = sum(e["type"] == "segment" for e in events)
    return {"threshold_dbfs": threshold, "seconds": best, "segments": segments, "silent": r.silent_windows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", default="data/synth/test.jsonl")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--thresholds", default="-65,-55,-45")
    p.add_argument("--channels", type=int, default=40, help="channels of the offline pipeline timing")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per channel in that timing")
    args = p.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    console = Console(stderr=True)

    entries = list(read_manifest(args.manifest))
    cache = AudioCache(SAMPLE_RATE, 256 << 20)
    clips = [cache.segment(e) for e in entries]
    owner, level = levels_of(clips, SAMPLE_RATE)
    m = model.load(args.model, device="cpu")
    owner2, speech_prob, _ = _run_windows(m, clips, int(WINDOW_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE), 32, True)
    assert np.array_equal(owner, owner2)
    is_speech = np.array([bool(entries[c].speech) for c in owner])
    kind = np.array([entries[c].group.get("kind", "speech") for c in owner])
    base_acc = float(np.mean((speech_prob >= 0.5) == is_speech))

    rows = []
    for t in thresholds:
        gated = level < t
        gated_prob = np.where(gated, 0.0, speech_prob)
        by_kind = {k: float(gated[kind == k].mean()) for k in sorted(set(kind))}
        rows.append({"threshold_dbfs": t, "speech_windows_skipped": float(gated[is_speech].mean()),
                     "nonspeech_windows_skipped": float(gated[~is_speech].mean()),
                     "speech_acc_model": base_acc,
                     "speech_acc_gated": float(np.mean((gated_prob >= 0.5) == is_speech)),
                     "skipped_by_kind": by_kind})

    calls = []
    for i, track in enumerate(sample_audio(8000)):
        x = track.astype(np.float32) / 32768.0
        _, lv = levels_of([x], 8000)
        calls.append({"track": i, "windows": int(lv.size), **{f"skipped_at_{t:g}": float((lv < t).mean())
                                                             for t in thresholds}})

    table = Table(title=f"silence gate on {args.manifest} ({len(owner)} windows, "
                        f"{int(is_speech.sum())} speech / {int((~is_speech).sum())} non-speech)")
    for col in ("threshold dBFS", "speech windows skipped", "non-speech skipped", "speech acc: model",
                "speech acc: gate + model"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['threshold_dbfs']:g}", f"{r['speech_windows_skipped']:.1%}",
                      f"{r['nonspeech_windows_skipped']:.1%}", f"{r['speech_acc_model']:.4f}",
                      f"{r['speech_acc_gated']:.4f}")
    console.print(table)
    for r in rows:
        console.print(f"{r['threshold_dbfs']:g} dBFS skipped by kind: "
                      + ", ".join(f"{k} {v:.0%}" for k, v in r["skipped_by_kind"].items()))
    for c in calls:
        console.print(f"sample call track {c['track']} ({c['windows']} windows): "
                      + ", ".join(f"{t:g} dBFS {c[f'skipped_at_{t:g}']:.0%}" for t in thresholds))
    timing = [offline_time(m, t, args.channels, args.seconds) for t in (-55.0, float("-inf"))]
    for t in timing:
        console.print(f"worker logic, {args.channels} channels x {args.seconds:g} s, "
                      f"gate {t['threshold_dbfs']:g} dBFS: {t['seconds']:.2f} s, {t['segments']} segments, "
                      f"{t['silent']} answered without the model")
    console.print(f"gate on / off wall time: {timing[0]['seconds'] / timing[1]['seconds']:.2f}")
    quietest_speech = float(level[is_speech].min())
    console.print(f"quietest speech window: {quietest_speech:.1f} dBFS loudest frame; "
                  f"levels of non-speech kinds (median): "
                  + ", ".join(f"{k} {np.median(level[kind == k]):.0f}" for k in sorted(set(kind)) if k != "speech"))
    print(json.dumps({"manifest": args.manifest, "model_version": m.version, "windows": int(len(owner)),
                      "windows_by_kind": dict(Counter(kind.tolist())), "quietest_speech_dbfs": quietest_speech,
                      "thresholds": rows, "sample_calls": calls,
                      "offline_timing": [{**t, "threshold_dbfs": str(t["threshold_dbfs"])} for t in timing]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
