"""Skipping the model on windows that are plainly silent.

Each party of a call has its own channel, so a channel is quiet while the other
party talks, on hold, in pauses. A window whose loudest 20 ms stretch stays
below ``threshold_dbfs`` holds no audible sound at all, so its segment is
known without the network: speech probability 0, sentiment uniform (no
evidence either way), label ``no_speech``. Speech at any usual level is 20-40
dB above the default threshold, and line noise or hum above it still goes to
the model, which decides; ``bench/silence_gate.py`` measures both on the
evaluation set. The decision depends on the window's own samples only, so a
re-published segment is the same as the first.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

FRAME_MS = 20
DEFAULT_THRESHOLD_DBFS = -55.0
SILENT_SENTIMENT = np.full(3, 1.0 / 3.0, dtype=np.float32)

Infer = Callable[[list, list], tuple[np.ndarray, np.ndarray]]


def loudest_frame_dbfs(samples: np.ndarray, rate: int) -> float:
    """RMS level of the loudest 20 ms frame, in dB relative to full scale (-inf for digital silence)."""
    x = np.asarray(samples, dtype=np.float32)
    n = max(1, rate * FRAME_MS // 1000)
    whole = x.size // n * n
    frames = x[:whole].reshape(-1, n) if whole else x.reshape(1, -1)
    energy = float(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1))) if x.size else 0.0
    if whole < x.size and whole:  # the ragged tail counts too
        energy = max(energy, float(np.mean(np.square(x[whole:], dtype=np.float64))))
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(energy))


class SilenceGate:
    """Runs the model only on the windows that are not plainly silent.

    ``threshold_dbfs=-inf`` turns the gate off (every window goes to the model).
    """

    def __init__(self, threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS):
        if np.isnan(threshold_dbfs) or threshold_dbfs > 0:
            raise ValueError(f"silence threshold must be <= 0 dBFS (or -inf to disable), not {threshold_dbfs}")
        self.threshold_dbfs = float(threshold_dbfs)

    def silent(self, windows: Sequence[Any], rates: Sequence[int]) -> np.ndarray:
        if self.threshold_dbfs == float("-inf"):
            return np.zeros(len(windows), dtype=bool)
        return np.fromiter((loudest_frame_dbfs(getattr(w, "samples", w), r) < self.threshold_dbfs
                            for w, r in zip(windows, rates)), dtype=bool, count=len(windows))

    def run(self, windows: list, rates: list, infer: Infer) -> tuple[np.ndarray, np.ndarray, int]:
        """(speech [B], sentiment [B, 3], windows skipped); ``infer`` sees only the audible ones."""
        skip = self.silent(windows, rates)
        speech = np.zeros(len(windows), dtype=np.float32)
        sentiment = np.tile(SILENT_SENTIMENT, (len(windows), 1))
        keep = np.flatnonzero(~skip)
        if keep.size == len(windows):
            s, p = infer(windows, rates)
            return np.asarray(s, np.float32), np.asarray(p, np.float32), 0
        if keep.size:
            s, p = infer([windows[i] for i in keep], [rates[i] for i in keep])
            speech[keep] = s
            sentiment[keep] = p
        return speech, sentiment, int(skip.sum())

