"""bench/compare_reports.py: clips paired by audio and span, split by any group key."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from compare_reports import compare, paired_clips  # noqa: E402


def _clip(audio, label, pred, **group):
    return {"audio": audio, "start_s": None, "end_s": None, "label": label, "pred": pred, "group": group}


def test_clips_pair_by_audio_and_split_by_the_chosen_key():
    a = {"clips": [_clip("x.wav", 0, 0, condition="noisy", noise="babble"), _clip("y.wav", 1, 2, condition="clean"),
                   _clip("n.wav", -1, 0, condition="clean"), _clip("z.wav", 2, 2, condition="noisy", noise="white")]}
    b = {"clips": [_clip("z.wav", 2, 1, condition="noisy", noise="white"), _clip("y.wav", 1, 1, condition="clean"),
                   _clip("x.wav", 0, 0, condition="noisy", noise="babble")]}
    y, pa, pb, groups = paired_clips(a, b, "noise")
    assert list(y) == [0, 1, 2] and list(pa) == [0, 2, 2] and list(pb) == [0, 1, 1]   # the non-speech clip left out
    assert groups == ["babble", "-", "white"]
    assert paired_clips(a, b)[3] == ["noisy", "clean", "noisy"]
    r = compare(y, pa, pb, n_boot=50)
    assert (r["clips"], r["only_a"], r["only_b"]) == (3, 1, 1)
