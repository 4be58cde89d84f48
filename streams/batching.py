"""Group ready windows into model batches, bounded in size and in waiting time.

Pure and clock-injected (``now`` in seconds, any monotonic clock) so the agent
can drive it from its event loop and tests need no sleeping: a bigger batch is
cheaper per window on the model, but no window waits more than ``max_wait_ms``
for company.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Iterable, TypeVar

import numpy as np

T = TypeVar("T")


class Batcher(Generic[T]):
    """FIFO queue cut into batches of at most ``max_batch_size`` items."""

    def __init__(self, max_batch_size: int, max_wait_ms: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._items: deque[tuple[T, float]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        self._items.append((item, now))

    def _pop(self, n: int) -> list[T]:
        return [self._items.popleft()[0] for _ in range(n)]

    def take_ready(self, now: float, limit: int | None = None) -> list[list[T]]:
        """Every full batch, plus the partial rest once its oldest item has
        waited ``max_wait_ms``; at most ``limit`` batches (the rest stay queued)."""
        out: list[list[T]] = []
        room = float("inf") if limit is None else limit
        while len(self._items) >= self.max_batch_size and len(out) < room:
            out.append(self._pop(self.max_batch_size))
        if self._items and len(out) < room and now - self._items[0][1] >= self.max_wait_s:
            out.append(self._pop(len(self._items)))
        return out

    def flush(self) -> list[list[T]]:
        """Everything left, in batches (shutdown, end of offline input)."""
        out = []
        while self._items:
            out.append(self._pop(min(self.max_batch_size, len(self._items))))
        return out

    def next_deadline(self) -> float | None:
        """When ``take_ready`` will next return something without new items
        (``now`` units); None when empty. A full batch is due immediately."""
        if not self._items:
            return None
        if len(self._items) >= self.max_batch_size:
            return self._items[0][1]
        return self._items[0][1] + self.max_wait_s


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
