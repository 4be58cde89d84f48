"""The augmentation stack measured: SNR, speed, reverberation decay, phone band, SpecAugment."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from model.data.augment import (
    NOISE_KINDS,
    WaveformAugmenter,
    add_noise,
    babble,
    g711_decode,
    g711_encode,
    make_noise,
    reverberate,
    spec_augment,
    speed_perturb,
    synthetic_rir,
    telephone_channel,
)

SR = 16000


def _voiceish(seconds=2.0, seed=0):
    """A harmonic tone with syllable-rate amplitude modulation plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(h * phase) / h for h in range(1, 25)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * x / np.max(np.abs(x)) + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


def _snr(clean, noisy):
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr", [0.0, 7.5, 15.0])
def test_add_noise_hits_the_requested_snr(kind, snr):
    x = _voiceish()
    rng = np.random.default_rng(1)
    noisy = add_noise(x, make_noise(kind, x, SR, rng), snr)
    assert abs(_snr(x, noisy) - snr) < 0.1


def test_short_noise_is_tiled_and_silence_left_alone():
    x = _voiceish(1.0)
    noisy = add_noise(x, np.random.default_rng(2).standard_normal(1000), 5.0)
    assert len(noisy) == len(x) and abs(_snr(x, noisy) - 5.0) < 0.1
    assert np.array_equal(add_noise(np.zeros(100, np.float32), np.ones(10), 0.0), np.zeros(100))


@pytest.mark.parametrize("factor", [0.95, 1.0, 1.05])
def test_speed_changes_length_by_inverse_factor(factor):
    x = _voiceish(3.0)
    y = speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 0.01 * len(x) / factor
    if factor != 1.0:  # pitch moves with speed: the dominant frequency scales by the factor
        def peak(sig):
            spec = np.abs(np.fft.rfft(sig * np.hanning(len(sig))))
            return np.argmax(spec) * SR / len(sig)
        tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
        assert peak(speed_perturb(tone, factor)) == pytest.approx(1000 * factor, rel=0.01)


def test_rir_decays_and_reverb_preserves_level():
    rng = np.random.default_rng(3)
    rir = synthetic_rir(SR, 0.5, rng)
    assert np.argmax(np.abs(rir)) == 0
    tenth = len(rir) // 10
    energy = [np.sum(rir[i * tenth:(i + 1) * tenth] ** 2) for i in range(10)]
    assert all(a > b for a, b in zip(energy[1:], energy[2:]))  # tail falls steadily
    # 60 dB over RT60: the energy 0.1-0.2 s vs 0.4-0.5 s drops by about 36 dB
    e1 = np.sum(rir[int(0.1 * SR):int(0.2 * SR)] ** 2)
    e4 = np.sum(rir[int(0.4 * SR):int(0.5 * SR)] ** 2)
    assert 30 < 10 * np.log10(e1 / e4) < 42
    x = _voiceish()
    wet = reverberate(x, rir)
    assert len(wet) == len(x)
    assert np.mean(wet ** 2) == pytest.approx(np.mean(x ** 2), rel=1e-3)
    assert np.corrcoef(wet, x)[0, 1] < 0.95  # it did change the signal


def _band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return spec[(f >= lo) & (f < hi)].sum()


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_telephone_channel_removes_high_band(codec):
    rng = np.random.default_rng(4)
    x = (0.1 * rng.standard_normal(SR * 2)).astype(np.float32)
    y = telephone_channel(x, SR, codec)
    assert len(y) == len(x)
    assert _band_energy(x, 4000, 8000) > 0.4 * _band_energy(x, 0, 8000)
    assert _band_energy(y, 4000, 8000) < 1e-4 * _band_energy(y, 0, 8000)
    assert _band_energy(y, 0, 150) < 0.01 * _band_energy(y, 500, 3000) / 25  # low cut too (per-Hz)
    assert _band_energy(y, 500, 3000) > 0.5 * _band_energy(x, 500, 3000)


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_g711_matches_the_reference_codec(codec):
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    codes = g711_encode(pcm / 32768.0, codec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="the reference codec left the standard library in "
                                                        "Python 3.13")
    ref = audioop.lin2ulaw(pcm.tobytes(), 2) if codec == "mulaw" else audioop.lin2alaw(pcm.tobytes(), 2)
    assert np.array_equal(codes, np.frombuffer(ref, np.uint8))
    all_codes = np.arange(256, dtype=np.uint8)
    ref_dec = audioop.ulaw2lin(all_codes.tobytes(), 2) if codec == "mulaw" else audioop.alaw2lin(all_codes.tobytes(), 2)
    assert np.array_equal((g711_decode(all_codes, codec) * 32768).astype(np.int16), np.frombuffer(ref_dec, np.int16))


def test_g711_round_trip_quality():
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for codec in ("mulaw", "alaw"):
        y = g711_decode(g711_encode(x, codec), codec)
        assert 30 < _snr(x, y) < 45  # ~38 dB is what 8-bit companding gives


def test_babble_is_built_from_the_signal():
    x = _voiceish()
    b = babble(x, np.random.default_rng(5))
    assert np.sqrt(np.mean(b ** 2)) == pytest.approx(1.0, rel=1e-4)
    # speech-shaped: most energy where the signal's is (below 4 kHz)
    assert _band_energy(b, 0, 4000) > 0.9 * _band_energy(b, 0, 8000)


def test_augmenter_is_reproducible_and_does_something():
    x = _voiceish()
    aug = WaveformAugmenter(p_reverb=1.0, p_noise=1.0, p_telephone=1.0)
    a = aug(x, np.random.default_rng(7))
    b = aug(x, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert a.dtype == np.float32 and np.max(np.abs(a)) <= 1.0
    lengths = {len(aug(x, np.random.default_rng(s))) for s in range(12)}
    assert lengths == {len(speed_perturb(x, f)) for f in (0.95, 1.0, 1.05)}
    plain = WaveformAugmenter(speeds=(1.0,), p_reverb=0, p_noise=0, p_telephone=0)
    assert np.array_equal(plain(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError):
        WaveformAugmenter(noise_kinds=("rain",))


def test_spec_augment_masks_only_valid_frames():
    gen = torch.Generator().manual_seed(0)
    feats = torch.ones(3, 100, 40)
    lengths = torch.tensor([100, 60, 4])
    out = spec_augment(feats, lengths, time_masks=2, time_width=15, freq_masks=2, freq_width=6, generator=gen)
    assert torch.equal(feats, torch.ones(3, 100, 40))  # input untouched
    assert torch.all(out[1, 60:] == 1) and torch.all(out[2, 4:] == 1)  # padding untouched
    masked_frames = (out[0] == 0).all(dim=1).sum()
    assert 0 < masked_frames <= 30
    masked_bins = (out[0, :] == 0).all(dim=0).sum()
    assert 0 < masked_bins <= 12
    # the item with 4 valid frames gets no time mask (20% of 4 frames < 1)
    assert not (out[2, :4] == 0).all(dim=1).any()
    again = spec_augment(feats, lengths, 2, 15, 2, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
