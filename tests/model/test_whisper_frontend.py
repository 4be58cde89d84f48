"""The Whisper base front end: weights from the pinned packages, parity with CTranslate2, exact masking."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointError
from model.config import ModelConfig
from model.inference import VoiceToneModel, load
from model.whisper_frontend import (WHISPER_BASE_SHA256, CT2WhisperEncoder, WhisperFrontEnd, WhisperLogMel,
                                    ct2_first_blocks, pool_frames, read_ct2, slaney_filterbank)
from schemas.wav import read_wav


@pytest.fixture(scope="module")
def frontend() -> WhisperFrontEnd:
    return WhisperFrontEnd(6, stride=2).eval()


def _ct2_file(tensors: dict[str, np.ndarray]) -> bytes:
    """A CTranslate2 model file (format 6) holding ``tensors``, written by the format's own rules."""
    def text(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.float16): 4}
    out = struct.pack("<I", 6) + text("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(tensors))
    for name, t in tensors.items():
        out += text(name) + struct.pack("<B", t.ndim) + b"".join(struct.pack("<I", d) for d in t.shape)
        out += struct.pack("<B", ids[t.dtype]) + struct.pack("<I", t.nbytes) + t.tobytes()
    return out + struct.pack("<I", 0)


def test_read_ct2_reads_names_shapes_and_types():
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([1, -2], dtype=np.int8)
    c = np.ones((4,), dtype=np.float32)
    got = read_ct2(_ct2_file({"encoder/a": a, "decoder/b": b, "encoder/c": c}), prefix="encoder/")
    assert sorted(got) == ["encoder/a", "encoder/c"]
    np.testing.assert_array_equal(got["encoder/a"], a)
    np.testing.assert_array_equal(got["encoder/c"], c)


def test_ct2_first_blocks_drops_only_the_later_encoder_blocks():
    t = {name: np.full((2,), i, dtype=np.float32) for i, name in enumerate(
        ["encoder/conv1/weight", "encoder/layer_0/w", "encoder/layer_1/w", "encoder/layer_2/w", "encoder/layer_10/w",
         "encoder/layer_norm/gamma", "decoder/layer_2/w"])}
    got = read_ct2(ct2_first_blocks(_ct2_file(t), 2))
    assert sorted(got) == ["decoder/layer_2/w", "encoder/conv1/weight", "encoder/layer_0/w", "encoder/layer_1/w",
                           "encoder/layer_norm/gamma"]
    np.testing.assert_array_equal(got["encoder/layer_norm/gamma"], t["encoder/layer_norm/gamma"])


def test_ctranslate2_runs_the_first_blocks_as_torch_does():
    """Fewer blocks in CTranslate2 (a file without the later ones) give torch's output of the same blocks."""
    x = torch.randn(2, 40000, generator=torch.Generator().manual_seed(2)) * 0.1
    lengths = torch.tensor([40000, 30000])
    with torch.inference_mode():
        a, ma = WhisperFrontEnd(3, stride=2).eval()(x, lengths)
        b, mb = WhisperFrontEnd(3, stride=2, runtime="ctranslate2")(x, lengths)
    assert torch.equal(ma, mb)
    assert float((a - b).abs().max()) < 5e-3, "torch and CTranslate2 disagree on Whisper's first 3 blocks"


def test_slaney_filters_cover_the_band_once_each():
    fb = slaney_filterbank()
    assert fb.shape == (80, 201)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and fb.min() >= 0
    # area-normalised: higher (wider) filters have lower peaks
    assert fb[-1].max() < fb[0].max()


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.5, 5.0])
def test_mask_counts_match_out_lengths(frontend, seconds):
    n = int(seconds * 16000)
    with torch.inference_mode():
        h, mask = frontend(torch.randn(1, n) * 0.1)
    assert h.shape == (1, mask.shape[1], 512)
    assert int(mask.sum()) == int(frontend.out_lengths(torch.tensor([n]))[0])


