"""Metrics on hand-computed examples, and evaluate_model with a signal-driven stand-in model."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from model.data.manifest import ManifestEntry, write_manifest
from model.evaluate import (
    add_cli,
    combine_windows,
    confusion_matrix,
    evaluate_model,
    macro_f1,
    mcnemar_exact,
    paired_ua_interval,
    per_group,
    plot_report,
    roc_auc,
    sentiment_token_error,
    speech_presence,
    unweighted_accuracy,
    window_starts,
    word_error_rate,
)
from schemas.wav import write_wav

SR = 16000
T = [0, 0, 0, 1, 1, 2]
P = [0, 0, 1, 1, 2, 2]


def test_confusion_ua_and_macro_f1_by_hand():
    assert confusion_matrix(T, P).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert unweighted_accuracy(T, P) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert macro_f1(T, P) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # unknown labels are ignored; absent true classes do not count toward UA
    assert unweighted_accuracy([1, 1, -1, 0], [1, 0, 2, 0]) == pytest.approx((1 + 0.5) / 2)
    # always answering the majority class: UA is 1/3 even though accuracy is 80%
    assert unweighted_accuracy([1] * 8 + [0, 2], [1] * 10) == pytest.approx(1 / 3)
    # a class only ever predicted scores F1 = 0 in the macro average
    assert macro_f1([0, 0], [0, 2]) == pytest.approx((2 / 3 + 0) / 2)
    assert math.isnan(unweighted_accuracy([-1], [0]))


def test_auc_and_speech_presence_by_hand():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    sp = speech_presence([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert sp == {"accuracy": 0.5, "auc": pytest.approx(0.75), "n": 4}


def test_wer_and_sentiment_token_error_by_hand():
    assert word_error_rate(["the cat sat", "hello world"], ["the cat sat down", "hello"]) == pytest.approx(0.4)
    assert word_error_rate(["Hello, World!"], ["hello world"]) == 0.0
    assert word_error_rate(["a b c d"], ["x b d"]) == pytest.approx(2 / 4)  # one substitution, one deletion
    assert word_error_rate([""], [""]) == 0.0 and word_error_rate([""], ["uh"]) == 1.0
    assert sentiment_token_error(["positive", "neutral", None, "negative"],
                                 ["positive", "negative", "neutral", "negative"]) == pytest.approx(1 / 3)


def test_per_group_reports_the_gap():
    records = [
        {"label": 0, "pred": 0, "group": {"voice": "a"}},
        {"label": 1, "pred": 1, "group": {"voice": "a"}},
        {"label": 0, "pred": 1, "group": {"voice": "b"}},
        {"label": 1, "pred": 1, "group": {"voice": "b"}},
        {"label": 1, "pred": 0, "group": {}},
        {"label": -1, "pred": 0, "group": {"voice": "c"}},
    ]
    g = per_group(records, "voice")
    assert set(g["groups"]) == {"a", "b"}
    assert g["groups"]["a"] == {"ua": 1.0, "macro_f1": 1.0, "n": 2}
    assert g["groups"]["b"]["ua"] == pytest.approx(0.5)
    assert g["ua_gap"] == pytest.approx(0.5) and g["worst"] == "b"


def test_windows_and_combination():
    assert window_starts(3 * SR, 5 * SR, SR * 5 // 2) == [0]
    assert window_starts(12 * SR, 5 * SR, SR * 5 // 2) == [0, 40000, 80000, 112000]
    speech, probs = combine_windows(np.array([1.0, 0.0]), np.array([[0.8, 0.1, 0.1], [0.0, 0.0, 1.0]]))
    assert speech == 0.5 and np.allclose(probs, [0.8, 0.1, 0.1])  # the silent window does not vote
    _, probs = combine_windows(np.zeros(2), np.array([[0.8, 0.1, 0.1], [0.0, 0.0, 1.0]]))
    assert np.allclose(probs, [0.4, 0.05, 0.55])


class SpectralModel:
    """A real, tiny acoustic model: loudness says speech, the dominant pitch says sentiment.

    Speech probability is a logistic function of the RMS level; sentiment is
    a softmax over the energy in three bands (high -> positive, mid ->
    neutral, low -> negative). Only the valid samples of each row are used.
    """

    version = "spectral-test"

    def __init__(self):
        self.calls = 0

    def predict(self, batch, lengths):
        self.calls += 1
        speech, sentiment = [], []
        for row, n in zip(np.asarray(batch), np.asarray(lengths)):
            x = row[:n].astype(np.float64)
            level_db = 10 * np.log10(np.mean(x ** 2) + 1e-10)
            speech.append(1 / (1 + np.exp(-(level_db + 40) / 3)))
            spec = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(len(x), 1 / SR)
            bands = np.array([spec[f >= 1200].sum(), spec[(f >= 400) & (f < 1200)].sum(), spec[f < 400].sum()])
            logits = 10 * bands / (bands.sum() + 1e-12)
            e = np.exp(logits - logits.max())
            sentiment.append(e / e.sum())
        return np.array(speech, np.float32), np.array(sentiment, np.float32)


def _tone(freq, seconds, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    spec = [  # (freq, label, voice, seconds)
        (2000, "positive", "a", 3), (2000, "positive", "b", 7), (800, "neutral", "a", 2), (800, "neutral", "b", 12),
        (200, "negative", "a", 4), (200, "neutral", "b", 3),  # voice b's low clip is labelled neutral: a miss
    ]
    for k, (freq, label, voice, seconds) in enumerate(spec):
        write_wav(tmp_path / f"c{k}.wav", SR, _tone(freq, seconds) + 0.001 * rng.standard_normal(int(seconds * SR)))
        rows.append(ManifestEntry(audio=f"c{k}.wav", sentiment=label, group={"voice": voice}))
    write_wav(tmp_path / "quiet.wav", SR, 0.0005 * rng.standard_normal(SR * 6).astype(np.float32))
    rows.append(ManifestEntry(audio="quiet.wav", speech=False, group={"voice": "none"}))
    # a segment of a longer file: only its 1-3 s part (the 2 kHz part) is scored
    write_wav(tmp_path / "mixed.wav", SR, np.concatenate([_tone(200, 1), _tone(2000, 2), _tone(200, 2)]))
    rows.append(ManifestEntry(audio="mixed.wav", sentiment="positive", start_s=1.0, end_s=3.0))
    write_manifest(tmp_path / "m.jsonl", rows)
    return tmp_path


def test_evaluate_model_scores_clips_and_groups(corpus):
    from model.data.manifest import read_manifest

    entries = read_manifest(corpus / "m.jsonl")
    model = SpectralModel()
    report = evaluate_model(model, entries, batch_size=4, progress=False)
    assert report["n_clips"] == 8
    # windows: 3s->1, 7s->2, 2s->1, 12s->4, 4s->1, 3s->1, 6s quiet->2, 2s segment->1
    assert report["n_windows"] == 13 and model.calls == 4
    preds = [c["pred"] for c in report["clips"]]
    assert preds[:6] == [0, 0, 1, 1, 2, 2] and preds[7] == 0
    s = report["sentiment"]
    assert s["n"] == 7
    assert s["confusion"] == [[3, 0, 0], [0, 2, 1], [0, 0, 1]]
    assert s["ua"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert report["speech"]["auc"] == 1.0 and report["speech"]["accuracy"] == 1.0
    voice = report["groups"]["voice"]
    assert voice["groups"]["a"]["ua"] == 1.0
    assert voice["groups"]["b"]["ua"] == pytest.approx((1 + 0.5) / 2)
    assert voice["ua_gap"] == pytest.approx(0.25) and voice["worst"] == "b"
    assert "none" not in voice["groups"]  # the non-speech clip has no sentiment label


def test_plot_and_cli(corpus, tmp_path, monkeypatch, capsys):
    from model.data.manifest import read_manifest

    report = evaluate_model(SpectralModel(), read_manifest(corpus / "m.jsonl"), progress=False)
    plot_report(report, tmp_path / "out" / "r.png")
    assert (tmp_path / "out" / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a group made only of non-speech clips has no UA gap (None in report.json): still plotted
    report["groups"]["voice"]["ua_gap"] = None
    plot_report(report, tmp_path / "out" / "r2.png")
    assert (tmp_path / "out" / "r2.png").stat().st_size > 0

    import model.inference

    monkeypatch.setattr(model.inference, "load", lambda path, device, precision="fp32": SpectralModel())
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(corpus / "m.jsonl"), "--out", str(tmp_path / "ev"), "--json"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sentiment"]["ua"] == pytest.approx(report["sentiment"]["ua"])
    saved = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert len(saved["clips"]) == 8
    assert (tmp_path / "ev" / "report.png").exists()


def test_mcnemar_exact_on_hand_computed_cases():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)          # one tail 1/2^6, doubled
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)


def test_paired_ua_interval_brackets_a_real_gain_and_collapses_for_identical_systems():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 100)
    a = np.where(rng.random(300) < 0.5, y, (y + 1) % 3)            # ~0.5 UA
    b = np.where(rng.random(300) < 0.9, y, (y + 1) % 3)            # ~0.9 UA
    lo, hi = paired_ua_interval(y, a, b, n=300)
    gain = unweighted_accuracy(y, b) - unweighted_accuracy(y, a)
    assert 0.2 < lo < gain < hi < 0.6
    assert paired_ua_interval(y, a, a, n=50) == (0.0, 0.0)
