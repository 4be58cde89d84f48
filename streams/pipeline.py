"""Frames in, windows out; model results in, events out. No Kafka here.

`StreamProcessor` is the whole per-worker logic of voicetone: the worker (`streams.worker`) feeds it
consumed messages and publishes what it returns, and `voicetone analyze` feeds it audio files cut into
frames (`streams.offline`). Both therefore produce the very same windows, segments, aggregates and call
summaries. Frames are decoded (`schemas.frames`) and windowed per channel (`streams.windowing`); the
model's answers (`streams.inference`) are folded into each channel's aggregate (`streams.aggregation`)
and become the `schemas.events` models the worker publishes. Each partition's state is checkpointed
(`streams.checkpoint`) so that a new owner resumes where this one stood.
"""

from __future__ import annotations

import time
from typing import Callable, Collection, Iterable, Iterator, Optional

import numpy as np

from schemas.audio import SAMPLE_WIDTH, decode_valid_audio
from schemas.errors import FrameError
from schemas.frames import WireFields, decode_frame, fast_fields, key_matches
from streams.aggregation import ChannelAggregate, InvalidSegment, SegmentResult
from streams.channels import ChannelState, Key
from streams.checkpoint import PendingCheckpoints, registry_states, restored_channels
from streams.output import Output, aggregate_event, call_event, frame_dead_letter, model_output_dead_letter, segment_event
from streams.settings import ProcessorConfig
from streams.windowing import CAPACITY, ChannelRegistry, Window, WindowSpec, latest_offset


# ------------------------------------------------------------ runs: in-order frames of one open channel,
# gathered by `StreamProcessor.ingest_many` and committed together (one decode, append and cut per run)
class Run:
    """In-order frames of one open channel, their audio still encoded."""

    __slots__ = ("registry", "state", "call_id", "channel", "encoding", "partition", "rate", "first_seq",
                 "next_seq", "chunks", "sizes", "offsets")

    def __init__(self, registry: ChannelRegistry, state: ChannelState, call_id: str, channel: str, encoding: str,
                 seq: int) -> None:
        self.registry, self.state, self.encoding = registry, state, encoding
        self.call_id, self.channel = call_id, channel
        self.partition, self.rate = state.partition, state.rate
        self.first_seq = self.next_seq = seq
        self.chunks: list[bytes] = []
        self.sizes: list[int] = []
        self.offsets: list[Optional[int]] = []


def start_run(channels: dict[Key, ChannelState], registries: dict[tuple[int, int], ChannelRegistry], f: WireFields,
              partition: int) -> Optional[Run]:
    """A run for frame ``f`` if its channel is open and in order, else None."""
    if f.end or f.encoding == "f32le" or f.meta is not None:  # f32le: one NaN frame must not refuse its neighbours
        return None
    ch = channels.get((f.call_id, f.channel))
    if ch is None or ch.rate != f.sample_rate or ch.partition != partition or ch.ended_by is not None \
            or (f.ts_ms is not None and ch.ts_origin_ms is None):
        return None
    reg = registries.get((partition, ch.rate))
    w = reg.get(f.call_id, f.channel) if reg is not None else None
    if w is None or not w.in_order() or f.seq != w.next_seq:
        return None
    return Run(reg, ch, f.call_id, f.channel, f.encoding, f.seq)


def decoded(runs: list[Run]) -> Iterator[tuple[Run, np.ndarray]]:
    """Each run with its decoded audio, in order. The audio of all runs is decoded with one numpy call per
    encoding and each run gets its slice: live, a fetch holds about one frame per channel, so per-run
    decoding was paid per frame (bench/pyspy_shares.py)."""
    if not runs:
        return
    chunks: dict[str, list[bytes]] = {}
    for run in runs:
        chunks.setdefault(run.encoding, []).extend(run.chunks)
    audio = {enc: decode_valid_audio(enc, b"".join(parts)) for enc, parts in chunks.items()}
    at = dict.fromkeys(audio, 0)
    for run in runs:
        a = at[run.encoding]
        b = at[run.encoding] = a + sum(run.sizes)
        yield run, audio[run.encoding][a:b]


