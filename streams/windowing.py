"""Cut each (call, channel) audio stream into overlapping analysis windows.

Pure, deterministic and clock-injected: the Faust agent and the offline
``voicetone analyze`` drive the same code, so a window's index, times and
samples depend only on the frames, never on wall time or thread timing.

Time is *audio* time: window k covers samples [k*hop, k*hop + window) of the
channel's audio (lost frames count as silence) and is emitted as soon as that
audio is there.

Decisions worth knowing (all documented again where they are implemented):

* A frame whose ``seq`` is already committed is a duplicate: dropped, counted,
  not a rejection. A frame that was declared lost (filled with silence) and
  arrives later is rejected ``out_of_order``: its audio time is already used.
* Frames ahead of the next expected ``seq`` wait in a small reorder buffer;
  when it holds more than ``max_reorder_ms`` of audio the missing frames are
  declared lost and filled with silence of the last frame's length.
* A frame that would open a gap longer than ``max_gap_ms`` is rejected
  ``gap_too_large`` (dead-lettered) instead of being silence-filled, so a
  corrupt ``seq`` such as 2**50 never allocates anything. The channel keeps
  waiting for the expected ``seq`` and, if it never comes, ends by idle timeout.
* At the channel's end (``end`` frame, idle timeout, ``finish``) the shorter
  window k = next index is emitted if it holds >= ``min_last_window_ms`` of
  audio from its start and some audio no earlier window covered. The last
  window emitted together with the end has ``final=True``; if the end brings
  no new window, ``AddResult.finished`` / ``finish()`` is the only signal.
* Crash recovery: ``checkpoint()`` is a small JSON-able dict (no audio). A
  windower rebuilt with ``from_checkpoint`` and fed the partition again from
  ``low_watermark_offset()`` re-emits exactly the windows the crashed one would
  have emitted next (same indices, times and samples).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

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
    window_ms: int = 5000
    hop_ms: int = 2500
    min_last_window_ms: int = 1000

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


def _reject(reason: str, detail: str) -> AddResult:
    return AddResult(rejected=Rejection(reason, detail))


class _SampleBuffer:
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


class ChannelWindower:
    """Windows for one (call, channel); see the module docstring for rules."""

    #: most frames the reorder buffer may hold (guards tiny or empty frames)
    max_held_frames = 512
    #: how many recent lost seq ranges are remembered to tell late from dup
    lost_memory = 64

    def __init__(self, call_id: str, channel: str, spec: WindowSpec = WindowSpec(),
                 max_reorder_ms: int = 2000, max_gap_ms: int = 10000) -> None:
        self.call_id = call_id
        self.channel = channel
        self.spec = spec
        self._win = spec.window_samples
        self._hop = spec.hop_samples
        self._max_reorder = spec.ms_to_samples(max_reorder_ms)
        self._max_gap = spec.ms_to_samples(max_gap_ms)
        self._buf = _SampleBuffer(2 * self._win)
        self._next_seq = 0
        self._next_index = 0
        # seq -> (samples, offset, end)
        self._held: dict[int, tuple[np.ndarray, Optional[int], bool]] = {}
        self._held_samples = 0
        self._end_seq: Optional[int] = None
        # committed audio still needed: [seq_lo, seq_hi, start, end, offset, lost]
        self._records: deque[tuple[int, int, int, int, Optional[int], bool]] = deque()
        self._lost_recent: deque[tuple[int, int]] = deque(maxlen=self.lost_memory)
        self._typical = 0
        self._last_offset: Optional[int] = None
        self._replay: Optional[dict] = None
        self.finished = False
        self.finish_reason: Optional[str] = None
        self.frames = 0
        self.duplicates = 0
        self.gap_samples = 0

    # ----------------------------------------------------------- properties
    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def next_window_index(self) -> int:
        return self._next_index

    @property
    def total_samples(self) -> int:
        return self._buf.end

    @property
    def duration_ms(self) -> int:
        return self.spec.samples_to_ms(self._buf.end)

    @property
    def gap_ms(self) -> int:
        return self.spec.samples_to_ms(self.gap_samples)

    @property
    def held_frames(self) -> int:
        return len(self._held)

    @property
    def buffer_bytes(self) -> int:
        """Audio memory held (sample buffer + reorder buffer), for metrics."""
        return self._buf.nbytes + 4 * self._held_samples

    # ------------------------------------------------------------------ add
    def add(self, seq: int, samples, end: bool = False, offset: Optional[int] = None,
            checked: bool = False) -> AddResult:
        """Take one frame; return the windows it completed or why it was refused.

        ``checked=True`` skips the seq and sample checks for input that passed
        them already (``decode_frame``'s int seq and finite 1-D float32 samples):
        ~2 us of a ~13 us frame on the worker's hot path."""
        if self.finished:
            return _reject(AFTER_END, f"channel already ended ({self.finish_reason})")
        if checked:
            audio = samples
        else:
            if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or seq < 0:
                return _reject(BAD_SEQ, f"seq must be a non-negative integer, got {seq!r}")
            seq = int(seq)
            try:
                audio = np.asarray(samples, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                return _reject(BAD_AUDIO, f"samples are not numeric: {exc}")
            if audio.ndim != 1:
                return _reject(BAD_AUDIO, f"samples must be 1-D mono, got shape {audio.shape}")
            if audio.shape[0] and not np.isfinite(audio).all():
                return _reject(BAD_AUDIO, "samples contain NaN or infinity")
        if self._replay is not None:
            if offset is not None and self._replay["last_offset"] is not None \
                    and offset <= self._replay["last_offset"]:
                return self._replay_add(seq, audio, bool(end), offset)
            self._replay = None  # first frame not seen before the crash
        if offset is not None:
            self._last_offset = offset if self._last_offset is None else max(self._last_offset, offset)
        return self._normal_add(seq, audio, bool(end), offset)

    def _normal_add(self, seq: int, audio: np.ndarray, end: bool, offset: Optional[int]) -> AddResult:
        if seq == self._next_seq and not self._held:
            # nearly every frame: the next one in order with nothing waiting, so none
            # of the checks below can apply (an end frame ends the channel when committed)
            res = AddResult()
            self._commit(seq, audio, offset, end, res)
            return res
        if seq < self._next_seq:
            if self._was_lost(seq):
                return _reject(OUT_OF_ORDER, f"seq {seq} arrived after it was declared lost "
                                             f"(next expected {self._next_seq})")
            self.duplicates += 1
            return AddResult(dropped_duplicate=True)
        if seq in self._held:
            self.duplicates += 1
            return AddResult(dropped_duplicate=True)
        if self._end_seq is not None and seq > self._end_seq:
            return _reject(AFTER_END, f"seq {seq} is after the end frame {self._end_seq}")
        if seq > self._next_seq:
            step = max(self._typical or audio.shape[0], 1)
            est = (seq - self._next_seq) * step
            if est > self._max_gap:
                return _reject(GAP_TOO_LARGE, f"seq {seq} would open a gap of ~"
                                              f"{self.spec.samples_to_ms(est)} ms after seq "
                                              f"{self._next_seq - 1} (limit "
                                              f"{self.spec.samples_to_ms(self._max_gap)} ms)")
        res = AddResult()
        if seq == self._next_seq:
            self._commit(seq, audio, offset, end, res)
            self._drain(res)
        else:
            self._held[seq] = (audio.copy(), offset, end)
            self._held_samples += audio.shape[0]
            if end:
                self._end_seq = seq
            while self._held and not self.finished and (
                    self._held_samples > self._max_reorder or len(self._held) > self.max_held_frames):
                self._declare_lost(min(self._held), res)
                self._drain(res)
        return res

    def in_order(self) -> bool:
        """Whether the next frame in seq order would be committed straight away
        (nothing held for reordering, no replay after a restore, not ended): what
        ``add_run`` needs."""
        return not (self.finished or self._held or self._replay is not None)

    def add_run(self, seq: int, audio: np.ndarray, sizes: list[int], offsets: list[Optional[int]]) -> AddResult:
        """Frames ``seq``, ``seq + 1``, ... (none an end frame) whose checked samples are
        ``audio`` concatenated, ``sizes[i]`` samples each: the same state and windows
        as adding them one by one, with one append and one cut instead of one per
        frame (the worker's batched ingest). Needs ``in_order()`` and ``seq == next_seq``."""
        if not self.in_order() or seq != self._next_seq:
            raise ValueError(f"add_run needs the next seq {self._next_seq} with nothing held, got {seq}")
        start = self._buf.end
        if audio.shape[0]:
            self._buf.append(audio)
        recs = self._records
        for n, offset in zip(sizes, offsets):
            recs.append((seq, seq + 1, start, start + n, offset, False))
            seq += 1
            start += n
            if n:
                self._typical = n
        self._last_offset = latest_offset(self._last_offset, offsets)
        self._next_seq = seq
        self.frames += len(sizes)
        res = AddResult()
        self._cut(res)
        return res

    # ------------------------------------------------------------- commit
    def _commit(self, seq: int, audio: np.ndarray, offset: Optional[int], end: bool,
                res: AddResult, count: bool = True) -> None:
        start = self._buf.end
        n = audio.shape[0]
        if n:
            self._buf.append(audio)
            if count:
                self._typical = n
        self._records.append((seq, seq + 1, start, start + n, offset, False))
        self._next_seq = seq + 1
        if count:
            self.frames += 1
        self._cut(res)
        if end:
            res.windows.extend(self._finish_now("end"))
            res.finished = True
            if res.windows:  # a full window completed by the end frame is the last
                res.windows[-1].final = True

    def _drain(self, res: AddResult) -> None:
        while not self.finished and self._next_seq in self._held:
            audio, offset, end = self._held.pop(self._next_seq)
            self._held_samples -= audio.shape[0]
            self._commit(self._next_seq, audio, offset, end, res)

    def _declare_lost(self, upto: int, res: AddResult) -> None:
        """Fill seqs [next_seq, upto) with silence; never more than max_gap."""
        count = upto - self._next_seq
        if count <= 0:
            return
        step = self._typical or (self._held[upto][0].shape[0] if upto in self._held else 0)
        fill = min(count * step, self._max_gap)
        self._lost_recent.append((self._next_seq, upto))
        self._fill(self._next_seq, upto, fill, res)
        self.gap_samples += fill
        res.gap_samples_filled += fill

    def _fill(self, lo: int, hi: int, n: int, res: AddResult) -> None:
        start = self._buf.end
        self._buf.append_silence(n)
        self._records.append((lo, hi, start, start + n, None, True))
        self._next_seq = hi
        self._cut(res)

    def _was_lost(self, seq: int) -> bool:
        return any(lo <= seq < hi for lo, hi in self._lost_recent)

    def _cut(self, res: AddResult) -> None:
        """Emit every complete window, then forget audio no window needs."""
        win, hop = self._win, self._hop
        total = self._buf.end
        if total < self._next_index * hop + win:
            return  # nothing new to cut or forget: what is kept only moves when a window is cut
        while total >= self._next_index * hop + win:
            res.windows.append(self._window(self._next_index * hop, win))
            self._next_index += 1
        keep = self._next_index * hop
        self._buf.drop_before(keep)
        recs = self._records
        while recs and recs[0][3] <= keep:
            recs.popleft()

    def _window(self, start: int, n: int, final: bool = False) -> Window:
        sr = self.spec.sample_rate
        return Window(self.call_id, self.channel, self._next_index,
                      int(round(start * 1000 / sr)), int(round((start + n) * 1000 / sr)),
                      self._buf.copy(start, n), final)

    # -------------------------------------------------------------- finish
    def finish(self, reason: str = "end") -> list[Window]:
        """End the channel: apply held frames (filling gaps), flush the last
        partial window, release the audio. Idempotent."""
        if self.finished:
            return []
        self._replay = None
        res = AddResult()
        while self._held and not self.finished:
            self._declare_lost(min(self._held), res)
            self._drain(res)
        if not self.finished:
            res.windows.extend(self._finish_now(reason))
        if res.windows:
            res.windows[-1].final = True
        return res.windows

    def _finish_now(self, reason: str) -> list[Window]:
        """Flush window k if it holds >= min_last of audio past its start and
        any audio no earlier window covered; mark the last window final."""
        out: list[Window] = []
        start = self._next_index * self._hop
        total = self._buf.end
        last_end = (self._next_index - 1) * self._hop + self._win if self._next_index else 0
        rem = total - start
        if rem >= max(self.spec.min_last_samples, 1) and total > last_end:
            out.append(self._window(start, rem, final=True))
            self._next_index += 1
        self.finished = True
        self.finish_reason = reason
        self._buf.release()
        self._records.clear()
        self._held.clear()
        self._held_samples = 0
        return out

    # ------------------------------------------------------------ recovery
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
    def from_checkpoint(cls, cp: dict, spec: WindowSpec = WindowSpec(),
                        max_reorder_ms: int = 2000, max_gap_ms: int = 10000) -> "ChannelWindower":
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
        w._buf = _SampleBuffer(2 * w._win, base=int(cp["replay_sample"]))
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

    def __init__(self, spec: WindowSpec = WindowSpec(), idle_timeout_s: float = 30.0,
                 max_channels: int = 20000, max_reorder_ms: int = 2000, max_gap_ms: int = 10000,
                 ended_memory: int = 100000, ended_ttl_s: float = 600.0) -> None:
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
                return _reject(AFTER_END, f"channel {call_id}/{channel} already ended")
            if len(self._open) >= self.max_channels:
                return _reject(CAPACITY, f"{len(self._open)} channels open (max {self.max_channels})")
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
