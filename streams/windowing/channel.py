"""`ChannelWindower`: one (call, channel) audio stream cut into overlapping analysis windows.

Pure, deterministic and clock-injected: the worker and the offline
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
* Crash recovery (`streams.windowing.replay`, the other half of this class):
  ``checkpoint()`` is a small JSON-able dict (no audio). A windower rebuilt with
  ``from_checkpoint`` and fed the partition again from ``low_watermark_offset()``
  re-emits exactly the windows the crashed one would have emitted next (same
  indices, times and samples).
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np

from streams.settings import default
from streams.windowing.buffer import SampleBuffer
from streams.windowing.replay import WindowerRecovery
from streams.windowing.window import (AFTER_END, BAD_AUDIO, BAD_SEQ, GAP_TOO_LARGE, OUT_OF_ORDER, AddResult, Window,
                                      WindowSpec, latest_offset, reject)


class ChannelWindower(WindowerRecovery):
    """Windows for one (call, channel); see the module docstring for rules. Its checkpoint and the replay
    after a restore are the other half of the class (`WindowerRecovery`)."""

    #: most frames the reorder buffer may hold (guards tiny or empty frames)
    max_held_frames = 512
    #: how many recent lost seq ranges are remembered to tell late from dup
    lost_memory = 64

    def __init__(self, call_id: str, channel: str, spec: WindowSpec = WindowSpec(),
                 max_reorder_ms: int = default("max_reorder_ms"), max_gap_ms: int = default("max_gap_ms")) -> None:
        self.call_id = call_id
        self.channel = channel
        self.spec = spec
        self._win = spec.window_samples
        self._hop = spec.hop_samples
        self._max_reorder = spec.ms_to_samples(max_reorder_ms)
        self._max_gap = spec.ms_to_samples(max_gap_ms)
        self._buf = SampleBuffer(2 * self._win)
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


    # what it holds, for the pipeline, metrics and tests
    next_seq = property(lambda self: self._next_seq)
    next_window_index = property(lambda self: self._next_index)
    total_samples = property(lambda self: self._buf.end)
    duration_ms = property(lambda self: self.spec.samples_to_ms(self._buf.end))
    gap_ms = property(lambda self: self.spec.samples_to_ms(self.gap_samples))
    held_frames = property(lambda self: len(self._held))
    #: audio memory held (sample buffer + reorder buffer)
    buffer_bytes = property(lambda self: self._buf.nbytes + 4 * self._held_samples)

    def add(self, seq: int, samples, end: bool = False, offset: Optional[int] = None,
            checked: bool = False) -> AddResult:
        """Take one frame; return the windows it completed or why it was refused.

        ``checked=True`` skips the seq and sample checks for input that passed
        them already (``decode_frame``'s int seq and finite 1-D float32 samples):
        ~2 us of a ~13 us frame on the worker's hot path."""
        if self.finished:
            return reject(AFTER_END, f"channel already ended ({self.finish_reason})")
        if checked:
            audio = samples
        else:
            seq, audio = _checked(seq, samples)
            if isinstance(audio, AddResult):
                return audio
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
                return reject(OUT_OF_ORDER, f"seq {seq} arrived after it was declared lost "
                                             f"(next expected {self._next_seq})")
            self.duplicates += 1
            return AddResult(dropped_duplicate=True)
        if seq in self._held:
            self.duplicates += 1
            return AddResult(dropped_duplicate=True)
        if self._end_seq is not None and seq > self._end_seq:
            return reject(AFTER_END, f"seq {seq} is after the end frame {self._end_seq}")
        if seq > self._next_seq:
            step = max(self._typical or audio.shape[0], 1)
            est = (seq - self._next_seq) * step
            if est > self._max_gap:
                return reject(GAP_TOO_LARGE, f"seq {seq} would open a gap of ~"
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


def _checked(seq, samples) -> tuple:
    """(seq, float32 audio) of a frame given as plain values, or (seq, the `AddResult` refusing it)."""
    if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or seq < 0:
        return seq, reject(BAD_SEQ, f"seq must be a non-negative integer, got {seq!r}")
    try:
        audio = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        return seq, reject(BAD_AUDIO, f"samples are not numeric: {exc}")
    if audio.ndim != 1:
        return seq, reject(BAD_AUDIO, f"samples must be 1-D mono, got shape {audio.shape}")
    if audio.shape[0] and not np.isfinite(audio).all():
        return seq, reject(BAD_AUDIO, "samples contain NaN or infinity")
    return int(seq), audio