def test_a_window_is_the_same_alone_or_in_a_padded_batch(frontend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 80000, generator=g) * 0.1
    lengths = torch.tensor([80000, 41000, 12000])
    with torch.inference_mode():
        batch, mask = frontend(x, lengths)
        for r in range(3):
            alone, m = frontend(x[r:r + 1, :int(lengths[r])])
            t = int(m.sum())
            assert int(mask[r].sum()) == t
            assert float((alone[0, :t] - batch[r, :t]).abs().max()) < 1e-3
            assert float(batch[r, t:].abs().sum()) == 0.0


def test_torch_encoder_matches_ctranslate2(frontend):
    ct2 = WhisperFrontEnd(6, stride=2, runtime="ctranslate2")
    x = torch.randn(2, 80000, generator=torch.Generator().manual_seed(1)) * 0.1
    lengths = torch.tensor([80000, 50000])
    with torch.inference_mode():
        a, ma = frontend(x, lengths)
        b, mb = ct2(x, lengths)
    assert torch.equal(ma, mb)
    assert float((a - b).abs().max()) < 5e-3, "torch and CTranslate2 disagree on Whisper's encoder"


def test_log_mel_is_whispers_own_speech_is_transcribed():
    """Whisper's decoder (CTranslate2) reads our log-mel of a spoken sentence word for word: a wrong mel
    scale, window or normalisation would not be transcribed."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (scripts/setup.sh installs it)")
    import tempfile
    from pathlib import Path

    from schemas.resample import resample

    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "u.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "thank you for calling"], check=True)
        rate, channels = read_wav(wav)
    audio = np.asarray(resample(channels[0], rate, 16000), dtype=np.float32)
    mel, flen = WhisperLogMel()(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    padded = np.zeros((1, 80, 3000), np.float32)   # Whisper's 30 s input: zeros past the end
    padded[:, :, :int(flen[0])] = mel[:, :, :int(flen[0])].numpy()
    prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    tokens = CT2WhisperEncoder(threads=2).generate(padded, prompt)
    text = "".join(tokens).replace("Ġ", " ").lower()
    assert "thank you" in text and "calling" in text, text


def test_pool_frames_averages_valid_frames_only():
    h = torch.arange(10, dtype=torch.float32).view(1, 5, 2)
    mask = torch.tensor([[True, True, True, False, False]])
    out, m = pool_frames(h, mask, 2)
    assert m.tolist() == [[True, True, False]]
    assert out[0, 0].tolist() == [1.0, 2.0] and out[0, 1].tolist() == [4.0, 5.0]


def test_checkpoint_holds_the_weights_identity_not_the_weights(tmp_path):
    cfg = ModelConfig(frontend="whisper", d_model=32, heads=2, asr_layers=1, decoder_layers=1, cls_attn_dim=16,
                      cls_hidden=32, ffn_mult=2)
    model = VoiceToneModel.untrained(cfg)
    path = tmp_path / "m.pt"
    model.save(path)
    assert path.stat().st_size < 5_000_000   # no 80 MB of Whisper inside
    again = load(path, "cpu")
    x = np.random.default_rng(0).standard_normal((2, 80000)).astype(np.float32) * 0.1
    a, b = model.predict(x), again.predict(x)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    ck = torch.load(path, weights_only=True)
    assert bytes(ck["state"]["frontend"]["weights_sha256"].tolist()).hex() == WHISPER_BASE_SHA256
    ck["state"]["frontend"]["weights_sha256"] = torch.zeros(32, dtype=torch.uint8)
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="trained on Whisper weights"):
        load(path, "cpu")


def test_the_bundled_whisper_model_loads_by_name_and_finds_a_short_reply():
    """``whisper-base`` names the bundled checkpoint; a 1 s tone-free reply inside silence is speech to it,
    4 s of silence is not."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (scripts/setup.sh installs it)")
    import tempfile
    from pathlib import Path

    from schemas.resample import resample

    model = load("whisper-base", "cpu")
    assert model.config.frontend == "whisper" and model.version.startswith("voicetone-")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "u.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "thank you"], check=True)
        rate, channels = read_wav(wav)
    reply = np.asarray(resample(channels[0], rate, 16000), dtype=np.float32)[:16000]
    window = np.zeros(80000, np.float32)
    window[32000:32000 + len(reply)] = reply
    speech, _ = model.predict(np.stack([window, np.zeros(80000, np.float32)]))
    assert speech[0] > 0.5 and speech[1] < 0.5, speech
