"""Frames in, windows out; model results in, events out. No Kafka here.

`StreamProcessor` is the whole per-worker logic of voicetone: the Faust agent
(`streams.agent`) feeds it consumed messages and publishes what it returns, and
`voicetone analyze` feeds it WAV files cut into frames. Both therefore produce
the very same windows, segments, aggregates and call summaries.

Windows are cut at each channel's own sample rate and either read by the model
at that rate (8 kHz for the 16 kHz model: `model_parts`) or resampled to the
model's rate one window at a time (`prepare_batch`), so a window's samples
depend only on the frames it covers: a worker that restarts mid-call and
re-reads the input re-creates them bit for bit, whatever the input rate.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Optional

import numpy as np

from schemas.errors import FrameError
from schemas.events import event_id, make_dead_letter
from schemas.audio import SAMPLE_WIDTH, decode_valid_audio
from schemas.frames import MAX_META_ENTRIES, WireFields, decode_frame, fast_fields, key_matches
from schemas.resample import resample_fft_rows
from streams.aggregation import ChannelAggregate, InvalidSegment, SegmentResult
from streams.batching import shape_groups, stack_windows
from streams.silence import DEFAULT_THRESHOLD_DBFS, SilenceGate
from streams.windowing import CAPACITY, ChannelRegistry, Window, WindowSpec, latest_offset

LABELS = ("positive", "neutral", "negative")
Key = tuple[str, str]


@dataclass
class ProcessorConfig:
    """The subset of `voicetone.settings.Settings` the pure logic needs."""

    window_ms: int = 5000
    hop_ms: int = 2500
    min_last_window_ms: int = 1000
    idle_timeout_s: float = 30.0
    max_reorder_ms: int = 2000
    max_gap_ms: int = 10000
    max_frame_bytes: int = 1_000_000
    max_frame_ms: int = 5000
    max_active_channels: int = 20000
    speech_threshold: float = 0.5
    silence_dbfs: float = DEFAULT_THRESHOLD_DBFS
    current_speech_ms: int = 30000
    input_topic: str = "audio.frames"
    dlq_max_value_bytes: int = 262144

    @classmethod
    def from_settings(cls, s) -> "ProcessorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{n: getattr(s, n) for n in names if hasattr(s, n)})


@dataclass
class Output:
    """What one call into the processor produced; the caller publishes it."""

    windows: list[Window] = field(default_factory=list)
    checkpoints: list[tuple[int, dict, Optional[int]]] = field(default_factory=list)  # (partition, state, watermark)
    segments: list[dict] = field(default_factory=list)
    aggregates: list[dict] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    audio_end_ts_ms: list[int] = field(default_factory=list)  # wall time each segment's audio ended
    duplicates: int = 0
    gap_ms: int = 0

    def extend(self, other: "Output") -> None:
        for f in ("windows", "checkpoints", "segments", "aggregates", "calls", "dead_letters"):
            getattr(self, f).extend(getattr(other, f))
        self.duplicates += other.duplicates
        self.gap_ms += other.gap_ms


@dataclass
class _Channel:
    """Bookkeeping for one (call, channel) between its frames and its events."""

    partition: int
    rate: int
    aggregate: ChannelAggregate
    outstanding: int = 0          # windows handed out, results not yet applied
    last_applied: int = -1        # index of the last window whose result was applied
    last_handed: int = -1         # index of the last window handed out for inference
    ended_by: Optional[str] = None
    duration_ms: int = 0
    ts_origin_ms: Optional[int] = None   # wall time of audio offset 0, from the frames' ts_ms
    meta: dict = field(default_factory=dict)  # the frames' `meta`, a key's first value kept; replaced, never mutated


class _Run:
    """In-order frames of one open channel gathered by ``ingest_many``, committed together."""

    __slots__ = ("registry", "state", "call_id", "channel", "encoding", "partition", "rate", "first_seq",
                 "next_seq", "chunks", "sizes", "offsets")

    def __init__(self, registry: ChannelRegistry, state: "_Channel", call_id: str, channel: str, encoding: str,
                 seq: int) -> None:
        self.registry, self.state, self.encoding = registry, state, encoding
        self.call_id, self.channel = call_id, channel
        self.partition, self.rate = state.partition, state.rate
        self.first_seq = self.next_seq = seq
        self.chunks: list[bytes] = []
        self.sizes: list[int] = []
        self.offsets: list[Optional[int]] = []


def _merge_meta(ch: _Channel, meta: dict) -> None:
    """Add a frame's ``meta`` to its channel's: a key keeps its first value (the ids in a channel's events
    do not change mid-channel), at most ``MAX_META_ENTRIES`` keys; a new dict, as events share the old one."""
    new = {k: v for k, v in meta.items() if k not in ch.meta}
    room = MAX_META_ENTRIES - len(ch.meta)
    if new and room > 0:
        ch.meta = {**ch.meta, **dict(list(new.items())[:room])}


def prepare_batch(windows: list[Window], rates: list[int], model_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample each window to the model's rate and stack them zero-padded.

    Windows of the same rate and length (all full windows of a rate) are
    resampled together in one FFT call."""
    converted = _resampled(windows, rates, model_rate)
    if len(converted) == 1:   # the usual batch (full windows of one rate): already one block
        (idx, block), = converted.values()
        return block, np.full(len(windows), block.shape[1], dtype=np.int64)
    rows: list = [None] * len(windows)
    for idx, block in converted.values():
        for i, row in zip(idx, block):
            rows[i] = row
    return stack_windows(rows)


