"""Phone timings by forced alignment (`voicetone data align`) and the ASR stage's frame-level phone target."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from model.data.align import PhoneAligner, add_cli
from model.data.manifest import ManifestError, read_manifest
from model.train.asr_stage import frame_phone_labels
from schemas.resample import resample
from schemas.wav import read_wav, write_wav
from tests.harness.speech import speak

SR = 16000


def test_frame_labels_take_the_phone_at_each_frame_centre():
    phones = [["SIL", 0.0, 0.2], ["HH", 0.2, 0.3], ["AH", 0.3, 0.6], ["SIL", 0.7, 1.0]]   # a gap at 0.6-0.7
    index = {"SIL": 0, "HH": 1, "AH": 2}
    out = frame_phone_labels([phones], [1.0], torch.tensor([10]), 12, index)
    # centres 0.05, 0.15, ..., 0.95 s
    assert out[0].tolist() == [0, 0, 1, 2, 2, 2, -100, 0, 0, 0, -100, -100]


def test_frame_labels_do_not_depend_on_the_augmented_length_and_skip_unaligned_rows():
    """Speed perturbation changes a clip's length and its frame count, not where its phones fall
    relative to it: 20 frames over the same 1 s clip keep the same order, twice as fine."""
    phones = [["SIL", 0.0, 0.5], ["S", 0.5, 1.0]]
    index = {"SIL": 0, "S": 1}
    out = frame_phone_labels([phones, None, [["ZH", 0.0, 1.0]]], [1.0, 1.0, 1.0], torch.tensor([20, 5, 4]), 20, index)
    assert out[0].tolist() == [0] * 10 + [1] * 10
    assert (out[1] == -100).all()                 # no phones: not a target
    assert (out[2] == -100).all()                 # a phone outside the vocabulary: not a target


def test_phones_in_a_manifest_are_validated(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": "a.wav", "transcript": "hi", "phones": [["HH", 0.5, 0.2]]}) + "\n")
    with pytest.raises(ManifestError, match="phones"):
        read_manifest(m)


def _tts(path, text):
    rate, x = read_wav(speak(path, text))
    return np.asarray(resample(x[0], rate, SR), dtype=np.float32)


def test_alignment_follows_the_speech_and_refuses_unknown_words(tmp_path):
    speech = _tts(tmp_path / "a.wav", "please check my account balance")
    aligner = PhoneAligner()
    first = aligner.align(speech, "Please check my account balance.")
    assert first is not None
    names = [p for p, _, _ in first]
    assert {"P", "CH", "B"} <= set(names)
    assert all(s <= e for _, s, e in first) and first[-1][2] <= len(speech) / SR + 0.02
    # the same words after a second of silence: the same phones, a second later
    shifted = aligner.align(np.concatenate([np.zeros(SR, np.float32), speech]), "please check my account balance")
    assert [p for p, _, _ in shifted if p != "SIL"] == [p for p in names if p != "SIL"]
    start = next(s for p, s, _ in first if p == "CH")
    assert next(s for p, s, _ in shifted if p == "CH") == pytest.approx(start + 1.0, abs=0.05)
    assert aligner.align(speech, "please check my qwzxv balance") is None


def test_align_command_adds_phones_where_it_can(tmp_path):
    _tts(tmp_path / "a.wav", "thank you so much")
    write_wav(tmp_path / "quiet.wav", SR, np.zeros(SR, np.float32))
    lines = [{"audio": "a.wav", "transcript": "thank you so much", "sentiment": "positive"},
             {"audio": "a.wav", "sentiment": "positive"},                       # no transcript: left alone
             {"audio": "a.wav", "transcript": "thank you qwzxv much"},          # not in the dictionary
             {"audio": "quiet.wav", "speech": False}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["align", str(src), "--out", str(tmp_path / "out.jsonl"), "--quiet"])
    assert args.func(args) == 0
    out = read_manifest(tmp_path / "out.jsonl")
    assert [bool(e.phones) for e in out] == [True, False, False, False]
    assert [e.transcript for e in out] == [x.get("transcript") for x in lines]
    assert "TH" in [p for p, _, _ in out[0].phones]
