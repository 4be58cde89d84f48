"""`analyze` and `replay` read the recordings people have: WAV, FLAC, OGG (Vorbis, Opus) and MP3.

One bundled stereo call (agent, customer), encoded in each format, gives the same labels in `analyze` as the
WAV; FLAC is lossless (the same probabilities to 1e-6), the lossy formats stay within `LOSSY_TOL` of
them (largest change of any probability of any window) and `LOSSY_MEAN_TOL` on average.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from schemas.wav import WavError, read_audio, read_wav
from tests.harness import ROOT
from voicetone.cli import main
from streams.settings import Settings

SAMPLE = ROOT / "voicetone" / "samples" / "call-billing-complaint.wav"
FORMATS = {"flac": ("FLAC", None), "ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}
LOSSY_TOL = 0.3          # one window's P(positive/neutral/negative) or P(speech), MP3 at 8 kHz the worst (~0.2)
LOSSY_MEAN_TOL = 0.05    # averaged over windows and classes


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    rate, audio = read_wav(SAMPLE)
    out = tmp_path_factory.mktemp("formats")
    files = {"wav": SAMPLE}
    for ext, (fmt, subtype) in FORMATS.items():
        path = out / f"{SAMPLE.stem}.{ext}"
        soundfile.write(str(path), audio.T, rate, format=fmt, subtype=subtype)   # libsndfile's default quality
        files[ext] = path
    return files


@pytest.fixture(scope="module")
def segments(encoded) -> dict[str, list[dict]]:
    from model import load
    from voicetone.analyze import analyze_files

    settings = Settings(device="cpu")
    model = load(None, device="cpu")
    return {ext: [e for e in analyze_files(settings, [str(path)], model=model) if e["type"] == "segment"]
            for ext, path in encoded.items()}


def _probs(events: list[dict]) -> np.ndarray:
    return np.array([[e["speech_probability"], *(e["sentiment"][c] for c in ("positive", "neutral", "negative"))]
                     for e in events])


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_the_same_call_in_each_format_gives_the_same_labels(segments, ext):
    wav, other = segments["wav"], segments[ext]
    assert [(e["channel"], e["segment_index"], e["start_ms"], e["end_ms"]) for e in other] == \
        [(e["channel"], e["segment_index"], e["start_ms"], e["end_ms"]) for e in wav]
    assert [e["label"] for e in other] == [e["label"] for e in wav]
    assert {e["call_id"] for e in other} == {SAMPLE.stem}
    diff = np.abs(_probs(other) - _probs(wav))
    if ext == "flac":
        assert diff.max() < 1e-6
    else:
        assert diff.max() <= LOSSY_TOL and diff.mean() <= LOSSY_MEAN_TOL, (diff.max(), diff.mean())


def test_stereo_channels_keep_their_order(encoded):
    rate, wav = read_wav(SAMPLE)
    for ext in ("flac", "mp3"):
        got_rate, got = read_audio(encoded[ext])
        assert got_rate == rate and got.shape == wav.shape
        # each decoded channel is closest to the same channel of the original, not to the other one
        for c in range(2):
            own = np.abs(got[c] - wav[c]).mean()
            assert own < np.abs(got[c] - wav[1 - c]).mean()
    assert np.array_equal(read_audio(encoded["flac"])[1], wav)


def test_any_rate_and_channel_count(tmp_path):
    rate = 22050
    t = np.arange(rate) / rate
    three = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in (200, 300, 400)]).astype(np.float32)
    soundfile.write(str(tmp_path / "three.flac"), three.T, rate)
    got_rate, got = read_audio(tmp_path / "three.flac")
    assert got_rate == rate and got.shape == (3, rate)
    assert np.abs(got - three).max() < 1e-4   # FLAC at 16 bits


def test_what_cannot_be_decoded_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "call.ogg"
    bad.write_bytes(b"OggS" + bytes(200))
    with pytest.raises(WavError, match="cannot decode audio.*WAV, FLAC, OGG"):
        read_audio(bad)
    assert main(["analyze", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("voicetone: error: ") and "call.ogg" in err
    (tmp_path / "empty.mp3").write_bytes(b"")
    assert main(["analyze", str(tmp_path / "empty.mp3")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_replay_reads_a_flac_file_as_frames(encoded):
    from voicetone.framing import load_source

    src = load_source(encoded["flac"], channels="agent,customer")
    ref = load_source(SAMPLE, channels="agent,customer")
    assert src.channels == ["agent", "customer"] and src.call_id == SAMPLE.stem
    assert np.array_equal(src.audio, ref.audio)