def new_registry(c: ProcessorConfig, rate: int) -> ChannelRegistry:
    """The window registry of one partition's channels at `rate`."""
    spec = WindowSpec(rate, c.window_ms, c.hop_ms, c.min_last_window_ms)
    return ChannelRegistry(spec, c.idle_timeout_s, c.max_active_channels, c.max_reorder_ms, c.max_gap_ms)


class StreamProcessor:
    """All channels owned by one worker (or one offline run)."""

    def __init__(self, config: ProcessorConfig, model_version: str, model_rate: int = 16000,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)):
        self.config = config
        self.model_version = model_version
        self.model_rate = model_rate
        self.clock_ms = clock_ms
        self.registries: dict[tuple[int, int], ChannelRegistry] = {}
        self.channels: dict[Key, ChannelState] = {}
        self.emitted: dict[int, int] = {}    # partition -> windows handed out so far
        self.applied: dict[int, int] = {}    # partition -> windows whose results were applied
        self.frames = 0
        self.pending_checkpoints = PendingCheckpoints()
        self.last_offsets: dict[int, int] = {}  # partition -> highest input offset ingested

    # ------------------------------------------------------------ frames in
    def _registry(self, partition: int, rate: int) -> ChannelRegistry:
        reg = self.registries.get((partition, rate))
        if reg is None:
            reg = self.registries[(partition, rate)] = new_registry(self.config, rate)
        return reg

    def _dead_letter(self, out: Output, err: FrameError, value: bytes, key, partition, offset) -> None:
        out.dead_letters.append(frame_dead_letter(err, value, key, partition, offset, self.config, self.clock_ms()))

    def ingest(self, value: bytes, key: Optional[bytes], partition: int = 0, offset: Optional[int] = None,
               now: float = 0.0) -> Output:
        """One consumed message: decode it, window it, report what is ready."""
        out = Output()
        self._ingest_into(out, value, key, partition, offset, now)
        return out

    def ingest_many(self, messages: Iterable[tuple[bytes, Optional[bytes], int, Optional[int]]],
                    now: float = 0.0) -> Output:
        """Consumed messages ``(value, key, partition, offset)`` in order: the same
        windows, dead letters and state as ``ingest`` on each, but the runs of
        in-order frames of an open channel are decoded, buffered and cut together
        (one numpy conversion, append and cut per run instead of per frame); every
        other frame (a channel's first, end, reordered, duplicate, bad, f32le) takes
        ``ingest``'s path. ~9.5 -> ~4 us per 100 ms frame when a batch holds ~20 frames per channel;
        ~11 us, as ``ingest``, when it holds one per channel, as live fetches do (bench/bench_ingest.py)."""
        out = Output()
        runs: dict[Key, Run] = {}
        max_bytes, max_ms = self.config.max_frame_bytes, self.config.max_frame_ms
        for value, key, partition, offset in messages:
            f = fast_fields(value) if type(value) is bytes and len(value) <= max_bytes else None
            if f is None:  # not a valid frame: a dead letter, no channel changes
                self._ingest_into(out, value, key, partition, offset, now)
                continue
            ckey = (f.call_id, f.channel)
            run = runs.get(ckey)
            size = len(f.audio) // SAMPLE_WIDTH[f.encoding]
            # (the run's test inlined: this loop is the worker's hottest Python, ~4 us a frame)
            if (run is not None and f.seq == run.next_seq and f.encoding == run.encoding and not f.end
                    and f.meta is None and f.sample_rate == run.rate and partition == run.partition
                    and (f.ts_ms is None or run.state.ts_origin_ms is not None)
                    or run is None and (run := start_run(self.channels, self.registries, f, partition))) \
                    and (key is None or key_matches(key, f.call_id)) and size * 1000 <= max_ms * f.sample_rate:
                runs[ckey] = run
                run.chunks.append(f.audio)
                run.sizes.append(size)
                run.offsets.append(offset)
                run.next_seq += 1
                continue
            if ckey in runs:  # this frame goes the long way: what came before it first
                self._flush_runs([runs.pop(ckey)], out, now)
            self._ingest_into(out, value, key, partition, offset, now)
        self._flush_runs(list(runs.values()), out, now)
        return out

    def _flush_runs(self, runs: list[Run], out: Output, now: float) -> None:
        """Commit runs in order (their audio decoded together: `decoded`)."""
        for run, audio in decoded(runs):
            self._commit_run(run, audio, out, now)

    def _commit_run(self, run: Run, audio: np.ndarray, out: Output, now: float) -> None:
        self.frames += len(run.sizes)
        last = latest_offset(self.last_offsets.get(run.partition), run.offsets)
        if last is not None:
            self.last_offsets[run.partition] = last
        ch = run.state
        res = run.registry.add_run(run.call_id, run.channel, run.first_seq, audio, run.sizes, run.offsets, now)
        ch.duration_ms = max(ch.duration_ms, 1000 * res.audio_samples // ch.rate)
        if res.windows:
            self._hand_out((run.call_id, run.channel), ch, res.windows, out)

    def _ingest_into(self, out: Output, value: bytes, key: Optional[bytes], partition: int,
                     offset: Optional[int], now: float) -> None:
        self.frames += 1
        if offset is not None and offset > self.last_offsets.get(partition, -1):
            self.last_offsets[partition] = offset
        try:
            decoded = decode_frame(value, key, self.config.max_frame_bytes, self.config.max_frame_ms)
        except FrameError as err:
            self._dead_letter(out, err, value, key, partition, offset)
            return
        f = decoded.fields
        call_id, channel, rate = f.call_id, f.channel, f.sample_rate
        ckey = (call_id, channel)
        ch = self.channels.get(ckey)
        if ch is not None and ch.rate != rate:
            self._dead_letter(out, FrameError("bad_sample_rate", f"channel started at {ch.rate} Hz, "
                                              f"frame is {rate} Hz"), value, key, partition, offset)
            return
        if ch is None and len(self.channels) >= self.config.max_active_channels:
            self._dead_letter(out, FrameError(CAPACITY, f"{len(self.channels)} channels open "
                                              f"(max_active_channels={self.config.max_active_channels})"),
                              value, key, partition, offset)
            return
        reg = self._registry(partition, rate)
        res = reg.add(call_id, channel, f.seq, decoded.samples, f.end, offset, now, checked=True)
        if res.rejected is not None:
            self._dead_letter(out, FrameError(res.rejected.reason, res.rejected.detail), value, key,
                              partition, offset)
            return
        if res.dropped_duplicate:
            out.duplicates += 1
            return
        if ch is None:
            ch = self.channels[ckey] = ChannelState(partition, rate, ChannelAggregate())
        if f.ts_ms is not None and ch.ts_origin_ms is None:
            w = reg.get(*ckey)
            before = (w.total_samples if w is not None else 0) - decoded.samples.size
            ch.ts_origin_ms = f.ts_ms - int(1000 * max(0, before) / rate)
        if f.meta:
            ch.merge_meta(f.meta)
        out.gap_ms += int(1000 * res.gap_samples_filled / rate)
        # the call's length is its audio's, also when it ends before its first window
        ch.duration_ms = max(ch.duration_ms, 1000 * res.audio_samples // rate)
        if res.finished:
            self._close(ckey, ch, "end", res.windows, out)
        elif res.windows:
            self._hand_out(ckey, ch, res.windows, out)

    def _hand_out(self, ckey: Key, ch: ChannelState, windows: list[Window], out: Output) -> None:
        for w in windows:
            w.owner = ch  # results for a channel state dropped meanwhile (revoked partition) are ignored
        if windows:
            ch.last_handed = windows[-1].index
        ch.outstanding += len(windows)
        self.emitted[ch.partition] = self.emitted.get(ch.partition, 0) + len(windows)
        out.windows.extend(windows)

    def _close(self, ckey: Key, ch: ChannelState, ended_by: str, windows: list[Window], out: Output) -> None:
        """The channel has ended; its summary goes out once its last results are in."""
        self._hand_out(ckey, ch, windows, out)
        ch.ended_by = ended_by
        if ch.outstanding == 0:
            out.calls.append(call_event(ckey, ch, self.model_version, self.clock_ms()))
            del self.channels[ckey]

    def _close_all(self, ended: list[tuple[Key, list[Window]]], ended_by: str, out: Output) -> None:
        for ckey, windows in ended:
            ch = self.channels.get(ckey)
            if ch is not None:
                self._close(ckey, ch, ended_by, windows, out)

    def expire_idle(self, now: float, hold: Collection[int] = ()) -> Output:
        """End channels that sent nothing for the idle timeout, except on the partitions in ``hold``
        (the worker holds those whose frames are still waiting in Kafka: a backlog is not silence)."""
        out = Output()
        for (partition, _), reg in list(self.registries.items()):
            if partition not in hold:
                self._close_all(reg.expire_idle(now), "idle_timeout", out)
        return out

    def finish_all(self, now: float = 0.0) -> Output:
        """End every channel (offline analysis at end of input)."""
        out = Output()
        for reg in self.registries.values():
            self._close_all(reg.finish_all("end", now), "end", out)
        return out

    # ------------------------------------------------------------ results in
    def rate_of(self, window: Window) -> int:
        ch = getattr(window, "owner", None) or self.channels.get((window.call_id, window.channel))
        return ch.rate if ch is not None else self.model_rate

    def apply_results(self, windows: Iterable[Window], speech: np.ndarray, sentiment: np.ndarray) -> Output:
        """Turn model outputs into segment, aggregate and (at channel end) call events."""
        out = Output()
        now_ms = self.clock_ms()
        for i, w in enumerate(windows):
            ckey = (w.call_id, w.channel)
            ch = self.channels.get(ckey)
            if ch is None or getattr(w, "owner", ch) is not ch:
                continue  # its channel state was dropped (partition revoked): the owner redoes it
            self.applied[ch.partition] = self.applied.get(ch.partition, 0) + 1
            ch.outstanding -= 1
            ch.last_applied = w.index
            sp = float(speech[i])
            probs = np.asarray(sentiment[i], dtype=np.float64)
            seg = SegmentResult(w.index, w.start_ms, w.end_ms, sp, tuple(float(p) for p in probs))
            try:
                ch.aggregate.add(seg)
            except InvalidSegment as err:
                out.dead_letters.append(model_output_dead_letter(w, err, self.config.input_topic, now_ms))
            else:
                out.segments.append(segment_event(w, sp, probs, self.model_version, now_ms))
                out.aggregates.append(aggregate_event(w, ch, self.model_version, now_ms))
                if ch.ts_origin_ms is not None:
                    out.audio_end_ts_ms.append(ch.ts_origin_ms + w.end_ms)
            done = self.pending_checkpoints.applied(ckey, ch)
            if done is not None:
                out.checkpoints.append(done)
            if ch.ended_by is not None and ch.outstanding == 0:
                out.calls.append(call_event(ckey, ch, self.model_version, self.clock_ms()))
                del self.channels[ckey]
        return out

    # ------------------------------------------------------------ checkpoints
    def request_checkpoint(self, partition: int) -> Output:
        """Start a checkpoint of `partition` (`streams.checkpoint`); returns an Output whose `checkpoints`
        holds it if it completed at once."""
        out = Output()
        if partition not in self.pending_checkpoints:
            done = self.pending_checkpoints.start(
                partition, {rate: reg for (p, rate), reg in self.registries.items() if p == partition},
                ((ckey, ch) for ckey, ch in self.channels.items() if ch.partition == partition),
                self.last_offsets.get(partition))
            if done is not None:
                out.checkpoints.append(done)
        return out

    def restore(self, partition: int, cp: dict, now: float = 0.0) -> None:
        """Adopt a checkpoint of `partition` written by a previous owner."""
        for rate, rcp in registry_states(cp).items():
            self._registry(partition, rate).restore(rcp, now)
        self.channels.update(restored_channels(partition, cp))

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition: its new owner resumes from the table."""
        for k in [k for k in self.registries if k[0] == partition]:
            del self.registries[k]
        for k in [k for k, ch in self.channels.items() if ch.partition == partition]:
            del self.channels[k]
        self.emitted.pop(partition, None)
        self.applied.pop(partition, None)
        self.pending_checkpoints.drop(partition)
        self.last_offsets.pop(partition, None)

    def in_flight(self, partition: int) -> int:
        return self.emitted.get(partition, 0) - self.applied.get(partition, 0)

    @property
    def open_channels(self) -> int:
        return len(self.channels)
