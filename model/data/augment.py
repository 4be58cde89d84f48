"""Augmentation stack: speed 0.95/1.0/1.05, reverberation, 0-15 dB noise, phone channel, SpecAugment.

Calls reach voicetone as 8 kHz G.711 phone audio or as wide-band meeting
audio, in rooms and with background noise; training windows are pushed
through the same conditions so the model is robust to them. Everything
here is numpy/scipy on 1-D float32 waveforms except ``spec_augment``,
which works on feature batches in torch.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from scipy.fft import next_fast_len
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

from schemas.resample import resample

_EPS = 1e-12


def _f32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def speed_perturb(x, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster: duration scales by 1/factor and pitch by factor.

    Like Kaldi's speed perturbation: the samples are reinterpreted at
    rate*factor and resampled back to the original rate.
    """
    x = _f32(x)
    if factor <= 0:
        raise ValueError("factor must be positive")
    if factor == 1.0:
        return x.copy()
    ratio = Fraction(factor).limit_denominator(1000)
    # new length = n * denominator / numerator = n / factor
    return resample_poly(x, ratio.denominator, ratio.numerator).astype(np.float32)


def synthetic_rir(sample_rate: int, rt60: float, rng: np.random.Generator, early_reflections: int = 8) -> np.ndarray:
    """A room impulse response: direct path, sparse early reflections, exponential noise tail.

    The tail's amplitude falls by 60 dB over ``rt60`` seconds; reflections
    arrive 2-40 ms after the direct path, weaker the later they come.
    """
    if rt60 <= 0:
        raise ValueError("rt60 must be positive")
    n = max(2, int(round(rt60 * 1.2 * sample_rate)))
    t = np.arange(n) / sample_rate
    decay = np.exp(-np.log(1000.0) * t / rt60)
    rir = rng.standard_normal(n) * decay * 0.3
    onset = int(0.002 * sample_rate)
    rir[:onset] = 0.0  # the diffuse tail starts after the direct sound
    for _ in range(early_reflections):
        delay = rng.uniform(0.002, 0.040)
        k = min(n - 1, int(delay * sample_rate))
        rir[k] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7) * np.exp(-np.log(1000.0) * delay / rt60)
    rir[0] = 1.0
    return (rir / np.max(np.abs(rir))).astype(np.float32)


def reverberate(x, rir) -> np.ndarray:
    """Convolve with ``rir`` (FFT), keep the original length and RMS level."""
    x, rir = _f32(x), _f32(rir)
    if not len(x):
        return x.copy()
    wet = fftconvolve(x, rir)[: len(x)]
    p_dry, p_wet = _power(x), _power(wet)
    if p_wet > _EPS:
        wet = wet * np.sqrt(p_dry / p_wet)
    return wet.astype(np.float32)


def add_noise(x, noise, snr_db: float) -> np.ndarray:
    """Add ``noise`` (tiled or cut to fit) scaled to give exactly ``snr_db``.

    A silent signal is returned unchanged: its SNR is undefined.
    """
    x, noise = _f32(x), _f32(noise)
    if not len(x):
        return x.copy()
    if not len(noise):
        raise ValueError("noise is empty")
    if len(noise) < len(x):
        noise = np.tile(noise, int(np.ceil(len(x) / len(noise))))
    noise = noise[: len(x)].astype(np.float64)
    p_x, p_n = _power(x), float(np.mean(noise ** 2))
    if p_x <= _EPS or p_n <= _EPS:
        return x.copy()
    gain = np.sqrt(p_x / (p_n * 10.0 ** (snr_db / 10.0)))
    return (x + gain * noise).astype(np.float32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2)) if len(x) else 0.0
    return (x / rms if rms > _EPS else x).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS Gaussian white noise."""
    return _unit_rms(rng.standard_normal(n))


def _shaped_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    # shaped at an FFT-friendly length and cut: a window of a prime number of samples
    # would otherwise cost ~10x more (it dominated the training data loader)
    m = next_fast_len(max(n, 1), real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec = spec / f ** (exponent / 2.0)
    spec[0] = 0.0
    return _unit_rms(np.fft.irfft(spec, m)[:n])


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise (equal energy per octave, like many fans and vents)."""
    return _shaped_noise(n, rng, 1.0)


