"""The classifier path's cost against full transcription, on clips of the real-speech set.

Times, on the same clips and the same threads: Whisper base's full transcription (CTranslate2 fp32, greedy,
Whisper's 30 s input, what a words-only pipeline pays per clip), the ``whisper-base`` model's classifier path
(torch fp32, one batch of 5 s windows) and the default model's, and prints them with their ratios. Rerun::

    OMP_NUM_THREADS=2 python -m bench.real_speech_cost --manifest data/w/real/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from model.data.dataset import AudioCache
from model.data.manifest import read_manifest
from model.data.pseudo_label import WhisperTranscriber
from model.inference import load


def per_item(fn, items, repeat: int = 1) -> float:
    """Seconds per item of ``fn(items)`` (after one warm-up call on the first item)."""
    fn(items[:1])
    t = time.perf_counter()
    for _ in range(repeat):
        fn(items)
    return (time.perf_counter() - t) / (repeat * len(items))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="the real-speech set's manifest (voicetone data real-eval)")
    p.add_argument("--clips", type=int, default=8, help="clips timed (spread over the set; default 8)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    speech = [e for e in read_manifest(args.manifest) if e.speech and e.group.get("words") == "yes"]
    chosen = speech[:: max(1, len(speech) // args.clips)][: args.clips]
    cache = AudioCache(16000)
    clips = [cache.segment(e) for e in chosen]
    windows = np.zeros((len(clips), 80000), np.float32)
    for i, x in enumerate(clips):
        windows[i, : min(80000, len(x))] = x[:80000]

    asr = WhisperTranscriber(threads=args.threads)
    transcribe = per_item(lambda xs: [asr.transcribe(x) for x in xs], clips)
    whisper = load("whisper-base", "cpu")
    default = load(None, "cpu")
    w = per_item(lambda xs: whisper.predict(np.stack(xs)), list(windows), repeat=2)
    d = per_item(lambda xs: default.predict(np.stack(xs)), list(windows), repeat=5)
    rows = {"full transcription (Whisper base, CTranslate2 fp32, per clip)": transcribe,
            f"whisper-base classifier path (torch fp32, batch {len(clips)}, per 5 s window)": w,
            f"default classifier path (batch {len(clips)}, per 5 s window)": d}
    for name, s in rows.items():
        print(f"{name:<72} {s:8.4f} s   {s / w:6.2f}x whisper-base")
    print(json.dumps({"clips": len(clips), "threads": args.threads, "transcribe_s": transcribe,
                      "whisper_base_window_s": w, "default_window_s": d}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