def _resampled(windows: list[Window], rates: list[int],
               model_rate: int) -> dict[tuple[int, int], tuple[list[int], np.ndarray]]:
    """The windows at the model's rate, as one [B, n] block per (rate, length) with the windows' indices:
    one FFT call each (a row is resampled bit for bit as if alone, so a window's samples do not depend on
    its batch)."""
    out = {}
    for key, idx in shape_groups(windows, rates).items():
        block = np.stack([windows[i].samples for i in idx]).astype(np.float32, copy=False)
        out[key] = (idx, block if key[0] == model_rate else resample_fft_rows(block, key[0], model_rate))
    return out


@dataclass
class ModelPart:
    """Windows of one rate stacked for one `predict` call: ``rows`` are their places in the batch."""

    rows: np.ndarray
    audio: np.ndarray
    lengths: np.ndarray
    rate: Optional[int] = None   # the audio's rate where the model takes it as it is (None: the model's)


@dataclass
class ModelBatch:
    """A batch cut for the model: the audible windows' audio, stacked by rate, and where their answers go.
    Built on the worker's event loop, which holds the GIL anyway: the model thread, which does
    not, waits for it after every numpy call beside a busy loop (up to the switch interval each time):
    gating and resampling 25 windows there took 246 ms instead of 9 (559 window by window;
    `bench/gil_convoy.py --batch 25`), while the traced `predict` itself slows only 1.3x."""

    size: int
    keep: np.ndarray
    parts: list = field(default_factory=list)   # [ModelPart]: usually one (every channel at one rate)

    def merge(self, answers) -> tuple[np.ndarray, np.ndarray, int]:
        """(speech, sentiment, windows skipped) for the whole batch from `predict_batch`'s answers."""
        return SilenceGate.merge(self.size, self.keep, *(answers or (None, None)))