def brown_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f^2 noise (rumble: traffic, wind)."""
    return _shaped_noise(n, rng, 2.0)


def hum(n: int, sample_rate: int, rng: np.random.Generator, mains_hz: float | None = None) -> np.ndarray:
    """Unit-RMS mains hum at 50 or 60 Hz with decaying odd and even harmonics."""
    base = mains_hz if mains_hz is not None else float(rng.choice([50.0, 60.0]))
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for h in range(1, 8):
        if base * h < sample_rate / 2:
            out += np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) / h
    return _unit_rms(out)


def babble(x, rng: np.random.Generator, talkers: int = 5) -> np.ndarray:
    """Unit-RMS babble-like noise: shifted, partly reversed copies of the signal itself.

    Speech-shaped, non-stationary interference without needing another corpus.
    """
    x = _f32(x)
    n = len(x)
    if n == 0:
        return x.copy()
    out = np.zeros(n, dtype=np.float64)
    for _ in range(talkers):
        part = x[::-1] if rng.random() < 0.5 else x
        out += np.roll(part, int(rng.integers(0, n))) * rng.uniform(0.5, 1.0)
    return _unit_rms(out)


NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def make_noise(kind: str, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Noise of ``kind`` (one of NOISE_KINDS) as long as ``x``."""
    n = len(x)
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "brown":
        return brown_noise(n, rng)
    if kind == "hum":
        return hum(n, sample_rate, rng)
    if kind == "babble":
        return babble(x, rng)
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")


# ITU-T G.711 companding, bit-exact with the reference (Sun) implementation.
_MU_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_A_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int64)


def g711_encode(x, codec: str = "mulaw") -> np.ndarray:
    """Float samples in [-1, 1] to G.711 bytes (uint8), ``codec`` "mulaw" or "alaw"."""
    pcm = _to_int16(_f32(x))
    if codec == "mulaw":
        v = pcm >> 2
        mask = np.where(v < 0, 0x7F, 0xFF)
        v = np.minimum(np.abs(v), 8159) + 33
        seg = np.searchsorted(_MU_SEG_END, v, side="left")
        code = (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0xF)
        code = np.where(seg >= 8, 0x7F, code)
        return (code ^ mask).astype(np.uint8)
    if codec == "alaw":
        v = pcm >> 3
        mask = np.where(v >= 0, 0xD5, 0x55)
        v = np.where(v >= 0, v, -v - 1)
        seg = np.searchsorted(_A_SEG_END, v, side="left")
        s = np.minimum(seg, 7)
        quant = np.where(s < 2, (v >> 1) & 0xF, (v >> s) & 0xF)
        code = np.where(seg >= 8, 0x7F, (s << 4) | quant)
        return (code ^ mask).astype(np.uint8)
    raise ValueError(f"unknown codec {codec!r}; expected 'mulaw' or 'alaw'")


def g711_decode(codes, codec: str = "mulaw") -> np.ndarray:
    """G.711 bytes back to float32 samples in [-1, 1]."""
    u = np.asarray(codes, dtype=np.int64) & 0xFF
    if codec == "mulaw":
        u = ~u & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        pcm = np.where(u & 0x80, 0x84 - t, t - 0x84)
    elif codec == "alaw":
        a = u ^ 0x55
        t = (a & 0x0F) << 4
        seg = (a & 0x70) >> 4
        t = np.where(seg == 0, t + 8, t + 0x108)
        t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
        pcm = np.where(a & 0x80, t, -t)
    else:
        raise ValueError(f"unknown codec {codec!r}; expected 'mulaw' or 'alaw'")
    return (pcm / 32768.0).astype(np.float32)


def telephone_channel(x, sample_rate: int, codec: str = "mulaw") -> np.ndarray:
    """Narrow-band phone line: 300-3400 Hz band-pass, 8 kHz G.711 round trip, back to ``sample_rate``."""
    x = _f32(x)
    n = len(x)
    if n == 0:
        return x.copy()
    narrow = resample(x, sample_rate, 8000).astype(np.float64)
    if len(narrow) > 27:  # sosfiltfilt needs a few samples of padding
        sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=8000, output="sos")
        narrow = sosfiltfilt(sos, narrow)
    narrow = g711_decode(g711_encode(np.clip(narrow, -1.0, 1.0), codec), codec)
    back = resample(narrow, 8000, sample_rate)
    back = np.asarray(back, dtype=np.float32)
    if len(back) < n:
        back = np.pad(back, (0, n - len(back)))
    return back[:n]


