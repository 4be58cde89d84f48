"""Per-channel sentiment aggregates: the last 30 s of active speech, and overall.

Overlapping windows (5 s every 2.5 s) would count audio twice, so each segment
contributes only its *new* audio (past the previous segment's end). Silence
(speech probability below the threshold) contributes nothing, and a segment's
sentiment is weighted by ``active_ms * speech_prob`` so confident speech counts
more than borderline speech.

With no active speech at all the label is ``no_speech`` and the sentiment is
uniform (1/3 each): the contract promises probabilities that sum to 1, and the
uniform distribution is the honest "no information" answer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

LABELS = ("positive", "neutral", "negative")
NO_SPEECH = "no_speech"
#: a segment whose speech probability is below this is silence: no active speech, label ``no_speech``
SPEECH_THRESHOLD = 0.5
#: ``current`` covers the most recent this-much active speech (the contract's "last 30 s")
CURRENT_SPEECH_MS = 30_000
_STATE_VERSION = 1


class InvalidSegment(ValueError):
    """A model output that cannot be aggregated; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SegmentResult:
    index: int
    start_ms: int
    end_ms: int
    speech_prob: float
    sentiment: tuple[float, float, float]  # positive, neutral, negative

    def problem(self) -> str | None:
        """Why this segment cannot be aggregated, or None."""
        if self.index < 0 or self.end_ms < self.start_ms or self.start_ms < 0:
            return "bad_times"
        if not (math.isfinite(self.speech_prob) and 0.0 <= self.speech_prob <= 1.0):
            return "bad_speech_prob"
        if len(self.sentiment) != 3 or not all(math.isfinite(p) and p >= 0 for p in self.sentiment) \
                or sum(self.sentiment) <= 0:
            return "bad_sentiment"
        return None


def summary(start_ms: int, end_ms: int, active_ms: int, wsum: list[float], weight: float) -> dict:
    """The contract's SUMMARY object from weighted sums."""
    total = sum(wsum)
    if weight <= 0 or total <= 0:
        probs = [1.0 / 3] * 3
        label = NO_SPEECH
    else:
        probs = [x / total for x in wsum]
        label = LABELS[max(range(3), key=lambda i: probs[i])]
    return {
        "start_ms": int(start_ms), "end_ms": int(end_ms), "active_speech_ms": int(active_ms),
        "sentiment": dict(zip(LABELS, probs)), "label": label,
    }


class ChannelAggregate:
    """Running aggregate of one channel's segments; JSON-able for a Faust table.

    ``add`` is idempotent by segment index: a replayed index (after a crash the
    windower re-emits segments with the same indices) is ignored. Indices
    cannot arrive out of order in our pipeline: one channel's windows are
    emitted in index order by one windower, batched FIFO and produced in order
    on the channel's partition, so "older index" always means "replay".
    """

    def __init__(self, current_speech_ms: int = CURRENT_SPEECH_MS, speech_threshold: float = SPEECH_THRESHOLD) -> None:
        self.current_speech_ms = current_speech_ms
        self.speech_threshold = speech_threshold
        self.last_index = -1
        self.segments = 0
        self._prev_end: int | None = None
        self._first_start = 0
        # overall running sums
        self._active = 0
        self._weight = 0.0
        self._wsum = [0.0, 0.0, 0.0]
        # recent entries for `current`: [start, end, active, weight, wpos, wneu, wneg];
        # consecutive silent segments are merged into one entry to bound memory
        self._recent: deque[list] = deque()

    def add(self, seg: SegmentResult) -> bool:
        """Fold one segment in; False if its index was already accepted."""
        why = seg.problem()
        if why:
            raise InvalidSegment(why, repr(seg))
        if seg.index <= self.last_index:
            return False
        base = seg.start_ms if self._prev_end is None else max(seg.start_ms, self._prev_end)
        new_ms = max(0, seg.end_ms - base)
        active = new_ms if seg.speech_prob >= self.speech_threshold else 0
        weight = active * seg.speech_prob
        total = sum(seg.sentiment)
        wvec = [weight * p / total for p in seg.sentiment]
        if self._prev_end is None:
            self._first_start = seg.start_ms
        self.last_index = seg.index
        self.segments += 1
        self._prev_end = max(seg.end_ms, self._prev_end or 0)
        self._active += active
        self._weight += weight
        for i in range(3):
            self._wsum[i] += wvec[i]
        if active == 0 and self._recent and self._recent[-1][2] == 0:
            self._recent[-1][1] = seg.end_ms  # extend the silent run
        else:
            self._recent.append([seg.start_ms, seg.end_ms, active, weight, *wvec])
        self._prune()
        return True

    def _prune(self) -> None:
        """Drop old entries once the newer ones alone reach the speech target."""
        need = self.current_speech_ms
        recent_active = sum(e[2] for e in self._recent)
        while len(self._recent) > 1 and recent_active - self._recent[0][2] >= need:
            recent_active -= self._recent.popleft()[2]

    def current(self) -> dict:
        """Most recent segments back until 30 s of active speech (or all)."""
        if not self._recent:
            return summary(0, 0, 0, [0.0, 0.0, 0.0], 0.0)
        wsum = [sum(e[4 + i] for e in self._recent) for i in range(3)]
        return summary(self._recent[0][0], self._recent[-1][1], sum(e[2] for e in self._recent),
                       wsum, sum(e[3] for e in self._recent))

    def overall(self) -> dict:
        if self._prev_end is None:
            return summary(0, 0, 0, [0.0, 0.0, 0.0], 0.0)
        return summary(self._first_start, self._prev_end, self._active, self._wsum, self._weight)

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "v": _STATE_VERSION,
            "current_speech_ms": self.current_speech_ms, "speech_threshold": self.speech_threshold,
            "last_index": self.last_index, "segments": self.segments,
            "prev_end": self._prev_end, "first_start": self._first_start,
            "active": self._active, "weight": self._weight, "wsum": list(self._wsum),
            "recent": [list(e) for e in self._recent],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelAggregate":
        if d.get("v") != _STATE_VERSION:
            raise ValueError(f"unsupported aggregate state version {d.get('v')!r}")
        a = cls(d["current_speech_ms"], d["speech_threshold"])
        a.last_index, a.segments = int(d["last_index"]), int(d["segments"])
        a._prev_end, a._first_start = d["prev_end"], int(d["first_start"])
        a._active, a._weight, a._wsum = int(d["active"]), float(d["weight"]), [float(x) for x in d["wsum"]]
        a._recent = deque(list(e) for e in d["recent"])
        return a
