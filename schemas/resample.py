"""Sample-rate conversion to the model's rate, whole-signal and streaming.

Frames arrive at any rate from 8 to 48 kHz; the model wants 16 kHz.  We use a
rational polyphase resampler (up by L, low-pass, down by M) with a Kaiser
windowed-sinc filter whose stop band starts at the lower of the two Nyquist
frequencies, so nothing above the destination's Nyquist aliases back into
the speech band and upsampling leaves no spectral images.

Timing: the filter is linear-phase and its delay is compensated exactly, so
output sample ``i`` is the band-limited signal at input time ``i / dst_rate``
(the first output sample lines up with the first input sample).  The signal
is taken as zero before its first and after its last sample; that is the only
edge effect.  ``StreamResampler`` gives the same samples as ``resample`` on
the whole signal: ``process`` holds back the outputs whose filter reaches past
the input seen so far (``lookahead_s``, about 3.6 ms at 8 kHz input) and
``flush`` releases them at the end.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.signal import firwin, kaiser_beta

#: Stop-band attenuation (dB) and transition width (fraction of the lower
#: Nyquist frequency) of the anti-aliasing filter.  The pass band is flat up to
#: 85% of the lower Nyquist (6.8 kHz at 16 kHz out, 3.4 kHz for 8 kHz input).
STOPBAND_DB = 80.0
TRANSITION = 0.15
_BLOCK = 8192  # outputs per gather step (bounds temporary memory)
_FEW_PHASES = 16  # up to this many filter phases, loop over phases instead of gathering


class _Filter:
    """Polyphase table of one (L, M) conversion: taps[phase, j] = h[phase + j*L]."""

    __slots__ = ("up", "down", "delay", "taps", "ntaps")

    def __init__(self, up: int, down: int, src_rate: int, dst_rate: int) -> None:
        fs_up = float(src_rate) * up
        nyq_low = min(src_rate, dst_rate) / 2.0
        width = TRANSITION * nyq_low  # Hz
        cutoff = nyq_low - width / 2.0  # centre of the transition band
        # Kaiser's length estimate, odd so the delay is a whole number of taps.
        n = int(math.ceil((STOPBAND_DB - 7.95) / (2.285 * 2.0 * math.pi * width / fs_up))) + 1
        n |= 1
        h = firwin(n, cutoff, window=("kaiser", kaiser_beta(STOPBAND_DB)), fs=fs_up) * up
        per_phase = -(-n // up)
        padded = np.zeros(per_phase * up)
        padded[:n] = h
        self.up, self.down = up, down
        self.delay = (n - 1) // 2
        self.ntaps = per_phase
        # Reversed per phase so a phase row dots with x[n_hi-K+1 .. n_hi] in order.
        self.taps = np.ascontiguousarray(padded.reshape(per_phase, up).T[:, ::-1], dtype=np.float32)


@lru_cache(maxsize=8)
def _design(src_rate: int, dst_rate: int) -> _Filter:
    g = math.gcd(src_rate, dst_rate)
    return _Filter(dst_rate // g, src_rate // g, src_rate, dst_rate)


def _check_rates(src_rate: int, dst_rate: int) -> tuple[int, int]:
    for name, r in (("src_rate", src_rate), ("dst_rate", dst_rate)):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1000 <= r <= 384000:
            raise ValueError(f"{name} must be an int from 1000 to 384000 Hz, got {r!r}")
    return int(src_rate), int(dst_rate)


def _as_mono(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected 1-D (mono) samples, got shape {a.shape}")
    return a


class StreamResampler:
    """Resample a signal chunk by chunk, keeping filter state between chunks.

    ``process(a) + process(b) + flush()`` equals ``resample(a + b)`` (to
    float32 rounding).  Output is withheld only while the filter still needs
    input that has not arrived; see the module docstring for timing.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = _check_rates(src_rate, dst_rate)
        self._identity = self.src_rate == self.dst_rate
        self._f = None if self._identity else _design(self.src_rate, self.dst_rate)
        self._buf = np.zeros(0, np.float32)  # input history; _buf[0] is input index _buf_start
        self._buf_start = 0
        self._n_in = 0  # input samples seen
        self._n_out = 0  # output samples emitted
        self._flushed = False

    @property
    def lookahead_s(self) -> float:
        """Most input time (s) an output sample waits for: half the filter span."""
        if self._f is None:
            return 0.0
        return self._f.delay / (self._f.up * self.src_rate)

    def process(self, chunk) -> np.ndarray:
        """Feed input samples; return every output sample that is now final."""
        x = _as_mono(chunk)
        if self._flushed:
            raise ValueError("process() after flush(): make a new StreamResampler")
        if self._identity:
            self._n_in += x.size
            return x
        if x.size:
            self._buf = np.concatenate((self._buf, x)) if self._buf.size else x.copy()
            self._n_in += x.size
        f = self._f
        # Output k needs inputs up to floor((k*M + delay) / L).
        n_ready = (self._n_in * f.up - 1 - f.delay) // f.down + 1 if self._n_in else 0
        return self._emit(max(n_ready, self._n_out))

    def flush(self) -> np.ndarray:
        """Emit the held-back tail (zeros are taken past the end); ends the stream."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        if self._identity:
            return np.zeros(0, np.float32)
        f = self._f
        total = -(-self._n_in * f.up // f.down)  # ceil(n_in * L / M), as resample_poly
        return self._emit(total)

    def _emit(self, stop: int) -> np.ndarray:
        f = self._f
        if stop <= self._n_out:
            return np.zeros(0, np.float32)
        k = np.arange(self._n_out, stop, dtype=np.int64)
        pos = k * f.down + f.delay
        hi = pos // f.up  # newest input each output touches
        phase = pos - hi * f.up
        lo_needed = int(hi[0]) - f.ntaps + 1
        # Window of history plus zero padding on both sides of the known input.
        first = min(lo_needed, self._buf_start)
        last = int(hi[-1]) + 1
        seg = np.zeros(last - first, np.float32)
        a = max(self._buf_start, first)
        b = min(self._buf_start + self._buf.size, last)
        if b > a:
            seg[a - first:b - first] = self._buf[a - self._buf_start:b - self._buf_start]
        windows = np.lib.stride_tricks.sliding_window_view(seg, f.ntaps)
        out = np.empty(k.size, np.float32)
        starts = hi - f.ntaps + 1 - first
        if f.up <= _FEW_PHASES:
            # Outputs k, k+L, k+2L... share a phase and step M inputs: a strided
            # view times one tap row, no gather copy.
            for r in range(min(f.up, k.size)):
                cnt = len(range(r, k.size, f.up))
                s0 = int(starts[r])
                out[r::f.up] = windows[s0:s0 + f.down * (cnt - 1) + 1:f.down] @ f.taps[phase[r]]
        else:
            for s in range(0, k.size, _BLOCK):
                sl = slice(s, s + _BLOCK)
                out[sl] = np.einsum("ij,ij->i", windows[starts[sl]], f.taps[phase[sl]])
        self._n_out = stop
        # Keep only the history the next output can still reach.
        next_lo = (stop * f.down + f.delay) // f.up - f.ntaps + 1
        drop = max(0, min(next_lo - self._buf_start, self._buf.size))
        if drop:
            self._buf = self._buf[drop:].copy()
            self._buf_start += drop
        return out


def resample(x, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole mono signal; returns ``ceil(n * dst / src)`` float32 samples.

    With ``src_rate == dst_rate`` the input is returned as is (float32, no copy).
    """
    src_rate, dst_rate = _check_rates(src_rate, dst_rate)
    a = _as_mono(x)
    if src_rate == dst_rate:
        return a
    r = StreamResampler(src_rate, dst_rate)
    head = r.process(a)
    tail = r.flush()
    return np.concatenate((head, tail)) if head.size else tail