def model_parts(windows: list[Window], rates: list[int], model_rate: int,
                reads_rate: Optional[Callable[[int], bool]] = None,
                resample_on_device: bool = False) -> list[ModelPart]:
    """The windows stacked for the model, one part per rate it is handed at. A rate the model reads as it
    is (``reads_rate``: 8 kHz for a 16 kHz log-mel model) is never resampled, whatever the batch; with
    ``resample_on_device`` (a GPU model) a rate whose windows all have one length is left for the model to
    resample; the rest are resampled here and join the model-rate part."""
    by_rate: dict[int, list[int]] = {}
    for i, r in enumerate(rates):
        by_rate.setdefault(r, []).append(i)
    parts: list[ModelPart] = []
    to_model_rate: list[int] = []
    for rate, idx in by_rate.items():
        if rate != model_rate and ((reads_rate is not None and reads_rate(rate)) or (
                resample_on_device and len({windows[i].samples.size for i in idx}) == 1)):
            parts.append(ModelPart(np.array(idx), *stack_windows([windows[i] for i in idx]), rate))
        else:
            to_model_rate.extend(idx)
    if to_model_rate:
        to_model_rate.sort()
        audio, lengths = prepare_batch([windows[i] for i in to_model_rate], [rates[i] for i in to_model_rate],
                                       model_rate)
        parts.append(ModelPart(np.array(to_model_rate), audio, lengths))
    return parts


def model_batch(gate: SilenceGate, windows: list[Window], rates: list[int], model_rate: int,
                reads_rate: Optional[Callable[[int], bool]] = None, resample_on_device: bool = False) -> ModelBatch:
    """The audible windows cut into `model_parts`."""
    size = len(windows)
    keep = gate.audible(windows, rates)
    if not keep.size:
        return ModelBatch(size, keep)
    if keep.size < size:
        windows, rates = [windows[i] for i in keep], [rates[i] for i in keep]
    return ModelBatch(size, keep, model_parts(windows, rates, model_rate, reads_rate, resample_on_device))


def model_batch_for(model, gate: SilenceGate, windows: list[Window], rates: list[int]) -> ModelBatch:
    """`model_batch` with what ``model`` takes as it is (a model without `reads_rate` takes its own rate)."""
    return model_batch(gate, windows, rates, model.sample_rate, getattr(model, "reads_rate", None),
                       getattr(model, "resample_on_device", False))


def predict_batch(model, batch: ModelBatch):
    """The model's answers for the audible windows (None when there are none): the only step that needs the
    model thread."""
    if not batch.parts:
        return None
    if len(batch.parts) == 1 and batch.parts[0].rate is None:
        part = batch.parts[0]
        return model.predict(part.audio, part.lengths)
    n = sum(len(p.rows) for p in batch.parts)
    speech, sentiment = np.zeros(n, dtype=np.float32), np.zeros((n, len(LABELS)), dtype=np.float32)
    for part in batch.parts:
        if part.rate is None:
            sp, se = model.predict(part.audio, part.lengths)
        else:
            sp, se = model.predict(part.audio, part.lengths, sample_rate=part.rate)
        speech[part.rows], sentiment[part.rows] = np.asarray(sp).reshape(-1), np.asarray(se).reshape(len(part.rows), -1)
    return speech, sentiment


