"""bench/rate_check.py: held-out clips through the 8 kHz path as it is and resampled first, end to end on a
tiny manifest (an untrained network of the real architecture: the plumbing, not the accuracy)."""

import json

import numpy as np

from bench import rate_check
from model.config import tiny_config
from model.inference import VoiceToneModel
from schemas.wav import write_wav


def test_summary_counts_agreement_and_disagreements():
    y = np.array([0, 1, 2, 0, -1])
    a = np.array([0, 1, 1, 2, 0])
    b = np.array([0, 2, 2, 2, 0])
    cond = np.array(["clean", "clean", "noisy", "noisy", "clean"])
    r = rate_check.summarize(y, a, b, cond, np.array([.9, .9, .9, .9, .1]), np.array([.9, .9, .9, .9, .7]),
                             [0.0, 0.1, 0.2, 0.0, 0.0])
    assert r["speech_clips"] == 4 and r["agreement"] == 0.5
    assert r["by_condition"]["noisy"]["agreement"] == 0.5 and r["by_condition"]["clean"]["clips"] == 2
    assert r["no_speech_resampled"] == 1.0 and r["no_speech_as_is"] == 0.0
    assert r["max_prob_diff_max"] == 0.2


def test_windows_cover_the_clip_as_the_evaluation_cuts_them():
    block, lengths = rate_check.clip_windows(np.ones(8000 * 12, np.float32))
    assert block.shape == (4, 40000) and lengths.tolist() == [40000] * 4
    block, lengths = rate_check.clip_windows(np.ones(8000 * 2, np.float32))
    assert block.shape == (1, 16000)


def test_runs_end_to_end(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    VoiceToneModel.untrained(tiny_config(), seed=1).save(ckpt)
    rng = np.random.default_rng(0)
    lines = []
    for i, (sentiment, cond, seconds) in enumerate([("positive", "clean", 6), ("negative", "noisy", 3), (None, "clean", 4)]):
        write_wav(tmp_path / f"c{i}.wav", 16000, (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32))
        lines.append(json.dumps({"audio": f"c{i}.wav", "transcript": "", "sentiment": sentiment,
                                 "group": {"condition": cond}}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert rate_check.main([str(tmp_path / "m.jsonl"), "--checkpoint", str(ckpt)]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["clips"] == 3 and r["speech_clips"] == 2
    assert 0.0 <= r["agreement"] <= 1.0 and set(r["by_condition"]) == {"clean", "noisy"}
    assert r["max_prob_diff_max"] < 0.5
