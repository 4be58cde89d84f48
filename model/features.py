"""Log-mel features computed in torch, on whatever device the model runs on.

Features are part of the model (not a preprocessing step) so that a batch of
raw windows goes to the GPU once. Frames are taken without centre padding
(``center=False``) and samples past each window's length are zeroed, so a
window's features do not depend on how much padding its batch added -- the
streaming worker batches windows of different lengths.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def hz_to_mel(f):
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """Triangular HTK mel filters, [n_fft // 2 + 1, n_mels], float64, unnormalised peaks of 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(up, down))


def resample_fft_torch(audio: torch.Tensor, src_rate: int, dst_rate: int) -> torch.Tensor:
    """`schemas.resample.resample_fft_rows` in torch, on the tensor's device: each row of [B, n] band-
    limited by its FFT to ``ceil(n * dst / src)`` samples (zero-padded spectrum up, cut down with a real
    Nyquist bin). On a GPU the worker's event loop then hands over windows at their own rate and the FFTs
    run beside the network (within 1e-6 of the CPU answer: tests/model/test_inference_resample.py)."""
    audio = audio.float()
    n = audio.shape[1]
    if src_rate == dst_rate or n == 0:
        return audio
    m = -(-n * dst_rate // src_rate)
    spec = torch.fft.rfft(audio, dim=-1)[:, :m // 2 + 1]   # cut at the new Nyquist; irfft zero-pads a shorter one
    if m % 2 == 0 and spec.shape[1] == m // 2 + 1:   # (spec is a view of rfft's own fresh output)
        spec[:, -1] = spec[:, -1].real.to(spec.dtype)
    return torch.fft.irfft(spec, m, dim=-1) * (m / n)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a [n_in, n_out] matrix (MFCC = log-mel @ this)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[:, 0] /= math.sqrt(2.0)
    return m


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Bool [B, size], True at valid positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_var_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-channel mean/variance normalisation over valid frames only; pads become 0."""
    m = mask.unsqueeze(-1).to(x.dtype)
    count = m.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(dim=1, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(dim=1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps) * m


class LogMel(nn.Module):
    """[B, T] waveform (+ lengths) -> ([B, frames, n_mels] log-mel, frame lengths)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_ms: float = 25.0,
                 hop_ms: float = 10.0, n_mels: int = 80, normalize: bool = True, eps: float = 1e-6):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = int(round(sample_rate * win_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        self.n_mels = n_mels
        self.normalize = normalize
        self.eps = eps
        if self.win_length > n_fft:
            raise ValueError("window longer than n_fft")
        # derived from the config, so not part of the state dict
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        fb = mel_filterbank(sample_rate, n_fft, n_mels)
        self.register_buffer("fbank", torch.from_numpy(fb).float(), persistent=False)
        self._windows: dict[tuple[int, str], torch.Tensor] = {}   # Hann windows of native rates, per device

    def rate_plan(self, rate: int) -> tuple[int, int, int] | None:
        """(n_fft, window, hop) in samples at ``rate`` on the same frequency grid and frame times as at the
        model's rate, or None where they would not be whole samples. A lower rate (8 kHz telephone audio
        for a 16 kHz model) is then read as it comes: its STFT bins are the model-rate bins below its
        Nyquist frequency, so resampling it first only adds empty bins (and costs an FFT per window)."""
        if rate == self.sample_rate:
            return self.n_fft, self.win_length, self.hop_length
        if isinstance(rate, bool) or int(rate) != rate or not 0 < rate < self.sample_rate:
            return None
        rate = int(rate)
        scaled = [v * rate for v in (self.n_fft, self.win_length, self.hop_length)]
        if any(v % self.sample_rate for v in scaled):
            return None
        n_fft, win, hop = (v // self.sample_rate for v in scaled)
        return (n_fft, win, hop) if n_fft % 2 == 0 and hop > 0 else None

    def frame_lengths(self, lengths: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Frames fully inside each window; at least 1 so empty windows still flow through."""
        n_fft, _, hop = self._plan(sample_rate)
        n = torch.div(lengths - n_fft, hop, rounding_mode="floor") + 1
        return n.clamp(min=1)

    def _plan(self, sample_rate: int | None) -> tuple[int, int, int]:
        plan = self.rate_plan(self.sample_rate if sample_rate is None else sample_rate)
        if plan is None:
            raise ValueError(f"log-mel features at {sample_rate} Hz: resample to {self.sample_rate} Hz first "
                             f"(rates read as they come: lower ones whose frames are whole samples)")
        return plan

    def _window_at(self, rate: int, win: int, device: torch.device) -> torch.Tensor:
        if rate == self.sample_rate:
            return self.window
        key = (rate, str(device))
        window = self._windows.get(key)
        if window is None:
            with torch.inference_mode(False):   # a plain tensor, usable with autograd later too
                window = self._windows[key] = torch.hann_window(win, periodic=True, device=device)
        return window

    def _power(self, audio: torch.Tensor, rate: int, plan: tuple[int, int, int]) -> torch.Tensor:
        """[B, bins, frames] power spectrum: the model rate's bins up to the audio's Nyquist frequency."""
        n_fft, win, hop = plan
        window = self._window_at(rate, win, audio.device)
        spec = torch.stft(audio, n_fft, hop_length=hop, win_length=win, window=window, center=False,
                          return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)
        # a model-rate frame holds (model rate / rate) times the samples of the same stretch of sound
        return power if rate == self.sample_rate else power * (self.sample_rate / rate) ** 2

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, sample_rate: int | None = None):
        """``sample_rate``: the audio's, where it is not the model's (see `rate_plan`)."""
        audio = audio.float()
        b, t = audio.shape
        rate = self.sample_rate if sample_rate is None else sample_rate
        plan = self._plan(rate)
        n_fft = plan[0]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=audio.device)
        lengths = lengths.to(audio.device).long()
        audio = audio * length_mask(lengths, t).to(audio.dtype)
        if t < n_fft:
            audio = nn.functional.pad(audio, (0, n_fft - t))
        power = self._power(audio, rate, plan)  # [B, freq, frames]
        mel = torch.matmul(power.transpose(1, 2), self.fbank[: power.shape[1]])   # no energy above them
        logmel = torch.log(mel + self.eps)
        # not .clamp(max=shape): traced, a shape is a host tensor, which clamp refuses beside CUDA tensors
        flen = self.frame_lengths(lengths, sample_rate)
        flen = torch.minimum(flen, flen.new_full((), logmel.shape[1]))
        mask = length_mask(flen, logmel.shape[1])
        if self.normalize:
            logmel = masked_mean_var_norm(logmel, mask)
        else:
            logmel = logmel * mask.unsqueeze(-1).to(logmel.dtype)
        return logmel, flen


def deltas(x: torch.Tensor) -> torch.Tensor:
    """First differences along time ([B, T, F]), edges replicated."""
    padded = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
    return (padded[:, 2:] - padded[:, :-2]) / 2.0


def mfcc_with_deltas(logmel: torch.Tensor, n_mfcc: int) -> torch.Tensor:
    """MFCC (DCT of log-mel) + deltas + delta-deltas: the k-means input for pretraining targets."""
    dct = torch.from_numpy(dct_matrix(logmel.shape[-1], n_mfcc)).to(logmel)
    c = logmel @ dct
    d1 = deltas(c)
    return torch.cat([c, d1, deltas(d1)], dim=-1)


def pool_frames(x: torch.Tensor, lengths: torch.Tensor, factor: int):
    """Average groups of ``factor`` frames ([B, T, F] -> [B, ceil(T/factor), F]), ignoring padding."""
    b, t, f = x.shape
    out_t = -(-t // factor)
    mask = length_mask(lengths, t).to(x.dtype).unsqueeze(-1)
    pad = out_t * factor - t
    xs = nn.functional.pad(x * mask, (0, 0, 0, pad)).view(b, out_t, factor, f).sum(2)
    cnt = nn.functional.pad(mask, (0, 0, 0, pad)).view(b, out_t, factor, 1).sum(2)
    return xs / cnt.clamp(min=1.0), torch.div(lengths + factor - 1, factor, rounding_mode="floor")
