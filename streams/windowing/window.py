"""A window, its geometry, and what adding a frame to a channel did (`AddResult`), with the reasons a frame is
refused. Plain values shared by the windower, its recovery half, the registry and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from streams.settings import default

# Reason codes of rejected frames (the worker dead-letters these).
OUT_OF_ORDER = "out_of_order"
GAP_TOO_LARGE = "gap_too_large"
AFTER_END = "after_end"
CAPACITY = "capacity"
BAD_SEQ = "bad_seq"
BAD_AUDIO = "bad_audio"

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry; kept in milliseconds so it matches the settings."""

    sample_rate: int = 16000
    window_ms: int = default("window_ms")
    hop_ms: int = default("hop_ms")
    min_last_window_ms: int = default("min_last_window_ms")

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.window_samples <= 0 or self.hop_samples <= 0:
            raise ValueError("sample_rate, window_ms and hop_ms must be positive")
        if self.hop_samples > self.window_samples:
            raise ValueError("hop_ms must not exceed window_ms (audio would be skipped)")

    def ms_to_samples(self, ms: float) -> int:
        return int(round(ms * self.sample_rate / 1000))

    def samples_to_ms(self, n: int) -> int:
        return int(round(n * 1000 / self.sample_rate))

    @property
    def window_samples(self) -> int:
        return self.ms_to_samples(self.window_ms)

    @property
    def hop_samples(self) -> int:
        return self.ms_to_samples(self.hop_ms)

    @property
    def min_last_samples(self) -> int:
        return self.ms_to_samples(self.min_last_window_ms)


@dataclass
class Window:
    """One analysis window; ``samples`` is its own array (safe to keep)."""

    call_id: str
    channel: str
    index: int
    start_ms: int
    end_ms: int
    samples: np.ndarray
    final: bool = False


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


@dataclass
class AddResult:
    """What one frame did. ``rejected`` frames go to the dead-letter topic;
    ``dropped_duplicate`` frames are dropped silently (replays are normal)."""

    windows: list[Window] = field(default_factory=list)
    rejected: Optional[Rejection] = None
    dropped_duplicate: bool = False
    gap_samples_filled: int = 0
    finished: bool = False
    audio_samples: int = 0  # the channel's audio length (samples, gaps filled) after this frame


def latest_offset(current: Optional[int], offsets: list[Optional[int]]) -> Optional[int]:
    """The highest of ``current`` and the known ``offsets``."""
    if None in offsets:
        offsets = [o for o in offsets if o is not None]
    top = max(offsets) if offsets else None
    if current is None or top is not None and top > current:
        return top
    return current


def reject(reason: str, detail: str) -> AddResult:
    return AddResult(rejected=Rejection(reason, detail))
