"""Pseudo-labelling: real recognisers and VADER, and the only-fill-gaps rule."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest

from model.data.cli import add_cli
from model.data.manifest import ManifestEntry, read_manifest, write_manifest
from model.data.pseudo_label import (
    ModelTranscriber,
    PocketSphinxTranscriber,
    VaderLabeller,
    pseudo_label_manifest,
)
from model.evaluate import word_error_rate
from schemas.resample import resample
from schemas.wav import read_wav, write_wav
from tests.harness.speech import speak


def _tts(tmp_path, name, text):
    return speak(tmp_path / name, text)


@pytest.fixture(scope="module")
def sphinx():
    return PocketSphinxTranscriber()


def test_vader_labels_clear_sentences():
    v = VaderLabeller()
    assert v.label("I am so happy, this is wonderful, thank you!") == "positive"
    assert v.label("This is terrible, I hate it and I am furious.") == "negative"
    assert v.label("The meeting is on Tuesday at three.") == "neutral"
    strict = VaderLabeller(pos=0.9, neg=-0.9)
    assert strict.label("this is good") == "neutral"
    with pytest.raises(ValueError):
        VaderLabeller(pos=-0.5, neg=0.5)


def test_pocketsphinx_recognises_synthetic_speech(tmp_path, sphinx):
    text = "i am very happy with the service today"
    rate, x = read_wav(_tts(tmp_path, "s.wav", text))
    hyp = sphinx.transcribe(resample(x[0], rate, 16000))
    tolerance = 0.34 if shutil.which("flite") else 0.8
    assert word_error_rate([text], [hyp]) <= tolerance, hyp
    assert sphinx.transcribe(np.zeros(16000, np.float32)) == ""
    assert sphinx.transcribe(np.zeros(0, np.float32)) == ""
    hiss = 0.0005 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert sphinx.transcribe(hiss) == ""


class _RecordingTranscriber:
    """A real (trivial) transcriber: reports the clip's duration in words, and what it was asked."""

    def __init__(self):
        self.calls = []

    def transcribe(self, audio):
        self.calls.append(len(audio))
        return "good " * int(round(len(audio) / 16000)) if np.abs(audio).max() > 0 else ""


def test_only_missing_labels_are_filled(tmp_path):
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000 * 4) / 16000)).astype(np.float32)
    write_wav(tmp_path / "tone.wav", 16000, tone)
    write_wav(tmp_path / "quiet.wav", 16000, np.zeros(16000, np.float32))
    entries = [
        ManifestEntry(audio="tone.wav", transcript="this is awful", transcript_source="human"),
        ManifestEntry(audio="tone.wav", sentiment="negative", sentiment_source="human", start_s=1.0, end_s=3.0),
        ManifestEntry(audio="tone.wav"),
        ManifestEntry(audio="tone.wav", transcript="fine", sentiment="neutral"),
        ManifestEntry(audio="tone.wav", speech=False),
        ManifestEntry(audio="quiet.wav"),
    ]
    write_manifest(tmp_path / "in.jsonl", entries)
    asr = _RecordingTranscriber()
    out = pseudo_label_manifest(read_manifest(tmp_path / "in.jsonl"), asr, VaderLabeller(), progress=False)
    assert (out[0].transcript, out[0].transcript_source) == ("this is awful", "human")
    assert (out[0].sentiment, out[0].sentiment_source) == ("negative", "pseudo")
    assert (out[1].transcript, out[1].transcript_source) == ("good good", "pseudo")  # the 2 s segment
    assert (out[1].sentiment, out[1].sentiment_source) == ("negative", "human")
    assert (out[2].transcript, out[2].sentiment) == ("good good good good", "positive")
    assert out[2].transcript_source == out[2].sentiment_source == "pseudo"
    assert out[3] == read_manifest(tmp_path / "in.jsonl")[3]
    assert out[4].transcript is None and out[4].sentiment is None  # non-speech untouched
    assert out[5].transcript is None and out[5].sentiment is None  # nothing recognised, nothing guessed
    assert asr.calls == [32000, 64000, 16000]


class _EnergyModel:
    """Stands in for VoiceToneModel.transcribe: a word per loud 0.5 s block, label from total energy."""

    def transcribe(self, batch, lengths):
        out = []
        for row, n in zip(batch, lengths.tolist()):
            blocks = row[:n].reshape(-1, 8000) if n % 8000 == 0 else row[: n - n % 8000].reshape(-1, 8000)
            words = ["loud" if float(b.abs().mean()) > 0.05 else "soft" for b in blocks]
            out.append(("positive" if float(row[:n].pow(2).mean()) > 0.01 else "neutral", " ".join(words)))
        return out


def test_model_transcriber_chunks_long_audio():
    x = np.concatenate([np.full(8000, 0.2), np.zeros(8000 * 11)]).astype(np.float32)  # 6 s
    mt = ModelTranscriber(_EnergyModel(), window_s=5.0)
    text = mt.transcribe(x)
    assert text.split() == ["loud"] + ["soft"] * 11
    assert len(mt.last_sentiments) == 2


@pytest.mark.parametrize("chunks", [1, 2])
def test_model_transcriber_folds_a_short_tail_into_the_last_chunk(chunks):
    # whole 5 s chunks, then a 0.1 s tail too short to hold a word: the tail joins the chunk before it
    levels = [0.2, 0.0][:chunks]  # first chunk loud, second soft: a misplaced chunk shows in the words
    x = np.concatenate([np.full(80000, v) for v in levels] + [np.zeros(1600)]).astype(np.float32)
    mt = ModelTranscriber(_EnergyModel(), window_s=5.0)
    text = mt.transcribe(x)
    assert text.split() == (["loud"] * 10 + ["soft"] * 10)[: 10 * chunks]
    assert len(mt.last_sentiments) == chunks


def test_cli_writes_labelled_manifest(tmp_path):
    write_wav(tmp_path / "quiet.wav", 16000, np.zeros(1600, np.float32))
    write_manifest(tmp_path / "in.jsonl", [ManifestEntry(audio="quiet.wav", transcript="what a lovely day")])
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["pseudo-label", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o" / "out.jsonl"),
                              "--asr", "none", "--quiet"])
    assert args.func(args) == 0
    (entry,) = read_manifest(tmp_path / "o" / "out.jsonl")
    assert entry.sentiment == "positive" and entry.sentiment_source == "pseudo"
    assert entry.audio == str((tmp_path / "quiet.wav").resolve())
    bad = parser.parse_args(["pseudo-label", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "x.jsonl"),
                             "--asr", "kaldi"])
    assert bad.func(bad) == 2


def test_whisper_transcribes_real_words_and_not_silence(tmp_path):
    """Whisper base (the default recogniser) reads a spoken sentence word for word and gives nothing for
    silence."""
    import shutil
    import subprocess

    from model.data.pseudo_label import WhisperTranscriber
    from schemas.resample import resample
    from schemas.wav import read_wav

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (scripts/setup.sh installs it)")
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "u.wav"), "I am sorry, that is not a valid extension"],
                   check=True)
    rate, channels = read_wav(tmp_path / "u.wav")
    asr = WhisperTranscriber(threads=2)
    text = asr.transcribe(resample(channels[0], rate, 16000)).lower()
    assert "sorry" in text and "valid extension" in text, text
    assert asr.transcribe(np.zeros(16000, np.float32)) == ""
