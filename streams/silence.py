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

from streams.settings import default
from streams.stacking import shape_groups

FRAME_MS = 20
DEFAULT_THRESHOLD_DBFS = default("silence_dbfs")
SILENT_SENTIMENT = np.full(3, 1.0 / 3.0, dtype=np.float32)

Infer = Callable[[list, list], tuple[np.ndarray, np.ndarray]]


def loudest_frame_dbfs(samples: np.ndarray, rate: int) -> float:
    """RMS level of the loudest 20 ms frame, in dB relative to full scale (-inf for digital silence)."""
    x = np.asarray(samples, dtype=np.float32)
    return float(loudest_frame_dbfs_rows(x.reshape(1, -1), rate)[0])


def loudest_frame_dbfs_rows(block: np.ndarray, rate: int) -> np.ndarray:
    """`loudest_frame_dbfs` of each row of a [B, n] block, in a fixed number of numpy calls.

    Per block, a batch costs a few numpy calls instead of some per window (each may wait for the GIL
    beside a busy event loop: bench/gil_convoy.py). Each row's level is computed as if alone
    (reductions run along the row), so a window's decision does not depend on its batch mates.
    Each frame's energy is one float32 dot product (`einsum`, no squared copy): 8x cheaper than squaring
    into float64 and within 1e-6 dB of it (`tests/streams/test_silence.py`)."""
    x = np.asarray(block, dtype=np.float32)
    rows, size = x.shape
    if size == 0:
        return np.full(rows, -np.inf)
    n = max(1, min(size, rate * FRAME_MS // 1000))
    whole = size // n * n
    frames = x[:, :whole].reshape(rows, -1, n)
    energy = np.einsum("rfn,rfn->rf", frames, frames).max(axis=1).astype(np.float64) / n
    if whole < size:  # the ragged tail counts too
        tail = x[:, whole:]
        energy = np.maximum(energy, np.einsum("rn,rn->r", tail, tail).astype(np.float64) / (size - whole))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(energy)


class SilenceGate:
    """Runs the model only on the windows that are not plainly silent.

    ``threshold_dbfs=-inf`` turns the gate off (every window goes to the model).
    """

    def __init__(self, threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS):
        if np.isnan(threshold_dbfs) or threshold_dbfs > 0:
            raise ValueError(f"silence threshold must be <= 0 dBFS (or -inf to disable), not {threshold_dbfs}")
        self.threshold_dbfs = float(threshold_dbfs)

    def silent(self, windows: Sequence[Any], rates: Sequence[int]) -> np.ndarray:
        out = np.zeros(len(windows), dtype=bool)
        if self.threshold_dbfs == float("-inf"):
            return out
        arrays = [np.asarray(getattr(w, "samples", w)) for w in windows]
        for (rate, _), idx in shape_groups(arrays, rates).items():   # one block per (rate, length)
            block = np.stack([arrays[i] for i in idx]) if len(idx) > 1 else arrays[idx[0]].reshape(1, -1)
            out[idx] = loudest_frame_dbfs_rows(block, rate) < self.threshold_dbfs
        return out

    def audible(self, windows: Sequence[Any], rates: Sequence[int]) -> np.ndarray:
        """Indices of the windows the model must see."""
        return np.flatnonzero(~self.silent(windows, rates))

    @staticmethod
    def merge(size: int, keep: np.ndarray, speech, sentiment) -> tuple[np.ndarray, np.ndarray, int]:
        """(speech [size], sentiment [size, 3], windows skipped) from the model's answers for `keep`."""
        if keep.size == size:
            return np.asarray(speech, np.float32), np.asarray(sentiment, np.float32), 0
        out_speech = np.zeros(size, dtype=np.float32)
        out_sentiment = np.tile(SILENT_SENTIMENT, (size, 1))
        if keep.size:
            out_speech[keep] = speech
            out_sentiment[keep] = sentiment
        return out_speech, out_sentiment, size - int(keep.size)

    def run(self, windows: list, rates: list, infer: Infer) -> tuple[np.ndarray, np.ndarray, int]:
        """(speech [B], sentiment [B, 3], windows skipped); ``infer`` sees only the audible ones."""
        keep = self.audible(windows, rates)
        if keep.size == len(windows):
            return self.merge(len(windows), keep, *infer(windows, rates))
        if not keep.size:
            return self.merge(len(windows), keep, None, None)
        return self.merge(len(windows), keep, *infer([windows[i] for i in keep], [rates[i] for i in keep]))
