"""`ChannelRegistry`: the open channels of one input partition."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from streams.settings import default
from streams.windowing.channel import ChannelWindower
from streams.windowing.window import AFTER_END, CAPACITY, CHECKPOINT_VERSION, AddResult, Window, WindowSpec, \
    latest_offset, reject

Key = tuple[str, str]


class ChannelRegistry:
    """All open channels of one input partition, with idle expiry and a cap.

    Use one registry per input partition: offsets (low watermark, replay
    detection after ``restore``) are only comparable within a partition, and
    a rebalance then moves whole registries (``checkpoint``/``restore``).

    Channels that ended are remembered (bounded LRU, ``ended_ttl_s``) so a late
    frame after the end is rejected ``after_end`` instead of silently opening a
    new channel whose audio times would restart at 0. A frame for a key that is
    neither open nor remembered opens a channel even if its seq > 0: small
    gaps before it are silence-filled, large ones rejected ``gap_too_large``.
    """

    def __init__(self, spec: WindowSpec = WindowSpec(), idle_timeout_s: float = default("idle_timeout_s"),
                 max_channels: int = default("max_active_channels"), max_reorder_ms: int = default("max_reorder_ms"),
                 max_gap_ms: int = default("max_gap_ms"), ended_memory: int = 100000,
                 ended_ttl_s: float = 600.0) -> None:
        self.spec = spec
        self.idle_timeout_s = idle_timeout_s
        self.max_channels = max_channels
        self.max_reorder_ms = max_reorder_ms
        self.max_gap_ms = max_gap_ms
        self.ended_memory = ended_memory
        self.ended_ttl_s = ended_ttl_s
        # ordered by last activity, oldest first: expiry pops from the front
        self._open: OrderedDict[Key, tuple[ChannelWindower, float]] = OrderedDict()
        self._ended: OrderedDict[Key, float] = OrderedDict()
        self._last_offset: Optional[int] = None  # highest input offset seen
        self._replayed_upto: Optional[int] = None  # last offset before a restore

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: Key) -> bool:
        return key in self._open

    def get(self, call_id: str, channel: str) -> Optional[ChannelWindower]:
        item = self._open.get((call_id, channel))
        return item[0] if item else None

    def _new(self, call_id: str, channel: str) -> ChannelWindower:
        return ChannelWindower(call_id, channel, self.spec, self.max_reorder_ms, self.max_gap_ms)

    def add(self, call_id: str, channel: str, seq: int, samples, end: bool = False,
            offset: Optional[int] = None, now: float = 0.0, checked: bool = False) -> AddResult:
        key = (call_id, channel)
        item = self._open.get(key)
        if offset is not None:
            self._last_offset = offset if self._last_offset is None else max(self._last_offset, offset)
        if item is None:
            if offset is not None and self._replayed_upto is not None and offset <= self._replayed_upto:
                # handled before the restart and its channel was not open at
                # the checkpoint: it ended, expired or was rejected back then
                return AddResult(dropped_duplicate=True)
            self._forget_ended(now)
            if key in self._ended:
                return reject(AFTER_END, f"channel {call_id}/{channel} already ended")
            if len(self._open) >= self.max_channels:
                return reject(CAPACITY, f"{len(self._open)} channels open (max {self.max_channels})")
            w = self._new(call_id, channel)
        else:
            w = item[0]
        res = w.add(seq, samples, end, offset, checked)
        if res.rejected is None:
            res.audio_samples = w.total_samples
        if w.finished:
            self._open.pop(key, None)
            self._remember_ended(key, now)
        elif item is not None or w.frames or w.held_frames:
            self._open[key] = (w, now)
            self._open.move_to_end(key)
        return res

    def add_run(self, call_id: str, channel: str, seq: int, audio: np.ndarray, sizes: list[int],
                offsets: list[Optional[int]], now: float = 0.0) -> AddResult:
        """``ChannelWindower.add_run`` for an open channel (see there)."""
        key = (call_id, channel)
        w = self._open[key][0]
        self._last_offset = latest_offset(self._last_offset, offsets)
        res = w.add_run(seq, audio, sizes, offsets)
        res.audio_samples = w.total_samples
        self._open[key] = (w, now)
        self._open.move_to_end(key)
        return res

    def expire_idle(self, now: float) -> list[tuple[Key, list[Window]]]:
        """Finish channels with no frame for ``idle_timeout_s``; frees their audio."""
        out = []
        while self._open:
            key, (w, last) = next(iter(self._open.items()))
            if now - last < self.idle_timeout_s:
                break
            self._open.popitem(last=False)
            out.append((key, w.finish("idle")))
            self._remember_ended(key, now)
        self._forget_ended(now)
        return out

    def finish(self, call_id: str, channel: str, reason: str = "end", now: float = 0.0) -> list[Window]:
        item = self._open.pop((call_id, channel), None)
        if item is None:
            return []
        self._remember_ended((call_id, channel), now)
        return item[0].finish(reason)

    def finish_all(self, reason: str = "shutdown", now: float = 0.0) -> list[tuple[Key, list[Window]]]:
        """End every open channel (offline analysis, end of input)."""
        return [(key, self.finish(*key, reason=reason, now=now)) for key in list(self._open)]

    def low_watermark_offset(self) -> Optional[int]:
        """Where a restarted worker must resume reading: min over channels;
        None when no open channel needs an old frame (resume after the last
        processed offset)."""
        offs = [o for w, _ in self._open.values() if (o := w.low_watermark_offset()) is not None]
        return min(offs) if offs else None

    def checkpoint(self) -> dict:
        """JSON-able state of every open channel plus the remembered ended
        keys and the highest offset seen (frames up to it are replays later)."""
        return {
            "v": CHECKPOINT_VERSION,
            "last_offset": self._last_offset,
            "channels": [w.checkpoint() for w, _ in self._open.values()],
            "ended": [[c, ch] for c, ch in self._ended],
        }

    def restore(self, cp: dict, now: float = 0.0) -> None:
        """Reopen channels from ``checkpoint()`` output after a restart, then
        feed the input again from ``low_watermark_offset()``."""
        if cp.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {cp.get('v')!r}")
        for c in cp["channels"]:
            w = ChannelWindower.from_checkpoint(c, self.spec, self.max_reorder_ms, self.max_gap_ms)
            self._open[(w.call_id, w.channel)] = (w, now)
        for c, ch in cp["ended"]:
            self._remember_ended((c, ch), now)
        self._last_offset = self._replayed_upto = cp["last_offset"]

    def _remember_ended(self, key: Key, now: float) -> None:
        self._ended[key] = now
        self._ended.move_to_end(key)
        while len(self._ended) > self.ended_memory:
            self._ended.popitem(last=False)

    def _forget_ended(self, now: float) -> None:
        while self._ended:
            key, t = next(iter(self._ended.items()))
            if now - t < self.ended_ttl_s:
                break
            self._ended.popitem(last=False)