def run_model(model, gate: SilenceGate, windows: list[Window], rates: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """(speech, sentiment, windows skipped as silent): the worker's and the offline runner's one model path
    (the worker runs its steps on two threads: `model_batch_for` and `merge` on its loop, `predict_batch`
    in a model thread)."""
    batch = model_batch_for(model, gate, windows, rates)
    return batch.merge(predict_batch(model, batch))


class StreamProcessor:
    """All channels owned by one worker (or one offline run)."""

    def __init__(self, config: ProcessorConfig, model_version: str, model_rate: int = 16000,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)):
        self.config = config
        self.model_version = model_version
        self.model_rate = model_rate
        self.clock_ms = clock_ms
        self.registries: dict[tuple[int, int], ChannelRegistry] = {}
        self.channels: dict[Key, _Channel] = {}
        self.emitted: dict[int, int] = {}    # partition -> windows handed out so far
        self.applied: dict[int, int] = {}    # partition -> windows whose results were applied
        self.frames = 0
        self._pending: dict[int, dict] = {}  # partition -> checkpoint waiting for in-flight results
        self.last_offsets: dict[int, int] = {}  # partition -> highest input offset ingested

    # ------------------------------------------------------------ frames in
    def _registry(self, partition: int, rate: int) -> ChannelRegistry:
        reg = self.registries.get((partition, rate))
        if reg is None:
            c = self.config
            spec = WindowSpec(rate, c.window_ms, c.hop_ms, c.min_last_window_ms)
            reg = ChannelRegistry(spec, c.idle_timeout_s, c.max_active_channels, c.max_reorder_ms, c.max_gap_ms)
            self.registries[(partition, rate)] = reg
        return reg

    def _dead_letter(self, out: Output, err: FrameError, value: bytes, key, partition, offset) -> None:
        cap = self.config.dlq_max_value_bytes
        if len(value) > cap:  # a multi-MB frame must not make a dead letter the broker refuses
            err = FrameError(err.reason, f"{err.detail} [value truncated: first {cap} of {len(value)} bytes kept]")
            value = value[:cap]
        out.dead_letters.append(make_dead_letter(err, value, key, self.config.input_topic, partition, offset,
                                                 self.clock_ms()).model_dump(mode="json"))

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
        runs: dict[Key, _Run] = {}
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
                    or run is None and (run := self._start_run(f, partition))) \
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

    def _start_run(self, f: WireFields, partition: int) -> Optional["_Run"]:
        """A run for frame ``f`` if its channel is open and in order, else None."""
        if f.end or f.encoding == "f32le" or f.meta is not None:  # f32le: one NaN frame must not refuse its neighbours
            return None
        ch = self.channels.get((f.call_id, f.channel))
        if ch is None or ch.rate != f.sample_rate or ch.partition != partition or ch.ended_by is not None \
                or (f.ts_ms is not None and ch.ts_origin_ms is None):
            return None
        reg = self.registries.get((partition, ch.rate))
        w = reg.get(f.call_id, f.channel) if reg is not None else None
        if w is None or not w.in_order() or f.seq != w.next_seq:
            return None
        return _Run(reg, ch, f.call_id, f.channel, f.encoding, f.seq)

    def _flush_runs(self, runs: list["_Run"], out: Output, now: float) -> None:
        """Commit runs in order. Their audio is decoded with one numpy call per encoding and each run
        appends its slice: live, a fetch holds about one frame per channel, so per-run decoding was
        paid per frame (bench/pyspy_shares.py)."""
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
            self._commit_run(run, audio[run.encoding][a:b], out, now)

    def _commit_run(self, run: "_Run", audio: np.ndarray, out: Output, now: float) -> None:
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
            ch = self.channels[ckey] = _Channel(partition, rate, ChannelAggregate(
                self.config.current_speech_ms, self.config.speech_threshold))
        if f.ts_ms is not None and ch.ts_origin_ms is None:
            w = reg.get(*ckey)
            before = (w.total_samples if w is not None else 0) - decoded.samples.size
            ch.ts_origin_ms = f.ts_ms - int(1000 * max(0, before) / rate)
        if f.meta:
            _merge_meta(ch, f.meta)
        out.gap_ms += int(1000 * res.gap_samples_filled / rate)
        # the call's length is its audio's, also when it ends before its first window
        ch.duration_ms = max(ch.duration_ms, 1000 * res.audio_samples // rate)
        if res.finished:
            self._close(ckey, ch, "end", res.windows, out)
        elif res.windows:
            self._hand_out(ckey, ch, res.windows, out)

    def _hand_out(self, ckey: Key, ch: _Channel, windows: list[Window], out: Output) -> None:
        for w in windows:
            w.owner = ch  # results for a channel state dropped meanwhile (revoked partition) are ignored
        if windows:
            ch.last_handed = windows[-1].index
        ch.outstanding += len(windows)
        self.emitted[ch.partition] = self.emitted.get(ch.partition, 0) + len(windows)
        out.windows.extend(windows)

    def _close(self, ckey: Key, ch: _Channel, ended_by: str, windows: list[Window], out: Output) -> None:
        """The channel has ended; its summary goes out once its last results are in."""
        self._hand_out(ckey, ch, windows, out)
        ch.ended_by = ended_by
        if ch.outstanding == 0:
            out.calls.append(self._call_event(ckey, ch))
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
                out.dead_letters.append(self._bad_output(w, err, now_ms))
            else:
                out.segments.append(self._segment_event(w, sp, probs, now_ms))
                out.aggregates.append(self._aggregate_event(w, ch, now_ms))
                if ch.ts_origin_ms is not None:
                    out.audio_end_ts_ms.append(ch.ts_origin_ms + w.end_ms)
            pending = self._pending.get(ch.partition)
            if pending is not None and pending["need"].get(ckey) == w.index:
                del pending["need"][ckey]
                pending["snap"][ckey] = self._snapshot(ckey, ch)
                if not pending["need"]:
                    out.checkpoints.append(self._complete(ch.partition))
            if ch.ended_by is not None and ch.outstanding == 0:
                out.calls.append(self._call_event(ckey, ch))
                del self.channels[ckey]
        return out

    def _segment_event(self, w: Window, sp: float, probs: np.ndarray, now_ms: int) -> dict:
        total = float(probs.sum())
        p = [float(x) / total for x in probs]
        label = "no_speech" if sp < self.config.speech_threshold else LABELS[int(np.argmax(p))]
        return {
            "type": "segment", "v": 1, "event_id": event_id(w.call_id, w.channel, "segment", w.index),
            "call_id": w.call_id, "channel": w.channel, "segment_index": w.index,
            "start_ms": int(w.start_ms), "end_ms": int(w.end_ms), "speech_probability": sp,
            "sentiment": dict(zip(LABELS, p)), "label": label,
            "model_version": self.model_version, "emitted_at_ms": now_ms,
        }

    def _aggregate_event(self, w: Window, ch: _Channel, now_ms: int) -> dict:
        return {
            "type": "aggregate", "v": 1, "event_id": event_id(w.call_id, w.channel, "aggregate", w.index),
            "call_id": w.call_id, "channel": w.channel, "segment_index": w.index,
            "current": ch.aggregate.current(), "overall": ch.aggregate.overall(),
            "model_version": self.model_version, "emitted_at_ms": now_ms,
            "audio_start_ts_ms": ch.ts_origin_ms, "meta": ch.meta,
        }

    def _call_event(self, ckey: Key, ch: _Channel) -> dict:
        call_id, channel = ckey
        return {
            "type": "call", "v": 1, "event_id": event_id(call_id, channel, "call", 0),
            "call_id": call_id, "channel": channel, "overall": ch.aggregate.overall(),
            "segments": ch.aggregate.segments, "duration_ms": int(ch.duration_ms),
            "ended_by": ch.ended_by or "end", "model_version": self.model_version,
            "emitted_at_ms": self.clock_ms(),
            "current": ch.aggregate.current(), "audio_start_ts_ms": ch.ts_origin_ms, "meta": ch.meta,
        }

    def _bad_output(self, w: Window, err: InvalidSegment, now_ms: int) -> dict:
        """A dead letter for a window the model gave no usable answer for: which
        call, channel and window lost its segment (the key is the call ID, as on
        the input topic)."""
        where = f"call {w.call_id!r} channel {w.channel!r} window {w.index} ({w.start_ms}-{w.end_ms} ms): "
        return {
            "type": "dead_letter", "v": 1, "reason": f"model_output_{err.reason}", "detail": (where + str(err))[:1000],
            "topic": self.config.input_topic, "partition": None, "offset": None,
            "key_b64": base64.b64encode(w.call_id.encode()).decode(), "value_b64": "", "received_at_ms": now_ms,
        }

    # ------------------------------------------------------------ recovery
    def low_watermark(self, partition: int) -> Optional[int]:
        """Smallest input offset of `partition` that a future window still needs."""
        offs = [o for (p, _), reg in self.registries.items() if p == partition
                and (o := reg.low_watermark_offset()) is not None]
        return min(offs) if offs else None

    def request_checkpoint(self, partition: int) -> Output:
        """Start a checkpoint of `partition`: the windowers' state now, plus
        each open channel's aggregate taken once every window it has handed
        out so far has its result applied. Frames below the watermark are then
        safe to commit: a restarted worker re-reads from there and re-emits
        exactly the windows after the checkpoint, with the same indices.
        Returns an Output whose `checkpoints` holds it if it completed at once."""
        out = Output()
        if partition in self._pending:
            return out
        regs = {rate: reg for (p, rate), reg in self.registries.items() if p == partition}
        need, snap = {}, {}
        for ckey, ch in self.channels.items():
            if ch.partition != partition:
                continue
            if ch.outstanding == 0 or ch.last_applied >= ch.last_handed:
                snap[ckey] = self._snapshot(ckey, ch)
            else:
                need[ckey] = ch.last_handed
        watermark = self.low_watermark(partition)
        if watermark is None and partition in self.last_offsets:
            # nothing buffered is needed: everything ingested *so far* is covered
            # by this checkpoint, but not frames ingested while it waits
            watermark = self.last_offsets[partition] + 1
        self._pending[partition] = {
            "registries": {str(rate): reg.checkpoint() for rate, reg in regs.items()},
            "watermark": watermark, "need": need, "snap": snap,
        }
        if not need:
            out.checkpoints.append(self._complete(partition))
        return out

    def _snapshot(self, ckey: Key, ch: _Channel) -> list:
        return [ckey[0], ckey[1], ch.rate, ch.aggregate.to_dict(), ch.duration_ms, ch.last_applied,
                ch.ts_origin_ms, ch.meta]

    def _complete(self, partition: int) -> tuple[int, dict, Optional[int]]:
        pending = self._pending.pop(partition)
        state = {"v": 1, "registries": pending["registries"], "aggregates": list(pending["snap"].values()),
                 "watermark": pending["watermark"]}
        return partition, state, pending["watermark"]

    def restore(self, partition: int, cp: dict, now: float = 0.0) -> None:
        """Adopt a checkpoint written by `checkpoint` (a previous owner's)."""
        if cp.get("v") != 1:
            raise ValueError(f"unsupported processor checkpoint version {cp.get('v')!r}")
        for rate, rcp in cp["registries"].items():
            self._registry(partition, int(rate)).restore(rcp, now)
        for c, chn, rate, agg, duration, *rest in cp["aggregates"]:
            aggregate = ChannelAggregate.from_dict(agg)
            # window indices go on from the checkpoint: a restored channel has
            # applied (and handed out) everything up to its last applied index
            last = int(rest[0]) if rest else aggregate.last_index
            # checkpoints written before the channel's wall-clock origin and metadata were kept lack them
            ts_origin, meta = (rest[1], dict(rest[2])) if len(rest) >= 3 else (None, {})
            self.channels[(c, chn)] = _Channel(partition, int(rate), aggregate, duration_ms=int(duration),
                                               last_applied=last, last_handed=last, ts_origin_ms=ts_origin,
                                               meta=meta)

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition: its new owner resumes from the table."""
        for k in [k for k in self.registries if k[0] == partition]:
            del self.registries[k]
        for k in [k for k, ch in self.channels.items() if ch.partition == partition]:
            del self.channels[k]
        self.emitted.pop(partition, None)
        self.applied.pop(partition, None)
        self._pending.pop(partition, None)
        self.last_offsets.pop(partition, None)

    def in_flight(self, partition: int) -> int:
        return self.emitted.get(partition, 0) - self.applied.get(partition, 0)

    @property
    def open_channels(self) -> int:
        return len(self.channels)
