"""The real-speech evaluation set: labelling rules, hash check, build and manifest, without the network."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np
import pytest

from model.data import real_eval
from model.data.manifest import read_manifest
from model.data.real_eval import (ACTED_LABELS, RealEvalError, build, check_sha256, eval_only_packages,
                                  in_silence, load_sources, text_label, unpack)
from schemas.wav import read_wav, write_wav


@pytest.mark.parametrize("text, label", [
    ("Thank you for your patience", "positive"),
    ("Welcome to the directory", "positive"),
    ("Congratulations.", "positive"),
    ("Your message has been successfully forwarded.", "positive"),
    ("Login incorrect.", "negative"),
    ("That option is invalid. Please try again.", "negative"),
    ("I'm sorry, but I was unable to locate the person you are calling", "negative"),
    ("That feature is not available on this line.", "negative"),
    ("sorry but the user's mail box can't accept more messages", "negative"),
    ("Parking attempt failed.", "negative"),
    ("After the tone say your unavailable message", "neutral"),  # a kind of greeting, not a failure
    ("Please enter your password followed by the pound key.", "neutral"),
    ("he was not an ill disposed young man", "neutral"),
    ("Thank you. That pin is invalid.", None),  # both cues: dropped
])
def test_text_rule(text, label):
    assert text_label(text) == label


def test_acted_rule():
    assert ACTED_LABELS == {"HAP": "positive", "NEU": "neutral", "ANG": "negative", "DIS": "negative",
                            "SAD": "negative", "FEA": "negative"}


def test_committed_labels_follow_the_rules():
    sources = load_sources()
    for item in sources["items"]:
        if not item["speech"]:
            assert "sentiment" not in item
        elif item["rule"] == "text":
            assert item["words"] == "yes" and item["sentiment"] == text_label(item["transcript"]), item["id"]
        else:
            code = item["rule"].split(":")[1]
            assert item["words"] == "no" and item["sentiment"] == ACTED_LABELS[code], item["id"]
        assert item["condition"] in ("telephone", "wideband") and item["package"] in sources["packages"]
    assert "asterisk-core-sounds-en-wav" in eval_only_packages()


def test_sha_check_names_the_package(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"RIFF1234")
    check_sha256(f, hashlib.sha256(b"RIFF1234").hexdigest(), "pkg")
    with pytest.raises(RealEvalError, match="pkg"):
        check_sha256(f, "0" * 64, "pkg")


def test_failed_fetch_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(real_eval.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 100, "", "E: Unable to locate package"))
    with pytest.raises(RealEvalError, match="deb package nosuch 1.0.*Unable to locate"):
        unpack("nosuch", {"registry": "deb", "version": "1.0"}, tmp_path, lambda m: None)


def test_short_reply_sits_inside_silence():
    rate = 8000
    x = np.concatenate([np.zeros(800), 0.5 * np.sin(np.arange(8000) * 0.3), np.zeros(400)]).astype(np.float32)
    y, start, end = in_silence(x, rate, 2.0)
    assert (start, round(end, 2)) == (2.0, 3.0)
    assert not y[:15999].any() and not y[-15999:].any() and len(y) == 5 * rate


def _fake_package(tmp_path, rate=22050):
    """A cached, already unpacked package with one speech clip, so build needs no fetch."""
    tree = tmp_path / "cache" / "unpacked" / "fake-1.0"
    clip = tree / "sounds" / "thanks.wav"
    t = np.arange(rate) / rate
    write_wav(clip, rate, np.stack([0.3 * np.sin(2 * np.pi * 200 * t)] * 2))
    (tree / ".done").touch()
    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    common = {"package": "fake", "source": "fake", "condition": "wideband", "licence": "CC0", "speech": True,
              "transcript": "Thank you.", "sentiment": "positive", "rule": "text", "words": "yes", "speaker": "s1"}
    return {"packages": {"fake": {"registry": "deb", "version": "1.0", "licence": "CC0"}},
            "items": [{"id": "thanks", "member": "sounds/thanks.wav", "sha256": sha, "kind": "utterance"} | common,
                      {"id": "short-thanks", "kind": "short-in-silence", "from": "thanks", "pad_s": 2.0} | common]}


def test_build_writes_mono_16k_wav_and_manifest(tmp_path):
    sources = _fake_package(tmp_path)
    build(tmp_path / "out", tmp_path / "cache", sources, log=lambda m: None)
    entries = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [e.group["kind"] for e in entries] == ["utterance", "short-in-silence"]
    first, short = entries
    assert (first.sentiment, first.sentiment_source, first.split) == ("positive", "human", "real-eval")
    assert first.group["words"] == "yes" and first.group["condition"] == "wideband"
    rate, x = read_wav(first.audio)
    assert rate == 16000 and x.shape[0] == 1  # 22.05 kHz resampled, stereo mixed down
    assert short.group["speech_start_s"] == "2.00"
    assert '"audio": "audio/fake/thanks.wav"' in (tmp_path / "out" / "manifest.jsonl").read_text()


def test_build_refuses_a_changed_recording_and_skips_written_clips(tmp_path):
    sources = _fake_package(tmp_path)
    sources["items"][0]["sha256"] = "f" * 64
    with pytest.raises(RealEvalError, match="fake"):
        build(tmp_path / "out", tmp_path / "cache", sources, log=lambda m: None)
    write_wav(tmp_path / "out" / "audio" / "fake" / "thanks.wav", 8000, np.zeros(8000, np.float32))
    build(tmp_path / "out", tmp_path / "cache", sources, log=lambda m: None)  # already written: no check, no fetch
    assert read_wav(tmp_path / "out" / "audio" / "fake" / "thanks.wav")[0] == 8000
