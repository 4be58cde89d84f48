"""The crash-recovery half of `ChannelWindower`: its checkpoint, and the replay that rebuilds its audio after
a restore.

A checkpoint holds no audio: where the audio still needed starts (seq, sample position, input offset),
the window index to go on from, and what the crashed run had seen (frames declared lost, frames held for
reordering, the highest offset). A windower rebuilt from it is fed the partition again from its low
watermark; frames up to the checkpoint's last offset redo their effect on the buffered audio and the
reorder buffer without emitting or counting anything, and later frames take the normal path.

`ChannelWindower` inherits this class; the two halves share its state (`streams/windowing/channel.py`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from streams.settings import default
from streams.windowing.buffer import SampleBuffer
from streams.windowing.window import CHECKPOINT_VERSION, AddResult, WindowSpec


class WindowerRecovery:
    """Checkpoint and replay of a `ChannelWindower` (see the module docstring)."""

    def low_watermark_offset(self) -> Optional[int]:
        """Smallest input offset whose frame is still needed (buffered audio of
        a future window, or held for reordering); None if no offset is needed."""
        if self._replay is not None:
            return self._replay["low_watermark"]
        offs = [r[4] for r in self._records if r[4] is not None]
        offs.extend(o for _, o, _ in self._held.values() if o is not None)
        return min(offs) if offs else None

    def checkpoint(self) -> dict:
        """Small JSON-able state (no audio) for ``from_checkpoint``."""
        if self._replay is not None:
            return dict(self._replay["checkpoint"])
        if self._records:
            s0, p0 = self._records[0][0], self._records[0][2]
        else:
            s0, p0 = self._next_seq, self._buf.end
        return {
            "v": CHECKPOINT_VERSION,
            "call_id": self.call_id, "channel": self.channel,
            "sample_rate": self.spec.sample_rate, "window_ms": self.spec.window_ms,
            "hop_ms": self.spec.hop_ms,
            "next_window_index": self._next_index,
            "replay_seq": s0, "replay_sample": p0,
            "next_seq": self._next_seq, "total_samples": self._buf.end,
            "lost": [[r[0], r[1], r[3] - r[2]] for r in self._records if r[5]],
            "held": sorted(self._held),
            "end_seq": self._end_seq,
            "last_offset": self._last_offset,
            "low_watermark": self.low_watermark_offset(),
            "typical_len": self._typical,
            "lost_recent": [list(x) for x in self._lost_recent],
            "frames": self.frames, "duplicates": self.duplicates, "gap_samples": self.gap_samples,
        }

    @classmethod
    def from_checkpoint(cls, cp: dict, spec: WindowSpec = WindowSpec(), max_reorder_ms: int = default("max_reorder_ms"),
                        max_gap_ms: int = default("max_gap_ms")):
        """Rebuild after a crash. Feed it the partition again from
        ``cp["low_watermark"]`` (or earlier): frames at offsets up to the
        checkpoint's last offset rebuild the buffered audio and emit nothing
        already emitted; later frames are processed normally."""
        if cp.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {cp.get('v')!r}")
        if (cp["sample_rate"], cp["window_ms"], cp["hop_ms"]) != (spec.sample_rate, spec.window_ms, spec.hop_ms):
            raise ValueError("checkpoint was written with another window geometry; "
                             "resuming would shift window indices")
        w = cls(cp["call_id"], cp["channel"], spec, max_reorder_ms, max_gap_ms)
        w._next_index = int(cp["next_window_index"])
        w._next_seq = int(cp["replay_seq"])
        w._buf = SampleBuffer(2 * w._win, base=int(cp["replay_sample"]))
        w._typical = int(cp["typical_len"])
        w._end_seq = cp["end_seq"]
        w._last_offset = cp["last_offset"]
        w._lost_recent.extend((int(a), int(b)) for a, b in cp["lost_recent"])
        w.frames, w.duplicates, w.gap_samples = int(cp["frames"]), int(cp["duplicates"]), int(cp["gap_samples"])
        w._replay = {
            "checkpoint": dict(cp),
            "last_offset": cp["last_offset"],
            "low_watermark": cp["low_watermark"],
            "target_seq": int(cp["next_seq"]),
            "lost": {int(lo): (int(hi), int(n)) for lo, hi, n in cp["lost"]},
            "held": set(int(s) for s in cp["held"]),
        }
        if cp["last_offset"] is None:
            w._replay = None  # offline run: nothing to replay against
        else:
            w._replay_advance(AddResult())
        return w

    def _replay_add(self, seq: int, audio: np.ndarray, end: bool, offset: int) -> AddResult:
        """A frame the crashed run had already processed: redo its effect on
        the buffered audio and reorder buffer exactly, without re-counting or
        re-reporting it (its rejection, if any, was reported before)."""
        rp = self._replay
        res = AddResult()
        target = rp["target_seq"]
        if seq < self._next_seq or seq in self._held:
            res.dropped_duplicate = True
        elif seq < target:
            if any(lo <= seq < hi for lo, (hi, _) in rp["lost"].items()):
                res.dropped_duplicate = True
            elif seq == self._next_seq:
                self._commit(seq, audio, offset, end, res, count=False)
                self._replay_drain(res)
            else:
                self._held[seq] = (audio.copy(), offset, end)
                self._held_samples += audio.shape[0]
        elif seq in rp["held"]:
            self._held[seq] = (audio.copy(), offset, end)
            self._held_samples += audio.shape[0]
        else:
            res.dropped_duplicate = True
        return res

    def _replay_drain(self, res: AddResult) -> None:
        target = self._replay["target_seq"]
        while True:
            self._replay_advance(res)
            nxt = self._next_seq
            if nxt >= target or nxt not in self._held:
                return
            audio, offset, end = self._held.pop(nxt)
            self._held_samples -= audio.shape[0]
            self._commit(nxt, audio, offset, end, res, count=False)

    def _replay_advance(self, res: AddResult) -> None:
        lost = self._replay["lost"]
        while self._next_seq in lost:
            hi, n = lost[self._next_seq]
            self._fill(self._next_seq, hi, n, res)