class WaveformAugmenter:
    """The waveform part of the stack, as a ``(x, rng) -> x`` callable for WindowDataset.

    Applies, in order: a speed factor drawn from ``speeds``; reverberation
    with probability ``p_reverb`` (RT60 uniform in ``rt60``); additive noise
    with probability ``p_noise`` at an SNR uniform in ``snr_db``; a G.711
    phone channel with probability ``p_telephone``. Output peaks above 1 are
    scaled down rather than clipped.
    """

    def __init__(
        self,
        speeds: Sequence[float] = (0.95, 1.0, 1.05),
        p_reverb: float = 0.3,
        p_noise: float = 0.5,
        snr_db: tuple[float, float] = (0.0, 15.0),
        p_telephone: float = 0.3,
        seed: int = 0,
        sample_rate: int = 16000,
        rt60: tuple[float, float] = (0.2, 0.8),
        noise_kinds: Sequence[str] = NOISE_KINDS,
    ):
        for kind in noise_kinds:
            if kind not in NOISE_KINDS:
                raise ValueError(f"unknown noise kind {kind!r}")
        self.speeds = tuple(speeds)
        self.p_reverb = p_reverb
        self.p_noise = p_noise
        self.snr_db = snr_db
        self.p_telephone = p_telephone
        self.sample_rate = sample_rate
        self.rt60 = rt60
        self.noise_kinds = tuple(noise_kinds)
        self._rng = np.random.default_rng(seed)

    def __call__(self, x, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else self._rng
        y = _f32(x)
        if self.speeds:
            y = speed_perturb(y, float(rng.choice(self.speeds)))
        if rng.random() < self.p_reverb:
            y = reverberate(y, synthetic_rir(self.sample_rate, float(rng.uniform(*self.rt60)), rng))
        if rng.random() < self.p_noise and self.noise_kinds:
            kind = str(rng.choice(self.noise_kinds))
            y = add_noise(y, make_noise(kind, y, self.sample_rate, rng), float(rng.uniform(*self.snr_db)))
        if rng.random() < self.p_telephone:
            y = telephone_channel(y, self.sample_rate, str(rng.choice(["mulaw", "alaw"])))
        peak = float(np.max(np.abs(y))) if len(y) else 0.0
        if peak > 1.0:
            y = y / peak
        return y.astype(np.float32)


def spec_augment(
    feats: torch.Tensor,
    lengths: torch.Tensor | Sequence[int],
    time_masks: int = 2,
    time_width: int = 20,
    freq_masks: int = 2,
    freq_width: int = 8,
    generator: torch.Generator | None = None,
    max_time_ratio: float = 0.2,
    value: float = 0.0,
) -> torch.Tensor:
    """SpecAugment on ``feats [B, T, F]``: returns a copy with time and frequency bands set to ``value``.

    Time masks stay inside each item's valid frames (``lengths``), so the
    padding is untouched and short items are not wiped out: a time mask is
    at most ``time_width`` frames and at most ``max_time_ratio`` of the item.
    """
    if feats.dim() != 3:
        raise ValueError("feats must be [B, T, F]")
    out = feats.clone()
    batch, frames, bins = out.shape
    lengths = torch.as_tensor(lengths, dtype=torch.long).tolist()

    def draw(high: int) -> int:  # uniform integer in [0, high]
        return int(torch.randint(0, high + 1, (1,), generator=generator))

    for b in range(batch):
        valid = max(0, min(int(lengths[b]), frames))
        for _ in range(freq_masks):
            w = draw(min(freq_width, bins))
            f0 = draw(bins - w)
            out[b, :valid, f0:f0 + w] = value
        limit = min(time_width, int(valid * max_time_ratio))
        for _ in range(time_masks):
            if limit <= 0:
                break
            w = draw(limit)
            t0 = draw(valid - w)
            out[b, t0:t0 + w, :] = value
    return out
