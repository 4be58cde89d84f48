"""The sliding audio buffer of one channel."""

from __future__ import annotations

import numpy as np


class SampleBuffer:
    """Sliding float32 buffer of channel audio from sample position ``base``.

    Appends copy into spare space and compact only when the end is reached,
    so memory stays ~2x (window + largest frame) and no per-sample Python
    runs. The buffer starts small and doubles as audio comes: a channel that
    sends a few frames and is abandoned costs kilobytes, not two windows
    (thousands of large per-channel buffers freed at once fragment the heap,
    which then never shrinks: `bench/memory_abandoned.py`).
    """

    initial_capacity = 4096

    def __init__(self, capacity: int, base: int = 0) -> None:
        self._buf = np.zeros(min(max(capacity, 1), self.initial_capacity), dtype=np.float32)
        self._lo = 0
        self._hi = 0
        self.base = base  # sample position of self._buf[self._lo]

    @property
    def end(self) -> int:
        return self.base + (self._hi - self._lo)

    def append(self, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if self._hi + n > self._buf.shape[0]:
            used = self._hi - self._lo
            if used + n > self._buf.shape[0]:
                new = np.empty(max(2 * self._buf.shape[0], used + n), dtype=np.float32)
                new[:used] = self._buf[self._lo:self._hi]
                self._buf = new
            else:
                self._buf[:used] = self._buf[self._lo:self._hi]
            self._lo, self._hi = 0, used
        self._buf[self._hi:self._hi + n] = samples
        self._hi += n

    def append_silence(self, n: int) -> None:
        if n > 0:
            self.append(np.zeros(n, dtype=np.float32))

    def copy(self, start: int, n: int) -> np.ndarray:
        i = self._lo + (start - self.base)
        return self._buf[i:i + n].copy()

    def drop_before(self, pos: int) -> None:
        cut = min(pos, self.end) - self.base
        if cut > 0:
            self._lo += cut
            self.base += cut

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes

    def release(self) -> None:
        self.base = self.end
        self._buf = np.zeros(0, dtype=np.float32)
        self._lo = self._hi = 0