def resample_fft(x, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling of one finite block (an analysis window) by FFT.

    The worker resamples every 5 s window it analyses; this is 3-6x cheaper
    than the polyphase filter for that block size, has an ideal low-pass
    (no aliasing at all), and depends only on the block's own samples, so a
    window re-created after a restart is resampled bit for bit the same. The
    block is treated as periodic: the first and last few milliseconds may ring,
    which does not matter for 5 s analysis windows. Returns
    ``ceil(n * dst / src)`` float32 samples.
    """
    src_rate, dst_rate = _check_rates(src_rate, dst_rate)
    a = _as_mono(x)
    if src_rate == dst_rate or a.size == 0:
        return a
    return resample_fft_rows(a[None, :], src_rate, dst_rate)[0]


def resample_fft_rows(block: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """`resample_fft` of every row of a [B, n] block in one call.

    Single precision (scipy.fft keeps float32 as complex64): 3x cheaper than
    numpy's double precision per 5 s window and within 2e-6 of it. Each row
    comes out bit for bit as if resampled alone, so a window gives the same
    samples whatever batch it lands in.
    """
    import scipy.fft

    src_rate, dst_rate = _check_rates(src_rate, dst_rate)
    a = np.ascontiguousarray(block, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a [B, n] block, got shape {a.shape}")
    if src_rate == dst_rate or a.shape[1] == 0:
        return a
    n = a.shape[1]
    m = -(-n * dst_rate // src_rate)
    spec = scipy.fft.rfft(a, axis=-1)[:, :m // 2 + 1]   # cut at the new Nyquist; irfft zero-pads a shorter one
    if m % 2 == 0 and spec.shape[1] == m // 2 + 1:   # (spec is a view of rfft's own fresh output)
        spec[:, -1] = spec[:, -1].real  # the Nyquist bin of a real signal is real
    y = scipy.fft.irfft(spec, m, axis=-1)
    y *= np.float32(m / n)
    return y.astype(np.float32, copy=False)
