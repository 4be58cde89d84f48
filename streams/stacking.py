"""Windows stacked into [B, n] blocks: one numpy call per block instead of one per window (each such call
may wait for the GIL beside a busy event loop). Used by the silence gate and the model-batch preparation."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np



def shape_groups(windows: Iterable[Any], rates: Iterable[int]) -> dict[tuple[int, int], list[int]]:
    """Indices of the windows (``Window`` objects or 1-D arrays) by (rate, length), in order: each group
    can be stacked into one [B, n] block and handled with one numpy call per step instead of one per
    window (each such call may wait for the GIL beside a busy event loop)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (w, r) in enumerate(zip(windows, rates)):
        groups.setdefault((r, np.asarray(getattr(w, "samples", w)).size), []).append(i)
    return groups


def stack_windows(windows: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded float32 [B, max_len] batch and int64 lengths [B].

    Accepts ``Window`` objects (their ``samples``) or 1-D arrays; one
    preallocated array, one copy per window.
    """
    arrays = [np.asarray(getattr(w, "samples", w)) for w in windows]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("stack_windows needs 1-D sample arrays")
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    if len(arrays) and lengths.min() == lengths.max():   # the usual batch, full windows: one numpy call
        return np.stack(arrays).astype(np.float32, copy=False), lengths
    out = np.zeros((len(arrays), int(lengths.max()) if len(arrays) else 0), dtype=np.float32)
    for row, a in zip(out, arrays):
        row[:a.shape[0]] = a
    return out, lengths
