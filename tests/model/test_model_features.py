"""Log-mel features against a pure-numpy reference of the same math, and padding behaviour."""

import numpy as np
import pytest
import torch

from model.features import LogMel, mel_filterbank, mfcc_with_deltas, pool_frames

torch.set_num_threads(1)


def numpy_logmel(x: np.ndarray, sr=16000, n_fft=512, win=400, hop=160, n_mels=80, eps=1e-6, normalize=True):
    x = x.astype(np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = np.arange(win)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    full = np.zeros(n_fft)
    left = (n_fft - win) // 2
    full[left:left + win] = w
    frames = 1 + (len(x) - n_fft) // hop
    out = []
    for i in range(frames):
        spec = np.fft.rfft(x[i * hop:i * hop + n_fft] * full)
        out.append(np.abs(spec) ** 2)
    p = np.array(out)
    fb = mel_filterbank(sr, n_fft, n_mels)
    lm = np.log(p @ fb + eps)
    if normalize:
        lm = (lm - lm.mean(0)) / np.sqrt(lm.var(0) + 1e-5)
    return lm


@pytest.fixture
def signal():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("normalize", [False, True])
def test_logmel_matches_numpy_reference(signal, normalize):
    lm = LogMel(normalize=normalize)
    feats, flen = lm(torch.from_numpy(signal)[None])
    ref = numpy_logmel(signal, normalize=normalize)
    assert feats.shape == (1, ref.shape[0], 80) and int(flen[0]) == ref.shape[0]
    np.testing.assert_allclose(feats[0].numpy(), ref, atol=1e-4, rtol=0)


def test_padding_does_not_change_features(signal):
    lm = LogMel()
    short = signal[:9000]
    alone, n_alone = lm(torch.from_numpy(short)[None])
    batch = torch.zeros(2, 16000)
    batch[0, :9000] = torch.from_numpy(short)
    batch[1] = torch.from_numpy(signal)
    both, n_both = lm(batch, torch.tensor([9000, 16000]))
    n = int(n_alone[0])
    assert int(n_both[0]) == n and int(n_both[1]) == 1 + (16000 - 512) // 160
    np.testing.assert_allclose(both[0, :n].numpy(), alone[0].numpy(), atol=1e-5)
    assert torch.all(both[0, n:] == 0)


def test_garbage_past_length_is_ignored(signal):
    lm = LogMel()
    clean = torch.from_numpy(signal)[None].clone()
    clean[0, 8000:] = 0
    dirty = torch.from_numpy(signal)[None]
    a, _ = lm(clean, torch.tensor([8000]))
    b, _ = lm(dirty, torch.tensor([8000]))
    torch.testing.assert_close(a, b)


def test_empty_and_silent_windows_are_finite():
    lm = LogMel()
    feats, flen = lm(torch.zeros(3, 800), torch.tensor([0, 100, 800]))
    assert torch.isfinite(feats).all()
    assert flen.tolist() == [1, 1, 2]


def test_mfcc_targets_and_pooling_shapes():
    lm = LogMel(n_mels=40)
    feats, flen = lm(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    mf = mfcc_with_deltas(feats, 13)
    assert mf.shape == (2, feats.shape[1], 39)
    pooled, plen = pool_frames(mf, flen, 4)
    assert pooled.shape[1] == -(-feats.shape[1] // 4)
    assert plen.tolist() == [-(-int(flen[0]) // 4), -(-int(flen[1]) // 4)]
    # a pooled frame is the mean of its 4 valid source frames
    torch.testing.assert_close(pooled[0, 1], mf[0, 4:8].mean(0))
